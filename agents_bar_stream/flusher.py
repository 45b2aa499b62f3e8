"""The background worker that delivers a queue: batching, the retry policy, and each answer of the protocol.

One named daemon thread per queue. It only ever sends committed steps, oldest first, one batch
at a time, and deletes them after the server's ``200``. Transient failures (no connection, timeouts,
429, 5xx, an agent that does not exist yet, a refused token) are retried forever with exponential
backoff and full jitter, honouring ``Retry-After``; ``flush()``/``close()`` cut a backoff short.
No failure ever escapes the thread: each is logged and counted in ``stats``.

The owner hears of what happens through two optional callables, both run on this thread (a slow
one holds delivery up): ``on_delivered(first_seq, last_seq)`` after each acknowledged batch, and
``on_error(exc, info)`` for what retrying cannot fix (see :class:`Alerts`). A callback that
raises is logged and delivery goes on.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_random_exponential,
)

from agents_bar_stream.config import RetryPolicy
from agents_bar_stream.exceptions import (
    AgentNotFoundError,
    AgentsBarError,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    PayloadTooLargeError,
    ServerBusyError,
    ServiceUnavailableError,
    WrongServiceError,
)
from agents_bar_stream.protocol import API_PREFIX
from agents_bar_stream.session import Session
from agents_bar_stream.storage import Batch, DiskQueue
from agents_bar_stream.transport import Response
from agents_bar_stream.wire import (
    CONTENT_ENCODING_ZSTD,
    STEP_ENCODING,
    binary_body,
    is_array_item,
    item_to_json,
    json_body,
)

__all__ = ["Alerts", "DeliveryStats", "Flusher", "FlusherWait", "is_transient"]

logger = logging.getLogger(__name__)

# Per-request socket timeouts of the flusher: short enough that close() is never held for long by a
# request in flight, long enough for the server to make a large batch durable.
_SEND_TIMEOUT = (3.05, 15.0)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed delivery should be tried again later (never dropped).

    The service being unreachable or busy, the agent not existing (yet), a refused token, and any
    other error answer we cannot act on: in all of them the data is kept and sent again.
    """
    return isinstance(exc, (ServiceUnavailableError, AuthenticationError, APIError))


class FlusherWait:
    """Full-jitter exponential backoff, at least the server's ``Retry-After``, at most ``max_delay``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._jitter = wait_random_exponential(multiplier=policy.initial, max=policy.max_delay)

    def __call__(self, state: RetryCallState) -> float:
        delay = self._jitter(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ServerBusyError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self.policy.max_delay))
        return delay


def _json_object(response: Response) -> dict[str, Any]:
    """The answer's JSON object, or {} when it has none (an HTML error page, say)."""
    try:
        body = response.json()
    except APIError:
        return {}
    return body if isinstance(body, dict) else {}


def call_safely(what: str, fn: Callable[..., Any], *args: Any) -> None:
    """Run a user's callback; whatever it raises is logged, never let out into the flusher's loop."""
    try:
        fn(*args)
    except BaseException:  # noqa: BLE001 - a callback must not end delivery (SystemExit in a thread included)
        logger.exception("the %s callback raised; delivery goes on", what)


#: The ``kind`` of an ``on_error`` report, and whether it is reported at once (else only once it
#: has lasted ``interval``: a short outage or a 503 is what the retries are for).
ERROR_KINDS = {
    "authentication": True,  # the credentials (or the token) were refused after a fresh login
    "wrong_service": True,  # base_url does not speak the protocol
    "agent_deleted": True,  # a 404 for an agent this stream had delivered to
    "agent_not_found": False,  # a 404 from the start: the agent may be created later
    "outage": False,  # unreachable, timeouts, 429/5xx
    "refused": False,  # any other error answer, or a local error (the disk)
}


