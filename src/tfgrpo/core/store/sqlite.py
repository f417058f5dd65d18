"""SQLite store: the embedded default for long-running work. WAL mode, one transaction per update."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ...errors import LibraryFormatError, StoreError
from ..experience import Experience
from .base import LibraryState

FORMAT = "tfgrpo-library"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE experiences (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    advantage REAL NOT NULL,
    timestamp INTEGER NOT NULL,
    metadata TEXT
);
"""

_EMBEDDINGS = """CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, text))"""


class SQLiteStore:
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
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._check_or_create()  # first: a foreign database is refused before WAL mode would convert it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={durability.upper()}")
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # (a damaged schema's text is not UTF-8)
            self._close_quietly()
            raise LibraryFormatError(f"{self.path} is not a usable SQLite library: {exc}") from None
        except sqlite3.Error as exc:
            self._close_quietly()
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        except BaseException:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def _check_or_create(self) -> None:
        if not _check_library(self._db, self.path):
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION))],
                )

    def _transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db, f"{self.path}")

    def load(self) -> LibraryState:
        return _load(self._db, self.path)

    def commit(
        self,
        added: Sequence[Experience],
        removed: Sequence[Experience],
        counters: dict[str, int],
        progress: dict | None = None,
    ) -> None:
        with self._transaction():
            self._insert(added)
            self._db.executemany("DELETE FROM experiences WHERE id = ?", [(e.id,) for e in removed])
            self._put("counters", json.dumps(counters))
            if progress is not None:
                self._put("progress", json.dumps(progress))

    def replace(self, experiences: Sequence[Experience], counters: dict[str, int]) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM experiences")
            self._insert(experiences)
            self._put("counters", json.dumps(counters))

    def save_config(self, config: dict) -> None:
        with self._transaction():
            self._put("config", json.dumps(config))

    def update_metadata(self, experience: Experience) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE experiences SET metadata = ? WHERE id = ?",
                (_metadata_json(experience), experience.id),
            )

    # Embeddings of indexed texts (see tfgrpo.retrieval): a cache keyed by (model, text), in a table made
    # on first use, so libraries without retrieval are unchanged and older readers ignore it.

    def load_embeddings(self, model: str, texts: Sequence[str]) -> dict[str, bytes]:
        """The stored vectors (float32 bytes) of those of `texts` that have one under `model`."""
        if not self._has_embeddings():
            return {}
        texts = list(dict.fromkeys(texts))
        found: dict[str, bytes] = {}
        for start in range(0, len(texts), 500):
            chunk = texts[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT text, vector FROM embeddings WHERE model = ? AND text IN ({marks})"
            found.update(self._db.execute(query, (model, *chunk)))
        return found

    def embedded_texts(self, model: str) -> list[str]:
        """Every text with a stored vector under `model`."""
        if not self._has_embeddings():
            return []
        return [text for (text,) in self._db.execute("SELECT text FROM embeddings WHERE model = ?", (model,))]

    def save_embeddings(self, model: str, items: Sequence[tuple[str, bytes]]) -> None:
        with self._transaction():
            self._db.execute(_EMBEDDINGS)
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings(model, text, vector) VALUES (?, ?, ?)",
                [(model, text, vector) for text, vector in items],
            )

    def delete_embeddings(self, model: str, texts: Sequence[str]) -> None:
        if not self._has_embeddings():
            return
        with self._transaction():
            self._db.executemany("DELETE FROM embeddings WHERE model = ? AND text = ?", [(model, t) for t in texts])

    def _has_embeddings(self) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='embeddings'"
        return self._db.execute(query).fetchone() is not None

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and leave a single self-contained file."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("PRAGMA journal_mode=DELETE")

    def close(self) -> None:
        self._db.close()

    def _insert(self, experiences: Sequence[Experience]) -> None:
        self._db.executemany(
            "INSERT INTO experiences(id, prompt, response, advantage, timestamp, metadata) VALUES (?, ?, ?, ?, ?, ?)",
            [(e.id, e.prompt, e.response, e.advantage, e.timestamp, _metadata_json(e)) for e in experiences],
        )

    def _put(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def read_snapshot(path: str | os.PathLike) -> LibraryState:
    """What an SQLite library file holds, read without changing the file (read-only, no WAL switch);
    every value is checked as a JSON file's are. Raises `LibraryFormatError` for anything else."""
    path = Path(path)
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    try:
        if not _check_library(db, path):
            return LibraryState()  # only lessons or embeddings: no experiences yet
        return _load(db, path)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # (a damaged schema's text is not UTF-8)
        raise LibraryFormatError(f"{path} is not a usable SQLite library: {exc}") from None
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    finally:
        db.close()


def _check_library(db: sqlite3.Connection, path: Path) -> bool:
    """Whether the database holds an experience library (False: none yet, one may be made beside what is
    there); `LibraryFormatError` for a foreign database or one from a newer tfgrpo."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not all(isinstance(t, str) for t in tables):
        raise LibraryFormatError(f"{path}: stored library is damaged: its table names are not text")
    # A file holding only a lesson library (paper mode), embeddings or SQLite's own tables has no
    # experience library yet.
    if all(t.startswith(("lesson_", "sqlite_")) or t == "embeddings" for t in tables):
        return False
    meta = dict(db.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
    if meta.get("format") != FORMAT or "experiences" not in tables:
        raise LibraryFormatError(f"{path} is an SQLite database but not a tfgrpo library (tables: {sorted(tables)})")
    version = meta.get("schema_version", "0")
    if not (isinstance(version, str) and version.isdigit()):
        raise LibraryFormatError(f"{path}: stored library is damaged: schema version {version!r:.40} is not a number")
    if int(version) > SCHEMA_VERSION:
        raise LibraryFormatError(f"{path} was written by a newer tfgrpo (schema {version}); upgrade tfgrpo")
    return True


def _load(db: sqlite3.Connection, path: Path) -> LibraryState:
    """Read and check everything stored, in the library's order (by id); nothing half-read is returned."""
    damaged = f"{path}: stored library is damaged:"
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        config = _json_field(meta, "config", damaged)
        counters = _json_field(meta, "counters", damaged) or {}
        progress = _json_field(meta, "progress", damaged)
        for name, value in counters.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LibraryFormatError(f"{damaged} counter {name!r:.40} is {value!r:.40}, not a whole number >= 0")
        rows = db.execute("SELECT id, prompt, response, advantage, timestamp, metadata FROM experiences ORDER BY id")
        experiences: list[Experience] = []
        append, new, checked = experiences.append, Experience, Experience.checked
        last_id = None
        for id_, prompt, response, advantage, timestamp, metadata in rows:
            # The usual row, checked inline (a million of them): the text SQLite hands over was decoded as
            # strict UTF-8, so it holds no lone surrogate, and an SQLite integer is below 2**63. A damaged
            # b-tree can list an id twice or out of order; everything after relies on unique ids.
            if (
                type(id_) is int
                and (last_id is None or id_ > last_id)
                and metadata is None
                and type(prompt) is str
                and type(response) is str
                and type(advantage) is float
                and -math.inf < advantage < math.inf
                and type(timestamp) is int
                and timestamp >= 0
            ):
                append(new(prompt, response, advantage, timestamp, None, id_))
                last_id = id_
                continue
            where = f"{damaged} experience id {id_}"
            if type(id_) is not int or (last_id is not None and id_ <= last_id):
                raise LibraryFormatError(f"{where} is out of order or repeated")
            last_id = id_
            if metadata is not None:
                if not isinstance(metadata, str):
                    raise LibraryFormatError(f"{where}: field 'metadata' is {type(metadata).__name__}, not JSON text")
                metadata = json.loads(metadata) if metadata else None
            if type(advantage) is int:  # SQLite keeps a whole REAL as an integer in some files
                advantage = float(advantage)
            exp = checked(prompt, response, advantage, timestamp, metadata or None, where)
            exp.id = id_
            append(exp)
    except (ValueError, RecursionError) as exc:  # JSON that does not parse
        raise LibraryFormatError(f"{damaged} {exc}") from None
    except sqlite3.DatabaseError as exc:  # e.g. a page that cannot be read, text that is not UTF-8
        raise LibraryFormatError(f"{damaged} {exc}") from None
    return LibraryState(config, counters, experiences, progress)


def _json_field(meta: dict, key: str, damaged: str) -> dict | None:
    """A meta value that must be a JSON object (None when absent)."""
    if key not in meta:
        return None
    text = meta[key]
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except (ValueError, RecursionError):
        raise LibraryFormatError(f"{damaged} the stored {key} is not valid JSON") from None
    if not isinstance(value, dict):
        raise LibraryFormatError(f"{damaged} the stored {key} must be a JSON object, got {type(value).__name__}")
    return value


def _metadata_json(exp: Experience) -> str | None:
    metadata = exp.stored_metadata
    return json.dumps(dict(metadata), ensure_ascii=False) if metadata else None


def connect(path: Path | None) -> sqlite3.Connection:
    """A connection for a side table kept in a library file (`None`: in memory): autocommit, usable
    from several threads, waits up to 10 s for a lock, WAL with synchronous=NORMAL on disk."""
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
    """One write transaction (BEGIN IMMEDIATE ... COMMIT); on any error it is rolled back, and SQLite
    errors become `StoreError` saying that nothing was changed."""
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
