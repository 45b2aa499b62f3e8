"""The server's durable state in PostgreSQL, shared by any number of server processes (replicas).

:class:`PostgresStore` implements :class:`~agents_bar_stream.server.store.Store` with the same
tables as the SQLite store (a batch of steps is the same two columns, made by
``store.encode_steps`` and read by ``store.decode_steps``), plus what a replica would otherwise
keep in its data directory:

    secrets      (name, value)                        the tokens' signing key, made once
    learners     (agent_id, replica, epoch, steps_learned, updated_at)   who learns an agent
    checkpoints  (agent_id, version, cursor, payload, saved_at)          its weights and cursor

The schema is a short list of numbered scripts (:data:`MIGRATIONS`); at start a replica takes a
transaction-scoped advisory lock, reads ``schema_version`` and applies the scripts it has not
seen, all in one transaction (PostgreSQL's DDL is transactional): replicas starting together wait
for one another, and a failed migration leaves the database as it was.

Exactly once across replicas: ``append_batch`` inserts the producer's row if new and takes it
``FOR UPDATE`` before reading ``acked_seq``, so two replicas given the same producer's batch at
the same time (a retry routed elsewhere) run one after the other: the second sees the first's
``acked_seq`` and counts the steps as duplicates. The agent's row is then updated (its
``steps_received`` gives the batch its log position), which orders the appends of different
producers of one agent. Both rows and the batch commit together.

Learners are placed with session advisory locks held by :class:`ReplicaSession` (one connection
per replica, see ``replicas.py``); a learner's saves are fenced by ``learners.epoch``, which each
new holder increments, so a replica that lost its lock (its connection dropped) can never
overwrite the weights of the one that took over. A save notifies ``agents_bar_weights`` with
``"<agent_id> <version>"`` in the same transaction, so other replicas reload those weights for act.

Every database failure (unreachable, disk full, a timeout of the pool) is raised as
:class:`~agents_bar_stream.server.store.StoreUnavailable`: the route answers 503 and the client
retries; nothing was applied.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
import psycopg_pool

from agents_bar_stream.server.store import (
    AgentExists,
    AgentRow,
    LogEntry,
    ProducerRow,
    SequenceGap,
    StoreUnavailable,
    TooManyAgents,
    encode_steps,
    log_entries,
)

__all__ = ["MIGRATIONS", "WEIGHTS_CHANNEL", "Checkpoint", "PostgresStore", "ReplicaSession", "is_postgres_url"]

logger = logging.getLogger(__name__)

#: The ``application_name`` of every replica's placement session: counting them counts live replicas.
REPLICA_APPLICATION_NAME = "agents-bar-replica"
#: The LISTEN/NOTIFY channel on which a learner announces newly saved weights.
WEIGHTS_CHANNEL = "agents_bar_weights"
# Advisory lock keys. The schema lock is one bigint; per-object locks use the two-int4 form, whose
# first half names the kind so that they never collide with each other (nor with the schema's).
_SCHEMA_LOCK = 0x4142_5354_0000_0001  # "ABST", 1
_LEARNER_LOCK_CLASS = 0x4142_0001
_OWNER_LOCK_CLASS = 0x4142_0002
#: Seconds a request waits for a pooled connection before it is answered 503.
POOL_TIMEOUT = 10.0
_SIGNING_KEY = "token-signing-key"

#: The schema, as numbered scripts applied in order, once each (``schema_version`` records them).
#: Never edit a released script: add the next one.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        "CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE agents (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner TEXT NOT NULL,"
        " name TEXT NOT NULL, model TEXT NOT NULL, description TEXT, config BYTEA NOT NULL,"
        " is_active BOOLEAN NOT NULL, steps_received BIGINT NOT NULL DEFAULT 0,"
        " created_at DOUBLE PRECISION NOT NULL, UNIQUE (owner, name))",
        "CREATE TABLE producers (agent_id BIGINT NOT NULL, producer_id TEXT NOT NULL, acked_seq BIGINT NOT NULL,"
        " last_seen DOUBLE PRECISION, PRIMARY KEY (agent_id, producer_id))",
        "CREATE TABLE batches (agent_id BIGINT NOT NULL, log_start BIGINT NOT NULL, producer_id TEXT,"
        " first_seq BIGINT, count INTEGER NOT NULL, data BYTEA NOT NULL, policy_versions BYTEA,"
        " PRIMARY KEY (agent_id, log_start))",
        # Batches are written once and read a few times: compressing them (pglz, TOAST's default
        # for values over 2 kB) cost PostgreSQL about half its CPU per step in bench_scale.py.
        "ALTER TABLE batches ALTER COLUMN data SET STORAGE EXTERNAL",
        "CREATE TABLE secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
        "CREATE TABLE learners (agent_id BIGINT PRIMARY KEY, replica TEXT, epoch BIGINT NOT NULL,"
        " steps_learned BIGINT NOT NULL DEFAULT 0, updated_at DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE checkpoints (agent_id BIGINT PRIMARY KEY, version BIGINT NOT NULL, cursor BIGINT NOT NULL,"
        " payload BYTEA NOT NULL, saved_at DOUBLE PRECISION NOT NULL)",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_AGENT_COLUMNS = "id, owner, name, model, description, config, is_active, steps_received, created_at"


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return url.startswith(("postgresql://", "postgres://"))


def _agent(row: Sequence[Any]) -> AgentRow:
    return AgentRow(
        id=row[0], owner=row[1], name=row[2], model=row[3], description=row[4], config=orjson.loads(row[5]),
        is_active=bool(row[6]), steps_received=row[7], created_at=row[8],
    )


def migrate(conn: psycopg.Connection) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` in one transaction; returns the version found before."""
    with conn.transaction():
        # Held to the end of this transaction: a replica that starts meanwhile waits here, then
        # finds the schema made and applies nothing.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                     " applied_at DOUBLE PRECISION NOT NULL)")
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise StoreUnavailable(f"the database's schema is version {found}, newer than this server's "
                               f"{SCHEMA_VERSION}: upgrade the server")
        for version, statements in MIGRATIONS:
            if version <= found:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)", (version, time.time()))
            logger.info("database schema migrated to version %d", version)
    return found


