"""RemoteAgent against the real server: the published client's API, call for call."""

from __future__ import annotations

import dataclasses
import math
import random
import time

import numpy as np
import pytest

from agents_bar_stream import (
    AgentExistsError,
    AgentNotFoundError,
    APIError,
    Client,
    ConfigurationError,
    EncodedAgentState,
    InvalidRequestError,
    InvalidStepError,
    RemoteAgent,
    ServiceUnavailableError,
    StreamOptions,
    wait_until_agent_exists,
)

pytestmark = pytest.mark.timeout(60)

OBS = [0.1, -0.2, 0.3, 0.0]


# -- create and act, per model -------------------------------------------------------------------


@pytest.mark.parametrize("model", ["dqn", "ppo", "ddpg", "rainbow"])
def test_create_and_act_each_model(make_agent, agent_name, model):
    agent = make_agent(agent_name, model, obs_size=4, action_size=3)
    assert wait_until_agent_exists(agent, max_seconds=10) is True
    info = agent.info()
    assert info["name"] == agent_name and info["model"] == model
    assert info["config"]["obs_size"] == 4 and info["config"]["action_size"] == 3
    for _ in range(3):
        action = agent.act(OBS)
        if model in ("dqn", "rainbow"):
            assert type(action) is int and 0 <= action < 3
        else:
            assert isinstance(action, list) and len(action) == 3
            assert all(isinstance(a, float) and math.isfinite(a) for a in action)
    assert agent.discrete is (model in ("dqn", "rainbow"))


def test_create_agent_returns_the_details(client, agent_name, tmp_path):
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path))
    try:
        details = agent.create_agent(obs_size=5, action_size=2, agent_model="DQN", description="my robot")
        assert isinstance(details, dict)
        assert details["name"] == agent_name
        assert details["model"] == "dqn"  # case-insensitive on input
        assert details["description"] == "my robot"
        assert details["is_active"] is True
        assert details["config"]["obs_size"] == 5 and details["config"]["action_size"] == 2
        assert agent.obs_size == 5 and agent.action_size == 2 and agent.agent_model == "dqn"
    finally:
        agent.remove(agent_name=agent_name)


def test_create_inactive(client, agent_name, tmp_path):
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path))
    try:
        assert agent.create_agent(4, 2, "dqn", active=False)["is_active"] is False
        assert agent.is_active is False
    finally:
        agent.remove(agent_name=agent_name)


# -- observations in every shape a user has at hand ----------------------------------------------


@pytest.fixture(scope="module")
def shared_agents(server, user, tmp_path_factory):
    """One discrete and one continuous agent for the read-only tests of this module."""
    c = Client(base_url=server.url, username=user[0], password=user[1])
    out = {}
    for model in ("dqn", "ddpg"):
        a = RemoteAgent(
            c,
            f"shared-{model}-{random.getrandbits(32):08x}",
            stream=StreamOptions(queue_dir=tmp_path_factory.mktemp("q")),
        )
        a.create_agent(4, 3, model)
        out[model] = a
    yield out
    for a in out.values():
        a.remove(agent_name=a.agent_name)
        a.close(timeout=5)
    c.close()


OBS_FORMS = {
    "list": [0.1, -0.2, 0.3, 0.0],
    "list-of-ints": [1, 0, -1, 2],
    "tuple": (0.1, -0.2, 0.3, 0.0),
    "np-float32": np.array([0.1, -0.2, 0.3, 0.0], dtype=np.float32),
    "np-float64": np.array([0.1, -0.2, 0.3, 0.0], dtype=np.float64),
    "np-int64": np.array([1, 0, -1, 2], dtype=np.int64),
    "list-of-np-float32": [np.float32(0.1), np.float32(-0.2), np.float32(0.3), np.float32(0.0)],
    "list-of-np-float64": [np.float64(0.1), np.float64(-0.2), np.float64(0.3), np.float64(0.0)],
    "list-of-np-int64": [np.int64(1), np.int64(0), np.int64(-1), np.int64(2)],
}


@pytest.mark.parametrize("form", list(OBS_FORMS))
def test_act_accepts_observation_forms(shared_agents, form):
    obs = OBS_FORMS[form]
    action = shared_agents["dqn"].act(obs)
    assert type(action) is int and 0 <= action < 3
    cont = shared_agents["ddpg"].act(obs)
    assert isinstance(cont, list) and len(cont) == 3 and all(isinstance(a, float) for a in cont)


def test_act_is_deterministic_without_noise(shared_agents):
    agent = shared_agents["ddpg"]
    assert agent.act(OBS, noise=0) == agent.act(np.asarray(OBS, dtype=np.float64), noise=0.0)


