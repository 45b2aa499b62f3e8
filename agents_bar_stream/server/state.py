"""What the routes share: one :class:`ServerState` per application, on ``app.state.server``.

It is built by :func:`open_state` when the application is created (the database, the signing
key, the learners, the login and upload guards) and closed by the application's lifespan. Routes
reach it through the ``State`` dependency (``api/deps.py``), never through module globals, so
that two applications in one process (tests) never share anything.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agents_bar_stream.server.learner import Learners
from agents_bar_stream.server.limits import LOGIN_HASH_WORKERS, MAX_UPLOADS_AT_ONCE
from agents_bar_stream.server.security import (
    LoginLimiter,
    TokenSigner,
    hash_password,
    load_or_create_secret,
    secure_data_dir,
)
from agents_bar_stream.server.store import SqliteStore, Store, parse_store_url

__all__ = ["HashingPool", "ServerState", "Settings", "open_state"]

T = TypeVar("T")


class HashingPool:
    """A small thread pool for password hashing, with a count of the calls waiting for it."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="agents-bar-login")
        self.waiting = 0  # changed on the event loop only

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        self.waiting += 1
        try:
            return await asyncio.wrap_future(self._pool.submit(fn, *args))
        finally:
            self.waiting -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Settings:
    """The limits given to :func:`~agents_bar_stream.server.app.create_app` (``serve`` options)."""

    max_batch_steps: int
    max_batch_bytes: int
    max_body_bytes: int
    # Whether /steps takes (and /stream/info advertises) Part 3's binary steps; off only to test
    # clients against a server from before them (serve --json-steps-only).
    binary_steps: bool = True

    def batch_limits(self) -> dict[str, int]:
        """The limits of ``POST /steps`` as ``/stream/info`` and every 413 of it name them."""
        return {"max_batch_steps": self.max_batch_steps, "max_batch_bytes": self.max_batch_bytes}


@dataclass(frozen=True)
class ServerState:
    """Everything the routes of one application share; see the module docstring."""

    store: Store
    signer: TokenSigner
    learners: Learners
    settings: Settings
    login_limiter: LoginLimiter
    hashing: HashingPool
    # A fixed hash to check against when the user does not exist, so that a login for an unknown
    # name takes as long as one with a wrong password.
    dummy_hash: str
    upload_slots: asyncio.Semaphore
    upload_dir: Path
    #: Learner placement across replicas (``replicas.Placement``); None with the SQLite store.
    placement: Any = None


def open_state(
    data_dir: Path | None,
    *,
    store_url: str | None = None,
    replica_id: str = "",
    users: Sequence[tuple[str, str]],
    token_ttl: float,
    settings: Settings,
    synchronous: str,
    learn: bool,
    save_interval: float,
) -> ServerState:
    """Open (or create) the store and everything that lives in it; see ``create_app``.

    ``store_url`` ``postgresql://...``: everything lives in that database, shared with other
    replicas (``data_dir`` is not used). Otherwise the SQLite store: ``sqlite:///path`` names its
    file, by default ``data_dir/agents-bar.sqlite3``; weights and the signing key are in ``data_dir``.
    """
    kind, where = parse_store_url(store_url) if store_url else ("sqlite", "")
    if kind == "postgresql":
        return _open_shared(where, replica_id=replica_id, users=users, token_ttl=token_ttl, settings=settings,
                            learn=learn, save_interval=save_interval)
    if data_dir is None:
        raise ValueError("the SQLite store needs a data directory")
    # The database holds password hashes and every agent's data: the owner's eyes only, whatever
    # the directory held before (SQLite gives the -wal and -shm files the database file's mode).
    secure_data_dir(data_dir)
    store = SqliteStore(Path(where) if where else data_dir / "agents-bar.sqlite3", synchronous=synchronous)
    _ensure_users(store, users)
    signer = TokenSigner(load_or_create_secret(data_dir), ttl=token_ttl)
    learners = Learners(store, data_dir, learn=learn, save_interval=save_interval, replica_id=replica_id)
    secure_data_dir(data_dir)  # the database, its WAL and the weights directory now exist
    upload_dir = data_dir / "uploads"
    upload_dir.mkdir(mode=0o700, exist_ok=True)
    for leftover in upload_dir.iterdir():  # bodies of uploads a crash interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    return _state(store, signer, learners, settings, upload_dir)


def _ensure_users(store: Store, users: Sequence[tuple[str, str]]) -> None:
    for name, password in users:
        if not name or ":" in name:
            raise ValueError(f"bad user name {name!r}")
        store.set_user(name, hash_password(password))


def _open_shared(
    url: str, *, replica_id: str, users: Sequence[tuple[str, str]], token_ttl: float, settings: Settings,
    learn: bool, save_interval: float,
) -> ServerState:
    """A replica on a PostgreSQL store: the signing key, weights and learner placement live in it."""
    # Imported here: psycopg is the `postgres` extra's, and the SQLite server must not need it.
    from agents_bar_stream.server.replicas import Placement
    from agents_bar_stream.server.store_pg import PostgresStore

    store = PostgresStore(url)
    try:
        _ensure_users(store, users)
        signer = TokenSigner(store.signing_key(), ttl=token_ttl)
        learners = Learners(store, None, learn=learn, save_interval=save_interval, replica_id=replica_id)
    except BaseException:
        store.close()
        raise
    # Snapshot bodies are spooled to this machine's disk only while they are checked.
    upload_dir = Path(tempfile.mkdtemp(prefix="agents-bar-uploads-"))
    return _state(store, signer, learners, settings, upload_dir, placement=Placement(store, learners))


def _state(store: Store, signer: TokenSigner, learners: Learners, settings: Settings, upload_dir: Path,
           placement: Any = None) -> ServerState:
    dummy_hash = hash_password("not a password")
    return ServerState(
        store=store,
        signer=signer,
        learners=learners,
        settings=settings,
        login_limiter=LoginLimiter(),
        hashing=HashingPool(LOGIN_HASH_WORKERS),
        dummy_hash=dummy_hash,
        upload_slots=asyncio.Semaphore(MAX_UPLOADS_AT_ONCE),
        upload_dir=upload_dir,
        placement=placement,
    )
