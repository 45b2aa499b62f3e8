"""The learners really learn: streamed steps reach ai-traineree agents and produce finite losses."""

from __future__ import annotations

import math
import random

import pytest
from support.api import Api, wait_for

pytestmark = pytest.mark.timeout(120)


def cartpole_like(count: int, *, seed: int = 0, discrete: bool = True, action_size: int = 2) -> list:
    """Transitions shaped like CartPole's (4 floats, reward 1, episodes of ~20 steps)."""
    rng = random.Random(seed)
    steps = []
    obs = [rng.uniform(-0.05, 0.05) for _ in range(4)]
    for t in range(count):
        if discrete:
            action = [rng.randrange(action_size)]
        else:
            action = [rng.uniform(-1, 1) for _ in range(action_size)]
        push = (action[0] - 0.5) * 0.2 if discrete else action[0] * 0.1
        next_obs = [obs[0] + 0.02 * obs[1], obs[1] + push, obs[2] + 0.02 * obs[3], obs[3] - push + rng.gauss(0, 0.01)]
        done = abs(next_obs[2]) > 0.2 or t % 25 == 24
        steps.append({"obs": obs, "action": action, "reward": 1.0, "next_obs": next_obs, "done": done})
        obs = [rng.uniform(-0.05, 0.05) for _ in range(4)] if done else next_obs
    return steps


@pytest.mark.parametrize(
    "model, count, config",
    [
        ("dqn", 300, {"batch_size": 32, "hidden_layers": [32, 32]}),
        ("rainbow", 200, {"batch_size": 32, "hidden_layers": [32, 32]}),
        ("ppo", 96, {"rollout_length": 32, "batch_size": 16, "hidden_layers": [32]}),
        ("ddpg", 200, {"batch_size": 32, "hidden_layers": [32, 32]}),
    ],
)
def test_streamed_steps_are_learned(api: Api, agent_name, model, count, config):
    discrete = model in ("dqn", "rainbow")
    api.create_agent(agent_name, model, obs_size=4, action_size=2, **config)
    steps = cartpole_like(count, discrete=discrete)
    for first in range(0, count, 100):
        assert api.send_steps(agent_name, "learn", first, steps[first : first + 100]).status_code == 200
    wait_for(lambda: api.agent(agent_name)["steps_learned"] >= count, 90, message=f"{model} to learn {count} steps")
    loss = api.get(f"/agents/{agent_name}/loss").json()
    assert loss, f"{model} reported no loss after {count} steps: {api.agent(agent_name)}"
    assert all(isinstance(v, float) and math.isfinite(v) for v in loss.values()), loss
    # The agent still acts on its trained weights.
    assert api.post(f"/agents/{agent_name}/act", params={"noise": 0}, json=steps[0]["obs"]).status_code == 200
    api.delete(f"/agents/{agent_name}")


def test_ppo_fed_actions_it_would_not_choose_keeps_learning(api: Api, agent_name):
    """The cause of the rare ``ppo reported no loss after 96 steps`` above (issue 14): PPO fed
    actions that its policy finds all but impossible (uniform ones, as that test sends) overflowed
    its probability ratio, its weights turned NaN, every later step of the chunk failed on them and
    the rollback left a fresh agent without a loss; about one run in three. Twelve seeded agents of
    that test's config must all learn without errors and report a loss; with this learning rate
    seed 2 went NaN every time (the old learner: 226 errors in 320 steps, no loss)."""
    configs = [dict(rollout_length=32, batch_size=16, hidden_layers=[32], seed=seed) for seed in range(12)]
    configs.append(dict(rollout_length=32, batch_size=16, hidden_layers=[32], actor_lr=1.0, seed=2))
    names = []
    for i, config in enumerate(configs):
        name = f"{agent_name}-{i}"
        api.create_agent(name, "ppo", obs_size=4, action_size=2, **config)
        names.append(name)
    count = 320
    steps = cartpole_like(count, discrete=False)
    for name in names:
        assert api.send_steps(name, "learn", 0, steps).status_code == 200
    for name in names:
        info = wait_for(lambda n=name: (lambda i: i if i["steps_learned"] >= count else None)(api.agent(n)), 90,
                        message=f"{name} to learn {count} steps")
        loss = api.get(f"/agents/{name}/loss").json()
        assert loss and all(isinstance(v, float) and math.isfinite(v) for v in loss.values()), (name, loss, info)
        assert info["learn_errors"] == 0, info
    assert api.post(f"/agents/{names[-1]}/act", params={"noise": 0}, json=steps[0]["obs"]).status_code == 200
