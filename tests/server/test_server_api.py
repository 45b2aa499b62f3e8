"""Part 1 (the v1 API the published client speaks) and the read-only calls of Part 2, over HTTP."""

from __future__ import annotations

import math

import pytest
import requests
from support.api import API, Api, make_step, make_steps

pytestmark = pytest.mark.timeout(120)


def assert_detail(resp: requests.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    return body


# -- login -------------------------------------------------------------------------------------


def test_login_form_encoded(server, user):
    resp = requests.post(
        f"{server.url}{API}/login/access-token", data={"username": user[0], "password": user[1]}, timeout=30
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "bearer" and isinstance(body["access_token"], str)


@pytest.mark.parametrize(
    "form",
    [{"username": "alice", "password": "wrong"}, {"username": "nobody", "password": "x"}],
    ids=["bad-password", "no-user"],
)
def test_login_refused(server, form):
    resp = requests.post(f"{server.url}{API}/login/access-token", data=form, timeout=30)
    assert resp.status_code in (400, 401)
    assert "detail" in resp.json()


def test_login_missing_fields(server):
    resp = requests.post(f"{server.url}{API}/login/access-token", data={"username": "alice"}, timeout=30)
    assert_detail(resp, 422)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YWxpY2U6eA=="}],
    ids=["none", "empty", "garbage", "basic"],
)
def test_401_without_a_valid_token(server, headers):
    resp = requests.get(f"{server.url}{API}/agents/", headers=headers, timeout=30)
    assert_detail(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_forged_token_signature(server, token):
    payload, _, sig = token.partition(".")
    forged = payload + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    resp = requests.get(f"{server.url}{API}/agents/", headers={"Authorization": f"Bearer {forged}"}, timeout=30)
    assert resp.status_code == 401


# -- agents ------------------------------------------------------------------------------------


def test_agent_lifecycle(api: Api, agent_name):
    created = api.create_agent(agent_name, "DQN", obs_size=4, action_size=2, lr=0.001, hidden_layers=[16, 16])
    assert created["name"] == agent_name
    assert created["model"] == "dqn"
    assert created["description"] is None and created["is_active"] is True
    assert created["config"]["obs_size"] == 4 and created["config"]["action_size"] == 2
    assert created["config"]["lr"] == 0.001
    assert created["steps_received"] == 0 and created["steps_learned"] == 0

    assert api.agent(agent_name)["name"] == agent_name
    names = [a["name"] for a in api.get("/agents/").json()]
    assert agent_name in names
    assert agent_name in [a["name"] for a in api.get("/agents").json()]  # without the trailing slash too

    resp = api.delete(f"/agents/{agent_name}")
    assert resp.status_code == 202
    assert_detail(api.get(f"/agents/{agent_name}"), 404)
    assert_detail(api.delete(f"/agents/{agent_name}"), 404)


def test_create_duplicate_name_409(api: Api, agent_name):
    api.create_agent(agent_name)
    resp = api.post("/agents/", json={"name": agent_name, "model": "dqn", "config": {"obs_size": 4, "action_size": 2}})
    assert_detail(resp, 409)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"name": "x1", "model": "a2c", "config": {"obs_size": 4, "action_size": 2}}, "model"),
        ({"name": "x1", "model": 3, "config": {"obs_size": 4, "action_size": 2}}, "model"),
        ({"name": "../etc", "model": "dqn", "config": {"obs_size": 4, "action_size": 2}}, "name"),
        ({"name": "", "model": "dqn", "config": {"obs_size": 4, "action_size": 2}}, "name"),
        ({"model": "dqn", "config": {"obs_size": 4, "action_size": 2}}, "name"),
        ({"name": "x1", "model": "dqn"}, "config"),
        ({"name": "x1", "model": "dqn", "config": {"obs_size": "4", "action_size": 2}}, "obs_size"),
        ({"name": "x1", "model": "dqn", "config": {"obs_size": 0, "action_size": 2}}, "obs_size"),
        ({"name": "x1", "model": "dqn", "config": {"obs_size": 4, "action_size": True}}, "action_size"),
        ({"name": "x1", "model": "dqn", "config": {"obs_size": 4, "action_size": 2, "lr": "fast"}}, "lr"),
        ({"name": "x1", "model": "dqn", "config": {"obs_size": 4, "action_size": 2, "lr": -1}}, "lr"),
        ({"name": "x1", "model": "dqn", "config": {"obs_size": 4, "action_size": 2, "device": "cuda"}}, "device"),
        (
            {"name": "x1", "model": "dqn", "config": {"obs_size": 4, "action_size": 2, "hidden_layers": [0]}},
            "hidden_layers",
        ),
        ({"name": "x1", "model": "ppo", "config": {"obs_size": 4, "action_size": 2, "v_min": 1}}, "v_min"),
        ({"name": "x1", "model": "dqn", "config": {"obs_size": 4, "action_size": 2}, "is_active": "yes"}, "is_active"),
        ([1, 2, 3], "object"),
    ],
)
def test_create_bad_input_422(api: Api, body, needle):
    resp = api.post("/agents/", json=body)
    detail = assert_detail(resp, 422)["detail"]
    assert needle in detail


