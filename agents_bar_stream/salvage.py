"""Reading what a damaged queue database still holds, row by row, trusting only what passes its check.

Used by :class:`~agents_bar_stream.storage.DiskQueue` when its database fails to open (the file was
truncated, overwritten, or is no SQLite database at all) and by ``agents-bar-stream queue salvage``.
The damaged files are never changed: they are copied to a scratch directory and read from there
(SQLite may replay a write-ahead log into the file it opens, and the original must stay as it was
found, for a person to look at).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agents_bar_stream.segment import SegmentDamaged, decode_segment

__all__ = ["NUMBERING_KEYS", "Salvage", "read_damaged_database"]

# The meta keys that say how local numbers map to the server's. Every queue writes all of them when
# it is created (and an older queue when it is first opened by this version), so a salvage that
# misses one knows the key was lost, not that it was never written.
NUMBERING_KEYS = ("meta.producer_id", "meta.consumed", "meta.shift", "meta.removed", "meta.sent_through")

_DB_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")
_MAX_PROBES = 1_000_000  # rowid look-ups when the table can no longer be scanned
_MISSES_TO_STOP = 2_000  # consecutive empty rowids, past the highest seen, that end the look-ups


@dataclass
class Salvage:
    """What could be read from a damaged database."""

    meta: dict[str, Any] = field(default_factory=dict)
    # first local -> (time, items): segments whose bytes passed their check
    segments: dict[int, tuple[float, list[bytes]]] = field(default_factory=dict)
    # first local -> reason: segments that were there but failed their check
    bad_segments: dict[int, str] = field(default_factory=dict)
    dead_letters: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return sum(len(items) for _t, items in self.segments.values())

    def numbering_known(self) -> bool:
        """True when every key needed to keep the server's numbering was read back."""
        return all(key in self.meta for key in NUMBERING_KEYS)


def read_damaged_database(data_dir: Path) -> Salvage:
    """Everything that can still be read from the diskcache database in ``data_dir`` (left unchanged)."""
    salvage = Salvage()
    data_dir = Path(data_dir)
    with tempfile.TemporaryDirectory(prefix="salvage-", dir=data_dir.parent) as scratch:
        for name in _DB_FILES:
            if (data_dir / name).exists():
                try:
                    shutil.copyfile(data_dir / name, Path(scratch) / name)
                except OSError as exc:
                    salvage.errors.append(f"could not copy {name}: {exc}")
        if not (Path(scratch) / "cache.db").exists():
            salvage.errors.append("there is no cache.db")
            return salvage
        _restore_magic(Path(scratch) / "cache.db", salvage.errors)
        try:
            conn = sqlite3.connect(str(Path(scratch) / "cache.db"), isolation_level=None)
        except sqlite3.Error as exc:
            salvage.errors.append(f"the database does not open: {exc}")
            return salvage
        try:
            for key, value in _rows(conn, salvage.errors):
                _sort(salvage, key, value)
        finally:
            conn.close()
    return salvage


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _restore_magic(db: Path, errors: list[str]) -> None:
    """Put back SQLite's fixed 16-byte magic in the scratch copy: without it nothing else can be read."""
    try:
        with open(db, "r+b") as f:
            head = f.read(len(_SQLITE_MAGIC))
            if len(head) == len(_SQLITE_MAGIC) and head != _SQLITE_MAGIC:
                f.seek(0)
                f.write(_SQLITE_MAGIC)
                errors.append("the file's SQLite magic was damaged (restored in the copy read here)")
    except OSError as exc:
        errors.append(f"could not read the copy: {exc}")


def _sort(salvage: Salvage, key: Any, value: Any) -> None:
    if type(key) is int:
        try:
            salvage.segments[key] = decode_segment(value)
        except SegmentDamaged as exc:
            salvage.bad_segments[key] = str(exc)
    elif isinstance(key, str) and key.startswith("dead.") and isinstance(value, bytes):
        salvage.dead_letters[key] = value
    elif isinstance(key, str) and key.startswith("meta."):
        if key == "meta.removed" or key == "meta.damaged" or key == "meta.damage":
            try:
                orjson.loads(value)
            except (orjson.JSONDecodeError, TypeError):
                salvage.errors.append(f"{key} does not decode")
                return
        salvage.meta[key] = value


def _rows(conn: sqlite3.Connection, errors: list[str]) -> list[tuple[Any, Any]]:
    """(key, value) of every row that can be read: a scan, else one look-up per rowid."""
    query = "SELECT key, value FROM Cache WHERE raw = 1 AND mode = 1"
    try:
        return list(conn.execute(query))
    except sqlite3.Error as exc:
        errors.append(f"the table does not scan ({exc}); reading row by row")
    try:
        top = int(conn.execute("SELECT max(rowid) FROM Cache").fetchone()[0] or 0)
    except (sqlite3.Error, TypeError, ValueError):
        top = 0
    rows: list[tuple[Any, Any]] = []
    failed = misses = 0
    rowid = 0
    while rowid < _MAX_PROBES:
        rowid += 1
        try:
            row = conn.execute(query + " AND rowid = ?", (rowid,)).fetchone()
        except sqlite3.Error:
            failed += 1
            row = None
        if row is None:
            misses += 1
            if rowid > top and misses >= _MISSES_TO_STOP:
                break
            continue
        misses = 0
        rows.append(row)
    if failed:
        errors.append(f"{failed} rows could not be read")
    return rows
