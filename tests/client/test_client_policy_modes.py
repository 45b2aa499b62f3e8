"""RemoteAgent(policy="local" | "auto"): act() with the agent's exported policy, kept fresh (issue 11).

STAND-IN: the policy endpoint is served here by :class:`PolicyStandIn`, a small real HTTP server on
127.0.0.1 that answers ``GET /api/v1/agents/{name}/policy`` itself (ONNX bytes exported in-process by the server's own
``export_policy``, ``ETag: "<version>"``, ``304`` on a matching ``If-None-Match``, a JSON ``404``
when it has no model) and passes every other request through to the real local server (agents,
act, steps). It is there for what a real server does not do on demand: serve corrupt bytes or a
model of the wrong size, switch models at a chosen moment, answer act() late or with an error. The
same modes against the real route (steps learnt by the server, its export fetched, the server
stopped mid-loop) are in test_client_policy_real.py.

The stand-in also records the bodies of ``POST .../steps`` that pass through it (what the client
sent) and can make ``POST .../act`` fail or answer late, for the auto mode.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time

import numpy as np
import orjson
import pytest
import requests
from support.trained import learn, make_agent

from agents_bar_stream import Client, ConfigurationError, RemoteAgent, StreamOptions
from agents_bar_stream.exceptions import ServiceUnavailableError
from agents_bar_stream.policy import LocalPolicy

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

OBS_SIZE, ACTION_SIZE = 4, 3
_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class PolicyStandIn:
    """The policy route in front of the real server; see the module docstring."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.models: dict[str, tuple[bytes, str]] = {}
        self.policy_answers: list[tuple[str, int]] = []  # (agent, status) of every GET .../policy
        self.step_bodies: list[dict] = []
        self.act_status: int | None = None  # answer POST .../act with this status instead
        self.act_delay = 0.0  # seconds before passing POST .../act on
        self.lock = threading.Lock()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.split("?")[0].split("/")
                # /api/v1/agents/{name}/policy
                if self.command == "GET" and len(parts) == 6 and parts[3] == "agents" and parts[5] == "policy":
                    stand_in._policy(self, parts[4])
                    return
                if self.command == "POST" and self.path.split("?")[0].endswith("/act"):
                    if stand_in.act_delay:
                        time.sleep(stand_in.act_delay)
                    if stand_in.act_status is not None:
                        self._send(stand_in.act_status, b'{"detail":"stand-in says no"}',
                                   {"Content-Type": "application/json"})
                        return
                if self.command == "POST" and self.path.split("?")[0].endswith("/steps"):
                    with stand_in.lock:
                        stand_in.step_bodies.append(orjson.loads(body))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                r = requests.request(self.command, stand_in.upstream + self.path, data=body or None,
                                     headers=headers, allow_redirects=False, timeout=30)
                out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP | {"content-encoding"}}
                self._send(r.status_code, r.content, out)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="policy-stand-in", daemon=True)
        self.thread.start()

    def publish(self, agent: str, data: bytes, version: str) -> None:
        with self.lock:
            self.models[agent] = (data, version)

    def served(self, agent: str, status: int) -> int:
        with self.lock:
            return sum(1 for a, s in self.policy_answers if a == agent and s == status)

    def _policy(self, handler, agent: str) -> None:
        with self.lock:
            model = self.models.get(agent)
        if model is None:
            status, body, headers = 404, b'{"detail":"no policy for this agent"}', {"Content-Type": "application/json"}
        else:
            data, version = model
            etag = f'"{version}"'
            if handler.headers.get("If-None-Match") == etag:
                status, body, headers = 304, b"", {"ETag": etag}
            else:
                status, body, headers = 200, data, {"ETag": etag, "Content-Type": "application/onnx"}
        with self.lock:
            self.policy_answers.append((agent, status))
        handler._send(status, body, headers)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def policy_server(server):
    """The policy endpoint, served by the stand-in (see the module docstring for why)."""
    srv = PolicyStandIn(server.url)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def models():
    """Two versions of a dqn policy for (4 -> 3), and one for the wrong observation size."""
    from agents_bar_stream.server.policy_export import export_policy

    agent = make_agent("dqn", OBS_SIZE, ACTION_SIZE, seed=3)
    first = export_policy(agent, "dqn", OBS_SIZE, ACTION_SIZE)
    learn(agent, "dqn", 300)
    second = export_policy(agent, "dqn", OBS_SIZE, ACTION_SIZE)
    other = make_agent("dqn", OBS_SIZE + 1, ACTION_SIZE, seed=3)
    wrong = export_policy(other, "dqn", OBS_SIZE + 1, ACTION_SIZE)
    assert first.version != second.version
    return first, second, wrong