@pytest.mark.parametrize("noise", [0, 0.0, 0.5, 1, 1.0, np.float64(0.3)])
def test_act_noise_accepted(shared_agents, noise):
    assert shared_agents["dqn"].act(OBS, noise=noise) in (0, 1, 2)
    assert len(shared_agents["ddpg"].act(OBS, noise)) == 3


@pytest.mark.parametrize("noise", [-0.1, 1.5, float("nan"), float("inf"), "0.1", None, True, [0.1]])
def test_act_noise_rejected_before_any_request(closed_port_url, noise):
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n", agent_model="dqn", act_timeout=5)
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        agent.act(OBS, noise=noise)
    assert isinstance(info.value, ValueError)
    assert time.monotonic() - started < 1.0  # no retrying against the dead port: it never tried


@pytest.mark.parametrize("noise", [np.float32(0.1), np.int64(0)], ids=["np-float32", "np-int64"])
def test_act_noise_numpy_scalars(shared_agents, noise):
    assert shared_agents["dqn"].act(OBS, noise=noise) in (0, 1, 2)


@pytest.mark.parametrize("obs", [[], "abcd", {"a": 1}, None, 3.0, object()],
                         ids=["empty", "str", "dict", "none", "bare-float", "object"])
def test_act_bad_observation_rejected_locally(closed_port_url, obs):
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n", agent_model="dqn", act_timeout=0.5)
    with pytest.raises(ConfigurationError):
        agent.act(obs)


@pytest.mark.parametrize("obs", [[0.1, None, 0.3, 0.0], [0.1, "x", 0.3, 0.0], [True, 0.0, 0.3, 0.0],
                                 [0.1, float("nan"), 0.3, 0.0]],
                         ids=["none-inside", "str-inside", "bool-inside", "nan-inside"])
def test_act_non_numbers_inside_observation_rejected_locally(closed_port_url, obs):
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n", agent_model="dqn", act_timeout=0.5)
    with pytest.raises(ConfigurationError):
        agent.act(obs)


@pytest.mark.parametrize("obs", [[[0.1, 0.2], [0.3, 0.4]], [0.1, float("nan"), 0, 0]], ids=["nested", "nan"])
def test_act_malformed_observation_fails_before_the_network(shared_agents, obs):
    agent = shared_agents["dqn"]
    agent.fallback = lambda o: 0  # a fallback is for outages only: a bad input still raises
    try:
        with pytest.raises(ConfigurationError) as info:
            agent.act(obs)
    finally:
        agent.fallback = None
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("obs", [[0.1, 0.2, 0.3], [0.1] * 5], ids=["short", "long"])
def test_act_observation_the_server_rejects(shared_agents, obs):
    agent = shared_agents["dqn"]
    agent.fallback = lambda o: 0  # a fallback is for outages only: a bad input still raises
    try:
        started = time.monotonic()
        with pytest.raises(InvalidRequestError) as info:
            agent.act(obs)
        assert time.monotonic() - started < 3.0  # a 4xx is not retried
    finally:
        agent.fallback = None
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, APIError)
    assert err.status in (400, 422)
    assert isinstance(err.detail, str) and err.detail
    assert err.detail in str(err)
    assert agent.stats["act_fallbacks"] == 0


def test_act_wrong_length_detail_names_the_size(shared_agents):
    with pytest.raises(InvalidRequestError) as info:
        shared_agents["dqn"].act([0.1, 0.2, 0.3])
    assert info.value.status == 422
    assert "4" in info.value.detail  # the server says how many numbers it wants


# -- errors of create ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sac", "", "dqn2", None, 1])
def test_unknown_model_rejected_before_any_request(closed_port_url, model):
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n")
    with pytest.raises(ConfigurationError) as info:
        agent.create_agent(4, 2, model)
    assert isinstance(info.value, ValueError)  # as the published client's ValueError


@pytest.mark.parametrize("sizes", [(0, 2), (4, 0), (4.0, 2), ("4", 2), (True, 2)])
def test_bad_sizes_rejected_before_any_request(closed_port_url, sizes):
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n")
    with pytest.raises(ConfigurationError):
        agent.create_agent(sizes[0], sizes[1], "dqn")


def test_duplicate_name(make_agent, client, agent_name, tmp_path):
    make_agent(agent_name, "dqn")
    again = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path / "again"))
    with pytest.raises(AgentExistsError) as info:
        again.create_agent(4, 3, "ppo")
    assert info.value.status == 409
    # The first agent is untouched.
    assert again.info()["model"] == "dqn"


# -- unknown agents and existence ----------------------------------------------------------------


