"""Python and the command line agree: every config flag of `train`, `eval` and `attribute` has its
dataclass field's default, and every field meant for the command line has a flag."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import yaml

from tfgrpo.cli import build_parser
from tfgrpo.cli.options import _KnobAction, config_from_args
from tfgrpo.core.knobs import knob_fields
from tfgrpo.loop import EvalConfig, TrainConfig
from tfgrpo.semantic import LessonConfig

COMMANDS = {
    "train": (TrainConfig, LessonConfig),
    "eval": (EvalConfig, LessonConfig),
    "attribute": (EvalConfig, LessonConfig),
}
ONLY = {("eval", LessonConfig): {"placement"}, ("attribute", LessonConfig): {"placement"}}


def command_parser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def default(field: dataclasses.Field):
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_flag_has_its_fields_default(command):
    flags = {a.dest: a for a in command_parser(command)._actions if isinstance(a, _KnobAction)}
    expected = {}
    for cls in COMMANDS[command]:
        only = ONLY.get((command, cls))
        for field in knob_fields(cls):
            if field.metadata["cli"] and (only is None or field.name in only):
                expected[field.name] = default(field)
    assert set(flags) == set(expected)  # no field without a flag, no config flag without a field
    differing = {name: (flags[name].default, value) for name, value in expected.items() if flags[name].default != value}
    assert not differing
    assert len(flags) >= 12


def test_no_flags_build_the_python_defaults():
    args = build_parser().parse_args(["train"])
    assert config_from_args(TrainConfig, args) == TrainConfig()
    assert config_from_args(LessonConfig, args) == LessonConfig()
    assert config_from_args(EvalConfig, build_parser().parse_args(["eval"])) == EvalConfig()
    assert config_from_args(TrainConfig, build_parser().parse_args(["train", "--preset", "paper"]), preset="paper") == (
        TrainConfig.preset("paper")
    )


def a_value(action: argparse.Action):
    """A value the option takes, other than its default where that is easy."""
    if action.choices is not None:
        return list(action.choices)[-1]
    if action.nargs == 0 or getattr(action, "kind", None) == "bool":
        return not action.default
    if getattr(action, "kind", None) == "append" or isinstance(action, argparse._AppendAction):
        return ["x=1"]
    if action.nargs == "+":
        return [5, 6]
    kind = action.type or str
    return {int: 7, float: 0.5, str: "some text"}[kind]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_read_from_and_printed_to_a_config_file_by_its_flags_name(command, tmp_path, capsys):
    # README: a config key is "the flag without dashes, `_` for `-`". `max_ops_per_query` was refused, and
    # --print-config wrote `max_operations_per_query`.
    from tfgrpo.cli import main, parse_command
    from tfgrpo.cli.options import INTERNAL

    options = [a for a in command_parser(command)._actions if a.dest not in INTERNAL and a.option_strings]
    keys = {}
    for action in options:
        long = [o for o in action.option_strings if o.startswith("--")] or action.option_strings
        keys[action.dest] = long[0].lstrip("-").replace("-", "_")
    assert keys.get("max_operations_per_query", "max_ops_per_query") == "max_ops_per_query"
    for action in options:
        value = a_value(action)
        path = tmp_path / f"{action.dest}.yaml"
        path.write_text(yaml.safe_dump({keys[action.dest]: value}))
        args = parse_command([command, "--config", str(path)])
        got = getattr(args, action.dest)
        assert (list(got) if isinstance(got, tuple) else got) == value, keys[action.dest]

    assert main([command, "--print-config", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == set(keys.values())
    # What was printed reads back as the same run.
    path = tmp_path / "printed.yaml"
    path.write_text(yaml.safe_dump(printed))
    assert main([command, "--config", str(path), "--print-config", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == printed