@pytest.fixture
def pclient(policy_server, user):
    with Client(base_url=policy_server.url, username=user[0], password=user[1]) as c:
        yield c


@pytest.fixture
def make(make_agent, pclient, agent_name):
    """``make(policy, suffix="", **options) -> RemoteAgent``: a dqn (4 -> 3) created on the real server
    through the stand-in (conftest's ``make_agent``, which removes and closes it after the test)."""

    def build(policy: str, suffix: str = "", **options) -> RemoteAgent:
        options.setdefault("policy_refresh", 0.1)
        return make_agent(f"{agent_name}{suffix}", "dqn", OBS_SIZE, ACTION_SIZE, on=pclient, policy=policy, **options)

    return build


def _until(check, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


def _obs(n: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, size=(n, OBS_SIZE)).astype(np.float32)


def _policy_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"agents-bar-stream-policy[{name}]"]


def test_local_mode_acts_with_the_model(make, policy_server, models, agent_name):
    first = models[0]
    policy_server.publish(agent_name, first.onnx_bytes, first.version)
    agent = make("local")
    direct = LocalPolicy.from_bytes(first.onnx_bytes)
    for row in _obs():
        assert agent.act(row.tolist()) == direct.act(row)
    assert agent.policy_version == first.version
    stats = agent.stats
    assert (stats["act_local"], stats["act_remote"], stats["act_calls"]) == (16, 0, 16)
    assert stats["policy_version"] == first.version and 0 <= stats["policy_age"] < 5
    assert len(_policy_threads(agent_name)) == 1


def test_local_mode_waits_for_the_first_model_then_falls_back(make, policy_server, models, agent_name):
    agent = make("local", fallback=lambda obs: 2)
    start = time.monotonic()
    assert agent.act([0.1] * OBS_SIZE, timeout=0.3) == 2  # nothing published: 404s, then the fallback
    assert 0.25 <= time.monotonic() - start < 3
    assert agent.stats["act_fallbacks"] == 1 and agent.policy_version is None
    bare = make("local", suffix="-bare")
    with pytest.raises(ServiceUnavailableError, match="no policy model"):
        bare.act([0.1] * OBS_SIZE, timeout=0.2)
    # A model that arrives within the deadline is waited for.
    first = models[0]
    threading.Timer(0.3, policy_server.publish, (agent_name, first.onnx_bytes, first.version)).start()
    row = [0.5, -0.5, 0.25, 1.0]
    assert agent.act(row, timeout=5) == LocalPolicy.from_bytes(first.onnx_bytes).act(row)
    assert agent.stats["act_fallbacks"] == 1 and agent.policy_version == first.version


def test_a_new_etag_moves_the_version_within_policy_refresh(make, policy_server, models, agent_name):
    first, second, _ = models
    policy_server.publish(agent_name, first.onnx_bytes, first.version)
    agent = make("local", policy_refresh=0.2)
    agent.act([0.0] * OBS_SIZE)
    assert agent.policy_version == first.version
    assert _until(lambda: policy_server.served(agent_name, 304) >= 2, 5)  # conditional GETs in between
    policy_server.publish(agent_name, second.onnx_bytes, second.version)
    published = time.monotonic()
    assert _until(lambda: agent.policy_version == second.version, 5)
    assert time.monotonic() - published < 0.2 + 1.0  # one interval, and the time to load it
    row = [0.3, 0.1, -0.7, 0.9]
    assert agent.act(row) == LocalPolicy.from_bytes(second.onnx_bytes).act(row)
    # refresh_policy(): a fetch now, True with a model in use.
    assert agent.refresh_policy(timeout=5) is True


