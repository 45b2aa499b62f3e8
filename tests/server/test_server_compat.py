"""The published ``agents-bar==0.4.2`` client, unchanged, against our server.

It needs its own interpreter (the published client pins old dependencies): set
``AGENTS_BAR_COMPAT_PYTHON`` to a python that has ``agents_bar`` installed (tox does).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "compat" / "published_client_check.py"
ENV_PYTHON = "AGENTS_BAR_COMPAT_PYTHON"


@pytest.mark.timeout(180)
def test_published_client_works_unchanged(server, user):
    python = os.environ.get(ENV_PYTHON)
    if not python:
        pytest.skip(f"{ENV_PYTHON} is not set (point it to a python with agents-bar==0.4.2 installed)")
    if not Path(python).exists():
        pytest.fail(f"{ENV_PYTHON}={python} does not exist")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_BAR_")}
    env.update(AGENTS_BAR_USER=user[0], AGENTS_BAR_PASS=user[1], PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [python, str(SCRIPT), "--url", server.url, "--models", "dqn,ppo,ddpg,rainbow"],
        check=False,
        env=env,
        cwd=str(SCRIPT.parent),  # never the repo root: the published client must not see this project
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "all checks passed" in proc.stdout


_DESCRIPTION_SCRIPT = """
import sys, uuid
from agents_bar import Client, RemoteAgent, agents
client = Client(base_url=sys.argv[1])
name = "compat-desc-" + uuid.uuid4().hex[:8]
# As documented for the published client: description is a RemoteAgent keyword, which it sends in
# config (with every other keyword, credentials included).
agent = RemoteAgent(client, name, description="a cart and a pole", username=sys.argv[2], password=sys.argv[3])
created = agent.create_agent(obs_size=4, action_size=2, agent_model="dqn")
info = agents.get(client, name)
print("DESCRIPTION", created["description"], "|", info["description"])
print("CONFIG", sorted(info["config"]))
agent.remove(agent_name=name)
"""


@pytest.mark.timeout(120)
def test_published_client_description_keyword(server, user):
    """Issue 14: RemoteAgent(client, name, description="...") got a 422 ("config.description is not
    a hyperparameter"). The server takes the description from config and stores no credentials."""
    python = os.environ.get(ENV_PYTHON)
    if not python:
        pytest.skip(f"{ENV_PYTHON} is not set (point it to a python with agents-bar==0.4.2 installed)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_BAR_")}
    env.update(AGENTS_BAR_USER=user[0], AGENTS_BAR_PASS=user[1], PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([python, "-c", _DESCRIPTION_SCRIPT, server.url, *user], check=False, env=env,
                          cwd=str(SCRIPT.parent), capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "DESCRIPTION a cart and a pole | a cart and a pole" in proc.stdout, proc.stdout
    assert "CONFIG ['action_size', 'obs_size']" in proc.stdout, proc.stdout
    assert user[1] not in proc.stdout


def test_description_in_config_over_plain_http(api, agent_name):
    body = {"name": agent_name, "model": "dqn", "description": None,
            "config": {"obs_size": 4, "action_size": 2, "description": "from config", "agent_model": "dqn",
                       "password": "do-not-keep", "batch_size": 32}}
    resp = api.post("/agents/", json=body)
    assert resp.status_code == 201, resp.text
    api.created.append(agent_name)
    for doc in (resp.json(), api.agent(agent_name)):
        assert doc["description"] == "from config"
        assert doc["config"] == {"obs_size": 4, "action_size": 2, "batch_size": 32}
    # A top-level description wins over the one in config.
    other = agent_name + "-2"
    resp = api.post("/agents/", json={**body, "name": other, "description": "top"})
    assert resp.status_code == 201 and resp.json()["description"] == "top"
    api.created.append(other)