class Alerts:
    """When ``on_error`` hears of a delivery problem: rate-limited, one clock per kind.

    A problem of an immediate kind is reported at its first failure; the others once they have
    lasted ``interval`` seconds. After a report, the same kind is reported again at most once per
    ``interval`` while it lasts. An acknowledged request ends every problem (:meth:`clear`).
    Used by the flusher's thread only.
    """

    def __init__(self, on_error: Callable[[Exception, dict[str, Any]], None] | None, interval: float) -> None:
        self.on_error = on_error
        self.interval = interval
        self.since: float | None = None  # monotonic time of the first failure since the last success
        self._last: dict[str, float] = {}  # kind -> monotonic time of its last report

    def failed(self, exc: Exception, kind: str, info: dict[str, Any], now: float | None = None) -> bool:
        """Record one failure; report it when due. Returns whether it was reported."""
        now = time.monotonic() if now is None else now
        if self.since is None:
            self.since = now
        lasted = now - self.since
        if not ERROR_KINDS.get(kind, True) and lasted < self.interval:
            return False
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            return False
        self._last[kind] = now
        self.report(exc, {"kind": kind, "seconds": lasted, **info})
        return True

    def report(self, exc: Exception, info: dict[str, Any]) -> None:
        if self.on_error is not None:
            call_safely("on_error", self.on_error, exc, info)

    def clear(self) -> None:
        self.since = None
        self._last.clear()


class _Stopped(Exception):
    """The flusher was asked to stop while a batch was still undelivered."""


class DeliveryStats:
    """The flusher's counters; written by the flusher thread only, read by anyone.

    ``delivered`` grows with the queue's consumed mark (under the queue's lock), so once a
    ``flush()`` returns True it says so too.
    """

    __slots__ = ("delivered", "duplicates", "retries", "dead_lettered", "sequence_lost", "damaged_steps",
                 "last_error", "online", "mode")

    def __init__(self) -> None:
        self.delivered = 0
        self.duplicates = 0
        self.retries = 0
        self.dead_lettered = 0
        self.sequence_lost = 0  # 409s asking for steps this client had deleted: the server lost them
        self.damaged_steps = 0  # steps of a damaged segment that the server turned out not to have
        self.last_error: str | None = None
        self.online: bool | None = None  # None until the first answer or failure
        self.mode: str | None = None  # "stream" or "legacy" once the server was probed


