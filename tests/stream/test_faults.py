"""Delivery through faults met in the field: lost answers then drop_oldest, a reopened queue with a small
budget, a proxy's HTML answers (a portal's 200, nginx's 413), and close() while a request hangs.

Everything is real (the server process, the queues on disk, the client) except the fault itself:
either the TCP proxy ``FlakyProxy`` or ``FaultFront`` below, a small HTTP server in front of the
real one that forwards every request to it unchanged and replaces some answers.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from support.api import wait_for
from support.stream import api_for, indices, obs_of

from agents_bar_stream import QueueLockedError
from agents_bar_stream.flaky import FlakyProxy

MARGIN = 1.5  # seconds a deadline may be overrun by scheduling on a loaded 2-core machine


class At:
    """Something with ``.url`` like a LocalServer (what make_agent and api_for take)."""

    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture
def direct_api(server, user):
    """An ``Api`` on the real shared server; agents it creates are deleted at teardown, whatever
    the address the agent's own client used (a fault server may be gone by then)."""
    api = api_for(server, user)
    yield api
    api.cleanup()


def reopen(make_agent, srv, name, queue_dir, *, within: float = 30.0, **options):
    """A RemoteAgent on ``queue_dir`` with its queue open, retrying while the directory is still locked
    (a closed agent gives the lock back once its last request is over)."""
    deadline = time.monotonic() + within
    while True:
        agent = make_agent(srv, name, create=False, queue_dir=queue_dir, **options)
        try:
            return agent.open_queue(), time.monotonic()
        except QueueLockedError:
            agent.close(timeout=0)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- a fault server: the only fake of tests 1, 3 and 4 ----------------------------------------------------

_PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")
LOSE = "lose"  # decide(): forward the request, then drop the connection instead of answering


class FaultFront:
    """An HTTP server on 127.0.0.1 in front of ``upstream`` (the real server).

    Each request goes to ``decide(method, path, body)``: ``None`` forwards it to the real server with
    ``requests`` (headers the client publishes passed through; the upstream's status, body and
    content type returned), a ``(status, content_type, body)`` answers it here without forwarding,
    and ``LOSE`` forwards it and then closes the connection without a word (the server applied the
    request; its answer is lost). ``log`` records ``(method, path, len(body), status, forwarded)``
    of every request (status ``None`` for a lost answer).
    """

    def __init__(self, upstream: str, decide) -> None:
        self.upstream = upstream
        self.decide = decide
        self.log: list = []
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                method = self.command
                fake = front.decide(method, self.path, body)
                if fake is None or fake is LOSE:
                    headers = {h: self.headers[h] for h in _PASSED_HEADERS if self.headers.get(h)}
                    r = requests.request(method, front.upstream + self.path, data=body or None, headers=headers,
                                         timeout=60, allow_redirects=False)
                    status, ctype, content = r.status_code, r.headers.get("Content-Type", ""), r.content
                else:
                    status, ctype, content = fake
                forwarded = fake is None or fake is LOSE
                with front._lock:
                    front.log.append((method, self.path, len(body), None if fake is LOSE else status, forwarded))
                if fake is LOSE:
                    self.close_connection = True
                    return
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = do_PUT = _handle  # noqa: N815

            def log_message(self, *args) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def entries(self, *, suffix: str = "/steps", method: str = "POST") -> list:
        with self._lock:
            return [e for e in self.log if e[0] == method and e[1].split("?")[0].endswith(suffix)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


@pytest.fixture
def fault_front(server):
    """``make(decide) -> FaultFront`` in front of the shared server; all are closed at teardown."""
    made = []

    def make(decide) -> FaultFront:
        front = FaultFront(server.url, decide)
        made.append(front)
        return front

    yield make
    for front in made:
        front.close()


HTML = "text/html; charset=utf-8"


# --- 1. drop_oldest after lost answers ----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_drop_oldest_after_lost_answers_never_reuses_numbers_the_server_holds(
        server, user, agent_name, direct_api, fault_front, make_agent, dead_server, tmp_path):
    # Fault: a front that forwards every batch to the real server and then loses its answer (the
    # connection closes without a word); logins and the probe go through. (FlakyProxy's
    # drop_response_prob=1.0 would lose the probe's and the login's answers too, and a batch is
    # retried as it was first read, so the 100 steps must all be queued before the first send.)
    direct_api.create_agent(agent_name)
    queue = tmp_path / "queue"
    offline = make_agent(dead_server, agent_name, create=False, queue_dir=queue, durability="step")
    for i in range(100):
        offline.step(obs_of(i, run=1), i % 2, 0.0, obs_of(i + 1, run=1), False)
    offline.close(timeout=0.1)

    front = fault_front(lambda method, path, body: LOSE if method == "POST" and path.endswith("/steps") else None)
    lost, _ = reopen(make_agent, front, agent_name, queue, durability="step")
    wait_for(lambda: direct_api.agent(agent_name)["steps_received"] >= 100, 30, message="100 steps on the server")
    assert lost.pending == 100  # the server has them all; this process never heard so
    lost.close(timeout=0.5)

    # The next run: straight to the server, a budget far below what the old queue file measures, and
    # small batches, so that most of the old steps are not in flight when step() looks for room.
    second, _ = reopen(make_agent, server, agent_name, queue, on_full="drop_oldest", max_pending_bytes=20_000,
                       block_timeout=10, durability="step", batch_size=10)
    for i in range(20):
        second.step(obs_of(i, run=2), i % 2, 0.0, obs_of(i + 1, run=2), False)
    assert second.flush(timeout=30), second.stats
    log = direct_api.log(agent_name)
    assert indices(log, run=1) == list(range(100))
    # Before the fix the old steps were dropped and the new ones took their numbers, which the server
    # already held: it counted them as duplicates and they were gone without a word.
    assert indices(log, run=2) == list(range(20)), second.stats
    assert [int(e["step"]["obs"][1]) for e in log] == [1] * 100 + [2] * 20


