"""The paper's own agent YAML (youtu-agent): the learned experiences it ships import whole (ids and
texts as in the file, however long), export round-trips and keeps the rest of an existing config, and
anything else is refused with a LibraryFormatError before the library changes."""

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from support.properties import examples
from tfgrpo.errors import LibraryFormatError, LibraryNotFoundError
from tfgrpo.semantic import LessonLibrary, Operation
from tfgrpo.semantic.lesson_files import EXPERIENCE_HEADER

FIXTURES = Path(__file__).parent / "fixtures" / "youtu-agent"
PAPER_FILES = {"math_practice_agent.yaml": (27, 36), "web_practice_agent.yaml": (46, 44)}
"""file: (lessons, words in the longest), as the fixture README states."""


def lessons_in(path: Path) -> dict[str, str]:
    """The `[Gn]. text` lines of a file's instructions, read without tfgrpo (one lesson per line)."""
    instructions = yaml.safe_load(path.read_text())["agent"]["instructions"]
    section = instructions.split(EXPERIENCE_HEADER + "\n", 1)[1]
    return dict(re.fullmatch(r"\[(G\d+)\]\. (.+)", line).groups() for line in section.splitlines())


@pytest.fixture
def lib():
    library = LessonLibrary(max_words=8)  # a small critic limit, which must not touch imports
    library.apply([Operation("add", "Check the units."), Operation("add", "Simplify before solving.")])
    yield library
    library.close()


@pytest.mark.parametrize("name", PAPER_FILES)
def test_the_papers_learned_experiences_import_whole(name, tmp_path):
    count, longest = PAPER_FILES[name]
    expected = lessons_in(FIXTURES / name)
    assert len(expected) == count and max(len(t.split()) for t in expected.values()) == longest
    with LessonLibrary(tmp_path / "lessons.db") as lib:  # default max_words (32) is below the longest
        result = lib.import_agent_yaml(FIXTURES / name)
        assert result.skipped == []
        assert lib.lessons == expected and list(lib.lessons) == [f"G{i}" for i in range(count)]
        assert lib.history()[-1].kind == "import"
        lib.apply([Operation("add", "A new lesson after the import.")])
        assert f"G{count}" in lib  # ids continue after the imported ones
    with LessonLibrary(tmp_path / "lessons.db") as again:
        assert again.at(1) == expected


def test_json_import_keeps_lessons_longer_than_the_critic_limit(tmp_path):
    expected = lessons_in(FIXTURES / "math_practice_agent.yaml")
    (tmp_path / "lessons.json").write_text(json.dumps(expected))
    lib = LessonLibrary()
    result = lib.import_json(tmp_path / "lessons.json")
    assert lib.lessons == expected and result.skipped == []


def test_the_critic_limit_still_applies_to_operations():
    lib = LessonLibrary(max_words=8)
    result = lib.apply([Operation("add", " ".join(f"word{i}" for i in range(20)))])
    assert len(lib["G0"].split()) == 8 and "had 20 words (limit 8); shortened" in result.skipped[0].reason


@pytest.mark.parametrize("name", PAPER_FILES)
def test_export_round_trips_the_papers_lessons(name, tmp_path):
    lib = LessonLibrary()
    lib.import_agent_yaml(FIXTURES / name)
    lib.export_agent_yaml(tmp_path / "agent.yaml")
    copy = LessonLibrary()
    copy.import_agent_yaml(tmp_path / "agent.yaml")
    assert copy.lessons == lib.lessons
    assert lessons_in(tmp_path / "agent.yaml") == lib.lessons  # readable as youtu-agent writes it


