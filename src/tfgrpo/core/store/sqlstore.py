"""The experience library's tables, on either engine of the SQL layer (SQLite or PostgreSQL).

Tables (schema 2):
- `meta`: key -> text: the format marker, `schema_version`, the config (JSON);
- `experiences`: one row per stored experience, by id;
- `library_state`: one row: the change sequence's last number, the next experience id, the counters
  and the progress marker. Every writer locks it first (SQLite: `BEGIN IMMEDIATE` locks the file;
  PostgreSQL: `SELECT ... FOR UPDATE` locks the row), so writers of one library take turns, and each
  decides on the library as the last one left it;
- `library_changes`: (seq, op, experience id), one row per change, numbered without gaps; readers
  apply the rows after the last number they saw. Rows older than the newest `KEEP_CHANGES` are
  trimmed; a reader further behind reloads everything.
- `embeddings` (made on first use): vectors of indexed texts, by (model, text).

PostgreSQL: a row lock rather than SERIALIZABLE transactions, because serialisable writers of one
library would conflict on nearly every group and retry it; a row lock makes them queue instead, is
tied to the library's own row (so two libraries in one database do not wait for each other, unlike
one advisory lock key) and is released with the transaction, also when the client dies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...errors import ConfigError, LibraryFormatError
from ..experience import Experience
from .base import Changes, LibraryState
from .sql import Database, Transaction, check_version, upgrade, upsert

FORMAT = "tfgrpo-library"
SCHEMA_VERSION = 2
COUNTERS = ("total_rollouts", "total_stored", "total_pruned", "total_loaded")
KEEP_CHANGES = 100_000
"""Change rows kept; a reader further behind than this reloads the whole library."""
_TRIM_EVERY = 1024
_PAGE = 100_000  # experiences read per query when loading

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiences (
    id {int} PRIMARY KEY,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    advantage {real} NOT NULL,
    timestamp {int} NOT NULL,
    metadata TEXT
)
"""
# Schema 2: what was decided in memory before (ids, counters, progress) is decided in the database.
_TABLES_2 = """
CREATE TABLE IF NOT EXISTS library_state (
    id {int} PRIMARY KEY CHECK (id = 1),
    seq {int} NOT NULL,
    next_id {int} NOT NULL,
    total_rollouts {int} NOT NULL,
    total_stored {int} NOT NULL,
    total_pruned {int} NOT NULL,
    total_loaded {int} NOT NULL,
    progress TEXT
);
CREATE TABLE IF NOT EXISTS library_changes (seq {int} PRIMARY KEY, op TEXT NOT NULL, experience_id {int})
"""
_EMBEDDINGS = """CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL, text TEXT NOT NULL, vector {blob} NOT NULL, PRIMARY KEY (model, text))"""
# Tables tfgrpo keeps beside a library (lessons, the LLM cache, the proxy's records, the rollout log): a
# database holding only these has no experience library yet, and one may be made there.
_SIDE_TABLES = ("lesson_", "proxy_", "rollout_", "sqlite_")

_STATE = "SELECT seq, next_id, total_rollouts, total_stored, total_pruned, total_loaded, progress FROM library_state"
_COLUMNS = "id, prompt, response, advantage, timestamp, metadata"
# The feed after a change number, with the current row of each experience it adds or re-tags (NULLs
# once removed): what a reader applies, a page per query. (A small page also keeps PostgreSQL's generic
# plan of the prepared statement an index nested loop, not a hash join over every experience.)
_FEED_PAGE = 1000
_FEED = f"""SELECT c.seq, c.op, c.experience_id, {", ".join("e." + c for c in _COLUMNS.split(", ")[1:])}
FROM library_changes c LEFT JOIN experiences e ON e.id = c.experience_id AND c.op IN ('add', 'metadata')
WHERE c.seq > ? ORDER BY c.seq LIMIT {_FEED_PAGE}"""
_INSERT = f"INSERT INTO experiences({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"


