"""Fixtures shared by every test suite: a real server process, accounts and tokens.

The ``server`` fixture is one ``agents-bar-stream serve`` subprocess for the whole session, on
a free port and a temporary data directory; tests that stop, kill or restart a server take their
own from ``server_factory`` instead, so that they never disturb the shared one.
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make `support` importable everywhere

from support.api import Api, login

from agents_bar_stream.server.process import LocalServer

#: The accounts that every server started by these fixtures has.
USERS = {"alice": "alice-password-1", "bob": "bob-password-2"}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared :class:`LocalServer` (started; ``server.url`` is its base URL)."""
    srv = LocalServer(tmp_path_factory.mktemp("server"), users=list(USERS.items()))
    srv.start(timeout=120)
    try:
        yield srv
    finally:
        srv.stop(timeout=30)


@pytest.fixture(scope="session")
def server_url(server) -> str:
    return server.url


@pytest.fixture(scope="session")
def user():
    """``(username, password)`` of the main test account on every fixture server."""
    return "alice", USERS["alice"]


@pytest.fixture(scope="session")
def other_user():
    """A second account, to check that accounts cannot see each other's agents."""
    return "bob", USERS["bob"]


@pytest.fixture(scope="session")
def token(server, user) -> str:
    """An access token of ``user`` on ``server``."""
    return login(server.url, *user)


@pytest.fixture(scope="session")
def other_token(server, other_user) -> str:
    return login(server.url, *other_user)


@pytest.fixture
def auth_headers(token) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(server, token):
    """``Api`` helper logged in as ``user`` on the shared server; agents it creates are deleted after the test."""
    helper = Api(server.url, token)
    yield helper
    helper.cleanup()


@pytest.fixture
def other_api(server, other_token):
    helper = Api(server.url, other_token)
    yield helper
    helper.cleanup()


@pytest.fixture
def anon_api(server) -> Api:
    return Api(server.url)


@pytest.fixture
def agent_name(request) -> str:
    """A fresh agent name for this test (valid by ``protocol.is_valid_agent_name``)."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def server_factory(tmp_path):
    """``make(**kwargs) -> LocalServer``: private servers (started) that this test may stop, kill or restart.

    Keyword arguments go to :class:`LocalServer`; every server made is stopped at teardown.
    """
    made = []

    def make(*, extra_args=(), users=None, name="private", start=True) -> LocalServer:
        srv = LocalServer(
            tmp_path / f"{name}-{len(made)}", users=list((users or USERS).items()), extra_args=list(extra_args)
        )
        made.append(srv)
        if start:
            srv.start(timeout=120)
        return srv

    yield make
    for srv in made:
        srv.stop(timeout=30)
