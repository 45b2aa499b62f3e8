"""on_delivered / on_error and flush()'s AuthenticationError, against the real server (issue 15).

Real server processes, real queues in temporary directories; the faults are real too: a wrong
password, an agent deleted through the API, a server stopped. Nothing is mocked.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from support.api import Api, login, wait_for
from support.stream import api_for, obs_of

from agents_bar_stream import (
    AgentNotFoundError,
    AuthenticationError,
    Client,
    ConfigurationError,
    InvalidRequestError,
    RemoteAgent,
    ServiceUnavailableError,
    StreamOptions,
)
from agents_bar_stream.config import RetryPolicy


class Recorder:
    """Collects what the callbacks were called with (from the flusher's thread)."""

    def __init__(self) -> None:
        self.delivered: list[tuple[int, int]] = []
        self.errors: list[tuple[Exception, dict, float]] = []
        self.lock = threading.Lock()

    def on_delivered(self, first: int, last: int) -> None:
        with self.lock:
            self.delivered.append((first, last))

    def on_error(self, exc: Exception, info: dict) -> None:
        with self.lock:
            self.errors.append((exc, info, time.monotonic()))

    def kinds(self) -> list[str]:
        with self.lock:
            return [info["kind"] for _, info, _ in self.errors]

    def covered(self) -> list[int]:
        with self.lock:
            return [seq for first, last in self.delivered for seq in range(first, last + 1)]


def _step(agent, i: int, obs_size: int = 4) -> None:
    agent.step(obs_of(i)[:obs_size], i % 2, 1.0, obs_of(i + 1)[:obs_size], False)


@pytest.mark.timeout(60)
def test_on_delivered_covers_every_step_once_in_order(server, make_agent, agent_name, user):
    rec = Recorder()
    agent = make_agent(server, agent_name, on_delivered=rec.on_delivered, batch_size=16)
    for i in range(40):
        _step(agent, i)
    assert agent.flush(timeout=30)
    for i in range(40, 100):
        _step(agent, i)
    assert agent.flush(timeout=30)
    # on_delivered runs on the flusher's thread just after the ack is recorded, which is what flush()
    # waits for: the last call may come a moment after flush() returned.
    wait_for(lambda: len(rec.covered()) >= 100, 10, message="on_delivered for every step")
    assert rec.covered() == list(range(100))  # the wire numbers, each once, in order
    assert len(rec.delivered) >= 100 // 16  # one call per acknowledged batch
    producer = agent.stats["producer_id"]
    acked = api_for(server, user).get(f"/agents/{agent_name}/producers/{producer}").json()["acked_seq"]
    assert rec.delivered[-1][1] == acked == 99


@pytest.mark.timeout(60)
def test_a_raising_callback_is_logged_and_delivery_goes_on(server, make_agent, agent_name, caplog):
    calls = []

    def bad(first: int, last: int) -> None:
        calls.append((first, last))
        raise RuntimeError("the user's callback is broken")

    agent = make_agent(server, agent_name, on_delivered=bad)
    with caplog.at_level(logging.ERROR, logger="agents_bar_stream.flusher"):
        for round_ in range(3):
            for i in range(10):
                _step(agent, round_ * 10 + i)
            assert agent.flush(timeout=30)
            want = (round_ + 1) * 10
            wait_for(lambda w=want: sum(la - f + 1 for f, la in calls) == w, 10, message="on_delivered")
    assert len(calls) >= 3  # called again after it raised: the flusher lives on
    assert [s for f, la in calls for s in range(f, la + 1)] == list(range(30))
    assert agent.stats["delivered"] == 30 and agent.pending == 0
    assert any("on_delivered callback raised" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.timeout(90)
def test_wrong_password_flush_raises_and_on_error_is_told_once(server_factory, user, agent_name, tmp_path):
    # A private server: the failed logins count against 127.0.0.1's login budget, which the
    # shared server's other tests need.
    srv = server_factory()
    Api(srv.url, login(srv.url, *user)).create_agent(agent_name)
    rec = Recorder()
    client = Client(base_url=srv.url, username=user[0], password="not-the-password")
    agent = RemoteAgent(client, agent_name, on_error=rec.on_error, on_delivered=rec.on_delivered,
                        stream=StreamOptions(queue_dir=tmp_path / "q", retry_policy=RetryPolicy(0.05, 0.5)))
    try:
        _step(agent, 0)
        started = time.monotonic()
        with pytest.raises(AuthenticationError) as err:
            agent.flush(timeout=30)
        assert time.monotonic() - started < 20  # raised on the refusal, not after waiting out the timeout
        assert "stay queued" in str(err.value)
        assert agent.pending == 1  # nothing lost
        wait_for(lambda: rec.errors, 10, message="on_error called")
        time.sleep(1.0)  # more refused attempts meanwhile: still one report (once per error_interval, 60 s)
        assert rec.kinds() == ["authentication"]
        exc, info, _ = rec.errors[0]
        assert isinstance(exc, AuthenticationError) and info["agent"] == agent_name and info["pending"] == 1
        assert rec.delivered == []
    finally:
        agent.close(timeout=0)


@pytest.mark.timeout(60)
def test_deleted_agent_is_reported_at_once(server, make_agent, agent_name, user):
    rec = Recorder()
    agent = make_agent(server, agent_name, on_error=rec.on_error)
    _step(agent, 0)
    assert agent.flush(timeout=30)
    assert rec.errors == []
    assert api_for(server, user).delete(f"/agents/{agent_name}").status_code == 202
    _step(agent, 1)
    wait_for(lambda: rec.errors, 20, message="on_error called for the deleted agent")
    exc, info, _ = rec.errors[0]
    assert info["kind"] == "agent_deleted" and isinstance(exc, AgentNotFoundError)
    assert agent.pending == 1


@pytest.mark.timeout(120)
def test_outage_reported_after_the_interval_then_at_most_once_per_interval(down_server, make_agent, agent_name):
    rec = Recorder()
    agent = make_agent(down_server, agent_name, create=False, on_error=rec.on_error, on_delivered=rec.on_delivered,
                       error_interval=0.6)
    started = time.monotonic()
    for i in range(5):
        _step(agent, i)
    time.sleep(3.0)
    elapsed = time.monotonic() - started
    errors = list(rec.errors)
    assert errors, "an outage longer than error_interval must be reported"
    assert {info["kind"] for _, info, _ in errors} == {"outage"}
    assert all(isinstance(exc, ServiceUnavailableError) for exc, _, _ in errors)
    assert errors[0][2] - started >= 0.6 - 0.05  # not before the outage lasted error_interval
    assert errors[0][1]["seconds"] >= 0.55 and errors[0][1]["pending"] == 5
    gaps = [b[2] - a[2] for a, b in zip(errors, errors[1:], strict=False)]
    assert all(g >= 0.6 - 0.05 for g in gaps)  # rate-limited
    assert len(errors) <= elapsed / 0.6 + 1
    down_server.start(timeout=120)
    assert agent.flush(timeout=60)
    wait_for(lambda: len(rec.covered()) >= 5, 10, message="on_delivered for every step")
    assert rec.covered() == list(range(5))


@pytest.mark.timeout(60)
def test_a_dead_letter_is_reported_with_its_seq(server, make_agent, agent_name):
    rec = Recorder()
    agent = make_agent(server, agent_name, on_error=rec.on_error)  # the agent's obs size is 4
    _step(agent, 0, obs_size=3)  # the first step sets the shape here; the server refuses it
    wait_for(lambda: "dead_letter" in rec.kinds(), 30, message="the dead letter reported")
    exc, info, _ = next(e for e in rec.errors if e[1]["kind"] == "dead_letter")
    assert isinstance(exc, InvalidRequestError) and exc.status == 422
    assert info["seq"] == 0 and info["status"] == 422 and info["queue_dir"]
    assert agent.stats["dead_lettered"] == 1


def test_callbacks_must_be_callable():
    client = Client(base_url="http://127.0.0.1:9", access_token="t")
    for name in ("on_delivered", "on_error"):
        with pytest.raises(ConfigurationError, match=name):
            RemoteAgent(client, "a", **{name: "not a function"})
