"""What a program written for the published agents-bar 0.4.2 calls, beyond RemoteAgent's methods:
the description, wait_until_agent_is_active, the agents module, and hyperparameter keywords that
share a name with a streaming option."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

import agents_bar_stream
from agents_bar_stream import (
    AgentExistsError,
    AgentNotFoundError,
    ConfigurationError,
    RemoteAgent,
    StreamOptions,
    agents,
    wait_until_agent_is_active,
)

pytestmark = pytest.mark.timeout(60)

OBS = [0.1, -0.2, 0.3, 0.0]
STEP = {"obs": OBS, "action": [1], "reward": 0.5, "next_obs": OBS, "done": False}


def test_description_is_the_agents_description(client, agent_name, tmp_path):
    agent = RemoteAgent(client, agent_name, description="balances a pole", stream=StreamOptions(queue_dir=tmp_path))
    try:
        agent.create_agent(4, 2, "dqn")
        info = agent.info()
        assert info["description"] == "balances a pole"
        assert "description" not in info["config"] and "description" not in agent.hparams
    finally:
        agent.remove(agent_name=agent_name)


def test_wait_until_agent_is_active(make_agent, client, agent_name, tmp_path):
    assert "wait_until_agent_is_active" in agents_bar_stream.__all__
    agent = make_agent(agent_name)
    assert wait_until_agent_is_active(agent, max_seconds=5) is True
    inactive = RemoteAgent(client, agent_name + "-off", stream=StreamOptions(queue_dir=tmp_path / "off"))
    try:
        inactive.create_agent(4, 2, "dqn", active=False)
        assert wait_until_agent_is_active(inactive, max_seconds=0.5) is False
    finally:
        inactive.remove(agent_name=inactive.agent_name)
    assert wait_until_agent_is_active(inactive, max_seconds=0.5) is False  # gone


def test_agents_module_offers_the_published_functions(client, agent_name):
    for name in ("get_many", "get", "create", "delete", "get_loss", "step", "act"):
        assert callable(getattr(agents, name)), name
    payload = {"name": agent_name, "model": "dqn", "description": "via agents.create",
               "config": {"obs_size": 4, "action_size": 2}, "is_active": True}
    created = agents.create(client, payload)
    try:
        assert created["name"] == agent_name and created["description"] == "via agents.create"
        with pytest.raises(AgentExistsError):
            agents.create(client, payload)
        assert agent_name in [a["name"] for a in agents.get_many(client)]
        assert agents.get(client, agent_name)["config"]["obs_size"] == 4
        assert agents.step(client, agent_name, {"step_data": STEP}) is None
        assert agents.act(client, agent_name, OBS, params={"noise": 0.0})["action"][0] in (0, 1)
        assert isinstance(agents.get_loss(client, agent_name), dict)
    finally:
        assert agents.delete(client, agent_name) is True
    with pytest.raises(AgentNotFoundError):
        agents.get(client, agent_name)


def test_batch_size_keyword_is_the_learners_hyperparameter(client, agent_name, tmp_path):
    # agents-bar 0.4.2 sends every keyword it does not know as the agent's config: batch_size=64
    # is the learner's batch, not how many steps travel per request.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        agent = RemoteAgent(client, agent_name, batch_size=64, stream=StreamOptions(queue_dir=tmp_path))
    try:
        agent.create_agent(4, 2, "dqn")
        assert agent.info()["config"]["batch_size"] == 64
        assert agent.hparams["batch_size"] == 64
    finally:
        agent.remove(agent_name=agent_name)


def test_old_streaming_keywords_work_with_a_deprecation_warning(client, agent_name, tmp_path):
    with pytest.warns(DeprecationWarning, match=r"stream=StreamOptions\(durability=\.\.\., queue_dir=\.\.\.\)"):
        agent = RemoteAgent(client, agent_name, queue_dir=tmp_path / "q", durability="step")
    try:
        assert agent.stats["durability"] == "step"
        agent.open_queue()
        assert agent.stats["queue_dir"] == str(tmp_path / "q")
    finally:
        agent.close(timeout=1)
    with pytest.raises(ConfigurationError, match="durability"), pytest.warns(DeprecationWarning):
        RemoteAgent(client, agent_name, queue_dir=tmp_path / "q", durability="sometimes")


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"durability": "never"}, {"on_full": "explode"},
                                 {"flush_interval": -1}, {"max_pending_bytes": 1.5}, {"retry_policy": 3},
                                 {"queue_dir": 5}])
def test_stream_options_are_checked_when_built(bad):
    with pytest.raises(ConfigurationError, match=next(iter(bad))):
        StreamOptions(**bad)


def test_stream_options_are_a_frozen_value(client, agent_name):
    options = StreamOptions(batch_size=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch_size = 5  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="StreamOptions"):
        RemoteAgent(client, agent_name, stream={"batch_size": 100})  # type: ignore[arg-type]