# --- 2. a reopened queue with a small budget ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_reopened_queue_with_a_small_budget_is_not_stuck(down_server, user, agent_name, make_agent, tmp_path):
    queue = tmp_path / "queue"
    first = make_agent(down_server, agent_name, create=False, queue_dir=queue, durability="step")
    for i in range(100):
        first.step(obs_of(i, run=1), i % 2, 0.0, obs_of(i + 1, run=1), False)
    first.close(timeout=0.2)

    down_server.start(timeout=60)
    # Reopened, the queue's size starts from the database file's (an estimate above the budget);
    # before the fix it never came back below the budget, and step() raised QueueFullError.
    second = make_agent(down_server, agent_name, create=False, queue_dir=queue, max_pending_bytes=30_000,
                        block_timeout=10)
    for i in range(100):
        second.step(obs_of(i, run=2), i % 2, 0.0, obs_of(i + 1, run=2), False)
    assert second.flush(timeout=30), second.stats
    log = api_for(down_server, user).log(agent_name)
    assert [int(e["step"]["obs"][1]) for e in log] == [1] * 100 + [2] * 100
    assert indices(log, run=1) == list(range(100)) and indices(log, run=2) == list(range(100))


@pytest.mark.timeout(60)
def test_drop_oldest_on_a_reopened_queue_with_the_server_away(dead_server, agent_name, make_agent, tmp_path):
    # Nothing of the backlog was ever sent: drop_oldest may drop it to make room, even though the
    # flusher has read it and waits (probing the server) to send it. Before the fix that read
    # kept the whole backlog from being dropped, and step() raised QueueFullError.
    queue = tmp_path / "queue"
    first = make_agent(dead_server, agent_name, create=False, queue_dir=queue, durability="step")
    for i in range(300):
        first.step(obs_of(i, run=1), i % 2, 0.0, obs_of(i + 1, run=1), False)
    first.close(timeout=0.2)
    second = make_agent(dead_server, agent_name, create=False, queue_dir=queue, durability="step",
                        on_full="drop_oldest", max_pending_bytes=20_000, block_timeout=2)
    time.sleep(0.3)  # the flusher has read the backlog and is probing the dead port
    for i in range(300):
        second.step(obs_of(i, run=2), i % 2, 0.0, obs_of(i + 1, run=2), False)
    stats = second.stats
    assert stats["dropped"] > 0
    assert stats["bytes_pending"] <= 20_000
    assert stats["pending"] == 600 - stats["dropped"]


