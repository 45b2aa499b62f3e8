"""LocalPolicy: an exported policy acts on this machine as the agent does (issue 11).

The models are exported here by the server's own exporter from agents that learned a little;
nothing is faked. Statistical checks use fixed seeds and bounds many standard deviations wide.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from support.trained import learn, make_agent

from agents_bar_stream import AgentsBarError, ConfigurationError
from agents_bar_stream.policy import LocalPolicy, PolicyError

# policy_export silences torch's deprecation of its TorchScript exporter once, at import; pytest
# restores the warning filters after collecting, so the tests say it again.
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]
OBS_SIZE = 6
CASES = [("dqn", 4), ("rainbow", 3), ("ddpg", 2), ("ppo", 2)]


def _export(model: str, action_size: int, steps: int = 200, **hyper):
    from agents_bar_stream.server.policy_export import export_policy

    agent = make_agent(model, OBS_SIZE, action_size, seed=5, **hyper)
    learn(agent, model, steps)
    return agent, export_policy(agent, model, OBS_SIZE, action_size)


@pytest.fixture(scope="module", params=CASES, ids=[m for m, _ in CASES])
def exported(request):
    model, action_size = request.param
    agent, export = _export(model, action_size)
    return model, agent, export


def _observations(n: int = 64, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, size=(n, OBS_SIZE)).astype(np.float32)


def test_it_describes_itself(exported):
    model, _agent, export = exported
    policy = LocalPolicy.from_bytes(export.onnx_bytes, expected_obs_size=OBS_SIZE, expected_model=model)
    assert (policy.model, policy.obs_size, policy.action_size) == (model, OBS_SIZE, export.action_size)
    assert policy.discrete == (model in ("dqn", "rainbow"))
    assert policy.version == export.version
    assert policy.exploration == export.exploration
    assert policy.metadata == export.metadata
    if not policy.discrete:
        assert (policy.action_low, policy.action_high) == (-1.0, 1.0)
    assert model in repr(policy)


def test_greedy_actions_equal_the_agents(exported):
    from aitraineree.types.experience import Experience

    model, agent, export = exported
    policy = LocalPolicy.from_bytes(export.onnx_bytes)
    for row in _observations():
        local = policy.act(row.tolist())
        exp = agent.act(Experience(obs=[float(v) for v in row]), 0)
        if policy.discrete:
            assert type(local) is int and local == exp.action
        elif model == "ddpg":
            assert isinstance(local, list) and all(type(v) is float for v in local)
            np.testing.assert_allclose(local, exp.action, atol=1e-5, rtol=0)
        else:  # PPO's act samples whatever the noise: compare with the mean it sampled around
            np.testing.assert_allclose(local, agent.policy._last_dist.mean.reshape(-1).numpy(), atol=1e-5, rtol=0)


def test_observations_of_every_kind_give_the_same_action(exported):
    _model, _agent, export = exported
    policy = LocalPolicy.from_bytes(export.onnx_bytes)
    row = _observations(1)[0]
    expected = policy.act(row)
    assert policy.act(row.tolist()) == expected
    assert policy.act(tuple(row.tolist())) == expected
    assert policy.act(row.astype(np.float64)) == expected


def test_batch_act_equals_single_acts(exported):
    _model, _agent, export = exported
    policy = LocalPolicy.from_bytes(export.onnx_bytes)
    obs = _observations(50)
    batch = policy.act_batch(obs)
    singles = [policy.act(row) for row in obs]
    assert len(batch) == len(singles) == 50
    if policy.discrete:
        assert batch == singles
    else:
        np.testing.assert_allclose(batch, singles, atol=1e-6, rtol=0)
    assert policy.act_batch(obs.tolist()) == batch
    assert policy.act_batch(np.zeros((0, OBS_SIZE))) == []


def test_epsilon_one_is_uniform_over_the_actions():
    _agent, export = _export("dqn", 4, steps=50)
    policy = LocalPolicy.from_bytes(export.onnx_bytes)
    rng = np.random.default_rng(0)
    obs = _observations(1)[0]
    draws = 4000
    singles = [policy.act(obs, noise=1.0, rng=rng) for _ in range(draws)]
    batch = policy.act_batch(np.repeat(obs[None], draws, axis=0), noise=1.0, rng=rng)
    for actions in (singles, batch):
        assert all(type(a) is int for a in actions) and set(actions) == {0, 1, 2, 3}
        counts = np.bincount(actions)
        # 1000 expected per action, standard deviation ~27: 850..1150 is over 5 of them.
        assert all(850 <= c <= 1150 for c in counts), counts
    # noise 0.5: greedy half the time, plus a quarter of the random half.
    greedy = policy.act(obs)
    share = np.mean([policy.act(obs, noise=0.5, rng=rng) == greedy for _ in range(draws)])
    assert 0.58 <= share <= 0.67


@pytest.mark.parametrize("model", ["ddpg", "ppo"])
def test_continuous_noise_stays_within_bounds(model):
    _agent, export = _export(model, 3, steps=50)
    policy = LocalPolicy.from_bytes(export.onnx_bytes)
    rng = np.random.default_rng(1)
    obs = _observations(200)
    greedy = np.array(policy.act_batch(obs))
    for noise in (0.5, 5.0, 100.0):
        noisy = np.array([policy.act(row, noise=noise, rng=rng) for row in obs])
        batch = np.array(policy.act_batch(obs, noise=noise, rng=rng))
        for actions in (noisy, batch):
            assert actions.shape == (200, 3)
            assert np.all(actions >= -1.0) and np.all(actions <= 1.0)
            assert not np.allclose(actions, greedy), "the noise was not applied"


def test_ddpg_noise_is_the_servers():
    """DDPG: clip(action + noise * scale * Normal(mean, sqrt(noise_sigma)))."""
    # Unlearned: the actor's last layer starts near 0, so the noise is never clipped here.
    _agent, export = _export("ddpg", 2, steps=0, noise_scale=0.2, noise_sigma=4.0)
    policy = LocalPolicy.from_bytes(export.onnx_bytes)
    obs = _observations(1)[0]
    greedy = np.array(policy.act(obs))
    assert np.all(np.abs(greedy) < 0.7), "the check below assumes no clipping"
    rng = np.random.default_rng(3)
    added = np.array([policy.act(obs, noise=0.1, rng=rng) for _ in range(3000)]) - greedy
    # std = 0.1 * 0.2 * sqrt(4) = 0.04; 3000 draws estimate it to ~1.3%.
    np.testing.assert_allclose(added.std(axis=0), 0.04, rtol=0.08)
    np.testing.assert_allclose(added.mean(axis=0), 0.0, atol=0.004)


def test_ppo_noise_samples_the_policys_gaussian():
    _agent, export = _export("ppo", 2, steps=50)
    policy = LocalPolicy.from_bytes(export.onnx_bytes)
    obs = _observations(1)
    mean, std = policy._session.run(None, {"obs": obs})
    assert np.all(np.abs(mean[0]) + 4 * 0.2 * std[0] < 1.0), "the check below assumes no clipping"
    rng = np.random.default_rng(4)
    samples = np.array([policy.act(obs[0], noise=0.2, rng=rng) for _ in range(3000)])
    np.testing.assert_allclose(samples.std(axis=0), 0.2 * std[0], rtol=0.08)
    np.testing.assert_allclose(samples.mean(axis=0), mean[0], atol=0.2 * float(std[0].max()) * 0.1)


@pytest.fixture(scope="module")
def dqn_bytes() -> bytes:
    return _export("dqn", 2, steps=10)[1].onnx_bytes


@pytest.mark.parametrize("data", [b"", b"not an onnx model", bytes(range(256)) * 8], ids=["empty", "text", "noise"])
def test_corrupt_bytes_raise_a_clear_error(data):
    with pytest.raises(PolicyError, match="not a loadable ONNX policy"):
        LocalPolicy.from_bytes(data)


def test_damaged_models_raise_a_clear_error(dqn_bytes):
    import onnx

    with pytest.raises(PolicyError):
        LocalPolicy.from_bytes(dqn_bytes[: len(dqn_bytes) // 2])
    with pytest.raises(PolicyError, match="ONNX model bytes"):
        LocalPolicy.from_bytes("a path?")  # type: ignore[arg-type]
    proto = onnx.load_from_string(dqn_bytes)
    del proto.metadata_props[:]
    with pytest.raises(PolicyError, match="format"):
        LocalPolicy.from_bytes(proto.SerializeToString())
    # Metadata that lies about the graph: the sizes are checked against the graph itself.
    proto = onnx.load_from_string(dqn_bytes)
    for prop in proto.metadata_props:
        if prop.key == "agents_bar.obs_size":
            prop.value = str(OBS_SIZE + 1)
    with pytest.raises(PolicyError, match=r"input obs"):
        LocalPolicy.from_bytes(proto.SerializeToString())
    proto = onnx.load_from_string(dqn_bytes)
    for prop in proto.metadata_props:
        if prop.key == "agents_bar.exploration":
            prop.value = json.dumps({"kind": "gaussian"})
    with pytest.raises(PolicyError, match="epsilon_greedy"):
        LocalPolicy.from_bytes(proto.SerializeToString())


def test_a_wrong_observation_size_raises_a_clear_error(dqn_bytes):
    with pytest.raises(PolicyError, match=f"obs_size {OBS_SIZE}, not the expected 4"):
        LocalPolicy.from_bytes(dqn_bytes, expected_obs_size=4)
    with pytest.raises(PolicyError, match="model 'dqn'"):
        LocalPolicy.from_bytes(dqn_bytes, expected_model="ddpg")
    policy = LocalPolicy.from_bytes(dqn_bytes, expected_obs_size=OBS_SIZE, expected_action_size=2)
    bad = [[0.0] * (OBS_SIZE - 1), [0.0] * (OBS_SIZE + 1), [0.0], 1.5, np.zeros((1, OBS_SIZE)),
           np.zeros(OBS_SIZE + 1), ["a"] * OBS_SIZE, [float("nan")] * OBS_SIZE, [None] * OBS_SIZE]
    for obs in bad:
        for noise in (0.0, 1.0):  # a random action does not excuse a bad observation
            with pytest.raises(PolicyError) as info:
                policy.act(obs, noise=noise)
            assert isinstance(info.value, AgentsBarError) and isinstance(info.value, ValueError)
    for batch in (np.zeros(OBS_SIZE), np.zeros((3, OBS_SIZE + 1)), [[float("inf")] * OBS_SIZE]):
        with pytest.raises(PolicyError):
            policy.act_batch(batch)
    for noise in (-0.1, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ConfigurationError, match="noise"):
            policy.act([0.0] * OBS_SIZE, noise=noise)  # type: ignore[arg-type]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_client_stays_free_of_numpy_onnxruntime_and_torch():
    result = _run(
        "import sys\n"
        "import agents_bar_stream, agents_bar_stream.policy\n"
        "heavy = sorted(m for m in ('numpy', 'onnxruntime', 'torch', 'onnx') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    assert result.returncode == 0, result.stderr


def test_without_the_local_extra_the_error_names_it(dqn_bytes, tmp_path):
    path = tmp_path / "policy.onnx"
    path.write_bytes(dqn_bytes)
    result = _run(
        "import sys\n"
        "sys.modules['onnxruntime'] = None  # as if it were not installed\n"
        "from agents_bar_stream.policy import LocalPolicy\n"
        "from agents_bar_stream import ConfigurationError\n"
        "try:\n"
        f"    LocalPolicy.from_file({str(path)!r})\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "agents-bar-stream[local]" in result.stdout and "onnxruntime" in result.stdout


def test_threads_acting_at_once_each_get_their_own_action(dqn_bytes):
    """act() shares preallocated buffers; its lock keeps one thread's observation from another's."""
    import threading

    policy = LocalPolicy.from_bytes(dqn_bytes)
    obs = _observations(200, seed=9)
    expected = policy.act_batch(obs)
    mismatches: list[int] = []

    def worker(offset: int) -> None:
        for _ in range(20):
            for i in range(offset, len(obs), 4):
                if policy.act(obs[i]) != expected[i]:
                    mismatches.append(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not mismatches
