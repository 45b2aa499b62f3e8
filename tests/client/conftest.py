"""Fixtures of the client tests: real servers (from tests/conftest.py), clients, agents, dead ports.

Nothing here imitates the service: agents are created on the real server, and the only fakes are
network faults (a port nobody listens on, a socket that accepts and never answers).
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import socket
import threading

import pytest

from agents_bar_stream import AgentsBarError, Client, RemoteAgent, StreamOptions

_STREAM_FIELDS = {f.name for f in dataclasses.fields(StreamOptions)}

_ENV_NAMES = (
    "AGENTS_BAR_URL",
    "AGENTS_BAR_ACCESS_TOKEN",
    "AGENTS_BAR_USERNAME",
    "AGENTS_BAR_PASSWORD",
    "AGENTS_BAR_USER",
    "AGENTS_BAR_PASS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No AGENTS_BAR_* variable of the developer's shell leaks into a test; tests set their own."""
    for name in _ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name in _STREAM_FIELDS:  # the StreamOptions fallbacks (AGENTS_BAR_STREAM_DURABILITY, ...)
        monkeypatch.delenv(f"AGENTS_BAR_STREAM_{name.upper()}", raising=False)
    return monkeypatch


@pytest.fixture
def client(server, user):
    """A Client of ``user`` on the shared server, with credentials (so it can log in again)."""
    with Client(base_url=server.url, username=user[0], password=user[1]) as c:
        yield c


@pytest.fixture
def other_client(server, other_user):
    with Client(base_url=server.url, username=other_user[0], password=other_user[1]) as c:
        yield c


@pytest.fixture
def make_agent(client, tmp_path):
    """``make(name, model="dqn", obs_size=4, action_size=3, **options) -> RemoteAgent``, created on the
    shared server; every agent made is removed and closed at teardown. Options named like a field
    of StreamOptions (queue_dir, batch_size, ...) go there; the others to RemoteAgent."""
    made = []

    def make(name, model="dqn", obs_size=4, action_size=3, *, on=None, **options):
        stream = {k: options.pop(k) for k in list(options) if k in _STREAM_FIELDS}
        stream.setdefault("queue_dir", tmp_path / f"queue-{len(made)}")
        agent = RemoteAgent(on or client, name, stream=StreamOptions(**stream), **options)
        agent.create_agent(obs_size, action_size, model)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        try:
            agent.remove(agent_name=agent.agent_name)
        except AgentsBarError:
            pass
        agent.close(timeout=5)


def free_port() -> int:
    """A port that nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def closed_port_url():
    """The URL of a port that refuses connections."""
    return f"http://127.0.0.1:{free_port()}"


class SilentServer:
    """A TCP port that completes the handshake but never says a word.

    ``accept=False``: it listens and never calls accept() (the kernel's backlog completes the
    handshake). ``accept=True``: it accepts and reads every connection and never answers.
    """

    def __init__(self, accept: bool) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._held: list = []
        self._stop = threading.Event()
        self._thread = None
        if accept:
            self.sock.settimeout(0.1)
            self._thread = threading.Thread(target=self._run, name="silent-server", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._held.append(conn)  # keep it open and never write to it

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture(params=[False, True], ids=["never-accepts", "accepts-never-answers"])
def silent_server(request):
    srv = SilentServer(accept=request.param)
    yield srv
    srv.close()


class _CatchAllPage(http.server.BaseHTTPRequestHandler):
    """A web server that is not an Agents Bar: every GET and POST gets the same HTML page."""

    def _page(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


class _StaticFiles(http.server.SimpleHTTPRequestHandler):
    """``python -m http.server`` on an empty directory: HTML 404 for GET, 501 for POST."""

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(params=["static-files", "catch-all-page"])
def foreign_http_server(request, tmp_path):
    """The URL of a real HTTP server on 127.0.0.1 that is not an Agents Bar service."""
    if request.param == "static-files":
        handler = functools.partial(_StaticFiles, directory=str(tmp_path))
    else:
        handler = _CatchAllPage
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="foreign-http", daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)
