"""The log's compact form for steps with arrays (issue 12), in-process: no HTTP, no torch.

On both stores (SQLite, and a real PostgreSQL: tests/server/conftest.py): they share the encoding
of a batch (``store.encode_steps``/``decode_steps``).
"""

from __future__ import annotations

import sqlite3

import numpy as np
import orjson
import pytest

from agents_bar_stream.server.arrays import is_packed, to_float32
from agents_bar_stream.server.store import SqliteStore, Store

pytestmark = pytest.mark.timeout(60)

SHAPE = (84, 84, 4)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":
        from agents_bar_stream.server.store_pg import PostgresStore

        s = PostgresStore(request.getfixturevalue("pg_url"), pool_size=4)
    else:
        s = SqliteStore(tmp_path / "db.sqlite3")
    yield s
    s.close()


def _sql(store, statement: str, params: tuple = ()) -> list:
    """Run one statement on the store's database directly (as an older server, or to look at rows)."""
    if isinstance(store, SqliteStore):
        conn = sqlite3.connect(store.path)
        try:
            out = conn.execute(statement, params).fetchall()
            conn.commit()
            return out
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(store.conninfo) as pg:
        cur = pg.execute(statement.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def agent_id(store) -> int:
    return store.create_agent(owner="u", name="a", model="dqn", description=None,
                              config={"obs_size": 28_224, "action_size": 2}, is_active=True).id


def frame_steps(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, size=SHAPE, dtype=np.uint8) for _ in range(count + 1)]
    frames[0].setflags(write=False)  # a view of a request body is read-only; storing must not need to write
    return [{"obs": frames[i], "action": np.array([i % 2], np.int64), "reward": 0.25 * i, "next_obs": frames[i + 1],
             "done": False, "policy_version": "v1"} for i in range(count)]


def rows(store: Store, agent_id: int) -> list[bytes]:
    return [bytes(r[0]) for r in _sql(store, "SELECT data FROM batches WHERE agent_id = ? ORDER BY log_start",
                                      (agent_id,))]


def test_arrays_are_stored_as_bytes_once_and_read_back_exact(store, agent_id):
    steps = frame_steps(10)
    assert store.append_batch(agent_id, "p", 0, steps) == (9, 10, 0)
    (data,) = rows(store, agent_id)
    assert is_packed(data) and data[:4] == b"ABL1"  # random frames do not compress: stored as they are
    # 11 distinct frames of 28,224 bytes and a small header: next_obs shares its bytes with the next obs.
    assert 11 * 28_224 <= len(data) < 11 * 28_224 + 4_000
    entries = store.read_entries(agent_id, 0, 100, arrays=True)
    assert [e.seq for e in entries] == list(range(10)) and all(e.policy_version == "v1" for e in entries)
    for entry, sent in zip(entries, steps, strict=True):
        got = entry.step
        assert set(got) == {"obs", "action", "reward", "next_obs", "done"}
        assert got["obs"].dtype == np.uint8 and got["obs"].shape == SHAPE
        assert np.array_equal(got["obs"], sent["obs"]) and np.array_equal(got["next_obs"], sent["next_obs"])
        assert got["action"].tolist() == sent["action"].tolist() and got["reward"] == sent["reward"]
        learner_input = to_float32(got["obs"])
        assert learner_input.dtype == np.float32 and learner_input.shape == (28_224,)
    # Without arrays=True (snapshots, older callers): flat lists of the same integers.
    plain = store.read_log(agent_id, 3, 2)
    assert plain[0][2]["obs"] == steps[3]["obs"].ravel().tolist() and plain[1][2]["action"] == [0]
    assert isinstance(plain[0][2]["obs"][0], int)


def test_compressible_frames_are_stored_zstd_compressed_and_read_back_exact(store, agent_id):
    steps = frame_steps(20)
    for k, step in enumerate(steps):  # mostly flat frames, like a rendered scene: zstd shrinks them
        for key in ("obs", "next_obs"):
            flat = np.zeros(SHAPE, np.uint8)
            flat[k % 84, :, :] = step[key][0, :, :]
            step[key] = flat
    store.append_batch(agent_id, "z", 0, steps)
    (data,) = rows(store, agent_id)
    assert data[:4] == b"ABLZ" and len(data) < 40 * 28_224 // 8
    for entry, sent in zip(store.read_entries(agent_id, 0, 100, arrays=True), steps, strict=True):
        assert entry.step["obs"].tobytes() == sent["obs"].tobytes()
        assert entry.step["next_obs"].tobytes() == sent["next_obs"].tobytes()


def test_a_slice_from_the_middle_of_a_packed_row(store, agent_id):
    steps = frame_steps(6, seed=1)
    store.append_batch(agent_id, "p", 0, steps)
    entries = store.read_entries(agent_id, 2, 3, arrays=True)
    assert [e.seq for e in entries] == [2, 3, 4]
    assert np.array_equal(entries[0].step["obs"], steps[2]["obs"])


def test_json_rows_of_an_older_server_still_read(store, agent_id, tmp_path):
    """Rows written as JSON (by this server for JSON bodies, or by any older one) and packed rows, side by side."""
    old = [{"obs": [0.1, 2.0], "action": [1], "reward": 1.0, "next_obs": [3.0, 4.5], "done": True}]
    _sql(store, "INSERT INTO batches (agent_id, log_start, producer_id, first_seq, count, data) "
                "VALUES (?, 0, 'old', 0, 1, ?)", (agent_id, orjson.dumps(old)))
    _sql(store, "UPDATE agents SET steps_received = 1 WHERE id = ?", (agent_id,))
    _sql(store, "INSERT INTO producers (agent_id, producer_id, acked_seq) VALUES (?, 'old', 0)", (agent_id,))
    store.append_batch(agent_id, "new", 0, frame_steps(2))
    entries = store.read_entries(agent_id, 0, 10, arrays=True)
    assert [(e.producer_id, e.seq) for e in entries] == [("old", 0), ("new", 0), ("new", 1)]
    assert entries[0].step == old[0]
    assert isinstance(entries[1].step["obs"], np.ndarray)
    assert not is_packed(rows(store, agent_id)[0]) and is_packed(rows(store, agent_id)[1])


def test_float32_values_survive_the_json_log_bit_exact(store, agent_id):
    rng = np.random.default_rng(3)
    obs = rng.standard_normal(28_224).astype(np.float32)
    obs[:4] = [np.float32(1) / 3, np.finfo(np.float32).max, np.finfo(np.float32).smallest_subnormal, -0.0]
    store.append_batch(agent_id, "f", 0, [{"obs": obs, "action": [0], "reward": 0.0, "next_obs": obs, "done": False}])
    ((_, _, step),) = store.read_log(agent_id, 0, 1)
    text = orjson.dumps(step["obs"])
    back = np.array(orjson.loads(text), dtype=np.float64).astype(np.float32)
    assert back.tobytes() == obs.tobytes()
