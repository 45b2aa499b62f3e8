"""Client: where the service is, who we are, and what happens when the server refuses us."""

from __future__ import annotations

import logging
import time

import pytest
from support.api import login

from agents_bar_stream import (
    AgentNotFoundError,
    AuthenticationError,
    Client,
    ConfigurationError,
    RemoteAgent,
    ServiceUnavailableError,
    StreamOptions,
    WrongServiceError,
    wait_until_agent_exists,
)
from agents_bar_stream.config import RetryPolicy

pytestmark = pytest.mark.timeout(60)

OBS = [0.1, -0.2, 0.3, 0.0]


def lists_agents(client: Client) -> bool:
    """Whether an authenticated call goes through (the server answers GET /agents/ with 200)."""
    return client.request("GET", "/agents/").status == 200


# -- base URL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("http://example.test:9000", "http://example.test:9000"),
        ("http://example.test:9000/", "http://example.test:9000"),
        ("http://example.test:9000/api/v1", "http://example.test:9000"),
        ("http://example.test:9000/api/v1/", "http://example.test:9000"),
        ("https://agents.example.test", "https://agents.example.test"),
    ],
)
def test_base_url_from_argument(given, expected):
    assert Client(base_url=given, access_token="t").base_url == expected


def test_base_url_from_env(clean_env):
    clean_env.setenv("AGENTS_BAR_URL", "http://from-env.test:1234/")
    assert Client(access_token="t").base_url == "http://from-env.test:1234"


def test_base_url_argument_wins_over_env(clean_env):
    clean_env.setenv("AGENTS_BAR_URL", "http://from-env.test:1234")
    assert Client(base_url="http://from-arg.test:1", access_token="t").base_url == "http://from-arg.test:1"


def test_base_url_default():
    assert Client(access_token="t").base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize("bad", ["localhost:8080", "ftp://example.test", "http://", "example.test"])
def test_base_url_invalid(bad):
    with pytest.raises(ConfigurationError):
        Client(base_url=bad, access_token="t")


@pytest.mark.parametrize("suffix", ["/", "/api/v1", "/api/v1/"])
def test_tolerated_url_forms_reach_the_server(server, user, suffix):
    with Client(base_url=server.url + suffix, username=user[0], password=user[1]) as c:
        assert lists_agents(c)


# -- credentials ---------------------------------------------------------------------------------


def test_credentials_from_arguments(server, user):
    with Client(base_url=server.url, username=user[0], password=user[1]) as c:
        c.login()
        assert lists_agents(c)


@pytest.mark.parametrize(
    "names",
    [("AGENTS_BAR_USERNAME", "AGENTS_BAR_PASSWORD"), ("AGENTS_BAR_USER", "AGENTS_BAR_PASS")],
    ids=["new-names", "published-client-names"],
)
def test_credentials_from_env(server, user, clean_env, names):
    clean_env.setenv(names[0], user[0])
    clean_env.setenv(names[1], user[1])
    with Client(base_url=server.url) as c:
        assert c.username == user[0]
        assert lists_agents(c)


def test_new_env_names_win_over_old(server, user, clean_env):
    clean_env.setenv("AGENTS_BAR_USERNAME", user[0])
    clean_env.setenv("AGENTS_BAR_PASSWORD", user[1])
    clean_env.setenv("AGENTS_BAR_USER", "nobody")
    clean_env.setenv("AGENTS_BAR_PASS", "wrong")
    with Client(base_url=server.url) as c:
        assert lists_agents(c)


def test_arguments_win_over_env(server, user, clean_env):
    clean_env.setenv("AGENTS_BAR_USERNAME", user[0])
    clean_env.setenv("AGENTS_BAR_PASSWORD", "wrong-password")
    with Client(base_url=server.url, username=user[0], password=user[1]) as c:
        assert lists_agents(c)


def test_access_token_from_argument(server, token):
    with Client(base_url=server.url, access_token=token) as c:
        assert c.username is None
        assert lists_agents(c)


def test_access_token_from_env(server, token, clean_env):
    clean_env.setenv("AGENTS_BAR_ACCESS_TOKEN", token)
    with Client(base_url=server.url) as c:
        assert lists_agents(c)


