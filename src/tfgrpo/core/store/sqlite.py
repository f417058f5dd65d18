"""SQLite store: the embedded default for long-running work. WAL mode, one transaction per update; any
number of processes on one machine may share the file (see `sqlstore.py`)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ...errors import LibraryFormatError, StoreError
from .base import LibraryState
from .sql import SQLiteDatabase, connect, transaction
from .sqlstore import (
    COUNTERS,
    SCHEMA_VERSION,
    SQLStore,
    _counters,
    _experiences,
    _json_field,
    library_status,
    read_state,
)

__all__ = ["SQLiteStore", "read_snapshot", "connect", "transaction", "SCHEMA_VERSION"]


class SQLiteStore(SQLStore):
    """A library in one SQLite file.

    `durability="normal"` (default; WAL with synchronous=NORMAL): an update that returned survives a
    killed process, and the file is never corrupted; a power loss may roll back the last few updates.
    `"full"` fsyncs every commit, so an update that returned survives a power loss too, at the cost of
    one fsync per update.
    """

    def __init__(self, path: str | os.PathLike, durability: str = "normal") -> None:
        if durability not in ("full", "normal"):
            raise StoreError(f"durability must be 'full' or 'normal', got {durability!r}")
        self.path = Path(path)
        # The tables are checked first: a foreign database is refused before WAL mode would convert it.
        db = SQLiteDatabase(self.path, check=lambda db: library_status(db, db.tables()))
        self._db = db.connection
        try:
            self._db.execute(f"PRAGMA synchronous={durability.upper()}")
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        super().__init__(db)

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and leave a single self-contained file."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("PRAGMA journal_mode=DELETE")


def read_snapshot(path: str | os.PathLike) -> LibraryState:
    """What an SQLite library file holds, read without changing the file (read-only, no WAL switch, no
    upgrade); every value is checked as a JSON file's are. Raises `LibraryFormatError` for anything else."""
    path = Path(path)
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    damaged = f"{path}: stored library is damaged:"
    try:
        db = _ReadOnly(connection, str(path))
        version = library_status(db, db.tables())
        if version is None:
            return LibraryState()  # only lessons or embeddings: no experiences yet
        if version >= 2:
            connection.execute("BEGIN")  # one snapshot, while other processes may be writing
            return read_state(connection, str(path))
        meta = dict(connection.execute("SELECT key, value FROM meta"))  # schema 1: counters in meta
        rows = connection.execute(
            "SELECT id, prompt, response, advantage, timestamp, metadata FROM experiences ORDER BY id"
        )
        experiences = _experiences(rows, damaged, 0)
        counters = _counters(_json_field(meta, "counters", damaged) or {}, damaged)
        return LibraryState(
            _json_field(meta, "config", damaged),
            {name: counters.get(name, 0) for name in COUNTERS},
            experiences,
            _json_field(meta, "progress", damaged),
            0,
            (experiences[-1].id or 0) + 1 if experiences else 1,
        )
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # (a damaged schema's text is not UTF-8)
        raise LibraryFormatError(f"{path} is not a usable SQLite library: {exc}") from None
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    finally:
        connection.close()


class _ReadOnly(SQLiteDatabase):
    """A `SQLiteDatabase` over a connection opened elsewhere (read-only)."""

    def __init__(self, connection: sqlite3.Connection, where: str) -> None:
        self.connection, self.where, self.path = connection, where, None
