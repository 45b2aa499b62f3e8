"""``queue salvage`` on queues damaged by hand (the only fault injected): what it reports, what it exports."""

from __future__ import annotations

import json
import time

import diskcache
import orjson
import pytest

from agents_bar_stream.storage import DiskQueue


def _queue(path, steps: int = 30, per_segment: int = 10) -> str:
    q = DiskQueue(path, service_url="http://127.0.0.1:9", agent_name="salvaged")
    for first in range(0, steps, per_segment):
        q.write_segment(first, [b'{"obs":[%d.0,0.5],"action":[0],"reward":0.0,"next_obs":[0.0,0.5],"done":false}' % i
                                for i in range(first, first + per_segment)], time.time())
    producer = q.producer_id
    q.close()
    return producer


def _export(cli, queue_dir, tmp_path) -> list:
    out = tmp_path / "salvaged.jsonl"
    run = cli("queue", "salvage", str(queue_dir), "--export", str(out))
    assert run.code == 0, run.err
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


@pytest.mark.timeout(60)
def test_salvage_sets_a_damaged_segment_aside_and_exports_its_lines_flagged(cli, tmp_path):
    queue_dir = tmp_path / "q"
    _queue(queue_dir)
    db = queue_dir / "data" / "cache.db"
    db.write_bytes(db.read_bytes().replace(b'"obs":[15.0,', b'"obs":[16.0,'))

    report = cli("queue", "salvage", str(queue_dir), "--json")
    assert report.code == 0, report.err
    doc = json.loads(report.out)
    assert doc["pending"] == 20  # the two good segments stay queued
    (record,) = doc["damaged"]
    assert (record["what"], record["first_seq"], record["end_seq"], record["readable_steps"]) == ("segment", 10, 20, 10)

    steps = _export(cli, queue_dir, tmp_path)
    assert [s["seq"] for s in steps] == list(range(10, 20))
    assert not any(s["checksum_ok"] or s["put_back"] for s in steps)
    assert [s["step"]["obs"][0] for s in steps].count(16.0) == 2  # exported as found, for a person to judge

    table = cli("queue", "salvage", str(queue_dir))
    assert table.code == 0 and "segment" in table.out and "10..19" in table.out


@pytest.mark.timeout(60)
def test_salvage_exports_a_database_whose_numbering_was_lost(cli, tmp_path):
    queue_dir = tmp_path / "q"
    producer = _queue(queue_dir)
    cache = diskcache.Cache(str(queue_dir / "data"))
    cache.delete("meta.sent_through")  # without it nothing can be put back under the old numbers safely
    cache.close()
    with open(queue_dir / "data" / "cache.db", "r+b") as f:
        f.write(b"\0" * 16)  # SQLite's magic header gone: the file no longer opens

    doc = json.loads(cli("queue", "salvage", str(queue_dir), "--json").out)
    (record,) = doc["damaged"]
    assert record["what"] == "database" and record["recovered"] == 0 and record["readable_steps"] == 30
    assert doc["pending"] == 0
    steps = _export(cli, queue_dir, tmp_path)
    assert [s["seq"] for s in steps] == list(range(30))
    assert all(s["checksum_ok"] and not s["put_back"] for s in steps)
    assert [s["step"]["obs"][0] for s in steps] == [float(i) for i in range(30)]
    (status,) = json.loads(cli("queue", "status", "--json", str(queue_dir)).out)
    assert status["producer_id"] != producer  # a new stream: no number of the old one can be reused
