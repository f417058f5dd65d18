"""The agent YAML of the paper's own code (youtu-agent, `configs/agents/practice/*.yaml`), where learned
experiences live at the end of the agent's `instructions`:

    agent:
      instructions: "<the agent's instructions>

        When solving problems, you MUST first carefully read and understand the helpful instructions and
        experiences:
        [G0]. <lesson>
        [G1]. <lesson>"

The section is exactly what that code appends (two line breaks, the header line, one `[Gn]. text` line
per lesson); it is found as the last header that starts a line, and ends where the instructions end.
An id other than `Gn` in brackets ("[L0_1]. ") starts a lesson too and is given a new G id on import.

Writing keeps what the file already holds: only the value of `agent.instructions` is replaced, in
place, so the model, toolkits, comments and the instructions before the section stay as they were
(when that value cannot be replaced in place, the whole file is rewritten from its parsed content:
same config, comments lost). The result is parsed again and compared before anything is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LibraryFormatError, LibraryNotFoundError

EXPERIENCE_HEADER = (
    "When solving problems, you MUST first carefully read and understand the helpful instructions and experiences:"
)
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
"""youtu-agent's own default for `agent.instructions` (used for a new file)."""
HYDRA_HEADER = "# @package _global_\n"

_HEADER_RE = re.compile(rf"(?:^|\n){re.escape(EXPERIENCE_HEADER)}[ \t]*(?:\n|$)")
_ENTRY_START = re.compile(r"\[([A-Za-z0-9_\-]{1,40})\]\. ")
_ENTRY_SPLIT = re.compile(r"\n(?=\[[A-Za-z0-9_\-]{1,40}\]\. )")


@dataclass(frozen=True)
class AgentYaml:
    """What was read from an agent YAML file."""

    text: str
    """The file as it is."""
    config: dict[str, Any]
    """Its parsed content."""
    base_instructions: str
    """`agent.instructions` without the experiences section."""
    lessons: list[tuple[str, str]]
    """(id as written, text) per lesson, in file order."""


def _yaml():
    try:
        import yaml
    except ImportError:
        raise ConfigError("agent YAML files need PyYAML: pip install 'pyyaml>=6'") from None
    return yaml


def parse_agent_yaml(text: str, where: str = "the file") -> AgentYaml:
    """Read an agent YAML's text; raise `LibraryFormatError` saying what is wrong when it is not one."""
    yaml = _yaml()
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LibraryFormatError(f"{where} is not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise LibraryFormatError(f"{where} is nested too deeply to be an agent config") from None
    expected = "expected a youtu-agent agent config (`agent:` with `instructions:`)"
    if config is None:
        raise LibraryFormatError(f"{where} is empty; {expected}")
    if not isinstance(config, dict):
        raise LibraryFormatError(f"{where} holds a YAML {type(config).__name__}; {expected}")
    agent = config.get("agent")
    if not isinstance(agent, dict):
        got = "no `agent:` section" if agent is None else f"`agent:` is a {type(agent).__name__}"
        raise LibraryFormatError(f"{where} is not an agent config ({got}); {expected}")
    kind = config.get("type", "simple")
    if kind != "simple":
        raise LibraryFormatError(
            f"{where} is a {kind!r} agent config; experiences live in a 'simple' agent's `agent.instructions`"
        )
    instructions = agent.get("instructions")
    if instructions is None:
        instructions = ""
    if not isinstance(instructions, str):
        raise LibraryFormatError(
            f"{where}: `agent.instructions` is a {type(instructions).__name__}, not text; {expected}"
        )
    base, lessons = split_instructions(instructions, where)
    return AgentYaml(text, config, base, lessons)


def split_instructions(instructions: str, where: str = "the file") -> tuple[str, list[tuple[str, str]]]:
    """(the instructions before the experiences section, [(id, text), ...] in it)."""
    match = next(reversed(list(_HEADER_RE.finditer(instructions))), None)  # the last section
    if match is None:
        return instructions, []
    base = instructions[: match.start()]
    base = base[:-1] if base.endswith("\n") else base  # the section starts with two line breaks
    body = instructions[match.end() :].strip()
    if not body:
        return base, []
    lessons = []
    for entry in _ENTRY_SPLIT.split(body):
        found = _ENTRY_START.match(entry)
        if found is None:
            raise LibraryFormatError(
                f"{where}: the experiences section (after the line {EXPERIENCE_HEADER[:40]!r}...) starts with "
                f"{entry[:80]!r}, not a `[G0]. lesson` line; move that text above the section or remove it"
            )
        lessons.append((found.group(1), entry[found.end() :]))
    return base, lessons


def join_instructions(base: str, lessons: Mapping[str, str]) -> str:
    """`base` with the experiences section after it, as youtu-agent writes it (no section when there are
    no lessons)."""
    if not lessons:
        return base
    section = EXPERIENCE_HEADER + "\n" + "\n".join(f"[{i}]. {t}" for i, t in lessons.items())
    return f"{base}\n\n{section}" if base else section


def read_text_file(path: str | os.PathLike) -> str:
    """A lesson file's text; a clear error when it is missing or unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LibraryNotFoundError(f"no lesson file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LibraryFormatError(f"cannot read {path}: {exc}") from None


def read_agent_yaml(path: str | os.PathLike) -> AgentYaml:
    return parse_agent_yaml(read_text_file(path), str(path))


def agent_yaml_text(lessons: Mapping[str, str], base: AgentYaml | None = None) -> str:
    """The text of an agent YAML holding `lessons`: `base`'s file with its experiences replaced, or
    (no base) a minimal simple-agent config."""
    yaml = _yaml()
    if base is None:
        config = {
            "defaults": ["_self_"],
            "type": "simple",
            "agent": {"name": "tfgrpo_agent", "instructions": join_instructions(DEFAULT_INSTRUCTIONS, lessons)},
        }
        return HYDRA_HEADER + _dump(yaml, config)
    instructions = join_instructions(base.base_instructions, lessons)
    expected = {**base.config, "agent": {**base.config["agent"], "instructions": instructions}}
    text = _replace_in_place(yaml, base.text, instructions)
    if text is None or _safe_load(yaml, text) != expected:
        header = HYDRA_HEADER if base.text.startswith(HYDRA_HEADER) else ""
        text = header + _dump(yaml, expected)
    return text


def _dump(yaml, data: Any) -> str:
    """YAML with multi-line strings as literal blocks (one lesson per line), key order kept."""

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, allow_unicode=True, sort_keys=False, width=100)


def _safe_load(yaml, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return None


def _replace_in_place(yaml, text: str, instructions: str) -> str | None:
    """`text` with the value of `agent.instructions` replaced (None when it cannot be found as a key of
    a block mapping)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    agent = _value_of(yaml, root, "agent")
    pair = _pair_of(yaml, agent, "instructions")
    if pair is None or agent.flow_style:
        return None
    key, value = pair
    start, end = key.start_mark.index, value.end_mark.index
    span = text[start:end]
    trailing = span[len(span.rstrip()) :]  # a block scalar's span ends with its line break
    lines = _dump(yaml, {"instructions": instructions}).rstrip("\n").split("\n")
    indent = " " * key.start_mark.column
    replacement = "\n".join([lines[0], *(indent + line if line else line for line in lines[1:])])
    return text[:start] + replacement + trailing + text[end:]


def _pair_of(yaml, node: Any, name: str) -> tuple[Any, Any] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == name:
            return key, value
    return None


def _value_of(yaml, node: Any, name: str) -> Any:
    pair = _pair_of(yaml, node, name)
    return None if pair is None else pair[1]
