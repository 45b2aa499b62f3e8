"""The server's durable state: the :class:`Store` interface, and :class:`SqliteStore` in one SQLite file
(stdlib ``sqlite3``, no ORM). ``store_pg.PostgresStore`` keeps the same tables in PostgreSQL.

Tables::

    users      (name, password_hash)
    agents     (id, owner, name, model, description, config JSON, is_active, steps_received)
    producers  (agent_id, producer_id, acked_seq, last_seen)   one row per streaming client queue
    batches    (agent_id, log_start, producer_id, first_seq, count, data, policy_versions)

``batches`` is the accepted transition log of every agent: one row per accepted slice of a
``POST /steps`` batch (or per legacy ``POST /step``), ``data`` being the orjson list of its steps
(their five wire fields), or, for steps that came in the binary encoding (issue 12), the compact
form of ``arrays.pack_steps``: ``b"ABL1"``, the steps as JSON with each array a reference, then
the arrays' raw bytes (``ABLZ``: the same as one zstd frame, when that is smaller). A row in
that form starts with ``AB``, a JSON row with ``[``, so rows written before the form existed
read as they always did, and no migration is needed. ``policy_versions`` is NULL unless a step
of the slice carried a ``policy_version`` (issue 11); then it is the orjson list, parallel to
``data``, of each step's version or null. The column was added after the first release:
:class:`SqliteStore` adds it to an older database when it opens it, and so ``producers.last_seen`` (the
time of the producer's last batch that moved ``acked_seq``, for the dashboard; NULL for rows
older than the column).
``log_start`` is the position of the first of them in the agent's log, so the log reads in order
and the learner keeps a plain integer cursor into it. One row per batch rather than per step is
what makes a 100k-step burst cheap: a few dozen inserts instead of 100k.

Writes go through one connection guarded by a lock (SQLite has one writer anyway); each reading
thread has its own connection, which WAL lets run beside the writer.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson

__all__ = [
    "MAX_POLICY_VERSION_LENGTH",
    "AgentExists",
    "AgentRow",
    "LogEntry",
    "ProducerRow",
    "SequenceGap",
    "SqliteStore",
    "Store",
    "StoreUnavailable",
    "TooManyAgents",
    "decode_steps",
    "encode_steps",
    "log_entries",
    "parse_store_url",
    "step_policy_version",
]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    description TEXT,
    config BLOB NOT NULL,
    is_active INTEGER NOT NULL,
    steps_received INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS producers (
    agent_id INTEGER NOT NULL,
    producer_id TEXT NOT NULL,
    acked_seq INTEGER NOT NULL,
    last_seen REAL,
    PRIMARY KEY (agent_id, producer_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    agent_id INTEGER NOT NULL,
    log_start INTEGER NOT NULL,
    producer_id TEXT,
    first_seq INTEGER,
    count INTEGER NOT NULL,
    data BLOB NOT NULL,
    policy_versions BLOB,
    PRIMARY KEY (agent_id, log_start)
) WITHOUT ROWID;
"""

# Added to ``batches`` after the first release; see _migrate().
_BATCHES_POLICY_VERSIONS = "ALTER TABLE batches ADD COLUMN policy_versions BLOB"
_PRODUCERS_LAST_SEEN = "ALTER TABLE producers ADD COLUMN last_seen REAL"
#: The longest ``policy_version`` a step may carry (longer or non-string values are ignored).
MAX_POLICY_VERSION_LENGTH = 64

# The five fields of a wire step; anything else a client sends is dropped before storing (the
# protocol says servers ignore unknown fields), so the log cannot be bloated with junk.
_STEP_FIELDS = ("obs", "action", "reward", "next_obs", "done")
# The fields that may hold an array (a step of the binary encoding) instead of a list.
_ARRAY_FIELDS = ("obs", "next_obs", "action")
# arrays.LOG_MAGIC and LOG_MAGIC_ZSTD, repeated so that reading a log of JSON rows does not import numpy.
_PACKED_MAGIC = (b"ABL1", b"ABLZ")


class AgentExists(Exception):
    """The owner already has an agent with this name."""


class TooManyAgents(Exception):
    """The owner has as many agents as it may."""


class SequenceGap(Exception):
    """``first_seq`` is beyond ``acked_seq + 1``; ``expected_seq`` says where to resume."""

    def __init__(self, expected_seq: int) -> None:
        super().__init__(f"expected first_seq {expected_seq}")
        self.expected_seq = expected_seq


