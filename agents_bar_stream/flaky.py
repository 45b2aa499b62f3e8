"""A fault-injecting TCP proxy, for testing clients against a network that misbehaves.

:class:`FlakyProxy` sits between a client and a server (any TCP protocol; a few faults know a
little HTTP/1.1) and forwards bytes both ways. Each fault below can be switched on and tuned at
any time, from any thread, while traffic flows:

``latency``
    Seconds added to every chunk, in each direction, before it is forwarded; order is kept. A
    request/response round trip therefore costs at least ``2 * latency``. This is a slow or
    distant link: it shows whether batching and pipelining really hide the round trip.
``reset_prob``
    Chance that a new connection is reset (RST, the client sees ``ConnectionResetError``) at a
    random early point: right after it is accepted, when the first request bytes arrive (the
    server never hears of it), or after the server has answered the first request (the server
    applied it, the client never learns so). This is a crashed middlebox or a flapping NAT; the
    last case is the ambiguous outcome a retrying client must survive.
``stall_prob`` / ``stall_seconds``
    Chance that a connection, once the client starts talking, holds all traffic for
    ``stall_seconds`` and then carries on. This is a black-holed route or a paused server: it is
    what read timeouts are for, and what an unbounded ``close()`` hangs on.
``drop_response_prob``
    Chance, per request, that the request is forwarded, the server's whole answer is read and
    thrown away, and the client connection is reset. The server applied the request but the
    client never hears it: the classic case in which at-least-once delivery produces duplicates,
    so the server must deduplicate (by sequence number or idempotency key) to stay exact.
:meth:`FlakyProxy.down`
    An outage: new connections are reset as soon as they are accepted and existing ones are cut.
    The listening socket stays open, so the port cannot be taken by anyone else and clients fail
    fast instead of hanging. ``down(seconds)`` comes back by itself.

All randomness comes from one seeded :class:`random.Random`; each connection draws its own
generator from it when it is accepted, so a run with the same seed and the same sequence of
connections makes the same decisions.

Each connection is served by one daemon thread running a small selector loop over both of its
sockets, so a slow direction never blocks the other and every wait is bounded; ``stop()`` always
returns within its timeout. With every fault off the proxy moves data in 256 KiB chunks and
passes megabytes per request at close to loopback speed.

>>> with FlakyProxy(("127.0.0.1", 8080), latency=0.05) as proxy:  # doctest: +SKIP
...     requests.get(proxy.url + "/health")
"""

from __future__ import annotations

import collections
import logging
import math
import random
import selectors
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

