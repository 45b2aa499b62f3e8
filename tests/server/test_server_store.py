"""Both stores (SQLite, PostgreSQL) and the security helpers in-process (no HTTP, no torch).

Every store test runs on both implementations (the ``kind`` parameter): they promise the same
behaviour. PostgreSQL is a real one (tests/server/conftest.py), a fresh database per test.
"""

from __future__ import annotations

import os
import stat
import threading

import pytest

from agents_bar_stream.server.security import (
    TokenSigner,
    hash_password,
    load_or_create_secret,
    verify_password,
)
from agents_bar_stream.server.store import AgentExists, SequenceGap, SqliteStore

pytestmark = pytest.mark.timeout(60)


def step(i: int) -> dict:
    return {"obs": [float(i)], "action": [0], "reward": 0.0, "next_obs": [float(i + 1)], "done": False, "extra": 1}


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def open_store(kind, tmp_path, request):
    """``open_store()``: a store on this test's database (the same one each call), closed after."""
    url = request.getfixturevalue("pg_url") if kind == "postgres" else None
    opened = []

    def open_() -> object:
        if url is not None:
            from agents_bar_stream.server.store_pg import PostgresStore

            s = PostgresStore(url, pool_size=8)
        else:
            s = SqliteStore(tmp_path / "db.sqlite3")
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store):
    return open_store()


@pytest.fixture
def agent_id(store) -> int:
    return store.create_agent(
        owner="u", name="a", model="dqn", description=None, config={"obs_size": 1, "action_size": 2}, is_active=True
    ).id


def test_append_batch_table(store, agent_id):
    assert store.acked_seq(agent_id, "p") == -1
    with pytest.raises(SequenceGap) as gap:
        store.append_batch(agent_id, "p", 1, [step(1)])
    assert gap.value.expected_seq == 0
    assert store.append_batch(agent_id, "p", 0, [step(i) for i in range(5)]) == (4, 5, 0)
    assert store.append_batch(agent_id, "p", 0, [step(i) for i in range(5)]) == (4, 0, 5)
    assert store.append_batch(agent_id, "p", 3, [step(i) for i in range(3, 8)]) == (7, 3, 2)
    assert store.steps_received(agent_id) == 8
    log = store.read_log(agent_id, 0, 100)
    assert [(p, q) for p, q, _ in log] == [("p", i) for i in range(8)]
    assert [s["obs"][0] for _, _, s in log] == [float(i) for i in range(8)]
    assert "extra" not in log[0][2]  # unknown fields are not stored
    assert [q for _, q, _ in store.read_log(agent_id, 4, 2)] == [4, 5]


def test_agents_are_unique_per_owner(store, agent_id):
    with pytest.raises(AgentExists):
        store.create_agent(owner="u", name="a", model="dqn", description=None, config={}, is_active=True)
    other = store.create_agent(owner="v", name="a", model="dqn", description=None, config={}, is_active=True)
    assert other.id != agent_id
    assert [a.name for a in store.list_agents("v")] == ["a"]


def test_delete_removes_log(store, agent_id):
    store.append_batch(agent_id, "p", 0, [step(0)])
    assert store.delete_agent(agent_id)
    assert store.read_log(agent_id, 0, 10) == [] and store.acked_seq(agent_id, "p") == -1


def test_concurrent_writers_keep_one_sequence(store, agent_id):
    # Many threads resend overlapping batches of one producer: each seq ends up in the log once.
    def worker(offset: int) -> None:
        for first in range(0, 200, 10):
            try:
                store.append_batch(agent_id, "p", first, [step(i) for i in range(first, first + 10 + offset)])
            except SequenceGap:
                pass

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    seqs = [q for _, q, _ in store.read_log(agent_id, 0, 10_000)]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 200


def test_reopen_keeps_everything(open_store):
    s = open_store()
    aid = s.create_agent(owner="u", name="a", model="dqn", description="d", config={"obs_size": 1}, is_active=True).id
    s.append_batch(aid, "p", 0, [step(0), step(1)])
    s.close()
    s = open_store()
    assert s.acked_seq(aid, "p") == 1 and s.steps_received(aid) == 2
    assert s.get_agent("u", "a").description == "d"


def test_password_hashing():
    stored = hash_password("s3cret")
    assert "s3cret" not in stored and stored.startswith("scrypt$")
    assert hash_password("s3cret") != stored  # salted
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)
    assert not verify_password("s3cret", "garbage")


def test_tokens_sign_and_expire():
    signer = TokenSigner(b"k" * 32, ttl=60)
    token = signer.issue("alice", now=1000)
    assert signer.verify(token, now=1059) == "alice"
    assert signer.verify(token, now=1060) is None  # expired
    assert TokenSigner(b"x" * 32, ttl=60).verify(token, now=1000) is None  # other key
    payload, _, sig = token.partition(".")
    assert signer.verify(payload + "." + sig[::-1], now=1000) is None
    assert signer.verify("no-dot", now=1000) is None
    assert signer.verify("é.é", now=1000) is None


def test_secret_file_is_private_and_stable(tmp_path):
    key = load_or_create_secret(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode)
    assert mode == 0o600
    assert load_or_create_secret(tmp_path) == key and len(key) == 32
