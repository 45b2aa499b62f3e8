"""A real PostgreSQL for the server's tests: one per session, a fresh database per test that asks.

``pgserver`` (the ``test`` extra) ships PostgreSQL's binaries and starts one in a temporary
directory, listening on a Unix socket only; it is stopped when the session ends. Each test that
uses ``pg_url`` gets its own database, so tests never see each other's agents or keys.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL (a ``pgserver`` handle; ``.get_uri()`` is its ``postgres`` database)."""
    import pgserver

    # Not under pytest's basetemp: pytest prunes old numbered basetemps, and another pytest
    # session of the same user starting meanwhile could delete the running server's files. A
    # short path too: the socket's path must fit in sockaddr_un (about 100 bytes).
    root = tempfile.mkdtemp(prefix="abs-pg-")
    srv = pgserver.get_server(root, cleanup_mode="stop")
    try:
        yield srv
    finally:
        srv.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class _Databases:
    """Makes and drops databases on the session's PostgreSQL."""

    def __init__(self, admin_uri: str) -> None:
        self.admin = admin_uri

    def _run(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def create(self) -> tuple[str, str]:
        """``(name, uri)`` of a new, empty database."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._run(f"CREATE DATABASE {name}")
        return name, _with_database(self.admin, name)

    def drop(self, name: str) -> None:
        # FORCE: a server process a test killed may have left a session behind for a moment.
        self._run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_databases(pg_server) -> _Databases:
    return _Databases(pg_server.get_uri())


@pytest.fixture
def pg_url(pg_databases) -> str:
    """The URI of a new, empty database on the session's PostgreSQL (dropped after the test)."""
    name, uri = pg_databases.create()
    yield uri
    pg_databases.drop(name)
