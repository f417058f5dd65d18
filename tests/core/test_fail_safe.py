"""Files and inputs that fail safe (issue 10): a damaged file or a bad value gives a `TFGRPOError` and
leaves the library, in memory and on disk, exactly as it was; text that could never be saved is refused
where it enters; timestamps are what both formats hold; loading keeps the file's order and never
changes the file; a killed save leaves no temp file behind; `get` finds an experience by id."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.core import NOW, FakeClock, quiet_config, snapshot
from tfgrpo import (
    ConfigError,
    GRPOConfig,
    InvalidRolloutsError,
    LibraryFormatError,
    TFGRPOError,
    TrainingFreeGRPO,
)
from tfgrpo.core.experience import MAX_TIMESTAMP, check_text, clean_text
from tfgrpo.core.library import ExperienceLibrary
from tfgrpo.core.sampler import AdvantageSampler


def fresh(**config) -> TrainingFreeGRPO:
    return TrainingFreeGRPO(quiet_config(**config), clock=FakeClock(), seed=1)


def fill(lib: TrainingFreeGRPO) -> TrainingFreeGRPO:
    lib.add_rollout_group([("p1", "a"), ("p1", "b"), ("p1", "c")], [1.0, 0.0, 0.5], metadata={"domain": "x"})
    lib.add_rollout_group([("p2", "d"), ("p2", "e")], [0.0, 2.0])
    lib.tag(lib.experience_library[-1], note="ü ✓")
    return lib


def rows(path: Path) -> tuple[list, list]:
    """Everything stored in a library file (meta and experiences), read without changing it."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        meta = sorted(db.execute("SELECT key, value FROM meta"))
        exps = list(db.execute("SELECT * FROM experiences ORDER BY id"))
    finally:
        db.close()
    return meta, exps


@pytest.fixture
def stored(tmp_path):
    """A write-through library with some history, and a function telling what it holds, in memory and
    on disk."""
    lib = fill(TrainingFreeGRPO(quiet_config(), store=tmp_path / "mine.db", clock=FakeClock(), seed=1))

    def state():
        return snapshot(lib), rows(tmp_path / "mine.db")

    yield lib, state
    lib.close()


# -- damaged SQLite files ---------------------------------------------------------------------------------------

GOOD_ROW = (1, "p", "r", 0.5, NOW, None)


