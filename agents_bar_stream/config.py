"""Defaults, small frozen value objects and environment fallbacks.

Every default the client uses is named here once. Environment variables are fallbacks only: an
argument always wins, and each variable is read when the object that needs it is built.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agents_bar_stream.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_ACT_TIMEOUT",
    "DEFAULT_BASE_URL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_COMMIT_INTERVAL",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_MAX_PENDING_BYTES",
    "ENV_ACCESS_TOKEN",
    "ENV_PASSWORD",
    "ENV_URL",
    "ENV_USERNAME",
    "RetryPolicy",
    "StreamOptions",
    "Timeouts",
    "default_queue_dir",
    "default_queue_root",
    "env_credentials",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"

ENV_URL = "AGENTS_BAR_URL"
ENV_ACCESS_TOKEN = "AGENTS_BAR_ACCESS_TOKEN"
ENV_USERNAME = "AGENTS_BAR_USERNAME"
ENV_PASSWORD = "AGENTS_BAR_PASSWORD"
# The published client read these older names; accept them so that existing setups keep working.
ENV_USERNAME_OLD = "AGENTS_BAR_USER"
ENV_PASSWORD_OLD = "AGENTS_BAR_PASS"
ENV_QUEUE_ROOT = "AGENTS_BAR_STREAM_QUEUE_ROOT"

DEFAULT_ACT_TIMEOUT = 5.0  # seconds, a deadline across all of act()'s retries
DEFAULT_BATCH_SIZE = 10_000  # most steps per POST /steps; the server may ask for fewer (max_batch_steps)
DEFAULT_FLUSH_INTERVAL = 0.05  # seconds the flusher waits for a batch to fill before sending a short one
DEFAULT_COMMIT_INTERVAL = 0.005  # seconds between group commits with durability="batch"
DEFAULT_MAX_PENDING_BYTES = 2**30  # 1 GiB of queued steps on disk
DEFAULT_BLOCK_TIMEOUT = 60.0  # seconds step() waits for room with on_full="block" before QueueFullError
DEFAULT_CLOSE_TIMEOUT = 5.0  # seconds close() and the atexit hook try to deliver before leaving the rest on disk


@dataclass(frozen=True)
class Timeouts:
    """Socket timeouts of one HTTP call, in seconds."""

    connect: float = 3.05
    read: float = 30.0

    def as_requests(self) -> tuple:
        return (self.connect, self.read)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: sleep uniformly in ``[0, min(max_delay, initial * 2**n))``."""

    initial: float = 0.1
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.max_delay >= self.initial):
            raise ValueError("RetryPolicy needs 0 < initial <= max_delay")


_DURABILITY = ("batch", "step")
_ON_FULL = ("block", "raise", "drop_oldest")


@dataclass(frozen=True)
class StreamOptions:
    """How ``RemoteAgent``'s streaming queue behaves: ``RemoteAgent(client, name, stream=StreamOptions(...))``.

    A value object of its own, so that no option of the queue can shadow an agent hyperparameter
    (``batch_size`` is the learner's, as in the published client; here it is the steps per request).
    Checked once, when built: a bad value raises :class:`ConfigurationError` naming it.

    queue_dir: the queue's directory (default: one per service URL and agent under
        ``$AGENTS_BAR_STREAM_QUEUE_ROOT``, else ``~/.cache/agents-bar-stream/queues``).
    durability: ``"batch"`` (group commit every ``commit_interval``) or ``"step"`` (each step
        committed before ``step()`` returns).
    batch_size: most steps per request (the server may ask for fewer).
    flush_interval: seconds a short batch waits to fill before it is sent.
    commit_interval: seconds between group commits with ``durability="batch"``.
    max_pending_bytes: most bytes of undelivered steps kept on disk.
    on_full: at ``max_pending_bytes``: ``"block"`` (up to ``block_timeout``), ``"raise"`` or ``"drop_oldest"``.
    block_timeout: longest wait of ``on_full="block"`` before :class:`QueueFullError`.
    close_timeout: how long ``close()`` and the exit hook try to deliver before leaving the rest on disk.
    retry_policy: the flusher's backoff.
    """

    queue_dir: str | os.PathLike[str] | None = None
    durability: str = "batch"
    batch_size: int = DEFAULT_BATCH_SIZE
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    commit_interval: float = DEFAULT_COMMIT_INTERVAL
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    on_full: str = "block"
    block_timeout: float = DEFAULT_BLOCK_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    retry_policy: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if self.durability not in _DURABILITY:
            raise ConfigurationError(f"durability must be one of {_DURABILITY}, got {self.durability!r}")
        if self.on_full not in _ON_FULL:
            raise ConfigurationError(f"on_full must be one of {_ON_FULL}, got {self.on_full!r}")
        self._check("batch_size", integer=True)
        self._check("max_pending_bytes", integer=True)
        self._check("flush_interval", zero_ok=True)
        self._check("commit_interval")
        self._check("block_timeout", zero_ok=True)
        self._check("close_timeout", zero_ok=True)
        if not isinstance(self.retry_policy, RetryPolicy):
            raise ConfigurationError("retry_policy must be an agents_bar_stream.config.RetryPolicy")
        if self.queue_dir is not None and not isinstance(self.queue_dir, (str, os.PathLike)):
            raise ConfigurationError(f"queue_dir must be a path, got {type(self.queue_dir).__name__}")

    def _check(self, name: str, integer: bool = False, zero_ok: bool = False) -> None:
        v = getattr(self, name)
        ok = (not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
              and (v >= 0 if zero_ok else v > 0))
        if not ok:
            kind = "integer" if integer else "number"
            raise ConfigurationError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} {kind}, got {v!r}")


def env_credentials(environ: Mapping[str, str] | None = None) -> tuple:
    """``(username, password)`` from the environment, new names first, then the published client's."""
    env = os.environ if environ is None else environ
    username = env.get(ENV_USERNAME) or env.get(ENV_USERNAME_OLD)
    password = env.get(ENV_PASSWORD) or env.get(ENV_PASSWORD_OLD)
    return username, password


def default_queue_root() -> Path:
    """Where queues live unless ``queue_dir`` is given: ``$AGENTS_BAR_STREAM_QUEUE_ROOT``, else the user cache."""
    root = os.environ.get(ENV_QUEUE_ROOT)
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "agents-bar-stream" / "queues"


def default_queue_dir(base_url: str, agent_name: str) -> Path:
    """A queue directory keyed by service URL and agent, readable by a person listing the root."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", base_url.split("://", 1)[-1]).strip("_")[:60]
    digest = hashlib.sha256(f"{base_url}\n{agent_name}".encode()).hexdigest()[:12]
    return default_queue_root() / f"{slug}--{agent_name}--{digest}"
