"""The lesson library: validation and repair through the real parse + apply path, versions, rollback,
diff, persistence, import and export."""

import json
import logging
import sqlite3

import pytest

from tfgrpo import TrainingFreeGRPO
from tfgrpo.errors import ConfigError, LibraryFormatError, LibraryNotFoundError
from tfgrpo.semantic import LessonLibrary, Operation, parse_operations


def apply_answer(lib, answer, **kwargs):
    """What the trainer does with an LLM answer: parse it, then apply what was read."""
    parsed = parse_operations(answer)
    return parsed, lib.apply(parsed.operations, **kwargs)


@pytest.fixture
def lib(tmp_path):
    library = LessonLibrary(tmp_path / "lessons.db", max_words=8)
    library.apply([Operation("add", "Check the units."), Operation("add", "Simplify before solving.")])
    yield library
    library.close()


def test_ids_are_stable_and_never_reused(lib):
    assert lib.lessons == {"G0": "Check the units.", "G1": "Simplify before solving."}
    lib.apply([Operation("delete", id="G1"), Operation("add", "Verify the answer.")])
    assert lib.lessons == {"G0": "Check the units.", "G2": "Verify the answer."}
    lib.rollback(1)
    lib.apply([Operation("add", "Draw a diagram.")])
    assert "G3" in lib and lib["G3"] == "Draw a diagram." and lib["G1"] == "Simplify before solving."


def test_render_puts_the_instruction_and_id_lines(lib):
    text = lib.render()
    assert text.splitlines()[0] == lib.instruction and "MUST" in lib.instruction
    assert text.splitlines()[1:] == ["[G0]. Check the units.", "[G1]. Simplify before solving."]
    assert LessonLibrary().render() == "" and LessonLibrary().render_list() == "(no lessons yet)"


def test_operations_on_unknown_ids_are_repaired_or_skipped(lib, caplog):
    answer = """[
        {"operation": "delete", "id": "G42"},
        {"operation": "update", "id": "G17", "text": "Estimate first."},
        {"operation": "update", "text": "Read twice."},
        {"operation": "delete"}
    ]"""
    with caplog.at_level(logging.WARNING, logger="tfgrpo.semantic"):
        _, result = apply_answer(lib, answer)
    reasons = [s.reason for s in result.skipped]
    assert reasons[0] == "delete of G42, which does not exist"
    assert "update of G17, which does not exist; added as a new lesson" in reasons[1]
    assert result.skipped[1].repaired == Operation("add", "Estimate first.", id="G2")
    assert "update without a lesson id; added" in reasons[2]
    assert reasons[3] == "delete without a lesson id"
    assert lib.lessons == {
        "G0": "Check the units.",
        "G1": "Simplify before solving.",
        "G2": "Estimate first.",
        "G3": "Read twice.",
    }
    assert "G42, which does not exist" in caplog.text  # logged, not only recorded


def test_merges_with_invented_ids(lib):
    lib.apply([Operation("add", "Read twice.")])  # G2
    _, result = apply_answer(lib, '[{"operation": "merge", "ids": ["G0", "G9", "G2"], "text": "Check units, reread."}]')
    assert result.applied == [Operation("merge", "Check units, reread.", id="G0", ids=("G0", "G2"))]
    assert "do not exist (G9)" in result.skipped[0].reason
    assert lib.lessons == {"G0": "Check units, reread.", "G1": "Simplify before solving."}

    _, result = apply_answer(lib, '[{"operation": "merge", "ids": ["G1", "G77"], "text": "Simplify, then solve."}]')
    assert result.applied == [Operation("update", "Simplify, then solve.", id="G1")]
    assert "updated it instead" in result.skipped[0].reason

    _, result = apply_answer(lib, '[{"operation": "merge", "ids": ["G50", "G51"], "text": "Plan the steps."}]')
    assert result.applied[0].kind == "add" and lib[result.applied[0].id] == "Plan the steps."
    assert "added as a new lesson" in result.skipped[0].reason
    assert len(lib) == 3