@pytest.mark.parametrize("bad", ["corrupt", "wrong-obs-size"])
def test_a_model_that_does_not_load_is_refused_and_the_old_one_stays(make, policy_server, models, agent_name,
                                                                    caplog, bad):
    first, _, wrong = models
    policy_server.publish(agent_name, first.onnx_bytes, first.version)
    agent = make("local", policy_refresh=0.1)
    agent.act([0.0] * OBS_SIZE)
    caplog.set_level(logging.WARNING, logger="agents_bar_stream.policy")
    if bad == "corrupt":
        policy_server.publish(agent_name, b"not an onnx model" * 10, "bad0bad0bad0")
    else:
        policy_server.publish(agent_name, wrong.onnx_bytes, wrong.version)
    before = policy_server.served(agent_name, 200)
    assert _until(lambda: policy_server.served(agent_name, 200) >= before + 3, 5)  # refused, asked again
    assert agent.policy_version == first.version
    row = [0.2, 0.2, -0.2, 0.4]
    assert agent.act(row) == LocalPolicy.from_bytes(first.onnx_bytes).act(row)
    refused = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]  # once per version, not per fetch
    assert first.version in refused[0].getMessage()  # says which model stays in use


def test_auto_mode_answers_locally_when_the_server_is_down_or_late(make, policy_server, models, agent_name):
    first = models[0]
    policy_server.publish(agent_name, first.onnx_bytes, first.version)
    calls = []
    agent = make("auto", fallback=lambda obs: calls.append(obs) or 0)
    row = [0.1, -0.3, 0.5, 0.7]
    local = LocalPolicy.from_bytes(first.onnx_bytes).act(row)
    assert isinstance(agent.act(row), int)
    assert agent.stats["act_remote"] == 1 and agent.stats["act_local"] == 0
    assert agent.refresh_policy(timeout=5) and agent.policy_version == first.version
    try:
        policy_server.act_status = 503  # busy / an outage behind a proxy
        assert agent.act(row, timeout=2) == local
        policy_server.act_status = None
        policy_server.act_delay = 1.0  # late
        start = time.monotonic()
        assert agent.act(row, timeout=0.3) == local
        assert time.monotonic() - start < 0.9
    finally:
        policy_server.act_status = None
        policy_server.act_delay = 0.0
    stats = agent.stats
    assert (stats["act_local"], stats["act_remote"], stats["act_fallbacks"]) == (2, 1, 0)
    assert calls == []
    assert agent.act(row) is not None and agent.stats["act_remote"] == 2  # the server is back


def test_auto_mode_without_a_model_falls_back(make, policy_server, agent_name):
    agent = make("auto", fallback=lambda obs: 1)
    try:
        policy_server.act_status = 503
        assert agent.act([0.0] * OBS_SIZE, timeout=0.3) == 1
    finally:
        policy_server.act_status = None
    assert agent.stats["act_fallbacks"] == 1 and agent.stats["act_local"] == 0


def test_batch_act(make, policy_server, models, agent_name):
    first = models[0]
    policy_server.publish(agent_name, first.onnx_bytes, first.version)
    agent = make("local")
    batch = _obs(8)
    expected = LocalPolicy.from_bytes(first.onnx_bytes).act_batch(batch)
    assert agent.act(batch) == expected
    assert agent.act(batch.tolist()) == expected
    assert agent.stats["act_local"] == 2
    remote = make("remote", suffix="-r")
    actions = remote.act(batch[:3])
    assert len(actions) == 3 and all(isinstance(a, int) and 0 <= a < ACTION_SIZE for a in actions)
    assert remote.stats["act_remote"] == 3 and remote.stats["act_calls"] == 1


