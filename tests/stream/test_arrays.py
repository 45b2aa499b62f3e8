"""Numpy observations (issue 12): step() checks, the queue's ABQ3 segments, the binary body and the JSON fallback.

Real parts throughout: real queues in tmp dirs, the real server in its own process. Today's server
does not advertise the binary encoding, so end to end these steps go as JSON lists; the binary body
is checked here with a small decoder of its own (the server's decoder is the server side's work).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import orjson
import pytest
import zstandard
from support import binary_steps
from support.stream import api_for

from agents_bar_stream import InvalidStepError, QueueFullError
from agents_bar_stream.protocol import StepEncoder
from agents_bar_stream.segment import SegmentDamaged, decode_segment, encode_segment, unchecked_items
from agents_bar_stream.storage import DiskQueue
from agents_bar_stream.wire import binary_body, item_to_json, json_body

pytestmark = pytest.mark.timeout(60)  # the tests against the server say their own

DTYPES = ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


def frames(dtype: str, shape: tuple, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count + 1`` observations of ``shape`` spanning the dtype's range (extremes included); float64
    holds values that float32 cannot represent exactly, within float32's range."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    out = []
    for k in range(count + 1):
        if dt.kind == "f":
            top = float(np.finfo(np.float32).max) if dt.itemsize >= 4 else float(np.finfo(dt).max)
            a = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).clip(-top, top).astype(dt)
            flat = a.reshape(-1)
            flat[:4] = [top, -top, -0.0, np.finfo(dt).smallest_subnormal]
            if dt == np.float64:
                flat[4] = 0.1  # not a float32
        else:
            info = np.iinfo(dt)
            # int64 within +-2**53: the server keeps numbers as JSON floats past that (today's log format).
            lo, hi = (max(info.min, -(2**53)), min(info.max, 2**53))
            a = rng.integers(lo, hi, shape, dtype=dt, endpoint=True)
            a.reshape(-1)[:2] = [lo, hi]
        a.reshape(-1)[-1] = k  # which step this is
        out.append(a)
    return out


# --- step(): what is refused, at C speed ---------------------------------------------------------


def test_wrong_shape_or_dtype_names_both():
    enc = StepEncoder(obs_size=28224, action_size=4, discrete=True, confirmed=True)
    frame = np.zeros((84, 84, 4), np.uint8)
    enc.encode(frame, 1, 0.0, frame, False)
    with pytest.raises(InvalidStepError, match=r"shape \(4, 84, 84\), expected \(84, 84, 4\)"):
        enc.encode(frame.reshape(4, 84, 84), 1, 0.0, frame.reshape(4, 84, 84), False)
    with pytest.raises(InvalidStepError, match="dtype float32, expected uint8"):
        enc.encode(frame.astype(np.float32), 1, 0.0, frame.astype(np.float32), False)
    with pytest.raises(InvalidStepError, match=r"28224 numbers .*got shape \(84, 84, 3\)"):
        enc.encode(frame[..., :3], 1, 0.0, frame[..., :3], False)
    with pytest.raises(InvalidStepError, match=r"same shape, got \(84, 84, 4\) and \(84, 84, 3\)"):
        enc.encode(frame, 1, 0.0, frame[..., :3], False)
    # The same shape and dtype still pass after the refusals (a refused step teaches nothing).
    enc.encode(frame, np.int64(3), np.float32(1.0), frame, np.bool_(True))


def test_agent_with_only_obs_size_takes_any_shape_of_that_many_then_holds_it():
    enc = StepEncoder(obs_size=28224, action_size=4, discrete=True, confirmed=True)
    flat = np.zeros(28224, np.uint8)
    enc.encode(flat.reshape(84, 84, 4), 0, 0.0, flat.reshape(84, 84, 4), False)
    assert enc.obs_shape == (84, 84, 4) and enc.obs_dtype == "|u1"
    with pytest.raises(InvalidStepError, match=r"shape \(28224,\), expected \(84, 84, 4\)"):
        enc.encode(flat, 0, 0.0, flat, False)
    # An agent whose config declares the shape holds steps to it from the first one.
    declared = StepEncoder(obs_size=28224, action_size=4, discrete=True, confirmed=True, obs_shape=(4, 84, 84))
    with pytest.raises(InvalidStepError, match=r"expected \(4, 84, 84\)"):
        declared.encode(flat.reshape(84, 84, 4), 0, 0.0, flat.reshape(84, 84, 4), False)


@pytest.mark.parametrize("shape", [(3,), (200,), (8, 8, 2)])  # a small array goes as a list, a large one as bytes
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nan_infinity_and_beyond_float32_are_refused(shape, dtype):
    for bad, what in ((np.nan, "NaN"), (np.inf, "out of range"), (-np.inf, "out of range")):
        frame = np.ones(shape, dtype)
        frame.reshape(-1)[-1] = bad
        for obs, nxt in ((frame, np.ones(shape, dtype)), (np.ones(shape, dtype), frame)):
            with pytest.raises(InvalidStepError, match=what):
                StepEncoder().encode(obs, 0, 0.0, nxt, False)
    if dtype == "float64":
        frame = np.ones(shape, dtype)
        frame.reshape(-1)[0] = 1e39
        with pytest.raises(InvalidStepError, match="out of range"):
            StepEncoder().encode(frame, 0, 0.0, frame, False)


@pytest.mark.parametrize("dtype", ["bool", "uint16", "uint64", "complex64", "object"])
def test_dtypes_steps_cannot_carry_are_refused(dtype):
    frame = np.zeros((10, 10), dtype)
    with pytest.raises(InvalidStepError, match="bool array|which steps do not carry"):
        StepEncoder().encode(frame, 0, 0.0, frame, False)


def test_step_copies_the_arrays_bytes():
    """The user may reuse its buffer as soon as step() returns: the queued item is a copy."""
    enc = StepEncoder()
    frame = np.arange(300, dtype=np.int16).reshape(10, 30)
    item = enc.encode(frame, 1, 0.5, frame, False)
    frame[:] = -1
    assert orjson.loads(item_to_json(item))["obs"] == list(range(300))


def test_non_contiguous_and_big_endian_arrays_go_in_c_order_little_endian():
    enc = StepEncoder()
    base = np.arange(400, dtype=">f4").reshape(20, 20)
    view = base.T  # Fortran order and big-endian
    step = orjson.loads(item_to_json(enc.encode(view, 1, 0.0, view, False)))
    assert step["obs"] == np.ascontiguousarray(view).astype("<f4").reshape(-1).tolist()


# --- the binary body, with a decoder of our own --------------------------------------------------


def decode_body(body: bytes) -> dict:
    """The contract of docs/protocol.md, read independently of the encoder: header + references."""
    assert body[:4] == b"ABS1"
    (size,) = struct.unpack_from("<I", body, 4)
    header = orjson.loads(body[8:8 + size])
    data = body[8 + size:]
    for step in header["steps"]:
        for key in ("obs", "next_obs", "action"):
            ref = step[key]
            if isinstance(ref, dict):
                dt = np.dtype(ref["dtype"])
                assert ref["nbytes"] == int(np.prod(ref["shape"])) * dt.itemsize
                assert ref["offset"] + ref["nbytes"] <= len(data)
                step[key] = np.frombuffer(data, dt, int(np.prod(ref["shape"])), ref["offset"]).reshape(ref["shape"])
    header["data_bytes"] = len(data)
    return header


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (8, 8, 2), (84, 84, 4)])
def test_binary_body_round_trip_is_bit_exact_and_shares_repeated_frames(dtype, shape):
    if dtype in ("int64", "float64") and shape == (84, 84, 4):
        shape = (16, 16, 4)  # the same code path, a quarter of the memory
    obs = frames(dtype, shape, 6)
    enc = StepEncoder()
    items = [enc.encode(obs[k], k % 2, np.float32(k / 3), obs[k + 1], k == 5) for k in range(6)]
    items.insert(3, orjson.dumps({"obs": [1.0] * 4, "action": [0], "reward": 0, "next_obs": [2.0] * 4, "done": False}))
    body = binary_body("prod", 41, items)
    got = decode_body(body)
    assert (got["producer_id"], got["first_seq"], len(got["steps"])) == ("prod", 41, 7)
    steps = got["steps"][:3] + got["steps"][4:]
    assert got["steps"][3]["obs"] == [1.0] * 4  # a list step in between goes as it is
    for k, step in enumerate(steps):
        if np.prod(shape) < 64:  # small arrays are queued as lists: the same values
            assert step["obs"] == obs[k].reshape(-1).tolist()
            continue
        assert step["obs"].dtype == np.dtype(dtype) and step["obs"].shape == shape
        assert step["obs"].tobytes() == obs[k].tobytes() and step["next_obs"].tobytes() == obs[k + 1].tobytes()
        assert step["reward"] == np.float32(k / 3) and step["action"] == [k % 2] and step["done"] is (k == 5)
    if np.prod(shape) >= 64:
        # 6 steps, 7 distinct frames, the list step breaking the chain once: 8 frames' bytes, not 12.
        assert got["data_bytes"] == 8 * obs[0].nbytes
        # zstd, as the flusher sends it when the server takes it: the same body back.
        assert zstandard.ZstdDecompressor().decompress(zstandard.ZstdCompressor(level=1).compress(body)) == body


@pytest.mark.parametrize("dtype", DTYPES)
def test_json_fallback_holds_the_same_values(dtype):
    obs = frames(dtype, (8, 8, 2), 2)
    enc = StepEncoder()
    items = [enc.encode(obs[k], 0, 0.0, obs[k + 1], False) for k in range(2)]
    doc = orjson.loads(json_body("p", 1, items))
    for k, step in enumerate(doc["steps"]):
        assert np.array_equal(np.array(step["obs"], dtype=dtype), obs[k].reshape(-1))
        assert np.array(step["obs"], dtype=dtype).tobytes() == obs[k].tobytes()  # bit-exact (-0.0 included)


# --- the queue: version 3 segments --------------------------------------------------------------


def _array_items(n: int, shape=(84, 84, 4)) -> list[bytes]:
    rng = np.random.default_rng(1)
    enc = StepEncoder()
    obs = [rng.integers(0, 8, shape, dtype=np.uint8) for _ in range(n + 1)]
    return [enc.encode(obs[k], 1, 0.0, obs[k + 1], False) for k in range(n)]


def test_segment_v3_round_trip_compresses_repeated_frames_and_old_segments_still_read():
    items = _array_items(20)
    blob = encode_segment(items, 12.5)
    assert blob[:4] == b"ABQ3"
    assert decode_segment(blob) == (12.5, items)
    # Each frame is stored twice in the raw items (obs, then next_obs of the step before): zstd
    # keeps about one copy of each (3-bit noise: ~3/8 of a byte each).
    raw = sum(map(len, items))
    assert len(blob) < 0.3 * raw, (len(blob), raw)
    # A segment of list steps is written as before (version 2), and version 2 and 1 still read.
    lines = [b'{"obs":[1.0]}', b'{"obs":[2.0]}']
    v2 = encode_segment(lines, 3.0)
    assert v2[:4] == b"ABQ2" and decode_segment(v2) == (3.0, lines)
    body = b"\n".join(lines)
    v1 = struct.pack("<dI", 3.0, 2) + body
    assert decode_segment(v1) == (3.0, lines)
    assert [orjson.loads(x)["next_obs"][-1] for x in unchecked_items(blob)][:3] == [
        orjson.loads(item_to_json(i))["next_obs"][-1] for i in items[:3]]


def test_segment_v3_damage_is_detected():
    blob = bytearray(encode_segment(_array_items(3, (10, 10)), 1.0))
    flipped = bytearray(blob)
    flipped[-5] ^= 0x40
    with pytest.raises(SegmentDamaged, match="checksum"):
        decode_segment(bytes(flipped))
    with pytest.raises(SegmentDamaged, match="checksum"):
        decode_segment(bytes(blob[:-10]))
    # A header that counts one step more than the body holds (its CRC recomputed: the count check alone).
    magic, t, count, crc, raw_len, flags = struct.unpack_from("<4sdIIIB", blob)
    miscount = struct.pack("<4sdIIIB", magic, t, count + 1, crc, raw_len, flags) + bytes(blob[25:])
    with pytest.raises(SegmentDamaged, match="counts 4 steps, the body holds 3"):
        decode_segment(miscount)
    # Good CRC over a body that is not zstd at all.
    junk = b"not zstd" * 10
    fake = struct.pack("<4sdIIIB", b"ABQ3", 1.0, 1, zlib.crc32(junk), 100, 1) + junk
    with pytest.raises(SegmentDamaged, match="does not decompress"):
        decode_segment(fake)


def test_disk_queue_reads_v2_and_v3_segments_in_order(tmp_path):
    q = DiskQueue(tmp_path / "q")
    try:
        lists = [orjson.dumps({"obs": [float(i)] * 4, "action": [0], "reward": 0, "next_obs": [0.0] * 4,
                               "done": False}) for i in range(3)]
        arrays = _array_items(3, (10, 10))
        first = q.next_local
        q.write_segment(first, lists, 1.0)
        q.write_segment(first + 3, arrays, 2.0)
        batch = q.read_batch(100, 10**7)
        assert batch is not None and batch.items == lists + arrays
    finally:
        q.close()
    reopened = DiskQueue(tmp_path / "q")
    try:
        batch = reopened.read_batch(100, 10**7)
        assert batch is not None and batch.items == lists + arrays
    finally:
        reopened.close()


# --- end to end against the real server: its binary steps, and JSON lists to one without them ---------


@pytest.fixture(params=["binary", "json"])
def wire_server(request, server, server_factory):
    """``(wire, server)``: the shared server (it advertises the binary steps), or a private one run with
    ``--json-steps-only`` (a server from before them, which gets the arrays as flattened JSON lists)."""
    if request.param == "binary":
        return "binary", server
    return "json", server_factory(extra_args=["--json-steps-only"], name="json-only")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("durability", ["batch", "step"])
def test_every_dtype_round_trips_bit_exact_through_queue_wire_and_server_log(
        wire_server, user, agent_name, make_agent, durability):
    wire, server = wire_server
    api = api_for(server, user)
    shapes = {"uint8": (16, 16, 4), "float32": (8, 8, 2), "float16": (6,), "int64": (5, 13)}
    for dtype in DTYPES:
        shape = shapes.get(dtype, (8, 8, 2))
        name = f"{agent_name[:50]}-{dtype}"
        size = int(np.prod(shape))
        api.create_agent(name, obs_size=size, action_size=3)
        agent = make_agent(server, name, create=False, durability=durability, batch_size=3)
        obs = frames(dtype, shape, 7, seed=size)
        for k in range(7):
            assert agent.step(obs[k], np.int64(k % 3), np.float32(k / 7), obs[k + 1], np.bool_(k == 6))
        assert agent.flush(timeout=60), agent.stats
        log = api.log(name)  # flat JSON lists, whatever the wire was
        assert len(log) == 7, (dtype, len(log))
        for k, entry in enumerate(log):
            step = entry["step"]
            for key, want in (("obs", obs[k]), ("next_obs", obs[k + 1])):
                got = np.array(step[key], dtype=dtype)  # float32(x) of each logged value
                assert got.tobytes() == want.reshape(-1).tobytes(), (dtype, k, key)
            assert step["action"] == [k % 3] and step["done"] is (k == 6)
            assert np.float32(step["reward"]) == np.float32(k / 7)
        assert agent.stats["dead_lettered"] == 0
        if wire == "binary" and size >= 64:
            # Sent as arrays, the server kept them as arrays: the log asked for in the binary encoding
            # hands back each frame with its own dtype and shape (steps sent as JSON would come back
            # as float lists). Arrays under 64 elements travel as JSON lists by design.
            resp = api.get(f"/agents/{name}/steps", params={"start": 0, "limit": 100},
                           headers={"Accept": "application/x-agents-bar-steps"})
            assert resp.status_code == 200, resp.text
            doc = binary_steps.decode(resp.content)
            for k, entry in enumerate(doc["steps"]):
                got = entry["step"]["obs"]
                assert isinstance(got, np.ndarray) and got.dtype == np.dtype(dtype) and got.shape == shape, (
                    dtype, type(got))
                assert got.tobytes() == obs[k].tobytes()
        agent.close(timeout=5)


@pytest.mark.timeout(60)
def test_max_pending_bytes_counts_the_raw_array_bytes(dead_server, user, agent_name, make_agent):
    frame = np.zeros((84, 84, 4), np.uint8)  # all zeros: compresses to almost nothing on disk
    one = len(StepEncoder().encode(frame, 1, 0.0, frame, False)) + 1
    agent = make_agent(dead_server, agent_name, create=False, max_pending_bytes=3 * one, on_full="raise",
                       obs_size=28224, action_size=2)
    for _ in range(3):
        agent.step(frame, 1, 0.0, frame, False)
    with pytest.raises(QueueFullError):
        agent.step(frame, 1, 0.0, frame, False)
    assert agent.stats["bytes_pending"] == 3 * one


_CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from agents_bar_stream import Client, RemoteAgent, StreamOptions
    url, user, password, name, queue_dir = sys.argv[1:6]
    agent = RemoteAgent(Client(base_url=url, username=user, password=password), name,
                        stream=StreamOptions(queue_dir=queue_dir, durability="step"))
    for k in range(40):
        obs = np.full((16, 16, 4), k, np.uint8)
        agent.step(obs, k % 2, float(k), np.full((16, 16, 4), k + 1, np.uint8), False)
    print("queued", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.timeout(180)
def test_queue_reopened_after_a_crash_delivers_its_array_steps(down_server, user, agent_name, make_agent,
                                                               tmp_path):
    """A producer is killed (SIGKILL) with array steps on disk and the server away; the next run delivers them."""
    srv = down_server
    srv.start()
    api = api_for(srv, user)  # down_server made the agent with 4 numbers; this one takes 16x16x4 frames
    api.delete(f"/agents/{agent_name}")
    api.create_agent(agent_name, obs_size=1024, action_size=2)
    srv.stop(timeout=30)
    queue_dir = tmp_path / "crashed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, srv.url, *user, agent_name, str(queue_dir)],
                          capture_output=True, timeout=120, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert b"queued" in proc.stdout
    srv.start()
    agent = make_agent(srv, agent_name, create=False, queue_dir=queue_dir)
    agent.open_queue()
    assert agent.flush(timeout=60), agent.stats
    log = api_for(srv, user).log(agent_name)
    assert [e["step"]["obs"][0] for e in log] == list(range(40))
    assert all(e["step"]["next_obs"] == [k + 1] * 1024 for k, e in enumerate(log))


# --- the flusher's choice of body, against a scripted server (the fake plays /stream/info and /steps) ---


class BodyServer:
    """Plays a server that takes what ``info`` advertises: it decodes each /steps body (binary, maybe
    zstd, or JSON), records it, and acknowledges all of it. Only the answers are played; the
    Session, the Flusher and the DiskQueue are the real ones."""

    def __init__(self, info: dict) -> None:
        from agents_bar_stream.config import Timeouts

        self.timeouts = Timeouts()
        self.info = {"protocol": 1, "max_batch_steps": 1000, "max_batch_bytes": 8 * 2**20, **info}
        self.posts: list[dict] = []

    def request(self, method, path, *, body=None, form=None, params=None, token=None, timeout=None, headers=None):
        from agents_bar_stream.transport import Response

        if path == "/stream/info":
            return Response(200, {}, orjson.dumps(self.info), method, path)
        assert path.endswith("/steps") and body is not None, path
        headers = headers or {}
        raw = body
        if headers.get("Content-Encoding") == "zstd":
            raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=self.info["max_batch_bytes"])
        kind = headers.get("Content-Type", "application/json")
        doc = decode_body(raw) if kind == "application/x-agents-bar-steps" else orjson.loads(raw)
        self.posts.append({"headers": headers, "sent_bytes": len(body), "doc": doc})
        acked = doc["first_seq"] + len(doc["steps"]) - 1
        return Response(200, {}, orjson.dumps({"acked_seq": acked}), method, path)

    def close(self) -> None:
        pass


def _flush_with(server: BodyServer, queue: DiskQueue) -> None:
    from agents_bar_stream.config import RetryPolicy
    from agents_bar_stream.flusher import Flusher
    from agents_bar_stream.session import Session

    session = Session("http://fake.invalid", access_token="a-token", transport=server)  # type: ignore[arg-type]
    flusher = Flusher(queue, session, "fake", batch_size=1000, flush_interval=0.0,
                      policy=RetryPolicy(initial=0.001, max_delay=0.002), on_progress=lambda *a: None)
    for _ in range(50):
        if not queue.committed_pending():
            break
        flusher.deliver_once()
    assert queue.committed_pending() == 0


@pytest.mark.parametrize("compress", [True, False])
def test_flusher_sends_the_binary_body_to_a_server_that_advertises_it(tmp_path, compress):
    frames_ = frames("uint8", (84, 84, 4), 30)
    frames_ = [np.zeros_like(f) + (f % 4) for f in frames_]  # compressible, as rendered frames are
    enc = StepEncoder()
    items = [enc.encode(frames_[k], k % 2, 0.5, frames_[k + 1], False) for k in range(30)]
    queue = DiskQueue(tmp_path / "q", service_url="http://fake.invalid", agent_name="fake")
    try:
        queue.write_segment(queue.next_local, items, 0.0)
        server = BodyServer({"step_encodings": ["application/x-agents-bar-steps"],
                             "content_encodings": ["zstd"] if compress else []})
        _flush_with(server, queue)
    finally:
        queue.close()
    assert len(server.posts) == 1
    post = server.posts[0]
    assert post["headers"]["Content-Type"] == "application/x-agents-bar-steps"
    assert post["headers"].get("Content-Encoding") == ("zstd" if compress else None)
    steps = post["doc"]["steps"]
    assert [s["obs"].tobytes() for s in steps] == [f.tobytes() for f in frames_[:30]]
    assert [s["next_obs"].tobytes() for s in steps] == [f.tobytes() for f in frames_[1:31]]
    assert post["doc"]["data_bytes"] == 31 * 28224  # each frame once
    if compress:
        assert post["sent_bytes"] < 31 * 28224 / 2  # 2 bits of noise per byte


def test_flusher_sends_json_lists_to_a_server_without_the_encoding_and_keeps_under_its_byte_limit(tmp_path):
    frames_ = frames("uint8", (16, 16, 4), 40)
    enc = StepEncoder()
    items = [enc.encode(frames_[k], 1, 0.0, frames_[k + 1], False) for k in range(40)]
    limit = 64 * 1024  # each step is ~2 KB queued and ~8 KB as JSON lists
    queue = DiskQueue(tmp_path / "q", service_url="http://fake.invalid", agent_name="fake")
    try:
        queue.write_segment(queue.next_local, items, 0.0)
        server = BodyServer({"max_batch_bytes": limit})
        _flush_with(server, queue)
    finally:
        queue.close()
    assert len(server.posts) > 1
    assert all(p["headers"] == {} and p["sent_bytes"] <= limit for p in server.posts)
    steps = [s for p in server.posts for s in p["doc"]["steps"]]
    assert [p["doc"]["first_seq"] for p in server.posts] == [
        sum(len(q["doc"]["steps"]) for q in server.posts[:i]) + server.posts[0]["doc"]["first_seq"]
        for i in range(len(server.posts))]
    assert [s["obs"] for s in steps] == [f.reshape(-1).tolist() for f in frames_[:40]]