def test_empty_and_overlong_lessons(lib):
    answer = json.dumps(
        [
            {"operation": "add", "text": "   "},
            {"operation": "add", "text": ""},
            {"operation": "update", "id": "G0", "text": None},
            {
                "operation": "add",
                "text": "Always write the formula. Then substitute the numbers and the units carefully.",
            },
            {"operation": "add", "text": " ".join(["word"] * 20)},
            {"operation": "add", "text": "..."},  # a small critic copying the prompt's placeholder
            {"operation": "add", "text": " -- "},
            {"operation": "add", "text": "15 + 17 = 22"},  # not general, but it can teach the format
            {"operation": "add", "text": "Überprüfe die Einheiten."},  # words in any script are words
        ]
    )
    _, result = apply_answer(lib, answer)
    reasons = [s.reason for s in result.skipped]
    assert reasons[:3] == ["add with an empty lesson", "add with an empty lesson", "update with an empty lesson"]
    assert "had 12 words (limit 8); shortened" in reasons[3]
    assert reasons[5:] == ["add with a lesson that has no words ('...')", "add with a lesson that has no words ('-')"]
    assert lib["G4"] == "15 + 17 = 22" and lib["G5"] == "Überprüfe die Einheiten."
    assert lib["G2"] == "Always write the formula."  # cut at a sentence end inside the limit
    assert lib["G3"] == " ".join(["word"] * 8) + "..."
    assert all(len(t.split()) <= 8 for t in lib.lessons.values())
    assert lib["G0"] == "Check the units."  # untouched


def test_duplicates_are_skipped(lib):
    answer = json.dumps(
        [
            {"operation": "add", "text": "check the UNITS!"},
            {"operation": "add", "text": "Estimate first."},
            {"operation": "add", "text": "Estimate first."},
            {"operation": "update", "id": "G1", "text": "Check the units"},
            {"operation": "update", "id": "G1", "text": "Simplify before solving."},
        ]
    )
    _, result = apply_answer(lib, answer)
    reasons = [s.reason for s in result.skipped]
    assert reasons == [
        "duplicate of G0; skipped",
        "duplicate of G2; skipped",
        "duplicate of G0; skipped",
        "update leaves G1 unchanged; skipped",
    ]
    assert lib.lessons == {"G0": "Check the units.", "G1": "Simplify before solving.", "G2": "Estimate first."}


def test_merge_into_an_existing_text_deletes_the_redundant_lessons(lib):
    lib.apply([Operation("add", "Read twice."), Operation("add", "Reread the question.")])
    result = lib.apply([Operation("merge", "check the units", ids=("G2", "G3"))])
    assert "duplicates G0" in result.skipped[0].reason
    assert lib.lessons == {"G0": "Check the units.", "G1": "Simplify before solving."}


def test_junk_leaves_the_library_unchanged_but_still_records_a_version(lib):
    before, version = lib.lessons, lib.version
    for answer in ["", "no idea", '{"G0": "x"}', "[1, 2, 3]", '[{"operation": "delete", "id": "G5"}]']:
        parsed, result = apply_answer(lib, answer, step=7)
        assert parsed.problems or result.skipped
        assert not result.changed
    assert lib.lessons == before and lib.version == version + 5
    assert lib.diff(version).empty


def test_non_operation_objects_passed_to_apply_are_skipped(lib):
    result = lib.apply([{"operation": "add", "text": "x"}, None])  # type: ignore[list-item]
    assert [s.reason[:16] for s in result.skipped] == ["not an Operation"] * 2
    assert len(lib) == 2


def test_history_diff_and_rollback(lib):
    lib.apply(
        [Operation("update", "Check units twice.", id="G0"), Operation("add", "Estimate.")],
        step=3,
        context={"critiques": ["G0 was too vague"]},
        kind="step",
    )
    lib.apply([Operation("delete", id="G1")], step=4, kind="step")
    history = lib.history()
    assert [v.version for v in history] == [0, 1, 2, 3]
    assert [v.kind for v in history] == ["init", "apply", "step", "step"]
    assert history[2].step == 3 and history[2].context == {"critiques": ["G0 was too vague"]}
    assert history[2].applied == [
        Operation("update", "Check units twice.", id="G0"),
        Operation("add", "Estimate.", id="G2"),
    ]
    assert lib.at(1) == {"G0": "Check the units.", "G1": "Simplify before solving."}

    diff = lib.diff(1)
    assert diff.added == {"G2": "Estimate."}
    assert diff.removed == {"G1": "Simplify before solving."}
    assert diff.changed == {"G0": ("Check the units.", "Check units twice.")}
    text = str(diff)
    assert (
        "- [G1]. Simplify before solving." in text and "+ [G2]. Estimate." in text and "-> Check units twice." in text
    )

    result = lib.rollback(1)
    assert result.version == 4 and lib.lessons == lib.at(1)
    assert {op.kind for op in result.applied} == {"delete", "update", "add"}
    assert lib.history()[-1].kind == "rollback" and lib.history()[-1].context == {"rollback_to": 1}
    assert lib.at(3) == {"G0": "Check units twice.", "G2": "Estimate."}  # the rolled-back version is kept
    with pytest.raises(ConfigError, match="no lesson library version 99"):
        lib.rollback(99)


