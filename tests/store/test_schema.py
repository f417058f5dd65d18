"""Schema versions: a library written by the release before schema 2 (tests/store/data/schema1.db, made by
data/make_schema1.py with that release) opens and is upgraded in place, keeping everything; one written
by a newer tfgrpo is refused, with an error that says so, and left as it was."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from store.server import raw_query
from tfgrpo import GRPOConfig, LibraryFormatError, TrainingFreeGRPO
from tfgrpo.core.store import SQLiteStore
from tfgrpo.core.store.sqlstore import SCHEMA_VERSION
from tfgrpo.learn.rollout_log import RolloutLog
from tfgrpo.llm.cache import LLMCache
from tfgrpo.semantic import LessonLibrary

FIXTURE = Path(__file__).parent / "data" / "schema1.db"
pytestmark = pytest.mark.filterwarnings("ignore::tfgrpo.TFGRPOWarning")


def read_raw(path: Path) -> dict:
    """Everything in the file, read with sqlite3 alone."""
    db = sqlite3.connect(path)
    try:
        return {
            "meta": dict(db.execute("SELECT key, value FROM meta")),
            "experiences": db.execute(
                "SELECT id, prompt, response, advantage, timestamp, metadata FROM experiences ORDER BY id"
            ).fetchall(),
            "versions": db.execute(
                "SELECT version, kind, lessons, applied FROM lesson_versions ORDER BY version"
            ).fetchall(),
            "cache": db.execute("SELECT key, response FROM lesson_llm_cache ORDER BY key").fetchall(),
            "embeddings": db.execute("SELECT model, text, vector FROM embeddings ORDER BY text").fetchall(),
        }
    finally:
        db.close()


def test_a_library_from_the_release_before_opens_and_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    before = read_raw(path)
    assert before["meta"]["schema_version"] == "1"  # (the fixture is what it says)

    with TrainingFreeGRPO.open(path) as lib:
        assert [(e.id, e.prompt, e.response, e.advantage, e.timestamp) for e in lib.experience_library] == [
            row[:5] for row in before["experiences"]
        ]
        assert [e.stored_metadata and dict(e.stored_metadata) for e in lib.experience_library] == [
            row[5] and json.loads(row[5]) for row in before["experiences"]
        ]
        assert {k: v for k, v in lib.stats().to_dict().items() if k.startswith("total")} == json.loads(
            before["meta"]["counters"]
        )
        assert lib.progress == json.loads(before["meta"]["progress"])
        stored = json.loads(before["meta"]["config"])  # a knob added since is at its default
        assert lib.config.to_dict() == {**GRPOConfig().to_dict(), **stored}
        vectors = lib.store.load_embeddings("fixture-model", ["task 0", "task 1"])
        assert {t: np.frombuffer(v, np.float32).tolist() for t, v in vectors.items()} == {
            "task 0": [0.0, 1.0, 2.0, 3.0],
            "task 1": [1.0, 1.0, 1.0, 1.0],
        }
        # It carries on: ids after every id ever given (the fixture removed one, not the last).
        added = lib.add_rollout_group([("new", "good"), ("new", "bad")], [1.0, 0.0])
        assert added[0].id == max(row[0] for row in before["experiences"]) + 1

    after = read_raw(path)
    assert after["meta"]["schema_version"] == str(SCHEMA_VERSION)
    assert "counters" not in after["meta"] and "progress" not in after["meta"]  # now in library_state
    assert after["experiences"][:-1] == before["experiences"]
    assert after["versions"] == before["versions"] and after["cache"] == before["cache"]
    assert after["embeddings"] == before["embeddings"]
    assert raw_query(str(path), "PRAGMA integrity_check") == [("ok",)]

    with LessonLibrary(path) as lessons:  # lessons and the LLM cache of the same file, every version
        assert [v.version for v in lessons.history()] == [0, 1, 2, 3]
        assert lessons.lessons == json.loads(before["versions"][-1][2])
        assert lessons.progress == {"global_step": 3}
    with LLMCache(path) as cache:
        assert len(cache) == 2
        assert all(cache.get(key) is not None for key, _ in before["cache"])
    with TrainingFreeGRPO.open(path) as again:  # and opens again as it is now
        assert again.library_size() == len(before["experiences"]) + 1


def test_reading_an_old_file_leaves_it_as_it_is(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    content = path.read_bytes()
    lib = TrainingFreeGRPO(GRPOConfig(max_experience_age=10**10))  # (the fixture's experiences are old)
    lib.load_from_file(path)  # read-only: no upgrade
    assert lib.library_size() == len(read_raw(path)["experiences"])
    assert path.read_bytes() == content


def test_a_library_from_a_newer_tfgrpo_is_refused_and_left_alone(store_target):
    with TrainingFreeGRPO.open(store_target) as lib:
        lib.add_rollout_group([("p", "good"), ("p", "bad")], [1.0, 0.0])
    newer = str(SCHEMA_VERSION + 1)
    if store_target.startswith("postgresql://"):
        import psycopg

        base, _, schema = store_target.partition("?schema=")
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'UPDATE "{schema}".meta SET value = %s WHERE key = %s', (newer, "schema_version"))
    else:
        db = sqlite3.connect(store_target)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (newer,))
        db.commit()
        db.close()
        content = Path(store_target).read_bytes()
    with pytest.raises(LibraryFormatError, match=rf"newer tfgrpo \(schema {newer}; this tfgrpo reads up to 2\)"):
        TrainingFreeGRPO.open(store_target)
    with pytest.raises(LibraryFormatError, match="newer tfgrpo"):
        SQLiteStore(store_target) if not store_target.startswith("postgresql") else TrainingFreeGRPO(store=store_target)
    assert raw_query(store_target, "SELECT COUNT(*) FROM experiences") == [(1,)]
    if not store_target.startswith("postgresql://"):
        assert Path(store_target).read_bytes() == content


def test_lessons_from_a_newer_tfgrpo_are_refused(store_target):
    LessonLibrary(store_target).close()
    raw_query(store_target, "UPDATE lesson_meta SET value = '7' WHERE key = 'schema_version'")
    with pytest.raises(LibraryFormatError, match=r"newer tfgrpo \(schema 7"):
        LessonLibrary(store_target)


@pytest.mark.parametrize("schema", ["lib%0A", "Lib", "1lib", "a-b", "x" * 64, "lib%22%3B"])
def test_a_schema_name_that_is_not_a_plain_identifier_is_refused_before_connecting(schema):
    from tfgrpo.core.store.postgres import split_url
    from tfgrpo.errors import ConfigError

    with pytest.raises(ConfigError, match="not a usable schema name"):
        split_url(f"postgresql://me:secret@127.0.0.1:1/db?schema={schema}")
    assert split_url("postgresql://me:secret@127.0.0.1:1/db?schema=lib_2")[1] == "lib_2"


def test_a_library_without_a_rollout_log_gets_its_tables_and_keeps_everything_else(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    with TrainingFreeGRPO.open(path):  # (upgraded to the current library schema first, as any command does)
        pass
    before = read_raw(path)
    with RolloutLog(path) as log:
        assert len(log) == 0 and log.retention_days is None
    assert read_raw(path) == before
    assert raw_query(str(path), "SELECT key, value FROM rollout_meta") == [("schema_version", "1")]
    with TrainingFreeGRPO.open(path) as lib:
        assert lib.library_size() == len(before["experiences"])


def test_a_database_holding_only_a_rollout_log_takes_a_new_library(store_target):
    RolloutLog(store_target).close()
    with TrainingFreeGRPO.open(store_target) as lib:
        lib.add_rollout_group([("p", "good"), ("p", "bad")], [1.0, 0.0])
    assert raw_query(store_target, "SELECT COUNT(*) FROM experiences") == [(1,)]
