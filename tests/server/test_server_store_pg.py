"""What only the PostgreSQL store promises: several stores (replicas) on one database.

Each ``PostgresStore`` here stands for one replica (its own connection pool); they run against a
real PostgreSQL (tests/server/conftest.py), a fresh database per test.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from agents_bar_stream.server.store import SequenceGap, StoreUnavailable
from agents_bar_stream.server.store_pg import SCHEMA_VERSION, PostgresStore, migrate

pytestmark = pytest.mark.timeout(90)


def step(i: int) -> dict:
    return {"obs": [float(i)], "action": [0], "reward": 0.0, "next_obs": [float(i + 1)], "done": False}


@pytest.fixture
def replicas(pg_url):
    made = [PostgresStore(pg_url, pool_size=6) for _ in range(3)]
    yield made
    for s in made:
        s.close()


def _agent(store) -> int:
    return store.create_agent(owner="u", name="a", model="dqn", description=None,
                              config={"obs_size": 1, "action_size": 2}, is_active=True).id


def test_replicas_given_the_same_batches_apply_each_step_once_in_order(replicas):
    # Every replica receives every batch of one producer (a retry routed elsewhere, many times
    # over), from several threads each: the producer's row lock lets one apply it, the others count
    # duplicates; nothing is applied twice, nothing out of order.
    agent = _agent(replicas[0])
    batches = [(first, [step(i) for i in range(first, first + 25)]) for first in range(0, 2000, 25)]
    applied = [0]
    duplicates = [0]
    lock = threading.Lock()

    def worker(store) -> None:
        for first, steps in batches:
            for _ in range(200):  # a gap: another replica has not applied the one before yet
                try:
                    _acked, n, dup = store.append_batch(agent, "p", first, steps)
                    break
                except SequenceGap:
                    continue
            else:
                raise AssertionError(f"batch {first} never went in")
            with lock:
                applied[0] += n
                duplicates[0] += dup

    threads = [threading.Thread(target=worker, args=(s,)) for s in replicas for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    log = replicas[1].read_log(agent, 0, 10_000)
    assert [q for _, q, _ in log] == list(range(2000))
    assert [s["obs"][0] for _, _, s in log] == [float(i) for i in range(2000)]
    assert applied[0] == 2000 and duplicates[0] == 2000 * (len(threads) - 1)
    assert replicas[2].steps_received(agent) == 2000 and replicas[2].acked_seq(agent, "p") == 1999


def test_producers_of_one_agent_on_several_replicas_share_one_log(replicas):
    agent = _agent(replicas[0])

    def worker(k: int) -> None:
        store = replicas[k]
        for first in range(0, 500, 10):
            store.append_batch(agent, f"p{k}", first, [step(i) for i in range(first, first + 10)])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    log = replicas[0].read_log(agent, 0, 10_000)
    assert len(log) == 1500 and replicas[0].steps_received(agent) == 1500
    for k in range(3):  # each producer's steps in its own order, none missing
        assert [q for p, q, _ in log if p == f"p{k}"] == list(range(500))


def test_what_one_replica_writes_the_others_see_at_once(replicas):
    a, b, _ = replicas
    a.set_user("alice", "hash")
    assert b.password_hash("alice") == "hash"
    agent = _agent(a)
    assert b.get_agent("u", "a").id == agent
    assert a.signing_key() == b.signing_key() and len(a.signing_key()) == 32
    assert b.delete_agent(agent) and a.get_agent("u", "a") is None


def test_schema_is_made_once_by_replicas_starting_together(pg_url):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            with psycopg.connect(pg_url) as conn:
                barrier.wait(10)
                migrate(conn)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_a_newer_schema_is_refused(pg_url):
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO schema_version VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreUnavailable, match="newer than this server"):
        PostgresStore(pg_url)


def test_an_unreachable_database_is_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable):
        PostgresStore(f"postgresql://postgres@/postgres?host={tmp_path}", connect_timeout=2)


def test_a_learner_that_lost_its_epoch_cannot_save(replicas):
    a, b, _ = replicas
    agent = _agent(a)
    first = a.claim_learner(agent, "A")
    assert a.save_checkpoint(agent, first, 10, b"weights-a") == 1
    second = b.claim_learner(agent, "B")  # B took the agent over (A's lock was lost)
    assert second == first + 1
    assert a.save_checkpoint(agent, first, 20, b"late-a") is None  # fenced
    assert not a.report_progress(agent, first, 20)
    assert b.save_checkpoint(agent, second, 30, b"weights-b") == 2
    saved = a.load_checkpoint(agent)
    assert (saved.version, saved.cursor, saved.payload) == (2, 30, b"weights-b")
    assert a.learner_info(agent) == ("B", 30)
    b.release_learner(agent, second)
    assert a.learner_info(agent)[0] is None


def test_learner_locks_are_one_holder_and_die_with_the_session(replicas):
    a, b, _ = replicas
    agent = _agent(a)
    sa, sb = a.session(), b.session()
    try:
        assert sa.try_lead(agent)
        assert not sb.try_lead(agent)
        sa.close()  # a replica's end (a kill closes the socket the same way)
        # The server ends the closed session's backend (releasing its locks) a moment later.
        deadline = time.monotonic() + 10
        while not sb.try_lead(agent):
            assert time.monotonic() < deadline, "the lock outlived its session"
        # A save notifies the other sessions of the new version.
        epoch = b.claim_learner(agent, "B")
        version = b.save_checkpoint(agent, epoch, 5, b"w")
        sc = a.session()
        try:
            b.save_checkpoint(agent, epoch, 6, b"w2")
            assert sc.wait(5.0) == [(agent, version + 1)]
        finally:
            sc.close()
    finally:
        sa.close()
        sb.close()
