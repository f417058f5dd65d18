"""`tfgrpo export` and `tfgrpo import` between SQLite, PostgreSQL and JSON, both ways: everything survives
the trip (experiences with their ids, counters, config, progress, lessons with every version, the LLM
cache, embeddings); bad input and occupied targets are refused with nothing changed."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from tfgrpo import TrainingFreeGRPO
from tfgrpo.cli import main
from tfgrpo.semantic import LessonLibrary
from tfgrpo.semantic.operations import Operation
from tfgrpo.transfer import read

FIXTURE = Path(__file__).parent / "data" / "schema1.db"
pytestmark = pytest.mark.filterwarnings("ignore::tfgrpo.TFGRPOWarning")


def raw(path: Path) -> dict:
    """The rows of an SQLite library, read with sqlite3 alone (the library's counters wherever kept)."""
    db = sqlite3.connect(path)
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta = dict(db.execute("SELECT key, value FROM meta"))
        if "library_state" in tables:
            row = db.execute(
                "SELECT total_rollouts, total_stored, total_pruned, total_loaded, progress FROM library_state"
            )
            *counters, progress = row.fetchone()
        else:
            counters = list(json.loads(meta["counters"]).values())
            progress = meta["progress"]
        return {
            "config": json.loads(meta["config"]),
            "counters": counters,
            "progress": json.loads(progress),
            "experiences": db.execute("SELECT * FROM experiences ORDER BY id").fetchall(),
            "versions": db.execute("SELECT * FROM lesson_versions ORDER BY version").fetchall(),
            "lesson_meta": dict(db.execute("SELECT key, value FROM lesson_meta")),
            "cache": db.execute("SELECT * FROM lesson_llm_cache ORDER BY key").fetchall(),
            "embeddings": db.execute("SELECT * FROM embeddings ORDER BY model, text").fetchall(),
        }
    finally:
        db.close()


def run(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.mark.slow
def test_sqlite_to_postgresql_to_json_to_sqlite_keeps_everything(postgres_server, tmp_path, capsys):
    source = tmp_path / "source.db"
    shutil.copy(FIXTURE, source)
    before = raw(source)
    url = postgres_server.new_url()
    assert run("export", "-l", source, url) == 0
    assert "wrote 11 experiences" in capsys.readouterr().out
    assert raw(source) == before  # the source is only read (not even upgraded)

    dump = tmp_path / "everything.json"
    assert run("export", "-l", url, dump, "--full") == 0
    copy = tmp_path / "copy.db"
    assert run("import", dump, "-l", copy) == 0
    assert "a copy of" in capsys.readouterr().out
    assert raw(copy) == before

    with TrainingFreeGRPO.open(url) as lib:  # and the PostgreSQL copy works as a library
        assert [e.id for e in lib.experience_library] == [row[0] for row in before["experiences"]]
        added = lib.add_rollout_group([("new", "good"), ("new", "bad")], [1.0, 0.0])
        assert added[0].id == before["experiences"][-1][0] + 1
    with LessonLibrary(url) as lessons:
        assert [v.kind for v in lessons.history()] == [row[3] for row in before["versions"]]
        lessons.apply([Operation("add", "One more.")])
        assert "G3" in lessons and lessons.next_id == 4  # the ids go on from the copied counter


def test_postgresql_back_to_sqlite_by_import(postgres_server, tmp_path):
    source = tmp_path / "source.db"
    shutil.copy(FIXTURE, source)
    url = postgres_server.new_url()
    assert run("import", source, "-l", url) == 0  # into an empty schema: an exact copy
    back = tmp_path / "back.db"
    assert run("export", "-l", url, back) == 0
    assert raw(back) == raw(source)


def test_export_to_the_specs_json_writes_the_experiences(tmp_path, capsys):
    source = tmp_path / "source.db"
    shutil.copy(FIXTURE, source)
    out = tmp_path / "spec.json"
    assert run("export", "-l", source, out) == 0
    data = json.loads(out.read_text())
    assert [d["response"] for d in data] == [row[2] for row in raw(source)["experiences"]]
    assert set(data[0]) == {"prompt", "response", "advantage", "timestamp", "metadata"}
    assert "--full writes the lessons too" in capsys.readouterr().err


def test_import_into_an_existing_library_replaces_experiences_and_adds_a_lesson_version(store_target, tmp_path):
    with TrainingFreeGRPO.open(store_target) as lib:
        lib.add_rollout_group([("mine", "good"), ("mine", "bad")], [1.0, 0.0])
    with LessonLibrary(store_target) as lessons:
        lessons.apply([Operation("add", "My own lesson.")])
    source = tmp_path / "source.db"
    shutil.copy(FIXTURE, source)
    assert run("import", source, "-l", store_target) == 0
    incoming = read(str(source))
    with TrainingFreeGRPO.open(store_target) as lib:  # (experiences older than max_experience_age are pruned)
        assert lib.stats().total_loaded == len(incoming.library.experiences)
        assert "mine" not in {e.prompt for e in lib.experience_library}
    with LessonLibrary(store_target) as lessons:
        assert [v.kind for v in lessons.history()] == ["init", "apply", "import"]
        assert lessons.lessons == incoming.lessons.versions[-1].lessons


def test_export_into_a_database_that_holds_a_library_is_refused(postgres_server, tmp_path, capsys):
    url = postgres_server.new_url()
    with TrainingFreeGRPO.open(url) as lib:
        lib.add_rollout_group([("mine", "good"), ("mine", "bad")], [1.0, 0.0])
    source = tmp_path / "source.db"
    shutil.copy(FIXTURE, source)
    assert run("export", "-l", source, url) == 1
    assert "already holds tfgrpo tables" in capsys.readouterr().err
    with TrainingFreeGRPO.open(url) as lib:
        assert [e.prompt for e in lib.experience_library] == ["mine"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["library"]["experiences"][1].update(id=1),
        lambda d: d["library"]["experiences"][0].update(advantage="high"),
        lambda d: d["library"].update(next_id=2),
        lambda d: d["lessons"]["versions"][1].update(lessons=["not", "a", "dict"]),
        lambda d: d["embeddings"][0].update(vector="not base64!"),
        lambda d: d["library"]["config"].update(group_size="eight"),
        lambda d: d.update(version=99),
    ],
)
def test_a_damaged_full_copy_is_refused_and_changes_nothing(tmp_path, capsys, damage):
    source = tmp_path / "source.db"
    shutil.copy(FIXTURE, source)
    dump = tmp_path / "dump.json"
    assert run("export", "-l", source, dump, "--full") == 0
    data = json.loads(dump.read_text())
    damage(data)
    dump.write_text(json.dumps(data))
    target = tmp_path / "target.db"
    assert run("import", dump, "-l", target) == 1
    assert capsys.readouterr().err.startswith(f"tfgrpo: error: {dump}")
    assert not target.exists()


def test_commands_take_a_postgresql_url(postgres_server, capsys):
    url = postgres_server.new_url()
    assert run("stats", "-l", url) == 1
    assert "no library at" in capsys.readouterr().err
    with TrainingFreeGRPO.open(url) as lib:
        lib.add_rollout_group([("Reverse a string", "s[::-1]"), ("Reverse a string", "s")], [1.0, 0.0])
    with LessonLibrary(url) as lessons:
        lessons.apply([Operation("add", "Check the units.")])
    assert run("stats", "-l", url, "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["current_library_size"] == 1 and stats["lessons"] == {"count": 1, "version": 1}
    assert run("query", "-l", url, "Reverse", "--json") == 0
    assert json.loads(capsys.readouterr().out)["response"] == "s[::-1]"
    assert run("lessons", "show", "-l", url) == 0
    assert "Check the units." in capsys.readouterr().out
    assert run("stats", "-l", "postgresql://nobody@127.0.0.1:1/x") == 1
    assert "cannot connect to postgresql://nobody@127.0.0.1:1/x" in capsys.readouterr().err


def test_an_import_says_how_many_experiences_the_librarys_config_pruned(tmp_path, capsys):
    source = tmp_path / "old.json"
    week = 7 * 24 * 3600
    now = int(time.time())
    rows = [
        {"prompt": "p", "response": r, "advantage": 0.5, "timestamp": t}
        for r, t in (("old", now - 2 * week), ("new", now))
    ]
    source.write_text(json.dumps(rows))
    assert run("import", source, "-l", tmp_path / "lib.db") == 0
    out, err = capsys.readouterr()
    assert "1 experiences after importing" in out
    assert "1 of the 2 experiences" in err and "max_experience_age (604800 s)" in err