@dataclass(frozen=True)
class AgentRow:
    id: int
    owner: str
    name: str
    model: str
    description: str | None
    config: dict[str, Any]
    is_active: bool
    steps_received: int
    created_at: float


class ProducerRow(NamedTuple):
    """One streaming producer of an agent: its position and when it last moved (``time.time()``)."""

    producer_id: str
    acked_seq: int
    last_seen: float | None


class LogEntry(NamedTuple):
    """One step of an agent's log."""

    producer_id: str | None
    seq: int | None
    step: Any
    #: The ``policy_version`` the step carried (the policy that chose its action), or None.
    policy_version: str | None


def step_policy_version(step: Any) -> str | None:
    """The step's ``policy_version`` if it carries a usable one (a string of 1 to 64 characters).

    Anything else is ignored like every unknown step field: a client that sends a malformed
    version loses the staleness report for that step, never the step.
    """
    value = step.get("policy_version") if isinstance(step, dict) else None
    if isinstance(value, str) and 0 < len(value) <= MAX_POLICY_VERSION_LENGTH:
        return value
    return None


# -- one batch of steps as stored ------------------------------------------------------------------
# Both stores (this SQLite one and store_pg.PostgresStore) keep a batch as the same two columns,
# made and read by these two functions only: a change of the encoding is made here, once.


def encode_steps(steps: Sequence[dict[str, Any]]) -> tuple[bytes, bytes | None]:
    """The ``(data, policy_versions)`` columns of a batch of validated steps (see the module docstring)."""
    versions = None
    if any(type(s[k]) is not list for s in steps for k in _ARRAY_FIELDS):
        # Steps of the binary encoding hold numpy arrays: stored as their bytes with dtype and
        # shape (arrays.pack_steps), never as number text: lossless and ~the size of the data.
        from agents_bar_stream.server.arrays import pack_steps

        data = pack_steps(steps, _STEP_FIELDS, compress=True)
    elif all(len(s) == len(_STEP_FIELDS) for s in steps):
        # Steps were validated, so each has the five fields; only one with extra fields (which the
        # protocol says to ignore) needs rebuilding, and re-encoding the list as it is costs far less.
        data = orjson.dumps(steps)
    else:
        data = orjson.dumps([{k: s[k] for k in _STEP_FIELDS} for s in steps])
    if any(len(s) != len(_STEP_FIELDS) for s in steps):
        found = [step_policy_version(s) for s in steps]
        if any(v is not None for v in found):
            versions = orjson.dumps(found)
    return data, versions


def decode_steps(
    data: bytes, versions_data: bytes | None, count: int, *, arrays: bool = False
) -> tuple[list[Any], list[str | None]]:
    """The steps of a batch and each one's ``policy_version`` (None: it carried none), from its columns.

    Steps stored as arrays (the binary encoding) come out as read-only numpy arrays with
    ``arrays=True``, else as the flat lists a JSON step would hold.
    """
    if data[:4] in _PACKED_MAGIC:
        from agents_bar_stream.server.arrays import step_to_json, unpack_steps

        steps = unpack_steps(data)
        if not arrays:
            steps = [step_to_json(s) for s in steps]
    else:
        steps = orjson.loads(data)
    versions = orjson.loads(versions_data) if versions_data is not None else [None] * count
    return steps, versions


def log_entries(rows: Sequence[Sequence[Any]], start: int, end: int, *, arrays: bool = False) -> list[LogEntry]:
    """The log entries at positions ``start`` to ``end`` (excluded) of ``batches`` rows
    ``(log_start, producer_id, first_seq, count, data, policy_versions)`` read in log order
    (the first row may begin before ``start``): what both stores' ``read_entries`` return."""
    out: list[LogEntry] = []
    for log_start, producer_id, first_seq, count, data, versions_data in rows:
        lo = max(start - log_start, 0)
        hi = min(end - log_start, count)
        if lo >= hi:
            continue
        steps, versions = decode_steps(data, versions_data, count, arrays=arrays)
        for i in range(lo, hi):
            seq = None if first_seq is None else first_seq + i
            out.append(LogEntry(producer_id, seq, steps[i], versions[i]))
    return out


_AGENT_COLUMNS = "id, owner, name, model, description, config, is_active, steps_received, created_at"


def _agent(row: Sequence[Any]) -> AgentRow:
    return AgentRow(
        id=row[0],
        owner=row[1],
        name=row[2],
        model=row[3],
        description=row[4],
        config=orjson.loads(row[5]),
        is_active=bool(row[6]),
        steps_received=row[7],
        created_at=row[8],
    )