def crafted_db(path: Path, rows=(GOOD_ROW,), meta=None, typed: bool = True, key: str = "PRIMARY KEY") -> Path:
    """A library file as another program (or a damaged disk) may leave it. `typed=False` declares the
    columns without types or constraints, so any value (NULL, an integer prompt, a BLOB) stays as it is;
    `key=""` lets ids repeat, as a damaged index may show them."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value)")
    columns = (
        f"id INTEGER {key}, prompt TEXT, response TEXT, advantage REAL, timestamp INTEGER, metadata TEXT"
        if typed
        else f"id INTEGER {key}, prompt, response, advantage, timestamp, metadata"
    )
    db.execute(f"CREATE TABLE experiences ({columns})")
    base = {"format": "tfgrpo-library", "schema_version": "1", "counters": json.dumps({"total_stored": 1})}
    db.executemany("INSERT INTO meta VALUES (?, ?)", list({**base, **(meta or {})}.items()))
    db.executemany("INSERT INTO experiences VALUES (?, ?, ?, ?, ?, ?)", list(rows))
    db.commit()
    db.close()
    return path


def bad_row(**changes) -> list[tuple]:
    fields = dict(zip(["id", "prompt", "response", "advantage", "timestamp", "metadata"], GOOD_ROW))
    fields.update(changes, id=2)
    return [GOOD_ROW, tuple(fields.values())]


BAD_DBS = {
    "advantage is text": dict(rows=bad_row(advantage="high")),
    "advantage is NULL": dict(rows=bad_row(advantage=None), typed=False),
    "advantage is a BLOB": dict(rows=bad_row(advantage=b"\x00\x01"), typed=False),
    "advantage is NaN": dict(rows=bad_row(advantage=float("nan")), typed=False),
    "prompt is NULL": dict(rows=bad_row(prompt=None), typed=False),
    "prompt is an integer": dict(rows=bad_row(prompt=5), typed=False),
    "prompt is a BLOB": dict(rows=bad_row(prompt=b"p"), typed=False),
    "response is NULL": dict(rows=bad_row(response=None), typed=False),
    "response is a BLOB": dict(rows=bad_row(response=b"\xff\xfe"), typed=False),
    "timestamp is text": dict(rows=bad_row(timestamp="soon")),
    "timestamp is negative": dict(rows=bad_row(timestamp=-5)),
    "timestamp is fractional": dict(rows=bad_row(timestamp=1.5)),
    "timestamp beyond 2**63": dict(rows=bad_row(timestamp=1e19)),
    "timestamp is NULL": dict(rows=bad_row(timestamp=None), typed=False),
    "metadata with a number": dict(rows=bad_row(metadata='{"step": 3}')),
    "metadata a list": dict(rows=bad_row(metadata='["a"]')),
    "metadata not JSON": dict(rows=bad_row(metadata="{oops")),
    "metadata a BLOB": dict(rows=bad_row(metadata=b"{}"), typed=False),
    "metadata an integer": dict(rows=bad_row(metadata=7), typed=False),
    "metadata with a lone surrogate escape": dict(rows=bad_row(metadata='{"k": "\\ud800"}')),
    "prompt not UTF-8": dict(rows=bad_row(prompt=b"\xed\xa0\x80"), typed=False),  # made text below
    "an id repeated": dict(rows=[GOOD_ROW, GOOD_ROW], key=""),
    "an id not a number": dict(rows=[GOOD_ROW, ("two", "p", "r", 0.5, NOW, None)], key=""),
    "config a list": dict(meta={"config": "[1, 2]"}),
    "config not JSON": dict(meta={"config": "{"}),
    "config with a bad value": dict(meta={"config": json.dumps({"group_size": "eight"})}),
    "counters a string": dict(meta={"counters": '"many"'}),
    "counter not a number": dict(meta={"counters": json.dumps({"total_rollouts": "x"})}),
    "counter negative": dict(meta={"counters": json.dumps({"total_rollouts": -1})}),
    "progress a list": dict(meta={"progress": "[1]"}),
    "schema version not a number": dict(meta={"schema_version": "abc"}),
    "schema version from the future": dict(meta={"schema_version": "99"}),
    "deeply nested config": dict(meta={"config": "[" * 100_000 + "]" * 100_000}),
}


def make_bad_db(tmp_path: Path, case: str) -> Path:
    path = crafted_db(tmp_path / "bad.db", **BAD_DBS[case])
    if case == "prompt not UTF-8":  # bytes SQLite calls text: a surrogate's (invalid) UTF-8 form
        db = sqlite3.connect(path)
        db.execute("UPDATE experiences SET prompt = CAST(prompt AS TEXT) WHERE id = 2")
        db.commit()
        db.close()
    return path


# Loading takes a file's experiences only (the library keeps its own config), so a stored config whose
# values cannot work matters only when the file is opened as a library.
LOAD_CASES = [case for case in BAD_DBS if case != "config with a bad value"]


@pytest.mark.parametrize("case", LOAD_CASES, ids=LOAD_CASES)
def test_loading_a_damaged_db_changes_nothing_in_memory_or_on_disk(tmp_path, stored, case):
    path = make_bad_db(tmp_path, case)
    content, mtime = path.read_bytes(), path.stat().st_mtime_ns
    lib, state = stored
    before = state()
    with pytest.raises(LibraryFormatError) as info:
        lib.load_from_file(path)
    assert str(path) in str(info.value)
    assert state() == before
    assert (path.read_bytes(), path.stat().st_mtime_ns) == (content, mtime)
    lib.add_rollout_group([("p3", "f"), ("p3", "g")], [1.0, 0.0])  # and it carries on
    assert lib.library_size() == 3


@pytest.mark.parametrize("case", list(BAD_DBS), ids=list(BAD_DBS))
def test_opening_a_damaged_db_is_a_clear_error(tmp_path, case):
    path = make_bad_db(tmp_path, case)
    with pytest.raises(LibraryFormatError) as info:
        TrainingFreeGRPO.open(path)
    assert str(path) in str(info.value)


def test_the_same_rows_in_a_good_file_load(tmp_path):
    """The crafted files above differ from a good one only in the damaged value."""
    path = crafted_db(tmp_path / "good.db", rows=bad_row(), typed=False)
    lib = fresh()
    lib.load_from_file(path)
    assert [e.to_dict() for e in lib.experience_library] == [
        {"prompt": "p", "response": "r", "advantage": 0.5, "timestamp": NOW, "metadata": {}}
    ] * 2
    with TrainingFreeGRPO.open(path) as opened:
        assert opened.library_size() == 2 and opened.stats().total_stored == 1


@pytest.mark.parametrize(
    "case", ["config a list", "counter not a number", "advantage is text", "schema version not a number"]
)
def test_tfgrpo_stats_on_a_damaged_db_is_an_error_not_a_traceback(tmp_path, capsys, case):
    from tfgrpo.cli import main

    path = make_bad_db(tmp_path, case)
    assert main(["stats", "--library", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tfgrpo: error: ") and str(path) in err and "Traceback" not in err


@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.25])
def test_a_truncated_db_is_refused_and_changes_nothing(tmp_path, stored, fraction):
    big = fresh()
    for i in range(400):  # several pages of experiences
        big.add_rollout_group([(f"question {i}", "an answer " * 20), (f"question {i}", "no")], [1.0, 0.0])
    good = tmp_path / "good.db"
    big.save_to_file(good)
    bad = tmp_path / "truncated.db"
    bad.write_bytes(good.read_bytes()[: int(good.stat().st_size * fraction)])
    lib, state = stored
    before = state()
    with pytest.raises(LibraryFormatError, match="truncated.db"):
        lib.load_from_file(bad)
    assert state() == before


def test_a_failure_in_the_middle_of_swapping_in_restores_the_old_content(tmp_path, monkeypatch, stored):
    source = fresh()
    for i in range(10):
        source.add_rollout_group([(f"q{i}", "good"), (f"q{i}", "bad")], [1.0, 0.0])
    path = tmp_path / "source.json"
    source.save_to_file(path)
    lib, state = stored
    before = state()
    real_add_many, calls = AdvantageSampler.add_many, []

    def interrupted(self, experiences):
        calls.append(len(experiences))
        if len(calls) == 1:  # e.g. Ctrl-C half-way through the swap
            real_add_many(self, experiences[: len(experiences) // 2])
            raise KeyboardInterrupt
        real_add_many(self, experiences)

    monkeypatch.setattr(AdvantageSampler, "add_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lib.load_from_file(path)
    monkeypatch.undo()
    assert len(calls) == 2  # it was interrupted after the old content had gone, and put it back
    assert state() == before


# -- damaged JSON files -------------------------------------------------------------------------------------------

ITEM = {"prompt": "p", "response": "r", "advantage": 0.5, "timestamp": NOW, "metadata": {}}


def with_item(**changes) -> bytes:
    return json.dumps([ITEM, {**ITEM, **changes}], ensure_ascii=True).encode()


BAD_JSON = {
    "deeply nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "deeply nested metadata": b'[{"prompt": "p", "response": "r", "advantage": 0.5, "timestamp": 1, "metadata": '
    + b'{"a": ' * 50_000
    + b"1"
    + b"}" * 50_001
    + b"]",
    "a number with too many digits": b"[" + b"1" * 5000 + b"]",
    "timestamp 2**64": with_item(timestamp=2**64),
    "timestamp 2**63": with_item(timestamp=2**63),
    "timestamp -1": with_item(timestamp=-1),
    "timestamp 1e30": with_item(timestamp=1e30),
    "metadata an empty list": with_item(metadata=[]),
    "lone surrogate in the prompt": with_item(prompt="a\ud800b"),
    "lone surrogate in the response": with_item(response="\udfff"),
    "lone surrogate in a metadata value": with_item(metadata={"k": "\ud83d"}),
    "lone surrogate in a metadata key": with_item(metadata={"\udc00": "v"}),
    "a UTF-8 byte order mark": b"\xef\xbb\xbf" + with_item(),
    "a bit flip making invalid UTF-8": with_item(prompt="é").replace(b"\\u00e9", b"\xc3\x29"),
    "truncated to 90%": json.dumps([ITEM] * 10).encode()[: int(len(json.dumps([ITEM] * 10)) * 0.9)],
}


@pytest.mark.parametrize("case", list(BAD_JSON), ids=list(BAD_JSON))
def test_loading_a_damaged_json_file_changes_nothing(tmp_path, stored, case):
    path = tmp_path / "bad.json"
    path.write_bytes(BAD_JSON[case])
    lib, state = stored
    before = state()
    with pytest.raises(LibraryFormatError) as info:
        lib.load_from_file(path)
    assert str(path) in str(info.value)
    assert state() == before
    assert path.read_bytes() == BAD_JSON[case]


def test_surrogate_errors_name_the_experience_and_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(with_item(response="ok \ud800"))
    with pytest.raises(LibraryFormatError, match=r"experience 1: field 'response' contains a lone surrogate U\+D800"):
        fresh().load_from_file(path)


@pytest.mark.parametrize(
    ("drop", "said"),
    [(("timestamp",), "field 'timestamp' is"), (("prompt", "advantage"), "fields 'prompt', 'advantage' are")],
)
def test_missing_fields_are_named_as_missing(tmp_path, drop, said):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([ITEM, {k: v for k, v in ITEM.items() if k not in drop}]))
    with pytest.raises(LibraryFormatError, match=f"experience 1: {said} missing"):
        fresh().load_from_file(path)


@pytest.mark.parametrize("name", ["lib.json", "lib.db"])
def test_a_save_to_a_folder_or_into_a_missing_one_is_a_config_error_that_writes_nothing(tmp_path, name):
    lib = fill(fresh())
    (tmp_path / name).mkdir()
    with pytest.raises(ConfigError, match="is a folder; name a file to write"):
        lib.save_to_file(tmp_path / name)
    with pytest.raises(ConfigError, match="there is no folder"):
        lib.save_to_file(tmp_path / "missing" / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name] and not any((tmp_path / name).iterdir())


def test_a_load_directory_is_refused(tmp_path):
    with pytest.raises(LibraryFormatError, match="folder"):
        fresh().load_from_file(tmp_path)


def test_a_surrogate_pair_escape_is_a_character_and_loads(tmp_path):
    path = tmp_path / "emoji.json"
    path.write_bytes(with_item(prompt="smile \ud83d\ude00"))  # written by json as the pair \\ud83d\\ude00
    lib = fresh()
    lib.load_from_file(path)
    assert lib.experience_library[-1].prompt == "smile \U0001f600"
    lib.save_to_file(tmp_path / "again.json")
    lib.save_to_file(tmp_path / "again.db")


# -- bit flips ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".db"])
def test_every_bit_flip_loads_cleanly_or_is_a_clear_error(tmp_path, suffix):
    """Flip one bit at a time at seeded positions: the file loads (and what loaded can be saved) or
    the load raises a TFGRPOError and the library is unchanged; never another exception. A flipped
    .db is also opened as a library."""
    source = fill(fresh())
    source.add_rollout_group([("Écris ✓", "réponse ü"), ("Écris ✓", "non")], [1.0, 0.0], metadata={"lang": "fr"})
    good = tmp_path / f"good{suffix}"
    source.save_to_file(good)
    content = good.read_bytes()
    rng = random.Random(20240610)
    # For SQLite, half in the first page (header and schema), where a flip changes the most.
    first = min(len(content), 4096 if suffix == ".db" else len(content))
    positions = rng.sample(range(first), 40) + rng.sample(range(len(content)), 40)
    lib = fill(fresh())
    before = snapshot(lib)
    outcomes = {"loaded": 0, "refused": 0}
    for n, pos in enumerate(positions):
        flipped = bytearray(content)
        flipped[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{n}{suffix}"
        path.write_bytes(bytes(flipped))
        try:
            lib.load_from_file(path)
        except TFGRPOError:
            outcomes["refused"] += 1
            assert snapshot(lib) == before, f"byte {pos}"
        else:
            outcomes["loaded"] += 1
            lib.save_to_file(tmp_path / "resaved.json")  # what was accepted can be written
            lib.save_to_file(tmp_path / "resaved.db")
            lib = fill(fresh())
            before = snapshot(lib)
        if suffix == ".db":
            try:
                TrainingFreeGRPO.open(path).close()
            except TFGRPOError:
                pass
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == len(positions)


def test_a_db_whose_table_name_is_not_text_is_refused(tmp_path):
    """What one bit flip in the schema record did: `TypeError` before."""
    path = crafted_db(tmp_path / "flipped.db")
    db = sqlite3.connect(path)
    db.execute("PRAGMA writable_schema=ON")
    db.execute("UPDATE sqlite_master SET name = CAST(name AS BLOB) WHERE name = 'meta'")
    db.commit()
    db.close()
    with pytest.raises(LibraryFormatError, match="table names are not text"):
        fresh().load_from_file(path)
    with pytest.raises(LibraryFormatError, match="table names are not text"):
        TrainingFreeGRPO.open(path)


def test_a_db_whose_schema_is_not_utf8_is_refused(tmp_path):
    """Another bit flip: SQLite's error about the schema quotes bytes that are not UTF-8, which Python's
    sqlite3 raised as `UnicodeDecodeError`."""
    path = crafted_db(tmp_path / "flipped.db")
    db = sqlite3.connect(path)
    db.execute("PRAGMA writable_schema=ON")
    db.execute(
        "UPDATE sqlite_master SET sql = CAST(X'435245415445205441424c45206d65746120a0' AS TEXT) WHERE name='meta'"
    )
    db.commit()
    db.close()
    with pytest.raises(LibraryFormatError, match="not a usable SQLite library"):
        fresh().load_from_file(path)
    with pytest.raises(LibraryFormatError, match="not a usable SQLite library"):
        TrainingFreeGRPO.open(path)


# -- bad values through the API --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rollouts, rewards, message",
    [
        (None, [1.0, 0.0], "rollouts must be a list"),
        (5, [1.0, 0.0], "rollouts must be a list"),
        ("pp", [1.0, 0.0], "rollouts must be a list"),
        ([("p", "a"), ("p", "b")], None, "rewards must be a list"),
        ([("p", "a"), ("p", "b")], 1.0, "rewards must be a list"),
        ([("p\ud800", "a"), ("p", "b")], [1.0, 0.0], r"rollout 0 prompt contains a lone surrogate U\+D800 at index 1"),
        ([("p", "a"), ("p", "\udcff")], [1.0, 0.0], r"rollout 1 response contains a lone surrogate"),
    ],
)
def test_bad_rollouts_are_refused_and_change_nothing(stored, rollouts, rewards, message):
    lib, state = stored
    before = state()
    with pytest.raises(InvalidRolloutsError, match=message):
        lib.add_rollout_group(rollouts, rewards)
    assert state() == before


def test_a_bad_group_in_a_batch_changes_nothing(stored):
    lib, state = stored
    before = state()
    with pytest.raises(InvalidRolloutsError, match="group 1"):
        lib.add_rollout_groups([([("p", "a"), ("p", "b")], [1.0, 0.0], None), None])
    assert state() == before


@pytest.mark.parametrize("metadata", [{"k": "\ud800"}, {"\udbff": "v"}])
def test_surrogates_in_metadata_are_refused_everywhere(stored, metadata):
    lib, state = stored
    before = state()
    with pytest.raises(InvalidRolloutsError, match="lone surrogate"):
        lib.add_rollout_group([("p", "a"), ("p", "b")], [1.0, 0.0], metadata=metadata)
    with pytest.raises(InvalidRolloutsError, match="lone surrogate"):
        lib.tag(lib.experience_library[0], **metadata)
    with pytest.raises(InvalidRolloutsError, match="lone surrogate"):
        lib.experience_library[0].metadata = metadata
    assert state() == before


def test_cleaned_model_output_is_stored_and_saved(tmp_path):
    """The loop's rule for model output: clean, then store. Everything stored can be saved."""
    broken = "half an emoji \ud83d and a pair \ud83d\ude00"
    cleaned = clean_text(broken)
    assert cleaned == "half an emoji \ufffd and a pair \U0001f600"
    assert check_text(cleaned, "response") == cleaned
    for text in ("plain ascii", "déjà vu ✓", ""):
        assert clean_text(text) is text
    lib = fresh()
    lib.add_rollout_group([("p", cleaned), ("p", "worse")], [1.0, 0.0])
    for name in ("lib.json", "lib.db"):
        lib.save_to_file(tmp_path / name)
        again = fresh()
        again.load_from_file(tmp_path / name)
        assert again.experience_library[0].response == cleaned