__all__ = ["FlakyProxy"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024  # bytes per recv(); large reads keep the per-byte cost of Python low
MAX_BUFFERED = 16 * 1024 * 1024  # bytes held per direction before the proxy stops reading (backpressure)
POLL_INTERVAL = 0.05  # seconds; the longest any loop sleeps before noticing stop() or down()
CONNECT_TIMEOUT = 3.0  # seconds to reach the upstream before the client connection is reset
DROP_QUIET = 0.25  # seconds of upstream silence taken as the end of an answer whose length is unknown
MAX_HEAD = 64 * 1024  # bytes of response head parsed before giving up and waiting for silence

_STAT_KEYS = (
    "connections",  # accepted and forwarded (not counting refused ones)
    "resets",  # connections reset by reset_prob
    "stalls",  # connections held by stall_prob
    "dropped_responses",  # answers read from the upstream and thrown away
    "refused",  # connections reset on accept because the proxy was down
    "cuts",  # open connections cut by down()
    "upstream_failures",  # connections reset because the upstream could not be reached
    "bytes_up",  # bytes forwarded client -> upstream
    "bytes_down",  # bytes forwarded upstream -> client
)

_UNSTARTED, _RUNNING, _CLOSED = "unstarted", "running", "closed"

Address = tuple[str, int]


def _probability(name: str, value: float) -> float:
    value = _number(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return value


def _seconds(name: str, value: float) -> float:
    value = _number(name, value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return value


def _number(name: str, value: object) -> float:
    # bool is an int, but `latency=True` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _parse_upstream(upstream: Address | str) -> Address:
    if isinstance(upstream, str):
        parts = urlsplit(upstream if "//" in upstream else "//" + upstream)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"upstream must be (host, port) or 'http://host:port', got {upstream!r}")
        return (parts.hostname, parts.port)
    host, port = upstream
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"upstream port must be in 1..65535, got {port!r}")
    return (str(host), port)


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN, so that the peer sees ConnectionResetError."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # already dead; closing is all that is left
        pass
    sock.close()


def _tune(sock: socket.socket) -> None:
    # Without TCP_NODELAY, Nagle's algorithm delays small writes (a request head) by up to 40 ms
    # while waiting for the peer's delayed ACK, which swamps any latency the tests ask for.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not TCP (or already closed): nothing to tune
        pass
    sock.setblocking(False)


class _AnswerEnd:
    """Tells where one HTTP/1.x response ends, without keeping its body.

    Used to read a whole answer before dropping it, so that the server finishes writing (and does
    not log a broken pipe) and has certainly applied the request. It understands
    ``Content-Length``, ``Transfer-Encoding: chunked``, bodiless statuses and interim ``1xx``
    answers; anything else (or something that is not HTTP at all) ends with the upstream closing
    or falling silent for ``DROP_QUIET`` seconds, which the caller watches.
    """

    def __init__(self) -> None:
        self.complete = False
        self._head = bytearray()
        self._remaining: int | None = None  # body bytes still expected, when Content-Length is known
        self._chunked = False
        self._tail = b""  # the last bytes of a chunked body, to spot its terminating empty chunk
        self._opaque = False  # no recognisable framing: wait for close or silence

    def feed(self, data: bytes) -> None:
        if self.complete or self._opaque:
            return
        if self._remaining is not None:
            self._remaining -= len(data)
            self.complete = self._remaining <= 0
        elif self._chunked:
            # Trailers after the last chunk are not handled; the silence rule covers them.
            self._tail = (self._tail + data)[-5:]
            self.complete = self._tail == b"0\r\n\r\n"
        else:
            self._head += data
            self._parse_head()

    def _parse_head(self) -> None:
        while not self.complete:
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                self._opaque = len(self._head) > MAX_HEAD
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            lines = head.decode("latin-1").split("\r\n")
            status = lines[0].split(None, 2)
            if len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].isdigit():
                self._opaque = True
                return
            code = int(status[1])
            if 100 <= code < 200:  # interim (100 Continue): the real answer follows
                self._head = bytearray(rest)
                continue
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            self._head = bytearray()
            if code in (204, 304):
                self.complete = True
            elif "chunked" in headers.get("transfer-encoding", ""):
                self._chunked = True
                self.feed(rest)
            elif headers.get("content-length", "").isdigit():
                self._remaining = int(headers["content-length"])
                self.feed(rest)
            else:
                self._opaque = True
            return


class _Pipe:
    """One direction of a connection: what was read from ``src`` and is waiting to reach ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket, counter: str) -> None:
        self.src = src
        self.dst = dst
        self.counter = counter
        self.chunks: collections.deque[tuple[float, memoryview]] = collections.deque()  # (due time, data), in order
        self.buffered = 0
        self.src_eof = False
        self.dst_shut = False

    def push(self, due: float, data: bytes) -> None:
        self.chunks.append((due, memoryview(data)))
        self.buffered += len(data)

    def next_due(self) -> float | None:
        return self.chunks[0][0] if self.chunks else None

    def flush(self, now: float) -> int:
        """Send every chunk that is due, as far as ``dst`` accepts; return the bytes sent."""
        sent_total = 0
        while self.chunks and self.chunks[0][0] <= now:
            due, data = self.chunks[0]
            try:
                sent = self.dst.send(data)
            except (BlockingIOError, InterruptedError):
                break
            sent_total += sent
            self.buffered -= sent
            if sent < len(data):
                self.chunks[0] = (due, data[sent:])
                break
            self.chunks.popleft()
        return sent_total


class _Abort(Exception):
    """Ends a connection's loop with an RST to the client; the message says why (logged at DEBUG)."""