def test_versions_and_progress_survive_reopening(tmp_path):
    path = tmp_path / "lessons.db"
    with LessonLibrary(path) as lib:
        lib.apply([Operation("add", "Check the units.")], step=1, progress={"global_step": 1}, kind="step")
        lib.apply([Operation("add", "Estimate.")], step=2, progress={"global_step": 2}, kind="step")
    with LessonLibrary(path) as lib:
        assert lib.lessons == {"G0": "Check the units.", "G1": "Estimate."}
        assert lib.version == 2 and lib.progress == {"global_step": 2}
        lib.apply([Operation("add", "Third.")])
        assert "G2" in lib
    rows = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert {r[0] for r in rows} == {"lesson_meta", "lesson_versions"}
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failed_write_changes_nothing(tmp_path):
    path = tmp_path / "lessons.db"
    lib = LessonLibrary(path)
    lib.apply([Operation("add", "Check the units.")])
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("PRAGMA busy_timeout=0")
    lock.execute("BEGIN IMMEDIATE")  # another writer holds the database
    lib._db.connection.execute("PRAGMA busy_timeout=50")
    from tfgrpo.errors import StoreError

    with pytest.raises(StoreError):
        lib.apply([Operation("add", "Estimate.")])
    lock.execute("ROLLBACK")
    assert lib.lessons == {"G0": "Check the units."} and lib.version == 1
    assert LessonLibrary(path).lessons == {"G0": "Check the units."}


def test_lessons_share_a_file_with_the_experience_library(tmp_path):
    path = tmp_path / "run.db"
    grpo = TrainingFreeGRPO.open(path, seed=0)
    grpo.add_rollout_group([("p", "good"), ("p", "bad")], [1.0, 0.0])
    with LessonLibrary(path) as lib:
        lib.apply([Operation("add", "Check the units.")])
    grpo.close()
    again = TrainingFreeGRPO.open(path, seed=0)
    assert again.library_size() == 1
    again.close()
    assert LessonLibrary(path).lessons == {"G0": "Check the units."}


def test_an_experience_library_opens_a_file_the_lessons_created_first(tmp_path):
    path = tmp_path / "run.db"
    with LessonLibrary(path) as lib:
        lib.apply([Operation("add", "Check the units.")])
    with TrainingFreeGRPO.open(path, seed=0) as grpo:
        assert grpo.library_size() == 0
        grpo.add_rollout_group([("p", "good"), ("p", "bad")], [1.0, 0.0])
    with TrainingFreeGRPO.open(path, seed=0) as grpo:
        assert grpo.library_size() == 1
    with LessonLibrary(path) as lib:
        assert lib.lessons == {"G0": "Check the units."} and lib.version == 1


def test_export_and_import_the_official_json(lib, tmp_path):
    lib.export_json(tmp_path / "lessons.json")
    assert json.loads((tmp_path / "lessons.json").read_text()) == {
        "G0": "Check the units.",
        "G1": "Simplify before solving.",
    }
    other = LessonLibrary(max_words=8)
    (tmp_path / "official.json").write_text(
        json.dumps(
            {"G3": "Use exact arithmetic.", "G7": " ", "custom": "Draw it.", "G9": 5, "G10": "use exact arithmetic"}
        )
    )
    result = other.import_json(tmp_path / "official.json")
    assert other.lessons == {"G3": "Use exact arithmetic.", "G4": "Draw it."}
    reasons = " | ".join(s.reason for s in result.skipped)
    assert "'G7': empty" in reasons and "'G9': empty or not text" in reasons and "duplicate of G3" in reasons
    assert "'custom' has no usable id; stored as G4" in reasons
    other.apply([Operation("add", "Next one.")])
    assert "G5" in other  # ids continue after the highest imported one
    assert other.history()[-2].kind == "import"