@pytest.mark.parametrize(
    "data, ctype",
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"name=x", "text/plain"),
    ],
)
def test_create_bad_json_422(api: Api, data, ctype):
    assert_detail(api.post("/agents/", data=data, headers={"Content-Type": ctype}), 422)


def test_body_too_large_413(api: Api):
    resp = api.post("/agents/", data=b"[" + b"0," * (2 * 2**20) + b"0]", headers={"Content-Type": "application/json"})
    assert_detail(resp, 413)


def test_unknown_route_and_method_are_json(api: Api):
    assert_detail(api.get("/no/such/thing"), 404)
    assert_detail(api.request("PUT", "/stream/info"), 405)


def test_owner_isolation(api: Api, other_api: Api, agent_name):
    api.create_agent(agent_name)
    api.send_steps(agent_name, "p", 0, make_steps(0, 3))
    assert agent_name not in [a["name"] for a in other_api.get("/agents/").json()]
    for method, path, kwargs in [
        ("GET", f"/agents/{agent_name}", {}),
        ("DELETE", f"/agents/{agent_name}", {}),
        ("POST", f"/agents/{agent_name}/act", {"json": [0.0, 0.0, 0.0, 0.0]}),
        ("POST", f"/agents/{agent_name}/step", {"json": {"step_data": make_step()}}),
        ("POST", f"/agents/{agent_name}/steps", {"json": {"producer_id": "p", "first_seq": 3, "steps": [make_step()]}}),
        ("GET", f"/agents/{agent_name}/steps", {}),
        ("GET", f"/agents/{agent_name}/producers/p", {}),
        ("GET", f"/agents/{agent_name}/loss", {}),
        ("GET", f"/snapshots/{agent_name}", {}),
    ]:
        assert_detail(other_api.request(method, path, **kwargs), 404)
    # bob may create an agent of the same name: names are per account
    other_api.create_agent(agent_name)
    assert api.agent(agent_name)["steps_received"] == 3
    assert other_api.agent(agent_name)["steps_received"] == 0


# -- act, step, loss ---------------------------------------------------------------------------


def test_act_discrete(api: Api, agent_name):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=3)
    # The published client sends the observation as the raw JSON body and noise as a query parameter.
    for noise in (0, 0.5, 1.0):
        resp = api.post(f"/agents/{agent_name}/act", params={"noise": noise}, json=[0.1, -0.2, 0.3, 0.0])
        assert resp.status_code == 200, resp.text
        action = resp.json()["action"]
        assert isinstance(action, list) and len(action) == 1 and type(action[0]) is int and 0 <= action[0] < 3


