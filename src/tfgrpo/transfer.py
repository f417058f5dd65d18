"""Whole libraries between SQLite files, PostgreSQL databases and JSON files (`tfgrpo export` and
`tfgrpo import`): the experiences with their ids, counters, config and progress, the lessons with every
version, the LLM cache, the stored embeddings, the rollout log (with its retention) and `tfgrpo serve`'s
records (completions, feedback, groups: the tables `proxy_*`).

A copy into a place that holds nothing yet is exact. JSON comes in two forms: the spec's array of
experiences (what its Rust reference reads; nothing else fits in it) and a full copy, one object
(`{"format": "tfgrpo-dump", ...}`), which `read` takes back without loss. Between databases the rollout log
and the records are read and written a page at a time (a log of millions of rows is never all in memory).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from .core.config import GRPOConfig
from .core.experience import Experience
from .core.files import atomic_write, fsync_dir, is_sqlite_file, make_temp, read_json, write_json
from .core.store import (
    LibraryState,
    connect_db,
    is_postgres_url,
    is_store_target,
    read_library,
    shown_target,
    sql_store,
    store_exists,
)
from .core.store.proxy_tables import PROXY_TABLES, create_proxy_tables
from .core.store.sql import read_pages, upsert
from .errors import ConfigError, LibraryFormatError, LibraryNotFoundError, TFGRPOError
from .learn.rollout_log import COLUMNS as ROLLOUT_COLUMNS
from .learn.rollout_log import LoggedRollout, RolloutLog
from .llm.cache import LLMCache
from .semantic.lessons import LessonLibrary, Version

DUMP_FORMAT = "tfgrpo-dump"
DUMP_VERSION = 1


@dataclass
class Lessons:
    versions: list[Version]
    next_id: int
    progress: dict | None


TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {"rollout_log": (ROLLOUT_COLUMNS, ("id",)), **PROXY_TABLES}
"""The tables a copy takes row by row: their columns and key."""


@dataclass
class Table:
    """The rows of one of `TABLES`, as `rows()` reads them (from the source database, a page at a time, or
    from a JSON copy's list)."""

    name: str
    count: int
    rows: Callable[[], Iterator[tuple]]


@dataclass
class Copy:
    """Everything a library holds."""

    library: LibraryState = field(default_factory=LibraryState)
    lessons: Lessons | None = None
    llm_cache: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    embeddings: list[tuple[str, str, bytes]] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    rollout_retention_days: float | None = None
    exact: bool = True
    """False for the spec's JSON array: experiences without ids, counters or config."""

    def summary(self) -> str:
        lessons = (
            f"{len(self.lessons.versions[-1].lessons)} lessons in {len(self.lessons.versions)} versions"
            if self.lessons
            else "no lessons"
        )
        logged = self.tables.get("rollout_log")
        served = self.tables.get("proxy_completions")
        return (
            f"{len(self.library.experiences)} experiences, {lessons}, {len(self.llm_cache)} cached LLM calls, "
            f"{len(self.embeddings)} embeddings, {logged.count if logged else 0} logged rollouts, "
            f"{served.count if served else 0} served completions"
        )


# -- reading --------------------------------------------------------------------------------------------------


def read(source: str) -> Copy:
    """Everything at `source` (an SQLite file, a `postgresql://` URL or a JSON file), checked; nothing
    there is changed."""
    if not is_postgres_url(source):
        if not os.path.exists(source):
            raise LibraryNotFoundError(f"no library at {shown_target(source)}")
        if not is_sqlite_file(source):
            return _read_json(source)
    copy = Copy(read_library(source))
    db = connect_db(source)
    try:
        tables = db.tables()
        if "embeddings" in tables:
            rows = db.query("SELECT model, text, vector FROM embeddings ORDER BY model, text")
            copy.embeddings = [(model, text, bytes(vector)) for model, text, vector in rows]
    finally:
        db.close()
    if "lesson_versions" in tables:
        with LessonLibrary(source, refresh_interval=None) as lessons:
            copy.lessons = Lessons(lessons.history(), lessons.next_id, lessons.progress)
    if "lesson_llm_cache" in tables:
        with LLMCache(source) as cache:
            copy.llm_cache = cache.rows()
    if "rollout_log" in tables:
        with RolloutLog(source) as log:
            copy.rollout_retention_days = log.retention_days
    for name, (columns, key) in TABLES.items():
        if name in tables:
            count = _count(source, name)
            copy.tables[name] = Table(name, count, partial(_pages, source, name, columns, key))
    return copy


def _count(source: str, table: str) -> int:
    db = connect_db(source)
    try:
        return db.query(f"SELECT COUNT(*) FROM {table}")[0][0]
    finally:
        db.close()


def _pages(source: str, table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> Iterator[tuple]:
    db = connect_db(source)
    try:
        yield from read_pages(db, table, columns, key)
    finally:
        db.close()


def _read_json(path: str) -> Copy:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not (isinstance(data, dict) and data.get("format") == DUMP_FORMAT):
        return Copy(LibraryState(experiences=read_json(path)), exact=False)  # the spec's array (its errors say why)
    return from_json(data, path)


def from_json(data: dict, where: str) -> Copy:
    """A full copy from its JSON object, every value checked."""
    if data.get("version") != DUMP_VERSION:
        raise LibraryFormatError(
            f"{where}: a {DUMP_FORMAT} of version {data.get('version')!r:.20}; this tfgrpo reads {DUMP_VERSION}"
        )
    try:
        library = data["library"]
        experiences, last = [], 0
        for i, item in enumerate(library["experiences"]):
            exp = Experience.from_dict(item, where=f"{where}: experience {i}")
            exp.id = item.get("id")
            if type(exp.id) is not int or exp.id <= last:
                raise LibraryFormatError(f"{where}: experience {i} has id {exp.id!r:.40}: ids must rise")
            last = exp.id
            experiences.append(exp)
        config = library.get("config")
        if config is not None:
            GRPOConfig.from_dict(config)
        counters = {name: value for name, value in library["counters"].items()}
        if not all(type(v) is int and v >= 0 for v in counters.values()):
            raise LibraryFormatError(f"{where}: counters must be whole numbers >= 0")
        next_id = library["next_id"]
        if type(next_id) is not int or next_id <= last:
            raise LibraryFormatError(f"{where}: next_id {next_id!r:.40} must be above every experience id")
        copy = Copy(LibraryState(config, counters, experiences, _object(library.get("progress"), where), 0, next_id))
        if data.get("lessons") is not None:
            lessons = data["lessons"]
            versions = [Version.from_dict(v, f"{where}: lesson version {i}") for i, v in enumerate(lessons["versions"])]
            if type(lessons["next_id"]) is not int:
                raise LibraryFormatError(f"{where}: the lessons' next_id is not a whole number")
            copy.lessons = Lessons(versions, lessons["next_id"], _object(lessons.get("progress"), where))
        for row in data.get("llm_cache", []):
            values = (row["key"], row["model"], row["request"], row["response"], row["created"])
            if not (all(isinstance(v, str) for v in values[:4]) and isinstance(values[4], (int, float))):
                raise LibraryFormatError(f"{where}: an LLM cache entry is damaged")
            copy.llm_cache.append(values)
        for row in data.get("embeddings", []):
            if not (isinstance(row["model"], str) and isinstance(row["text"], str)):
                raise LibraryFormatError(f"{where}: an embedding is damaged")
            copy.embeddings.append((row["model"], row["text"], base64.b64decode(row["vector"], validate=True)))
        for name, table in (data.get("tables") or {}).items():
            rows = _checked_rows(name, table, where)
            copy.tables[name] = Table(name, len(rows), partial(iter, rows))
        days = data.get("rollout_retention_days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float)) or not days > 0):
            raise LibraryFormatError(f"{where}: rollout_retention_days must be a number of days > 0")
        copy.rollout_retention_days = days
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, TFGRPOError):
            raise LibraryFormatError(f"{where}: {exc}") from None
        raise LibraryFormatError(f"{where}: not a usable {DUMP_FORMAT}: {exc!r:.200}") from None
    return copy


def _checked_rows(name: str, table: Any, where: str) -> list[tuple]:
    """A JSON copy's rows of one of `TABLES`: its columns as this tfgrpo writes them, each row that many
    JSON scalars, the key never null (the rollout log's rows read as `LoggedRollout`s)."""
    if name not in TABLES:
        raise LibraryFormatError(f"{where}: unknown table {name!r:.60} (a copy holds {', '.join(TABLES)})")
    columns, key = TABLES[name]
    if not isinstance(table, dict) or table.get("columns") != list(columns) or not isinstance(table.get("rows"), list):
        raise LibraryFormatError(f"{where}: table {name} must have the columns {', '.join(columns)} and a list of rows")
    rows = []
    at = [columns.index(k) for k in key]
    for i, row in enumerate(table["rows"]):
        if not (
            isinstance(row, list)
            and len(row) == len(columns)
            and all(v is None or (isinstance(v, (str, int, float)) and not isinstance(v, bool)) for v in row)
            and all(row[j] is not None for j in at)
        ):
            raise LibraryFormatError(f"{where}: {name} row {i} is damaged")
        if name == "rollout_log":
            LoggedRollout.of_row(row, f"{where}: {name} row {i}")
        rows.append(tuple(row))
    return rows


def _object(value: Any, where: str) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise LibraryFormatError(f"{where}: progress must be a JSON object")
    return value


def to_json(copy: Copy) -> dict:
    state = copy.library
    return {
        "format": DUMP_FORMAT,
        "version": DUMP_VERSION,
        "library": {
            "config": state.config,
            "counters": state.counters,
            "progress": state.progress,
            "next_id": state.next_id,
            "experiences": [{"id": e.id, **e.to_dict()} for e in state.experiences],
        },
        "lessons": None
        if copy.lessons is None
        else {
            "next_id": copy.lessons.next_id,
            "progress": copy.lessons.progress,
            "versions": [v.to_dict() for v in copy.lessons.versions],
        },
        "llm_cache": [dict(zip(("key", "model", "request", "response", "created"), row)) for row in copy.llm_cache],
        "embeddings": [
            {"model": m, "text": t, "vector": base64.b64encode(v).decode("ascii")} for m, t, v in copy.embeddings
        ],
        "rollout_retention_days": copy.rollout_retention_days,
        "tables": {
            name: {"columns": list(TABLES[name][0]), "rows": [list(row) for row in table.rows()]}
            for name, table in copy.tables.items()
        },
    }


# -- writing --------------------------------------------------------------------------------------------------


def write(copy: Copy, target: str, *, full_json: bool = False) -> None:
    """Write a whole copy to `target`, which must hold nothing yet (a PostgreSQL database or schema) or
    is a file, replaced atomically (SQLite: built beside it and renamed over it). JSON: the spec's array,
    or with `full_json` everything."""
    if not is_store_target(target):
        if full_json:
            text = json.dumps(to_json(copy), ensure_ascii=False)

            def dump(f: IO[str]) -> None:
                f.write(text)

            atomic_write(target, dump)
        else:
            write_json(target, copy.library.experiences)
        return
    if is_postgres_url(target):
        if store_exists(target):
            raise ConfigError(
                f"{target} already holds tfgrpo tables: copy into an empty database or schema (?schema=NEW), or "
                "`tfgrpo import` into it to replace its experiences"
            )
        _write_store(copy, target)
        return
    path = Path(target)
    fd, name = make_temp(path)
    os.close(fd)  # an empty file: SQLite makes it a database
    try:
        _write_store(copy, name)
        os.replace(name, path)
    except BaseException:
        for leftover in (name, f"{name}-wal", f"{name}-shm"):
            Path(leftover).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _write_store(copy: Copy, target: str) -> None:
    store = sql_store(target)
    try:
        store.restore(copy.library)
        models: dict[str, list[tuple[str, bytes]]] = {}
        for model, text, vector in copy.embeddings:
            models.setdefault(model, []).append((text, vector))
        for model, items in models.items():
            store.save_embeddings(model, items)
    finally:
        store.close()
    if copy.lessons is not None:
        with LessonLibrary(target, refresh_interval=None) as lessons:
            lessons.restore(copy.lessons.versions, copy.lessons.next_id, copy.lessons.progress)
    if copy.llm_cache:
        with LLMCache(target) as cache:
            cache.put_rows(copy.llm_cache)
    _write_tables(copy, target, list(copy.tables))


def _write_tables(copy: Copy, target: str, names: list[str], page: int = 2000) -> None:
    """The copy's rows of `names` into `target` (the rollout log's: a row with the id of one there replaces
    it), a transaction per page."""
    if "rollout_log" in names:
        RolloutLog(target, retention_days=copy.rollout_retention_days).close()  # its tables and retention
    db = connect_db(target)
    try:
        if any(name in PROXY_TABLES for name in names):
            with db.creating() as tx:
                create_proxy_tables(tx, db)
        for name in names:
            columns, key = TABLES[name]
            statement = upsert(name, columns, key)
            batch: list[tuple] = []
            for row in [*copy.tables[name].rows(), None]:
                if row is not None:
                    batch.append(row)
                if batch and (row is None or len(batch) >= page):
                    with db.writing() as tx:
                        tx.executemany(statement, batch)
                    batch = []
    finally:
        db.close()


def merge(copy: Copy, target: str, source: str) -> list[str]:
    """Into a library that exists: its experiences are replaced by the copy's (counted as loaded,
    pruned by its own config, `TrainingFreeGRPO.load_from_file`), the copy's current lessons become one
    new version of its lessons (its history kept), and cached LLM calls, embeddings and logged rollouts
    are added. `tfgrpo serve`'s records are not merged (their groups are numbered per library): what
    was left out, in words."""
    from .core.library import TrainingFreeGRPO

    with TrainingFreeGRPO.open(target) as grpo:
        grpo.load_from_file(source)
        if copy.embeddings and hasattr(grpo.store, "save_embeddings"):
            models: dict[str, list[tuple[str, bytes]]] = {}
            for model, text, vector in copy.embeddings:
                models.setdefault(model, []).append((text, vector))
            for model, items in models.items():
                grpo.store.save_embeddings(model, items)  # type: ignore[union-attr]
    if copy.lessons is not None:
        with LessonLibrary(target) as lessons:
            lessons.replace_all(copy.lessons.versions[-1].lessons, kind="import", context={"imported_from": source})
    if copy.llm_cache:
        with LLMCache(target) as cache:
            cache.put_rows(copy.llm_cache)
    if "rollout_log" in copy.tables:
        _write_tables(copy, target, ["rollout_log"])
    served = copy.tables.get("proxy_completions")
    if served is not None and served.count:
        return [f"{source}'s {served.count} served completions (tfgrpo serve's records) are not merged into {target}"]
    return []