class Flusher(threading.Thread):
    """Delivers ``queue`` through ``session`` for agent ``agent_name``; see the module docstring.

    ``on_progress(consumed, freed)`` is called after every delivery or dead letter;
    ``on_agent_info(details)`` once with the agent's details, unless ``agent_known``. The user's
    ``on_delivered`` and ``on_error`` are described in the module docstring; ``error_interval``
    paces ``on_error`` (:class:`Alerts`). All of them run on the flusher's thread.
    """

    def __init__(self, queue: DiskQueue, session: Session, agent_name: str, *, batch_size: int,
                 flush_interval: float, policy: RetryPolicy, on_progress: Callable[[int, int], None],
                 on_agent_info: Callable[[dict[str, Any]], None] | None = None, agent_known: bool = False,
                 on_delivered: Callable[[int, int], None] | None = None,
                 on_error: Callable[[Exception, dict[str, Any]], None] | None = None,
                 error_interval: float = 60.0) -> None:
        super().__init__(name=f"agents-bar-stream-flusher[{agent_name}]", daemon=True)
        self.queue = queue
        self.session = session
        self.agent_name = agent_name
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.policy = policy
        self.on_progress = on_progress
        self.stats = DeliveryStats()
        # The agent's details (GET /agents/{name}) go to on_agent_info once, before the first
        # delivery, unless the sizes are known already (agent_known): step() then checks later
        # steps against the agent's own sizes, not against the shape of a first step (issue 14).
        self.on_agent_info = on_agent_info
        self.agent_known = agent_known or on_agent_info is None
        self._wake = threading.Event()  # new committed data
        self._hurry = threading.Event()  # cut the current backoff or wait short
        # wake_up() is the Event's own bound set(): step(durability="step") calls it for every
        # step, and a Python-level method would add a frame to that path.
        self.wake_up: Callable[[], None] = self._wake.set
        self.stop_event = threading.Event()
        self.legacy: bool | None = None
        # The body /steps is sent as (issue 12): binary when the server lists STEP_ENCODING in
        # /stream/info, zstd-compressed too when it lists zstd and that is smaller; else JSON lists.
        self.binary = False
        self.zstd: Any = None  # a zstandard compressor, when the server takes zstd and the module is here
        self.max_steps = batch_size
        self.max_bytes = 8 * 2**20
        self._cap: int | None = None  # a temporary smaller batch after a 413 or before a 422's bad step
        self._path = f"/agents/{agent_name}"
        self._exit_lock = threading.Lock()
        self._exited = False
        self._close_queue = False
        self.on_delivered = on_delivered
        self.alerts = Alerts(on_error, error_interval)
        # The refusal of the credentials that stops delivery now (None once a request gets through),
        # and how many there were: flush() raises for one that came after it was called.
        self.auth_error: AuthenticationError | None = None
        self.auth_refusals = 0

    def hurry(self) -> None:
        """Cut the current backoff or batching wait short: deliver what is committed now."""
        self._hurry.set()

    def mark_agent_known(self) -> None:
        """The agent's sizes are known: do not read its details before delivering."""
        self.agent_known = True

    def stop(self) -> None:
        self.stop_event.set()
        self._hurry.set()
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except _Stopped:
            pass
        except BaseException:  # noqa: BLE001 - the thread must never die silently
            logger.exception("the flusher of %r stopped on an unexpected error; queued steps stay on disk",
                             self.agent_name)
            self.stats.last_error = "flusher crashed; see log"
        finally:
            with self._exit_lock:
                self._exited = True
                close = self._close_queue
            if close:
                self.queue.close()

    def close_queue_when_done(self) -> bool:
        """Close the queue now if this thread has ended (True), else when it ends (False).

        close() does not wait for a request in flight past its deadline; the queue, and the
        directory lock, must still be given back once that request is over.
        """
        with self._exit_lock:
            if not self._exited and self.is_alive():
                self._close_queue = True
                return False
        self.queue.close()
        return True

    def _run(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            try:
                self.deliver_once()
                failures = 0
            except _Stopped:
                raise
            except WrongServiceError as exc:
                # Not a passing state and not ours to fix: say so loudly (never `online`), keep the
                # steps, and look again slowly, in case the right service comes back at this address.
                failures += 1
                self.legacy = None
                self.stats.retries += 1
                self.stats.online = False
                self.stats.last_error = str(exc)
                level = logging.ERROR if failures in (1, 10) or failures % 100 == 0 else logging.DEBUG
                logger.log(level, "%s; keeping %d steps of %r and trying again (attempt %d)",
                           exc, self.queue.committed_pending(), self.agent_name, failures)
                self._failed(exc)
                delay = min(self.policy.max_delay, self.policy.initial * 2 ** min(failures + 3, 20))
                self._sleep(random.uniform(delay / 2, delay))
            except Exception as exc:  # noqa: BLE001 - one bad answer or disk error must not end delivery
                # Everything the answers of the protocol call for is handled in _deliver; this is
                # for the rest (the local disk refusing a write, an answer we cannot read): the
                # steps stay on disk and the batch is tried again after a backoff.
                failures += 1
                self.stats.retries += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("delivery for %r failed on an unexpected error; keeping the steps and trying "
                               "again (attempt %d)", self.agent_name, failures, exc_info=True)
                self._failed(exc)
                delay = min(self.policy.max_delay, self.policy.initial * 2 ** min(failures, 20))
                self._sleep(random.uniform(delay / 2, delay))

    def deliver_once(self) -> None:
        """Read the oldest committed steps, let a short batch fill a little, deliver it.

        One turn of the thread's loop, on the caller's thread: the loop adds the backoff after an
        unexpected error. Tests call it to play one answer of the server at a time.
        """
        max_steps = min(self.max_steps, self._cap or self.max_steps)
        batch = self.queue.read_batch(1 if self.legacy else max_steps, self.max_bytes - 256)
        if batch is None:
            self.queue.give_back_space()  # idle: the disk a drained backlog took goes back now
            self._wake.wait(0.5)
            self._wake.clear()
            return
        linger = self.flush_interval - (time.time() - batch.enqueued_at)
        if len(batch.items) < max_steps and linger > 0 and not self._hurry.is_set() and self.legacy is not True:
            # A short batch whose oldest step is younger than flush_interval: let it fill, so that
            # a slow trickle of steps does not cost one request each. Steps that waited already
            # (behind the previous request, say) go at once: no step lingers longer than that.
            if self._hurry.wait(linger):
                self._hurry.clear()
            batch = self.queue.read_batch(max_steps, self.max_bytes - 256) or batch
        if self.legacy is None:
            self._probe()
        if not self.agent_known:
            self._learn_agent()
        if self.legacy and len(batch.items) > 1:
            batch = self.queue.read_batch(1, self.max_bytes - 256) or batch
        body, headers = None, None
        if not self.legacy:
            # Encoded before the claim: a batch whose body is over the server's limit is cut here,
            # and only what is sent is marked sent.
            batch, body, headers = self._encode(batch)
        if not self.queue.claim(batch):
            return  # drop_oldest took some of it while we lingered or probed: read again
        if self.legacy:
            self._deliver_legacy(batch)
        else:
            self._deliver(batch, body, headers)

    def _encode(self, batch: Batch) -> tuple[Batch, bytes, dict[str, str] | None]:
        """The body of ``batch`` (or of its head, when the whole is over ``max_bytes``) and its headers.

        The batch was read up to ``max_bytes`` of queued bytes; an array step flattened to JSON is
        several times its raw size, so the body itself is measured and the batch halved until it fits
        (a single step that does not fit goes as it is: the server's 413 dead-letters it).
        """
        producer = self.queue.producer_id
        # A batch without arrays (steps of plain lists, or arrays under 64 elements) goes as JSON even
        # to a server that takes the binary body: the same bytes either way, and a proxy, a log or a
        # server that reads JSON bodies sees what it always saw.
        binary = self.binary and any(is_array_item(item) for item in batch.items)
        while True:
            if binary:
                body = binary_body(producer, batch.first_wire, batch.items)
            else:
                body = json_body(producer, batch.first_wire, batch.items)
            if len(body) <= self.max_bytes or len(batch.items) == 1:
                break
            keep = len(batch.items) // 2
            batch = Batch(batch.first_local, batch.first_wire, batch.items[:keep], batch.enqueued_at)
        if not binary:
            return batch, body, None
        headers = {"Content-Type": STEP_ENCODING}
        if self.zstd is not None:
            packed = self.zstd.compress(body)  # zstd's C code releases the GIL: step() goes on meanwhile
            if len(packed) < len(body):
                body = packed
                headers["Content-Encoding"] = CONTENT_ENCODING_ZSTD
        return batch, body, headers

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception(is_transient),
            wait=FlusherWait(self.policy),
            stop=stop_when_event_set(self.stop_event),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _sleep(self, seconds: float) -> None:
        if self._hurry.wait(seconds):
            self._hurry.clear()

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        self.stats.retries += 1
        self.stats.last_error = str(exc)
        self.stats.online = not isinstance(exc, ServiceUnavailableError)
        level = logging.WARNING if state.attempt_number in (1, 10) or state.attempt_number % 100 == 0 else logging.DEBUG
        if isinstance(exc, AgentNotFoundError):
            message = "agent %r does not exist on the server (yet?); keeping %d steps and retrying (attempt %d): %s"
            level = logging.WARNING if state.attempt_number in (1, 10) else logging.DEBUG
        else:
            message = "delivery for %r failed; keeping %d steps and retrying (attempt %d): %s"
        logger.log(level, message, self.agent_name, self.queue.committed_pending(), state.attempt_number, exc)
        if isinstance(exc, Exception):
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """One failed attempt: what on_error (and flush()) hear of it."""
        if isinstance(exc, AuthenticationError):
            self.auth_error = exc
            self.auth_refusals += 1
            kind = "authentication"
        elif isinstance(exc, WrongServiceError):
            kind = "wrong_service"
        elif isinstance(exc, AgentNotFoundError):
            # Steps may be queued before create_agent(): a 404 is news only for an agent that took
            # steps from this stream already (it was deleted), or once it has lasted error_interval.
            kind = "agent_deleted" if self.stats.delivered else "agent_not_found"
        elif isinstance(exc, ServiceUnavailableError):
            kind = "outage"
        else:
            kind = "refused"
        self.alerts.failed(exc, kind, {"agent": self.agent_name, "pending": self.queue.committed_pending()})

    def _answered(self) -> None:
        """A request got an answer that delivery acts on: every problem is over."""
        self.stats.online = True
        if self.alerts.since is not None or self.auth_error is not None:
            self.auth_error = None
            self.alerts.clear()

    def _call(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> Response:
        """One request; raises for the answers that mean 'try again later', returns the others.

        The answers of ``/steps`` that the flusher acts on are checked here, inside the retry loop:
        a 200 without ``acked_seq`` or a 409 without ``expected_seq`` (a proxy's HTML page, say) is
        an error to back off from and retry, never a reason to stop delivering.
        """
        if headers:
            response = self.session.request(method, path, body=body, timeout=_SEND_TIMEOUT, headers=headers)
        else:
            response = self.session.request(method, path, body=body, timeout=_SEND_TIMEOUT)
        status = response.status
        if path.endswith("/steps") and status in (200, 409):
            field = "acked_seq" if status == 200 else "expected_seq"
            answer = response.json()  # APIError (retried) when it is not JSON
            if not isinstance(answer, dict) or type(answer.get(field)) is not int:
                raise APIError(status, f"the answer has no integer {field}: {response.content[:120]!r}",
                               method=method, path=path)
            return response
        if 200 <= status < 300 or status in (409, 413, 422):
            return response
        # Everything else raises one of our errors; is_transient() decides that it is tried again.
        return response.raise_for_status()

    def _attempt(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Response:
        try:
            return self._retrying()(self._call, method, path, body, headers)
        except BaseException as exc:
            if self.stop_event.is_set():
                raise _Stopped() from exc
            raise

    def _probe(self) -> None:
        """Ask the server whether it speaks the streaming extension (404: it does not)."""
        def call() -> Response:
            response = self.session.request("GET", "/stream/info", timeout=_SEND_TIMEOUT, auth=False)
            if response.status in (200, 404):
                return response
            return response.raise_for_status()

        if self.stop_event.is_set():
            raise _Stopped()
        try:
            response = self._retrying()(call)
        except BaseException as exc:
            if self.stop_event.is_set():  # closed while the server was away: not an error
                raise _Stopped() from exc
            raise
        info = _json_object(response)
        if response.status == 404 and "detail" in info:
            # An Agents Bar without Part 2 answers its JSON error; some other web server does not.
            self.legacy = True
            logger.warning("the server at %s has no streaming endpoint; sending steps one at a time "
                           "through /step (at-least-once: a retried step may be applied twice)", self.session.base_url)
        elif response.status != 200 or type(info.get("protocol")) is not int:
            kind = response.headers.get("Content-Type") or "no content type"
            raise WrongServiceError(
                f"{self.session.base_url} does not look like an Agents Bar service: GET {API_PREFIX}/stream/info "
                f"answered {response.status} ({kind}: {response.content[:60]!r}), not the JSON of an Agents Bar; "
                "check base_url")
        else:
            self.legacy = False
            self.max_steps = max(1, min(self.batch_size, int(info.get("max_batch_steps", self.batch_size))))
            self.max_bytes = max(1024, int(info.get("max_batch_bytes", self.max_bytes)))
            self._choose_encoding(info)
        self.stats.mode = "legacy" if self.legacy else "stream"

    def _choose_encoding(self, info: dict[str, Any]) -> None:
        """Binary bodies when the server advertises them (a server without the keys gets JSON lists)."""
        encodings = info.get("step_encodings")
        self.binary = isinstance(encodings, list) and STEP_ENCODING in encodings
        self.zstd = None
        compressions = info.get("content_encodings")
        if self.binary and isinstance(compressions, list) and CONTENT_ENCODING_ZSTD in compressions:
            try:
                import zstandard  # noqa: PLC0415 - optional (the `arrays` extra); without it bodies go uncompressed
            except ImportError:
                return
            self.zstd = zstandard.ZstdCompressor(level=1)

    def _learn_agent(self) -> None:
        """One try at the agent's details; nothing is retried here (delivery has its own backoff)."""
        try:
            response = self.session.request("GET", self._path, timeout=_SEND_TIMEOUT)
        except AgentsBarError as exc:
            logger.debug("could not read the details of agent %r: %s", self.agent_name, exc)
            return
        info = _json_object(response) if response.status == 200 else {}
        if isinstance(info.get("config"), dict) and self.on_agent_info is not None:
            self.on_agent_info(info)
            self.agent_known = True

    # --- Part 2: batches ------------------------------------------------------------------------------

    def _deliver(self, batch: Batch, body: bytes | None = None, headers: dict[str, str] | None = None) -> None:
        if body is None:
            batch, body, headers = self._encode(batch)
        response = self._attempt("POST", self._path + "/steps", body, headers)
        self._answered()
        status = response.status
        if status == 200:
            answer = response.json()
            acked = int(answer["acked_seq"])
            self.stats.duplicates += int(answer.get("duplicates", 0))
            last = min(batch.last_local, self.queue.local_for_wire(acked, batch.first_local))
            if last >= batch.first_local:
                self._consumed(last)
                if self.on_delivered is not None:
                    # Wire numbers (the server's acked_seq for this producer): the batch holds no removed step.
                    call_safely("on_delivered", self.on_delivered, batch.first_wire,
                                batch.first_wire + last - batch.first_local)
            self._cap = None
        elif status == 409:
            expected = int(response.json().get("expected_seq", 0))
            outcome, missing = self.queue.rewind_or_shift(expected, batch.first_local)
            if outcome == "rewound":
                logger.info("server expects seq %d of %r; resending from there", expected, self.agent_name)
            elif outcome == "damaged":
                self.stats.damaged_steps += missing
                self.stats.last_error = f"{missing} steps of a damaged segment never reached the server"
                logger.error("%d steps of agent %r were in a queue segment that failed its check (see "
                             "stats['damaged']) and the server does not have them: they are lost; the stream "
                             "goes on after them from seq %d", missing, self.agent_name, expected)
            else:
                self.stats.sequence_lost += 1
                self.stats.last_error = f"server expects seq {expected}, which this client already deleted"
                logger.error("the server lost steps of agent %r: it expects seq %d, which was delivered and "
                             "deleted here; continuing with the steps still queued", self.agent_name, expected)
        elif status == 413:
            if len(batch.items) == 1:
                self._dead_letter(batch, 0, 413, response.detail())
            else:
                # Halve and resend; the limits in the answer, when there are any, bound later batches
                # (a proxy's own 413, e.g. nginx's client_max_body_size, is an HTML page without them).
                self._cap = max(1, len(batch.items) // 2)
                limits = _json_object(response)
                for key, attr, low in (("max_batch_steps", "max_steps", 1), ("max_batch_bytes", "max_bytes", 1024)):
                    if type(limits.get(key)) is int:
                        setattr(self, attr, max(low, min(getattr(self, attr), limits[key])))
        elif status == 422:
            index = _json_object(response).get("index")
            if len(batch.items) == 1 or index == 0:
                self._dead_letter(batch, 0, 422, response.detail())
            elif type(index) is int and 0 < index < len(batch.items):
                self._cap = index  # send the good steps before it first; the bad one then comes alone at the head
            else:
                # The server did not say which step (or named none of these): send them one at a
                # time until it does, so that only a step it refused alone is dead-lettered.
                self._cap = 1

    def _dead_letter(self, batch: Batch, index: int, status: int, detail: str) -> None:
        local = batch.first_local + index
        # Dead letters are JSON records that a person reads: an array step is kept flattened, its values the same.
        item = item_to_json(batch.items[index])
        self.queue.dead_letter(local, item, status, detail, then=self._count_dead_letter)
        self._cap = None
        logger.error("the server refused step %d of agent %r for good (%d: %s); moved it to the dead-letter store "
                     "in %s", local, self.agent_name, status, detail, self.queue.directory)
        self.on_progress(0, 0)
        error_type = PayloadTooLargeError if status == 413 else InvalidRequestError
        exc = error_type(status, detail, method="POST", path=self._path)
        # Every dead letter is reported (each is one step given up on), whatever the pacing of the rest.
        self.alerts.report(exc, {"kind": "dead_letter", "agent": self.agent_name, "seconds": 0.0,
                                 "pending": self.queue.committed_pending(), "seq": batch.first_wire + index,
                                 "status": status, "detail": detail, "queue_dir": str(self.queue.directory)})

    def _consumed(self, through_local: int) -> None:
        consumed, freed = self.queue.mark_consumed(through_local, then=self._count_delivered)
        self.on_progress(consumed, freed)

    def _count_dead_letter(self) -> None:
        self.stats.dead_lettered += 1

    def _count_delivered(self, n: int) -> None:
        # Counted with the consumed mark: once flush() returns True, stats["delivered"] says so too.
        self.stats.delivered += n

    # --- Part 1 only: one step at a time -----------------------------------------------------------------

    def _deliver_legacy(self, batch: Batch) -> None:
        item = item_to_json(batch.items[0])
        response = self._attempt("POST", self._path + "/step", b'{"step_data":' + item + b"}")
        self._answered()
        if response.status in (413, 422):  # this one step can never be accepted
            self._dead_letter(batch, 0, response.status, response.detail())
        elif 200 <= response.status < 300:
            self._consumed(batch.first_local)
            if self.on_delivered is not None:
                call_safely("on_delivered", self.on_delivered, batch.first_wire, batch.first_wire)
        else:  # a 409 has no meaning on /step; keep the step and try again a little later
            self.stats.last_error = f"{response.status}: {response.detail()}"
            self._sleep(min(1.0, self.policy.max_delay))
