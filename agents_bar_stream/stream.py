"""One agent's streaming pipeline: validate → queue (memory, then disk) → flusher → server.

``Stream`` ties a :class:`~agents_bar_stream.storage.DiskQueue` to a
:class:`~agents_bar_stream.flusher.Flusher` and owns their life: started lazily, one per process
(a forked child builds its own), stopped by ``close()`` or, bounded in time, at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from agents_bar_stream import config as cfg
from agents_bar_stream.exceptions import (
    AuthenticationError,
    ClosedError,
    InvalidStepError,
    QueueFullError,
    QueueLockedError,
    StorageError,
)
from agents_bar_stream.flusher import DeliveryStats, Flusher
from agents_bar_stream.protocol import StepEncoder, agent_obs_shape, agent_sizes
from agents_bar_stream.session import Session
from agents_bar_stream.storage import DiskQueue

__all__ = ["Stream", "idle_stats"]

logger = logging.getLogger(__name__)

_SEGMENT_STEPS = 4096  # most steps in one committed segment (about 1 MB of CartPole steps)
# ... and at most about this many bytes: 4096 camera frames would be one blob of 230 MB, read whole
# by the flusher and compressed in one go (issue 12). 4 MiB is ~70 steps of 84x84x4 uint8 frames,
# plenty for zstd to find each step's next_obs again as the next step's obs.
_SEGMENT_BYTES = 4 * 2**20
# Most bytes of steps that step() keeps in memory for the group commit: a loop that outruns the
# committer (camera frames at 1.5 GB/s) waits for it here instead of growing the process without
# bound; memory then holds at most about twice this (the buffer and the batch being written).
_BUFFER_BYTES = 32 * 2**20
# Steps larger than this count towards _BUFFER_BYTES; smaller ones (CartPole's ~200 bytes) do not, so
# that their step() pays one comparison for it: 32 MiB of them is 160k steps, far more than the
# committer leaves in memory between two commits.
_LARGE_STEP = 2048
# Most bytes of one segment while the group commit recovers from a full disk (see _commit_once).
_RECOVERY_SEGMENT_BYTES = 64 * 2**10


def _counters(enqueued: int, dropped: int, delivery: DeliveryStats) -> dict[str, Any]:
    """The counters of ``stats``: step()'s own two and the flusher's, in the order the README lists them."""
    return {"enqueued": enqueued, "delivered": delivery.delivered, "duplicates": delivery.duplicates,
            "retries": delivery.retries, "dead_lettered": delivery.dead_lettered, "dropped": dropped,
            "sequence_lost": delivery.sequence_lost, "damaged_steps": delivery.damaged_steps,
            "last_error": delivery.last_error, "online": delivery.online, "mode": delivery.mode}


def idle_stats(durability: str) -> dict[str, Any]:
    """What ``RemoteAgent.stats`` holds for the queue before it is opened: every key, nothing counted."""
    return {**_counters(0, 0, DeliveryStats()), "pending": 0, "bytes_pending": 0, "oldest_pending_age": None,
            "queue_dir": None, "producer_id": None, "durability": durability, "storage_error": None, "damaged": []}


#: Most worker queues of one agent under one root (slots 0 .. MAX_WORKER_SLOTS - 1).
MAX_WORKER_SLOTS = 256


def worker_slot_dir(base: Path, slot: int) -> Path:
    """The queue directory of worker ``slot`` of the agent whose default queue is ``base`` (slot 0)."""
    return base if slot == 0 else base.with_name(f"{base.name}.w{slot}")


def open_worker_slot(base: Path, *, service_url: str, agent_name: str) -> DiskQueue:
    """The first worker queue of the agent that no process (nor RemoteAgent here) holds.

    N processes or threads streaming to one agent with the default queue_dir need nothing by hand:
    the first takes ``base`` (the queue of a single-process program, as before), the next ones
    ``base.w1``, ``base.w2``, ... each with its own producer id. A slot is claimed by the queue's
    lock (an flock, which the kernel gives back however its process dies), and slots are tried
    lowest first: a restarted worker takes the slot a dead one left, with its steps, and
    delivers them. Raises QueueLockedError when every slot is held.
    """
    for slot in range(MAX_WORKER_SLOTS):
        directory = worker_slot_dir(base, slot)
        try:
            queue = DiskQueue(directory, service_url=service_url, agent_name=agent_name)
        except QueueLockedError:
            continue
        if slot:
            logger.info("the queue of %r at %s is in use; this RemoteAgent uses worker queue %s (producer %s)",
                        agent_name, base, directory, queue.producer_id)
        return queue
    raise QueueLockedError(f"all {MAX_WORKER_SLOTS} worker queues of {agent_name!r} under {base.parent} are in use")


# Streams alive in this process, for the fork and exit hooks (weak: an agent that is garbage
# collected takes its stream with it).
_LIVE: weakref.WeakSet[Stream] = weakref.WeakSet()


class Stream:
    """See the module docstring. Built by RemoteAgent on first use; not part of the public API."""

    def __init__(self, session: Session, agent_name: str, *, obs_size: int | None, action_size: int | None,
                 discrete: bool | None, confirmed: bool = False,
                 options: cfg.StreamOptions = cfg.StreamOptions(),
                 on_delivered: Callable[[int, int], None] | None = None,
                 on_error: Callable[[Exception, dict[str, Any]], None] | None = None) -> None:
        self.pid = os.getpid()
        self.agent_name = agent_name
        if options.queue_dir is None:
            self.queue = open_worker_slot(cfg.default_queue_dir(session.base_url, agent_name),
                                          service_url=session.base_url, agent_name=agent_name)
        else:
            self.queue = DiskQueue(options.queue_dir, service_url=session.base_url, agent_name=agent_name)
        self.durability = options.durability
        self.commit_interval = options.commit_interval
        self.max_pending_bytes = options.max_pending_bytes
        self.on_full = options.on_full
        self.block_timeout = options.block_timeout
        self.close_timeout = options.close_timeout
        self._encoder = StepEncoder(obs_size=obs_size, action_size=action_size, discrete=discrete, confirmed=confirmed)
        # step() takes the bare lock (a C-level `with`, cheaper than the Condition's Python-level
        # one); waits and notifications go through the Condition over the same lock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.forked = False  # set in a child process after fork(): this stream belongs to the parent
        self._buffer: list[bytes] = []
        self._buffer_bytes = 0  # what step() counted for the large steps in _buffer (see _BUFFER_BYTES)
        self._buffer_first = self.queue.next_local
        self._buffer_time = 0.0
        # Steps taken by the committer and not yet published. Written by the committer only: under
        # _cond when it takes the buffer, under the queue's lock when a segment is published;
        # `pending` holds both, so it always sees a whole picture.
        self._committing = 0
        self._next_local = self.queue.next_local
        self._bytes = self.queue.pending_bytes
        self._storage_error: StorageError | None = None
        self._closed = False
        self._started = False
        self.left_at_close = 0  # steps still queued when close() returned
        # step() is the one writer of these two; the flusher owns the other counters (its DeliveryStats).
        self.enqueued = 0
        self.dropped = 0
        self._flusher = Flusher(self.queue, session, agent_name, batch_size=options.batch_size,
                                flush_interval=options.flush_interval, policy=options.retry_policy,
                                on_progress=self._on_progress, on_agent_info=self._on_agent_info,
                                agent_known=confirmed, on_delivered=on_delivered, on_error=on_error,
                                error_interval=options.error_interval)
        self._committer: threading.Thread | None = None
        self._commit_wake = threading.Event()
        _LIVE.add(self)
        if self.queue.committed_pending():
            logger.info("queue %s holds %d steps from an earlier run; delivering them first",
                        self.queue.directory, self.queue.committed_pending())
            self.start()

    # --- life --------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._started or self._closed:
                return
            self._started = True
        if self.durability == "batch":
            self._committer = threading.Thread(target=self._commit_loop, daemon=True,
                                               name=f"agents-bar-stream-committer[{self.agent_name}]")
            self._committer.start()
        self._flusher.start()

    def wake(self) -> None:
        """Cut the flusher's current backoff short (something changed on the server)."""
        self._flusher.hurry()
        self._flusher.wake_up()

    def learn_shapes(self, obs_size: int | None, action_size: int | None, discrete: bool | None,
                     obs_shape: tuple[int, ...] | None = None) -> None:
        """The agent's own sizes (from the server): they replace what was learnt from steps.

        A wrong first step must not hold every later, correct one to its shape (issue 14): the
        steps already queued in that shape are refused by the server and dead-lettered, and the
        ones that follow are checked against the agent's real sizes.
        """
        with self._cond:
            enc = self._encoder
            before = (enc.obs_size, enc.action_size, enc.discrete)
            enc.confirm(obs_size, action_size, discrete, obs_shape)
            if enc.confirmed:
                self._flusher.mark_agent_known()
            after = (enc.obs_size, enc.action_size, enc.discrete)
        if None not in before and before != after:
            logger.warning("the steps of %r had the shape (obs %s, action %s, discrete %s) but the agent's is "
                           "(obs %s, action %s, discrete %s); later steps are checked against the agent's, and "
                           "the server will refuse those already queued in the other shape (dead letters)",
                           self.agent_name, *before, *after)

    def _on_agent_info(self, info: dict[str, Any]) -> None:
        """The flusher read the agent's details from the server."""
        self.learn_shapes(*agent_sizes(info), obs_shape=agent_obs_shape(info))

    # --- step() ------------------------------------------------------------------------------------

    def put(self, obs: Any, action: Any, reward: Any, next_obs: Any, done: Any,
            policy_version: str | None = None) -> bool:
        with self._lock:
            if self._closed or self._storage_error is not None:
                self._check_writable()
            data = self._encoder.encode(obs, action, reward, next_obs, done, policy_version)
            size = len(data) + 1
            if self._bytes + size > self.max_pending_bytes:
                self._make_room(size)
            if self.durability == "step":
                self.queue.write_segment(self._next_local, [data], time.time())
                self._flusher.wake_up()
            else:
                if not self._buffer:
                    self._buffer_time = time.time()
                self._buffer.append(data)
                if size > _LARGE_STEP:  # one test for a list step (~200 bytes); frames are counted
                    self._buffer_bytes += size
                    if self._buffer_bytes > _BUFFER_BYTES:
                        self._wait_for_committer()
            self._next_local += 1
            self._bytes += size
            self.enqueued += 1
        if not self._started:
            self.start()
        return True

    def put_many(self, rows: list[tuple], policy_version: str | None = None) -> int:
        """Queue ``rows`` (tuples of obs, action, reward, next_obs, done) in order, all or none; returns how many.

        Every row is checked before the first is queued: a bad one raises :class:`InvalidStepError`
        naming its position in ``rows``, and the encoder forgets what the rows before it taught.
        """
        with self._lock:
            self._check_writable()
            encoder = self._encoder
            learnt = encoder.snapshot()
            items = []
            try:
                for obs, action, reward, next_obs, done in rows:
                    items.append(encoder.encode(obs, action, reward, next_obs, done, policy_version))
            except BaseException as exc:
                encoder.restore(learnt)
                if not isinstance(exc, InvalidStepError):
                    raise
                row = len(items)  # the rows before it were encoded
                err = type(exc)(f"row {row}: {exc}; none of the {len(rows)} rows was queued")
                err.row = row
                raise err from None
            taught = encoder.snapshot()
            try:
                size = sum(map(len, items)) + len(items)
                if size > self.max_pending_bytes:
                    raise QueueFullError(f"the {len(items)} rows take {size} bytes, more than the queue of "
                                         f"{self.agent_name!r} may hold (max_pending_bytes {self.max_pending_bytes}); "
                                         "none was queued")
                if self._bytes + size > self.max_pending_bytes:
                    self._make_room(size)
                if self.durability == "step":
                    self._write_now(items)
            except BaseException:
                # Nothing of these rows was queued. _make_room waits with the lock released: what the
                # encoder learnt meanwhile (the agent's own sizes, another thread's step) is kept.
                if encoder.snapshot() == taught:
                    encoder.restore(learnt)
                raise
            if self.durability != "step":
                if not self._buffer:
                    self._buffer_time = time.time()
                self._buffer.extend(items)
                self._count(items)
                large = sum(len(item) + 1 for item in items if len(item) + 1 > _LARGE_STEP)
                if large:
                    self._buffer_bytes += large
                    if self._buffer_bytes > _BUFFER_BYTES:
                        self._wait_for_committer()
        if not self._started:
            self.start()
        return len(rows)

    def _write_now(self, items: list[bytes]) -> None:
        """durability="step": commit ``items`` before returning, as segments of the group commit's size,
        all in one transaction (a disk error leaves none of them queued). Called with the lock held."""
        chunks = []
        done = 0
        while done < len(items):
            chunk = _next_segment(items, done, _SEGMENT_BYTES)
            chunks.append((self._next_local + done, chunk))
            done += len(chunk)
        self.queue.write_segments(chunks, time.time())
        self._count(items)
        self._flusher.wake_up()

    def _count(self, items: list[bytes]) -> None:
        """Called with the lock held: ``items`` are queued."""
        self._next_local += len(items)
        self._bytes += sum(map(len, items)) + len(items)
        self.enqueued += len(items)

    def _check_writable(self) -> None:
        """Called with the lock held: ClosedError or StorageError when no step can be queued now."""
        if self._closed:
            raise ClosedError(f"the stream of {self.agent_name!r} is closed")
        if self._storage_error is not None:
            err = StorageError(f"the queue cannot be written ({self._storage_error}); this step was not queued")
            err.errno = self._storage_error.errno  # the same errno as durability="step" gives
            raise err

    def _wait_for_committer(self) -> None:
        """Called with the lock held (this step is queued): wait until the committer took the buffer.

        Bounded by the committer's own progress; a disk error or close() ends the wait (the step is
        in the buffer already, kept or written as every other one).
        """
        self._commit_wake.set()
        while self._buffer_bytes > _BUFFER_BYTES and self._storage_error is None and not self._closed:
            if self._committer is None or not self._committer.is_alive():
                return  # not started yet (the first steps) or gone: nothing to wait for
            self._cond.wait(0.05)

    def _make_room(self, size: int) -> None:
        """Called with the lock held when the queue is full; applies the on_full policy."""
        if self.on_full == "raise":
            raise QueueFullError(
                f"the queue of {self.agent_name!r} holds {self._bytes} bytes, max_pending_bytes is "
                f"{self.max_pending_bytes}; this step was not queued")
        deadline = time.monotonic() + self.block_timeout
        if self._pending_locked() == 0:
            self._bytes = 0  # see _on_progress: a reopened queue's estimate, and nothing is queued
        while self._bytes + size > self.max_pending_bytes:
            if self.on_full == "drop_oldest":
                need = self._bytes + size - self.max_pending_bytes
                dropped, freed = self.queue.drop_oldest(self.queue.consumed, need)
                if dropped:
                    self._bytes -= freed
                    self.dropped += dropped
                    logger.warning("queue of %r full: dropped the %d oldest queued steps", self.agent_name, dropped)
                    continue
            self._commit_wake.set()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QueueFullError(
                    f"the queue of {self.agent_name!r} stayed full ({self._bytes} bytes, max_pending_bytes "
                    f"{self.max_pending_bytes}) for {self.block_timeout:g} s; this step was not queued")
            self._cond.wait(min(remaining, 0.1))
            if self._closed:
                raise ClosedError(f"the stream of {self.agent_name!r} was closed while step() waited for room")

    def _on_progress(self, consumed: int, freed: int) -> None:
        with self._cond:
            self._bytes = max(0, self._bytes - freed)
            if self._pending_locked() == 0:
                # Exact again: the count starts from the database's size when a queue is reopened
                # (an estimate, never below SQLite's own ~28 KB), and nothing is left to measure.
                self._bytes = 0
            self._cond.notify_all()

    # --- group commit (durability="batch") ----------------------------------------------------------------

    def _commit_loop(self) -> None:
        while True:
            self._commit_wake.wait(self.commit_interval)
            self._commit_wake.clear()
            if self._storage_error is not None and not self._closed:
                # The disk is full. Retrying every few ms would take each byte that delivery frees (and
                # the queue's reserve) before delivery's own bookkeeping could, and nothing would move:
                # try again once delivered steps were deleted, or now and then for space freed by others.
                if not self.queue.wait_for_space(_FULL_DISK_RETRY) and not self._closed:
                    self._commit_once()
                    continue
            self._commit_once()
            if self._closed:
                self._commit_once()
                return

    def _commit_once(self) -> bool:
        """Write everything buffered so far, in order; False if the disk refused (the rest is kept)."""
        with self._cond:
            if not self._buffer:
                return True
            # Take the whole buffer at once (step() is never held up by a copy), then write it as
            # segments of at most _SEGMENT_STEPS: a loop that outruns the disk must not turn into
            # one blob of tens of MB, which costs its size again at commit and at every read.
            items, self._buffer = self._buffer, []
            first, t = self._buffer_first, self._buffer_time
            self._buffer_first = first + len(items)
            self._committing = len(items)
            if self._buffer_bytes > _BUFFER_BYTES:
                self._cond.notify_all()  # a step() waits in _wait_for_committer
            self._buffer_bytes = 0
            # After a full disk, one small segment per call: the space that delivery's deletes free
            # is shared with delivery's own bookkeeping (the sent mark before each request, the next
            # deletes). A whole 4 MiB segment written into it filled the disk again before delivery
            # could record anything, and the queue stayed stuck for good.
            recovering = self._storage_error is not None and not self._closed
        done = 0
        try:
            while done < len(items):
                # Small segments only while the disk is still short of room (once it has plenty
                # again, the backlog in memory goes at full speed, server or no server).
                recovering = recovering and not self.queue.has_spare_space()
                chunk = _next_segment(items, done, _RECOVERY_SEGMENT_BYTES if recovering else _SEGMENT_BYTES)
                segment = self.queue.store_segment(first + done, chunk, t)
                done += len(chunk)
                # `pending` reads under both locks; this moves the steps from memory to disk under the
                # queue's, so it never sees them twice, and step() (under _cond) never waits on it.
                self.queue.publish_segment(segment, then=partial(self._set_committing, len(items) - done))
                self._flusher.wake_up()
                if recovering and done < len(items):
                    self._keep_in_memory(items, done, first)  # the rest after the next delete
                    return False
        except StorageError as exc:
            self._keep_in_memory(items, done, first)
            with self._cond:
                if self._storage_error is None:
                    logger.error("cannot commit %d steps to %s: %s; step() refuses new steps until the disk recovers",
                                 len(items) - done, self.queue.directory, exc)
                self._storage_error = exc
            return False
        with self._cond:
            self._storage_error = None
        return True

    def _keep_in_memory(self, items: list[bytes], done: int, first: int) -> None:
        """The steps of ``items`` after the first ``done`` were not written: back in front of the newer ones.

        step() refuses new steps until the commit catches up: nothing accepted is given up because
        the disk is full.
        """
        with self._cond:
            self._buffer = items[done:] + self._buffer
            self._buffer_bytes = sum(len(item) + 1 for item in self._buffer if len(item) + 1 > _LARGE_STEP)
            self._buffer_first = first + done
            self._committing = 0

    def _set_committing(self, n: int) -> None:
        self._committing = n

    # --- flush / close --------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending_locked()

    def _pending_locked(self) -> int:
        # Called under _cond; the queue adds _in_memory() under its own lock: the committer moves
        # steps from _committing to the queue under the queue's lock, and from the buffer to
        # _committing under _cond, so no step is counted twice or missed.
        return self.queue.pending_with(self._in_memory)

    def _in_memory(self) -> int:
        return len(self._buffer) + self._committing

    def flush(self, timeout: float | None = None) -> bool:
        """True once every step queued before the call is acknowledged; False when ``timeout`` passes first.

        Raises :class:`AuthenticationError` when the server refuses the credentials during the
        wait (after a fresh login): waiting longer could not help. The steps stay queued.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        target = self._next_local - 1
        if self.pending == 0:
            return True
        refusals = self._flusher.auth_refusals
        self.start()
        self._commit_wake.set()
        self._flusher.hurry()
        with self._cond:
            while True:
                if self.queue.delivered_through(target, self._in_memory):
                    return True
                refused = self._flusher.auth_error
                if refused is not None and self._flusher.auth_refusals != refusals:
                    raise AuthenticationError(
                        f"delivery of {self.agent_name!r} stopped: {refused}; {self._pending_locked()} steps stay "
                        "queued and are sent once the credentials are accepted", status=refused.status)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))

    def close(self, timeout: float | None = None, *, retiring: bool = False) -> None:
        """Deliver for up to ``timeout`` seconds, write what is in memory to disk, stop the threads.

        ``retiring``: the agent was deleted and the caller sets the queue aside (and says so), so
        the usual "they are sent by the next RemoteAgent" warning would be wrong.

        Bounded: a flusher still inside a request when time is up is left to finish it on its own
        (a daemon thread; its batch is on disk and is at worst re-sent as duplicates later).
        """
        if self._closed:
            return
        timeout = self.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            delivered = self.flush(timeout) if self._started else self.pending == 0
        except AuthenticationError:
            delivered = False  # said by flush() to whoever called it; close() keeps the steps on disk
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._commit_wake.set()
        self.queue.stop_waiting_for_space()  # a committer waiting out a full disk writes what it can now, then ends
        if self._committer is not None:
            # Not bounded by the deadline: this is a local disk write of steps that exist nowhere else.
            self._committer.join(_COMMIT_JOIN_TIMEOUT)
        if self._committer is None or not self._committer.is_alive():
            self._commit_once()  # whatever the loop did not take is written now
        self._flusher.stop()
        if self._flusher.is_alive():
            self._flusher.join(max(0.1, deadline - time.monotonic()))
        left = self.queue.committed_pending()
        self.left_at_close = left + len(self._buffer)
        if (not delivered or left) and not retiring:
            logger.warning("closing the stream of %r with %d steps undelivered; they stay in %s and are sent "
                           "by the next RemoteAgent opened on it (or `agents-bar-stream queue replay`)",
                           self.agent_name, left, self.queue.directory)
        if self._buffer:
            logger.error("%d steps of %r could not be written to disk and are lost", len(self._buffer), self.agent_name)
        _LIVE.discard(self)
        if not self._flusher.close_queue_when_done():
            logger.info("the flusher of %r is still in a request; it closes the queue when that ends", self.agent_name)

    def hurry(self) -> None:
        """Start writing and delivering everything now (the exit hook does this for every stream at once)."""
        if not self._closed:
            self._commit_wake.set()
            self._flusher.hurry()

    def stats(self) -> dict[str, Any]:
        out = _counters(self.enqueued, self.dropped, self._flusher.stats)
        oldest = self._buffer_time if self._buffer else None
        disk_oldest = self.queue.oldest_pending_time()
        if disk_oldest is not None:
            oldest = disk_oldest
        out.update({
            "pending": self.pending,
            "bytes_pending": self._bytes,
            "oldest_pending_age": None if oldest is None else max(0.0, time.time() - oldest),
            "queue_dir": str(self.queue.directory),
            "producer_id": self.queue.producer_id,
            "durability": self.durability,
            "storage_error": None if self._storage_error is None else str(self._storage_error),
            # What failed its check on disk and was set aside (kept for good: a person should look).
            "damaged": [dict(record) for record in self.queue.damage],
        })
        return out

    def _abandon_in_child(self) -> None:
        """After fork, in the child: forget the parent's threads and lock without touching them."""
        self._closed = True
        self.forked = True
        self.queue.abandon_after_fork()


