"""``agents list|create|delete`` against the shared server, and how failures read."""

from __future__ import annotations

import json
import socket

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(60)
def test_create_list_and_delete(cli, creds, server, api, agent_name, one_line_error):
    url = ["--url", server.url]
    created = cli("agents", "create", agent_name, "--model", "dqn", "--obs-size", "4", "--action-size", "2",
                  "--param", "lr=0.001", "--param", "batch_size=32", "--param", "hidden_layers=[32,32]",
                  *url, env=creds)
    assert created.code == 0, created.err
    assert f"created agent {agent_name}" in created.out
    info = api.agent(agent_name)
    assert info["model"] == "dqn"
    assert info["config"]["obs_size"] == 4 and info["config"]["batch_size"] == 32
    assert info["config"]["hidden_layers"] == [32, 32]

    api.send_steps(agent_name, "p1", 0, [
        {"obs": [0.0] * 4, "action": [1], "reward": 1.0, "next_obs": [0.0] * 4, "done": False}] * 3)
    listed = cli("agents", "list", *url, env=creds)
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[0].split() == ["NAME", "MODEL", "STEPS_RECEIVED", "STEPS_LEARNED"]
    (row,) = [line.split() for line in lines[1:] if line.split()[0] == agent_name]
    assert row[1:3] == ["dqn", "3"]
    as_json = json.loads(cli("agents", "list", "--json", *url, env=creds).out)
    assert any(a["name"] == agent_name and a["steps_received"] == 3 for a in as_json)

    one_line_error(cli("agents", "create", agent_name, "--model", "dqn", "--obs-size", "4", "--action-size", "2",
                       *url, env=creds), 1, "already exists")
    one_line_error(cli("agents", "delete", agent_name, *url, env=creds), 2, "--yes")
    assert api.get(f"/agents/{agent_name}").status_code == 200

    deleted = cli("agents", "delete", agent_name, "--yes", *url, env=creds)
    assert deleted.code == 0, deleted.err
    assert api.get(f"/agents/{agent_name}").status_code == 404
    one_line_error(cli("agents", "delete", agent_name, "--yes", *url, env=creds), 1, "no agent named")


@pytest.mark.timeout(60)
def test_the_server_refuses_a_bad_config_in_one_line(cli, creds, server, agent_name, one_line_error):
    one_line_error(cli("agents", "create", agent_name, "--model", "dqn", "--obs-size", "4", "--action-size", "2",
                       "--param", "no_such_knob=1", "--url", server.url, env=creds), 1, "refused", "no_such_knob")
    one_line_error(cli("agents", "create", agent_name, "--model", "nope", "--obs-size", "4", "--action-size", "2",
                       "--url", server.url, env=creds), 1, "unknown model")


@pytest.mark.timeout(60)
def test_credentials_problems_are_one_line(cli, server, user, one_line_error):
    one_line_error(cli("agents", "list", "--url", server.url), 1, "no credentials")
    one_line_error(cli("agents", "list", "--url", server.url, "--username", user[0], "--password", "wrong"),
                   1, "authentication failed")
    one_line_error(cli("agents", "list", "--url", server.url, "--token", "not-a-token"), 1, "authentication failed")
    env_url = cli("agents", "list", env={"AGENTS_BAR_URL": server.url, "AGENTS_BAR_USERNAME": user[0],
                                         "AGENTS_BAR_PASSWORD": user[1]})
    assert env_url.code == 0, env_url.err


@pytest.mark.timeout(60)
def test_a_server_that_is_down_is_one_clear_line(cli, creds, one_line_error):
    url = f"http://127.0.0.1:{_free_port()}"
    for args in (["agents", "list"], ["agents", "create", "x", "--model", "dqn", "--obs-size", "4",
                                      "--action-size", "2"], ["agents", "delete", "x", "--yes"]):
        one_line_error(cli(*args, "--url", url, env=creds), 1, "cannot reach the server", url)


@pytest.mark.timeout(60)
def test_debug_shows_the_traceback(cli, creds):
    run = cli("--debug", "agents", "list", "--url", f"http://127.0.0.1:{_free_port()}", env=creds)
    assert run.code == 1
    assert "Traceback" in run.err and "ConnectionFailedError" in run.err
    assert run.err.rstrip().splitlines()[-1].startswith("agents-bar-stream: error: cannot reach the server")
