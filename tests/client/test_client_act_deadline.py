"""act() never hangs: it answers, falls back, or raises ServiceUnavailableError by its deadline."""

from __future__ import annotations

import threading
import time

import pytest
from support.api import login

from agents_bar_stream import (
    Client,
    ConfigurationError,
    RemoteAgent,
    ServiceUnavailableError,
    StreamOptions,
)
from agents_bar_stream.config import Timeouts
from agents_bar_stream.flaky import FlakyProxy
from agents_bar_stream.server.process import LocalServer

pytestmark = pytest.mark.timeout(60)

OBS = [0.1, -0.2, 0.3, 0.0]
MARGIN = 1.5  # seconds a deadline may be overrun by scheduling on a loaded 2-core machine


@pytest.fixture(scope="module")
def stopped(user, tmp_path_factory):
    """``(client, agent_name)``: a logged-in client whose server had the agent and then stopped.

    One private server for the module (like ``server_factory``'s, but built once to keep the suite fast).
    """
    srv = LocalServer(tmp_path_factory.mktemp("stopped-server"), users=[user])
    srv.start(timeout=120)
    try:
        c = Client(base_url=srv.url, username=user[0], password=user[1])
        agent = RemoteAgent(c, "stopped-agent", stream=StreamOptions(queue_dir=tmp_path_factory.mktemp("q")))
        agent.create_agent(4, 2, "dqn")
        assert agent.act(OBS) in (0, 1)
        agent.close()
    finally:
        srv.stop()
    yield c, agent.agent_name
    c.close()


def timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except BaseException as exc:
        exc.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
        raise


def test_stopped_server_raises_by_the_deadline(stopped):
    c, name = stopped
    agent = RemoteAgent(c, name, agent_model="dqn", act_timeout=1.0)
    with pytest.raises(ServiceUnavailableError) as info:
        timed(lambda: agent.act(OBS))
    assert info.value.elapsed < 1.0 + MARGIN
    assert agent.stats["act_retries"] >= 1  # it kept trying within the deadline, not just once
    assert agent.stats["act_fallbacks"] == 0


def test_per_call_timeout_overrides(stopped):
    c, name = stopped
    agent = RemoteAgent(c, name, agent_model="dqn", act_timeout=30.0)
    with pytest.raises(ServiceUnavailableError) as info:
        timed(lambda: agent.act(OBS, timeout=0.5))
    assert info.value.elapsed < 0.5 + MARGIN
    with pytest.raises(ServiceUnavailableError) as info:
        timed(lambda: agent.act(OBS, 0.0, timeout=0))
    assert info.value.elapsed < MARGIN


@pytest.mark.parametrize("timeout", [-1, "1", float("nan"), True])
def test_bad_timeout_rejected(closed_port_url, timeout):
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n", agent_model="dqn", act_timeout=0.5)
    with pytest.raises(ConfigurationError):
        agent.act(OBS, timeout=timeout)


@pytest.mark.parametrize("act_timeout", [-1, "5", None, float("nan")])
def test_bad_act_timeout_rejected(act_timeout):
    c = Client(base_url="http://127.0.0.1:1", access_token="t")
    with pytest.raises(ConfigurationError):
        RemoteAgent(c, "n", act_timeout=act_timeout)


def test_fallback(stopped):
    c, name = stopped
    seen = []

    def fallback(obs):
        seen.append(obs)
        return 0

    agent = RemoteAgent(c, name, agent_model="dqn", act_timeout=1.0, fallback=fallback)
    action, elapsed = timed(lambda: agent.act(OBS))
    assert action == 0
    assert elapsed < 1.0 + MARGIN
    assert seen == [OBS]  # the fallback got the caller's observation
    assert agent.stats["act_fallbacks"] == 1
    assert agent.stats["act_calls"] == 1


def test_fallback_without_knowing_the_model(stopped):
    # A fresh agent (model never read from the server) must not need the server to fall back.
    c, name = stopped
    agent = RemoteAgent(c, name, act_timeout=0.5, fallback=lambda obs: [0.5, 0.5])
    action, elapsed = timed(lambda: agent.act(OBS))
    assert action == [0.5, 0.5]
    assert elapsed < 0.5 + MARGIN


def test_fallback_must_be_callable():
    with pytest.raises(ConfigurationError):
        RemoteAgent(Client(base_url="http://127.0.0.1:1", access_token="t"), "n", fallback=0)


