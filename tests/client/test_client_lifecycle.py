"""Client and RemoteAgent lifecycles, threads, secrets in logs, and the other waits that must end."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from agents_bar_stream import (
    AuthenticationError,
    Client,
    ClosedError,
    RemoteAgent,
    ServiceUnavailableError,
    StreamOptions,
    wait_until_agent_exists,
)
from agents_bar_stream.config import Timeouts
from agents_bar_stream.storage import read_queue_summary

pytestmark = pytest.mark.timeout(60)

OBS = [0.1, -0.2, 0.3, 0.0]
MARGIN = 1.5


def test_closed_client_and_agent(server, user, agent_name, tmp_path):
    c = Client(base_url=server.url, username=user[0], password=user[1])
    with RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path)) as agent:
        agent.create_agent(4, 2, "dqn")
        assert agent.act(OBS) in (0, 1)
    # __exit__ closed the agent: using it again is a clear error, not a silent reconnect.
    with pytest.raises(ClosedError):
        agent.act(OBS)
    agent.close()  # idempotent
    other = RemoteAgent(c, agent_name)
    assert other.remove(agent_name=agent_name) is True
    c.close()
    c.close()  # idempotent
    with pytest.raises(ClosedError):
        other.info()


def test_agent_builds_its_own_client(server, user, token, agent_name, clean_env):
    # The published docs list access_token / username / password as RemoteAgent keywords.
    clean_env.setenv("AGENTS_BAR_URL", server.url)
    by_password = RemoteAgent(None, agent_name, username=user[0], password=user[1], description="own client")
    try:
        assert by_password.create_agent(4, 2, "dqn")["description"] == "own client"
        by_token = RemoteAgent(None, agent_name, access_token=token)
        assert by_token.exists is True
        assert by_token.act(OBS) in (0, 1)
    finally:
        by_password.remove(agent_name=agent_name)


def test_concurrent_act_from_threads(server, user, agent_name, tmp_path):
    with Client(base_url=server.url, username=user[0], password=user[1]) as c:
        agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path))
        agent.create_agent(4, 3, "dqn")
        results: list = []
        errors: list = []

        def worker():
            try:
                for _ in range(15):
                    results.append(agent.act(OBS, noise=0.5))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, name=f"act-{i}") for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        assert not errors, errors
        assert len(results) == 60 and all(type(a) is int and 0 <= a < 3 for a in results)
        assert agent.stats["act_calls"] == 60
        agent.remove(agent_name=agent_name)
        agent.close()


def test_no_secret_in_logs_or_errors(server, user, agent_name, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with Client(base_url=server.url, username=user[0], password=user[1]) as c:
        agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path))
        agent.create_agent(4, 2, "dqn")
        agent.act(OBS)
        agent.step(OBS, 1, 0.5, OBS, False)
        assert agent.flush(timeout=30)
        agent.remove(agent_name=agent_name)
        agent.close()
        token = c.token()  # read only to look for it in the logs
    assert token and token not in caplog.text
    assert user[1] not in caplog.text
    with Client(base_url=server.url, username=user[0], password="a-wrong-password-9") as bad:
        with pytest.raises(AuthenticationError) as info:
            bad.login()
    assert "a-wrong-password-9" not in str(info.value)
    assert "a-wrong-password-9" not in caplog.text


def test_wait_until_agent_exists_on_a_dead_port(closed_port_url):
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n")
    started = time.monotonic()
    assert wait_until_agent_exists(agent, max_seconds=1.0) is False
    assert time.monotonic() - started < 1.0 + MARGIN


@pytest.mark.parametrize("silent_server", [False], indirect=True, ids=["never-accepts"])
def test_wait_until_agent_exists_on_a_silent_port(silent_server):
    # Read timeout 3 s (default 30 s) only to keep the suite fast; max_seconds is 1.
    agent = RemoteAgent(Client(base_url=silent_server.url, access_token="t", timeouts=Timeouts(read=3.0)), "n")
    started = time.monotonic()
    assert wait_until_agent_exists(agent, max_seconds=1.0) is False
    assert time.monotonic() - started < 1.0 + MARGIN


def test_exists_on_a_dead_port_says_unavailable(closed_port_url):
    # "Unreachable" is not "does not exist": a caller must not delete-and-recreate on an outage.
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n")
    with pytest.raises(ServiceUnavailableError):
        agent.exists  # noqa: B018


@pytest.mark.parametrize("stepped_before", [True, False], ids=["queue-open", "queue-not-open"])
def test_step_after_the_client_is_closed(server, user, agent_name, tmp_path, stepped_before):
    # A step queued after its Client is closed could never be delivered: it must be refused, not
    # accepted (True) and left pending forever.
    c = Client(base_url=server.url, username=user[0], password=user[1])
    agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path))
    try:
        agent.create_agent(4, 2, "dqn")
        if stepped_before:
            assert agent.step(OBS, 0, 1.0, OBS, False) is True
            assert agent.flush(timeout=30)
        c.close()
        with pytest.raises(ClosedError, match="Client .* is closed"):
            agent.step(OBS, 1, 1.0, OBS, False)
        assert agent.pending == 0
    finally:
        agent.close(timeout=2)
        with Client(base_url=server.url, username=user[0], password=user[1]) as again:
            RemoteAgent(again, agent_name).remove(agent_name=agent_name)


def _obs(i: float) -> list:
    return [float(i), 0.0, 0.5, -0.5]


def test_a_new_agent_of_the_same_name_is_a_new_stream(server, user, api, agent_name, tmp_path, caplog):
    # remove() then create_agent(): the server numbers the new agent's steps from 0; the client
    # must not carry the old queue's numbering over (a 409 it would read as lost steps).
    caplog.set_level(logging.INFO, logger="agents_bar_stream")
    c = Client(base_url=server.url, username=user[0], password=user[1])
    agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path / "q"))
    try:
        agent.create_agent(4, 2, "dqn")
        for i in range(5):
            agent.step(_obs(i), i % 2, 1.0, _obs(i + 1), False)
        assert agent.flush(timeout=30), agent.stats
        old_producer = agent.stats["producer_id"]
        assert agent.remove(agent_name=agent_name) is True
        agent.create_agent(4, 2, "dqn")
        for i in range(10, 13):
            agent.step(_obs(i), i % 2, 1.0, _obs(i + 1), False)
        assert agent.flush(timeout=30), agent.stats
        stats = agent.stats
        assert stats["sequence_lost"] == 0 and stats["delivered"] == 3 and stats["dead_lettered"] == 0, stats
        assert stats["producer_id"] != old_producer
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []
        log = api.log(agent_name)
        assert [e["step"]["obs"][0] for e in log] == [10.0, 11.0, 12.0]
        assert [e["seq"] for e in log] == [0, 1, 2] and {e["producer_id"] for e in log} == {stats["producer_id"]}
        assert list(tmp_path.iterdir()) == [tmp_path / "q"]  # the old, empty queue is gone
    finally:
        agent.remove(agent_name=agent_name)
        agent.close(timeout=2)
        c.close()


def test_steps_pending_at_remove_are_not_sent_to_the_new_agent(server, user, api, agent_name, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="agents_bar_stream")
    c = Client(base_url=server.url, username=user[0], password=user[1])
    # flush_interval=30: the first steps wait in the queue, undelivered, until remove().
    agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path / "q", flush_interval=30))
    try:
        agent.create_agent(4, 2, "dqn")
        for i in range(3):
            agent.step(_obs(i), i % 2, 1.0, _obs(i + 1), False)
        assert agent.remove(agent_name=agent_name) is True
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("q.removed-")]
        assert len(aside) == 1, list(tmp_path.iterdir())
        assert read_queue_summary(aside[0])["pending"] == 3  # kept, for a person to look at
        assert any("3 undelivered steps" in r.getMessage() and str(aside[0]) in r.getMessage() for r in caplog.records)
        assert not any("sent by the next RemoteAgent" in r.getMessage() for r in caplog.records)
        agent.create_agent(4, 2, "dqn")
        for i in range(10, 12):
            agent.step(_obs(i), i % 2, 1.0, _obs(i + 1), False)
        assert agent.flush(timeout=30), agent.stats
        assert [e["step"]["obs"][0] for e in api.log(agent_name)] == [10.0, 11.0]
        assert agent.stats["sequence_lost"] == 0
    finally:
        agent.remove(agent_name=agent_name)
        agent.close(timeout=2)
        c.close()