def parse_store_url(url: str) -> tuple[str, str]:
    """``("postgresql", url)`` or ``("sqlite", path)`` of a ``--store`` value; raises ``ValueError``.

    PostgreSQL: any libpq URI (``postgresql://`` or ``postgres://``, a Unix socket directory as
    ``?host=/dir``), passed to psycopg as it is. SQLite: ``sqlite:///path/to/file.sqlite3``.
    """
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql", url
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if not path.startswith("/"):
            raise ValueError(f"a SQLite store is sqlite:///absolute/path, not {url!r}")
        return "sqlite", path
    raise ValueError(f"unknown store {url!r}: expected postgresql://... or sqlite:///path")


class StoreUnavailable(Exception):
    """The database cannot be reached or cannot write now (a 503: nothing was applied, try again)."""


class Store(Protocol):
    """What the routes and the learners use of the durable state; :class:`SqliteStore` and
    ``store_pg.PostgresStore`` implement it with the same behaviour (the store tests run on both).

    Every write is one transaction, all or none. ``shared`` says whether other server processes
    (replicas) use the same database: then weights, the signing key and learner placement live in
    it too (see ``store_pg``); otherwise they live in the data directory beside it.
    """

    shared: bool

    def close(self) -> None: ...
    def set_user(self, name: str, password_hash: str) -> None: ...
    def password_hash(self, name: str) -> str | None: ...
    def create_agent(
        self, *, owner: str, name: str, model: str, description: str | None, config: dict[str, Any], is_active: bool,
        max_per_owner: int | None = None,
    ) -> AgentRow: ...
    def get_agent(self, owner: str, name: str) -> AgentRow | None: ...
    def agent_by_id(self, agent_id: int) -> AgentRow | None: ...
    def list_agents(self, owner: str | None = None) -> list[AgentRow]: ...
    def delete_agent(self, agent_id: int) -> bool: ...
    def acked_seq(self, agent_id: int, producer_id: str) -> int: ...
    def producers(self, agent_id: int, limit: int) -> tuple[list[ProducerRow], int]: ...
    def steps_received(self, agent_id: int) -> int: ...
    def append_batch(
        self, agent_id: int, producer_id: str, first_seq: int, steps: Sequence[dict[str, Any]]
    ) -> tuple[int, int, int]: ...
    def append_step(self, agent_id: int, step: dict[str, Any]) -> int: ...
    def read_log(self, agent_id: int, start: int, limit: int) -> list[tuple[str | None, int | None, Any]]: ...
    def read_entries(self, agent_id: int, start: int, limit: int, *, arrays: bool = False) -> list[LogEntry]: ...


