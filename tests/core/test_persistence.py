"""JSON library files in the spec's format (its Rust reference writes them with serde_json), atomic
writes, and loading of corrupted or foreign files (a clear error, the library unchanged)."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from support.core import NOW, FakeClock, quiet_config, snapshot
from tfgrpo import (
    Experience,
    LibraryFormatError,
    LibraryNotFoundError,
    TFGRPOError,
    TrainingFreeGRPO,
)

FIELDS = ["prompt", "response", "advantage", "timestamp", "metadata"]

# What `serde_json::to_string_pretty(&Vec<Experience>)` writes (2-space indent, no trailing newline,
# UTF-8 unescaped, floats in shortest round-trip form, e.g. 1e-7 and 0.30000000000000004).
RUST_PRETTY = """[
  {
    "prompt": "Write a function to",
    "response": "fn add(a: i32, b: i32) -> i32 {\\n    a + b\\n}",
    "advantage": 0.375,
    "timestamp": 1717999000,
    "metadata": {}
  },
  {
    "prompt": "Écris une fonction",
    "response": "quote \\" and backslash \\\\ and tab \\t",
    "advantage": 0.30000000000000004,
    "timestamp": 1717999500,
    "metadata": {
      "domain": "web",
      "task": "t-1"
    }
  },
  {
    "prompt": "p",
    "response": "tiny",
    "advantage": 1e-7,
    "timestamp": 1718000000,
    "metadata": {}
  }
]"""

RUST_COMPACT = (
    '[{"prompt":"Write a function to","response":"x","advantage":2.0,"timestamp":1718000000,'
    '"metadata":{"k":"v"}},{"prompt":"q","response":"y","advantage":1.0,"timestamp":1717990000,"metadata":{}}]'
)


def fresh(**config) -> TrainingFreeGRPO:
    return TrainingFreeGRPO(quiet_config(**config), clock=FakeClock(), seed=1)


def filled(**config) -> TrainingFreeGRPO:
    lib = fresh(**config)
    lib.add_rollout_group([("p1", "a"), ("p1", "b"), ("p1", "c")], [1.0, 0.0, 0.5], metadata={"domain": "x"})
    lib.add_rollout_group([("p2", "d"), ("p2", "e")], [0.0, 2.0])
    lib.tag(lib.experience_library[-1], note="ü ✓")
    return lib


# -- the format -----------------------------------------------------------------------------------------------


def test_saved_file_is_the_spec_format(tmp_path):
    lib = filled()
    path = tmp_path / "lib.json"
    lib.save_to_file(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, list) and len(data) == 2
    for item, exp in zip(data, lib.experience_library):
        assert list(item) == FIELDS  # exactly the Rust struct's fields, nothing the Rust side would reject
        assert type(item["prompt"]) is str and type(item["response"]) is str
        assert type(item["advantage"]) is float  # an f64 (written with a decimal point or exponent)
        assert type(item["timestamp"]) is int and item["timestamp"] == NOW  # u64 Unix seconds
        assert all(type(k) is str and type(v) is str for k, v in item["metadata"].items())
        assert item == exp.to_dict()
    assert data[0]["metadata"] == {"domain": "x"}
    assert data[1]["metadata"] == {"note": "ü ✓"}


@pytest.mark.parametrize("text", [RUST_PRETTY, RUST_COMPACT], ids=["pretty", "compact"])
def test_loads_files_written_by_the_rust_reference(tmp_path, text):
    path = tmp_path / "rust.json"
    path.write_bytes(text.encode("utf-8"))
    lib = fresh()
    lib.load_from_file(path)
    expected = [Experience.from_dict(item) for item in json.loads(text)]
    assert sorted(lib.experience_library, key=lambda e: e.timestamp) == sorted(expected, key=lambda e: e.timestamp)
    assert lib.stats().total_loaded == len(expected) and lib.stats().total_stored == 0


def test_rust_pretty_file_fields_in_detail(tmp_path):
    path = tmp_path / "rust.json"
    path.write_text(RUST_PRETTY, encoding="utf-8")
    lib = fresh()
    lib.load_from_file(path)
    by_response = {e.response: e for e in lib.experience_library}
    code = by_response["fn add(a: i32, b: i32) -> i32 {\n    a + b\n}"]
    assert (code.prompt, code.advantage, code.timestamp, code.metadata) == (
        "Write a function to",
        0.375,
        1717999000,
        {},
    )
    french = by_response['quote " and backslash \\ and tab \t']
    assert french.prompt == "Écris une fonction"
    assert french.advantage == 0.1 + 0.2
    assert french.metadata == {"domain": "web", "task": "t-1"}
    assert by_response["tiny"].advantage == 1e-7
    # Oldest first, as the library keeps them.
    assert [e.timestamp for e in lib.experience_library] == [1717999000, 1717999500, 1718000000]


def test_round_trip_keeps_everything(tmp_path):
    lib = filled()
    path = tmp_path / "lib.json"
    lib.save_to_file(path)
    other = fresh()
    other.load_from_file(path)
    assert [e.to_dict() for e in other.experience_library] == [e.to_dict() for e in lib.experience_library]
    # And a second generation is byte-identical.
    again = tmp_path / "again.json"
    other.save_to_file(again)
    assert again.read_bytes() == path.read_bytes()


def test_unknown_fields_and_missing_metadata_are_tolerated(tmp_path):
    path = tmp_path / "extra.json"
    path.write_text(
        json.dumps(
            [
                {"prompt": "p", "response": "r", "advantage": 1, "timestamp": NOW, "metadata": {}, "id": 7, "x": [1]},
                {"prompt": "q", "response": "s", "advantage": 0.5, "timestamp": float(NOW)},
            ]
        )
    )
    lib = fresh()
    lib.load_from_file(path)
    assert [(e.prompt, e.advantage, e.timestamp, e.metadata) for e in lib.experience_library] == [
        ("p", 1.0, NOW, {}),
        ("q", 0.5, NOW, {}),
    ]
    assert all(type(e.advantage) is float and type(e.timestamp) is int for e in lib.experience_library)
    out = tmp_path / "out.json"
    lib.save_to_file(out)
    assert all(list(item) == FIELDS for item in json.loads(out.read_text()))  # unknown fields not kept


def test_load_replaces_content_keeps_counters_and_prunes(tmp_path):
    clock = FakeClock()
    lib = TrainingFreeGRPO(quiet_config(max_library_size=2, max_experience_age=3600), clock=clock)
    lib.add_rollout_group([("mine", "a"), ("mine", "b")], [1.0, 0.0])
    path = tmp_path / "in.json"
    path.write_text(
        json.dumps(
            [
                {"prompt": "f", "response": "stale", "advantage": 9.0, "timestamp": NOW - 3601, "metadata": {}},
                {"prompt": "f", "response": "low", "advantage": 0.1, "timestamp": NOW, "metadata": {}},
                {"prompt": "f", "response": "mid", "advantage": 0.5, "timestamp": NOW, "metadata": {}},
                {"prompt": "f", "response": "high", "advantage": 0.9, "timestamp": NOW, "metadata": {}},
            ]
        )
    )
    lib.load_from_file(path)
    assert sorted(e.response for e in lib.experience_library) == ["high", "mid"]
    stats = lib.stats()
    assert (stats.total_rollouts, stats.total_stored, stats.total_loaded, stats.total_pruned) == (2, 1, 4, 2)


def test_missing_file(tmp_path):
    lib = filled()
    before = snapshot(lib)
    with pytest.raises(LibraryNotFoundError, match="no library file"):
        lib.load_from_file(tmp_path / "nope.json")
    assert snapshot(lib) == before


# -- atomic writes ---------------------------------------------------------------------------------------------


def test_failed_json_save_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch):
    lib = filled()
    path = tmp_path / "lib.json"
    lib.save_to_file(path)
    old = path.read_bytes()
    lib.add_rollout_group([("p3", "new"), ("p3", "old")], [1.0, 0.0])

    calls = {"n": 0}
    real_encode = json.JSONEncoder.encode

    def crash_on_second_experience(self, o):
        calls["n"] += 1
        if calls["n"] == 2:  # part of the new file is already written when the "crash" comes
            raise OSError("simulated crash while writing")
        return real_encode(self, o)

    monkeypatch.setattr(json.JSONEncoder, "encode", crash_on_second_experience)
    with pytest.raises(OSError, match="simulated crash"):
        lib.save_to_file(path)
    monkeypatch.undo()

    assert calls["n"] == 2
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["lib.json"]
    lib.save_to_file(path)  # and the next save works
    assert len(json.loads(path.read_text())) == 3


def test_failed_sqlite_save_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch):
    from tfgrpo.core.store import SQLiteStore

    lib = filled()
    path = tmp_path / "lib.db"
    lib.save_to_file(path)
    old = path.read_bytes()
    lib.add_rollout_group([("p3", "new"), ("p3", "old")], [1.0, 0.0])

    def crash(self, *args, **kwargs):
        raise OSError("simulated crash while writing")

    monkeypatch.setattr(SQLiteStore, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        lib.save_to_file(path)
    monkeypatch.undo()

    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["lib.db"]
    check = fresh()
    check.load_from_file(path)
    assert check.library_size() == 2


def test_save_overwrites_atomically_and_repeatedly(tmp_path):
    lib = fresh()
    path = tmp_path / "lib.json"
    for i in range(5):
        lib.add_rollout_group([(f"p{i}", "good"), (f"p{i}", "bad")], [1.0, 0.0])
        lib.save_to_file(path)
        assert len(json.loads(path.read_text())) == i + 1
    assert os.listdir(tmp_path) == ["lib.json"]


@pytest.fixture
def umask():
    """Set the process umask for one test (`umask(0o027)`), restored after it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_saved_files_get_the_mode_open_would_give_them(tmp_path, umask):
    # mkstemp makes 0600 files, and the rename gave that to every file the user asked for.
    from tfgrpo.core.files import atomic_write
    from tfgrpo.semantic import LessonLibrary, Operation

    lib = fresh()
    lib.add_rollout_group([("p", "good"), ("p", "bad")], [1.0, 0.0])
    lessons = LessonLibrary()
    lessons.apply([Operation("add", "Check the units.")])
    for mask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        umask(mask)
        folder = tmp_path / oct(mask)
        folder.mkdir()
        lib.save_to_file(folder / "lib.json")
        lib.save_to_file(folder / "lib.db")
        lessons.export_json(folder / "lessons.json")
        lessons.export_text(folder / "lessons.txt")
        atomic_write(folder / "report.html", lambda f: f.write("<html></html>"))
        assert {p.name: mode(p) for p in folder.iterdir()} == dict.fromkeys(
            ["lib.json", "lib.db", "lessons.json", "lessons.txt", "report.html"], expected
        )
    # A file that is replaced keeps its own mode, as open(path, "w") keeps it.
    target = tmp_path / "kept.json"
    target.write_text("[]")
    target.chmod(0o640)
    umask(0o022)
    lib.save_to_file(target)
    assert mode(target) == 0o640 and len(json.loads(target.read_text())) == 1