def _next_segment(items: list[bytes], start: int, limit: int) -> list[bytes]:
    """The steps of the next segment from ``items[start]``: at most _SEGMENT_STEPS, about ``limit`` bytes."""
    chunk = items[start:start + _SEGMENT_STEPS]
    if len(chunk[0]) > 4096 or sum(map(len, chunk)) > limit:
        chunk = _head_within(chunk, limit)
    return chunk


def _head_within(items: list[bytes], limit: int) -> list[bytes]:
    """The first of ``items`` whose sizes add up to at most ``limit`` bytes (at least one)."""
    total = 0
    for i, item in enumerate(items):
        total += len(item)
        if total > limit and i:
            return items[:i]
    return items


_COMMIT_JOIN_TIMEOUT = 30.0
_FULL_DISK_RETRY = 10.0  # seconds between commit attempts on a full disk when no delivery frees space


def _after_fork_in_child() -> None:
    # The child inherits copies of the parent's locks (possibly held by threads that do not exist in
    # the child) and of the queue's lock descriptor. Drop them all: the child's RemoteAgent builds a
    # fresh Stream on first use, which must take the queue lock on its own.
    for stream in list(_LIVE):
        stream._abandon_in_child()
    _LIVE.clear()


def _close_all_at_exit() -> None:
    streams = [s for s in list(_LIVE) if s.pid == os.getpid()]
    # Every flusher works at once, and exit waits for the longest close_timeout, not for their sum.
    for stream in streams:
        stream.hurry()
    deadline = time.monotonic() + max((s.close_timeout for s in streams), default=0.0)
    for stream in streams:
        try:
            stream.close(max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - exit must go on
            logger.exception("closing the stream of %r at exit failed", stream.agent_name)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