def _script(tx: Transaction, db: Database, text: str) -> None:
    for statement in db.dialect.ddl(text).split(";"):
        if statement.strip():
            tx.execute(statement)


def _v1_to_v2(tx: Transaction, db: Database) -> None:
    """Schema 1 kept the counters and progress as JSON in `meta` and decided ids in memory."""
    _script(tx, db, _TABLES_2)
    meta = dict(tx.execute("SELECT key, value FROM meta WHERE key IN ('counters', 'progress')").fetchall())
    damaged = f"{db.where}: stored library is damaged:"
    counters = _counters(_json_field(meta, "counters", damaged) or {}, damaged)
    progress = meta.get("progress")
    _json_field(meta, "progress", damaged)
    (top,) = tx.execute("SELECT MAX(id) FROM experiences").fetchone()
    if top is not None and type(top) is not int:
        raise LibraryFormatError(f"{damaged} experience id {top!r:.40} is not a number")
    tx.execute(
        "INSERT INTO library_state(id, seq, next_id, total_rollouts, total_stored, total_pruned, total_loaded, "
        "progress) VALUES (1, 0, ?, ?, ?, ?, ?, ?)",
        ((top or 0) + 1, *(counters.get(name, 0) for name in COUNTERS), progress),
    )
    tx.execute("DELETE FROM meta WHERE key IN ('counters', 'progress')")


def library_status(db: Database, tables: set[str], tx: Transaction | None = None) -> int | None:
    """The schema version of the library stored in `db` (None: no library there yet);
    `LibraryFormatError` for a foreign database or one from a newer tfgrpo."""
    where = db.where
    if all(t.startswith(_SIDE_TABLES) or t == "embeddings" for t in tables):
        return None
    meta: dict = {}
    if "meta" in tables:
        query = "SELECT key, value FROM meta WHERE key IN ('format', 'schema_version')"
        meta = dict(tx.execute(query).fetchall() if tx is not None else db.query(query))
    if meta.get("format") != FORMAT or "experiences" not in tables:
        raise LibraryFormatError(f"{where} is a database but not a tfgrpo library (tables: {sorted(tables)})")
    version = meta.get("schema_version", "0")
    if not (isinstance(version, str) and version.isdigit()):
        raise LibraryFormatError(f"{where}: stored library is damaged: schema version {version!r:.40} is not a number")
    check_version(f"the library in {where}", int(version), SCHEMA_VERSION)
    return int(version)


def read_state(tx: Transaction, where: str) -> LibraryState:
    """Everything a (schema 2) library holds, read and checked in the caller's transaction."""
    damaged = f"{where}: stored library is damaged:"
    seq, next_id, counters, progress = _read_state_row(tx, damaged)
    meta = dict(tx.execute("SELECT key, value FROM meta WHERE key = 'config'").fetchall())
    config = _json_field(meta, "config", damaged)
    experiences: list[Experience] = []
    last = 0
    while True:  # in pages: a million rows are never all in the driver's buffers at once
        query = f"SELECT {_COLUMNS} FROM experiences WHERE id > ? ORDER BY id LIMIT {_PAGE}"
        page = _experiences(tx.execute(query, (last,)), damaged, last)
        experiences += page
        if len(page) < _PAGE:
            break
        last = page[-1].id  # type: ignore[assignment]
    if experiences and experiences[-1].id >= next_id:  # type: ignore[operator]
        raise LibraryFormatError(f"{damaged} experience id {experiences[-1].id} is not below the next id {next_id}")
    return LibraryState(config, counters, experiences, progress, seq, next_id)


def _read_state_row(tx: Transaction, damaged: str) -> tuple[int, int, dict[str, int], dict | None]:
    return _state_row(tx.execute(_STATE + " WHERE id = 1").fetchone(), damaged)


