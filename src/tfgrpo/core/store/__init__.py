"""Persistence behind a library: where experiences, config and counters are written through."""

from __future__ import annotations

import os

from ...errors import StoreError
from ..files import is_sqlite_path
from .base import LibraryState, Store
from .sqlite import SQLiteStore

__all__ = ["LibraryState", "Store", "SQLiteStore", "open_store"]


def open_store(store: Store | str | os.PathLike) -> Store:
    """A store object as given, or one opened from a path (`.db`, `.sqlite`, `.sqlite3`: SQLite)."""
    if not isinstance(store, (str, os.PathLike)):
        return store
    if str(store).startswith(("postgres://", "postgresql://")):
        raise StoreError("PostgreSQL stores are not available in this version; use an SQLite path")
    if is_sqlite_path(store):
        return SQLiteStore(store)
    raise StoreError(
        f"cannot tell which store to open for {str(store)!r}: use a path ending in .db, .sqlite or "
        ".sqlite3 for SQLite (JSON files are loaded with load_from_file, not written through)"
    )
