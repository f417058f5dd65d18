"""A real PostgreSQL server for the test session, and the fixture that runs store tests on both engines.

The server (bench/pg_server.py: Debian's PostgreSQL 15, `initdb` and `pg_ctl` in a temporary directory,
on 127.0.0.1 and a free port, as `nobody` under root) is started on first use and stopped at the end of
the session. Each test gets a schema of its own in one database. Without the binaries (or psycopg) the
PostgreSQL side of a test is skipped, except under CI (`CI` set), where that is a failure.
"""

from __future__ import annotations

import os

import pytest

from pg_server import PostgresServer, find_binary


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server (started on first use, stopped at the end)."""
    if find_binary("initdb") is None or find_binary("pg_ctl") is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql-15")
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'tfgrpo[postgres]'")
    server = PostgresServer(fast=True)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path) -> str:
    """Where to make a library, on each engine: an SQLite path, or the URL of an empty PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "lib.db")
    return request.getfixturevalue("postgres_server").new_url()


def raw_query(target: str, sql: str, params: tuple = ()) -> list[tuple]:
    """One statement run straight through the engine's own driver (not through tfgrpo), `?` placeholders,
    committed; its rows (none for a statement that returns none)."""
    if target.startswith("postgresql://"):
        import psycopg

        base, _, schema = target.partition("?schema=")
        with psycopg.connect(base, autocommit=True) as conn:
            if schema:
                conn.execute(f'SET search_path TO "{schema}"')
            cursor = conn.execute(sql.replace("?", "%s"), params or None)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    import sqlite3

    db = sqlite3.connect(target)
    try:
        rows = db.execute(sql, params).fetchall()
        db.commit()
        return rows
    finally:
        db.close()
