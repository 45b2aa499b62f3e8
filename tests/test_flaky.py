"""FlakyProxy against a real HTTP server on loopback: every fault, seen from a real client."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from agents_bar_stream.flaky import FlakyProxy

TIMEOUT = (2.0, 10.0)  # (connect, read) for every request, so that a proxy bug fails instead of hanging


class Upstream(ThreadingHTTPServer):
    """An echo server that counts the requests it handled and the connections they came on."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.lock = threading.Lock()
        self.handled = 0
        self.peers: set[tuple[str, int]] = set()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients cut off by the proxy are the point here; no tracebacks on stderr

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server_address[1])


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body are two writes; Nagle would hold the second ~40 ms
    server: Upstream

    def do_GET(self) -> None:
        self._answer(b"ok")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(body)

    def _answer(self, body: bytes) -> None:
        # Counted before answering: once the client sees any byte (or a dropped answer), it is applied.
        with self.server.lock:
            self.server.handled += 1
            self.server.peers.add(self.client_address)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-upstream", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def proxy(upstream: Upstream, caplog: pytest.LogCaptureFixture) -> Iterator[FlakyProxy]:
    with caplog.at_level(logging.DEBUG, logger="agents_bar_stream.flaky"):
        with FlakyProxy(upstream.address, seed=1234) as flaky:
            yield flaky
        assert flaky.stop(timeout=5), "proxy threads outlived stop()"
    # Every fault and every peer going away is expected; none of it may look like a proxy bug.
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def get(url: str, session: requests.Session | None = None) -> requests.Response:
    response = (session or requests).get(url + "/", timeout=TIMEOUT)
    response.raise_for_status()
    return response


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.timeout(30)
def test_passes_a_large_body_intact_both_ways(proxy: FlakyProxy) -> None:
    body = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)  # 5 MiB, not all one byte
    response = requests.post(proxy.url + "/echo", data=body, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.content == body
    stats = proxy.stats
    assert stats["connections"] == 1
    assert stats["bytes_up"] > len(body) and stats["bytes_down"] > len(body)


@pytest.mark.timeout(30)
def test_keep_alive_carries_many_requests_on_one_connection(proxy: FlakyProxy, upstream: Upstream) -> None:
    with requests.Session() as session:
        for _ in range(20):
            assert get(proxy.url, session).content == b"ok"
    assert proxy.stats["connections"] == 1
    assert len(upstream.peers) == 1
    assert upstream.handled == 20


@pytest.mark.timeout(30)
def test_client_leaving_mid_answer_is_handled_quietly(proxy: FlakyProxy) -> None:
    body = b"x" * (8 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert client.recv(1024).startswith(b"HTTP/1.1 200")
    # The proxy notices the vanished client while forwarding the rest, and lets go of it.
    wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith(f"flaky-proxy-{proxy.port}-conn")])
    assert get(proxy.url).content == b"ok"


@pytest.mark.timeout(30)
def test_latency_delays_each_direction(proxy: FlakyProxy) -> None:
    with requests.Session() as session:
        get(proxy.url, session)  # connect first: only the round trip is measured below
        proxy.latency = 0.2
        started = time.monotonic()
        get(proxy.url, session)
        elapsed = time.monotonic() - started
    # Request and answer are each delayed; no upper bound, machines are noisy.
    assert elapsed >= 0.4


@pytest.mark.timeout(30)
def test_reset_prob_one_resets_every_connection(proxy: FlakyProxy) -> None:
    proxy.reset_prob = 1.0
    # Several connections, so that the random reset point covers more than one case.
    for _ in range(6):
        with pytest.raises(requests.ConnectionError):
            get(proxy.url)
    assert proxy.stats["resets"] == 6
    proxy.reset_prob = 0.0
    assert get(proxy.url).content == b"ok"


@pytest.mark.timeout(30)
def test_dropped_response_was_applied_but_never_heard(proxy: FlakyProxy, upstream: Upstream) -> None:
    proxy.drop_response_prob = 1.0
    with pytest.raises(requests.ConnectionError):
        requests.post(proxy.url + "/steps", data=b"step-1", timeout=TIMEOUT)
    assert upstream.handled == 1
    assert proxy.stats["dropped_responses"] == 1


@pytest.mark.timeout(30)
def test_drop_is_decided_per_request_on_a_kept_alive_connection(proxy: FlakyProxy, upstream: Upstream) -> None:
    with requests.Session() as session:
        get(proxy.url, session)
        proxy.drop_response_prob = 1.0
        with pytest.raises(requests.ConnectionError):
            get(proxy.url, session)
    assert upstream.handled == 2
    assert proxy.stats == {**proxy.stats, "connections": 1, "dropped_responses": 1}


