"""Connection guards that uvicorn lacks: request-head and body deadlines, a connection cap, quiet accept errors.

uvicorn (0.55, h11) closes a connection only when it stays idle ``timeout_keep_alive`` seconds
*after a response*. A connection that sends nothing, or dribbles its request head or its body a
byte at a time, was kept for ever (issue 9: 200 slowloris connections lived their whole 40-60 s,
and 300 of them took every file descriptor of a server limited to 256, so that normal requests
timed out). :func:`guarded_protocol` returns uvicorn's h11 protocol with, per connection:

- a **head deadline**: the request line and headers must be complete within
  ``head_timeout`` seconds of the connection's start (or of the previous response);
- a **body pace**: while the client owes request body, each ``body_window`` seconds must bring at
  least ``body_min_bytes`` (unless the server itself paused reading);
- a **cap**: past ``max_connections`` open connections, a new one evicts the connection that has
  owed the server bytes longest (a request head, else a request body: an attacker's, typically);
  if none owes anything, the new connection is closed at once. A request whose head and body
  arrived (the server is working on it, or answering) is never cut.

:class:`RateLimitedLoopErrors` is an event loop exception handler: asyncio logs
``socket.accept() out of system resource`` once per pending connection in a loop when file
descriptors run out (issue 9: 321,488 lines, 143 MB in 25 s); it keeps one line per message per
``interval`` with the count of those it held back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionLimits", "RateLimitedLoopErrors", "guarded_protocol"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits; see the module docstring and docs/security.md."""

    head_timeout: float = 10.0  # seconds to send a whole request head
    body_window: float = 10.0  # seconds ...
    body_min_bytes: int = 10 * 1024  # ... in which a request body must progress by this much (1 KiB/s)
    keep_alive: int = 5  # seconds an idle connection is kept between requests (uvicorn's timeout_keep_alive)
    max_connections: int = 1000  # open connections at most (capped further by the file descriptor limit)
    max_head_bytes: int = 16 * 1024  # request line and headers (h11_max_incomplete_event_size)


class _Counter:
    """Log one line per ``interval`` for an event that can repeat thousands of times a second."""

    def __init__(self, message: str, interval: float = 10.0) -> None:
        self.message = message
        self.interval = interval
        self._last = -float("inf")
        self._held = 0

    def hit(self, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held += 1
            return
        more = f" ({self._held} more in the last {self.interval:.0f} s)" if self._held else ""
        logger.warning(self.message + more, *args)
        self._last = now
        self._held = 0


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with the guards of ``limits``; pass it as ``uvicorn.Config(http=...)``."""
    # Connections whose client owes bytes (a request head, or a body), in the order they started
    # owing them (a dict keeps insertion order): the first to be evicted when the cap is reached.
    waiting: dict[GuardedH11Protocol, None] = {}
    timed_out = _Counter("closed a connection that was too slow to send its %s")
    over_cap = _Counter("%d connections open, the most allowed (--max-connections): %s")

    class GuardedH11Protocol(H11Protocol):
        _guard: asyncio.TimerHandle | None = None
        _phase = "new"  # "head": waiting for a request head; "body": receiving a body; "busy": the app has it
        _body_seen = 0
        _body_mark = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                victim = next(iter(waiting), None)
                if victim is not None:
                    over_cap.hit(limits.max_connections, "closed the one that owed a request head or body longest")
                    victim._close()
                else:
                    over_cap.hit(limits.max_connections, "refused a new one (every other has a whole request in)")
                    self._close()
                    return
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_guard()
            waiting.pop(self, None)
            self._phase = "closed"
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._phase == "body":
                self._body_seen += len(data)
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            # Arm before uvicorn handles a pipelined request, which _follow() then sees.
            if not self.transport.is_closing():
                self._await_head()
            super().on_response_complete()
            self._follow()

        # -- the guards --

        def _await_head(self) -> None:
            self._cancel_guard()
            self._phase = "head"
            waiting.pop(self, None)
            waiting[self] = None
            self._guard = self.loop.call_later(limits.head_timeout, self._too_slow, "request head")

        def _follow(self) -> None:
            """Move between phases as h11 sees the client's side of the request progress."""
            state = self.conn.their_state
            if self._phase == "head" and state is not h11.IDLE:
                waiting.pop(self, None)
                self._cancel_guard()
                if state is h11.SEND_BODY:
                    self._phase = "body"
                    waiting[self] = None  # still owes bytes: evictable, after those waiting for a head
                    self._body_seen = self._body_mark = 0
                    self._guard = self.loop.call_later(limits.body_window, self._check_body)
                else:
                    self._phase = "busy"
            elif self._phase == "body" and state is not h11.SEND_BODY:
                waiting.pop(self, None)
                self._cancel_guard()
                self._phase = "busy"

        def _check_body(self) -> None:
            self._guard = None
            if self._phase != "body" or self.transport.is_closing():
                return
            if self.conn.their_state is not h11.SEND_BODY:
                self._phase = "busy"
                return
            paused = self.flow is not None and self.flow.read_paused  # the app is slow to read: not the client's fault
            if not paused and self._body_seen - self._body_mark < limits.body_min_bytes:
                self._too_slow("request body")
                return
            self._body_mark = self._body_seen
            self._guard = self.loop.call_later(limits.body_window, self._check_body)

        def _too_slow(self, what: str) -> None:
            self._guard = None
            timed_out.hit(what)
            self._close()

        def _close(self) -> None:
            self._cancel_guard()
            waiting.pop(self, None)
            self._phase = "closed"
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app's receive() says http.disconnect
                self.cycle.message_event.set()
            # abort(), not close(): the file descriptor is freed now, not after a flush to a client
            # that does not read.
            self.transport.abort()

        def _cancel_guard(self) -> None:
            if self._guard is not None:
                self._guard.cancel()
                self._guard = None

    return GuardedH11Protocol


class RateLimitedLoopErrors:
    """An asyncio exception handler that passes each distinct message on at most once per ``interval``."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        now = time.monotonic()
        if now - self._last.get(message, -float("inf")) < self.interval:
            self._held[message] = self._held.get(message, 0) + 1
            return
        if len(self._last) > 1000:  # bounded whatever the messages
            self._last.clear()
        held = self._held.pop(message, 0)
        self._last[message] = now
        if held:
            context = {**context, "message": f"{message} ({held} more in the last {self.interval:.0f} s)"}
        loop.default_exception_handler(context)
