"""RemoteAgent(policy="local" | "auto") against the real server's policy route (issue 11).

The other policy-mode tests (test_client_policy_modes.py) serve models through a stand-in, for the
bytes no real server sends (corrupt, wrong size) and for answers made late on purpose. These run
the whole path for real: steps streamed by the client, learnt by the server, the policy exported
by the server, fetched by the client's refresh thread and run with ONNX Runtime; and a server
process stopped in the middle of an act() loop and started again.
"""

from __future__ import annotations

import random
import time

import numpy as np
import onnxruntime as ort
import pytest
from support.api import wait_for

from agents_bar_stream import Client, RemoteAgent, StreamOptions

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

OBS_SIZE = 4
# Small networks that learn from the first steps (warm_up 0; PPO every 16 steps).
MODELS = {
    "dqn": (3, {"hidden_layers": [16, 16], "batch_size": 8, "warm_up": 0}),
    "rainbow": (3, {"hidden_layers": [16, 16], "batch_size": 8, "warm_up": 0}),
    "ddpg": (2, {"hidden_layers": [16, 16], "batch_size": 8, "warm_up": 0}),
    "ppo": (2, {"hidden_layers": [16], "rollout_length": 16, "batch_size": 8}),
}
LEARN_TIMEOUT = 120


def _stream(agent: RemoteAgent, model: str, count: int, seed: int) -> None:
    """``count`` random transitions through the real streaming step(), then flushed."""
    size, _ = MODELS[model]
    rng = random.Random(seed)
    obs = [rng.uniform(-1, 1) for _ in range(OBS_SIZE)]
    for i in range(count):
        next_obs = [rng.uniform(-1, 1) for _ in range(OBS_SIZE)]
        action = rng.randrange(size) if model in ("dqn", "rainbow") else [rng.uniform(-1, 1) for _ in range(size)]
        agent.step(obs, action, rng.uniform(-1, 1), next_obs, i % 20 == 19)
        obs = next_obs
    assert agent.flush(timeout=60), agent.stats


def _learned(client: Client, name: str, *, not_version: str | None = None) -> dict:
    """The agent's document once it has learnt all it received and has a policy version (other than
    ``not_version``): its weights then rest, so local and remote act on the same ones."""

    def done():
        doc = client.request("GET", f"/agents/{name}").json()
        version = doc.get("policy_version")
        settled = doc["steps_learned"] == doc["steps_received"] and version and version != not_version
        return doc if settled else None

    return wait_for(done, LEARN_TIMEOUT, message=f"{name} to learn every step")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_local_and_remote_act_agree_after_learning(make_agent, client, agent_name, model, tmp_path):
    size, hyper = MODELS[model]
    local = make_agent(agent_name, model, OBS_SIZE, size, policy="local", policy_refresh=0.2, seed=3, **hyper)
    _stream(local, model, 48, seed=1)
    version = _learned(client, agent_name)["policy_version"]
    assert local.refresh_policy(timeout=30)
    wait_for(lambda: local.policy_version == version, 30, message="the client to fetch the learnt policy")
    remote = RemoteAgent(client, agent_name, policy="remote", act_timeout=10,
                         stream=StreamOptions(queue_dir=tmp_path / "remote-queue"))
    try:
        observations = np.random.default_rng(5).uniform(-2, 2, size=(8, OBS_SIZE)).astype(np.float32)
        if model == "ppo":
            # The server's PPO samples Normal(mean, std) whatever the noise, and the model's greedy
            # action is that mean: the mean of many remote actions must be the local action within a
            # few standard errors (std from the same model, as the client's exploration reads it).
            std = ort.InferenceSession(client.request("GET", f"/agents/{agent_name}/policy").content,
                                       providers=["CPUExecutionProvider"]).run(None, {"obs": observations})[1]
            n = 200
            for i in range(2):
                here = np.array(local.act(observations[i].tolist(), noise=0))
                there = np.array([remote.act(observations[i].tolist(), noise=0) for _ in range(n)])
                assert np.all(np.abs(there.mean(0) - here) <= 5 * std[i] / np.sqrt(n) + 1e-4), (there.mean(0), here)
        else:
            here = local.act(observations, noise=0)  # the batch: one local inference
            for i, row in enumerate(observations):
                there = remote.act(row.tolist(), noise=0)
                if model in ("dqn", "rainbow"):
                    assert isinstance(here[i], int) and here[i] == there, f"observation {i}"
                else:
                    np.testing.assert_allclose(here[i], there, atol=1e-5, rtol=0, err_msg=f"observation {i}")
        assert local.stats["act_local"] >= 1 and local.stats["act_remote"] == 0
        # Nothing was learnt meanwhile: both sides used the same weights.
        assert client.request("GET", f"/agents/{agent_name}").json()["policy_version"] == version
    finally:
        remote.close(timeout=5)


@pytest.mark.timeout(240)
def test_auto_keeps_acting_with_the_policy_while_the_server_is_down(server_factory, user, agent_name, tmp_path):
    srv = server_factory(name="auto")
    size, hyper = MODELS["dqn"]
    refresh = 0.5
    deadline = 0.3
    with Client(base_url=srv.url, username=user[0], password=user[1]) as client:
        # No fallback: an act() that neither the server nor the local policy answers raises.
        agent = RemoteAgent(client, agent_name, policy="auto", policy_refresh=refresh, act_timeout=deadline,
                            seed=3, **hyper, stream=StreamOptions(queue_dir=tmp_path / "queue"))
        try:
            agent.create_agent(OBS_SIZE, size, "dqn")
            _stream(agent, "dqn", 48, seed=1)
            first = _learned(client, agent_name)["policy_version"]
            wait_for(lambda: agent.policy_version == first, 30, message="the first policy")

            rng = np.random.default_rng(7)
            for _ in range(20):
                assert agent.act(rng.uniform(-1, 1, OBS_SIZE).tolist(), noise=0) in range(size)
            assert agent.stats["act_remote"] >= 20

            srv.stop(timeout=30)
            local_before = agent.stats["act_local"]
            slowest = 0.0
            for _ in range(50):
                t0 = time.monotonic()
                action = agent.act(rng.uniform(-1, 1, OBS_SIZE).tolist(), noise=0)
                slowest = max(slowest, time.monotonic() - t0)
                assert isinstance(action, int) and 0 <= action < size
            # Every act() answered by the policy, none by a fallback, each within the deadline (plus
            # the local inference and a scheduler's slice on a busy machine).
            assert agent.stats["act_local"] - local_before == 50
            assert agent.stats["act_fallbacks"] == 0
            assert slowest <= deadline + 0.5, slowest
            assert agent.policy_version == first  # the model fetched before the outage stays in use

            # Steps taken during the outage wait in the queue; the server comes back, learns them,
            # and the client's refresh picks up the new version.
            for _ in range(24):
                obs = rng.uniform(-1, 1, OBS_SIZE).tolist()
                agent.step(obs, agent.act(obs, noise=0.5), 1.0, rng.uniform(-1, 1, OBS_SIZE).tolist(), False)
            srv.start(timeout=120)
            assert agent.flush(timeout=60), agent.stats
            second = _learned(client, agent_name, not_version=first)["policy_version"]
            seen = time.monotonic()
            wait_for(lambda: agent.policy_version == second, 30, interval=0.05, message="the new policy version")
            moved_after = time.monotonic() - seen
            # Within policy_refresh of the server having it, give or take a busy machine's second.
            assert moved_after <= refresh + 5.0, moved_after
            assert agent.stats["policy_version"] == second
        finally:
            agent.close(timeout=5)