def test_silent_port_token_client(silent_server):
    c = Client(base_url=silent_server.url, access_token="t")
    agent = RemoteAgent(c, "n", agent_model="dqn", act_timeout=1.0)
    with pytest.raises(ServiceUnavailableError) as info:
        timed(lambda: agent.act(OBS))
    assert info.value.elapsed < 1.0 + MARGIN
    agent.fallback = lambda obs: 1
    action, elapsed = timed(lambda: agent.act(OBS))
    assert action == 1 and elapsed < 1.0 + MARGIN
    c.close()


@pytest.mark.parametrize("silent_server", [False], indirect=True, ids=["never-accepts"])
def test_silent_port_credentials_client(silent_server):
    # Read timeout of 3 s instead of the default 30 s only to keep the suite fast; the deadline is 1 s.
    c = Client(base_url=silent_server.url, username="alice", password="pw", timeouts=Timeouts(connect=3.0, read=3.0))
    agent = RemoteAgent(c, "n", agent_model="dqn", act_timeout=1.0, fallback=lambda obs: 1)
    try:
        action, elapsed = timed(lambda: agent.act(OBS))
        assert action == 1
        assert elapsed < 1.0 + MARGIN
    finally:
        c.close()


def test_stalled_server_behind_a_proxy(server, user, agent_name, tmp_path):
    """A paused server (a proxy holding all traffic): act gives up by its deadline and works again after."""
    with FlakyProxy(server.url, seed=1) as proxy:
        c = Client(base_url=proxy.url, username=user[0], password=user[1])
        agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path), act_timeout=1.0)
        try:
            agent.create_agent(4, 2, "dqn")
            assert agent.act(OBS) in (0, 1)
            # A stall is decided per connection: a fresh client (with a token, so no login) opens new ones.
            fresh = Client(base_url=proxy.url, access_token=login(server.url, *user))
            stalled = RemoteAgent(fresh, agent_name, agent_model="dqn", act_timeout=1.0)
            proxy.stall_prob, proxy.stall_seconds = 1.0, 10.0
            with pytest.raises(ServiceUnavailableError) as info:
                timed(lambda: stalled.act(OBS))
            assert info.value.elapsed < 1.0 + MARGIN
            proxy.stall_prob = 0.0
            assert stalled.act(OBS, timeout=15) in (0, 1)
            fresh.close()
        finally:
            agent.remove(agent_name=agent_name)
            c.close()


def test_outage_via_proxy_is_ridden_out(server, user, agent_name, tmp_path):
    """Connections reset for a second: act with a longer deadline retries through it."""
    with FlakyProxy(server.url, seed=2) as proxy:
        c = Client(base_url=proxy.url, username=user[0], password=user[1])
        agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path), act_timeout=10.0)
        try:
            agent.create_agent(4, 2, "dqn")
            proxy.down(1.0)
            action, elapsed = timed(lambda: agent.act(OBS))
            assert action in (0, 1)
            assert elapsed < 10.0
            assert agent.stats["act_retries"] >= 1
        finally:
            agent.remove(agent_name=agent_name)
            c.close()


@pytest.mark.timeout(90)
def test_act_retried_across_a_restart(server_factory, user, agent_name, tmp_path):
    srv = server_factory()
    c = Client(base_url=srv.url, username=user[0], password=user[1])
    agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path), act_timeout=30.0)
    agent.create_agent(4, 2, "dqn")
    assert agent.act(OBS) in (0, 1)
    srv.stop()
    errors = []

    def restart_later():
        time.sleep(1.0)
        try:
            srv.restart(timeout=60)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=restart_later, name="restart-server", daemon=True)
    thread.start()
    try:
        action, elapsed = timed(lambda: agent.act(OBS))
    finally:
        thread.join(70)
    assert not errors, errors
    assert action in (0, 1)
    assert elapsed < 30.0 + MARGIN
    assert agent.stats["act_retries"] >= 1
    assert agent.stats["act_fallbacks"] == 0
    agent.remove(agent_name=agent_name)
    agent.close()
    c.close()


@pytest.mark.parametrize("credentials", [False, True], ids=["token", "login"])
def test_deadline_error_keeps_the_last_failure(closed_port_url, credentials):
    # The deadline error must say why there was no answer (here: nobody listens), and chain it,
    # not only that time ran out.
    if credentials:
        c = Client(base_url=closed_port_url, username="u", password="p")
    else:
        c = Client(base_url=closed_port_url, access_token="t")
    agent = RemoteAgent(c, "n", agent_model="dqn", act_timeout=1.0)
    with pytest.raises(ServiceUnavailableError) as info:
        agent.act(OBS)
    assert "within 1 s" in str(info.value)
    assert "connection refused" in str(info.value), str(info.value)
    assert info.value.__cause__ is not None and "connection refused" in str(info.value.__cause__)
    assert agent.stats["act_retries"] >= 1  # it did retry until the deadline
