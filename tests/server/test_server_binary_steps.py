"""The binary step encoding of ``POST /agents/{name}/steps`` (issue 12), against the real server.

Bodies are built by tests/support/binary_steps.py, a small encoder written from docs/protocol.md.
"""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from support.api import Api, make_steps, wait_for
from support.binary_steps import MEDIA_TYPE, Body, compress, decode, encode, headers, pack

pytestmark = pytest.mark.timeout(120)

OBS = 12
DTYPES = ["|u1", "|i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8"]
SHAPES = [(12,), (3, 4), (2, 3, 2)]


def _values(dtype: np.dtype, rng: np.random.Generator, count: int) -> np.ndarray:
    """Values that a lossy path would change: extremes of the dtype, odd fractions, subnormals."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=count, dtype=dtype, endpoint=True)
        values[:2] = [info.min, info.max]
        return values
    values = (rng.standard_normal(count) * 1e3).astype(dtype)
    finfo = np.finfo(dtype)
    values[:3] = [finfo.max if dtype.itemsize < 8 else 3.4028234663852886e38, finfo.smallest_subnormal, -finfo.tiny]
    values[3] = dtype.type(1) / dtype.type(3)
    return values


def _frames(dtype: str, shape: tuple, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    return [_values(dt, rng, OBS).reshape(shape) for _ in range(count + 1)]


def _steps(frames: list[np.ndarray], action_dtype: str | None) -> list[dict]:
    """Steps whose next_obs is the next step's obs: the same array object, so the encoder shares its bytes."""
    out = []
    for i in range(len(frames) - 1):
        action = np.array([i % 2], dtype=action_dtype) if action_dtype else [i % 2]
        out.append({"obs": frames[i], "action": action, "reward": 0.5 * i, "next_obs": frames[i + 1],
                    "done": i % 3 == 2})
    return out


def _post(api: Api, name: str, body: bytes, **kw) -> object:
    return api.post(f"/agents/{name}/steps", data=body, headers=headers(**kw))


def _same(sent: np.ndarray, logged: list) -> bool:
    """Bit-exact: the logged JSON numbers, read back into the sent dtype, have the sent bytes."""
    back = np.array(logged, dtype=np.float64 if sent.dtype.kind == "f" else np.int64)
    if sent.dtype.kind == "f":
        # Exactly the float64 value of each float16/32 number, not merely something that rounds to it.
        if not np.array_equal(back, sent.ravel().astype(np.float64)):
            return False
    return back.astype(sent.dtype).tobytes() == np.ascontiguousarray(sent).tobytes() and len(logged) == sent.size


def test_stream_info_advertises_the_encoding(api: Api):
    info = api.get("/stream/info").json()
    assert info["step_encodings"] == [MEDIA_TYPE]
    assert info["content_encodings"] == ["zstd"]


def test_a_json_steps_only_server_neither_advertises_nor_takes_the_encoding(server_factory, user, agent_name):
    """serve --json-steps-only: a server from before the binary steps, for testing clients against one."""
    from support.api import login

    srv = server_factory(extra_args=["--json-steps-only"], name="json-only")
    api = Api(srv.url, login(srv.url, *user))
    info = api.get("/stream/info").json()
    assert "step_encodings" not in info and "content_encodings" not in info and info["protocol"] == 1
    api.create_agent(agent_name, "dqn", obs_size=OBS, action_size=2)
    frames = _frames("uint8", SHAPES[0], 2, seed=0)
    resp = _post(api, agent_name, encode("bin", 0, _steps(frames, None)))
    assert resp.status_code == 415 and "JSON" in resp.json()["detail"], resp.text
    assert api.send_steps(agent_name, "p", 0, make_steps(0, 2, obs_size=OBS)).status_code == 200
    assert api.agent(agent_name)["steps_received"] == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_and_shape_round_trips_bit_exact(api: Api, agent_name, dtype):
    api.create_agent(agent_name, "dqn", obs_size=OBS, action_size=2)
    sent = []
    seq = 0
    for k, shape in enumerate(SHAPES):
        frames = _frames(dtype, shape, 4, seed=k)
        action_dtype = dtype if np.dtype(dtype).kind in "iu" else None  # a discrete action is an integer
        steps = _steps(frames, action_dtype)
        body = encode("bin", seq, steps)
        # The shared bytes: 5 frames stored once each, not 8.
        assert len(body) < 8 + 2000 + 5 * OBS * np.dtype(dtype).itemsize + 1
        resp = _post(api, agent_name, compress(body) if k % 2 else body, zstd=bool(k % 2))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"acked_seq": seq + 3, "applied": 4, "duplicates": 0}
        sent.extend(steps)
        seq += 4
    # A repeat of the last batch is counted as duplicates, not applied again.
    again = _post(api, agent_name, encode("bin", seq - 4, sent[-4:]))
    assert again.json() == {"acked_seq": seq - 1, "applied": 0, "duplicates": 4}
    log = api.log(agent_name)
    assert [e["seq"] for e in log] == list(range(seq)) and api.agent(agent_name)["steps_received"] == seq
    for entry, step in zip(log, sent, strict=True):
        got = entry["step"]
        assert set(got) == {"obs", "action", "reward", "next_obs", "done"}
        assert _same(step["obs"], got["obs"]) and _same(step["next_obs"], got["next_obs"]), (dtype, got["obs"])
        action = step["action"]
        assert got["action"] == (action.tolist() if isinstance(action, np.ndarray) else action)
        assert type(got["action"][0]) is int
        assert got["reward"] == step["reward"] and got["done"] == step["done"]


