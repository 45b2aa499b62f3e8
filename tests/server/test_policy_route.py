"""GET /agents/{name}/policy on the real server: the ONNX model acts as /act does, ETag/304, the
version follows the weights, and steps' policy_version is logged and reported as policy_lag (issue 11)."""

from __future__ import annotations

import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
from support.api import make_step, wait_for

OBS_SIZE = 4
# Small networks that learn at once: every step is a learning step (warm_up 0), PPO every 16.
CONFIGS = {
    "dqn": {"action_size": 3, "hidden_layers": [16, 16], "batch_size": 8, "warm_up": 0},
    "rainbow": {"action_size": 3, "hidden_layers": [16, 16], "batch_size": 8, "warm_up": 0},
    "ddpg": {"action_size": 2, "hidden_layers": [16, 16], "batch_size": 8, "warm_up": 0},
    "ppo": {"action_size": 2, "hidden_layers": [16], "rollout_length": 16, "batch_size": 8},
}
DISCRETE = {"dqn": True, "rainbow": True, "ddpg": False, "ppo": False}
LEARN_TIMEOUT = 120


def _steps(model: str, first: int, count: int, **extra) -> list:
    size = CONFIGS[model]["action_size"]
    out = []
    for i in range(first, first + count):
        rng = random.Random(i)
        action = [rng.randrange(size)] if DISCRETE[model] else [rng.uniform(-1, 1) for _ in range(size)]
        out.append({**make_step(i, obs_size=OBS_SIZE, action=action, done=i % 20 == 19), **extra})
    return out


def _create(api, name: str, model: str, seed: int = 3) -> None:
    api.create_agent(name, model, obs_size=OBS_SIZE, seed=seed, **CONFIGS[model])


def _learned_all(api, name: str) -> dict:
    """The agent's document once it has learned every step it received (its weights then rest).

    Its policy_version is null while a learning step holds the agent: wait for one too."""

    def done():
        doc = api.agent(name)
        return doc if doc["steps_learned"] == doc["steps_received"] and doc["policy_version"] else None

    return wait_for(done, LEARN_TIMEOUT, message=f"{name} to learn every step")


def _feed(api, name: str, model: str, producer: str, first_seq: int, count: int, **extra) -> dict:
    resp = api.send_steps(name, producer, first_seq, _steps(model, first_seq, count, **extra))
    assert resp.status_code == 200, resp.text
    return _learned_all(api, name)


def _policy(api, name: str, **headers):
    return api.get(f"/agents/{name}/policy", headers=headers)


def _observations(n: int = 8) -> np.ndarray:
    return np.random.default_rng(5).uniform(-2, 2, size=(n, OBS_SIZE)).astype(np.float32)


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_policy_acts_as_the_agent(api, agent_name, model):
    _create(api, agent_name, model)
    before = api.agent(agent_name)["policy_version"]
    doc = _feed(api, agent_name, model, "p", 0, 48)
    version = doc["policy_version"]
    assert isinstance(version, str) and len(version) == 24 and version != before, "the agent did not learn"

    resp = _policy(api, agent_name)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/onnx"
    assert resp.headers["etag"] == f'"{version}"'
    proto = onnx.load_from_string(resp.content)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["agents_bar.policy_version"] == version and meta["agents_bar.model"] == model

    obs = _observations()
    outputs = ort.InferenceSession(resp.content, providers=["CPUExecutionProvider"]).run(None, {"obs": obs})
    for i, row in enumerate(obs):
        if model == "ppo":
            # The server's PPO samples Normal(mean, action_std) whatever the noise: the mean of many
            # of its actions is the graph's action, within a few standard errors.
            n = 200
            acts = np.array([api.post(f"/agents/{agent_name}/act?noise=0", json=row.tolist()).json()["action"]
                             for _ in range(n)]) if i < 2 else None
            if acts is not None:
                err = 5 * outputs[1][i] / np.sqrt(n) + 1e-4
                assert np.all(np.abs(acts.mean(0) - outputs[0][i]) <= err), (acts.mean(0), outputs[0][i])
            continue
        resp = api.post(f"/agents/{agent_name}/act?noise=0", json=row.tolist())
        assert resp.status_code == 200, resp.text
        action = resp.json()["action"]
        if DISCRETE[model]:
            assert action == [int(outputs[0][i])], f"observation {i}"
        else:
            np.testing.assert_allclose(action, outputs[0][i], atol=1e-5, rtol=0)
    # Nothing learned meanwhile: the comparison was against the same weights.
    assert api.agent(agent_name)["policy_version"] == version


def test_etag_and_304(api, agent_name):
    _create(api, agent_name, "dqn")
    version = _feed(api, agent_name, "dqn", "p", 0, 20)["policy_version"]
    first = _policy(api, agent_name)
    assert first.status_code == 200 and first.headers["etag"] == f'"{version}"'
    for match in (f'"{version}"', f'W/"{version}"', f'"other", "{version}"', "*"):
        resp = _policy(api, agent_name, **{"If-None-Match": match})
        assert resp.status_code == 304, (match, resp.status_code)
        assert resp.content == b"" and resp.headers["etag"] == f'"{version}"'
    again = _policy(api, agent_name, **{"If-None-Match": '"0123456789abcdef01234567"'})
    assert again.status_code == 200 and again.content == first.content  # the cached export, same bytes