def test_unknown_agent(client, agent_name):
    agent = RemoteAgent(client, agent_name, agent_model="dqn", fallback=lambda obs: 0)
    assert agent.exists is False
    assert wait_until_agent_exists(agent, max_seconds=0.3) is False
    for call in (agent.info, agent.get_state, agent.get_loss, agent.sync, lambda: agent.act(OBS)):
        with pytest.raises(AgentNotFoundError) as info:
            call()
        assert info.value.status == 404
    assert agent.stats["act_fallbacks"] == 0  # "no such agent" is not an outage
    assert agent.remove(agent_name=agent_name) is False


def test_exists(make_agent, agent_name):
    agent = make_agent(agent_name)
    assert agent.exists is True
    assert wait_until_agent_exists(agent, max_seconds=5) is True


# -- info, sync, hparams -------------------------------------------------------------------------


def test_info(make_agent, agent_name):
    agent = make_agent(agent_name, "ppo", obs_size=6, action_size=2)
    info = agent.info()
    for key in ("name", "model", "description", "config", "is_active"):
        assert key in info
    assert info["model"] == "ppo"
    assert info["config"]["obs_size"] == 6 and info["config"]["action_size"] == 2


@pytest.mark.parametrize("model", ["rainbow", "ddpg"])
def test_sync_fills_what_a_fresh_agent_does_not_know(make_agent, client, agent_name, model):
    make_agent(agent_name, model, obs_size=7, action_size=2)
    fresh = RemoteAgent(client, agent_name)
    fresh.sync()
    assert fresh.obs_size == 7
    assert fresh.action_size == 2
    assert fresh.agent_model == model
    assert fresh.discrete is (model == "rainbow")
    # A fresh agent's properties sync on first read, and act() learns the model on its own.
    lazy = RemoteAgent(client, agent_name)
    assert lazy.obs_size == 7
    other = RemoteAgent(client, agent_name)
    action = other.act([0.0] * 7)
    if model == "rainbow":
        assert type(action) is int and 0 <= action < 2
    else:
        assert isinstance(action, list) and len(action) == 2


def test_hparams_are_numbers_or_strings(client, agent_name, tmp_path):
    agent = RemoteAgent(
        client,
        agent_name,
        stream=StreamOptions(queue_dir=tmp_path),
        gamma=0.9,
        lr=0.001,
        using_double_q=True,
        n_steps=2,
    )
    try:
        agent.create_agent(4, 2, "dqn")
        hp = agent.hparams
        assert hp["gamma"] == 0.9 and hp["lr"] == 0.001 and hp["n_steps"] == 2
        assert hp["obs_size"] == 4 and hp["action_size"] == 2
        for key, value in hp.items():
            assert type(value) in (int, float, str), (key, value)
        config = agent.info()["config"]
        assert config["gamma"] == 0.9 and config["using_double_q"] is True and config["n_steps"] == 2
        # After info() the values come from the server and keep the promise.
        assert all(type(v) in (int, float, str) for v in agent.hparams.values()), agent.hparams
    finally:
        agent.remove(agent_name=agent_name)


def test_batch_size_hyperparameter_reaches_the_server_through_config(client, agent_name, tmp_path):
    # config= is merged over the keywords: the explicit mapping wins.
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path), batch_size=500,
                        config={"batch_size": 32})
    try:
        agent.create_agent(4, 2, "dqn")
        assert agent.info()["config"].get("batch_size") == 32
    finally:
        agent.remove(agent_name=agent_name)


def test_list_hyperparameter_reaches_the_server(client, agent_name, tmp_path):
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path), hidden_layers=[32, 32])
    try:
        agent.create_agent(4, 2, "dqn")
        assert agent.info()["config"]["hidden_layers"] == [32, 32]
        assert isinstance(agent.hparams["hidden_layers"], str)
    finally:
        agent.remove(agent_name=agent_name)


# -- snapshots -----------------------------------------------------------------------------------


def test_get_state(make_agent, agent_name):
    agent = make_agent(agent_name, "dqn", obs_size=4, action_size=3)
    state = agent.get_state()
    assert isinstance(state, EncodedAgentState)
    names = [f.name for f in dataclasses.fields(state)]
    assert names == ["model", "obs_size", "action_size", "encoded_config", "encoded_network", "encoded_buffer"]
    assert state.model == "dqn" and state.obs_size == 4 and state.action_size == 3
    for field in ("encoded_config", "encoded_network", "encoded_buffer"):
        assert isinstance(getattr(state, field), str)
    assert state.encoded_network  # a network is never empty