@pytest.mark.parametrize("data", [None, [("group_size", 8)], "group_size=8", 8])
def test_config_from_something_not_a_dict(data):
    with pytest.raises(ConfigError, match="needs a dict"):
        GRPOConfig.from_dict(data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt=None), "prompt must be a string"),
        (dict(prompt=3), "prompt must be a string"),
        (dict(prompt="p", k=-1), "k must be a whole number >= 0"),
        (dict(prompt="p", k=1.5), "k must be a whole number >= 0"),
        (dict(prompt="p", k=True), "k must be a whole number >= 0"),
        (dict(prompt="p", where={"domain": 1}), "where must map str to str"),
        (dict(prompt="p", where="domain=x"), "where must be a dict"),
    ],
)
def test_bad_prompt_queries_are_refused(stored, kwargs, message):
    lib, _ = stored
    with pytest.raises(TFGRPOError, match=message):
        lib.get_experiences_for_prompt(**kwargs)
    assert [e.response for e in lib.get_experiences_for_prompt("p", k=0)] == []
    assert [e.response for e in lib.get_experiences_for_prompt("p1", k=1)] == ["a"]


# -- timestamps ------------------------------------------------------------------------------------------------------


def test_the_largest_timestamp_both_formats_hold_round_trips(tmp_path):
    assert MAX_TIMESTAMP == 2**63 - 1
    path = tmp_path / "edge.json"
    path.write_bytes(json.dumps([{**ITEM, "timestamp": MAX_TIMESTAMP}, {**ITEM, "timestamp": 0}]).encode())
    lib = TrainingFreeGRPO(quiet_config(), clock=FakeClock(MAX_TIMESTAMP))
    lib.load_from_file(path)
    assert [e.timestamp for e in lib.experience_library] == [MAX_TIMESTAMP]  # 0 is stale by then
    for name in ("edge.db", "edge-again.json"):
        lib.save_to_file(tmp_path / name)
        again = TrainingFreeGRPO(quiet_config(), clock=FakeClock(MAX_TIMESTAMP))
        again.load_from_file(tmp_path / name)
        assert [e.timestamp for e in again.experience_library] == [MAX_TIMESTAMP]