def test_import_errors_say_what_is_wrong(tmp_path):
    lib = LessonLibrary()
    with pytest.raises(LibraryNotFoundError):
        lib.import_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LibraryFormatError, match="not JSON"):
        lib.import_json(tmp_path / "bad.json")
    (tmp_path / "num.json").write_text("3")
    with pytest.raises(LibraryFormatError, match="holds a JSON int"):
        lib.import_json(tmp_path / "num.json")
    assert lib.version == 0 and lib.lessons == {}


def test_export_and_import_a_system_prompt_text_file(lib, tmp_path):
    lib.export_text(tmp_path / "system.txt")
    text = (tmp_path / "system.txt").read_text()
    assert text == lib.render() + "\n"
    copy = LessonLibrary()
    copy.import_text(tmp_path / "system.txt")
    assert copy.lessons == lib.lessons
    (tmp_path / "hand.txt").write_text("Be careful:\n- Read twice.\nG4: Check signs.\n")
    copy.import_text(tmp_path / "hand.txt")
    assert copy.lessons == {"G4": "Check signs.", "G5": "Read twice."}


def test_a_foreign_sqlite_file_is_refused_or_left_intact(tmp_path):
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LibraryFormatError):
        LessonLibrary(path)
    with pytest.raises(ConfigError):
        LessonLibrary(max_words=0)


def test_a_lone_surrogate_in_a_lesson_is_repaired_like_other_bad_text(lib, tmp_path):
    # apply() never raises for a bad operation: it repairs or skips, with a reason. A lone surrogate (from
    # a critic's "\ud800") became a UnicodeEncodeError at the commit instead.
    result = lib.apply(
        [Operation("add", "Check the sign\ud800.", reason="because \udc00"), Operation("update", "x\udfff", id="G0")],
        context={"critique": "\ud800"},
    )
    assert lib.lessons == {"G0": "x\ufffd", "G1": "Simplify before solving.", "G2": "Check the sign\ufffd."}
    assert [s.reason for s in result.skipped] == ["a lone surrogate (not text) in the lesson replaced by U+FFFD"] * 2
    assert result.skipped[0].repaired == Operation("add", "Check the sign\ufffd.", id="G2", reason="because \udc00")
    # The version, its reasons and its context were stored, and the library is still usable.
    lib.export_json(tmp_path / "out.json")
    with LessonLibrary(lib.path) as again:
        assert again.lessons == lib.lessons
        assert again.get_version(lib.version).context == {"critique": "\ufffd"}
        assert again.get_version(lib.version).applied[0].reason == "because \ufffd"
    # An imported file goes through the same rule (JSON escapes make lone surrogates).
    (tmp_path / "in.json").write_text('{"G0": "Keep \\ud800 going.", "G1": "Fine."}')
    other = LessonLibrary()
    result = other.import_json(tmp_path / "in.json")
    assert other.lessons == {"G0": "Keep \ufffd going.", "G1": "Fine."}
    assert [s.reason for s in result.skipped] == ["entry 'G0': a lone surrogate replaced by U+FFFD; kept"]


def test_no_lesson_gets_an_id_beyond_the_last_one():
    lib = LessonLibrary()
    lib.replace_all({"G999999999": "The last id.", "custom": "No room for it."})
    assert lib.lessons == {"G999999999": "The last id."}
    result = lib.apply([Operation("add", "Another one."), Operation("update", "Changed.", id="G999999999")])
    assert lib.lessons == {"G999999999": "Changed."}
    assert result.skipped[0].reason == "no lesson id is left (G999999999 is the last); skipped"
    assert lib["G999999999"] == "Changed." and 10**30 not in lib


def test_a_version_that_cannot_exist_is_named_not_an_overflow(lib):
    # A 31-digit version reached SQLite and came back as OverflowError from `lessons rollback/diff`.
    for bad in (10**30, -1, lib.version + 1, True):
        with pytest.raises(ConfigError, match=r"no lesson library version .*; versions are 0\.\.1"):
            lib.rollback(bad)
        with pytest.raises(ConfigError, match="no lesson library version"):
            lib.diff(bad)
    assert lib.version == 1
