"""A real PostgreSQL for the server's tests: one per session, a fresh database per test that asks.

``pgserver`` (the ``test`` extra) ships PostgreSQL's binaries and starts one in a temporary
directory, listening on a Unix socket only; it is stopped when the session ends. Each test that
uses ``pg_url`` gets its own database, so tests never see each other's agents or keys.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """The session's PostgreSQL (a ``pgserver`` handle; ``.get_uri()`` is its ``postgres`` database)."""
    import pgserver

    # A short path: the socket's path must fit in sockaddr_un (about 100 bytes).
    srv = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield srv
    finally:
        srv.cleanup()


def _with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URI of a new, empty database on the session's PostgreSQL (dropped after the test)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield _with_database(admin, name)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        # FORCE: a server process a test killed may have left a session behind for a moment.
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