def test_a_new_export_is_a_minimal_simple_agent_config(lib, tmp_path):
    lib.export_agent_yaml(tmp_path / "agent.yaml")
    text = (tmp_path / "agent.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    config = yaml.safe_load(text)
    assert config["defaults"] == ["_self_"] and config["type"] == "simple"
    assert config["agent"]["instructions"] == (
        f"You are a helpful assistant.\n\n{EXPERIENCE_HEADER}\n[G0]. Check the units.\n[G1]. Simplify before solving."
    )


def test_export_into_an_existing_agent_config_changes_only_its_experiences(lib, tmp_path):
    source = FIXTURES / "math_practice_agent.yaml"
    target = tmp_path / "math.yaml"
    target.write_text(source.read_text())
    lib.export_agent_yaml(target)
    before, after = yaml.safe_load(source.read_text()), yaml.safe_load(target.read_text())
    assert after["agent"].pop("instructions") != before["agent"].pop("instructions")
    assert after == before  # model, toolkits, agent name: as they were
    text = target.read_text()
    assert "# Learned and evaluated via https://api.deepseek.com/v1" in text  # edited in place: comments stay
    copy = LessonLibrary()
    copy.import_agent_yaml(target)
    assert copy.lessons == lib.lessons
    instructions = yaml.safe_load(text)["agent"]["instructions"]
    assert instructions.startswith("Solve the following problem step by step.")
    assert instructions.endswith(
        f"</answer>\n\n{EXPERIENCE_HEADER}\n[G0]. Check the units.\n[G1]. Simplify before solving."
    )

    # Exporting the file's own lessons back gives the file's config unchanged.
    original = LessonLibrary()
    original.import_agent_yaml(source)
    original.export_agent_yaml(target)
    assert yaml.safe_load(target.read_text()) == yaml.safe_load(source.read_text())


def test_export_with_a_base_leaves_the_base_alone(lib, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text((FIXTURES / "web_practice_agent.yaml").read_text())
    lib.export_agent_yaml(tmp_path / "out.yaml", base=base)
    assert base.read_text() == (FIXTURES / "web_practice_agent.yaml").read_text()
    out = yaml.safe_load((tmp_path / "out.yaml").read_text())
    assert out["toolkits"] == yaml.safe_load(base.read_text())["toolkits"]
    assert out["agent"]["instructions"].startswith("You are a helpful assistant.\n\nWhen solving problems")
    assert lessons_in(tmp_path / "out.yaml") == lib.lessons


def test_an_empty_library_exports_no_section_and_imports_as_empty(tmp_path):
    empty = LessonLibrary()
    target = tmp_path / "math.yaml"
    target.write_text((FIXTURES / "math_practice_agent.yaml").read_text())
    empty.export_agent_yaml(target)
    instructions = yaml.safe_load(target.read_text())["agent"]["instructions"]
    assert EXPERIENCE_HEADER not in instructions and instructions.endswith("</answer>")
    lib = LessonLibrary()
    lib.apply([Operation("add", "Something to replace.")])
    assert lib.import_agent_yaml(target).skipped == [] and lib.lessons == {}


def test_export_survives_a_config_it_cannot_edit_in_place(lib, tmp_path):
    # A flow-style mapping cannot take a block scalar: the file is rewritten from its parsed content.
    target = tmp_path / "flow.yaml"
    target.write_text('type: simple\nagent: {name: flow, instructions: "Be brief."}\nmax_turns: 7\n')
    lib.export_agent_yaml(target)
    config = yaml.safe_load(target.read_text())
    assert config["max_turns"] == 7 and config["agent"]["name"] == "flow"
    assert config["agent"]["instructions"].startswith("Be brief.\n\nWhen solving")
    copy = LessonLibrary()
    copy.import_agent_yaml(target)
    assert copy.lessons == lib.lessons


one_line_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\x85\ufeff"),
    min_size=1,
    max_size=80,
).map(lambda t: " ".join(t.split()))


@settings(max_examples=examples(60))
@given(texts=st.lists(one_line_text, max_size=12), instructions=st.text(max_size=80))
def test_import_of_export_is_the_identity(texts, instructions, tmp_path_factory):
    folder = tmp_path_factory.mktemp("roundtrip")
    lib = LessonLibrary()
    lib.apply([Operation("add", t) for t in texts] + [Operation("delete", id="G0")])
    base = folder / "base.yaml"
    base.write_text(yaml.safe_dump({"type": "simple", "agent": {"instructions": instructions}}))
    for kwargs in ({}, {"base": base}):
        lib.export_agent_yaml(folder / "agent.yml", **kwargs)
        copy = LessonLibrary()
        copy.import_agent_yaml(folder / "agent.yml")
        assert copy.lessons == lib.lessons


def test_repeated_and_foreign_ids_keep_their_lessons_under_new_ids(tmp_path):
    path = tmp_path / "agent.yaml"
    instructions = f"Solve it.\n\n{EXPERIENCE_HEADER}\n[G2]. First.\n[G2]. Second.\n[L0_1]. Third.\n[G7]. Fourth."
    path.write_text(yaml.safe_dump({"agent": {"instructions": instructions}}))
    lib = LessonLibrary()
    result = lib.import_agent_yaml(path)
    assert lib.lessons == {"G2": "First.", "G7": "Fourth.", "G8": "Second.", "G9": "Third."}
    assert [s.reason for s in result.skipped] == [
        "entry 'G2 (repeated)' has no usable id; stored as G8",
        "entry 'L0_1' has no usable id; stored as G9",
    ]


BAD_FILES = {
    "not an agent config": ('{"G0": "A lesson as JSON."}', "not an agent config"),
    "a list": ("- a\n- b\n", "holds a YAML list"),
    "empty": ("", "is empty"),
    "malformed": ("agent: {instructions: [unclosed\n", "not valid YAML"),
    "tabs and colons": ("agent:\n\tinstructions: x\n", "not valid YAML"),
    "two documents": ("agent: {}\n---\nagent: {}\n", "not valid YAML"),
    "agent is a list": ("agent: [a, b]\n", "`agent:` is a list"),
    "instructions is a number": ("agent:\n  instructions: 5\n", "is a int, not text"),
    "instructions is a mapping": ("agent:\n  instructions: {a: 1}\n", "is a dict, not text"),
    "orchestra agent": ("type: orchestra\nagent: {instructions: hi}\n", "'orchestra' agent config"),
    "junk after the header": (
        yaml.safe_dump({"agent": {"instructions": f"Hi.\n\n{EXPERIENCE_HEADER}\nsome prose\n[G0]. x"}}),
        "section .* starts with 'some prose'",
    ),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "nested too deeply|not valid YAML"),
    "a NUL byte": ('agent:\n  instructions: "a\x00b"\n', "not valid YAML"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_what_is_not_an_agent_config_is_refused_and_nothing_changes(case, lib, tmp_path):
    text, message = BAD_FILES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    before = (lib.version, lib.lessons)
    with pytest.raises(LibraryFormatError, match=message):
        lib.import_agent_yaml(path)
    assert (lib.version, lib.lessons) == before
    with pytest.raises(LibraryFormatError, match=message):  # not overwritten either
        lib.export_agent_yaml(path)
    assert path.read_text() == text


def test_binary_and_missing_files_are_refused(lib, tmp_path):
    binary = tmp_path / "image.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(LibraryFormatError, match="cannot read"):
        lib.import_agent_yaml(binary)
    with pytest.raises(LibraryFormatError, match="cannot read"):
        lib.export_agent_yaml(tmp_path / "out.yaml", base=binary)
    assert not (tmp_path / "out.yaml").exists()
    with pytest.raises(LibraryNotFoundError):
        lib.import_agent_yaml(tmp_path / "missing.yaml")
    assert lib.version == 1