def test_token_client_makes_no_network_call_when_built(closed_port_url):
    # Nothing listens there: any request would fail. Building must not try.
    c = Client(base_url=closed_port_url, access_token="some-token")
    agent = RemoteAgent(c, "any-name", agent_model="dqn", obs_size=4, action_size=2)
    assert agent.agent_name == "any-name"
    # ...and the first real call is where the outage shows.
    with pytest.raises(ServiceUnavailableError):
        agent.info()
    c.close()


@pytest.mark.parametrize(
    "kwargs, env",
    [
        ({}, {}),
        ({"username": "alice"}, {}),
        ({"password": "secret"}, {}),
        ({}, {"AGENTS_BAR_USERNAME": "alice"}),
        ({}, {"AGENTS_BAR_PASS": "secret"}),
    ],
    ids=["nothing", "username-only", "password-only", "env-username-only", "env-old-password-only"],
)
def test_no_credentials(clean_env, kwargs, env):
    for key, value in env.items():
        clean_env.setenv(key, value)
    with pytest.raises(ConfigurationError) as info:
        Client(base_url="http://127.0.0.1:1", **kwargs)
    assert isinstance(info.value, ValueError)  # callers catching ValueError (as with the published client) still do
    message = str(info.value)
    for name in ("AGENTS_BAR_ACCESS_TOKEN", "AGENTS_BAR_USERNAME", "AGENTS_BAR_PASSWORD"):
        assert name in message


@pytest.mark.parametrize("field", ["base_url", "username", "password", "access_token"])
def test_non_string_arguments(field):
    kwargs = {"base_url": "http://127.0.0.1:1", "access_token": "t", field: 123}
    with pytest.raises(ConfigurationError):
        Client(**kwargs)


def test_secrets_never_in_repr(server, user, token):
    secret_token = "tok-" + "s3cr3t" * 4
    c = Client(base_url="http://127.0.0.1:1", access_token=secret_token)
    agent = RemoteAgent(c, "agent-x")
    for text in (repr(c), str(c), repr(agent), str(agent)):
        assert secret_token not in text
    # A logged-in client: neither the password nor the token it obtained show.
    with Client(base_url=server.url, username=user[0], password=user[1]) as logged:
        logged.login()
        assert lists_agents(logged)
        for text in (repr(logged), str(logged)):
            assert user[1] not in text
            assert "eyJ" not in text and token.split(".")[0] not in text


def test_published_positional_order_username_password_base_url(server, user):
    """agents_bar 0.4.2: ``Client(username=None, password=None, base_url=None)``."""
    with Client(username=user[0], password=user[1], base_url=server.url) as c:
        assert lists_agents(c)


def test_published_positional_call(server, user):
    with Client(user[0], user[1], server.url) as c:
        assert lists_agents(c)


# -- authentication failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "who", [("alice", "wrong-password"), ("nobody-here", "x")], ids=["bad-password", "no-such-user"]
)
def test_wrong_credentials(server, who, agent_name):
    with Client(base_url=server.url, username=who[0], password=who[1]) as c:
        with pytest.raises(AuthenticationError):
            c.login()
        agent = RemoteAgent(c, agent_name, fallback=lambda obs: 0)
        with pytest.raises(AuthenticationError):
            agent.info()
        # Not an outage: act() must say so instead of quietly using the fallback.
        with pytest.raises(AuthenticationError):
            agent.act(OBS)
        assert agent.stats["act_fallbacks"] == 0


def test_relogin_after_tokens_expire(server_factory, user, agent_name, tmp_path):
    srv = server_factory(extra_args=["--token-ttl", "2"])
    with Client(base_url=srv.url, username=user[0], password=user[1]) as c:
        agent = RemoteAgent(c, agent_name, stream=StreamOptions(queue_dir=tmp_path / "q"))
        agent.create_agent(4, 2, "dqn")
        assert agent.act(OBS) in (0, 1)
        old_token = login(srv.url, *user)
        time.sleep(2.6)
        # The server really expired what it handed out before...
        with Client(base_url=srv.url, access_token=old_token) as stale:
            with pytest.raises(AuthenticationError):
                RemoteAgent(stale, agent_name).info()
        # ...and the client with credentials logs in again on its own.
        assert agent.info()["name"] == agent_name
        time.sleep(2.6)
        assert agent.act(OBS, timeout=30) in (0, 1)
        assert agent.remove(agent_name=agent_name) is True
        agent.close(timeout=5)