class _Connection:
    """One client connection and its upstream connection, served by one thread."""

    def __init__(self, proxy: FlakyProxy, client: socket.socket, rng: random.Random, name: str) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.rng = rng
        self.name = name
        self.epoch = proxy._cut_epoch
        # Per-connection decisions are drawn now, in accept order, so that a seed reproduces them.
        self.reset_point: str | None = None
        if rng.random() < proxy.reset_prob:
            self.reset_point = rng.choice(("accept", "request", "response"))
        self.stall_pending = rng.random() < proxy.stall_prob
        self.held_until = 0.0
        self.in_request = False  # the client spoke last: the next upstream bytes are its answer
        self.doom: str | None = None  # "reset" or "drop": this exchange's answer is thrown away
        self.answer: _AnswerEnd | None = None
        self.last_answer_byte = 0.0
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def run(self) -> None:
        reset_client = True
        try:
            self._serve()
            reset_client = False  # both sides finished cleanly: close with a FIN
        except _Abort as abort:
            logger.debug("%s: %s", self.name, abort)
        except Exception:
            logger.warning("%s: unexpected error, resetting the connection", self.name, exc_info=True)
        finally:
            if reset_client:
                _reset(self.client)
            else:
                self.client.close()
            if self.upstream is not None:
                self.upstream.close()
            self.proxy._forget(self)

    def _serve(self) -> None:
        proxy = self.proxy
        if self.reset_point == "accept":
            proxy._count("resets")
            raise _Abort("reset on accept")
        try:
            self.upstream = socket.create_connection(proxy.upstream, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            proxy._count("upstream_failures")
            raise _Abort(f"upstream {proxy.upstream} unreachable: {exc}") from None
        _tune(self.client)
        _tune(self.upstream)
        up = _Pipe(self.client, self.upstream, "bytes_up")
        down = _Pipe(self.upstream, self.client, "bytes_down")
        with selectors.DefaultSelector() as selector:
            interest: dict[socket.socket, int] = {}
            while True:
                if proxy._closed.is_set():
                    raise _Abort("proxy stopped")
                if proxy._cut_epoch != self.epoch:
                    proxy._count("cuts")
                    raise _Abort("cut by down()")
                now = time.monotonic()
                if now < self.held_until:  # stalled: neither read nor write
                    proxy._closed.wait(min(self.held_until - now, POLL_INTERVAL))
                    continue
                for pipe in (up, down):
                    try:
                        sent = pipe.flush(now)
                    except OSError as exc:  # the receiving peer went away (EPIPE, ECONNRESET)
                        raise _Abort(f"{'upstream' if pipe is up else 'client'} failed: {exc}") from None
                    if sent:
                        proxy._count(pipe.counter, sent)
                    if pipe.src_eof and not pipe.chunks and not pipe.dst_shut:
                        pipe.dst_shut = True
                        try:
                            pipe.dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                        except OSError:
                            pass
                if up.dst_shut and down.dst_shut:
                    return
                self._check_answer_end(now, down.src_eof)
                self._update_interest(selector, interest, up, down)
                timeout = POLL_INTERVAL
                for due in (up.next_due(), down.next_due()):
                    if due is not None and due > now:
                        timeout = min(timeout, due - now)
                for key, mask in selector.select(max(timeout, 0.0)):
                    # Writable sockets are flushed at the top of the loop; only reads happen here.
                    pipe = up if key.fileobj is self.client else down
                    if mask & selectors.EVENT_READ and not pipe.src_eof:
                        self._read(pipe, up)

    def _update_interest(
        self, selector: selectors.BaseSelector, interest: dict[socket.socket, int], up: _Pipe, down: _Pipe
    ) -> None:
        now = time.monotonic()
        wanted = {up.src: 0, down.src: 0}
        for pipe in (up, down):
            if not pipe.src_eof and pipe.buffered < MAX_BUFFERED:
                wanted[pipe.src] |= selectors.EVENT_READ
            due = pipe.next_due()
            if due is not None and due <= now:  # due but not sent: dst's buffer is full
                wanted[pipe.dst] |= selectors.EVENT_WRITE
        # epoll_ctl is a system call; only touch the registration when it changes.
        for sock, events in wanted.items():
            current = interest.get(sock, 0)
            if events == current:
                continue
            if not current:
                selector.register(sock, events)
            elif not events:
                selector.unregister(sock)
            else:
                selector.modify(sock, events)
            interest[sock] = events

    def _read(self, pipe: _Pipe, up: _Pipe) -> None:
        try:
            data = pipe.src.recv(CHUNK_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # A peer that resets is passed on as a reset; the other side learns nothing more.
            raise _Abort(f"{'client' if pipe is up else 'upstream'} failed: {exc}") from None
        if not data:
            pipe.src_eof = True
            return
        now = time.monotonic()
        if pipe is up:
            self._on_request_bytes(now)
        else:
            self.in_request = False
            if self.doom is not None:
                self._swallow_answer(now, data)
                return
        pipe.push(now + self.proxy.latency, data)

    def _on_request_bytes(self, now: float) -> None:
        proxy = self.proxy
        if self.stall_pending:
            self.stall_pending = False
            self.held_until = now + proxy.stall_seconds
            proxy._count("stalls")
            logger.debug("%s: stalling for %.3f s", self.name, proxy.stall_seconds)
        if self.reset_point == "request":
            proxy._count("resets")
            raise _Abort("reset on the first request bytes")
        if self.in_request:
            return  # more of the same request
        # The client speaks after the upstream did (or first): a new request, whose answer may
        # be doomed. Only HTTP's strict request/response turn-taking makes this per request.
        self.in_request = True
        if self.reset_point == "response":
            self.reset_point = None
            self.doom = "reset"
        elif self.rng.random() < proxy.drop_response_prob:
            self.doom = "drop"

    def _swallow_answer(self, now: float, data: bytes) -> None:
        if self.answer is None:
            self.answer = _AnswerEnd()
        self.answer.feed(data)
        self.last_answer_byte = now

    def _check_answer_end(self, now: float, upstream_eof: bool) -> None:
        if self.answer is None:
            return
        if not (self.answer.complete or upstream_eof or now - self.last_answer_byte >= DROP_QUIET):
            return
        if self.doom == "drop":
            self.proxy._count("dropped_responses")
        else:
            self.proxy._count("resets")
        # The answer is fully read, so closing the upstream is a clean FIN, not an RST.
        raise _Abort(f"answer thrown away ({self.doom})")


class FlakyProxy:
    """A TCP proxy in front of ``upstream`` that injects latency, resets, stalls, lost answers and outages.

    :param upstream: where to forward, ``(host, port)`` or ``"http://host:port"``.
    :param host: address to listen on.
    :param port: port to listen on; ``0`` picks a free one (see :attr:`port` after :meth:`start`).
    :param seed: seed of the random generator behind every probabilistic fault.

    The fault settings (:attr:`latency`, :attr:`reset_prob`, :attr:`stall_prob`,
    :attr:`stall_seconds`, :attr:`drop_response_prob`) may be given as keyword arguments and read
    or changed at any time from any thread; a bad value raises ``ValueError`` (``TypeError`` for a
    non-number). Latency applies to each chunk as it is read; the other faults are decided when a
    connection is accepted (reset, stall) or when a request starts (drop). Everything starts off.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        upstream: Address | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        latency: float = 0.0,
        reset_prob: float = 0.0,
        stall_prob: float = 0.0,
        stall_seconds: float = 2.0,
        drop_response_prob: float = 0.0,
    ) -> None:
        self._upstream = _parse_upstream(upstream)
        self._host = host
        self._requested_port = port
        self._rng = random.Random(seed)
        self.latency = latency
        self.reset_prob = reset_prob
        self.stall_prob = stall_prob
        self.stall_seconds = stall_seconds
        self.drop_response_prob = drop_response_prob
        self._lock = threading.Lock()
        self._state = _UNSTARTED
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._accepted = 0
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._down_until: float | None = None
        # Bumped by down(); each connection remembers the value it started with and, seeing it
        # change, cuts itself. Connections are never closed from another thread: closing a
        # socket that a selector in another thread is waiting on invites fd-reuse races.
        self._cut_epoch = 0

    # -- settings ---------------------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds added before forwarding each chunk, in each direction."""
        return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._latency = _seconds("latency", value)

    @property
    def reset_prob(self) -> float:
        """Chance that a new connection is reset at a random early point."""
        return self._reset_prob

    @reset_prob.setter
    def reset_prob(self, value: float) -> None:
        self._reset_prob = _probability("reset_prob", value)

    @property
    def stall_prob(self) -> float:
        """Chance that a new connection holds all its traffic for :attr:`stall_seconds`."""
        return self._stall_prob

    @stall_prob.setter
    def stall_prob(self, value: float) -> None:
        self._stall_prob = _probability("stall_prob", value)

    @property
    def stall_seconds(self) -> float:
        """How long a stalled connection holds its traffic."""
        return self._stall_seconds

    @stall_seconds.setter
    def stall_seconds(self, value: float) -> None:
        self._stall_seconds = _seconds("stall_seconds", value)

    @property
    def drop_response_prob(self) -> float:
        """Chance, per request, that the server's answer is read, thrown away and the client reset."""
        return self._drop_response_prob

    @drop_response_prob.setter
    def drop_response_prob(self, value: float) -> None:
        self._drop_response_prob = _probability("drop_response_prob", value)

    # -- addresses --------------------------------------------------------------------------------

    @property
    def upstream(self) -> Address:
        """The ``(host, port)`` traffic is forwarded to."""
        return self._upstream

    @property
    def port(self) -> int:
        """The port the proxy listens on; known once started."""
        if self._port is None:
            raise RuntimeError("FlakyProxy has no port before start()")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy, for HTTP clients."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- outages ----------------------------------------------------------------------------------

    def down(self, seconds: float | None = None) -> None:
        """Start an outage: reset new connections on accept and cut the open ones.

        With ``seconds``, the proxy comes back by itself after that long; otherwise it stays down
        until :meth:`up`. Calling it again restarts the outage with the new duration.
        """
        until = math.inf if seconds is None else time.monotonic() + _seconds("seconds", seconds)
        with self._lock:
            self._down_until = until
            self._cut_epoch += 1
        logger.debug("proxy %s down for %s s", self._port, seconds)

    def up(self) -> None:
        """End an outage now; new connections are forwarded again."""
        with self._lock:
            self._down_until = None

    @property
    def is_down(self) -> bool:
        """Whether an outage is in progress."""
        until = self._down_until
        return until is not None and time.monotonic() < until

    # -- counters ---------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters: connections, resets, stalls, dropped_responses, refused, cuts,
        upstream_failures, bytes_up, bytes_down."""
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[key] += amount

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FlakyProxy:
        """Bind and start accepting in a daemon thread; return ``self``.

        :raises RuntimeError: if already started or stopped.
        :raises OSError: if the address cannot be bound.
        """
        with self._lock:
            if self._state != _UNSTARTED:
                raise RuntimeError(f"FlakyProxy cannot start: it is {self._state}")
            listener = socket.create_server(
                (self._host, self._requested_port),
                family=socket.AF_INET6 if ":" in self._host else socket.AF_INET,
                backlog=128,
            )
            # Accept with a timeout so that the thread notices stop() without anyone closing the
            # socket under its feet.
            listener.settimeout(POLL_INTERVAL)
            self._listener = listener
            self._port = listener.getsockname()[1]
            self._state = _RUNNING
            self._accept_thread = threading.Thread(
                target=self._accept_loop, name=f"flaky-proxy-{self._port}-accept", daemon=True
            )
            self._accept_thread.start()
        logger.debug("proxy listening on %s, forwarding to %s", self.url, self._upstream)
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Close the listener and every connection, and wait up to ``timeout`` seconds for the threads.

        Idempotent. Returns whether every thread finished in time (they are daemons either way).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._state = _CLOSED
            self._closed.set()
            threads = [conn.thread for conn in self._connections]
            if self._accept_thread is not None:
                threads.append(self._accept_thread)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            logger.warning("FlakyProxy.stop: threads still running after %.1f s: %s", timeout, alive)
        return not alive

    def __enter__(self) -> FlakyProxy:
        if self._state == _UNSTARTED:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FlakyProxy {self._host}:{self._port} -> {self._upstream[0]}:{self._upstream[1]} {self._state}>"

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        try:
            while not self._closed.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._closed.is_set():
                        break
                    # EMFILE and friends: wait instead of spinning on an error that persists.
                    logger.warning("FlakyProxy accept failed", exc_info=True)
                    self._closed.wait(POLL_INTERVAL)
                    continue
                self._admit(client)
        except Exception:
            logger.exception("FlakyProxy accept loop crashed")
        finally:
            listener.close()

    def _admit(self, client: socket.socket) -> None:
        # Checked under the lock that down() takes: otherwise a connection admitted while an
        # outage starts could copy the outage's new cut epoch and survive it.
        with self._lock:
            if self._state != _RUNNING:
                _reset(client)
                return
            if self.is_down:
                self._stats["refused"] += 1
                _reset(client)
                return
            self._accepted += 1
            self._stats["connections"] += 1
            rng = random.Random(self._rng.getrandbits(64))
            conn = _Connection(self, client, rng, f"flaky-proxy-{self._port}-conn-{self._accepted}")
            self._connections.add(conn)
        conn.thread.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)
