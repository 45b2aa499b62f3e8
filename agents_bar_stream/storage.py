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
returns. Values are orjson bytes joined by newlines behind a header with a CRC-32
(:mod:`agents_bar_stream.segment`); diskcache stores bytes as they are, never pickled. Nothing is
ever evicted and nothing is deleted on read: a segment is deleted only after the server
acknowledged every step in it.

Sequence numbers: every step gets the next *local* number L at step() time (persisted: it is
derived from the segments and the consumed mark, never from diskcache's own keys). The number on
the wire is L minus the steps removed without delivery before it (dead letters, drop_oldest) minus
a shift (a resync with a server that lost data), so the server always sees 0, 1, 2, ... with no gap.
Only committed steps are ever sent, so a number the server has seen is never given to another step.

Damage: ``QUEUE_DIR/queue.json`` names the producer outside the database, so a database that was
emptied or lost is noticed. What fails its check is never read as empty and never renumbered: a
segment that fails is copied to ``QUEUE_DIR/damaged/`` and its range of numbers is *damaged*, held
on the wire until the server says whether it has those steps (a 409 below them: they are lost, and
the stream goes on after them); a database that fails to open is moved there whole, and what can
still be read and checked is put back under the same producer id and numbers. Every such event is
logged as an ERROR and kept in ``meta.damage`` (``stats["damaged"]``, ``queue status``).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache
import orjson

from agents_bar_stream import lockfile
from agents_bar_stream.exceptions import QueueLockedError, StorageError
from agents_bar_stream.numbering import (
    count_in,
    local_for_wire,
    range_end,
    wire_seq,
    with_range,
    without,
)
from agents_bar_stream.salvage import NUMBERING_KEYS, read_damaged_database
from agents_bar_stream.segment import (
    Segment,
    SegmentDamaged,
    decode_segment,
    encode_segment,
)

__all__ = ["Batch", "DiskQueue", "read_queue_summary"]

logger = logging.getLogger(__name__)

_MANIFEST = "queue.json"  # the producer id, outside the database: an emptied database is noticed
_DAMAGED = "damaged"  # where what failed its check is set aside, never deleted
# Space held back on the queue's filesystem and given up when it is full: deleting delivered steps
# is itself a write (SQLite's log must take it, and a checkpoint may grow the file), so a queue that
# filled its disk to the last byte could never make room again, however much the server took.
_RESERVE = "reserve"
_RESERVE_BYTES = 2**20
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
    # Checkpoint the write-ahead log every 256 pages (1 MiB) and cut it back to 1 MiB after: with
    # SQLite's default (1000 pages, never truncated) a full disk is taken by the log, and deleting
    # delivered segments, itself a write, can then not give any space back.
    "sqlite_wal_autocheckpoint": 256,
    # Debian's SQLite zeroes every freed page (secure_delete=1), so deleting a delivered segment writes
    # its whole size again into the log: on a full disk the deletes that would make room cannot be
    # written. The queue holds the user's own steps, and freed pages are reused by the next segments.
    "sqlite_secure_delete": 0,
    "sqlite_journal_size_limit": 2**20,
}
# The database file is given back once the queue is empty (issue 15). diskcache builds it with
# auto_vacuum=FULL, so every delete of delivered segments already cuts the database short, but in the
# write-ahead log only: the file itself shrinks at the next checkpoint, and the log's automatic one
# runs only after 256 more pages, which the last deletes of a drain never reach: about half of an
# outage's backlog stayed on disk after it was delivered. A file under 1 MiB is left as it is, and a
# checkpoint (an fsync) runs at most once a second, so a queue that empties after every batch of a
# busy stream pays nothing for this. (auto_vacuum=INCREMENTAL, whose deletes only list the freed
# pages, was tried: a drain of 300k steps was no faster, 3.1 s against 3.3 s, and the file kept its
# whole size until the queue was empty, where FULL shrinks it as the backlog drains.)
_SHRINK_ABOVE = 2**20
_SHRINK_EVERY = 1.0





class _DatabaseDamaged(Exception):
    """The queue's database cannot be trusted (why is the message); the queue recovers from it."""


class _SetAside(Exception):
    """The segment being read failed its check and was set aside: read again."""


def _is_damage(exc: BaseException) -> bool:
    """A SQLite error that says the file is not what was written (not a full or read-only disk)."""
    if isinstance(exc, sqlite3.OperationalError):
        return False  # locked, I/O error, cannot open: the disk or the system, not the bytes
    return isinstance(exc, sqlite3.DatabaseError)


def _counted_bytes(blob: bytes, items: list[bytes]) -> int:
    """The bytes a segment frees when deleted, as step() counted them (each step's length + 1) or more.

    A compressed segment (array steps, issue 12) is far smaller on disk than the steps step() counted
    against ``max_pending_bytes``: freeing only its stored size would leave the count too high for
    good, and the queue would seem full when it is not.
    """
    return max(len(blob), sum(map(len, items)) + len(items))


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{time.time_ns() % 10**9:09d}"


