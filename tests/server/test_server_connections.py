"""Slow and silent connections are closed, and normal requests are served meanwhile (issue 9).

Each attack runs against a private server on loopback, bounded in connections and in time;
normal requests go on beside it and their median latency is checked with a generous margin.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import sys
import threading
import time

import pytest
import requests
from support.api import Api, login

from agents_bar_stream.server.process import LocalServer

pytestmark = pytest.mark.timeout(240)

#: The server's deadlines (connections.ConnectionLimits): a head within 10 s, a body at 1 KiB/s
#: over 10 s windows. A test waits up to 30 s for a connection to be closed (the issue's bound).
CLOSE_BOUND = 30.0


class Attack:
    """``count`` connections of one ``kind`` ("silent", "slow-head", "slow-body") to ``port``, fed from a thread.

    Slow ones send one byte a second. ``closed_after`` holds, per connection, how long after its
    start the server closed it (``None`` while open).
    """

    def __init__(self, port: int, kind: str, count: int) -> None:
        self.port, self.kind, self.count = port, kind, count
        self.socks: list[socket.socket] = []
        self.started: list[float] = []
        self.closed_after: list[float | None] = []
        self.sent: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _head(self) -> bytes:
        body = b"Content-Length: 100000\r\nContent-Type: application/json\r\n\r\n" if self.kind == "slow-body" else b""
        return b"POST /api/v1/agents/x/steps HTTP/1.1\r\nHost: 127.0.0.1\r\n" + body

    def start(self) -> Attack:
        for _ in range(self.count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
            self.socks.append(sock)
            self.started.append(time.monotonic())
            self.closed_after.append(None)
            self.sent.append(0)
        self._thread.start()
        return self

    def _run(self) -> None:
        head = self._head()
        deadline = time.monotonic() + 90  # bounded whatever happens
        sel = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            sel.register(sock, selectors.EVENT_READ, i)
        next_byte = time.monotonic() + 0.2
        while not self._stop.is_set() and time.monotonic() < deadline and any(c is None for c in self.closed_after):
            for key, _ in sel.select(timeout=0.2):
                self._poll(key.data, sel)
            if time.monotonic() >= next_byte:
                next_byte += 1.0
                for i, sock in enumerate(self.socks):
                    if self.closed_after[i] is not None:
                        continue
                    if self.kind == "slow-head" and self.sent[i] >= len(head) - 2:
                        continue  # never finishes the head
                    data = b"" if self.kind == "silent" else (
                        head if self.kind == "slow-body" and self.sent[i] == 0 else
                        head[self.sent[i]:self.sent[i] + 1] if self.kind == "slow-head" else b"{")
                    if not data:
                        continue
                    try:
                        self.sent[i] += sock.send(data)
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._mark(i, sel)
        sel.close()

    def _poll(self, i: int, sel) -> None:
        try:
            data = self.socks[i].recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # closed by the server (an answer before closing is fine too; it is read on)
            self._mark(i, sel)

    def _mark(self, i: int, sel) -> None:
        if self.closed_after[i] is None:
            self.closed_after[i] = time.monotonic() - self.started[i]
            try:
                sel.unregister(self.socks[i])
            except (KeyError, ValueError):
                pass

    def wait_closed(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


def _normal_traffic(url: str, token: str, agent: str, seconds: float) -> list[float]:
    """Latencies of new-connection requests (/stream/info, /act, /steps) for ``seconds``; each must succeed."""
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    end = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < end:
        for method, path, body in (
            ("GET", "/api/v1/stream/info", None),
            ("POST", f"/api/v1/agents/{agent}/act", [0.1, 0.2, 0.3, 0.4]),
            ("POST", f"/api/v1/agents/{agent}/steps", {"producer_id": "normal", "first_seq": seq, "steps": [
                {"obs": [0.0] * 4, "action": [1], "reward": 1.0, "next_obs": [0.1] * 4, "done": False}]}),
        ):
            started = time.monotonic()
            resp = requests.request(method, url + path, json=body, headers=headers, timeout=10)
            latencies.append(time.monotonic() - started)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])
            if path.endswith("/steps"):
                seq += 1
        time.sleep(0.05)
    return latencies


def _wrapper(tmp_path, nofile: int) -> str:
    """A python that starts with ``ulimit -n nofile`` (soft and hard), as the issue's probe did."""
    path = tmp_path / "python-ulimit"
    path.write_text(f'#!/bin/sh\nulimit -n {nofile}\nexec "{sys.executable}" "$@"\n')
    path.chmod(0o700)
    return str(path)


