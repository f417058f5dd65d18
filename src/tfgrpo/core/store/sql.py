"""One SQL layer for everything tfgrpo keeps in a database: SQLite files (the embedded default) and
PostgreSQL (`postgresql://` URLs), behind one small connection interface.

Queries are written once, in the subset both engines speak (`?` placeholders, `INSERT ... ON CONFLICT`,
`{int}` / `{real}` / `{blob}` in table definitions); `Dialect` turns them into each engine's text.
`tfgrpo.core.store.connect_db(target)` opens a path (SQLite), None (SQLite in memory) or a URL
(PostgreSQL, whose module and driver are imported only then): the library store, the lessons, the LLM
cache and the proxy's records all open their tables through it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from ...errors import LibraryFormatError, StoreError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines, in one place."""

    name: str
    types: Mapping[str, str]
    placeholder: str
    for_update: str
    """Appended to the SELECT that reads the row a writer locks (SQLite: the whole file is locked already)."""

    def ddl(self, text: str) -> str:
        """Table definitions with `{int}`, `{real}` and `{blob}` in this engine's types."""
        return text.format(**self.types)

    def sql(self, text: str) -> str:
        """A statement written with `?` placeholders, in this engine's style."""
        return _placeholders(text, self.placeholder)


@lru_cache(maxsize=512)
def _placeholders(text: str, placeholder: str) -> str:
    return text if placeholder == "?" else text.replace("?", placeholder)


SQLITE = Dialect("sqlite", {"int": "INTEGER", "real": "REAL", "blob": "BLOB"}, "?", "")
POSTGRES = Dialect("postgresql", {"int": "BIGINT", "real": "DOUBLE PRECISION", "blob": "BYTEA"}, "%s", " FOR UPDATE")


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """`INSERT ... ON CONFLICT (key) DO UPDATE` of `columns` (both engines speak it)."""
    rest = [c for c in columns if c not in key]
    action = "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest) if rest else "DO NOTHING"
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table}({', '.join(columns)}) VALUES ({marks}) ON CONFLICT ({', '.join(key)}) {action}"


class Cursor(Protocol):
    """What a statement returns: rows to fetch."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Transaction(Protocol):
    """The statements of one transaction (`?` placeholders in every engine)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...


class Database(Protocol):
    """A connection (or a pool of them) to one database. Every method raises `StoreError` (or
    `LibraryFormatError` for a file that is not a usable database) and leaves nothing half-written."""

    dialect: Dialect
    where: str
    """What error messages name: the file or the URL without its password."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read."""

    def reading(self) -> Any:
        """A context of several reads that all see one snapshot (yields a `Transaction`)."""

    def writing(self) -> Any:
        """A context of one write transaction (yields a `Transaction`): committed at its end, rolled back
        if it raises. Writers that lock the same row (`dialect.for_update`) or, in SQLite, the same file
        run one at a time."""

    def creating(self) -> Any:
        """A write transaction that may create tables: like `writing()`, and in PostgreSQL also one at a
        time across the database (two `CREATE TABLE IF NOT EXISTS` of one table at once can collide)."""

    def tables(self, tx: Transaction | None = None) -> set[str]:
        """The names of the tables there (in PostgreSQL: of the schema in use), seen by `tx` if given."""

    def close(self) -> None: ...