@pytest.mark.parametrize("model", ["ppo", "ddpg"])
def test_act_continuous(api: Api, agent_name, model):
    api.create_agent(agent_name, model, obs_size=3, action_size=2)
    resp = api.post(f"/agents/{agent_name}/act", params={"noise": 0.1}, json=[0.1, 0.2, 0.3])
    assert resp.status_code == 200, resp.text
    action = resp.json()["action"]
    assert len(action) == 2 and all(isinstance(a, float) and math.isfinite(a) for a in action)


def test_act_rainbow(api: Api, agent_name):
    api.create_agent(agent_name, "rainbow", obs_size=4, action_size=2)
    resp = api.post(f"/agents/{agent_name}/act", json=[0.1, 0.2, 0.3, 0.4])
    assert resp.status_code == 200 and resp.json()["action"][0] in (0, 1)


@pytest.mark.parametrize(
    "body, params",
    [
        ([0.1, 0.2, 0.3], {}),
        ([0.1, 0.2, 0.3, "x"], {}),
        ({"obs": [0.1, 0.2, 0.3, 0.4]}, {}),
        ([0.1, 0.2, 0.3, True], {}),
        ([0.1, 0.2, 0.3, 0.4], {"noise": "lots"}),
        ([0.1, 0.2, 0.3, 0.4], {"noise": "nan"}),
        ([0.1, 0.2, 0.3, 0.4], {"noise": "-1"}),
    ],
)
def test_act_bad_input_422(api: Api, agent_name, body, params):
    api.create_agent(agent_name)
    assert_detail(api.post(f"/agents/{agent_name}/act", json=body, params=params), 422)


def test_act_non_finite_observation_422(api: Api, agent_name):
    api.create_agent(agent_name)
    resp = api.post(f"/agents/{agent_name}/act", data=b"[NaN, 0, 0, 0]", headers={"Content-Type": "application/json"})
    assert_detail(resp, 422)


def test_legacy_step_is_logged(api: Api, agent_name):
    api.create_agent(agent_name)
    for i in range(3):
        resp = api.post(f"/agents/{agent_name}/step", json={"step_data": make_step(i)})
        assert resp.status_code == 200, resp.text
    assert api.agent(agent_name)["steps_received"] == 3
    log = api.log(agent_name)
    assert [e["step"]["obs"][0] for e in log] == [0.0, 1.0, 2.0]
    assert all(e["producer_id"] is None and e["seq"] is None for e in log)


@pytest.mark.parametrize(
    "body",
    [
        {"step": make_step()},
        {"step_data": {**make_step(), "action": [2]}},
        {"step_data": {**make_step(), "obs": [1.0]}},
        {"step_data": {**make_step(), "done": 1}},
        {"step_data": {k: v for k, v in make_step().items() if k != "reward"}},
        {"step_data": "step"},
    ],
    ids=["no-step_data", "action-range", "obs-size", "done-int", "no-reward", "string"],
)
def test_legacy_step_bad_422(api: Api, agent_name, body):
    api.create_agent(agent_name)
    assert_detail(api.post(f"/agents/{agent_name}/step", json=body), 422)
    assert api.agent(agent_name)["steps_received"] == 0


def test_loss_is_a_dict_of_floats(api: Api, agent_name):
    api.create_agent(agent_name)
    resp = api.get(f"/agents/{agent_name}/loss")
    assert resp.status_code == 200
    assert all(isinstance(v, float) and math.isfinite(v) for v in resp.json().values())


# -- snapshots ---------------------------------------------------------------------------------

SNAPSHOT_FIELDS = {"model", "obs_size", "action_size", "encoded_config", "encoded_network", "encoded_buffer"}