@pytest.mark.parametrize("now", [2**63, 2**64, -1])
def test_a_clock_outside_the_range_is_refused(now):
    lib = fill(fresh())
    before = snapshot(lib)
    lib._clock = FakeClock(now)
    with pytest.raises(TFGRPOError, match=r"clock's time .* must be whole Unix seconds in \[0, 2\*\*63 - 1\]"):
        lib.add_rollout_group([("p", "a"), ("p", "b")], [1.0, 0.0])
    lib._clock = FakeClock()
    assert snapshot(lib) == before


# -- order -------------------------------------------------------------------------------------------------------------


def test_loading_keeps_the_files_order_and_saving_writes_it_back(tmp_path):
    stamps = [NOW - 10, NOW - 300, NOW, NOW - 300, NOW - 20]
    items = [{**ITEM, "response": f"r{i}", "timestamp": t} for i, t in enumerate(stamps)]
    path = tmp_path / "unordered.json"
    path.write_text(json.dumps(items))
    lib = fresh()
    lib.load_from_file(path)
    assert [e.response for e in lib.experience_library] == ["r0", "r1", "r2", "r3", "r4"]
    for name in ("again.json", "again.db"):
        lib.save_to_file(tmp_path / name)
        other = fresh()
        other.load_from_file(tmp_path / name)
        assert [e.to_dict() for e in other.experience_library] == items
    assert json.loads((tmp_path / "again.json").read_text()) == items


