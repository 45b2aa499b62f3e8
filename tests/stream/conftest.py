"""Fixtures of the streaming tests: real agents on the real server, queues in temporary directories."""

from __future__ import annotations

import dataclasses
import socket
import types

import pytest
import requests
from support.api import Api, login

from agents_bar_stream import Client, RemoteAgent, StreamOptions

_STREAM_FIELDS = {f.name for f in dataclasses.fields(StreamOptions)}


@pytest.fixture
def make_agent(tmp_path, user):
    """``make(server, name, create=True, **options) -> RemoteAgent`` with its queue under tmp_path.

    Options named like a field of StreamOptions (batch_size, durability, ...) go there.
    The agent (DQN, obs 4, 2 actions) is created through the plain HTTP API when ``create``; every
    agent made is closed at teardown with a short timeout so a failing test never hangs.
    """
    made = []

    def make(server, name, *, create=True, queue_dir=None, **options) -> RemoteAgent:
        if create:
            Api(server.url, login(server.url, *user)).create_agent(name)
        client = Client(base_url=server.url, username=user[0], password=user[1])
        stream = {k: options.pop(k) for k in list(options) if k in _STREAM_FIELDS}
        stream.setdefault("retry_policy", _FAST_RETRY)
        stream["queue_dir"] = queue_dir or tmp_path / f"queue-{name}-{len(made)}"
        agent = RemoteAgent(client, name, stream=StreamOptions(**stream), **options)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close(timeout=2)
    # Delete the agents from the shared server: an agent left there keeps a learner thread busy
    # with its steps and slows every later test on this 2-core machine.
    for server, name in {(a.client.base_url, a.agent_name) for a in made}:
        try:
            requests.delete(f"{server}/api/v1/agents/{name}", timeout=5,
                            headers={"Authorization": f"Bearer {login(server, *user)}"})
        except requests.RequestException:
            pass  # a private server that is already stopped


@pytest.fixture
def down_server(server_factory, user, agent_name, make_agent):
    """A private server with the agent created, then stopped (``.start()`` brings it back)."""
    srv = server_factory()
    make_agent(srv, agent_name).close()
    srv.stop(timeout=30)
    return srv


@pytest.fixture
def dead_server():
    """An address where nothing listens (a port just freed): for tests that never need the server back."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return types.SimpleNamespace(url=f"http://127.0.0.1:{port}")


from agents_bar_stream.config import RetryPolicy  # noqa: E402

# Short backoff caps keep outage tests quick; the policy itself is tested in test_policy.py.
_FAST_RETRY = RetryPolicy(initial=0.05, max_delay=0.5)
