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
    wait_until_agent_exists,
)
from agents_bar_stream.config import Timeouts

pytestmark = pytest.mark.timeout(60)

OBS = [0.1, -0.2, 0.3, 0.0]
MARGIN = 1.5


def test_closed_client_and_agent(server, user, agent_name, tmp_path):
    c = Client(base_url=server.url, username=user[0], password=user[1])
    with RemoteAgent(c, agent_name, queue_dir=tmp_path) as agent:
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
        agent = RemoteAgent(c, agent_name, queue_dir=tmp_path)
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
        agent = RemoteAgent(c, agent_name, queue_dir=tmp_path)
        agent.create_agent(4, 2, "dqn")
        agent.act(OBS)
        agent.step(OBS, 1, 0.5, OBS, False)
        assert agent.flush(timeout=30)
        agent.remove(agent_name=agent_name)
        agent.close()
        token = c._current_token()  # read only to look for it in the logs
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
    agent = RemoteAgent(c, agent_name, queue_dir=tmp_path)
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