class SqliteStore:
    """All durable server state; thread-safe.

    ``synchronous`` is SQLite's ``PRAGMA synchronous``. The default ``FULL`` makes every commit
    wait for the write-ahead log to reach the disk (fsync), so a ``200`` to ``POST /steps`` means
    the steps survive a power cut or an OS crash, which is what the protocol promises. ``NORMAL``
    (WAL mode) would still survive a killed server process, but a machine crash could lose the
    last commits that were already acknowledged; it is offered only for benchmarks.
    """

    #: One server process per database file (the data directory holds weights and the signing key).
    shared = False

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        # isolation_level=None: no implicit transactions; every write opens BEGIN IMMEDIATE itself,
        # so the moment of the commit (and of the fsync) is explicit.
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.executescript(_SCHEMA)
        self._migrate()
        # SQLite's automatic checkpoint runs inside whichever commit crosses 1000 WAL pages: with
        # MB-sized batches every second or third POST /steps paid ~200 ms for it. A background
        # thread checkpoints instead (PASSIVE: it never waits for, nor blocks, the writer).
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpoint_stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="agents-bar-checkpoint", daemon=True)
        self._checkpointer.start()

    def _migrate(self) -> None:
        """Bring a database made by an older server up to this schema (idempotent)."""

        def tx(conn: sqlite3.Connection) -> None:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(batches)")}
            if "policy_versions" not in columns:
                # A new nullable column: SQLite only edits the schema, existing rows read NULL.
                conn.execute(_BATCHES_POLICY_VERSIONS)
            if "last_seen" not in {row[1] for row in conn.execute("PRAGMA table_info(producers)")}:
                conn.execute(_PRODUCERS_LAST_SEEN)

        self._write(tx)

    def _checkpoint_loop(self, interval: float = 0.5) -> None:
        conn = self._connect()
        try:
            while not self._checkpoint_stop.wait(interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # busy or closing: the next round tries again
                    logger.debug("WAL checkpoint skipped: %s", exc)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the writer is shared by the request threads (under _write_lock)
        # and close() may run on another thread than the one that opened a reader.
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection; idempotent. Later calls raise ``RuntimeError``."""
        self._checkpoint_stop.set()
        self._checkpointer.join(10)
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            self._writer.close()

    # -- transactions -------------------------------------------------------------------------

    def _write(self, fn, *args):
        with self._write_lock:
            if self._closed:
                raise RuntimeError("store is closed")
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) may leave the transaction open, or SQLite
                # may have rolled it back already: either way the shared writer must leave this
                # call outside any transaction, or every later BEGIN fails until a restart.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        logger.exception("rollback after a failed write failed")
                raise
            return result

    # -- users --------------------------------------------------------------------------------

    def set_user(self, name: str, password_hash: str) -> None:
        """Create the user, or replace its password hash."""

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash",
                (name, password_hash, time.time()),
            )

        self._write(tx)

    def password_hash(self, name: str) -> str | None:
        row = self._reader().execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    # -- agents -------------------------------------------------------------------------------

    def create_agent(
        self, *, owner: str, name: str, model: str, description: str | None, config: dict[str, Any], is_active: bool,
        max_per_owner: int | None = None,
    ) -> AgentRow:
        """Insert a new agent; raises :class:`AgentExists` when the owner already has the name and
        :class:`TooManyAgents` when it already has ``max_per_owner`` agents (checked in the same
        transaction, so that creates racing each other cannot pass the limit together)."""

        def tx(conn: sqlite3.Connection) -> AgentRow:
            if max_per_owner is not None:
                (count,) = conn.execute("SELECT COUNT(*) FROM agents WHERE owner = ?", (owner,)).fetchone()
                if count >= max_per_owner:
                    raise TooManyAgents(owner)
            try:
                cur = conn.execute(
                    "INSERT INTO agents (owner, name, model, description, config, is_active, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (owner, name, model, description, orjson.dumps(config), int(is_active), time.time()),
                )
            except sqlite3.IntegrityError:
                raise AgentExists(name) from None
            row = conn.execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = ?", (cur.lastrowid,)).fetchone()
            return _agent(row)

        return self._write(tx)

    def get_agent(self, owner: str, name: str) -> AgentRow | None:
        row = (
            self._reader()
            .execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE owner = ? AND name = ?", (owner, name))
            .fetchone()
        )
        return _agent(row) if row else None

    def agent_by_id(self, agent_id: int) -> AgentRow | None:
        row = self._reader().execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = ?", (agent_id,)).fetchone()
        return _agent(row) if row else None

    def list_agents(self, owner: str | None = None) -> list[AgentRow]:
        """The owner's agents by name, or every agent (in creation order) when ``owner`` is None."""
        if owner is None:
            rows = self._reader().execute(f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY id").fetchall()
        else:
            rows = (
                self._reader()
                .execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE owner = ? ORDER BY name", (owner,))
                .fetchall()
            )
        return [_agent(r) for r in rows]

    def delete_agent(self, agent_id: int) -> bool:
        """Delete the agent, its producers and its log in one transaction."""

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
            conn.execute("DELETE FROM producers WHERE agent_id = ?", (agent_id,))
            conn.execute("DELETE FROM batches WHERE agent_id = ?", (agent_id,))
            return cur.rowcount > 0

        return self._write(tx)

    # -- the transition log -------------------------------------------------------------------

    def acked_seq(self, agent_id: int, producer_id: str) -> int:
        row = (
            self._reader()
            .execute("SELECT acked_seq FROM producers WHERE agent_id = ? AND producer_id = ?", (agent_id, producer_id))
            .fetchone()
        )
        return row[0] if row else -1

    def producer_positions(self) -> list[tuple[int, str, int, float | None]]:
        """``(agent_id, producer_id, acked_seq, last_seen)`` of every producer of every agent (for /metrics)."""
        return self._reader().execute("SELECT agent_id, producer_id, acked_seq, last_seen FROM producers").fetchall()

    def producers(self, agent_id: int, limit: int) -> tuple[list[ProducerRow], int]:
        """The agent's ``limit`` most recently seen producers (latest first), and how many it has."""
        conn = self._reader()
        rows = conn.execute(
            "SELECT producer_id, acked_seq, last_seen FROM producers WHERE agent_id = ? "
            "ORDER BY last_seen IS NULL, last_seen DESC, producer_id LIMIT ?",
            (agent_id, limit),
        ).fetchall()
        (count,) = conn.execute("SELECT COUNT(*) FROM producers WHERE agent_id = ?", (agent_id,)).fetchone()
        return [ProducerRow(*r) for r in rows], count

    def steps_received(self, agent_id: int) -> int:
        row = self._reader().execute("SELECT steps_received FROM agents WHERE id = ?", (agent_id,)).fetchone()
        return row[0] if row else 0

    def append_batch(
        self, agent_id: int, producer_id: str, first_seq: int, steps: Sequence[dict[str, Any]]
    ) -> tuple[int, int, int]:
        """Apply a validated ``POST /steps`` batch; returns ``(acked_seq, applied, duplicates)``.

        Steps with a sequence number up to the producer's ``acked_seq`` are duplicates and are
        skipped; the rest are appended to the log. The log append, the ``acked_seq`` update and
        the agent's ``steps_received`` change in one transaction, committed (and, with
        ``synchronous=FULL``, on disk) before this returns: all or none. Raises
        :class:`SequenceGap` (nothing written) when ``first_seq > acked_seq + 1``.
        """

        def tx(conn: sqlite3.Connection) -> tuple[int, int, int]:
            row = conn.execute(
                "SELECT acked_seq FROM producers WHERE agent_id = ? AND producer_id = ?", (agent_id, producer_id)
            ).fetchone()
            acked = row[0] if row else -1
            if first_seq > acked + 1:
                raise SequenceGap(acked + 1)
            skip = acked + 1 - first_seq
            fresh = steps[skip:]
            if not fresh:
                return acked, 0, len(steps)
            new_acked = first_seq + len(steps) - 1
            self._append(conn, agent_id, producer_id, acked + 1, fresh)
            # last_seen rides on the row this write updates anyway: the dashboard's "last seen" costs no write.
            conn.execute(
                "INSERT INTO producers (agent_id, producer_id, acked_seq, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (agent_id, producer_id) DO UPDATE SET acked_seq = excluded.acked_seq, "
                "last_seen = excluded.last_seen",
                (agent_id, producer_id, new_acked, time.time()),
            )
            return new_acked, len(fresh), skip

        return self._write(tx)

    def append_step(self, agent_id: int, step: dict[str, Any]) -> int:
        """Append one legacy ``POST /step`` step (no producer, no sequence); returns its log position."""
        return self._write(lambda conn: self._append(conn, agent_id, None, None, [step]))

    @staticmethod
    def _append(
        conn: sqlite3.Connection,
        agent_id: int,
        producer_id: str | None,
        first_seq: int | None,
        steps: Sequence[dict[str, Any]],
    ) -> int:
        row = conn.execute("SELECT steps_received FROM agents WHERE id = ?", (agent_id,)).fetchone()
        if row is None:
            raise LookupError(f"agent {agent_id} does not exist")
        log_start = row[0]
        data, versions = encode_steps(steps)
        conn.execute(
            "INSERT INTO batches (agent_id, log_start, producer_id, first_seq, count, data, policy_versions) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (agent_id, log_start, producer_id, first_seq, len(steps), data, versions),
        )
        conn.execute("UPDATE agents SET steps_received = ? WHERE id = ?", (log_start + len(steps), agent_id))
        return log_start

    def read_log(self, agent_id: int, start: int, limit: int) -> list[tuple[str | None, int | None, Any]]:
        """Up to ``limit`` entries ``(producer_id, seq, step)`` of the agent's log from position ``start``.

        ``seq`` (and ``producer_id``) are ``None`` for steps that came through the legacy
        ``POST /step``. Runs in one read transaction, so it sees a consistent log.
        """
        return [(e.producer_id, e.seq, e.step) for e in self.read_entries(agent_id, start, limit)]

    def read_entries(self, agent_id: int, start: int, limit: int, *, arrays: bool = False) -> list[LogEntry]:
        """:meth:`read_log` with each step's ``policy_version`` (None when it carried none).

        A step that came in the binary encoding is stored as arrays; ``arrays=True`` hands them
        out as read-only numpy arrays of their own dtype and shape (for the learner and the log
        route), else as the flat lists of their values that a JSON step would hold.
        """
        if limit <= 0:
            return []
        end = start + limit
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            first = conn.execute(
                "SELECT MAX(log_start) FROM batches WHERE agent_id = ? AND log_start <= ?", (agent_id, start)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT log_start, producer_id, first_seq, count, data, policy_versions FROM batches "
                "WHERE agent_id = ? AND log_start >= ? AND log_start < ? ORDER BY log_start",
                (agent_id, first if first is not None else start, end),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return log_entries(rows, start, end, arrays=arrays)