def _read_manifest(directory: Path) -> dict[str, Any]:
    try:
        data = orjson.loads((directory / _MANIFEST).read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        logger.warning("%s/%s cannot be read (%s); the database alone tells who this queue is", directory,
                       _MANIFEST, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(directory: Path, producer: str, service_url: str, agent_name: str) -> None:
    """Write queue.json atomically (a temporary file renamed over it, both synced)."""
    tmp = directory / f".{_MANIFEST}.tmp"
    body = orjson.dumps({"producer_id": producer, "service_url": service_url, "agent_name": agent_name},
                        option=orjson.OPT_INDENT_2)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / _MANIFEST)
    except OSError as exc:
        raise _storage_error("write the manifest of", directory, exc) from None


def _storage_error(action: str, directory: Path, exc: BaseException) -> StorageError:
    err = StorageError(f"could not {action} the queue in {directory}: {exc}")
    err.errno = getattr(exc, "errno", None) or (errno.ENOSPC if "full" in str(exc) else errno.EIO)
    return err


class Batch:
    """Steps ``[first_local, first_local + len(items))`` with no removed step among them."""

    __slots__ = ("first_local", "first_wire", "items", "nbytes", "enqueued_at")

    def __init__(self, first_local: int, first_wire: int, items: list[bytes], enqueued_at: float = 0.0) -> None:
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

    def __init__(self, directory: os.PathLike[str] | str, *, service_url: str = "", agent_name: str = "",
                 lock: bool = True) -> None:
        self.directory = Path(directory)
        self._lock_fd: int | None = None
        self._owner = lock  # only the owner of the queue sets damage aside; a reader reports it
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error("create", self.directory, exc) from None
        if lock:
            self._acquire_lock()
        self.lock = threading.RLock()
        # Held around every change of the removed ranges together with its write to disk, so that
        # those writes land in the order of the changes (the flusher's and drop_oldest's race).
        # Re-entrant: a segment that fails its check while one of those changes runs is set aside
        # under it too. Always taken before ``lock``, never after.
        self._meta_lock = threading.RLock()
        self._shrink_due = False  # see give_back_space
        self._last_shrink = -_SHRINK_EVERY
        try:
            try:
                self._cache = self._open_cache()
                self._load(service_url, agent_name)
            except _DatabaseDamaged as exc:
                if not lock:
                    # Moving files aside is for the owner of the queue, never for a reader that
                    # does not hold the lock (queue status while a process has it open).
                    raise StorageError(f"the queue database in {self.directory} is damaged ({exc}); "
                                       "`agents-bar-stream queue salvage` shows what it still holds") from None
                self._recover(str(exc), service_url, agent_name)
            if self._owner:
                self._make_reserve()
                self._shrink_due = True  # an empty queue left large by a process that did not get to it
        except BaseException:
            self._release_lock()
            raise

    @property
    def _database(self) -> Path:
        """The SQLite file diskcache keeps the queue in."""
        return self.directory / "data" / "cache.db"

    def _open_cache(self, *, expect_existing: bool = True) -> diskcache.Cache:
        db = self._database
        if (expect_existing and _read_manifest(self.directory).get("producer_id")
                and (not db.exists() or db.stat().st_size == 0)):
            # SQLite would make an empty database of it, and the queue would read as empty.
            raise _DatabaseDamaged("is missing" if not db.exists() else "is empty (0 bytes)")
        try:
            return diskcache.Cache(str(self.directory / "data"), **_SETTINGS)
        except sqlite3.Error as exc:
            if _is_damage(exc):
                raise _DatabaseDamaged(f"does not open: {exc}") from None
            raise _storage_error("open", self.directory, exc) from None
        except OSError as exc:
            raise _storage_error("open", self.directory, exc) from None

    # --- opening --------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        try:
            fd = lockfile.acquire(self.directory)
        except lockfile.LockHeld as held:
            if held.pid == str(os.getpid()):
                raise QueueLockedError(
                    f"the queue {self.directory} is open by another RemoteAgent in this process; close() that one "
                    "first (one closed while its last request was still in flight gives the queue back when "
                    "that request ends), or give each agent its own queue_dir") from None
            raise QueueLockedError(
                f"the queue {self.directory} is in use by another process{f' (pid {held.pid})' if held.pid else ''}; "
                "give each process its own queue_dir") from None
        except OSError as exc:
            raise _storage_error("lock", self.directory, exc) from None
        if fd is None:  # pragma: no cover - no flock on this system
            return
        self._lock_fd = fd
        # A queue dropped without close() (its RemoteAgent garbage collected) must not keep the
        # directory locked for the rest of the process: the descriptor goes with the object.
        self._lock_finalizer = weakref.finalize(self, lockfile.release, fd)

    def wait_for_space(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until delivered segments were deleted; True if they were.

        For a writer that the disk refused: the space delivery frees is the first it can count on.
        """
        if self._space_freed.wait(timeout):
            self._space_freed.clear()
            return True
        return False

    def stop_waiting_for_space(self) -> None:
        """End a :meth:`wait_for_space` now (the writer is closing and writes what it can)."""
        self._space_freed.set()

    def abandon_after_fork(self) -> None:
        """In a forked child: give up the directory lock's descriptor inherited from the parent.

        Only the descriptor is closed (the parent's flock stays with the parent); the database is not
        touched, since its connections belong to the parent's threads.
        """
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            self._lock_fd = None
            self._lock_finalizer()  # closes the descriptor once, which releases the flock

    def _load(self, service_url: str, agent_name: str) -> None:
        """Read the queue's state; raises _DatabaseDamaged when the database cannot be trusted."""
        cache = self._cache
        manifest = _read_manifest(self.directory)
        try:
            meta = {key: cache.get(key) for key in (*NUMBERING_KEYS, "meta.service_url", "meta.agent_name",
                                                     "meta.damaged", "meta.damage")}
            keys: list[int] = []
            dead = 0
            for key in cache.iterkeys():
                if type(key) is int:
                    keys.append(key)
                elif isinstance(key, str) and key.startswith("dead."):
                    dead += 1
        except sqlite3.Error as exc:
            if _is_damage(exc):
                raise _DatabaseDamaged(f"cannot be read: {exc}") from None
            raise _storage_error("read", self.directory, exc) from None
        producer = meta["meta.producer_id"]
        if producer is None:
            if manifest.get("producer_id"):
                # The database was emptied, replaced or lost, and SQLite opened an empty one in its
                # place: reading it as an empty queue would lose every step it held, silently.
                raise _DatabaseDamaged(f"has lost its producer id {manifest['producer_id']} (queue.json still "
                                       "names it): the database was emptied or replaced")
            producer = secrets.token_hex(8)
            meta = self._write_fresh_meta(producer, service_url, agent_name, existing=meta, new=True)
        elif any(meta[key] is None for key in NUMBERING_KEYS):
            # A queue written before every numbering key was stored from the start: store the
            # defaults now, so that from here on a key missing after damage means lost.
            meta = self._write_fresh_meta(producer, meta["meta.service_url"] or service_url,
                                          meta["meta.agent_name"] or agent_name, existing=meta)
        try:
            removed = orjson.loads(meta["meta.removed"])
            damaged = orjson.loads(meta["meta.damaged"] or b"[]")
            damage = orjson.loads(meta["meta.damage"] or b"[]")
            consumed, shift, sent_through = (int(meta[k]) for k in ("meta.consumed", "meta.shift", "meta.sent_through"))
            removed_before, removed_ranges = int(removed[0]), [[int(a), int(b)] for a, b in removed[1]]
            damaged_ranges = [[int(a), int(b)] for a, b in damaged]
        except (orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
            raise _DatabaseDamaged(f"holds a numbering that does not decode: {exc}") from None
        if manifest.get("producer_id") != producer:
            if manifest.get("producer_id"):
                logger.warning("%s/%s names producer %s, the database %s; keeping the database's",
                               self.directory, _MANIFEST, manifest["producer_id"], producer)
            _write_manifest(self.directory, producer, meta["meta.service_url"] or service_url,
                            meta["meta.agent_name"] or agent_name)
        self.producer_id: str = producer
        self.service_url: str = meta["meta.service_url"] if meta["meta.service_url"] is not None else service_url
        self.agent_name: str = meta["meta.agent_name"] if meta["meta.agent_name"] is not None else agent_name
        self.consumed: int = consumed  # every local <= consumed is delivered or removed
        self.shift: int = shift
        self.removed_before: int = removed_before  # removed locals <= consumed
        self.removed_ranges: list[list[int]] = removed_ranges  # [start, end) of removed locals > consumed
        # [start, end) of locals whose segment failed its check: held on the wire (their numbers stay
        # taken) until the server tells whether it has them; never overlapping a removed range.
        self.damaged_ranges: list[list[int]] = damaged_ranges
        self.damage: list[dict[str, Any]] = damage  # what was set aside, where and why
        self.dead_letters = dead
        self.in_flight_through = -1  # the last local read_batch is reading now (drop_oldest keeps off)
        # The last local ever handed to the server, persisted before each send: the server may have
        # applied anything up to it without this process learning so (a lost answer, a kill), so
        # drop_oldest must never drop it, or later steps would take numbers the server already holds.
        self.sent_through: int = sent_through
        keys.sort()
        # Segments: [first_local, count, nbytes, enqueue time]. Count, size and time are in the
        # segment's header and are read when the segment is first needed (the last one now, to learn
        # where numbering resumes), so opening a large backlog reads no segment bodies.
        # A deque: delivery pops from the left, one segment per step in durability="step", and a list
        # would make draining a large backlog quadratic.
        self.segments: deque[Segment] = deque(Segment(k) for k in keys)
        self._head_items: tuple[int, list[bytes]] | None = None  # decoded segment at the head
        self._undeleted: list[int] = []  # delivered segments whose delete the disk refused: tried again
        self._disk_full: StorageError | None = None  # the refused write, until space was freed
        self._space_freed = threading.Event()  # set when delivered segments were deleted (a full disk waits on it)
        self.next_local = max(self.consumed + 1, self.sent_through + 1)
        self.committed_through = self.next_local - 1
        while self.segments:
            last = self.segments[-1]
            try:
                self._fill(last)
            except _SetAside:
                continue  # it failed its check and was set aside: the one before is the last now
            except StorageError:
                if self._owner:
                    raise
                break  # a reader (queue status) reports the damage instead; its owner sets it aside
            self.next_local = max(self.next_local, last.end)
            break
        for ranges in (self.removed_ranges, self.damaged_ranges):
            if ranges:
                # Steps dropped after the last segment (then the process died before the next commit):
                # their numbers are taken for good; a new step given one would be skipped as removed.
                self.next_local = max(self.next_local, ranges[-1][1])
        self.committed_through = self.next_local - 1
        # Bytes of queued steps: exact for what this process writes; at open, an estimate from the
        # size of the last segment's steps (reading every segment back would cost seconds, and the
        # database's size is mostly SQLite's own pages for a small backlog).
        pending = self.committed_pending()
        last_filled = self.segments[-1] if self.segments else None
        self.pending_bytes = (int(pending * (last_filled.nbytes or 0) / max(1, last_filled.count or 0))
                              if last_filled else 0)

    def _write_fresh_meta(self, producer: str, service_url: str, agent_name: str,
                          existing: dict[str, Any], new: bool = False) -> dict[str, Any]:
        """Store every numbering key (the defaults where ``existing`` has none) and the queue's names."""
        meta = dict(existing)
        defaults = {"meta.producer_id": producer, "meta.consumed": -1, "meta.shift": 0,
                    "meta.removed": b"[0, []]", "meta.sent_through": -1,
                    "meta.service_url": service_url, "meta.agent_name": agent_name}
        try:
            with self._cache.transact():
                for key, value in defaults.items():
                    if meta.get(key) is None:
                        self._cache.set(key, value)
                        meta[key] = value
                if new:
                    self._cache.set("meta.created", time.time())
        except (OSError, sqlite3.Error) as exc:
            raise _storage_error("initialise", self.directory, exc) from None
        _write_manifest(self.directory, producer, service_url, agent_name)
        return meta

    # --- a full disk ---------------------------------------------------------------------------------

    def _make_reserve(self) -> None:
        path = self.directory / _RESERVE
        try:
            if path.exists() and path.stat().st_size >= _RESERVE_BYTES:
                return
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, _RESERVE_BYTES)
                else:  # pragma: no cover - not POSIX
                    os.write(fd, b"\0" * _RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:  # a full disk now: made again once the queue drains
            logger.debug("no space reserve in %s: %s", self.directory, exc)
            try:
                os.unlink(path)
            except OSError:
                pass

    def has_spare_space(self) -> bool:
        """Whether the filesystem has room beyond what the reserve would give back (freed by someone else)."""
        try:
            st = os.statvfs(self.directory)
        except (OSError, AttributeError):  # pragma: no cover - no statvfs: try the write
            return True
        return st.f_bavail * st.f_frsize >= 4 * _RESERVE_BYTES

    def _release_reserve(self) -> bool:
        """Give the reserve back to the filesystem; True if there was one to give."""
        try:
            os.unlink(self.directory / _RESERVE)
        except OSError:
            return False
        logger.warning("the disk of queue %s is full: released its %d KiB reserve so that delivery can free space",
                       self.directory, _RESERVE_BYTES // 1024)
        return True

    # --- damage ---------------------------------------------------------------------------------

    def _fill(self, seg: Segment) -> list[bytes]:
        """The steps of ``seg``, checked; a segment that fails is set aside and _SetAside raised."""
        try:
            blob = self._cache.get(seg.first)
        except sqlite3.Error as exc:
            if not _is_damage(exc):
                raise _storage_error("read", self.directory, exc) from None
            self._set_aside(seg, None, f"it cannot be read: {exc}")
            raise _SetAside() from None
        except OSError as exc:
            raise _storage_error("read", self.directory, exc) from None
        if blob is None:
            self._set_aside(seg, None, "it is missing from the database")
            raise _SetAside()
        try:
            t, items = decode_segment(blob)
        except SegmentDamaged as exc:
            self._set_aside(seg, blob, str(exc))
            raise _SetAside() from None
        seg.count, seg.nbytes, seg.time = len(items), _counted_bytes(blob, items), t
        return items

    def _set_aside(self, seg: Segment, blob: bytes | None, reason: str) -> None:
        """Move a segment that failed its check out of the queue, its bytes to damaged/, its numbers held."""
        if not self._owner:
            raise StorageError(f"the segment of steps from {seg.first} in {self.directory} {reason}; open the queue "
                               "(or run `agents-bar-stream queue salvage`) to set it aside")
        with self._meta_lock, self.lock:
            start = seg.first
            try:
                index = next(i for i, s in enumerate(self.segments) if s.first == start)
            except StopIteration:
                return  # another thread set it aside first
            if seg.count is not None:
                end = start + seg.count  # counted when this process wrote or read it whole
            elif index + 1 < len(self.segments):
                end = self.segments[index + 1].first
            else:
                # The last segment: its steps up to the last one ever sent may be on the server;
                # the numbers after that were never used and are free again.
                end = max(start, self.sent_through + 1, self.consumed + 1)
            del self.segments[index]
            if self._head_items is not None and self._head_items[0] == start:
                self._head_items = None
            held = without(with_range([], start, end) if end > start else [], self.removed_ranges)
            for a, b in held:
                self.damaged_ranges = with_range(self.damaged_ranges, a, b)
            path = None
            if blob is not None:
                path = self._write_aside(f"segment-{start}", blob)
            record = {"time": time.time(), "what": "segment", "first_seq": start, "end_seq": end,
                      "steps": None if seg.count is None else seg.count, "reason": reason,
                      "path": str(path) if path is not None else None}
            self.damage.append(record)
            logger.error("queue %s: the segment of steps from %d %s; it was set aside%s and is never sent as it "
                         "is; steps %d..%d are held until the server says whether it has them",
                         self.directory, start, reason, f" to {path}" if path else "", start, end - 1)
            try:
                with self._cache.transact():
                    self._cache.set("meta.damaged", orjson.dumps(self.damaged_ranges))
                    self._cache.set("meta.damage", orjson.dumps(self.damage))
                    self._cache.delete(start)
            except (OSError, sqlite3.Error) as exc:
                # Found again (and set aside again) at the next open; nothing is lost meanwhile.
                logger.warning("could not record the damaged segment in %s: %s", self.directory, exc)

    def _write_aside(self, name: str, blob: bytes) -> Path | None:
        folder = self.directory / _DAMAGED
        path = folder / f"{name}-{_stamp()}.bin"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
        except OSError as exc:
            logger.warning("could not copy a damaged segment to %s: %s", path, exc)
            return None
        return path

    def _recover(self, reason: str, service_url: str, agent_name: str) -> None:
        """The database failed to open or to read: move it aside whole, put back what checks out."""
        try:
            self._cache.close()
        except Exception:  # noqa: BLE001 - it is being given up
            pass
        aside = self.directory / _DAMAGED / f"database-{_stamp()}"
        try:
            aside.parent.mkdir(mode=0o700, exist_ok=True)
            if (self.directory / "data").exists():
                os.rename(self.directory / "data", aside)
            else:
                aside.mkdir(mode=0o700)  # nothing to keep, but the record points somewhere real
        except OSError as exc:
            raise _storage_error("set aside the damaged database of", self.directory, exc) from None
        salvage = read_damaged_database(aside)
        manifest = _read_manifest(self.directory)
        known = salvage.numbering_known() and manifest.get("producer_id") in (None, salvage.meta["meta.producer_id"])
        self._cache = self._open_cache(expect_existing=False)
        record: dict[str, Any] = {"time": time.time(), "what": "database", "reason": reason, "path": str(aside),
                                  "steps": None, "recovered": 0, "unreadable_segments": len(salvage.bad_segments),
                                  "errors": salvage.errors[:5]}
        if known:
            try:
                recovered = self._rebuild(salvage, record)
            except (OSError, sqlite3.Error) as exc:
                raise _storage_error("rebuild", self.directory, exc) from None
            logger.error("queue %s: the database %s; it was moved to %s and %d steps that pass their check were "
                         "put back under producer %s with their numbers (damaged ranges: %s)", self.directory,
                         reason, aside, recovered, salvage.meta["meta.producer_id"], record.get("damaged") or "none")
        else:
            # Without the numbering, a step put back could take a number the server already holds
            # (and be dropped there as a duplicate): the salvage stays aside for a person.
            record["note"] = ("the producer's numbering was not readable: its steps stay aside (queue salvage "
                              "exports them) and this queue starts a new producer")
            try:
                self._cache.set("meta.damage", orjson.dumps([record]))
            except (OSError, sqlite3.Error) as exc:
                raise _storage_error("rebuild", self.directory, exc) from None
            logger.error("queue %s: the database %s; it was moved to %s. Its numbering could not be read back, so "
                         "the %d steps that pass their check stay there (`agents-bar-stream queue salvage %s` "
                         "exports them); this queue starts again as a new producer", self.directory, reason,
                         aside, salvage.steps, self.directory)
            try:
                os.unlink(self.directory / _MANIFEST)
            except OSError:
                pass
        self._load(service_url or str(salvage.meta.get("meta.service_url") or ""),
                   agent_name or str(salvage.meta.get("meta.agent_name") or ""))

    def _rebuild(self, salvage: Any, record: dict[str, Any]) -> int:
        """Write a fresh database from a salvage whose numbering is known; returns the steps put back."""
        meta = salvage.meta
        consumed, sent_through = int(meta["meta.consumed"]), int(meta["meta.sent_through"])
        removed = orjson.loads(meta["meta.removed"])
        removed_ranges = [[int(a), int(b)] for a, b in removed[1]]
        old_damaged = [[int(a), int(b)] for a, b in orjson.loads(meta.get("meta.damaged") or b"[]")]
        kept = {k: v for k, v in salvage.segments.items() if k + len(v[1]) - 1 > consumed}
        ends = [k + len(v[1]) for k, v in kept.items()] + [r[1] for r in removed_ranges + old_damaged]
        next_local = max([consumed + 1, sent_through + 1, *ends])
        # Every number from the consumed mark to next_local that no good segment holds is damaged.
        covered = removed_ranges
        for k, v in kept.items():
            covered = with_range(covered, k, k + len(v[1]))
        damaged = without([[consumed + 1, next_local]] if next_local > consumed + 1 else [], covered)
        recovered = sum(len(v[1]) for v in kept.values())
        record.update({"recovered": recovered, "damaged": damaged})
        history = orjson.loads(meta.get("meta.damage") or b"[]")
        with self._cache.transact():
            for key in NUMBERING_KEYS + ("meta.service_url", "meta.agent_name", "meta.created"):
                if key in meta:
                    self._cache.set(key, meta[key])
            self._cache.set("meta.damaged", orjson.dumps(damaged))
            self._cache.set("meta.damage", orjson.dumps([*history, record]))
            for key, (t, items) in kept.items():
                self._cache.set(key, encode_segment(items, t))
            for key, value in salvage.dead_letters.items():
                self._cache.set(key, value)
        return recovered

    # --- writing --------------------------------------------------------------------------------

    def write_segment(self, first_local: int, items: list[bytes], t: float) -> int:
        """Commit ``items`` as one segment and offer it to the flusher; returns its size."""
        return self.write_segments([(first_local, items)], t)

    def write_segments(self, chunks: list[tuple[int, list[bytes]]], t: float) -> int:
        """Commit consecutive segments ``(first_local, items)`` in one transaction, then offer them to the
        flusher: all of them or, on a disk error, none. Returns their size."""
        segments = self._store(chunks, t)
        for segment in segments:
            self.publish_segment(segment)
        return sum(segment.nbytes or 0 for segment in segments)

    def store_segment(self, first_local: int, items: list[bytes], t: float) -> Segment:
        """Commit ``items`` to disk as one segment, not yet visible to readers; called with steps in order only."""
        return self._store([(first_local, items)], t)[0]

    def _store(self, chunks: list[tuple[int, list[bytes]]], t: float) -> list[Segment]:
        full = self._disk_full
        if full is not None and not self.has_spare_space():
            # Still full, and nothing freed since: a write now would only take the bytes that the
            # released reserve holds for delivery's own bookkeeping (the sent mark, the deletes of
            # delivered segments), and with them the one way the queue has to make room again.
            raise full
        blobs = [encode_segment(items, t) for _, items in chunks]
        try:
            if len(chunks) == 1:
                self._cache.set(chunks[0][0], blobs[0])
            else:
                with self._cache.transact():
                    for (first_local, _), blob in zip(chunks, blobs, strict=True):
                        self._cache.set(first_local, blob)
        except (OSError, sqlite3.Error) as exc:
            self._release_reserve()  # for the flusher's bookkeeping, which frees the space; step() waits
            self._disk_full = _storage_error("write to", self.directory, exc)
            raise self._disk_full from None
        self._disk_full = None
        return [Segment(first_local, len(items), _counted_bytes(blob, items), t)
                for (first_local, items), blob in zip(chunks, blobs, strict=True)]

    def publish_segment(self, segment: Segment, then: Callable[[], None] | None = None) -> None:
        """Make a segment written by :meth:`store_segment` readable by the flusher and counted as pending.

        ``then`` runs in the same critical section: the group commit stops counting these steps as
        in memory there, so that a reader of ``pending`` (which holds this lock) never counts them
        twice: once on disk and once more in memory.
        """
        with self.lock:
            self.segments.append(segment)
            self.committed_through = segment.end - 1
            if then is not None:
                then()

    # --- reading and consuming (the flusher's side) --------------------------------------------------

    def wire_seq(self, local: int) -> int:
        """The sequence number the server knows local step ``local`` by."""
        return wire_seq(local, self.removed_before, self.removed_ranges, self.shift)

    def local_for_wire(self, wire: int, first_local: int) -> int:
        """Inverse of wire_seq for locals >= first_local (which must not be removed)."""
        return local_for_wire(wire, first_local, self.removed_before, self.removed_ranges, self.shift)

    def committed_pending(self) -> int:
        """Committed steps not consumed (removed ones excluded)."""
        with self.lock:  # consumed, committed_through and removed_ranges change together
            first = self.consumed + 1
            n = self.committed_through - first + 1
            for ranges in (self.removed_ranges, self.damaged_ranges):  # disjoint by construction
                n -= count_in(ranges, first, self.committed_through + 1)
            return max(0, n)

    def pending_with(self, in_memory: Callable[[], int]) -> int:
        """``committed_pending()`` plus ``in_memory()``, both read under the queue's lock.

        For a writer that moves steps from memory into the queue under this lock (through
        ``publish_segment(then=...)``): the sum never counts a step twice nor misses one.
        """
        with self.lock:
            return self.committed_pending() + in_memory()

    def delivered_through(self, local: int, in_memory: Callable[[], int]) -> bool:
        """Whether step ``local`` and all before it were consumed, or nothing is pending at all.

        Read under the queue's lock, with which the consumed mark and the callbacks of
        ``mark_consumed(then=...)`` move together.
        """
        with self.lock:
            return self.consumed >= local or self.committed_pending() + in_memory() == 0

    def read_batch(self, max_steps: int, max_bytes: int) -> Batch | None:
        """The oldest committed, unconsumed steps (at most max_steps, about max_bytes), or None."""
        while True:
            try:
                return self._read_batch(max_steps, max_bytes)
            except _SetAside:
                continue  # a segment failed its check and was set aside: its range is skipped now

    def _read_batch(self, max_steps: int, max_bytes: int) -> Batch | None:
        with self.lock:
            first = self.consumed + 1
            while True:
                end = range_end(self.removed_ranges, first) or range_end(self.damaged_ranges, first)
                if end is None:
                    break
                first = end
            if first > self.committed_through:
                return None
            stop_at = self.committed_through + 1
            # A batch holds no removed step (its numbers are not on the wire) and no damaged one.
            for ranges in (self.removed_ranges, self.damaged_ranges):
                for start, _end in ranges:
                    if start > first:
                        stop_at = min(stop_at, start)
                        break
            wire = self.wire_seq(first)
            # drop_oldest must not delete what is being read and sent: claim the most we may read.
            last_wanted = min(stop_at - 1, first + max_steps - 1)
            self.in_flight_through = last_wanted
            segments = []
            for seg in self.segments:  # from the oldest; the ones wanted are at the front
                if seg.first > last_wanted:
                    break
                segments.append(seg)
        # The segments are read from disk outside the lock (a reopened backlog has not even their
        # headers in memory yet): step() publishes under it and must never wait for these reads.
        # Nothing can take them away meanwhile: drop_oldest keeps off everything up to last_wanted.
        items: list[bytes] = []
        size = 0
        i = 0
        local = first
        while i < len(segments) and len(items) < max_steps and local < stop_at:
            seg = segments[i]
            if seg.first > local:
                break  # a gap no range accounts for: never bridge it
            cached = self._head_items
            if cached is not None and cached[0] == seg.first:
                seg_items = cached[1]
            else:
                try:
                    seg_items = self._fill(seg)
                except _SetAside:
                    with self.lock:
                        self.in_flight_through = -1
                    raise
                self._head_items = (seg.first, seg_items)
            if seg.end <= local:  # wholly consumed already (the head of a partly delivered backlog)
                i += 1
                continue
            offset = local - seg.first
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
        return Batch(first, wire, items, segments[0].time or 0.0)

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
            try:
                self._cache.set("meta.sent_through", last)
            except (OSError, sqlite3.Error):
                if not self._release_reserve():
                    raise
                self._cache.set("meta.sent_through", last)
        except (OSError, sqlite3.Error) as exc:
            # Not sent without the mark on disk: a restart would forget it, and drop_oldest could
            # then drop steps the server holds. (A full disk cannot record deliveries either, so
            # waiting costs no space.) The flusher backs off and tries again.
            raise _storage_error("record the steps being sent in", self.directory, exc) from None
        return True

    def mark_consumed(self, through_local: int, then: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Everything up to ``through_local`` is delivered: persist that and delete whole segments.

        ``then(steps consumed now)`` runs in the critical section that moves the consumed mark, so
        that whoever reads the mark under this lock (flush()) also sees what ``then`` counted.
        Returns (steps consumed now, bytes freed).
        """
        with self._meta_lock:
            return self._mark_consumed(through_local, then)

    def _mark_consumed(self, through_local: int, then: Callable[[int], None] | None) -> tuple[int, int]:
        with self.lock:
            if through_local <= self.consumed:
                return 0, 0
            before = self.committed_pending()
            doomed = []
            while self.segments:
                seg = self.segments[0]
                if seg.count is None:
                    try:
                        self._fill(seg)
                    except _SetAside:
                        continue  # set aside: its numbers are a damaged range now
                if seg.end - 1 > through_local:
                    break
                doomed.append(self.segments.popleft())
            self.consumed = through_local
            # A removed range is folded into the count only once no segment at or below it is held:
            # a 409 may rewind into a held, partly delivered segment, and wire_seq of the steps there
            # must still see every removed step after them.
            held_from = self.segments[0].first if self.segments else through_local + 1
            while (self.removed_ranges and self.removed_ranges[0][1] - 1 <= through_local
                   and self.removed_ranges[0][1] <= held_from):
                start, end = self.removed_ranges.pop(0)
                self.removed_before += end - start
            removed_meta = orjson.dumps([self.removed_before, self.removed_ranges])
            damaged_before = len(self.damaged_ranges)
            while (self.damaged_ranges and self.damaged_ranges[0][1] - 1 <= through_local
                   and self.damaged_ranges[0][1] <= held_from):
                self.damaged_ranges.pop(0)
            damaged_meta = orjson.dumps(self.damaged_ranges) if len(self.damaged_ranges) != damaged_before else None
            freed = sum(s.nbytes or 0 for s in doomed)
            undeleted, self._undeleted = self._undeleted, []
            self.pending_bytes = max(0, self.pending_bytes - freed)
            if self._head_items is not None and any(s.first == self._head_items[0] for s in doomed):
                self._head_items = None
            consumed_now = before - self.committed_pending()
            if then is not None:
                then(consumed_now)
        try:
            with self._cache.transact():
                self._cache.set("meta.consumed", through_local)
                self._cache.set("meta.removed", removed_meta)
                if damaged_meta is not None:
                    self._cache.set("meta.damaged", damaged_meta)
                for key in [*undeleted, *(seg.first for seg in doomed)]:
                    self._cache.delete(key)
        except (OSError, sqlite3.Error) as exc:
            # The server has these steps; if the delete is lost they are re-sent as duplicates,
            # which the server ignores. Log and carry on; the next delivery tries the deletes again.
            with self.lock:
                self._undeleted = [*undeleted, *(seg.first for seg in doomed), *self._undeleted]
            self._release_reserve()
            logger.warning("could not record delivery in %s: %s", self.directory, exc)
        else:
            if doomed or undeleted:
                self._disk_full = None  # pages freed inside the database: the next write may fit
                self._space_freed.set()
            if doomed:
                self._shrink_due = True  # see give_back_space: pages were freed in the log
            if (consumed_now and self._owner and not (self.directory / _RESERVE).exists()
                    and not self.committed_pending()):
                self._make_reserve()  # drained after a full disk: hold the reserve back again
        return consumed_now, freed

    def give_back_space(self) -> bool:
        """Shrink the database file to what the queue holds, once it is empty; True if it shrank.

        The flusher calls this when it finds nothing to deliver, in its own thread and outside the
        queue's locks: a passive checkpoint waits for no reader or writer, so neither step() nor the
        group commit pauses for it (when one of them holds the log, the checkpoint stops short and a
        later idle turn tries again).
        """
        if not self._shrink_due or not self._owner or self.committed_pending():
            return False
        now = time.monotonic()
        if now - self._last_shrink < _SHRINK_EVERY:
            return False  # still due: the flusher's next idle turn comes back
        self._shrink_due = False
        db = self._database
        try:
            before = db.stat().st_size
            if before <= _SHRINK_ABOVE:
                return False
            self._last_shrink = now
            # A connection of its own, for this only: diskcache's connections are per thread and its own.
            # mode=rw: never create the file (a queue directory retired meanwhile).
            con = sqlite3.connect(db.absolute().as_uri() + "?mode=rw", uri=True, timeout=0, isolation_level=None)
            try:
                _, log_frames, checkpointed = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                con.close()
            after = db.stat().st_size
        except (OSError, sqlite3.Error) as exc:
            logger.debug("could not shrink %s: %s", db, exc)
            self._shrink_due = True
            return False
        if after >= before:
            # A passive checkpoint reports no "busy": one that a reader's snapshot stopped short has
            # copied fewer frames than the log holds, and the next idle turn tries again.
            self._shrink_due = checkpointed != log_frames
            return False
        logger.info("queue %s is empty: gave %.1f MiB of disk back", self.directory, (before - after) / 2**20)
        return True

    def dead_letter(self, local: int, item: bytes, status: int, detail: str,
                    then: Callable[[], None] | None = None) -> None:
        """Move step ``local`` (the oldest unconsumed) to the dead-letter store, with the server's reason.

        ``then()`` runs in the critical section that removes the step from the pending count.
        """
        record = orjson.dumps({"seq": local, "status": status, "detail": detail, "time": time.time(),
                               "step": orjson.Fragment(item)})
        with self._meta_lock:
            with self.lock:
                ranges = with_range(self.removed_ranges, local, local + 1)
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

    def drop_oldest(self, after_local: int, need_bytes: int) -> tuple[int, int]:
        """Remove whole committed segments that start after ``after_local`` until ``need_bytes`` are free.

        Returns (steps dropped, bytes freed). Dropped steps never reach the server; numbering on the
        wire stays gapless.
        """
        with self._meta_lock:
            dropped = freed = 0
            with self.lock:
                doomed = []
                for seg in list(self.segments):  # a copy: one that fails its check leaves the deque
                    if freed >= need_bytes:
                        break
                    if seg.first <= max(after_local, self.consumed, self.in_flight_through, self.sent_through):
                        continue
                    if seg.count is None:
                        try:
                            self._fill(seg)
                        except _SetAside:
                            continue
                    doomed.append(seg)
                    freed += seg.nbytes or 0
                if not doomed:
                    return 0, 0
                # In memory first, so that the flusher never reads what is being dropped; put back
                # below if the disk refuses.
                old_ranges, old_bytes = self.removed_ranges, self.pending_bytes
                ranges = old_ranges
                for seg in doomed:
                    self.segments.remove(seg)
                    ranges = with_range(ranges, seg.first, seg.end)
                    dropped += seg.count or 0
                    if self._head_items is not None and self._head_items[0] == seg.first:
                        self._head_items = None
                self.removed_ranges = ranges
                self.pending_bytes = max(0, self.pending_bytes - freed)
                removed_meta = orjson.dumps([self.removed_before, ranges])
            try:
                with self._cache.transact():
                    self._cache.set("meta.removed", removed_meta)
                    for seg in doomed:
                        self._cache.delete(seg.first)
            except (OSError, sqlite3.Error) as exc:
                with self.lock:
                    self.removed_ranges, self.pending_bytes = old_ranges, old_bytes
                    self.segments = deque(sorted([*self.segments, *doomed], key=lambda s: s.first))
                raise _storage_error("drop from", self.directory, exc) from None
            return dropped, freed

    def rewind_or_shift(self, expected_wire: int, head_local: int) -> tuple[str, int]:
        """The server expects ``expected_wire`` (409): resend from there, or go on without what it lacks.

        Returns ``("rewound", 0)`` when the step it expects is still held here (it is sent next);
        ``("damaged", n)`` when it lacks ``n`` steps of a segment that failed its check here, and
        ``("lost", n)`` when it lacks ``n`` steps this client delivered and deleted (the server lost
        them). In both the numbering moves so that the head is what the server expects.
        """
        with self.lock:
            oldest_held = self.segments[0].first if self.segments else head_local
            target = (self.local_for_wire(expected_wire, oldest_held)
                      if expected_wire >= self.wire_seq(oldest_held) else None)
            in_damage = any(self.wire_seq(a) <= expected_wire < self.wire_seq(a) + (b - a)
                            for a, b in self.damaged_ranges if b > self.consumed)
            if (not in_damage and target is not None and oldest_held <= target <= head_local
                    and range_end(self.removed_ranges, target) is None):
                self.consumed = target - 1
                key, value, outcome = "meta.consumed", self.consumed, ("rewound", 0)
            else:
                missing = self.wire_seq(head_local) - expected_wire
                self.shift += missing
                key, value, outcome = "meta.shift", self.shift, ("damaged" if in_damage else "lost", missing)
            try:
                self._cache.set(key, value)
            except (OSError, sqlite3.Error) as exc:
                raise _storage_error("record the server's position in", self.directory, exc) from None
            return outcome

    # --- reading for people --------------------------------------------------------------------------

    def verify(self) -> int:
        """Read and check every queued segment now (opening reads only the last); returns the steps that passed.

        What fails is set aside as delivery would set it aside. Costs a read of the whole queue.
        """
        passed = 0
        with self._meta_lock, self.lock:
            for seg in list(self.segments):  # a copy: one that fails its check leaves the deque
                try:
                    passed += len(self._fill(seg))
                except _SetAside:
                    continue
            if self._head_items is not None:
                self._head_items = None
        return passed

    def oldest_pending_time(self) -> float | None:
        with self._meta_lock, self.lock:
            for seg in list(self.segments):  # a copy: one that fails its check leaves the deque
                if seg.time is None:
                    try:
                        self._fill(seg)
                    except _SetAside:
                        continue
                if seg.end - 1 > self.consumed:
                    return float(seg.time or 0.0)
        return None

    def dead_letter_records(self) -> list[dict[str, Any]]:
        out = []
        try:
            for key in sorted(k for k in self._cache.iterkeys() if isinstance(k, str) and k.startswith("dead.")):
                blob = self._cache.get(key)
                if blob is None:
                    continue
                try:
                    out.append(orjson.loads(blob))
                except orjson.JSONDecodeError as exc:
                    logger.error("dead letter %s in %s does not decode (%s); skipped", key, self.directory, exc)
        except (OSError, sqlite3.Error) as exc:
            raise _storage_error("read the dead letters of", self.directory, exc) from None
        return out

    def remove_dead_letters(self) -> int:
        n = 0
        try:
            with self._cache.transact():
                for key in [k for k in self._cache.iterkeys() if isinstance(k, str) and k.startswith("dead.")]:
                    self._cache.delete(key)
                    n += 1
        except (OSError, sqlite3.Error) as exc:
            raise _storage_error("remove the dead letters of", self.directory, exc) from None
        with self.lock:
            self.dead_letters = 0
        return n

    def close(self) -> None:
        try:
            self._cache.close()
        except (OSError, sqlite3.Error) as exc:
            logger.warning("closing the queue database in %s: %s", self.directory, exc)
        finally:
            self._release_lock()


def read_queue_summary(directory: os.PathLike[str] | str) -> dict[str, Any]:
    """What a person wants to know of a queue, read without taking its lock (for ``queue status``)."""
    directory = Path(directory)
    if not (directory / "data").is_dir():
        raise StorageError(f"{directory} is not a queue directory (it has no data/)")
    locked_by = lockfile.holder(directory)
    q = DiskQueue(directory, lock=False)
    try:
        damaged = list(q.damage)
        try:
            oldest = q.oldest_pending_time()
        except StorageError as exc:  # a segment failed its check; its owner sets it aside
            oldest = None
            damaged.append({"what": "segment", "reason": str(exc), "path": None, "time": time.time()})
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
            "damaged": damaged,
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