class Checkpoint:
    """An agent's saved weights: ``payload`` (a ``torch.save`` archive) at log position ``cursor``."""

    __slots__ = ("cursor", "payload", "version")

    def __init__(self, version: int, cursor: int, payload: bytes) -> None:
        self.version = version
        self.cursor = cursor
        self.payload = payload


class PostgresStore:
    """All durable server state in one PostgreSQL database; thread-safe, shared by replicas.

    ``conninfo`` is a libpq URI or key/value string as psycopg takes it (a Unix socket directory
    as ``?host=/path``). ``pool_size`` is the most connections this process opens for requests and
    learners (one more is :class:`ReplicaSession`'s). Raises :class:`StoreUnavailable` when the
    database cannot be reached within ``connect_timeout`` seconds.
    """

    #: Other server processes share this database: weights, key and learner placement live here.
    shared = True

    def __init__(self, conninfo: str, *, pool_size: int = 16, connect_timeout: float = 30.0) -> None:
        self.conninfo = conninfo
        try:
            with psycopg.connect(conninfo, connect_timeout=max(int(connect_timeout), 1)) as conn:
                migrate(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot open the PostgreSQL store: {exc}") from exc
        self._pool = psycopg_pool.ConnectionPool(
            conninfo, min_size=2, max_size=pool_size, timeout=POOL_TIMEOUT, open=False,
            name="agents-bar-store", kwargs={"connect_timeout": max(int(connect_timeout), 1)},
        )
        self._pool.open(wait=True, timeout=connect_timeout)
        self._closed = False

    def close(self) -> None:
        """Close the pool; idempotent. Later calls raise ``RuntimeError``."""
        if not self._closed:
            self._closed = True
            self._pool.close(timeout=10)

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction: committed when the block ends, rolled back on error."""
        if self._closed:
            raise RuntimeError("store is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise StoreUnavailable(f"no database connection within {POOL_TIMEOUT:.0f} s") from exc
        except psycopg.Error as exc:
            # Unreachable, restarting, out of disk, a deadlock: nothing of this call was committed.
            raise StoreUnavailable(str(exc).strip() or type(exc).__name__) from exc

    def _one(self, query: str, params: Sequence[Any] = ()) -> Any:
        with self._tx() as conn:
            return conn.execute(query, params).fetchone()

    # -- users --------------------------------------------------------------------------------

    def set_user(self, name: str, password_hash: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO users (name, password_hash, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET password_hash = EXCLUDED.password_hash",
                (name, password_hash, time.time()),
            )

    def password_hash(self, name: str) -> str | None:
        row = self._one("SELECT password_hash FROM users WHERE name = %s", (name,))
        return row[0] if row else None

    # -- agents -------------------------------------------------------------------------------

    def create_agent(
        self, *, owner: str, name: str, model: str, description: str | None, config: dict[str, Any], is_active: bool,
        max_per_owner: int | None = None,
    ) -> AgentRow:
        with self._tx() as conn:
            if max_per_owner is not None:
                # Two creates of one owner on two replicas would both count below the limit: the
                # owner's lock (to the end of this transaction) makes them count one at a time.
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_OWNER_LOCK_CLASS, owner))
                (count,) = conn.execute("SELECT COUNT(*) FROM agents WHERE owner = %s", (owner,)).fetchone()
                if count >= max_per_owner:
                    raise TooManyAgents(owner)
            try:
                with conn.transaction():  # a savepoint: the unique violation leaves the rest usable
                    row = conn.execute(
                        f"INSERT INTO agents (owner, name, model, description, config, is_active, created_at) "
                        f"VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_AGENT_COLUMNS}",
                        (owner, name, model, description, orjson.dumps(config), is_active, time.time()),
                    ).fetchone()
            except psycopg.errors.UniqueViolation:
                raise AgentExists(name) from None
            return _agent(row)

    def get_agent(self, owner: str, name: str) -> AgentRow | None:
        row = self._one(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE owner = %s AND name = %s", (owner, name))
        return _agent(row) if row else None

    def agent_by_id(self, agent_id: int) -> AgentRow | None:
        row = self._one(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = %s", (agent_id,))
        return _agent(row) if row else None

    def list_agents(self, owner: str | None = None) -> list[AgentRow]:
        with self._tx() as conn:
            if owner is None:
                rows = conn.execute(f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY id").fetchall()
            else:
                rows = conn.execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE owner = %s ORDER BY name",
                                    (owner,)).fetchall()
        return [_agent(r) for r in rows]

    def delete_agent(self, agent_id: int) -> bool:
        with self._tx() as conn:
            deleted = conn.execute("DELETE FROM agents WHERE id = %s", (agent_id,)).rowcount > 0
            for table in ("producers", "batches", "learners", "checkpoints"):
                conn.execute(f"DELETE FROM {table} WHERE agent_id = %s", (agent_id,))
            return deleted

    # -- the transition log -------------------------------------------------------------------

    def acked_seq(self, agent_id: int, producer_id: str) -> int:
        row = self._one("SELECT acked_seq FROM producers WHERE agent_id = %s AND producer_id = %s",
                        (agent_id, producer_id))
        return int(row[0]) if row else -1

    def producers(self, agent_id: int, limit: int) -> tuple[list[ProducerRow], int]:
        """The agent's ``limit`` most recently seen producers (latest first), and how many it has."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT producer_id, acked_seq, last_seen FROM producers WHERE agent_id = %s "
                "ORDER BY last_seen IS NULL, last_seen DESC, producer_id LIMIT %s",
                (agent_id, limit),
            ).fetchall()
            (count,) = conn.execute("SELECT COUNT(*) FROM producers WHERE agent_id = %s", (agent_id,)).fetchone()
        return [ProducerRow(r[0], int(r[1]), r[2]) for r in rows], int(count)

    def steps_received(self, agent_id: int) -> int:
        row = self._one("SELECT steps_received FROM agents WHERE id = %s", (agent_id,))
        return int(row[0]) if row else 0

    def append_batch(
        self, agent_id: int, producer_id: str, first_seq: int, steps: Sequence[dict[str, Any]]
    ) -> tuple[int, int, int]:
        """Apply a validated ``POST /steps`` batch: the SQLite store's contract, across replicas.

        The producer's row is taken ``FOR UPDATE`` (inserted first if new) before ``acked_seq`` is
        read: a second replica given the same batch waits for this transaction and then counts
        its steps as duplicates.
        """
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO producers (agent_id, producer_id, acked_seq) VALUES (%s, %s, -1) "
                "ON CONFLICT (agent_id, producer_id) DO NOTHING",
                (agent_id, producer_id),
            )
            (acked,) = conn.execute(
                "SELECT acked_seq FROM producers WHERE agent_id = %s AND producer_id = %s FOR UPDATE",
                (agent_id, producer_id),
            ).fetchone()
            if first_seq > acked + 1:
                raise SequenceGap(acked + 1)  # rolled back: not even the new producer row stays
            skip = acked + 1 - first_seq
            fresh = steps[skip:]
            if not fresh:
                return acked, 0, len(steps)
            new_acked = first_seq + len(steps) - 1
            self._append(conn, agent_id, producer_id, acked + 1, fresh)
            conn.execute("UPDATE producers SET acked_seq = %s, last_seen = %s WHERE agent_id = %s AND producer_id = %s",
                         (new_acked, time.time(), agent_id, producer_id))
            return new_acked, len(fresh), skip

    def append_step(self, agent_id: int, step: dict[str, Any]) -> int:
        with self._tx() as conn:
            return self._append(conn, agent_id, None, None, [step])

    @staticmethod
    def _append(
        conn: psycopg.Connection, agent_id: int, producer_id: str | None, first_seq: int | None,
        steps: Sequence[dict[str, Any]],
    ) -> int:
        # The update locks the agent's row to the end of the transaction: appends of the agent's
        # other producers (on any replica) wait, so log positions never overlap nor leave holes.
        row = conn.execute(
            "UPDATE agents SET steps_received = steps_received + %s WHERE id = %s RETURNING steps_received",
            (len(steps), agent_id),
        ).fetchone()
        if row is None:
            raise LookupError(f"agent {agent_id} does not exist")
        log_start = int(row[0]) - len(steps)
        data, versions = encode_steps(steps)
        conn.execute(
            "INSERT INTO batches (agent_id, log_start, producer_id, first_seq, count, data, policy_versions) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (agent_id, log_start, producer_id, first_seq, len(steps), data, versions),
        )
        return log_start

    def read_log(self, agent_id: int, start: int, limit: int) -> list[tuple[str | None, int | None, Any]]:
        return [(e.producer_id, e.seq, e.step) for e in self.read_entries(agent_id, start, limit)]

    def read_entries(self, agent_id: int, start: int, limit: int, *, arrays: bool = False) -> list[LogEntry]:
        if limit <= 0:
            return []
        end = start + limit
        with self._tx() as conn:
            # One statement, so one snapshot: the batch holding ``start`` and those after it.
            rows = conn.execute(
                "SELECT log_start, producer_id, first_seq, count, data, policy_versions FROM batches "
                "WHERE agent_id = %(a)s AND log_start < %(e)s AND log_start >= COALESCE("
                "(SELECT MAX(log_start) FROM batches WHERE agent_id = %(a)s AND log_start <= %(s)s), %(s)s) "
                "ORDER BY log_start",
                {"a": agent_id, "s": start, "e": end},
            ).fetchall()
        return log_entries(rows, start, end, arrays=arrays)

    # -- what a replica would otherwise keep on its disk -------------------------------------

    def signing_key(self) -> bytes:
        """The tokens' signing key, made (32 random bytes) by the first replica that asks."""
        with self._tx() as conn:
            # ON CONFLICT DO NOTHING: replicas starting together each offer a key; one is kept.
            conn.execute("INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                         (_SIGNING_KEY, secrets.token_bytes(32)))
            (key,) = conn.execute("SELECT value FROM secrets WHERE name = %s", (_SIGNING_KEY,)).fetchone()
        key = bytes(key)
        if len(key) < 32:
            raise RuntimeError("the signing key in the database is damaged (shorter than 32 bytes)")
        return key

    def claim_learner(self, agent_id: int, replica: str) -> int | None:
        """Record ``replica`` as the agent's learner; its new epoch (None: the agent is gone).

        Call only while holding the agent's learner lock (:meth:`ReplicaSession.try_lead`).
        """
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM agents WHERE id = %s FOR SHARE", (agent_id,)).fetchone() is None:
                return None
            (epoch,) = conn.execute(
                "INSERT INTO learners (agent_id, replica, epoch, updated_at) VALUES (%s, %s, 1, %s) "
                "ON CONFLICT (agent_id) DO UPDATE SET replica = EXCLUDED.replica, epoch = learners.epoch + 1,"
                " updated_at = EXCLUDED.updated_at RETURNING epoch",
                (agent_id, replica, time.time()),
            ).fetchone()
            return int(epoch)

    def report_progress(self, agent_id: int, epoch: int, steps_learned: int) -> bool:
        """Record how far the learner of ``epoch`` has learned; False when another epoch took over."""
        with self._tx() as conn:
            cur = conn.execute("UPDATE learners SET steps_learned = %s, updated_at = %s "
                               "WHERE agent_id = %s AND epoch = %s", (steps_learned, time.time(), agent_id, epoch))
            return cur.rowcount == 1

    def release_learner(self, agent_id: int, epoch: int) -> None:
        """Say that nobody learns the agent now (a replica stopping); a later holder's row is left alone."""
        with self._tx() as conn:
            conn.execute("UPDATE learners SET replica = NULL WHERE agent_id = %s AND epoch = %s", (agent_id, epoch))

    def learner_info(self, agent_id: int) -> tuple[str | None, int]:
        """``(replica, steps_learned)`` of the agent's learner as last recorded (``(None, 0)``: never learned)."""
        row = self._one("SELECT replica, steps_learned FROM learners WHERE agent_id = %s", (agent_id,))
        return (row[0], int(row[1])) if row else (None, 0)

    def load_checkpoint(self, agent_id: int) -> Checkpoint | None:
        row = self._one("SELECT version, cursor, payload FROM checkpoints WHERE agent_id = %s", (agent_id,))
        return Checkpoint(int(row[0]), int(row[1]), bytes(row[2])) if row else None

    def checkpoint_versions(self) -> dict[int, int]:
        """The version of every agent's saved weights."""
        with self._tx() as conn:
            return {int(a): int(v) for a, v in conn.execute("SELECT agent_id, version FROM checkpoints")}

    def save_checkpoint(self, agent_id: int, epoch: int | None, cursor: int, payload: bytes) -> int | None:
        """Save weights at ``cursor``; their new version, or None when ``epoch`` is no longer the learner's.

        ``epoch=None`` saves whoever learns (an uploaded snapshot). Other replicas are notified
        (``WEIGHTS_CHANNEL``) when this commits.
        """
        with self._tx() as conn:
            if epoch is not None:
                row = conn.execute("SELECT epoch FROM learners WHERE agent_id = %s FOR UPDATE", (agent_id,)).fetchone()
                if row is None or int(row[0]) != epoch:
                    return None  # fenced: another replica took the agent over
            (version,) = conn.execute(
                "INSERT INTO checkpoints (agent_id, version, cursor, payload, saved_at) VALUES (%s, 1, %s, %s, %s) "
                "ON CONFLICT (agent_id) DO UPDATE SET version = checkpoints.version + 1, cursor = EXCLUDED.cursor,"
                " payload = EXCLUDED.payload, saved_at = EXCLUDED.saved_at RETURNING version",
                (agent_id, cursor, payload, time.time()),
            ).fetchone()
            if epoch is not None:
                conn.execute("UPDATE learners SET steps_learned = GREATEST(steps_learned, %s) WHERE agent_id = %s",
                             (cursor, agent_id))
            conn.execute("SELECT pg_notify(%s, %s)", (WEIGHTS_CHANNEL, f"{agent_id} {version}"))
            return int(version)

    def session(self, *, learning: bool = True) -> ReplicaSession:
        """A dedicated connection for learner locks and weight notifications (see :class:`ReplicaSession`)."""
        return ReplicaSession(self.conninfo, learning=learning)


class ReplicaSession:
    """One replica's own connection: its learner locks live and die with it, and it LISTENs.

    Session advisory locks are released by PostgreSQL when the connection ends, so a replica that
    is killed (or cut off) gives up its agents without doing anything: another replica's
    :meth:`try_lead` then succeeds. Not thread-safe: one thread (``replicas.Placement``) uses it.
    """

    def __init__(self, conninfo: str, *, learning: bool = True, connect_timeout: float = 10.0) -> None:
        # Only replicas that learn are counted for the fair share (``--no-learn`` ones act only).
        name = REPLICA_APPLICATION_NAME if learning else REPLICA_APPLICATION_NAME + "-acting"
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=max(int(connect_timeout), 1),
                                         application_name=name)
            self._conn.execute(f"LISTEN {WEIGHTS_CHANNEL}")
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot open the replica's session: {exc}") from exc

    def try_lead(self, agent_id: int) -> bool:
        """Take the agent's learner lock if no replica holds it; held until :meth:`resign` or the end."""
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LEARNER_LOCK_CLASS, agent_id)).fetchone()
        return bool(row and row[0])

    def resign(self, agent_id: int) -> None:
        self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LEARNER_LOCK_CLASS, agent_id))

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        """``(agent_id, version)`` of weights saved since the last call, waiting up to ``timeout`` for one.

        The fast path only: psycopg before 3.3 may drop a notification that arrives while this
        connection runs another statement, so ``replicas.Placement`` also compares versions
        (:meth:`PostgresStore.checkpoint_versions`) at every round.
        """
        out = []
        for notify in self._conn.notifies(timeout=timeout, stop_after=1):
            agent, _, version = notify.payload.partition(" ")
            if agent.isdigit() and version.isdigit():
                out.append((int(agent), int(version)))
        return out

    def ping(self) -> None:
        """Raise psycopg.Error when the connection (and so every lock of this session) is gone."""
        self._conn.execute("SELECT 1")

    def live_replicas(self) -> int:
        """How many learning replicas (their placement sessions) are connected to this database (at least 1)."""
        row = self._conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            (REPLICA_APPLICATION_NAME,),
        ).fetchone()
        return max(int(row[0]) if row else 1, 1)

    @property
    def broken(self) -> bool:
        return self._conn.closed or self._conn.broken

    def close(self) -> None:
        self._conn.close()