def _state_row(row: Any, damaged: str) -> tuple[int, int, dict[str, int], dict | None]:
    if row is None:
        raise LibraryFormatError(f"{damaged} its state row is missing")
    seq, next_id, *values, progress = row
    counters = _counters(dict(zip(COUNTERS, values)), damaged)
    if not all(type(v) is int and v >= 0 for v in (seq, next_id)):
        raise LibraryFormatError(f"{damaged} change sequence {seq!r:.40} or next id {next_id!r:.40} is not a number")
    return seq, next_id, counters, _json_field({"progress": progress}, "progress", damaged)


class SQLStore:
    """A library in the tables of one database (see the module's docstring); any number of processes
    may hold one open. `SQLiteStore` and `PostgresStore` are this on their engine."""

    def __init__(self, db: Database) -> None:
        self._conn = db
        self.where = db.where
        try:
            self._open()
        except BaseException:
            db.close()
            raise

    def _open(self) -> None:
        db = self._conn
        if library_status(db, db.tables()) == SCHEMA_VERSION:
            return
        with self._conn.creating() as tx:  # made or upgraded by one process at a time; look again inside
            version = library_status(db, db.tables(tx), tx)
            if version is None:
                _script(tx, db, _TABLES)
                _script(tx, db, _TABLES_2)
                tx.execute(
                    "INSERT INTO meta(key, value) VALUES ('format', ?), ('schema_version', ?)",
                    (FORMAT, str(SCHEMA_VERSION)),
                )
                tx.execute(
                    "INSERT INTO library_state(id, seq, next_id, total_rollouts, total_stored, total_pruned, "
                    "total_loaded) VALUES (1, 0, 1, 0, 0, 0, 0)"
                )
            elif version < SCHEMA_VERSION:
                upgrade(tx, db.where, version, SCHEMA_VERSION, {1: lambda tx: _v1_to_v2(tx, db)})
                tx.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    # -- reading ------------------------------------------------------------------------------------------

    def load(self) -> LibraryState:
        with self._conn.reading() as tx:
            return self._load(tx)

    def _load(self, tx: Transaction) -> LibraryState:
        return read_state(tx, self.where)

    def _state(self, tx: Transaction) -> tuple[int, int, dict[str, int], dict | None]:
        return _read_state_row(tx, f"{self.where}: stored library is damaged:")

    def changes_since(self, seq: int) -> Changes | None:
        rows = self._conn.query("SELECT seq FROM library_state WHERE id = 1")
        if rows and rows[0][0] == seq:
            return None
        with self._conn.reading() as tx:
            state, feed = self._state(tx), tx.execute(_FEED, (seq,))
            return self._changes(tx, seq, state, feed.fetchall())

    def _changes(self, tx: Transaction, seq: int, state: tuple, feed: list) -> Changes | None:
        """What the feed after `seq` says (`feed`: its first page), for a reader at `seq` (None: nothing new)."""
        now, next_id, counters, progress = state
        if now == seq:
            return None
        if seq < now <= seq + KEEP_CHANGES:
            page = feed
            while len(page) == _FEED_PAGE:
                page = tx.execute(_FEED, (page[-1][0],)).fetchall()
                feed = feed + page
        ops = [(op, id_) for _, op, id_, *_ in feed]
        if not (feed and feed[0][0] == seq + 1 and len(feed) == now - seq) or any(op == "replace" for op, _ in ops):
            # Further behind than the feed goes back, or everything was replaced: start over.
            return Changes(now, counters, progress, next_id, reload=self._load(tx))
        changes = Changes(now, counters, progress, next_id, ops)
        rows = sorted({row[2]: row[2:] for row in feed if row[3] is not None}.values())
        damaged = f"{self.where}: stored library is damaged:"
        changes.rows = {e.id: e for e in _experiences(rows, damaged, 0)}  # type: ignore[misc]
        if any(op == "config" for op, _ in ops):
            meta = dict(tx.execute("SELECT key, value FROM meta WHERE key = 'config'").fetchall())
            changes.config = _json_field(meta, "config", damaged)
        return changes

    # -- writing ------------------------------------------------------------------------------------------

    @contextmanager
    def write(self, seq: int | None) -> Iterator[_Transaction]:
        """A write transaction (`seq` None: the writer keeps no copy, so no changes are read for it)."""
        with self._conn.writing() as tx:
            # Both statements go at once (PostgreSQL: one round trip in pipeline mode); the feed is read
            # after the lock is held, so it holds everything committed before.
            locked = tx.execute(_STATE + " WHERE id = 1" + self._conn.dialect.for_update)
            feed = None if seq is None else tx.execute(_FEED, (seq,))
            state = _state_row(locked.fetchone(), f"{self.where}: stored library is damaged:")
            changes = None if feed is None else self._changes(tx, seq, state, feed.fetchall())  # type: ignore[arg-type]
            writer = _Transaction(tx, state, changes)
            yield writer
            writer._finish()

    def replace(self, experiences: Sequence[Experience], counters: dict[str, int]) -> None:
        """Replace everything stored, in a transaction of its own (writing a whole library at once)."""
        with self.write(None) as tx:
            tx.replace(experiences, counters)

    def save_config(self, config: dict) -> None:
        with self.write(None) as tx:
            tx.save_config(config)

    def restore(self, state: LibraryState) -> None:
        """Make this store, which holds no experience yet, hold exactly `state` (ids, counters, config,
        progress, the next id): a copy of another store, in one transaction."""
        with self.write(None) as tx:
            (count,) = tx._tx.execute("SELECT COUNT(*) FROM experiences").fetchone()
            if count or tx._seq:
                raise ConfigError(f"{self.where} already holds a library; copy into an empty one")
            tx.replace(state.experiences, state.counters)
            if state.config is not None:
                tx.save_config(state.config)
            tx._progress = state.progress
            tx.next_id = max(tx.next_id, state.next_id)

    # -- embeddings of indexed texts (see tfgrpo.retrieval): a cache keyed by (model, text), in a table
    # made on first use.

    def load_embeddings(self, model: str, texts: Sequence[str]) -> dict[str, bytes]:
        """The stored vectors (float32 bytes) of those of `texts` that have one under `model`."""
        if not self._has_embeddings():
            return {}
        texts = list(dict.fromkeys(texts))
        found: dict[str, bytes] = {}
        for start in range(0, len(texts), 500):
            chunk = texts[start : start + 500]
            query = f"SELECT text, vector FROM embeddings WHERE model = ? AND text IN ({','.join('?' * len(chunk))})"
            found.update((text, bytes(vector)) for text, vector in self._conn.query(query, (model, *chunk)))
        return found

    def embedded_texts(self, model: str) -> list[str]:
        """Every text with a stored vector under `model`."""
        if not self._has_embeddings():
            return []
        return [text for (text,) in self._conn.query("SELECT text FROM embeddings WHERE model = ?", (model,))]

    def save_embeddings(self, model: str, items: Sequence[tuple[str, bytes]]) -> None:
        with self._conn.creating() as tx:
            _script(tx, self._conn, _EMBEDDINGS)
            tx.executemany(
                upsert("embeddings", ("model", "text", "vector"), ("model", "text")),
                [(model, text, vector) for text, vector in items],
            )

    def delete_embeddings(self, model: str, texts: Sequence[str]) -> None:
        if not self._has_embeddings():
            return
        with self._conn.writing() as tx:
            tx.executemany("DELETE FROM embeddings WHERE model = ? AND text = ?", [(model, t) for t in texts])

    def _has_embeddings(self) -> bool:
        return "embeddings" in self._conn.tables()

    def close(self) -> None:
        self._conn.close()


