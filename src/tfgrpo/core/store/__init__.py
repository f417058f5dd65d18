"""Persistence behind a library: where experiences, config and counters are written through, and
where several processes sharing one library meet."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import LibraryNotFoundError, StoreError
from ..files import is_sqlite_path
from .base import Changes, LibraryState, Store, StoreTransaction
from .sql import Database, SQLiteDatabase, is_postgres_url
from .sqlite import SQLiteStore, read_snapshot
from .sqlstore import SQLStore, library_status, read_state

__all__ = [
    "Changes",
    "connect_db",
    "LibraryState",
    "Store",
    "StoreTransaction",
    "SQLiteStore",
    "is_postgres_url",
    "is_store_target",
    "library_label",
    "open_store",
    "read_library",
    "shown_target",
    "sql_store",
    "store_exists",
]


def shown_target(target: str | os.PathLike) -> str:
    """A library's path or URL as messages, result files and trackers show it: a PostgreSQL URL without its
    password (`postgresql://user:secret@host/db` is shown as `postgresql://user@host/db`)."""
    if is_postgres_url(target):
        from .postgres import shown_url

        return shown_url(str(target))
    return str(target)


def library_label(target: str | os.PathLike) -> str:
    """What names a library in the files made beside it (metrics logs): the path itself, or for a
    PostgreSQL URL its database (and schema), in the current folder."""
    if not is_postgres_url(target):
        return str(target)
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(str(target))
    schema = parse_qs(parts.query).get("schema", [""])[0]
    return "-".join(x for x in ("postgresql", parts.path.strip("/") or parts.hostname or "", schema) if x)


def connect_db(target: str | os.PathLike | None) -> Database:
    """The database at `target`: a `postgresql://` URL, a path (SQLite, created if missing) or None
    (SQLite in memory)."""
    if is_postgres_url(target):
        from .postgres import PostgresDatabase

        return PostgresDatabase(str(target))
    return SQLiteDatabase(None if target is None else Path(target))


def sql_store(target: str | os.PathLike) -> SQLStore:
    """The store at a `postgresql://` URL, or in the SQLite file at any other path."""
    if is_postgres_url(target):
        from .postgres import PostgresStore

        return PostgresStore(str(target))
    return SQLiteStore(target)


def is_store_target(target: str | os.PathLike) -> bool:
    """Whether a library at `target` is written through to a store: an SQLite path (.db, .sqlite,
    .sqlite3) or a `postgresql://` URL (a .json file is read and written whole instead)."""
    return is_postgres_url(target) or is_sqlite_path(target)


def read_library(target: str | os.PathLike) -> LibraryState:
    """What the library at an SQLite path or a `postgresql://` URL holds, read and checked without
    changing anything there (no upgrade, nothing created; empty when there is no library yet)."""
    if not is_postgres_url(target):
        if not os.path.exists(target):
            raise LibraryNotFoundError(f"no library file at {target}")
        return read_snapshot(target)
    db = connect_db(str(target))
    try:
        if library_status(db, db.tables()) is None:
            return LibraryState()
        with db.reading() as tx:
            return read_state(tx, db.where)
    finally:
        db.close()


def store_exists(target: str | os.PathLike) -> bool:
    """Whether there is anything at `target`: a file, or a PostgreSQL database (schema) holding tables
    (nothing is created to find out)."""
    if not is_postgres_url(target):
        return os.path.exists(target)
    db = connect_db(str(target))
    try:
        return bool(db.tables())
    finally:
        db.close()


def open_store(store: Store | str | os.PathLike) -> Store:
    """A store object as given, or one opened from a path (`.db`, `.sqlite`, `.sqlite3`: SQLite) or a
    `postgresql://` URL (PostgreSQL; needs `pip install 'tfgrpo[postgres]'`)."""
    if not isinstance(store, (str, os.PathLike)):
        return store
    if is_store_target(store):
        return sql_store(store)
    raise StoreError(
        f"cannot tell which store to open for {str(store)!r}: use a path ending in .db, .sqlite or "
        ".sqlite3 for SQLite or a postgresql:// URL (JSON files are loaded with load_from_file, not written "
        "through)"
    )
