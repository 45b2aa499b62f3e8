"""The durable queue on its own (real diskcache directories, no server): numbering across reopen,
dead letters, drops and rewinds, and the directory lock."""

from __future__ import annotations

import gc
import time

import pytest

from agents_bar_stream import QueueLockedError
from agents_bar_stream.storage import DiskQueue


def items(first: int, count: int) -> list:
    return [b'{"i":%d}' % i for i in range(first, first + count)]


def queue_of(directory, steps: int) -> DiskQueue:
    """A queue holding steps 0 .. steps-1 in segments of 10, as ten group commits would leave them."""
    q = DiskQueue(directory)
    for first in range(0, steps, 10):
        q.write_segment(first, items(first, 10), time.time())
    return q


def test_numbers_taken_by_dropped_steps_are_not_reused_after_reopen(tmp_path):
    q = queue_of(tmp_path, 30)
    batch = q.read_batch(10, 10**6)
    q.mark_consumed(batch.last_local)
    assert q.drop_oldest(q.consumed, 10**9)[0] == 20  # the queue was full: everything after 9 dropped
    q.close()  # and the process ended before another step was committed

    q = DiskQueue(tmp_path)
    assert q.next_local >= 30
    q.write_segment(q.next_local, items(100, 5), time.time())
    assert q.committed_pending() == 5
    batch = q.read_batch(100, 10**6)
    assert batch is not None and batch.items == items(100, 5)
    assert batch.first_wire == 10  # right after the 10 delivered ones: no gap on the wire
    q.close()


def test_a_rewind_into_a_partly_delivered_segment_keeps_the_numbering(tmp_path):
    q = DiskQueue(tmp_path)
    q.write_segment(0, items(0, 200), time.time())  # one group-commit segment
    batch = q.read_batch(100, 10**6)
    q.dead_letter(60, batch.items[60], 422, "refused")  # the server refused local 60 for good
    q.mark_consumed(99)  # and acknowledged the rest of 0..99: wire 0..98
    assert q.wire_seq(100) == 99
    # The server lost data (restored from a backup) and expects wire 50 again: local 50.
    assert q.rewind_or_shift(50, 100) == ("rewound", 0)
    batch = q.read_batch(100, 10**6)
    assert (batch.first_local, batch.first_wire) == (50, 50)
    assert batch.last_local == 59  # stops before the dead letter, which is never sent again
    q.mark_consumed(batch.last_local)
    batch = q.read_batch(100, 10**6)
    assert (batch.first_local, batch.first_wire) == (61, 60)
    q.close()


def test_the_sent_mark_survives_reopen_and_protects_from_drop_oldest(tmp_path):
    q = queue_of(tmp_path, 100)
    batch = q.read_batch(50, 10**6)
    assert q.claim(batch)  # sent; the answer never came back (the process was killed)
    q.close()

    q = DiskQueue(tmp_path)
    assert q.sent_through == 49
    dropped, _ = q.drop_oldest(q.consumed, 10**9)
    assert dropped == 50  # only what was never handed to the server
    batch = q.read_batch(1000, 10**6)
    assert (batch.first_local, batch.last_local, batch.first_wire) == (0, 49, 0)
    q.close()


def test_a_queue_dropped_without_close_gives_its_lock_back(tmp_path):
    q = DiskQueue(tmp_path)
    with pytest.raises(QueueLockedError, match="this process"):
        DiskQueue(tmp_path)
    del q
    gc.collect()
    DiskQueue(tmp_path).close()


def test_batches_respect_steps_bytes_and_removed_steps_across_segments(tmp_path):
    q = queue_of(tmp_path, 100)
    size = len(items(25, 1)[0]) + 1  # items 10-99 are 8 bytes, plus a separator each
    batch = q.read_batch(25, 10**6)
    assert (batch.first_local, batch.last_local) == (0, 24) and batch.items == items(0, 25)
    q.mark_consumed(batch.last_local)
    batch = q.read_batch(1000, 7 * size)  # the byte limit falls inside a segment
    assert batch.items == items(25, 7)
    q.mark_consumed(batch.last_local)
    q.dead_letter(40, items(40, 1)[0], 422, "refused")
    batch = q.read_batch(1000, 10**6)
    assert batch.items == items(32, 8)  # stops before the dead letter
    q.mark_consumed(batch.last_local)
    batch = q.read_batch(1000, 10**6)
    assert (batch.first_local, batch.first_wire) == (41, 40) and batch.items == items(41, 59)
    q.close()


def test_a_batch_read_but_not_yet_sent_may_be_dropped_and_is_then_read_again(tmp_path):
    # The server is away: the flusher holds a batch it read, waiting to send it. A full queue with
    # on_full="drop_oldest" may still drop those steps; the flusher's claim then fails, and it
    # reads what is left, numbered without a gap.
    q = queue_of(tmp_path, 40)
    batch = q.read_batch(1000, 10**6)
    assert q.drop_oldest(q.consumed, 1)[0] == 10  # the oldest segment goes
    assert not q.claim(batch)
    batch = q.read_batch(1000, 10**6)
    assert (batch.first_local, batch.first_wire, len(batch.items)) == (10, 0, 30)
    assert q.claim(batch)
    assert q.drop_oldest(q.consumed, 10**9)[0] == 0  # claimed: never dropped
    q.close()
