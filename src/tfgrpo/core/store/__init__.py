"""Persistence behind a library: where experiences, config and counters are written through, and
where several processes sharing one library meet."""

from __future__ import annotations

import os

from ...errors import StoreError
from ..formats import is_sqlite_path
from .base import Changes, LibraryState, Store, StoreTransaction
from .sql import is_postgres_url
from .sqlite import SQLiteStore

__all__ = ["Changes", "LibraryState", "Store", "StoreTransaction", "SQLiteStore", "is_postgres_url", "open_store"]


def open_store(store: Store | str | os.PathLike) -> Store:
    """A store object as given, or one opened from a path (`.db`, `.sqlite`, `.sqlite3`: SQLite) or a
    `postgresql://` URL (PostgreSQL; needs `pip install 'tfgrpo[postgres]'`)."""
    if not isinstance(store, (str, os.PathLike)):
        return store
    if is_postgres_url(store):
        from .postgres import PostgresStore

        return PostgresStore(str(store))
    if is_sqlite_path(store):
        return SQLiteStore(store)
    raise StoreError(
        f"cannot tell which store to open for {str(store)!r}: use a path ending in .db, .sqlite or "
        ".sqlite3 for SQLite or a postgresql:// URL (JSON files are loaded with load_from_file, not written "
        "through)"
    )