@pytest.mark.parametrize("model", ["dqn", "ppo", "ddpg", "rainbow"])
def test_snapshot_round_trip(api: Api, agent_name, model):
    discrete = model in ("dqn", "rainbow")
    api.create_agent(agent_name, model, obs_size=4, action_size=2)
    api.send_steps(agent_name, "p", 0, make_steps(0, 5, discrete=discrete, action=None if discrete else [0.5, -0.5]))
    resp = api.get(f"/snapshots/{agent_name}")
    assert resp.status_code == 200
    snap = resp.json()
    assert set(snap) == SNAPSHOT_FIELDS
    assert snap["model"] == model and snap["obs_size"] == 4 and snap["action_size"] == 2
    assert all(isinstance(snap[k], str) for k in SNAPSHOT_FIELDS - {"obs_size", "action_size"})
    resp = api.post(f"/snapshots/{agent_name}", json=snap)
    assert resp.status_code == 200, resp.text
    # Acting still works with the uploaded weights.
    assert api.post(f"/agents/{agent_name}/act", json=[0.0, 0.1, 0.2, 0.3]).status_code == 200


def test_snapshot_from_other_shape_refused(api: Api, agent_name):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    api.create_agent(agent_name + "-big", "dqn", obs_size=4, action_size=2, hidden_layers=[8])
    snap = api.get(f"/snapshots/{agent_name}-big").json()
    assert_detail(api.post(f"/snapshots/{agent_name}", json=snap), 422)
    snap = api.get(f"/snapshots/{agent_name}").json()
    assert_detail(api.post(f"/snapshots/{agent_name}", json={**snap, "action_size": 3}), 422)
    assert_detail(api.post(f"/snapshots/{agent_name}", json={**snap, "model": "ppo"}), 422)
    assert_detail(api.post(f"/snapshots/{agent_name}", json={**snap, "encoded_network": "%%%"}), 422)
    missing = dict(snap)
    del missing["encoded_buffer"]
    assert_detail(api.post(f"/snapshots/{agent_name}", json=missing), 422)


# -- Part 2, read side -------------------------------------------------------------------------


def test_stream_info_needs_no_auth(anon_api: Api):
    resp = anon_api.get("/stream/info")
    assert resp.status_code == 200
    info = resp.json()
    assert info["protocol"] == 1
    assert info["max_batch_steps"] >= 1000 and info["max_batch_bytes"] >= 2**20


def test_producer_position(api: Api, agent_name):
    api.create_agent(agent_name)
    assert api.get(f"/agents/{agent_name}/producers/fresh-1").json() == {"acked_seq": -1}
    api.send_steps(agent_name, "fresh-1", 0, make_steps(0, 7))
    assert api.get(f"/agents/{agent_name}/producers/fresh-1").json() == {"acked_seq": 6}
    assert_detail(api.get(f"/agents/{agent_name}/producers/bad%20id"), 422)
    assert_detail(api.get(f"/agents/{agent_name}/producers/" + "x" * 65), 422)


def test_log_paging(api: Api, agent_name):
    api.create_agent(agent_name)
    api.send_steps(agent_name, "a", 0, make_steps(0, 10))
    api.post(f"/agents/{agent_name}/step", json={"step_data": make_step(10)})
    api.send_steps(agent_name, "b", 0, make_steps(11, 10))
    page = api.get(f"/agents/{agent_name}/steps", params={"start": 8, "limit": 5}).json()
    assert [(e["producer_id"], e["seq"]) for e in page["steps"]] == [
        ("a", 8),
        ("a", 9),
        (None, None),
        ("b", 0),
        ("b", 1),
    ]
    assert page["next"] == 13
    last = api.get(f"/agents/{agent_name}/steps", params={"start": 13, "limit": 100}).json()
    assert len(last["steps"]) == 8 and last["next"] is None
    assert api.get(f"/agents/{agent_name}/steps", params={"start": 500}).json() == {"steps": [], "next": None}
    assert [e["step"]["obs"][0] for e in api.log(agent_name, page=3)] == [float(i) for i in range(21)]
    for params in ({"start": -1}, {"limit": 0}, {"limit": "many"}, {"limit": 10**6}):
        assert_detail(api.get(f"/agents/{agent_name}/steps", params=params), 422)