def test_order_survives_a_clock_that_went_backwards_through_a_store(tmp_path):
    clock = FakeClock()
    path = tmp_path / "lib.db"
    with TrainingFreeGRPO(quiet_config(), store=path, clock=clock) as lib:
        for i, step in enumerate([0, -100, 50]):
            clock.advance(step)
            lib.add_rollout_group([(f"p{i}", "good"), (f"p{i}", "bad")], [1.0, 0.0])
        order = [(e.id, e.prompt) for e in lib.experience_library]
    assert [p for _, p in order] == ["p0", "p1", "p2"]
    with TrainingFreeGRPO.open(path, clock=clock) as reopened:
        assert [(e.id, e.prompt) for e in reopened.experience_library] == order
        assert reopened.get(order[1][0]).prompt == "p1"


def test_an_out_of_order_library_still_prunes_every_stale_experience(tmp_path):
    """The stale one sits behind a fresher one: it must go at the next update, not when it reaches the head."""
    items = [{**ITEM, "response": "fresh", "timestamp": NOW}, {**ITEM, "response": "older", "timestamp": NOW - 50}]
    path = tmp_path / "unordered.json"
    path.write_text(json.dumps(items))
    clock = FakeClock()
    lib = TrainingFreeGRPO(quiet_config(max_experience_age=100), clock=clock)
    lib.load_from_file(path)
    clock.advance(60)  # "older" is 110 s old now, "fresh" 60 s
    lib.add_rollout_group([("q", "new"), ("q", "bad")], [1.0, 0.0])
    assert [e.response for e in lib.experience_library] == ["fresh", "new"]
    assert lib.stats().total_pruned == 1


