"""Python and the command line agree: every config flag of `train`, `eval` and `attribute` has its
dataclass field's default, and every field meant for the command line has a flag."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tfgrpo.agents import AgentConfig
from tfgrpo.cli import build_parser
from tfgrpo.cli.options import _KnobAction, config_from_args
from tfgrpo.core.knobs import knob_fields
from tfgrpo.loop import EvalConfig, TrainConfig
from tfgrpo.semantic import LessonConfig

COMMANDS = {
    "train": (TrainConfig, LessonConfig, AgentConfig),
    "eval": (EvalConfig, LessonConfig, AgentConfig),
    "attribute": (EvalConfig, LessonConfig, AgentConfig),
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
    assert config_from_args(AgentConfig, build_parser().parse_args(["attribute"])) == AgentConfig()
    assert config_from_args(TrainConfig, build_parser().parse_args(["train", "--preset", "paper"]), preset="paper") == (
        TrainConfig.preset("paper")
    )