# --- 3. malformed answers never end the flusher -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_flusher_survives_html_answers_to_its_batches(server, agent_name, direct_api, fault_front, make_agent):
    # Fault: a captive-portal-like front answers the first three batches "200" with an HTML page,
    # without forwarding them; everything else reaches the real server unchanged.
    faked = []

    def decide(method, path, body):
        if method == "POST" and path.split("?")[0].endswith("/steps") and len(faked) < 3:
            faked.append(path)
            return 200, HTML, b"<html>portal</html>"
        return None

    front = fault_front(decide)
    direct_api.create_agent(agent_name)
    agent = make_agent(front, agent_name, create=False)
    for i in range(300):
        agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
    assert agent.flush(timeout=20), agent.stats
    assert len(faked) == 3
    assert agent.stats["retries"] >= 3
    # The flusher is still there: a second round goes out too.
    for i in range(300, 400):
        agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
    assert agent.flush(timeout=20), agent.stats
    assert indices(direct_api.log(agent_name)) == list(range(400))
    assert agent.stats["dead_lettered"] == 0


# --- 4. a proxy's HTML 413 -------------------------------------------------------------------------------

LIMIT = 20_000  # bytes: the front's client_max_body_size


@pytest.mark.timeout(60)
def test_html_413_from_a_proxy_splits_batches(server, agent_name, direct_api, fault_front, make_agent):
    # Fault: like nginx's client_max_body_size, the front answers any /steps body over LIMIT with
    # its own 413 HTML page (no JSON, no limits) and forwards the smaller ones.
    def decide(method, path, body):
        if method == "POST" and path.split("?")[0].endswith("/steps") and len(body) > LIMIT:
            return 413, HTML, b"<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body></html>"
        return None

    front = fault_front(decide)
    direct_api.create_agent(agent_name)
    # A long flush_interval lets the first batch fill with far more than LIMIT bytes of steps.
    agent = make_agent(front, agent_name, create=False, flush_interval=1.0)
    n = 2000
    for i in range(n):
        agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
    assert agent.flush(timeout=30), agent.stats
    batches = front.entries()
    assert any(status == 413 for _, _, _, status, _ in batches), "no batch was ever over the limit"
    assert max(size for _, _, size, _, forwarded in batches if forwarded) <= LIMIT
    assert indices(direct_api.log(agent_name)) == list(range(n))
    assert agent.stats["dead_lettered"] == 0


# --- 5. close() while a request hangs --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_close_is_bounded_while_a_request_hangs(server, agent_name, direct_api, make_agent, tmp_path):
    # Fault: FlakyProxy holds every connection for 20 s (a black-holed route).
    direct_api.create_agent(agent_name)
    queue = tmp_path / "queue"
    n = 50
    with FlakyProxy(upstream=server.url, seed=3, stall_prob=1.0, stall_seconds=20) as proxy:
        agent = make_agent(At(proxy.url), agent_name, create=False, queue_dir=queue)
        for i in range(n):
            agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
        wait_for(lambda: proxy.stats["stalls"] >= 1, 10, interval=0.02, message="the flusher inside a request")
        time.sleep(0.2)
        started = time.monotonic()
        agent.close(timeout=1)
        elapsed = time.monotonic() - started
        assert elapsed < 1 + MARGIN, f"close(timeout=1) took {elapsed:.1f} s"
    # The proxy is gone, so the hung request ends; the queue's lock is given back then.
    again, opened_at = reopen(make_agent, server, agent_name, queue, within=30)
    assert opened_at - started < 25
    assert again.flush(timeout=30), again.stats
    assert indices(direct_api.log(agent_name)) == list(range(n))
