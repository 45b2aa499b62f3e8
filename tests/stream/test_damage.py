"""A damaged queue on disk: never a repeated step, never a silent loss.

Each test writes a real queue (segments of real encoded steps, each carrying its index), damages
its files the way a disk, a filesystem or a person can, then opens it with a RemoteAgent against
the real server and reads the server's log back. The damage done by hand is the only fault injected.
What must hold every time: no index twice on the server, the server's order is the queue's order,
the steps a good segment held all arrive, new steps arrive once, and the damage is reported (an
ERROR in the log, ``stats["damaged"]`` naming where the damaged bytes were moved) with those bytes
kept under ``queue_dir/damaged``.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

import diskcache
import pytest
from support.stream import api_for, indices, obs_of

from agents_bar_stream.protocol import StepEncoder
from agents_bar_stream.storage import DiskQueue

SEGMENT = 50  # steps per segment: 10 segments, 0..499
STEPS = 500
NEW = range(1000, 1005)  # steps taken after the reopen


def encoded(i: int) -> bytes:
    return StepEncoder(obs_size=4, action_size=2, discrete=True).encode(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)


def write_queue(queue_dir: Path, url: str, name: str) -> str:
    """A closed queue holding steps 0..STEPS-1 in segments of SEGMENT; returns its producer id."""
    q = DiskQueue(queue_dir, service_url=url, agent_name=name)
    for first in range(0, STEPS, SEGMENT):
        q.write_segment(first, [encoded(i) for i in range(first, first + SEGMENT)], time.time())
    producer = q.producer_id
    q.close()  # the last connection checkpoints the write-ahead log: everything is in cache.db now
    return producer


def reopen_and_deliver(make_agent, server, name, queue_dir):
    """Open the damaged queue as a user would, add NEW steps, deliver everything; the agent and its log."""
    agent = make_agent(server, name, create=False, queue_dir=queue_dir)
    agent.open_queue()
    for i in NEW:
        agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
    assert agent.flush(timeout=60), agent.stats
    return agent


def check_log(server, user, name, *, must_have: set) -> list:
    got = indices(api_for(server, user).log(name))
    assert len(got) == len(set(got)), f"a step was applied twice: {sorted(i for i in set(got) if got.count(i) > 1)}"
    assert got == sorted(got), "the server's order is not the queue's"
    assert must_have <= set(got), f"lost: {sorted(must_have - set(got))[:20]}"
    assert set(got) <= set(range(STEPS)) | set(NEW), "a step nobody took"
    return got


def damage_reported(agent, caplog) -> list:
    damaged = agent.stats["damaged"]
    assert damaged, "the damage is not in stats['damaged']"
    for record in damaged:
        if record.get("path"):
            assert Path(record["path"]).exists(), record
            assert Path(record["path"]).is_relative_to(Path(agent.stats["queue_dir"]) / "damaged")
    assert any(r.levelno == logging.ERROR and agent.stats["queue_dir"] in r.getMessage() for r in caplog.records), \
        "no ERROR names the queue"
    return damaged


@pytest.fixture
def created(server, user, agent_name):
    api = api_for(server, user)
    api.create_agent(agent_name)
    yield agent_name
    api.cleanup()


@pytest.mark.timeout(120)
def test_a_plausible_change_inside_a_segment_is_caught_by_its_checksum(server, user, created, make_agent, tmp_path,
                                                                     caplog):
    # One digit changed inside step 120: still valid JSON, still a valid step. Without a checksum
    # the server would learn a transition nobody took.
    queue_dir = tmp_path / "q"
    producer = write_queue(queue_dir, server.url, created)
    db = queue_dir / "data" / "cache.db"
    raw = db.read_bytes()
    needle = b'"obs":[120.0,'
    assert raw.count(needle) == 1
    db.write_bytes(raw.replace(needle, b'"obs":[121.0,'))

    caplog.set_level(logging.ERROR, logger="agents_bar_stream")
    agent = reopen_and_deliver(make_agent, server, created, queue_dir)
    got = check_log(server, user, created, must_have=set(range(0, 100)) | set(range(150, STEPS)) | set(NEW))
    assert not set(range(100, 150)) & set(got), "steps of the damaged segment were sent"
    damaged = damage_reported(agent, caplog)
    assert [(d["what"], d["first_seq"]) for d in damaged] == [("segment", 100)]
    assert b"121.0" in Path(damaged[0]["path"]).read_bytes()  # the bytes kept as they were found
    assert agent.stats["producer_id"] == producer
    assert agent.stats["damaged_steps"] == SEGMENT  # the server confirmed it never had them


@pytest.mark.timeout(120)
def test_a_header_that_counts_more_steps_than_the_segment_holds(server, user, created, make_agent, tmp_path, caplog):
    # The state a damaged last page left on the old code: a segment (old layout, no checksum) whose
    # header counts 10 steps and holds 5. Trusting the count renumbered what came after it, and one
    # new step was then applied six times.
    queue_dir = tmp_path / "q"
    write_queue(queue_dir, server.url, created)
    cache = diskcache.Cache(str(queue_dir / "data"))
    body = b"\n".join(encoded(i) for i in range(STEPS, STEPS + 5))
    cache.set(STEPS, struct.pack("<dI", time.time(), 10) + body)
    cache.close()

    caplog.set_level(logging.ERROR, logger="agents_bar_stream")
    agent = reopen_and_deliver(make_agent, server, created, queue_dir)
    check_log(server, user, created, must_have=set(range(STEPS)) | set(NEW))
    assert [(d["what"], d["first_seq"]) for d in damage_reported(agent, caplog)] == [("segment", STEPS)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("garbage", ["pattern", "random"])
def test_garbage_over_the_last_page_of_the_database(server, user, created, make_agent, tmp_path, caplog, garbage):
    queue_dir = tmp_path / "q"
    write_queue(queue_dir, server.url, created)
    db = queue_dir / "data" / "cache.db"
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(size - 4096)
        f.write(b"\xde\xad\xbe\xef" * 1024 if garbage == "pattern" else os.urandom(4096))

    caplog.set_level(logging.ERROR, logger="agents_bar_stream")
    agent = reopen_and_deliver(make_agent, server, created, queue_dir)
    got = check_log(server, user, created, must_have=set(NEW))
    damage_reported(agent, caplog)
    # What was lost is what the damaged page held, no more: at most two segments' worth.
    assert len(set(range(STEPS)) - set(got)) <= 2 * SEGMENT, f"{STEPS - len(got) + len(NEW)} steps lost"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("keep", [0.0, 0.5])
def test_a_truncated_database_is_never_read_as_an_empty_queue(
    server, user, created, make_agent, tmp_path, caplog, keep
):
    queue_dir = tmp_path / "q"
    producer = write_queue(queue_dir, server.url, created)
    db = queue_dir / "data" / "cache.db"
    original_size = db.stat().st_size
    os.truncate(db, int(original_size * keep))

    caplog.set_level(logging.ERROR, logger="agents_bar_stream")
    agent = reopen_and_deliver(make_agent, server, created, queue_dir)
    got = check_log(server, user, created, must_have=set(NEW))
    damaged = damage_reported(agent, caplog)
    assert damaged[-1]["what"] == "database"
    kept = Path(damaged[-1]["path"]) / "cache.db"
    assert kept.stat().st_size == int(original_size * keep)  # moved aside as found, never deleted
    recovered = damaged[-1]["recovered"]
    # What was put back went out under the original producer and numbers; the rest is reported lost.
    assert len(got) == recovered + len(NEW)
    if recovered:
        assert agent.stats["producer_id"] == producer
    else:
        assert agent.stats["producer_id"] != producer  # a new stream, whose numbers nothing can mistake


@pytest.mark.timeout(120)
def test_a_file_that_is_no_database_at_all(server, user, created, make_agent, tmp_path, caplog):
    # Used to escape RemoteAgent() and agent.stats as a raw sqlite3.DatabaseError.
    queue_dir = tmp_path / "q"
    write_queue(queue_dir, server.url, created)
    db = queue_dir / "data" / "cache.db"
    with open(db, "r+b") as f:
        f.write(os.urandom(100))  # over SQLite's header

    caplog.set_level(logging.ERROR, logger="agents_bar_stream")
    agent = reopen_and_deliver(make_agent, server, created, queue_dir)
    check_log(server, user, created, must_have=set(NEW))
    assert damage_reported(agent, caplog)[-1]["what"] == "database"
    assert isinstance(agent.stats["pending"], int)