class _Transaction:
    """A `StoreTransaction` on the SQL tables: statements run as the library calls; the change rows
    and the state row are written last, in the same transaction."""

    def __init__(self, tx: Transaction, state: tuple, changes: Changes | None) -> None:
        self._tx = tx
        self._seq, self.next_id, self._counters, self._progress = state
        self.changes = changes
        self.seq = self._seq
        self._ops: list[tuple[str, int | None]] = []
        self._trimmed = False

    def commit(
        self,
        added: Sequence[Experience],
        removed: Sequence[Experience],
        counters: dict[str, int],
        progress: dict | None = None,
    ) -> None:
        tx = self._tx
        if added:
            tx.executemany(_INSERT, [_row(e) for e in added])
            self.next_id = max(self.next_id, max(e.id for e in added) + 1)  # type: ignore[type-var,operator]
        if removed:
            tx.executemany("DELETE FROM experiences WHERE id = ?", [(e.id,) for e in removed])
        self._ops += [("add", e.id) for e in added] + [("remove", e.id) for e in removed]
        if not added and not removed:
            self._ops.append(("counters", None))
        self._counters = dict(counters)
        if progress is not None:
            self._progress = progress

    def replace(self, experiences: Sequence[Experience], counters: dict[str, int]) -> None:
        tx = self._tx
        tx.execute("DELETE FROM experiences")
        tx.execute("DELETE FROM library_changes")  # every reader reloads after a replace
        tx.executemany(_INSERT, [_row(e) for e in experiences])
        ids = [e.id for e in experiences]
        self.next_id = max([self.next_id, *(i + 1 for i in ids)])  # type: ignore[operator]
        self._ops.append(("replace", None))
        self._counters = dict(counters)

    def save_config(self, config: dict) -> None:
        self._tx.execute(upsert("meta", ("key", "value"), ("key",)), ("config", json.dumps(config)))
        self._ops.append(("config", None))

    def update_metadata(self, experience: Experience) -> None:
        self._tx.execute(
            "UPDATE experiences SET metadata = ? WHERE id = ?", (_metadata_json(experience), experience.id)
        )
        self._ops.append(("metadata", experience.id))

    def _finish(self) -> None:
        if not self._ops:
            return
        tx, first = self._tx, self._seq + 1
        tx.executemany(
            "INSERT INTO library_changes(seq, op, experience_id) VALUES (?, ?, ?)",
            [(first + i, op, id_) for i, (op, id_) in enumerate(self._ops)],
        )
        self.seq = self._seq + len(self._ops)
        if self.seq // _TRIM_EVERY != self._seq // _TRIM_EVERY:
            tx.execute("DELETE FROM library_changes WHERE seq <= ?", (self.seq - KEEP_CHANGES,))
        tx.execute(
            "UPDATE library_state SET seq = ?, next_id = ?, total_rollouts = ?, total_stored = ?, total_pruned = ?, "
            "total_loaded = ?, progress = ? WHERE id = 1",
            (
                self.seq,
                self.next_id,
                *(int(self._counters.get(name, 0)) for name in COUNTERS),
                None if self._progress is None else json.dumps(self._progress),
            ),
        )


