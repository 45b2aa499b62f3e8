"""The one-process-per-directory lock: an ``flock`` on ``DIR/lock``, which holds the owner's pid.

An ``flock`` goes with its descriptor: a process that dies, however it dies, gives the lock back, so a
queue is never left locked by a crash. On systems without ``fcntl`` there is no lock, and one process
per queue is the user's promise.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockHeld", "acquire", "holder", "release"]

_NAME = "lock"


class LockHeld(Exception):
    """Another descriptor holds the lock; ``.pid`` is what the holder wrote (may be empty)."""

    def __init__(self, pid: str) -> None:
        super().__init__(pid)
        self.pid = pid


def acquire(directory: Path) -> int | None:
    """Take the lock of ``directory`` without waiting; its descriptor (None without ``fcntl``).

    Raises :class:`LockHeld` when another descriptor has it, ``OSError`` when the file cannot be made.
    """
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(Path(directory) / _NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = _read_pid(fd)
        os.close(fd)
        raise LockHeld(pid) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def release(fd: int | None) -> None:
    """Give the lock back (closing the descriptor releases the flock)."""
    if fd is None:
        return
    try:
        os.close(fd)
    except OSError:  # pragma: no cover - already closed
        pass


def holder(directory: Path) -> str | None:
    """The pid (as written, or ``"unknown"``) of the process holding the lock of ``directory``; None if free."""
    path = Path(directory) / _NAME
    if fcntl is None or not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd) or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return ""