def test_oldest_policy_evicts_the_oldest_timestamp_whatever_the_order(tmp_path):
    stamps = {"b": NOW - 10, "a": NOW - 30, "c": NOW - 20}
    path = tmp_path / "unordered.json"
    path.write_text(json.dumps([{**ITEM, "response": r, "timestamp": t} for r, t in stamps.items()]))
    lib = fresh(max_library_size=3, eviction_policy="oldest")
    lib.load_from_file(path)
    lib.add_rollout_group([("q", "new"), ("q", "bad")], [1.0, 0.0])
    assert [e.response for e in lib.experience_library] == ["b", "c", "new"]  # "a" was the oldest
    lib.add_rollout_group([("q", "newer"), ("q", "bad")], [1.0, 0.0])
    assert [e.response for e in lib.experience_library] == ["b", "new", "newer"]


# -- loading never changes the source --------------------------------------------------------------------------------


def test_loading_a_db_snapshot_leaves_the_file_and_folder_as_they_were(tmp_path):
    path = tmp_path / "snapshot.db"
    fill(fresh()).save_to_file(path)
    content, mtime = path.read_bytes(), path.stat().st_mtime_ns
    lib = fresh()
    lib.load_from_file(path)
    assert lib.library_size() == 2
    assert (path.read_bytes(), path.stat().st_mtime_ns) == (content, mtime)
    assert os.listdir(tmp_path) == ["snapshot.db"]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    db.close()


