"""Small ai-traineree agents that have learned a little, for the policy export tests.

Built with the server's own ``build_agent`` and fed random transitions through the agent's own
``step`` the way ``learner.py`` feeds logged steps (for PPO, with the log probability and value of
the action, which PPO learns from), so that the weights have moved away from their initial ones.
"""

from __future__ import annotations

import random
from typing import Any

from agents_bar_stream.protocol import is_discrete

#: Configs small enough to learn a few hundred steps in well under a second per model.
SMALL = {
    "dqn": {"hidden_layers": [32, 32], "batch_size": 16},
    "rainbow": {"hidden_layers": [32, 32], "batch_size": 16},
    "ddpg": {"hidden_layers": [32, 32], "batch_size": 16},
    "ppo": {"hidden_layers": [32, 32], "rollout_length": 32, "batch_size": 16},
}


def make_agent(model: str, obs_size: int, action_size: int, **hyper: Any):
    from agents_bar_stream.server.learner import build_agent, validate_config

    config = validate_config(model, {"obs_size": obs_size, "action_size": action_size, **SMALL[model], **hyper})
    return build_agent(model, config)


def learn(agent, model: str, steps: int, *, seed: int = 0) -> None:
    """Feed ``steps`` random transitions to ``agent.step`` (with learning updates along the way)."""
    from aitraineree.types.experience import Experience

    rng = random.Random(seed)
    obs_size = agent.obs_space.shape[0]
    action_size = agent.action_space.shape[0]
    obs = [rng.uniform(-1, 1) for _ in range(obs_size)]
    for i in range(steps):
        next_obs = [rng.uniform(-1, 1) for _ in range(obs_size)]
        if model == "ppo":
            # PPO learns from the action's log probability and value: act() records them.
            exp = agent.act(Experience(obs=list(obs)), 0)
        elif is_discrete(model):
            exp = Experience(obs=list(obs), action=rng.randrange(action_size))
        else:
            exp = Experience(obs=list(obs), action=[rng.uniform(-1, 1) for _ in range(action_size)])
        exp.update(reward=rng.uniform(-1, 1), next_obs=next_obs, done=(i % 25 == 24))
        agent.step(exp)
        obs = next_obs
