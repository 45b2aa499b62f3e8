"""Every error this package raises, rooted at :class:`AgentsBarError`.

Nothing above ``transport.py`` ever sees a ``requests`` exception: the transport translates
them here, so callers (and the retry predicates) test only these types::

    AgentsBarError
    ├── ConfigurationError (+ValueError)      a bad argument or missing credentials; fix the call
    │   └── WrongServiceError                 base_url answers, but not as an Agents Bar service
    ├── InvalidStepError (+ValueError)        step() was given a transition that can never be accepted
    ├── AuthenticationError                   wrong credentials, or a token the server refuses
    ├── APIError                              the server answered with an error (.status, .detail)
    │   ├── AgentNotFoundError                404: no such agent for this account
    │   ├── AgentExistsError                  409 on create: the name is taken
    │   ├── InvalidRequestError (+ValueError) 400/422: the server rejected the input
    │   └── PayloadTooLargeError              413: the body is over the server's limits
    ├── ServiceUnavailableError               safe to retry: the service could not be reached
    │   ├── ConnectionFailedError             refused, reset, DNS: nothing reached the server
    │   ├── RequestTimeoutError               no answer in time (the request may have been applied)
    │   └── ServerBusyError                   429 or 5xx (.status, .retry_after)
    ├── StreamError                           the local streaming queue
    │   ├── QueueFullError                    max_pending_bytes reached with on_full="raise" (or block timed out)
    │   ├── StorageError (+OSError)           the disk is full, read-only or broken; nothing queued is lost
    │   └── QueueLockedError                  another process owns this queue directory
    └── ClosedError                           the agent or client was used after close()

``ServiceUnavailableError`` is the retryable family: ``act`` retries it within its deadline and
the background flusher retries it forever.

``SequenceLostError`` (a ``StreamError``) is deprecated: it was never raised. A server that lost
steps the client had already deleted is reported in ``stats["sequence_lost"]`` and the log, and
delivery goes on; importing the name still works, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = [
    "APIError",
    "AgentExistsError",
    "AgentNotFoundError",
    "AgentsBarError",
    "AuthenticationError",
    "ClosedError",
    "ConfigurationError",
    "ConnectionFailedError",
    "InvalidRequestError",
    "InvalidStepError",
    "PayloadTooLargeError",
    "PolicyError",
    "QueueFullError",
    "QueueLockedError",
    "RequestTimeoutError",
    "ServerBusyError",
    "ServiceUnavailableError",
    "StorageError",
    "StreamError",
    "WrongServiceError",
]


class AgentsBarError(Exception):
    """Root of every error raised by agents_bar_stream."""


class ConfigurationError(AgentsBarError, ValueError):
    """A bad argument or missing configuration (such as credentials); the call itself is wrong."""


class WrongServiceError(ConfigurationError):
    """``base_url`` answers, but not as an Agents Bar service (its login endpoint is a 404, say, or
    ``/stream/info`` is an HTML page): the address is wrong. The flusher keeps the steps and retries
    slowly, in case the right service comes back at that address."""


class InvalidStepError(AgentsBarError, ValueError):
    """A transition that can never be accepted (type, length, non-finite number); nothing was queued."""

    #: From ``step_many()``: the position of the refused row among the rows it was to queue.
    row: int | None = None


class AuthenticationError(AgentsBarError):
    """The server refused the credentials or the access token."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class APIError(AgentsBarError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``detail`` the server's explanation and ``body`` the whole decoded
    JSON answer (or ``None`` when it was not JSON), so that fields such as ``index`` or
    ``expected_seq`` stay available.
    """

    def __init__(self, status: int, detail: str, *, body: Any = None, method: str = "", path: str = "") -> None:
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{status}{where}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body
        self.method = method
        self.path = path


class AgentNotFoundError(APIError):
    """404: the agent does not exist, or belongs to another account."""


class AgentExistsError(APIError):
    """409 on create: this account already has an agent with that name."""


class InvalidRequestError(APIError, ValueError):
    """400 or 422: the server rejected the input; repeating the same request will not help."""


class PayloadTooLargeError(APIError):
    """413: the request body is over the server's limits."""


class PolicyError(AgentsBarError, ValueError):
    """A policy model that cannot be used (corrupt, of another format, for other sizes), or an
    observation it cannot act on (wrong length, not numbers, not finite). Not retryable: the same
    bytes or the same observation fail the same way. Raised by :mod:`agents_bar_stream.policy`."""


class ServiceUnavailableError(AgentsBarError):
    """The service could not be reached or asked us to come back later. Safe to retry."""


class ConnectionFailedError(ServiceUnavailableError):
    """The connection was refused, reset or could not be opened."""


class RequestTimeoutError(ServiceUnavailableError):
    """No answer within the timeout. The server may still have applied the request."""


class ServerBusyError(ServiceUnavailableError):
    """429 or a 5xx answer. ``retry_after`` is the server's Retry-After in seconds, when given."""

    def __init__(self, status: int, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class StreamError(AgentsBarError):
    """An error of the local streaming queue."""


class QueueFullError(StreamError):
    """The queue holds ``max_pending_bytes`` already and the policy says not to wait (or the wait ran out)."""


class StorageError(StreamError, OSError):
    """The queue's disk refused a write (full, read-only, broken). Nothing already queued was lost."""


class QueueLockedError(StreamError):
    """Another process holds the lock of this queue directory."""


class _SequenceLostError(StreamError):
    """Deprecated, never raised: see ``stats["sequence_lost"]``."""


_SequenceLostError.__name__ = _SequenceLostError.__qualname__ = "SequenceLostError"

_DEPRECATED: dict[str, tuple[type, str]] = {
    "SequenceLostError": (_SequenceLostError, "SequenceLostError is deprecated and never raised: a server that lost "
                          "steps is reported in stats['sequence_lost'] and the log"),
}


def __getattr__(name: str) -> Any:
    # PEP 562: deprecated names stay importable, with a warning where they are used.
    if name in _DEPRECATED:
        value, message = _DEPRECATED[name]
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ClosedError(AgentsBarError):
    """The object was used after ``close()``."""