def test_loading_a_live_library_leaves_its_file_unchanged(tmp_path):
    path = tmp_path / "live.db"
    writer = fill(TrainingFreeGRPO(quiet_config(), store=path, clock=FakeClock()))
    content, mtime = path.read_bytes(), path.stat().st_mtime_ns
    reader = fresh()
    reader.load_from_file(path)  # while the writer holds it open, with groups in its WAL
    assert [e.to_dict() for e in reader.experience_library] == [e.to_dict() for e in writer.experience_library]
    assert (path.read_bytes(), path.stat().st_mtime_ns) == (content, mtime)
    writer.add_rollout_group([("p9", "more"), ("p9", "less")], [1.0, 0.0])  # the writer carries on
    writer.close()
    with TrainingFreeGRPO.open(path) as again:
        assert again.library_size() == 3


# -- a killed save leaves nothing behind -----------------------------------------------------------------------------

SAVER = textwrap.dedent(
    """
    import json, sys
    from tfgrpo import TrainingFreeGRPO
    from tfgrpo.core.store import SQLiteStore

    target = sys.argv[1]
    lib = TrainingFreeGRPO()
    for i in range(50):
        lib.add_rollout_group([(f"p{i}", "new"), (f"p{i}", "bad")], [1.0, 0.0])

    def stop_here():
        print("mid-save", flush=True)
        sys.stdin.readline()  # blocks until killed

    if target.endswith(".json"):
        real, calls = json.JSONEncoder.encode, []
        def encode(self, o):
            calls.append(o)
            if len(calls) == 10:
                stop_here()
            return real(self, o)
        json.JSONEncoder.encode = encode
    else:
        real_replace = SQLiteStore.replace
        def replace(self, experiences, counters):
            real_replace(self, experiences, counters)
            stop_here()
        SQLiteStore.replace = replace
    lib.save_to_file(target)
    """
)