def test_version_follows_learning_and_snapshot_upload(api, agent_name):
    other = f"{agent_name}-b"
    _create(api, agent_name, "ddpg", seed=3)
    _create(api, other, "ddpg", seed=4)
    v1 = _feed(api, agent_name, "ddpg", "p", 0, 20)["policy_version"]
    assert _policy(api, agent_name).headers["etag"] == f'"{v1}"'

    v2 = _feed(api, agent_name, "ddpg", "p", 20, 20)["policy_version"]
    assert v2 != v1
    resp = _policy(api, agent_name, **{"If-None-Match": f'"{v1}"'})
    assert resp.status_code == 200 and resp.headers["etag"] == f'"{v2}"'

    # The other agent's weights, uploaded as a snapshot: equal weights, equal version.
    v_other = _feed(api, other, "ddpg", "q", 0, 10)["policy_version"]
    assert v_other not in (v1, v2)
    snap = api.get(f"/snapshots/{other}").json()
    assert api.post(f"/snapshots/{agent_name}", json=snap).status_code == 200
    assert api.agent(agent_name)["policy_version"] == v_other
    resp = _policy(api, agent_name, **{"If-None-Match": f'"{v2}"'})
    assert resp.status_code == 200 and resp.headers["etag"] == f'"{v_other}"'


def test_another_users_agent_is_not_found(api, other_api, agent_name):
    _create(api, agent_name, "dqn")
    assert other_api.get(f"/agents/{agent_name}/policy").status_code == 404
    assert api.get(f"/agents/{agent_name}-missing/policy").status_code == 404
    assert api.session.get(f"{api.base_url}/api/v1/agents/{agent_name}/policy",
                           headers={"Authorization": ""}, timeout=30).status_code == 401


def test_steps_policy_version_is_logged_and_reported_as_lag(api, agent_name):
    _create(api, agent_name, "dqn")
    doc = api.agent(agent_name)
    assert doc["policy_lag"]["count"] == 0 and doc["policy_lag"]["p50"] is None
    v1 = _feed(api, agent_name, "dqn", "p", 0, 10)["policy_version"]
    assert _policy(api, agent_name).status_code == 200  # the client's download: v1 is now known

    steps = _steps("dqn", 10, 6, policy_version=v1)
    steps[1]["policy_version"] = "not-a-version-of-this-server"
    steps[2]["policy_version"] = "x" * 65  # too long: ignored like any unknown field
    steps[3]["policy_version"] = 7  # not a string: ignored
    del steps[4]["policy_version"]
    assert api.send_steps(agent_name, "p", 10, steps).status_code == 200
    single = {**_steps("dqn", 16, 1)[0], "policy_version": v1}
    assert api.post(f"/agents/{agent_name}/step", json={"step_data": single}).status_code == 200
    doc = _learned_all(api, agent_name)

    log = api.log(agent_name)
    assert all("policy_version" not in e for e in log[:10])
    assert [e.get("policy_version") for e in log[10:]] == [
        v1, "not-a-version-of-this-server", None, None, None, v1, v1]
    assert all(set(e["step"]) == {"obs", "action", "reward", "next_obs", "done"} for e in log)

    lag = doc["policy_lag"]
    assert lag["count"] == 3 and lag["unknown"] == 1 and lag["window"] == 1000
    # Every step of this DQN is a learning step: the k-th step after v1 was learned k-ish updates later.
    assert 0 <= lag["p50"] <= lag["p90"] <= lag["max"] <= 7, lag
    assert lag["max"] >= 1, lag


def test_part1_only_server_has_no_policy(server_factory, user):
    from support.api import Api, login

    srv = server_factory(extra_args=["--part1-only"], name="part1")
    api = Api(srv.url, login(srv.url, *user))
    try:
        api.create_agent("old", "dqn", obs_size=OBS_SIZE, **CONFIGS["dqn"])
        assert api.get("/agents/old/policy").status_code == 404
        doc = api.agent("old")
        assert "policy_version" not in doc and "policy_lag" not in doc
    finally:
        api.cleanup()


def test_concurrent_downloads_while_learning(api, agent_name):
    from concurrent.futures import ThreadPoolExecutor

    _create(api, agent_name, "dqn")
    assert api.send_steps(agent_name, "p", 0, _steps("dqn", 0, 400)).status_code == 200

    def download(_):
        # One connection per call: a requests.Session is not meant to be shared between threads.
        resp = requests.get(f"{api.base_url}/api/v1/agents/{agent_name}/policy",
                            headers={"Authorization": api.session.headers["Authorization"]}, timeout=60)
        assert resp.status_code == 200, resp.text
        meta = {p.key: p.value for p in onnx.load_from_string(resp.content).metadata_props}
        # The ETag is the version of the bytes answered, whatever learning did meanwhile.
        assert resp.headers["etag"] == f'"{meta["agents_bar.policy_version"]}"'
        return meta["agents_bar.policy_version"]

    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(download, range(12)))
    assert all(len(v) == 24 for v in versions)
    final = _learned_all(api, agent_name)["policy_version"]
    assert _policy(api, agent_name).headers["etag"] == f'"{final}"'
