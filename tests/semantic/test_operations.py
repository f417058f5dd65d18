"""Parsing hostile LLM output into operations: every malformed shape is read or reported, never raised."""

import pytest

from tfgrpo.semantic import Operation, extract_json, normalize_id, parse_operations


def kinds(result):
    return [op.kind for op in result.operations]


def test_clean_json_array_is_read_as_is():
    answer = '[{"operation": "add", "text": "Check units."}, {"operation": "delete", "id": "G2"}]'
    result = parse_operations(answer)
    assert result.operations == [Operation("add", "Check units."), Operation("delete", id="G2")]
    assert result.problems == [] and result.found_json


def test_json_inside_markdown_fence_and_prose():
    answer = (
        'Sure! Here are my edits:\n```json\n[{"operation": "update", "id": "G1", "text": "New."}]\n```\nHope it helps.'
    )
    result = parse_operations(answer)
    assert result.operations == [Operation("update", "New.", id="G1")]
    assert any("markdown fence" in p for p in result.problems)


def test_json_embedded_in_prose_without_fence():
    answer = 'I think we should do {"operation": "add", "text": "Verify the final step."} and stop.'
    result = parse_operations(answer)
    assert result.operations == [Operation("add", "Verify the final step.")]
    assert any("embedded in prose" in p for p in result.problems)


def test_python_literals_and_trailing_commas_are_repaired():
    answer = "```\n[{'operation': 'add', 'text': 'Simplify first.',},]\n```"
    result = parse_operations(answer)
    assert result.operations == [Operation("add", "Simplify first.")]
    assert any("fixed its syntax" in p for p in result.problems)


def test_malformed_json_gives_no_operations_and_a_problem():
    result = parse_operations('[{"operation": "add", "text": "unterminated')
    assert result.operations == [] and not result.found_json
    assert result.problems and "no JSON" in result.problems[0]


@pytest.mark.parametrize("answer", ["", "I have no suggestions.", "null", "42", '"just a string"', "[[[[", "}{"])
def test_junk_never_raises_and_says_why(answer):
    result = parse_operations(answer)
    assert result.operations == []
    assert result.problems


def test_pathological_nesting_and_long_junk_are_bounded():
    for answer in ["[" * 100_000 + "]" * 100_000, "{[" * 50_000, "x [ y { z " * 20_000]:
        result = parse_operations(answer)
        assert result.operations == [] and result.problems


def test_non_text_answer_is_reported():
    result = parse_operations(None)
    assert result.operations == [] and "not text" in result.problems[0]


def test_non_dict_items_and_unknown_operations_are_skipped_with_reasons():
    answer = (
        '[1, "add a lesson", null, {"operation": "explode", "text": "x"}, {"text": "no op"}, '
        '{"op": "ADD", "lesson": "Ok."}]'
    )
    result = parse_operations(answer)
    assert result.operations == [Operation("add", "Ok.")]
    assert sum("not an object" in p for p in result.problems) == 3
    assert sum("no known operation" in p for p in result.problems) == 2


def test_official_field_names_and_aliases():
    answer = """{"operations": [
        {"option": "modify", "modified_from": "G3", "experience": "Prefer exact fractions."},
        {"option": "merge", "merged_from": ["G1", "g4", "[G5]"], "experience": "Combined."},
        {"action": "remove", "target": 7},
        {"type": "no-op"}
    ]}"""
    result = parse_operations(answer)
    assert result.operations == [
        Operation("update", "Prefer exact fractions.", id="G3"),
        Operation("merge", "Combined.", ids=("G1", "G4", "G5")),
        Operation("delete", id="G7"),
        Operation("none"),
    ]


def test_single_operation_object_and_bad_ids():
    result = parse_operations('{"operation": "merge", "ids": ["G1", "lesson two", "G1", 2], "text": "Both."}')
    assert result.operations == [Operation("merge", "Both.", ids=("G1", "G2"))]
    assert any("'lesson two'" in p for p in result.problems)
    result = parse_operations('{"operation": "delete", "id": "the third one"}')
    assert result.operations == [Operation("delete")]  # no id: the library will refuse it with a reason
    assert any("not a lesson id" in p for p in result.problems)
    # A 31-digit number was read as G1000...0: now the same problem, with the range, and no id.
    big = "1" + "0" * 30
    result = parse_operations(
        '[{"operation": "delete", "id": ' + big + '}, {"operation": "merge", "ids": [1, ' + big + "]}]"
    )
    assert result.operations == [Operation("delete"), Operation("merge", ids=("G1",))]
    assert result.problems[0].endswith("is not a lesson id like G3 (G0 .. G999999999)")
    assert "dropped" in result.problems[1]


def test_a_whole_library_is_not_mistaken_for_operations():
    result = parse_operations('{"G0": "Check units.", "G1": "Simplify."}')
    assert result.operations == [] and result.found_json
    assert "whole library" in result.problems[0]


def test_limit_keeps_the_first_operations():
    answer = str([{"operation": "add", "text": f"Lesson {i}."} for i in range(5)]).replace("'", '"')
    result = parse_operations(answer, limit=2)
    assert [op.text for op in result.operations] == ["Lesson 0.", "Lesson 1."]
    assert "only the first 2 kept" in result.problems[-1]


def test_lesson_text_is_cleaned_of_ids_markers_and_whitespace():
    answer = '[{"operation": "add", "text": "  [G9].  Always\\n check   the sign. "}, {"operation": "add", "text": 5}]'
    result = parse_operations(answer)
    assert [op.text for op in result.operations] == ["Always check the sign.", ""]
    assert any("not a string" in p for p in result.problems)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("G3", "G3"),
        ("g12", "G12"),
        ("[G3]", "G3"),
        ("[G3].", "G3"),
        ("3", "G3"),
        (3, "G3"),
        (True, None),
        ("G", None),
        ("X3", None),
        (-1, None),
        (None, None),
        ("G03", "G3"),
        (999_999_999, "G999999999"),
        (10**9, None),  # an id beyond nine digits is no lesson's: refused, as the same number as text is
        (10**30, None),
        ("1" + "0" * 30, None),
    ],
)
def test_normalize_id(value, expected):
    assert normalize_id(value) == expected


def test_extract_json_prefers_the_whole_text():
    assert extract_json('{"a": [1]}') == ({"a": [1]}, "json")
    assert extract_json("nothing here") == (None, None)