def test_steps_carry_the_version_that_chose_their_action(make, policy_server, models, agent_name):
    first = models[0]
    policy_server.publish(agent_name, first.onnx_bytes, first.version)
    local = make("local")
    remote = make("remote", suffix="-r")
    obs = [0.1, 0.2, 0.3, 0.4]
    for agent in (local, remote):
        action = agent.act(obs)
        agent.step(obs, action, 1.0, obs, False)
        assert agent.flush(10)
    sent = {body["producer_id"]: body["steps"] for body in policy_server.step_bodies}
    steps = [s for batch in sent.values() for s in batch]
    versions = sorted(str(s.get("policy_version")) for s in steps)
    assert versions == sorted([first.version, "None"])
    # The real server took both (it ignores a field it does not know, or stores it).
    assert local.stats["delivered"] == 1 and remote.stats["delivered"] == 1


@pytest.mark.parametrize("mode", ["remote", "local", "auto"])
def test_stats_keys_are_there_from_the_start(pclient, tmp_path, mode):
    agent = RemoteAgent(pclient, "stats-from-start", policy=mode, stream=StreamOptions(queue_dir=tmp_path / "q"))
    stats = agent.stats
    for key in ("act_local", "act_remote", "policy_version", "policy_age"):
        assert key in stats
    assert (stats["act_local"], stats["act_remote"], stats["policy_version"], stats["policy_age"]) == (0, 0, None, None)
    assert agent.policy_version is None
    agent.close()


def test_close_stops_the_refresh_thread(make, policy_server, models, agent_name):
    first = models[0]
    policy_server.publish(agent_name, first.onnx_bytes, first.version)
    agent = make("local", policy_refresh=30)
    agent.act([0.0] * OBS_SIZE)
    assert len(_policy_threads(agent_name)) == 1
    agent.close(timeout=5)
    assert _until(lambda: not _policy_threads(agent_name), 3)


def test_remote_mode_starts_no_thread_and_refuses_refresh(make, agent_name):
    agent = make("remote")
    agent.act([0.0] * OBS_SIZE)
    assert not _policy_threads(agent_name)
    with pytest.raises(ConfigurationError):
        agent.refresh_policy()


@pytest.mark.parametrize("kwargs", [
    {"policy": "onnx"}, {"policy": None}, {"policy": "LOCAL"}, {"policy_refresh": 0}, {"policy_refresh": -1},
    {"policy_refresh": "5"}, {"policy_refresh": True}, {"policy_refresh": float("inf")},
    {"policy_refresh": float("nan")},
])
def test_bad_arguments_raise_configuration_error(kwargs):
    client = Client(base_url="http://127.0.0.1:1", access_token="t")
    with pytest.raises(ConfigurationError):
        RemoteAgent(client, "bad-args", **kwargs)


def test_policy_is_not_sent_as_a_hyperparameter(tmp_path):
    client = Client(base_url="http://127.0.0.1:1", access_token="t")
    agent = RemoteAgent(client, "not-hyper", policy="auto", policy_refresh=2, lr=0.01,
                        stream=StreamOptions(queue_dir=tmp_path / "q"))
    assert agent.hparams == {"lr": 0.01}
    assert (agent.policy_mode, agent.policy_refresh) == ("auto", 2.0)


def test_a_forked_child_does_not_inherit_the_refresh_thread(make, policy_server, models, agent_name):
    import os

    first = models[0]
    policy_server.publish(agent_name, first.onnx_bytes, first.version)
    agent = make("local", policy_refresh=30)
    agent.act([0.0] * OBS_SIZE)
    parent_source = agent._policy_obj
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no thread of the parent's, and a source of its own on first use
        try:
            ok = (not _policy_threads(agent_name) and agent.policy_version is None
                  and parent_source.forked)
            agent.act([0.0] * OBS_SIZE, timeout=10)
            ok = ok and agent._policy_obj is not parent_source and agent.policy_version == first.version
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert not parent_source.forked and parent_source.running


def test_a_malformed_batch_fails_before_the_network(make, policy_server, agent_name):
    agent = make("remote")
    before = agent.stats["act_remote"]
    with pytest.raises(ConfigurationError, match="shape"):
        agent.act([[0.1] * OBS_SIZE, [0.1] * (OBS_SIZE - 1)])
    with pytest.raises(ConfigurationError, match="shape"):
        agent.act([[0.1, 0.2], [0.3, 0.4]])
    assert agent.stats["act_remote"] == before