def test_upload_state_round_trip(make_agent, agent_name):
    agent = make_agent(agent_name, "ddpg", obs_size=4, action_size=2)
    before = agent.act(OBS)
    state = agent.get_state()
    assert agent.upload_state(state) is True
    after = agent.act(OBS)
    assert isinstance(after, list) and len(after) == 2
    assert after == pytest.approx(before)  # the same weights act the same
    assert agent.get_state().model == "ddpg"


def test_upload_state_of_another_shape_refused(make_agent, agent_name):
    small = make_agent(agent_name, "dqn", obs_size=4, action_size=3)
    big = make_agent(agent_name + "-big", "dqn", obs_size=8, action_size=3)
    with pytest.raises(InvalidRequestError):
        small.upload_state(big.get_state())
    assert small.act(OBS) in (0, 1, 2)


def test_upload_state_needs_a_state(closed_port_url):
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n")
    with pytest.raises(ConfigurationError):
        agent.upload_state({"model": "dqn"})


# -- remove --------------------------------------------------------------------------------------


def test_remove_wrong_name_quietly(make_agent, agent_name):
    agent = make_agent(agent_name)
    assert agent.remove(agent_name=agent_name + "-not") is False
    assert agent.remove(agent_name=None) is False
    assert agent.exists is True


def test_remove_wrong_name_loudly(make_agent, agent_name):
    agent = make_agent(agent_name)
    with pytest.raises(ValueError):
        agent.remove(agent_name="something-else", quite=False)
    assert agent.exists is True


def test_remove(make_agent, agent_name):
    agent = make_agent(agent_name)
    assert agent.remove(agent_name=agent_name) is True
    assert agent.exists is False
    with pytest.raises(AgentNotFoundError):
        agent.act(OBS)
    assert agent.remove(agent_name=agent_name) is False  # already gone


def test_remove_needs_keyword(make_agent, agent_name):
    agent = make_agent(agent_name)
    with pytest.raises(TypeError):
        agent.remove(agent_name)  # type: ignore[misc]
    assert agent.exists is True


# -- steps and loss ------------------------------------------------------------------------------


def test_get_loss_after_steps(make_agent, agent_name):
    agent = make_agent(agent_name, "dqn", obs_size=4, action_size=2)
    rng = random.Random(7)
    obs = [rng.uniform(-0.1, 0.1) for _ in range(4)]
    for t in range(160):
        action = agent.act(obs, noise=0.5) if t % 40 == 0 else rng.randrange(2)
        next_obs = [o + rng.uniform(-0.05, 0.05) for o in obs]
        done = t % 20 == 19
        assert agent.step(obs, action, 1.0, next_obs, done) is True
        obs = [rng.uniform(-0.1, 0.1) for _ in range(4)] if done else next_obs
    assert agent.flush(timeout=30) is True
    assert agent.pending == 0
    deadline = time.monotonic() + 40
    loss: dict = {}
    while not loss and time.monotonic() < deadline:
        loss = agent.get_loss()
        if not loss:
            time.sleep(0.2)
    assert loss, "no loss reported after 160 steps"
    assert all(isinstance(k, str) and isinstance(v, float) and math.isfinite(v) for k, v in loss.items()), loss
    assert agent.loss == loss
    assert agent.info()["steps_received"] == 160


# -- owners --------------------------------------------------------------------------------------


def test_other_user_cannot_touch_the_agent(make_agent, other_client, agent_name):
    mine = make_agent(agent_name, "dqn")
    theirs = RemoteAgent(other_client, agent_name, agent_model="dqn", fallback=lambda obs: 0)
    assert theirs.exists is False
    with pytest.raises(AgentNotFoundError):
        theirs.act(OBS)
    with pytest.raises(AgentNotFoundError):
        theirs.info()
    with pytest.raises(AgentNotFoundError):
        theirs.get_state()
    with pytest.raises(AgentNotFoundError):
        theirs.upload_state(mine.get_state())
    assert theirs.remove(agent_name=agent_name) is False
    assert theirs.stats["act_fallbacks"] == 0
    assert mine.exists is True
    assert mine.act(OBS) in (0, 1, 2)


def test_service_unavailable_is_not_an_api_error():
    # Callers tell "fix your call" from "try again later" by type; the families must not overlap.
    assert not issubclass(ServiceUnavailableError, APIError)
    assert not issubclass(AgentNotFoundError, ServiceUnavailableError)