def test_expired_token_only_client(server_factory, user, agent_name):
    srv = server_factory(extra_args=["--token-ttl", "2"])
    token = login(srv.url, *user)
    with Client(base_url=srv.url, access_token=token) as c:
        agent = RemoteAgent(c, agent_name, agent_model="dqn", fallback=lambda obs: 0)
        with pytest.raises(AgentNotFoundError):  # the token works while fresh
            agent.info()
        time.sleep(2.6)
        with pytest.raises(AuthenticationError):
            agent.info()
        with pytest.raises(AuthenticationError):  # not an outage: no fallback
            agent.act(OBS)
        assert agent.stats["act_fallbacks"] == 0
        with pytest.raises(AuthenticationError):  # a refused token is not "no such agent"
            agent.exists  # noqa: B018


@pytest.mark.parametrize(
    "who", [("alice", "wrong-password"), ("nobody-here", "x")], ids=["bad-password", "no-such-user"]
)
def test_exists_with_wrong_credentials_says_so(server, who, make_agent, agent_name):
    make_agent(agent_name)  # the agent is there: only the credentials are wrong
    with Client(base_url=server.url, username=who[0], password=who[1]) as c:
        agent = RemoteAgent(c, agent_name)
        with pytest.raises(AuthenticationError, match="refused the credentials"):
            agent.exists  # noqa: B018
        with pytest.raises(AuthenticationError):
            wait_until_agent_exists(agent, max_seconds=1)


def test_base_url_with_a_wrong_path_is_not_an_agent_error(server, user, agent_name):
    # The server is there, but /wrong/api/v1/login/access-token is not: a 404 on login says the
    # address is wrong, not that some agent is missing.
    with Client(base_url=server.url + "/wrong", username=user[0], password=user[1]) as c:
        agent = RemoteAgent(c, agent_name)
        with pytest.raises(ConfigurationError, match="does not look like an Agents Bar service") as info:
            agent.info()
        assert not isinstance(info.value, AgentNotFoundError)
        assert server.url + "/wrong" in str(info.value) and "login" in str(info.value)
        with pytest.raises(ConfigurationError, match="does not look like an Agents Bar service"):
            agent.exists  # noqa: B018


@pytest.mark.timeout(60)
def test_flusher_reports_a_server_that_is_not_agents_bar(foreign_http_server, user, agent_name, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agents_bar_stream")
    with Client(base_url=foreign_http_server, username=user[0], password=user[1]) as c:
        agent = RemoteAgent(
            c,
            agent_name,
            agent_model="dqn",
            stream=StreamOptions(queue_dir=tmp_path / "q", retry_policy=RetryPolicy(initial=0.05, max_delay=0.5)),
        )
        try:
            assert agent.step(OBS, 0, 1.0, OBS, False) is True
            deadline = time.monotonic() + 20

            def reported() -> bool:
                # The flusher sets the stats, then logs: wait for both, or a test thread that ran
                # between the two (a loaded machine) would find no ERROR record yet.
                errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
                return ("Agents Bar" in (agent.stats["last_error"] or "")
                        and any("does not look like an Agents Bar service" in r.getMessage() for r in errors))

            while not reported():
                assert time.monotonic() < deadline, (agent.stats, caplog.text)
                time.sleep(0.05)
            stats = agent.stats
            assert stats["online"] is False, stats
            assert "does not look like an Agents Bar service" in stats["last_error"]
            assert foreign_http_server in stats["last_error"]
            # The data is kept, never dropped, and still waits for a real service.
            assert agent.pending == 1 and stats["dead_lettered"] == 0 and stats["dropped"] == 0
            assert stats["online"] is False
        finally:
            agent.close(timeout=0.5)
        assert agent.pending == 1


def test_token_client_on_another_web_server_says_so(foreign_http_server):
    # No login to catch it: the agent's own answers (an HTML 404, a 200 web page) must not read as
    # "no such agent" or "exists".
    with Client(base_url=foreign_http_server, access_token="t") as c:
        agent = RemoteAgent(c, "n")
        with pytest.raises(WrongServiceError, match="does not look like an Agents Bar service"):
            agent.exists  # noqa: B018
        with pytest.raises(WrongServiceError):
            wait_until_agent_exists(agent, max_seconds=1)