def _row(e: Experience) -> tuple:
    return (e.id, e.prompt, e.response, e.advantage, e.timestamp, _metadata_json(e))


def _experiences(rows: Any, damaged: str, after: int) -> list[Experience]:
    """Check rows (id, prompt, response, advantage, timestamp, metadata) in id order, ids above `after`,
    as a JSON file's values are; nothing half-read is returned."""
    experiences: list[Experience] = []
    append, new, checked = experiences.append, Experience, Experience.checked
    last_id = after
    try:
        for id_, prompt, response, advantage, timestamp, metadata in rows:
            # The usual row, checked inline (a million of them): the text a driver hands over was decoded
            # as strict UTF-8, so it holds no lone surrogate, and a stored integer is below 2**63. A
            # damaged b-tree can list an id twice or out of order; everything after relies on unique ids.
            if (
                type(id_) is int
                and id_ > last_id
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
            if type(id_) is not int or id_ <= last_id:
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
    return experiences


def _counters(counters: dict, damaged: str) -> dict[str, int]:
    for name, value in counters.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LibraryFormatError(f"{damaged} counter {name!r:.40} is {value!r:.40}, not a whole number >= 0")
    return counters


def _json_field(meta: dict, key: str, damaged: str) -> dict | None:
    """A meta value that must be a JSON object (None when absent)."""
    text = meta.get(key)
    if text is None:
        return None
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