@pytest.mark.timeout(30)
def test_down_fails_fast_and_up_recovers(proxy: FlakyProxy) -> None:
    with requests.Session() as session:
        get(proxy.url, session)
        proxy.down()
        assert proxy.is_down
        wait_for(lambda: proxy.stats["cuts"] == 1)  # the open keep-alive connection is cut
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            get(proxy.url, session)
        assert time.monotonic() - started < 1.0
    assert proxy.stats["refused"] >= 1
    proxy.up()
    assert not proxy.is_down
    assert get(proxy.url).content == b"ok"


@pytest.mark.timeout(30)
def test_down_with_seconds_recovers_by_itself(proxy: FlakyProxy) -> None:
    proxy.down(seconds=1.0)
    with pytest.raises(requests.ConnectionError):
        get(proxy.url)
    wait_for(lambda: not proxy.is_down, timeout=3.0)
    assert get(proxy.url).content == b"ok"


@pytest.mark.timeout(30)
def test_stall_holds_traffic_for_stall_seconds(proxy: FlakyProxy) -> None:
    proxy.stall_prob = 1.0
    proxy.stall_seconds = 1.0
    started = time.monotonic()
    assert get(proxy.url).content == b"ok"
    assert time.monotonic() - started >= 1.0
    assert proxy.stats["stalls"] == 1


@pytest.mark.timeout(30)
def test_same_seed_same_faults(upstream: Upstream) -> None:
    def pattern(seed: int) -> list[bool]:
        with FlakyProxy(upstream.address, seed=seed, reset_prob=0.5) as flaky:
            outcomes = []
            for _ in range(12):
                try:
                    get(flaky.url)
                    outcomes.append(True)
                except requests.ConnectionError:
                    outcomes.append(False)
            return outcomes

    first = pattern(7)
    assert pattern(7) == first
    assert True in first and False in first


@pytest.mark.timeout(30)
def test_unreachable_upstream_resets_the_client() -> None:
    with FlakyProxy(("127.0.0.1", 1)) as flaky:
        with pytest.raises(requests.ConnectionError):
            get(flaky.url)
        assert flaky.stats["upstream_failures"] == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("latency", -0.1), ("latency", float("inf")), ("reset_prob", 1.5), ("stall_prob", -0.01),
        ("stall_seconds", -1), ("drop_response_prob", float("nan")),
    ],
)
def test_invalid_settings_raise_value_error(proxy: FlakyProxy, name: str, value: float) -> None:
    before = getattr(proxy, name)
    with pytest.raises(ValueError, match=name):
        setattr(proxy, name, value)
    assert getattr(proxy, name) == before
    with pytest.raises(ValueError, match=name):
        FlakyProxy(("127.0.0.1", 80), **{name: value})  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_invalid_arguments() -> None:
    with pytest.raises(TypeError, match="reset_prob"):
        FlakyProxy(("127.0.0.1", 80), reset_prob="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds"):
        FlakyProxy(("127.0.0.1", 80)).down(seconds=-1)
    with pytest.raises(ValueError, match="upstream"):
        FlakyProxy("no-port-here")
    assert FlakyProxy("http://127.0.0.1:8080").upstream == ("127.0.0.1", 8080)


@pytest.mark.timeout(30)
def test_stop_is_fast_idempotent_and_leaves_no_threads(upstream: Upstream) -> None:
    flaky = FlakyProxy(upstream.address, stall_prob=1.0, stall_seconds=60).start()
    assert flaky.url == f"http://127.0.0.1:{flaky.port}"
    names = [thread.name for thread in threading.enumerate() if thread.name.startswith(f"flaky-proxy-{flaky.port}")]
    assert names and all(thread.daemon for thread in threading.enumerate() if thread.name in names)
    # A stalled request in flight: stop() must cut it, not wait the stall out.
    failed = threading.Event()

    def stalled_request() -> None:
        try:
            get(flaky.url)
        except requests.ConnectionError:
            failed.set()

    client = threading.Thread(target=stalled_request, daemon=True)
    client.start()
    wait_for(lambda: flaky.stats["stalls"] == 1)
    started = time.monotonic()
    assert flaky.stop(timeout=5)
    assert flaky.stop(timeout=5)
    assert time.monotonic() - started < 2.0
    client.join(5)
    assert failed.is_set()
    assert not [thread for thread in threading.enumerate() if thread.name.startswith(f"flaky-proxy-{flaky.port}")]
    with pytest.raises(RuntimeError):
        flaky.start()


@pytest.mark.timeout(30)
def test_stop_before_start_is_harmless() -> None:
    flaky = FlakyProxy(("127.0.0.1", 80))
    assert flaky.stop()
    with pytest.raises(RuntimeError):
        _ = flaky.port