def test_two_dimensional_observation_says_to_flatten(closed_port_url, tmp_path):
    obs = [[0.1, 0.2], [0.3, 0.4]]  # a nested list; a numpy array of any shape is taken (issue 12, below)
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n", agent_model="dqn", act_timeout=0.5,
                        stream=StreamOptions(queue_dir=tmp_path))
    with pytest.raises(ConfigurationError, match=r"flat sequence of numbers.*shape \(2, 2\).*ravel\(\)"):
        agent.act(obs)
    with pytest.raises(InvalidStepError, match=r"flat sequence of numbers.*shape \(2, 2\).*ravel\(\)"):
        agent.step(obs, 0, 1.0, [0.1, 0.2, 0.3, 0.4], False)
    agent.close(timeout=0)


def test_numpy_observation_of_any_shape_is_its_elements_in_c_order(closed_port_url, tmp_path):
    # Issue 12: an agent of obs_size 4 takes a (2, 2) array in act() and step(), flattened in C order.
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n", agent_model="dqn", act_timeout=0.3,
                        obs_size=4, action_size=2, stream=StreamOptions(queue_dir=tmp_path))
    obs = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    with pytest.raises(ServiceUnavailableError):  # the observation passed; nothing listens at the port
        agent.act(obs)
    assert agent.step(obs, 0, 1.0, obs, False) is True
    with pytest.raises(InvalidStepError, match=r"shape \(4,\), expected \(2, 2\)"):
        agent.step(obs.reshape(4), 0, 1.0, obs.reshape(4), False)
    agent.close(timeout=0)


def test_a_wrong_first_step_does_not_lock_out_the_right_size(client, api, agent_name, tmp_path):
    # An existing agent (obs_size 4) and a RemoteAgent that does not know its sizes: a first step
    # of the wrong length must not become the shape every later step is held to.
    api.create_agent(agent_name, obs_size=4, action_size=2)
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path))
    try:
        assert agent.step([0.1, 0.2, 0.3], 0, 1.0, [0.2, 0.3, 0.4], False) is True
        for i in range(5):
            assert agent.step([float(i), 0.0, 0.0, 0.0], i % 2, 1.0, [float(i + 1), 0.0, 0.0, 0.0], False) is True
        assert agent.flush(timeout=30), agent.stats
        assert agent.stats["dead_lettered"] == 1 and agent.stats["delivered"] == 5
        assert [e["step"]["obs"][0] for e in api.log(agent_name)] == [0.0, 1.0, 2.0, 3.0, 4.0]
        # The agent's size is known now: a wrong step is refused at step(), before anything is queued.
        with pytest.raises(InvalidStepError, match="must have 4 numbers"):
            agent.step([0.1, 0.2, 0.3], 0, 1.0, [0.2, 0.3, 0.4], False)
        assert agent.pending == 0
    finally:
        agent.close(timeout=5)


def test_the_flusher_corrects_a_shape_learnt_from_a_wrong_first_step(client, api, agent_name, tmp_path):
    # The same, when nothing asks the server from step(): the flusher reads the agent's sizes
    # before its first delivery and step() holds later steps to them.
    api.create_agent(agent_name, obs_size=4, action_size=2)
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path))
    try:
        assert agent.step([0.1, 0.2, 0.3], 0, 1.0, [0.2, 0.3, 0.4], False) is True
        assert agent.flush(timeout=30), agent.stats
        assert agent.stats["dead_lettered"] == 1
        with pytest.raises(InvalidStepError, match="must have 4 numbers"):
            agent.step([0.1, 0.2, 0.3], 0, 1.0, [0.2, 0.3, 0.4], False)
        assert agent.step([0.1, 0.2, 0.3, 0.4], 1, 1.0, [0.2, 0.3, 0.4, 0.5], False) is True
        assert agent.flush(timeout=30), agent.stats
        assert agent.stats["delivered"] == 1 and len(api.log(agent_name)) == 1
    finally:
        agent.close(timeout=5)


def test_a_shape_change_is_refused_when_the_server_cannot_say_which_is_right(closed_port_url, tmp_path):
    # Sizes unknown and the service unreachable: the step that disagrees with the earlier ones is
    # refused (nothing queued), with a message that says the size was only learnt from steps.
    agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), "n", act_timeout=0.5,
                        stream=StreamOptions(queue_dir=tmp_path))
    try:
        assert agent.step([0.1, 0.2, 0.3], 0, 1.0, [0.2, 0.3, 0.4], False) is True
        started = time.monotonic()
        with pytest.raises(InvalidStepError, match="must have 3 numbers.*not known yet"):
            agent.step([0.1, 0.2, 0.3, 0.4], 0, 1.0, [0.2, 0.3, 0.4, 0.5], False)
        assert time.monotonic() - started < 0.5 + 1.5  # bounded by act_timeout
        assert agent.pending == 1
    finally:
        agent.close(timeout=0)