class SQLiteDatabase:
    """One SQLite connection: autocommit outside `writing()`, usable from several threads (callers keep
    their own transactions apart), WAL with synchronous=NORMAL on disk, waits `busy_timeout_s` for a lock."""

    dialect = SQLITE

    def __init__(self, path: Path | None, *, busy_timeout_s: float = 10.0, check: Callable | None = None) -> None:
        self.path = path
        self.where = str(path) if path is not None else ":memory:"
        try:
            self.connection = sqlite3.connect(
                ":memory:" if path is None else path, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.where}: {exc}") from None
        try:
            self.connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            if check is not None:
                check(self)  # e.g. refuse a foreign database before WAL mode would convert it
            if path is not None:
                self.connection.execute("PRAGMA journal_mode=WAL")
                self.connection.execute("PRAGMA synchronous=NORMAL")
        except BaseException as exc:
            self.connection.close()
            if isinstance(exc, (sqlite3.Error, UnicodeDecodeError)):
                raise _sqlite_error(exc, f"cannot open {self.where}") from None
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.connection.execute(sql, params).fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # (a damaged schema's text is not UTF-8)
            raise _sqlite_error(exc, f"{self.where}: cannot read") from None

    @contextmanager
    def reading(self) -> Iterator[Transaction]:
        db = self.connection
        try:
            db.execute("BEGIN")
            try:
                yield db  # (sqlite3.Connection is a Transaction)
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # (a damaged schema's text is not UTF-8)
            raise _sqlite_error(exc, f"{self.where}: cannot read") from None

    @contextmanager
    def writing(self) -> Iterator[Transaction]:
        with transaction(self.connection, self.where):
            yield self.connection

    creating = writing  # (one writer at a time already)

    def tables(self, tx: Transaction | None = None) -> set[str]:
        query = "SELECT name FROM sqlite_master WHERE type='table'"
        rows = tx.execute(query).fetchall() if tx is not None else self.query(query)
        if not all(isinstance(name, str) for (name,) in rows):
            raise LibraryFormatError(f"{self.where}: stored library is damaged: its table names are not text")
        return {name for (name,) in rows}

    def close(self) -> None:
        self.connection.close()


def _sqlite_error(exc: sqlite3.Error | UnicodeDecodeError, what: str) -> Exception:
    """A file that is not a database (or a damaged one) is a format error; anything else (locked, disk
    full, read-only) a store error."""
    # "file is not a database", "database disk image is malformed", "Could not decode to UTF-8 column ..."
    if type(exc) in (sqlite3.DatabaseError, UnicodeDecodeError) or "decode" in str(exc):
        return LibraryFormatError(f"{what}: not a usable SQLite library: {exc}")
    return StoreError(f"{what}: {exc}")


def connect(path: Path | None) -> sqlite3.Connection:
    """A bare SQLite connection for a side table kept in a library file (`None`: in memory): autocommit,
    usable from several threads, waits up to 10 s for a lock, WAL with synchronous=NORMAL on disk."""
    db = sqlite3.connect(":memory:" if path is None else path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        if path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:
        db.close()  # e.g. not a database: nothing is left open
        raise
    return db


@contextmanager
def transaction(db: sqlite3.Connection, where: str) -> Iterator[None]:
    """One SQLite write transaction (BEGIN IMMEDIATE ... COMMIT); on any error it is rolled back, and
    SQLite errors become `StoreError` saying that nothing was changed."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"{where}: cannot start a transaction: {exc}") from None
    try:
        yield
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"{where}: write failed, nothing was changed: {exc}") from None
        raise


def upgrade(
    tx: Transaction,
    what: str,
    found: int,
    current: int,
    steps: Mapping[int, Callable[[Transaction], None]],
) -> None:
    """Bring stored tables from schema `found` to `current`, in the caller's write transaction:
    `steps[v]` turns version v into v + 1. A schema above `current` was written by a newer tfgrpo and
    is refused (nothing is changed)."""
    check_version(what, found, current)
    for version in range(found, current):
        steps[version](tx)


def check_version(what: str, found: int, current: int) -> None:
    """Refuse tables of a schema newer than this tfgrpo's (`LibraryFormatError`, which says so)."""
    if found > current:
        raise LibraryFormatError(
            f"{what} was written by a newer tfgrpo (schema {found}; this tfgrpo reads up to {current}): "
            "upgrade tfgrpo to open it"
        )


def read_pages(
    db: Database, table: str, columns: Sequence[str], key: Sequence[str], page: int = 2000
) -> Iterator[tuple]:
    """Every row of `table` (its `columns`, which hold `key`: one or two columns), in key order, read a page
    at a time, so that a table of millions of rows is never all in memory."""
    at = [list(columns).index(k) for k in key]
    after: list[Any] | None = None
    while True:
        where, params = "", []
        if after is not None:
            if len(key) == 1:
                where, params = f" WHERE {key[0]} > ?", after
            else:
                where = f" WHERE {key[0]} > ? OR ({key[0]} = ? AND {key[1]} > ?)"
                params = [after[0], after[0], after[1]]
        query = f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY {', '.join(key)} LIMIT {page}"
        rows = db.query(query, params)
        yield from (tuple(row) for row in rows)
        if len(rows) < page:
            return
        after = [rows[-1][i] for i in at]
