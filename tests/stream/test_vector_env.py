"""step_many(): a gymnasium vector environment's step queued in one call (issue 15), against the real server."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from support.stream import api_for, fill_disk, obs_of, queued_firsts

from agents_bar_stream import InvalidStepError, QueueFullError

N_ENVS = 8


def _vector_cartpole(seed: int) -> tuple[gymnasium.vector.SyncVectorEnv, np.ndarray]:
    envs = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("CartPole-v1") for _ in range(N_ENVS)])
    obs, _ = envs.reset(seed=seed)
    envs.action_space.seed(seed)
    return envs, obs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["batch", "step"])
def test_a_vector_environment_is_queued_row_by_row_in_order(server, user, agent_name, make_agent, durability):
    agent = make_agent(server, agent_name, durability=durability)
    envs, obs = _vector_cartpole(seed=7)
    expected = []  # the transitions as N calls of step() would have queued them
    autoreset = np.zeros(N_ENVS, dtype=bool)
    queued = 0
    for _ in range(120):
        actions = envs.action_space.sample()
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        dones = terminated | truncated
        # gymnasium resets a finished environment on the step after its done: that row is no transition.
        n = agent.step_many(obs, actions, rewards, next_obs, dones, where=~autoreset)
        kept = [i for i in range(N_ENVS) if not autoreset[i]]
        assert n == len(kept)
        queued += n
        expected += [(obs[i], int(actions[i]), float(rewards[i]), next_obs[i], bool(dones[i])) for i in kept]
        obs, autoreset = next_obs, dones
    envs.close()
    assert queued < 120 * N_ENVS, "no environment finished an episode: the where= rows were never exercised"
    assert agent.pending + agent.stats["delivered"] == queued
    assert agent.flush(timeout=60), agent.stats

    log = api_for(server, user).log(agent_name)
    assert len(log) == len(expected)
    for entry, (o, a, r, no, d) in zip(log, expected, strict=True):
        step = entry["step"]
        assert step["action"] in (a, [a])
        assert (step["reward"], step["done"]) == (r, d)
        np.testing.assert_array_equal(np.asarray(step["obs"], dtype=np.float32), o)
        np.testing.assert_array_equal(np.asarray(step["next_obs"], dtype=np.float32), no)
    # A done row's next_obs is the environment's final observation, never the first of the next episode.
    assert any(d for *_, d in expected)


@pytest.mark.timeout(60)
def test_one_bad_row_queues_nothing_and_is_named(server, user, agent_name, make_agent):
    agent = make_agent(server, agent_name)
    obs = np.array([obs_of(i) for i in range(N_ENVS)], dtype=np.float32)
    next_obs = np.array([obs_of(i + 1) for i in range(N_ENVS)], dtype=np.float32)
    actions = np.zeros(N_ENVS, dtype=np.int64)
    rewards = np.ones(N_ENVS, dtype=np.float32)
    dones = np.zeros(N_ENVS, dtype=bool)
    assert agent.step_many(obs, actions, rewards, next_obs, dones) == N_ENVS
    # Delivered: the flusher has read the agent's sizes (2 actions), which step() checks from then on.
    assert agent.flush(timeout=30), agent.stats

    bad_reward = rewards.copy()
    bad_reward[5] = np.nan
    with pytest.raises(InvalidStepError, match="row 5") as info:
        agent.step_many(obs, actions, bad_reward, next_obs, dones)
    assert info.value.row == 5
    bad_action = actions.copy()
    bad_action[2] = 7  # the agent has 2 actions
    with pytest.raises(InvalidStepError, match=r"row 2: action 7 is out of range") as info:
        agent.step_many(obs, bad_action, rewards, next_obs, dones)
    assert info.value.row == 2
    wrong_shape = np.zeros((N_ENVS, 5), dtype=np.float32)
    with pytest.raises(InvalidStepError, match="row 0"):
        agent.step_many(wrong_shape, actions, rewards, wrong_shape, dones)
    with pytest.raises(InvalidStepError, match="obs has 8 rows but rewards has 7"):
        agent.step_many(obs, actions, rewards[:7], next_obs, dones)
    with pytest.raises(InvalidStepError, match="rewards must have a leading batch axis"):
        agent.step_many(obs, actions, np.float32(1.0), next_obs, dones)
    with pytest.raises(InvalidStepError, match="where must hold booleans"):
        agent.step_many(obs, actions, rewards, next_obs, dones, where=np.ones(N_ENVS))
    with pytest.raises(InvalidStepError, match="where has 3 entries"):
        agent.step_many(obs, actions, rewards, next_obs, dones, where=[True] * 3)
    assert agent.stats["enqueued"] == N_ENVS  # not one row of the refused calls
    assert agent.pending == 0  # the first batch was delivered; nothing of the refused ones waits

    # Plain lists work as well as arrays, and a batch after the refused ones goes through.
    assert agent.step_many(obs.tolist(), [1] * N_ENVS, [0.0] * N_ENVS, next_obs.tolist(), [False] * N_ENVS) == N_ENVS
    assert agent.step_many(obs[:0], actions[:0], rewards[:0], next_obs[:0], dones[:0]) == 0
    assert agent.flush(timeout=30), agent.stats
    log = api_for(server, user).log(agent_name)
    assert [e["step"]["action"] for e in log] == [[0]] * N_ENVS + [[1]] * N_ENVS
    assert [e["step"]["reward"] for e in log] == [1.0] * N_ENVS + [0.0] * N_ENVS


@pytest.mark.timeout(60)
def test_a_batch_larger_than_the_queue_is_refused_whole(dead_server, agent_name, make_agent):
    agent = make_agent(dead_server, agent_name, create=False, max_pending_bytes=2_000, on_full="raise")
    rows = 40  # ~100 bytes each: twice what the queue may hold
    obs = [obs_of(i) for i in range(rows)]
    with pytest.raises(QueueFullError, match="none was queued"):
        agent.step_many(obs, [0] * rows, [0.0] * rows, obs, [False] * rows)
    assert agent.pending == 0
    assert agent.step_many(obs[:5], [0] * 5, [0.0] * 5, obs[:5], [False] * 5) == 5
    assert agent.pending == 5


@pytest.mark.timeout(60)
def test_a_refused_batch_teaches_the_queue_nothing(dead_server, agent_name, make_agent):
    # The agent's sizes are unknown here (no server to ask): the first accepted step sets them. Row 0
    # of the refused call would have set obs to 4 numbers; since nothing of the call was queued, a
    # later step of 5 numbers is the first one, and is accepted.
    agent = make_agent(dead_server, agent_name, create=False)
    obs = [obs_of(0), obs_of(1)]
    with pytest.raises(InvalidStepError, match="row 1"):
        agent.step_many(obs, [0, 1], [0.0, float("inf")], obs, [False, False])
    assert agent.step_many([[0.5] * 5], [3], [1.0], [[0.5] * 5], [True]) == 1
    with pytest.raises(InvalidStepError):
        agent.step(obs_of(0), 0, 0.0, obs_of(1), False)  # 4 numbers now disagree with the queue's 5


@pytest.mark.timeout(120)
def test_a_disk_error_in_step_mode_queues_none_of_the_rows(tmp_path):
    # The queue's files may not grow past 5 MiB. Each call's rows are two segments, and the disk
    # refuses the second one of the second call (before the fix the first one stayed queued): then
    # neither may stay queued, since the call raised and the caller still holds those rows.
    queue_dir = tmp_path / "full-queue"
    accepted, _ = fill_disk(queue_dir, 5 * 2**20, width=256, loop="""
n = 1500  # rows of ~3.6 KB: each call is two segments (one of ~4 MiB, one of the rest)
for call in range(1000):
    obs = [[float(accepted + i)] * 256 for i in range(n)]
    agent.step_many(obs, [0] * n, [0.0] * n, obs, [False] * n)
    accepted += n
""")
    assert queued_firsts(queue_dir) == [float(i) for i in range(accepted)]  # whole calls only