# -- corrupted and foreign files -------------------------------------------------------------------------------

VALID_ITEM = {"prompt": "p", "response": "r", "advantage": 0.5, "timestamp": NOW, "metadata": {}}


def _with(**changes) -> str:
    item = dict(VALID_ITEM)
    for key, value in changes.items():
        if value is _DROP:
            del item[key]
        else:
            item[key] = value
    return json.dumps([VALID_ITEM, item])


_DROP = object()
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"

BAD_FILES = {
    "empty file": b"",
    "whitespace only": b"  \n",
    "truncated JSON": json.dumps([VALID_ITEM, VALID_ITEM]).encode()[:-20],
    "an object instead of an array": json.dumps({"experiences": [VALID_ITEM]}).encode(),
    "a bare number": b"42",
    "array of non-objects": b'[1, "two"]',
    "advantage is a string": _with(advantage="0.5").encode(),
    "advantage is null": _with(advantage=None).encode(),
    "advantage is NaN": _with(advantage=float("nan")).encode(),
    "advantage is Infinity": b'[{"prompt": "p", "response": "r", "advantage": Infinity, "timestamp": 1}]',
    "advantage is a bool": _with(advantage=True).encode(),
    "advantage too large for a float": _with(advantage=10**400).encode(),
    "advantage missing": _with(advantage=_DROP).encode(),
    "prompt is a number": _with(prompt=5).encode(),
    "response missing": _with(response=_DROP).encode(),
    "timestamp negative": _with(timestamp=-1).encode(),
    "timestamp fractional": _with(timestamp=1.5).encode(),
    "timestamp a string": _with(timestamp="1718000000").encode(),
    "metadata a list": _with(metadata=["a"]).encode(),
    "metadata with a number": _with(metadata={"step": 3}).encode(),
    "a PNG image": PNG,
    "invalid UTF-8": b'[{"prompt": "\xff\xfe"}]',
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_raises_and_leaves_library_unchanged(tmp_path, case):
    path = tmp_path / "bad.json"
    path.write_bytes(BAD_FILES[case])
    lib = filled()
    before = snapshot(lib)
    with pytest.raises(LibraryFormatError) as info:
        lib.load_from_file(path)
    assert isinstance(info.value, TFGRPOError)
    assert str(path) in str(info.value)  # the message says which file
    assert snapshot(lib) == before
    assert path.read_bytes() == BAD_FILES[case]


def test_bad_file_error_names_the_experience_and_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(_with(timestamp="soon"))
    with pytest.raises(LibraryFormatError, match=r"experience 1: field 'timestamp'"):
        fresh().load_from_file(path)


def _foreign_db(path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users(name) VALUES ('ada')")
    db.commit()
    db.close()


@pytest.mark.parametrize("suffix", [".json", ".db"])
def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path, suffix):
    path = tmp_path / f"someone_else{suffix}"
    _foreign_db(path)
    content = path.read_bytes()
    lib = filled()
    before = snapshot(lib)
    with pytest.raises(LibraryFormatError, match="not a tfgrpo library"):
        lib.load_from_file(path)
    assert snapshot(lib) == before
    assert path.read_bytes() == content  # reading must not convert it (e.g. to WAL mode)
    assert sorted(os.listdir(tmp_path)) == [path.name]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert db.execute("SELECT name FROM users").fetchall() == [("ada",)]
    db.close()


def test_truncated_sqlite_file_is_refused(tmp_path):
    good = tmp_path / "good.db"
    filled().save_to_file(good)
    bad = tmp_path / "bad.db"
    bad.write_bytes(good.read_bytes()[:1000])
    lib = filled()
    before = snapshot(lib)
    with pytest.raises(LibraryFormatError):
        lib.load_from_file(bad)
    assert snapshot(lib) == before


def test_sqlite_snapshot_round_trip(tmp_path):
    lib = filled(sampling_temperature=0.5)
    path = tmp_path / "snapshot.sqlite"
    lib.save_to_file(path)
    assert sorted(os.listdir(tmp_path)) == ["snapshot.sqlite"]  # one self-contained file
    other = fresh()
    other.load_from_file(path)
    assert [e.to_dict() for e in other.experience_library] == [e.to_dict() for e in lib.experience_library]
    assert other.stats().total_loaded == 2
    reopened = TrainingFreeGRPO.open(path)
    assert reopened.config == lib.config  # the snapshot carries config and counters
    assert reopened.stats().to_dict() == lib.stats().to_dict()
    reopened.close()