@pytest.mark.parametrize("name", ["lib.json", "lib.db"])
def test_a_killed_save_leaves_no_temp_file_after_the_next_save(tmp_path, name):
    target = tmp_path / name
    old = fill(fresh())
    old.save_to_file(target)
    content = target.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "mid-save\n"
        orphans = sorted(set(os.listdir(tmp_path)) - {name})
        assert orphans and all(n.startswith(f".{name}.{child.pid}.") for n in orphans)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == content  # the old file is intact
    assert set(orphans) <= set(os.listdir(tmp_path))  # the kill left its temp file(s)

    old.add_rollout_group([("p3", "f"), ("p3", "g")], [1.0, 0.0])
    old.save_to_file(target)  # the next save of that target removes them
    assert os.listdir(tmp_path) == [name]
    again = fresh()
    again.load_from_file(target)
    assert again.library_size() == 3


def test_a_save_removes_only_temp_files_of_dead_processes_for_its_target(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    names = {
        f".lib.json.{dead}.abc123_x.tmp": False,  # a killed save of lib.json: removed
        f".lib.json.{os.getpid()}.abc123_x.tmp": True,  # a save still running (this process): kept
        f".lib.json.{os.getppid()}.abc123_x.tmp": True,  # another live process: kept
        f".lib.json.bak.{dead}.abc123_x.tmp": True,  # another target's
        f".lib.json.{dead}.notes": True,  # not a temp file
        "lib.json.old": True,
    }
    for n in names:
        (tmp_path / n).write_text("x")
    fill(fresh()).save_to_file(tmp_path / "lib.json")
    assert sorted(os.listdir(tmp_path)) == sorted([n for n, kept in names.items() if kept] + ["lib.json"])


# -- get by id ----------------------------------------------------------------------------------------------------


def test_get_finds_every_experience_by_id_without_a_scan(tmp_path, monkeypatch, stored):
    lib, _ = stored
    lib.add_rollout_group([("p3", "f"), ("p3", "g")], [1.0, 0.0])
    everything = list(lib.experience_library)

    def no_scan(self):
        raise AssertionError("get() must not iterate the library")

    monkeypatch.setattr(ExperienceLibrary, "__iter__", no_scan)
    for exp in everything:
        assert lib.get(exp.id) is exp
    assert lib.get(10**9) is None and lib.get(None) is None
    removed = everything[0]
    lib.remove(removed.id)
    assert lib.get(removed.id) is None
    monkeypatch.undo()

    path = tmp_path / "copy.json"
    lib.save_to_file(path)
    other = fresh()
    other.load_from_file(path)
    assert [other.get(e.id) for e in other.experience_library] == list(other.experience_library)
    assert other.get(max(e.id for e in other.experience_library) + 1) is None
