"""The durable per-agent queue: encoded steps in a ``diskcache.Cache``, in order, until acknowledged.

Layout of one queue directory::

    QUEUE_DIR/lock      an flock held by the one process that owns the queue
    QUEUE_DIR/data/     a diskcache.Cache (SQLite, WAL) holding
        <int L>           a *segment*: consecutive steps whose first local sequence number is L
        "meta.*"          producer id, service URL, agent name, what was consumed, removed ranges
        "dead.<L>"        a dead letter: step L, which the server refused with 422, and why

Why segments: one SQLite transaction per step costs ~90 us, far more than a step() may take. With
``durability="batch"`` steps collect in memory and a committer thread writes them as one segment
every ``commit_interval``; with ``"step"`` each step is its own segment, committed before step()
returns. Values are orjson bytes joined by newlines, behind a 12-byte header (time, count);
diskcache stores bytes as they are, never pickled. Nothing is ever evicted and nothing is deleted
on read: a segment is deleted only after the server acknowledged every step in it.

Sequence numbers: every step gets the next *local* number L at step() time (persisted: it is
derived from the segments and the consumed mark, never from diskcache's own keys). The number on
the wire is L minus the steps removed without delivery before it (dead letters, drop_oldest) minus
a shift (a resync with a server that lost data), so the server always sees 0, 1, 2, ... with no gap.
Only committed steps are ever sent, so a number the server has seen is never given to another step.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import sqlite3
import struct
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import diskcache
import orjson

from agents_bar_stream.exceptions import QueueLockedError, StorageError

try:  # POSIX; on other systems the lock is a no-op and one process per queue is the user's promise
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["Batch", "DiskQueue", "read_queue_summary"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<dI")  # enqueue time of the first step, number of steps
_SETTINGS = {
    # A queue, not a cache: never evict, never cull, no size limit of diskcache's own (ours is
    # max_pending_bytes, enforced by refusing new steps, never by dropping old ones silently).
    "eviction_policy": "none",
    "size_limit": 2**62,
    "cull_limit": 0,
    "statistics": 0,
    "tag_index": 0,
    # Segments stay inside SQLite, so a segment write is one transaction and not a file plus a row.
    "disk_min_file_size": 2**26,
    # WAL with synchronous=NORMAL: a committed transaction survives the process being killed; the
    # last ones may be lost only if the operating system itself crashes.
    "sqlite_synchronous": 1,
    # A queue reads each segment once, oldest first: a large page cache only grows the process
    # (diskcache opens a connection per thread, each with its own cache), it saves no reads.
    "sqlite_cache_size": 2**10,
}


def _with_range(ranges: List[List[int]], start: int, end: int) -> List[List[int]]:
    """A new sorted list of disjoint [start, end) ranges: ``ranges`` plus [start, end), merged."""
    merged: List[List[int]] = []
    for r in sorted([*ranges, [start, end]]):
        if merged and merged[-1][1] >= r[0]:
            merged[-1] = [merged[-1][0], max(merged[-1][1], r[1])]
        else:
            merged.append(list(r))
    return merged


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:  # pragma: no cover - already closed
        pass


def _storage_error(action: str, directory: Path, exc: BaseException) -> StorageError:
    err = StorageError(f"could not {action} the queue in {directory}: {exc}")
    err.errno = getattr(exc, "errno", None) or (errno.ENOSPC if "full" in str(exc) else errno.EIO)
    return err


class Batch:
    """Steps ``[first_local, first_local + len(items))`` with no removed step among them."""

    __slots__ = ("first_local", "first_wire", "items", "nbytes", "enqueued_at")

    def __init__(self, first_local: int, first_wire: int, items: List[bytes], enqueued_at: float = 0.0) -> None:
        self.first_local = first_local
        self.first_wire = first_wire
        self.items = items
        self.enqueued_at = enqueued_at  # wall time the oldest of these steps was queued (its segment's)
        self.nbytes = sum(map(len, items)) + len(items)

    @property
    def last_local(self) -> int:
        return self.first_local + len(self.items) - 1


class DiskQueue:
    """One agent's durable queue. Thread-safe; one instance per directory per process.

    Raises :class:`QueueLockedError` when another process holds the directory and
    :class:`StorageError` when the directory cannot be written.
    """

    def __init__(self, directory: "os.PathLike[str] | str", *, service_url: str = "", agent_name: str = "",
                 lock: bool = True) -> None:
        self.directory = Path(directory)
        self.pid = os.getpid()
        self._lock_fd: Optional[int] = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error("create", self.directory, exc) from None
        if lock:
            self._acquire_lock()
        try:
            self._cache = diskcache.Cache(str(self.directory / "data"), **_SETTINGS)
        except (OSError, sqlite3.Error) as exc:
            self._release_lock()
            raise _storage_error("open", self.directory, exc) from None
        self.lock = threading.RLock()
        # Held around every change of the removed ranges together with its write to disk, so that
        # those writes land in the order of the changes (the flusher's and drop_oldest's race).
        self._meta_lock = threading.Lock()
        self._load(service_url, agent_name)

    # --- opening --------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        if fcntl is None:
            return
        path = self.directory / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _storage_error("lock", self.directory, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            if holder == str(os.getpid()):
                raise QueueLockedError(
                    f"the queue {self.directory} is open by another RemoteAgent in this process; close() that one "
                    "first (one closed while its last request was still in flight gives the queue back when "
                    "that request ends), or give each agent its own queue_dir") from None
            raise QueueLockedError(
                f"the queue {self.directory} is in use by another process{f' (pid {holder})' if holder else ''}; "
                "give each process its own queue_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        # A queue dropped without close() (its RemoteAgent garbage collected) must not keep the
        # directory locked for the rest of the process: the descriptor goes with the object.
        self._lock_finalizer = weakref.finalize(self, _close_fd, fd)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            self._lock_fd = None
            self._lock_finalizer()  # closes the descriptor once, which releases the flock

    def _load(self, service_url: str, agent_name: str) -> None:
        cache = self._cache
        producer = cache.get("meta.producer_id")
        if producer is None:
            producer = secrets.token_hex(8)
            with cache.transact():
                cache.set("meta.producer_id", producer)
                cache.set("meta.service_url", service_url)
                cache.set("meta.agent_name", agent_name)
                cache.set("meta.created", time.time())
        self.producer_id: str = producer
        self.service_url: str = cache.get("meta.service_url", service_url)
        self.agent_name: str = cache.get("meta.agent_name", agent_name)
        self.consumed: int = cache.get("meta.consumed", -1)  # every local <= consumed is delivered or removed
        self.shift: int = cache.get("meta.shift", 0)
        removed = orjson.loads(cache.get("meta.removed", b"[0, []]"))
        self.removed_before: int = removed[0]  # removed locals <= consumed
        self.removed_ranges: List[List[int]] = removed[1]  # [start, end) of removed locals > consumed
        keys: List[int] = []
        dead = 0
        for key in cache.iterkeys():
            if type(key) is int:
                keys.append(key)
            elif isinstance(key, str) and key.startswith("dead."):
                dead += 1
        keys.sort()
        # Segments: [first_local, count, nbytes, enqueue time]. Count, size and time are in the
        # segment's header and are read when the segment is first needed (the last one now, to learn
        # where numbering resumes), so opening a large backlog reads no segment bodies.
        # A deque: delivery pops from the left, one segment per step in durability="step", and a list
        # would make draining a large backlog quadratic.
        self.segments: "deque[List[Any]]" = deque([k, None, None, None] for k in keys)
        self.next_local = self.consumed + 1
        if keys:
            last = self.segments[-1]
            self._fill(last)
            self.next_local = max(self.next_local, last[0] + last[1])
        if self.removed_ranges:
            # Steps dropped after the last segment (then the process died before the next commit):
            # their numbers are taken for good; a new step given one would be skipped as removed.
            self.next_local = max(self.next_local, self.removed_ranges[-1][1])
        self.dead_letters = dead
        self.in_flight_through = -1  # the last local read_batch is reading now (drop_oldest keeps off)
        # The last local ever handed to the server, persisted before each send: the server may have
        # applied anything up to it without this process learning so (a lost answer, a kill), so
        # drop_oldest must never drop it, or later steps would take numbers the server already holds.
        self.sent_through: int = cache.get("meta.sent_through", -1)
        self.committed_through = self.next_local - 1
        # Bytes of queued steps: exact for what this process writes; at open, an estimate from the
        # size of the last segment's steps (reading every segment back would cost seconds, and the
        # database's size is mostly SQLite's own pages for a small backlog).
        pending = self.committed_pending()
        self.pending_bytes = int(pending * self.segments[-1][2] / max(1, self.segments[-1][1])) if keys else 0
        self._head_items: Optional[Tuple[int, List[bytes]]] = None  # decoded segment at the head

    def _fill(self, seg: List[Any]) -> List[bytes]:
        blob = self._cache.get(seg[0])
        if blob is None:  # pragma: no cover - only if the directory was edited by hand
            raise StorageError(f"segment {seg[0]} is missing from {self.directory}")
        t, n = _HEADER.unpack_from(blob)
        seg[1], seg[2], seg[3] = n, len(blob), t
        return blob[_HEADER.size:].split(b"\n")

    # --- writing --------------------------------------------------------------------------------

    def write_segment(self, first_local: int, items: List[bytes], t: float) -> int:
        """Commit ``items`` as one segment and offer it to the flusher; returns its size."""
        segment = self.store_segment(first_local, items, t)
        self.publish_segment(segment)
        return int(segment[2])

    def store_segment(self, first_local: int, items: List[bytes], t: float) -> List[Any]:
        """Commit ``items`` to disk as one segment, not yet visible to readers; called with steps in order only."""
        blob = _HEADER.pack(t, len(items)) + b"\n".join(items)
        try:
            self._cache.set(first_local, blob)
        except (OSError, sqlite3.Error) as exc:
            raise _storage_error("write to", self.directory, exc) from None
        return [first_local, len(items), len(blob), t]

    def publish_segment(self, segment: List[Any], then: Optional[Callable[[], None]] = None) -> None:
        """Make a segment written by :meth:`store_segment` readable by the flusher and counted as pending.

        ``then`` runs in the same critical section: the group commit stops counting these steps as
        in memory there, so that a reader of ``pending`` (which holds this lock) never counts them
        twice (CI once read 104096 pending of 100000 steps, one 4096-step segment in both places).
        """
        with self.lock:
            self.segments.append(segment)
            self.committed_through = segment[0] + segment[1] - 1
            if then is not None:
                then()

    # --- reading and consuming (the flusher's side) --------------------------------------------------

    def wire_seq(self, local: int) -> int:
        """The sequence number the server knows local step ``local`` by."""
        removed = self.removed_before
        for start, end in self.removed_ranges:
            if start >= local:
                break
            removed += min(end, local) - start
        return local - removed - self.shift

    def local_for_wire(self, wire: int, first_local: int) -> int:
        """Inverse of wire_seq for locals >= first_local (which must not be removed)."""
        local = first_local + (wire - self.wire_seq(first_local))
        for start, end in self.removed_ranges:
            if first_local <= start <= local:
                local += end - start
        return local

    def _is_removed(self, local: int) -> Optional[int]:
        """If ``local`` is removed, the end of its range; else None."""
        for start, end in self.removed_ranges:
            if start <= local < end:
                return end
        return None

    def committed_pending(self) -> int:
        """Committed steps not consumed (removed ones excluded)."""
        with self.lock:  # consumed, committed_through and removed_ranges change together
            first = self.consumed + 1
            n = self.committed_through - first + 1
            for start, end in self.removed_ranges:
                n -= max(0, min(end, self.committed_through + 1) - max(start, first))
            return max(0, n)

    def read_batch(self, max_steps: int, max_bytes: int) -> Optional[Batch]:
        """The oldest committed, unconsumed steps (at most max_steps, about max_bytes), or None."""
        with self.lock:
            first = self.consumed + 1
            while True:
                end = self._is_removed(first)
                if end is None:
                    break
                first = end
            if first > self.committed_through:
                return None
            stop_at = self.committed_through + 1
            for start, _end in self.removed_ranges:
                if start > first:
                    stop_at = min(stop_at, start)
                    break
            wire = self.wire_seq(first)
            # drop_oldest must not delete what is being read and sent: claim the most we may read.
            last_wanted = min(stop_at - 1, first + max_steps - 1)
            self.in_flight_through = last_wanted
            segments = []
            for seg in self.segments:  # from the oldest; the ones wanted are at the front
                if seg[0] > last_wanted:
                    break
                segments.append(seg)
        # The segments are read from disk outside the lock (a reopened backlog has not even their
        # headers in memory yet): step() publishes under it and must never wait for these reads.
        # Nothing can take them away meanwhile: drop_oldest keeps off everything up to last_wanted.
        items: List[bytes] = []
        size = 0
        i = 0
        local = first
        while i < len(segments) and len(items) < max_steps and local < stop_at:
            seg = segments[i]
            cached = self._head_items
            if cached is not None and cached[0] == seg[0]:
                seg_items = cached[1]
            else:
                seg_items = self._fill(seg)
                self._head_items = (seg[0], seg_items)
            if seg[0] + seg[1] <= local:  # wholly consumed already (the head of a partly delivered backlog)
                i += 1
                continue
            offset = local - seg[0]
            take = min(len(seg_items) - offset, max_steps - len(items), stop_at - local)
            chunk = seg_items[offset:offset + take]
            chunk_size = sum(map(len, chunk)) + len(chunk)
            if size + chunk_size <= max_bytes:
                # The usual case, at C speed: the whole rest of the segment fits.
                items.extend(chunk)
                size += chunk_size
                local += take
                if offset + take < len(seg_items):
                    break  # stopped inside this segment by max_steps or a removed step
                i += 1
                continue
            for item in chunk:  # the byte limit falls inside this segment: find where
                if items and size + len(item) + 1 > max_bytes:
                    break
                items.append(item)
                size += len(item) + 1
                local += 1
            break
        with self.lock:
            # Released as soon as the batch is read: until claim() marks it sent (after the probe,
            # the linger, perhaps a long outage), drop_oldest may still drop it, and claim() then
            # tells the flusher to read again.
            self.in_flight_through = -1
        if not items:
            return None
        return Batch(first, wire, items, segments[0][3] or 0.0)

    def claim(self, batch: Batch) -> bool:
        """Mark ``batch`` as being sent, durably and before the request goes out; False if it went stale.

        Stale means drop_oldest removed some of its steps since it was read (so its numbers on the
        wire changed): the caller reads again. Once claimed, its steps are never dropped.
        """
        last = batch.last_local
        with self.lock:
            if batch.first_local <= self.consumed:
                return False  # delivered meanwhile (a 409 rewind then an answer): read again
            for start, end in self.removed_ranges:
                if start <= last and end > batch.first_local:
                    return False
            if self.wire_seq(batch.first_local) != batch.first_wire:
                return False
            if last <= self.sent_through:
                return True
            self.sent_through = last  # in memory at once: protected from drop_oldest from here on
        try:
            self._cache.set("meta.sent_through", last)
        except (OSError, sqlite3.Error) as exc:
            # Not sent without the mark on disk: a restart would forget it, and drop_oldest could
            # then drop steps the server holds. (A full disk cannot record deliveries either, so
            # waiting costs no space.) The flusher backs off and tries again.
            raise _storage_error("record the steps being sent in", self.directory, exc) from None
        return True

    def mark_consumed(self, through_local: int, then: Optional[Callable[[int], None]] = None) -> Tuple[int, int]:
        """Everything up to ``through_local`` is delivered: persist that and delete whole segments.

        ``then(steps consumed now)`` runs in the critical section that moves the consumed mark, so
        that whoever reads the mark under this lock (flush()) also sees what ``then`` counted.
        Returns (steps consumed now, bytes freed).
        """
        with self._meta_lock:
            return self._mark_consumed(through_local, then)

    def _mark_consumed(self, through_local: int, then: Optional[Callable[[int], None]]) -> Tuple[int, int]:
        with self.lock:
            if through_local <= self.consumed:
                return 0, 0
            before = self.committed_pending()
            doomed = []
            while self.segments:
                seg = self.segments[0]
                if seg[1] is None:
                    self._fill(seg)
                if seg[0] + seg[1] - 1 > through_local:
                    break
                doomed.append(self.segments.popleft())
            self.consumed = through_local
            # A removed range is folded into the count only once no segment at or below it is held:
            # a 409 may rewind into a held, partly delivered segment, and wire_seq of the steps there
            # must still see every removed step after them.
            held_from = self.segments[0][0] if self.segments else through_local + 1
            while (self.removed_ranges and self.removed_ranges[0][1] - 1 <= through_local
                   and self.removed_ranges[0][1] <= held_from):
                start, end = self.removed_ranges.pop(0)
                self.removed_before += end - start
            removed_meta = orjson.dumps([self.removed_before, self.removed_ranges])
            freed = sum(s[2] or 0 for s in doomed)
            self.pending_bytes = max(0, self.pending_bytes - freed)
            if self._head_items is not None and any(s[0] == self._head_items[0] for s in doomed):
                self._head_items = None
            consumed_now = before - self.committed_pending()
            if then is not None:
                then(consumed_now)
        try:
            with self._cache.transact():
                self._cache.set("meta.consumed", through_local)
                self._cache.set("meta.removed", removed_meta)
                for seg in doomed:
                    self._cache.delete(seg[0])
        except (OSError, sqlite3.Error) as exc:
            # The server has these steps; if the delete is lost they are re-sent as duplicates,
            # which the server ignores. Log and carry on.
            logger.warning("could not record delivery in %s: %s", self.directory, exc)
        return consumed_now, freed

    def dead_letter(self, local: int, item: bytes, status: int, detail: str,
                    then: Optional[Callable[[], None]] = None) -> None:
        """Move step ``local`` (the oldest unconsumed) to the dead-letter store, with the server's reason.

        ``then()`` runs in the critical section that removes the step from the pending count.
        """
        record = orjson.dumps({"seq": local, "status": status, "detail": detail, "time": time.time(),
                               "step": orjson.Fragment(item)})
        with self._meta_lock:
            with self.lock:
                ranges = _with_range(self.removed_ranges, local, local + 1)
                removed_meta = orjson.dumps([self.removed_before, ranges])
            # On disk first: if the write fails, the step stays where it was, to be sent (and
            # refused) again, rather than gone from this process's numbering but not from the disk's.
            try:
                with self._cache.transact():
                    self._cache.set(f"dead.{local:020d}", record)
                    self._cache.set("meta.removed", removed_meta)
            except (OSError, sqlite3.Error) as exc:
                raise _storage_error("write a dead letter to", self.directory, exc) from None
            with self.lock:
                self.removed_ranges = ranges
                self.dead_letters += 1
                if then is not None:
                    then()

    def drop_oldest(self, after_local: int, need_bytes: int) -> Tuple[int, int]:
        """Remove whole committed segments that start after ``after_local`` until ``need_bytes`` are free.

        Returns (steps dropped, bytes freed). Dropped steps never reach the server; numbering on the
        wire stays gapless.
        """
        with self._meta_lock:
            dropped = freed = 0
            with self.lock:
                doomed = []
                for seg in self.segments:
                    if freed >= need_bytes:
                        break
                    if seg[0] <= max(after_local, self.consumed, self.in_flight_through, self.sent_through):
                        continue
                    if seg[1] is None:
                        self._fill(seg)
                    doomed.append(seg)
                    freed += seg[2]
                if not doomed:
                    return 0, 0
                # In memory first, so that the flusher never reads what is being dropped; put back
                # below if the disk refuses.
                old_ranges, old_bytes = self.removed_ranges, self.pending_bytes
                ranges = old_ranges
                for seg in doomed:
                    self.segments.remove(seg)
                    ranges = _with_range(ranges, seg[0], seg[0] + seg[1])
                    dropped += seg[1]
                    if self._head_items is not None and self._head_items[0] == seg[0]:
                        self._head_items = None
                self.removed_ranges = ranges
                self.pending_bytes = max(0, self.pending_bytes - freed)
                removed_meta = orjson.dumps([self.removed_before, ranges])
            try:
                with self._cache.transact():
                    self._cache.set("meta.removed", removed_meta)
                    for seg in doomed:
                        self._cache.delete(seg[0])
            except (OSError, sqlite3.Error) as exc:
                with self.lock:
                    self.removed_ranges, self.pending_bytes = old_ranges, old_bytes
                    self.segments = deque(sorted([*self.segments, *doomed], key=lambda s: s[0]))
                raise _storage_error("drop from", self.directory, exc) from None
            return dropped, freed

    def rewind_or_shift(self, expected_wire: int, head_local: int) -> bool:
        """The server expects ``expected_wire`` (409). Resend from there if we still hold it (True);
        otherwise the server lost steps we deleted: renumber so that the head is what it expects (False)."""
        with self.lock:
            oldest_held = self.segments[0][0] if self.segments else head_local
            target = self.local_for_wire(expected_wire, oldest_held) if expected_wire >= self.wire_seq(oldest_held) else None
            if target is not None and oldest_held <= target <= head_local and self._is_removed(target) is None:
                self.consumed = target - 1
                self._cache.set("meta.consumed", self.consumed)
                return True
            self.shift += self.wire_seq(head_local) - expected_wire
            self._cache.set("meta.shift", self.shift)
            return False

    # --- reading for people --------------------------------------------------------------------------

    def oldest_pending_time(self) -> Optional[float]:
        with self.lock:
            for seg in self.segments:
                if seg[3] is None:
                    self._fill(seg)
                if seg[0] + seg[1] - 1 > self.consumed:
                    return float(seg[3])
        return None

    def dead_letter_records(self) -> List[Dict[str, Any]]:
        out = []
        for key in sorted(k for k in self._cache.iterkeys() if isinstance(k, str) and k.startswith("dead.")):
            blob = self._cache.get(key)
            if blob is not None:
                out.append(orjson.loads(blob))
        return out

    def remove_dead_letters(self) -> int:
        n = 0
        with self._cache.transact():
            for key in [k for k in self._cache.iterkeys() if isinstance(k, str) and k.startswith("dead.")]:
                self._cache.delete(key)
                n += 1
        with self.lock:
            self.dead_letters = 0
        return n

    def close(self) -> None:
        try:
            self._cache.close()
        finally:
            self._release_lock()


def read_queue_summary(directory: "os.PathLike[str] | str") -> Dict[str, Any]:
    """What a person wants to know of a queue, read without taking its lock (for ``queue status``)."""
    directory = Path(directory)
    if not (directory / "data").is_dir():
        raise StorageError(f"{directory} is not a queue directory (it has no data/)")
    locked_by = None
    if fcntl is not None and (directory / "lock").exists():
        fd = os.open(directory / "lock", os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                locked_by = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
    q = DiskQueue(directory, lock=False)
    try:
        oldest = q.oldest_pending_time()
        return {
            "queue_dir": str(directory),
            "agent": q.agent_name,
            "service_url": q.service_url,
            "producer_id": q.producer_id,
            "pending": q.committed_pending(),
            "bytes_on_disk": _dir_size(directory),
            "oldest_pending_age": None if oldest is None else max(0.0, time.time() - oldest),
            "dead_letters": q.dead_letters,
            "locked_by_pid": locked_by,
            "next_seq": q.next_local,
        }
    finally:
        q.close()


def _dir_size(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