def test_json_and_binary_steps_in_one_log(api: Api, agent_name):
    """JSON bodies work as before on the same agent; their log entries are what was sent."""
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    json_steps = make_steps(0, 3)
    assert api.send_steps(agent_name, "p", 0, json_steps).status_code == 200
    frames = [np.arange(4, dtype=np.float32) + i for i in range(3)]
    bin_steps = _steps(frames, None)
    assert _post(api, agent_name, encode("p", 3, bin_steps)).json()["applied"] == 2
    # A JSON body sent without a Content-Type (as bytes) is still JSON.
    body = orjson.dumps({"producer_id": "p", "first_seq": 5, "steps": make_steps(5, 1)})
    resp = api.post(f"/agents/{agent_name}/steps", data=body, headers={"Content-Type": None})
    assert resp.status_code == 200, resp.text
    # A JSON body may be zstd-compressed too.
    body = orjson.dumps({"producer_id": "p", "first_seq": 6, "steps": make_steps(6, 2)})
    resp = api.post(f"/agents/{agent_name}/steps", data=compress(body),
                    headers={"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "zstd"})
    assert resp.status_code == 200 and resp.json()["applied"] == 2, resp.text
    log = [e["step"] for e in api.log(agent_name)]
    assert log[:3] == json_steps and log[5:] == make_steps(5, 3)
    assert log[3]["obs"] == [0.0, 1.0, 2.0, 3.0] and log[4]["next_obs"] == [2.0, 3.0, 4.0, 5.0]


def _good_header(ref: dict) -> bytes:
    step = {"obs": ref, "action": [0], "reward": 0.0, "next_obs": ref, "done": False}
    return orjson.dumps({"producer_id": "bad", "first_seq": 0, "steps": [step]})


_DATA = np.arange(4, dtype="<f4").tobytes()
_REF = {"dtype": "<f4", "shape": [4], "offset": 0, "nbytes": 16}
MALFORMED = {
    "bad-magic": (pack(_good_header(_REF), _DATA, magic=b"ABS2"), "must start with"),
    "too-short": (b"ABS1\x01", "shorter"),
    "header-past-end": (b"ABS1" + struct.pack("<I", 10_000) + b"{}", "past the end"),
    "header-not-json": (pack(b"{not json", _DATA), "not valid UTF-8 JSON"),
    "header-not-utf8": (pack(b'{"a": "\xff"}', _DATA), "not valid UTF-8 JSON"),
    "header-not-object": (pack(b"[1, 2]", _DATA), "producer_id"),
    "unknown-dtype": (pack(_good_header({**_REF, "dtype": ">f4"}), _DATA), "dtype"),
    "dtype-not-string": (pack(_good_header({**_REF, "dtype": 4}), _DATA), "dtype"),
    "shape-not-list": (pack(_good_header({**_REF, "shape": 4}), _DATA), "shape"),
    "shape-negative": (pack(_good_header({**_REF, "shape": [-4]}), _DATA), "shape"),
    "shape-bool": (pack(_good_header({**_REF, "shape": [True, 4]}), _DATA), "shape"),
    "nbytes-wrong": (pack(_good_header({**_REF, "nbytes": 12}), _DATA), "nbytes"),
    "offset-past-end": (pack(_good_header({**_REF, "offset": 4}), _DATA), "past the end"),
    "offset-negative": (pack(_good_header({**_REF, "offset": -1}), _DATA), "offset"),
    "offset-float": (pack(_good_header({**_REF, "offset": 0.0}), _DATA), "offset"),
    "extra-key": (pack(_good_header({**_REF, "order": "F"}), _DATA), "keys"),
    "missing-key": (pack(_good_header({k: v for k, v in _REF.items() if k != "nbytes"}), _DATA), "keys"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_body_is_422_and_nothing_applied(api: Api, agent_name, case):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    body, words = MALFORMED[case]
    for zstd in (False, True):
        resp = _post(api, agent_name, compress(body) if zstd else body, zstd=zstd)
        assert resp.status_code == 422, resp.text
        detail = resp.json()["detail"]
        assert isinstance(detail, str) and words in detail, detail
        assert "index" not in resp.json()  # the body is refused whole, not one step
    assert api.agent(agent_name)["steps_received"] == 0
    assert api.get(f"/agents/{agent_name}/producers/bad").json()["acked_seq"] == -1


@pytest.mark.parametrize(
    ("content_type", "encoding", "status", "words"),
    [
        ("text/plain", None, 415, "Content-Type"),
        ("application/x-www-form-urlencoded", None, 415, "Content-Type"),
        (MEDIA_TYPE, "gzip", 415, "Content-Encoding"),
        (MEDIA_TYPE, "zstd", 400, "zstd"),  # not a zstd frame
        ("application/json", "zstd", 400, "zstd"),
    ],
)
def test_unknown_types_and_bad_zstd(api: Api, agent_name, content_type, encoding, status, words):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    body = encode("p", 0, _steps([np.zeros(4, np.float32)] * 2, None))
    hdrs = {"Content-Type": content_type}
    if encoding:
        hdrs["Content-Encoding"] = encoding
    resp = api.post(f"/agents/{agent_name}/steps", data=body, headers=hdrs)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["detail"]
    assert api.agent(agent_name)["steps_received"] == 0


def test_truncated_zstd_frame_is_refused(api: Api, agent_name):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    body = compress(encode("p", 0, _steps([np.random.default_rng(1).random(4).astype(np.float32)] * 2, None)))
    resp = _post(api, agent_name, body[: len(body) // 2], zstd=True)
    assert resp.status_code in (400, 422), resp.text
    assert "detail" in resp.json()
    assert api.agent(agent_name)["steps_received"] == 0


def test_zstd_bomb_is_413(api: Api, agent_name):
    """A few KB that decompress to 64 MiB: refused once the output passes max_batch_bytes."""
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    limit = api.get("/stream/info").json()["max_batch_bytes"]
    header = _good_header(_REF)
    bomb = compress(pack(header, _DATA + bytes(64 * 2**20)), level=1)
    assert len(bomb) < 64 * 1024
    resp = _post(api, agent_name, bomb, zstd=True)
    assert resp.status_code == 413, resp.text
    assert resp.json()["max_batch_bytes"] == limit and "decompressed" in resp.json()["detail"]
    # Just over the limit after decompression is refused too; just under it is taken.
    over = compress(pack(header, _DATA + bytes(limit - len(header) - 8 - len(_DATA) + 1)))
    assert _post(api, agent_name, over, zstd=True).status_code == 413
    under = compress(pack(header, _DATA + bytes(limit - len(header) - 8 - len(_DATA))))
    assert _post(api, agent_name, under, zstd=True).status_code == 200
    assert api.agent(agent_name)["steps_received"] == 1


@pytest.mark.parametrize(
    ("make_bad", "words"),
    [
        (lambda s: {**s, "obs": np.array([0.0, np.nan, 0.0, 0.0], np.float32)}, "obs[1] is not a number"),
        (lambda s: {**s, "next_obs": np.array([0.0, 0.0, np.inf, 0.0], np.float16)}, "next_obs[2]"),
        (lambda s: {**s, "obs": np.array([0.0, 1e39, 0.0, 0.0], np.float64)}, "out of range"),
        (lambda s: {**s, "obs": np.zeros(5, np.float32)}, "must have 4 numbers"),
        (lambda s: {**s, "obs": np.zeros(4, np.bool_)}, "booleans are not numbers"),
        (lambda s: {**s, "action": np.array([1.0], np.float32)}, "action of a discrete agent"),
        (lambda s: {**s, "action": np.array([2], np.int64)}, "out of range"),
        (lambda s: {**s, "action": np.array([0, 1], np.int8)}, "action of a discrete agent"),
        (lambda s: {**s, "done": 1}, "done must be"),
    ],
)
def test_invalid_step_in_binary_body_is_422_with_index(api: Api, agent_name, make_bad, words):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    steps = _steps([np.full(4, i, np.float32) for i in range(4)], None)
    steps[1] = make_bad(steps[1])
    resp = _post(api, agent_name, encode("p", 0, steps))
    assert resp.status_code == 422, resp.text
    assert resp.json()["index"] == 1 and words in resp.json()["detail"], resp.json()
    assert api.agent(agent_name)["steps_received"] == 0


def test_obs_shape_and_dtype_in_config(api: Api, agent_name):
    created = api.create_agent(agent_name, "dqn", obs_size=24, action_size=2, obs_shape=[2, 3, 4], obs_dtype="uint8")
    assert created["config"]["obs_shape"] == [2, 3, 4] and created["config"]["obs_dtype"] == "uint8"
    assert api.agent(agent_name)["config"]["obs_shape"] == [2, 3, 4]
    frame = np.arange(24, dtype=np.uint8)
    good = [{"obs": frame.reshape(2, 3, 4), "action": [0], "reward": 0, "next_obs": frame, "done": False}]
    assert _post(api, agent_name, encode("p", 0, good)).status_code == 200  # its shape, or flat
    for obs, words in ((frame.reshape(4, 6), "shape [4, 6]"), (frame.astype(np.int16), "dtype <i2")):
        bad = [{**good[0], "obs": obs}]
        resp = _post(api, agent_name, encode("p", 1, bad))
        assert resp.status_code == 422 and resp.json()["index"] == 0, resp.text
        assert words in resp.json()["detail"] and ("[2, 3, 4]" in resp.json()["detail"]
                                                  or "uint8" in resp.json()["detail"]
                                                  or "|u1" in resp.json()["detail"]), resp.json()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"obs_size": 24, "obs_shape": [2, 3, 5]}, "obs_size"),
        ({"obs_size": 24, "obs_shape": [24, 0]}, "obs_shape"),
        ({"obs_size": 24, "obs_shape": "24"}, "obs_shape"),
        ({"obs_size": 24, "obs_dtype": "uint9"}, "obs_dtype"),
        ({"obs_size": 100_000}, "obs_size"),
    ],
)
def test_bad_obs_layout_is_422(api: Api, agent_name, config, words):
    resp = api.post("/agents/", json={"name": agent_name, "model": "dqn", "config": {"action_size": 2, **config}})
    assert resp.status_code == 422, resp.text
    assert words in resp.json()["detail"]


@pytest.mark.parametrize(
    ("model", "config", "key"),
    [
        ("dqn", {}, "buffer_size"),  # the default 100,000 camera frames: ~22.7 GB
        ("rainbow", {"buffer_size": 20_000}, "buffer_size"),
        # one update a rollout and a 1-unit network keep the learning step's cost under its cap
        ("ppo", {"rollout_length": 40_000, "batch_size": 64, "hidden_layers": [1], "actor_number_updates": 1,
                 "critic_number_updates": 1}, "rollout_length"),
    ],
)
def test_buffer_over_the_byte_cap_is_422(api: Api, agent_name, model, config, key):
    from agents_bar_stream.server.learner import MAX_BUFFER_BYTES

    body = {"name": agent_name, "model": model,
            "config": {"obs_size": 28_224, "action_size": 2, "hidden_layers": [16], **config}}
    resp = api.post("/agents/", json=body)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert f"{MAX_BUFFER_BYTES:,}" in detail and key in detail and "bytes" in detail, detail
    # The same config with a buffer that fits is taken: the refusal was the bytes, nothing else.
    fits = {**body["config"], key: 1000}
    fits.pop("obs_size"), fits.pop("action_size")
    api.create_agent(agent_name, model, obs_size=28_224, action_size=2, **fits)


@pytest.mark.timeout(240)
def test_camera_dqn_learns_from_binary_frames_and_acts(api: Api, agent_name):
    """84x84x4 uint8 frames through the binary encoding: an MLP DQN learns from them and acts."""
    shape = (84, 84, 4)
    api.create_agent(agent_name, "dqn", obs_size=28_224, action_size=3, obs_shape=list(shape), obs_dtype="uint8",
                     hidden_layers=[16], batch_size=8, buffer_size=500)
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(41)]
    steps = [{"obs": frames[i], "action": [i % 3], "reward": float(i % 2), "next_obs": frames[i + 1],
              "done": i % 10 == 9} for i in range(40)]
    for first in (0, 20):
        body = Body().encode({"producer_id": "cam", "first_seq": first, "steps": steps[first:first + 20]})
        resp = _post(api, agent_name, compress(body), zstd=True)
        assert resp.status_code == 200 and resp.json()["applied"] == 20, resp.text
    info = wait_for(lambda: (a := api.agent(agent_name))["steps_learned"] >= 40 and a, 120,
                    message="the camera agent to learn 40 steps")
    assert info["learn_errors"] == 0
    loss = api.get(f"/agents/{agent_name}/loss").json()
    assert loss and all(np.isfinite(v) for v in loss.values()), loss
    resp = api.post(f"/agents/{agent_name}/act", params={"noise": 0}, json=frames[5].ravel().tolist())
    assert resp.status_code == 200, resp.text
    assert resp.json()["action"][0] in (0, 1, 2)
    # The log hands back the frames' integers; a page holds fewer camera steps than asked.
    page = api.get(f"/agents/{agent_name}/steps", params={"start": 0, "limit": 1000}).json()
    assert 1 <= len(page["steps"]) < 40 and page["next"] == len(page["steps"])
    assert page["steps"][0]["step"]["obs"] == frames[0].ravel().tolist()
    assert [e["step"]["next_obs"] == frames[i + 1].ravel().tolist() for i, e in enumerate(api.log(agent_name))] \
        == [True] * 40
    # On request (Accept), the same page in the binary encoding: the frames as bytes, dtype and shape.
    resp = api.get(f"/agents/{agent_name}/steps", params={"start": 0, "limit": 1000}, headers={"Accept": MEDIA_TYPE})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(MEDIA_TYPE)
    doc = decode(resp.content)
    assert doc["next"] == page["next"] and [e["seq"] for e in doc["steps"]] == list(range(len(page["steps"])))
    for i, entry in enumerate(doc["steps"]):
        got = entry["step"]
        assert got["obs"].dtype == np.uint8 and got["obs"].shape == shape
        assert got["obs"].tobytes() == frames[i].tobytes() and got["next_obs"].tobytes() == frames[i + 1].tobytes()
        assert got["action"] == [i % 3] and got["reward"] == float(i % 2)
    # next_obs of step i and obs of step i+1 are one frame in the page too (within each stored batch:
    # the two batches' boundary frame is written twice).
    assert len(resp.content) < (len(doc["steps"]) + 2) * 28_224 + 20_000


@pytest.mark.timeout(180)
@pytest.mark.parametrize("model", ["dqn", "rainbow", "ddpg", "ppo"])
def test_every_model_learns_from_binary_float32_steps(api: Api, agent_name, model):
    """The learners take the arrays of the log (float32 built from the bytes) for every model."""
    discrete = model in ("dqn", "rainbow")
    config = {"hidden_layers": [8], "batch_size": 4}
    if model == "ppo":
        config["rollout_length"] = 8
    else:
        config["buffer_size"] = 100
    api.create_agent(agent_name, model, obs_size=6, action_size=2, obs_shape=[2, 3], **config)
    rng = np.random.default_rng(5)
    frames = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(31)]
    steps = []
    for i in range(30):
        action = np.array([i % 2], np.int32) if discrete else rng.uniform(-1, 1, 2).astype(np.float32)
        steps.append({"obs": frames[i], "action": action, "reward": float(rng.standard_normal()),
                      "next_obs": frames[i + 1], "done": i % 10 == 9})
    resp = _post(api, agent_name, compress(encode("m", 0, steps)), zstd=True)
    assert resp.status_code == 200 and resp.json()["applied"] == 30, resp.text
    info = wait_for(lambda: (a := api.agent(agent_name))["steps_learned"] >= 30 and a, 120,
                    message=f"the {model} agent to learn 30 steps")
    assert info["learn_errors"] == 0
    act = api.post(f"/agents/{agent_name}/act", json=frames[3].ravel().tolist())
    assert act.status_code == 200, act.text