@pytest.mark.parametrize("kind", ["silent", "slow-head", "slow-body"])
def test_slow_connections_are_closed_and_normal_requests_served(tmp_path, user, kind):
    # 60 attackers against a server allowed 64 open files (it needs ~20 of its own): the old server let them hold every
    # descriptor for as long as they liked, and normal requests timed out.
    srv = LocalServer(tmp_path / "srv", users=[user], python=_wrapper(tmp_path, 64))
    attack = None
    try:
        srv.start(timeout=120)
        token = login(srv.url, *user)
        api = Api(srv.url, token)
        api.create_agent("normal", "dqn", obs_size=4, action_size=2)
        log_before = srv.log_path.stat().st_size
        attack = Attack(srv.port, kind, 60).start()
        time.sleep(1.0)
        latencies = _normal_traffic(srv.url, token, "normal", seconds=12.0)
        attack.wait_closed(timeout=CLOSE_BOUND + 15)
        still_open = sum(c is None for c in attack.closed_after)
        slowest = max((c for c in attack.closed_after if c is not None), default=0.0)
        assert still_open == 0, f"{still_open} of {attack.count} {kind} connections still open"
        assert slowest <= CLOSE_BOUND, f"a {kind} connection was closed only after {slowest:.1f} s"
        assert statistics.median(latencies) < 0.1, f"median {statistics.median(latencies) * 1000:.0f} ms"
        # Accept errors and timeouts are logged rate-limited: a few lines, not megabytes.
        log = srv.log_path.read_bytes()[log_before:]
        assert len(log) < 200_000, f"{len(log)} bytes of log during the attack"
        assert log.count(b"out of system resource") <= 10
        # And the server still answers afterwards.
        assert api.get("/stream/info").status_code == 200
    finally:
        if attack is not None:
            attack.stop()
        srv.stop(timeout=30)


def test_a_keep_alive_client_is_not_cut_off(server, token):
    """Deadlines apply to a request being sent, not to a client that takes its time between
    requests within keep-alive, nor to a slow-but-steady body."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for _ in range(3):
        assert session.get(server.url + "/api/v1/stream/info", timeout=10).status_code == 200
        time.sleep(2.0)  # under the 5 s keep-alive
    # A 60 KiB body sent at ~6 KiB/s over 10 s: above the 1 KiB/s floor, so it is read to the end.
    payload = b'{"username": "x", "password": "' + b"y" * 60_000 + b'"}'

    def slowly():
        for i in range(0, len(payload), 6_000):
            yield payload[i:i + 6_000]
            time.sleep(1.0)

    resp = requests.post(server.url + "/api/v1/login/access-token", data=slowly(), timeout=30,
                         headers={"Content-Type": "application/json", "Content-Length": str(len(payload))})
    assert resp.status_code in (400, 401, 422), resp.text  # read whole, and answered; not cut off




def test_loop_errors_are_rate_limited(caplog):
    """asyncio logs 'socket.accept() out of system resource' once per pending connection, in a tight
    loop, when descriptors run out (issue 9: 321,488 lines in 25 s). One line per 10 s passes, with
    the count of those held back; other messages are not held back by it."""
    import asyncio

    from agents_bar_stream.server.connections import RateLimitedLoopErrors

    handler = RateLimitedLoopErrors(interval=0.5)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level("ERROR", logger="asyncio"):
            for _ in range(10_000):
                handler(
                    loop,
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    },
                )
            handler(loop, {"message": "something else"})
            time.sleep(0.6)
            handler(loop, {"message": "socket.accept() out of system resource"})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "9999 more" in lines[2]
