"""PostgreSQL behind the one SQL layer (`sql.py`): a pool of psycopg 3 connections to the database a
`postgresql://` URL names, and the library store on it.

The only module of the core that imports a driver beyond the standard library (`pip install
'tfgrpo[postgres]'`); it is imported only when a URL asks for PostgreSQL.

URL: anything libpq accepts (`postgresql://user:password@host:5432/dbname?sslmode=require`), plus
`schema=NAME`: the library's tables live in that schema (created if missing), so one database can
hold several libraries. Without it they go to the user's default schema (usually `public`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ...errors import ConfigError, StoreError
from .sql import POSTGRES, Cursor, Transaction
from .sqlstore import SQLStore

try:
    import psycopg
    from psycopg_pool import ConnectionPool
except ImportError:  # pragma: no cover - depends on the installed extras
    psycopg = None  # type: ignore[assignment]

_TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Creating tables is serialised database-wide (two `CREATE TABLE IF NOT EXISTS` of one name at once
# can both pass the check and one then fails), under this advisory lock key.
_DDL_LOCK = 0x7466_6772_706F  # "tfgrpo"


def _parts(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port that is not a number is found here)
    except ValueError as exc:  # (not quoting the URL: it may hold a password)
        raise ConfigError(f"not a usable postgresql:// URL ({exc})") from None
    return parts


def split_url(url: str) -> tuple[str, str | None, str]:
    """(conninfo for libpq, schema or None, what messages show: the URL without its password)."""
    parts = _parts(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if len(schemas) > 1:
        raise ConfigError(f"{_shown(parts)}: give schema= once")
    schema = schemas[0] if schemas else None
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(
            f"schema={schema!r:.80} is not a usable schema name: lowercase letters, digits and _, "
            "starting with a letter or _, at most 63 characters"
        )
    rest = urlencode([(key, value) for key, value in query if key != "schema"], quote_via=quote)  # (libpq: %20, not +)
    conninfo = urlunsplit(parts._replace(query=rest))
    return conninfo, schema, _shown(parts) + (f" (schema {schema})" if schema else "")


def shown_url(url: str) -> str:
    """The URL as messages, results and logs show it: without its password (or any query but the schema)."""
    parts = _parts(url)
    schemas = [value for key, value in parse_qsl(parts.query, keep_blank_values=True) if key == "schema"]
    return _shown(parts) + (f"?schema={quote(schemas[0])}" if len(schemas) == 1 else "")


def _shown(parts) -> str:
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, query=""))


def _require_driver() -> None:
    if psycopg is None:
        raise ConfigError("a postgresql:// library needs psycopg 3 and psycopg-pool: pip install 'tfgrpo[postgres]'")


class _PgTransaction:
    """A `Transaction` on one psycopg connection (statements written with `?` placeholders). Each
    statement has a cursor of its own: in pipeline mode several are in flight at once."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.cursor().execute(POSTGRES.sql(sql), params or None)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn.cursor().executemany(POSTGRES.sql(sql), rows)


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database (and schema). Thread-safe: each read or
    transaction borrows its own connection."""

    dialect = POSTGRES

    def __init__(self, url: str, *, max_connections: int = 4, connect_timeout_s: float = 10.0) -> None:
        _require_driver()
        conninfo, self.schema, self.where = split_url(url)
        self.url = url
        try:
            # One connection first: a wrong address or password fails here, at once and clearly,
            # instead of as a pool timeout.
            psycopg.connect(conninfo, autocommit=True, connect_timeout=int(connect_timeout_s)).close()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {_message(exc)}") from None
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True, "connect_timeout": int(connect_timeout_s)},
            configure=self._configure,
            timeout=30.0,
            open=True,
            name="tfgrpo",
        )

    def _configure(self, conn: Any) -> None:
        if self.schema is not None:
            conn.execute(f'SET search_path TO "{self.schema}"')

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._pool.connection() as conn:
                return conn.execute(POSTGRES.sql(sql), params or None).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot read: {_message(exc)}") from None

    @contextmanager
    def reading(self) -> Iterator[Transaction]:
        try:
            with self._pool.connection() as conn:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    yield _PgTransaction(conn)
                finally:
                    conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot read: {_message(exc)}") from None

    @contextmanager
    def writing(self) -> Iterator[Transaction]:
        try:
            # Pipeline mode: statements whose rows nobody fetches (the writes) travel together, so a
            # transaction costs a few round trips, not one per statement (its lock is held for less).
            with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                yield _PgTransaction(conn)
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: write failed, nothing was changed: {_message(exc)}") from None

    @contextmanager
    def creating(self) -> Iterator[Transaction]:
        """A write transaction that may create tables (serialised database-wide), in the URL's schema
        (made here when missing: merely connecting creates nothing)."""
        with self.writing() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_DDL_LOCK,)).fetchone()  # (waits here, not queued)
            if self.schema is not None:
                tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            yield tx

    def tables(self, tx: Transaction | None = None) -> set[str]:
        rows = tx.execute(_TABLES).fetchall() if tx is not None else self.query(_TABLES)
        return {name for (name,) in rows}

    def close(self) -> None:
        self._pool.close()


def _message(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresStore(SQLStore):
    """A library in a PostgreSQL database (or one schema of it: `?schema=NAME` in the URL), shared by
    any number of processes on any number of machines."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(PostgresDatabase(url))
