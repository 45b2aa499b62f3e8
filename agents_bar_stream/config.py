"""Defaults, small frozen value objects and environment fallbacks.

Every default the client uses is named here once. Environment variables are fallbacks only: an
argument always wins, and each variable is read when the object that needs it is built.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents_bar_stream.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_ACT_TIMEOUT",
    "DEFAULT_BASE_URL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_COMMIT_INTERVAL",
    "DEFAULT_ERROR_INTERVAL",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_MAX_PENDING_BYTES",
    "ENV_ACCESS_TOKEN",
    "ENV_PASSWORD",
    "ENV_STREAM_PREFIX",
    "ENV_URL",
    "ENV_USERNAME",
    "RetryPolicy",
    "StreamOptions",
    "Timeouts",
    "default_queue_dir",
    "default_queue_root",
    "env_credentials",
    "parse_duration",
    "parse_size",
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
DEFAULT_ERROR_INTERVAL = 60.0  # seconds an outage lasts before on_error hears of it, and between two reports

#: ``AGENTS_BAR_STREAM_<FIELD>`` (upper case) is the fallback of each StreamOptions field.
ENV_STREAM_PREFIX = "AGENTS_BAR_STREAM_"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"1.5s"``, ``"250ms"``, ``"5m"``, ``"2h"`` or ``"7d"``; ValueError otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h|d)?\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (a number of seconds, or with a unit: 250ms, 30s, 5m, 2h, 7d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]


def parse_size(text: str) -> int:
    """Bytes from ``"1048576"``, ``"500MB"``, ``"1GiB"`` (case-insensitive); ValueError otherwise."""
    m = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size in bytes: {text!r} (an integer, or with a unit: 500MB, 2GiB)")
    return int(m.group(1)) * _SIZE_UNITS[unit]


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


def _parse_retry_policy(text: str) -> RetryPolicy:
    parts = str(text).split(",")
    if len(parts) != 2:
        raise ValueError(f"not a retry policy: {text!r} (initial,max_delay in seconds, e.g. 0.1,30)")
    return RetryPolicy(parse_duration(parts[0]), parse_duration(parts[1]))


def _parse_int(text: str) -> int:
    return int(str(text).strip())


# How each field's environment variable is read (a str for the others).
_ENV_PARSERS: dict[str, Any] = {
    "batch_size": _parse_int,
    "flush_interval": parse_duration,
    "commit_interval": parse_duration,
    "max_pending_bytes": parse_size,
    "block_timeout": parse_duration,
    "close_timeout": parse_duration,
    "error_interval": parse_duration,
    "retry_policy": _parse_retry_policy,
}


def _from_env(name: str, default: Any) -> Any:
    """A default_factory: the field's ``AGENTS_BAR_STREAM_<NAME>`` when set, else ``default``.

    Read when a StreamOptions is built without that field (an argument wins); a value that does
    not parse or is out of range raises ConfigurationError naming the variable.
    """
    def factory() -> Any:
        var = ENV_STREAM_PREFIX + name.upper()
        text = os.environ.get(var)
        if text is None or text.strip() == "":
            return default
        try:
            value = _ENV_PARSERS.get(name, str.strip)(text)
            _check_field(name, value)
        except (ValueError, ConfigurationError) as exc:
            raise ConfigurationError(f"${var}={text!r} is not a valid {name}: {exc}") from None
        return value

    return field(default_factory=factory)


def _check_field(name: str, v: Any) -> None:
    """Raise ConfigurationError when ``v`` is not a valid value of StreamOptions field ``name``."""
    if name == "durability":
        if v not in _DURABILITY:
            raise ConfigurationError(f"durability must be one of {_DURABILITY}, got {v!r}")
    elif name == "on_full":
        if v not in _ON_FULL:
            raise ConfigurationError(f"on_full must be one of {_ON_FULL}, got {v!r}")
    elif name == "retry_policy":
        if not isinstance(v, RetryPolicy):
            raise ConfigurationError("retry_policy must be an agents_bar_stream.config.RetryPolicy")
    elif name == "queue_dir":
        if v is not None and not isinstance(v, (str, os.PathLike)):
            raise ConfigurationError(f"queue_dir must be a path, got {type(v).__name__}")
    else:
        integer = name in ("batch_size", "max_pending_bytes")
        zero_ok = name in ("flush_interval", "block_timeout", "close_timeout")
        ok = (not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
              and (v >= 0 if zero_ok else v > 0))
        if not ok:
            kind = "integer" if integer else "number"
            raise ConfigurationError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} {kind}, got {v!r}")


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
    error_interval: seconds an outage (or a 404 for an agent not created yet) lasts before
        ``on_error`` hears of it, and the least time between two reports of one kind of problem.

    Every field not given falls back to the environment variable ``AGENTS_BAR_STREAM_<FIELD>``
    (``AGENTS_BAR_STREAM_DURABILITY=step``), read when the object is built: durations in seconds or
    with a unit (``250ms``, ``5m``), sizes in bytes or with one (``500MB``, ``2GiB``), the retry
    policy as ``initial,max_delay``. An argument always wins; a bad variable raises
    :class:`ConfigurationError` naming it.
    """

    queue_dir: str | os.PathLike[str] | None = _from_env("queue_dir", None)
    durability: str = _from_env("durability", "batch")
    batch_size: int = _from_env("batch_size", DEFAULT_BATCH_SIZE)
    flush_interval: float = _from_env("flush_interval", DEFAULT_FLUSH_INTERVAL)
    commit_interval: float = _from_env("commit_interval", DEFAULT_COMMIT_INTERVAL)
    max_pending_bytes: int = _from_env("max_pending_bytes", DEFAULT_MAX_PENDING_BYTES)
    on_full: str = _from_env("on_full", "block")
    block_timeout: float = _from_env("block_timeout", DEFAULT_BLOCK_TIMEOUT)
    close_timeout: float = _from_env("close_timeout", DEFAULT_CLOSE_TIMEOUT)
    retry_policy: RetryPolicy = _from_env("retry_policy", RetryPolicy())
    error_interval: float = _from_env("error_interval", DEFAULT_ERROR_INTERVAL)

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            _check_field(name, getattr(self, name))


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