def test_camera_agent_takes_json_steps_and_the_legacy_step(api: Api, agent_name):
    """Old clients send a camera frame as JSON numbers in full precision: bodies over 1 MiB are taken."""
    api.create_agent(agent_name, "dqn", obs_size=28_224, action_size=2, hidden_layers=[8], buffer_size=100)
    rng = np.random.default_rng(9)
    obs = (rng.random(28_224) / 3).tolist()  # ~20 characters a number
    step = {"obs": obs, "action": [1], "reward": 0.1, "next_obs": obs[::-1], "done": False}
    body = orjson.dumps({"step_data": step})
    assert len(body) > 2**20
    resp = api.post(f"/agents/{agent_name}/step", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert api.send_steps(agent_name, "j", 0, [step]).status_code == 200
    log = api.log(agent_name)
    assert [e["step"] for e in log] == [step, step]


def test_too_many_steps_is_413_before_anything_else(api: Api, agent_name):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    most = api.get("/stream/info").json()["max_batch_steps"]
    bad_ref = {**_REF, "dtype": "?"}
    step = {"obs": bad_ref, "action": [0], "reward": 0.0, "next_obs": bad_ref, "done": False}
    header = orjson.dumps({"producer_id": "p", "first_seq": 0, "steps": [step] * (most + 1)})
    resp = _post(api, agent_name, pack(header, _DATA))
    assert resp.status_code == 413 and resp.json()["max_batch_steps"] == most, resp.text


def test_zstd_frame_asking_for_a_huge_window_is_refused(api: Api, agent_name):
    """A frame whose window (memory the decoder allocates up front) exceeds max_batch_bytes is a 400."""
    import zstandard

    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()  # streamed: no size, window kept
    body = encode("p", 0, _steps([np.zeros(4, np.float32)] * 2, None))
    frame = cobj.compress(body) + cobj.flush()
    resp = _post(api, agent_name, frame, zstd=True)
    assert resp.status_code == 400, resp.text
    assert "zstd" in resp.json()["detail"]
    # The same body in an ordinary frame is taken.
    assert _post(api, agent_name, compress(body), zstd=True).status_code == 200


@pytest.mark.timeout(180)
def test_snapshot_of_a_camera_agent_carries_fewer_steps_and_loads_back(api: Api, agent_name):
    """The snapshot's buffer holds the latest steps up to MAX_LOG_NUMBERS numbers, as flat JSON lists."""
    import base64

    from agents_bar_stream.server.limits import MAX_LOG_NUMBERS

    api.create_agent(agent_name, "dqn", obs_size=28_224, action_size=2, hidden_layers=[4], buffer_size=100)
    rng = np.random.default_rng(11)
    frames = [rng.integers(0, 256, size=(84, 84, 4), dtype=np.uint8) for _ in range(61)]
    steps = _steps(frames, "|u1")
    assert _post(api, agent_name, compress(encode("s", 0, steps)), zstd=True).status_code == 200
    snap = api.get(f"/snapshots/{agent_name}")
    assert snap.status_code == 200, snap.text
    buffer = orjson.loads(base64.b64decode(snap.json()["encoded_buffer"]))["steps"]
    kept = MAX_LOG_NUMBERS // (2 * 28_224 + 2 + 2)
    assert len(buffer) == kept < 60
    assert buffer[-1]["obs"] == frames[59].ravel().tolist() and buffer[-1]["action"] == [1]
    assert api.post(f"/snapshots/{agent_name}", json=snap.json()).status_code == 200
