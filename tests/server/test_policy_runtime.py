"""The server side of the policy export in-process (issue 11): the weights generation, the version
and export caches, policy_lag, and the log's policy_versions column in a database from before it."""

from __future__ import annotations

import sqlite3

import pytest
from support.api import make_steps

from agents_bar_stream.server.learner import AgentRuntime
from agents_bar_stream.server.store import SqliteStore, Store

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

# The batches table as the first release made it (no policy_versions column).
_OLD_BATCHES = """
CREATE TABLE batches (
    agent_id INTEGER NOT NULL, log_start INTEGER NOT NULL, producer_id TEXT, first_seq INTEGER,
    count INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (agent_id, log_start)
) WITHOUT ROWID;
INSERT INTO batches VALUES (1, 0, 'p', 0, 1, '[{"obs":[0.0],"action":[0],"reward":0.0,"next_obs":[1.0],"done":false}]');
"""


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "db.sqlite3")
    yield s
    s.close()


def _runtime(store: Store, tmp_path, **config) -> AgentRuntime:
    row = store.create_agent(owner="u", name="a", model="dqn", description=None, is_active=True,
                             config={"obs_size": 4, "action_size": 2, "hidden_layers": [8], "batch_size": 4,
                                     "seed": 1, **config})
    return AgentRuntime(row, store, tmp_path, learn=False, save_interval=3600)


def test_old_database_gets_the_column(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_BATCHES)
    conn.close()
    for _ in range(2):  # opening it again finds the column there
        store = SqliteStore(path)
        try:
            (entry,) = store.read_entries(1, 0, 10)
            assert entry.policy_version is None and entry.seq == 0
        finally:
            store.close()
    store = SqliteStore(path)
    try:
        store._write(lambda c: c.execute("INSERT INTO agents (id, owner, name, model, config, is_active, "
                                         "steps_received, created_at) VALUES (1, 'u', 'a', 'dqn', '{}', 1, 1, 0)"))
        steps = make_steps(1, 2, obs_size=1)
        steps[1]["policy_version"] = "v"
        store.append_batch(1, "q", 0, steps)
        assert [e.policy_version for e in store.read_entries(1, 0, 10)] == [None, None, "v"]
        assert [set(s) for _, _, s in store.read_log(1, 0, 10)] == [{"obs", "action", "reward", "next_obs", "done"}] * 3
    finally:
        store.close()


def test_warm_up_keeps_the_generation_learning_moves_it(store, tmp_path):
    runtime = _runtime(store, tmp_path, warm_up=1000)
    version = runtime.current_policy_version()
    store.append_batch(runtime.id, "p", 0, make_steps(0, 20))
    assert runtime.learn_available() == 20
    # Twenty learning steps, none of which stepped the network's optimizer: the same policy.
    assert runtime.weights_generation == 0 and runtime.current_policy_version() == version

    (tmp_path / "b").mkdir()
    store_b = SqliteStore(tmp_path / "b" / "db.sqlite3")
    busy = _runtime(store_b, tmp_path / "b", warm_up=0)
    try:
        v0 = busy.current_policy_version()
        store_b.append_batch(busy.id, "p", 0, make_steps(0, 20))
        busy.learn_available()
        assert busy.weights_generation >= 10 and busy.current_policy_version() != v0
    finally:
        store_b.close()


def test_one_export_per_version(store, tmp_path):
    runtime = _runtime(store, tmp_path, warm_up=0)
    first = runtime.policy_export()
    assert runtime.policy_export() is first
    assert first.version == runtime.current_policy_version()
    # The same weights loaded again: a new generation, the same version, the same export.
    runtime.load_network_bytes(runtime.network_bytes())
    assert runtime.weights_generation == 1
    assert runtime.policy_export() is first
    store.append_batch(runtime.id, "p", 0, make_steps(0, 8))
    runtime.learn_available()
    second = runtime.policy_export()
    assert second is not first and second.version != first.version


def test_policy_lag(store, tmp_path):
    runtime = _runtime(store, tmp_path, warm_up=0)
    empty = runtime.policy_lag()
    assert empty == {"p50": None, "p90": None, "max": None, "count": 0, "unknown": 0, "window": 1000}
    version = runtime.current_policy_version()  # generation 0
    steps = make_steps(0, 10)
    for s in steps:
        s["policy_version"] = version
    steps[9]["policy_version"] = "unknown"
    store.append_batch(runtime.id, "p", 0, steps)
    runtime.learn_available()
    # Each DQN step (after the batch fills) steps the optimizer once: step k was learned k-ish updates on.
    lag = runtime.policy_lag()
    assert lag["count"] == 9 and lag["unknown"] == 1
    assert lag["p50"] <= lag["p90"] <= lag["max"] <= 8 and lag["max"] >= 4, lag


def test_the_step_hook_keeps_no_reference_to_the_runtime(store, tmp_path):
    # Learners.get freezes the GC's objects: a reference cycle through the runtime would keep a
    # deleted agent's networks in memory for good. Reference counting alone must free it.
    import weakref

    runtime = _runtime(store, tmp_path, warm_up=0)
    store.append_batch(runtime.id, "p", 0, make_steps(0, 8))
    runtime.learn_available()
    runtime.policy_export()
    ref = weakref.ref(runtime)
    del runtime
    assert ref() is None


def test_export_runs_without_the_agents_lock(store, tmp_path, monkeypatch):
    import agents_bar_stream.server.learner as learner

    runtime = _runtime(store, tmp_path, warm_up=0)
    real = learner.export_module
    seen = []

    def export(*args, **kwargs):
        free = runtime.lock.acquire(blocking=False)  # a learner could step now
        if free:
            runtime.lock.release()
        seen.append(free)
        return real(*args, **kwargs)

    monkeypatch.setattr(learner, "export_module", export)
    export_ = runtime.policy_export()
    assert seen == [True] and export_.copy_seconds < 1.0
