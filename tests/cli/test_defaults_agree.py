"""Python and the command line agree: every config flag of `train`, `eval` and `attribute` has its
dataclass field's default, and every field meant for the command line has a flag."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import yaml

from tfgrpo.agents import AgentConfig
from tfgrpo.cli import build_parser
from tfgrpo.cli.options import _KnobAction, config_from_args
from tfgrpo.core.knobs import knob_fields
from tfgrpo.executors import ExecutorConfig
from tfgrpo.learn.rollout_log import RolloutLogConfig
from tfgrpo.loop import EvalConfig, TrainConfig
from tfgrpo.semantic import LessonConfig

COMMANDS = {
    "train": (TrainConfig, LessonConfig, ExecutorConfig, AgentConfig, RolloutLogConfig),
    "eval": (EvalConfig, LessonConfig, ExecutorConfig, AgentConfig, RolloutLogConfig),
    "attribute": (EvalConfig, LessonConfig, ExecutorConfig, AgentConfig, RolloutLogConfig),
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
    for command in ("train", "eval", "attribute", "repeat", "serve"):
        assert config_from_args(ExecutorConfig, build_parser().parse_args([command])) == ExecutorConfig()
    for command in ("train", "eval", "attribute"):
        assert config_from_args(RolloutLogConfig, build_parser().parse_args([command])) == RolloutLogConfig()
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
    if getattr(kind, "takes", None) is float:  # a number in a range
        return 0.5
    return {float: 0.5, str: "some text"}.get(kind, 7)  # int, or a whole number in a range


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


def every_parser():
    """Every command's parser (and `lessons`' actions'), by name."""
    parsers = {}
    pending = [("tfgrpo", build_parser())]
    while pending:
        name, parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
        parsers[name] = parser
    return parsers


def test_every_option_has_help_that_shows_its_default_once():
    # `--port` showed no default; `--critic` showed "(default: the upstream) (default: None)".
    from tfgrpo.cli.options import HelpFormatter

    checked = 0
    for name, parser in every_parser().items():
        if parser.formatter_class is not HelpFormatter:
            continue  # `tfgrpo` itself: -v, -q
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            flag = f"{name} {action.option_strings[0]}"
            assert action.help, f"{flag} has no help"
            text = formatter._expand_help(action)
            unset = action.default is None or action.default == () or action.default == []
            if unset or isinstance(action, argparse._StoreTrueAction):
                assert text.count("(default") <= 1, f"{flag}: {text}"
            else:
                assert text.count("(default") == 1, f"{flag}: {text}"
            checked += 1
    assert checked > 150

    def shown(command: str, dest: str) -> str:
        parser = every_parser()[command]
        return parser._get_formatter()._expand_help(next(a for a in parser._actions if a.dest == dest))

    assert shown("tfgrpo serve", "port").endswith("(default: 8080)")
    assert shown("tfgrpo serve-model", "port").endswith("(default: 8000)")
    assert shown("tfgrpo serve", "critic") == "backend spec of the lessons critic (default: the upstream)"
    # The task's hints are the defaults of these, not the dataclass's 128 and ().
    for command in ("tfgrpo train", "tfgrpo eval", "tfgrpo attribute"):
        assert shown(command, "max_tokens").endswith("(default: the task's hint, 256 for --data)")
        assert shown(command, "stop").endswith("(default: the task's, a newline for --data)")


def test_the_prompting_help_says_which_command_defaults_to_what():
    # train and serve share these knobs with different defaults, and showed the same help text.
    from tfgrpo.learn.rollouts import PromptingConfig
    from tfgrpo.server.config import ProxyConfig

    fields = {f.name: f for f in dataclasses.fields(PromptingConfig)}
    proxy = {f.name: f for f in dataclasses.fields(ProxyConfig)}
    for name in ("select", "retrieval_mode"):
        assert proxy[name].default != fields[name].default
        help_text = fields[name].metadata["help"]
        assert f"train and eval default to {fields[name].default}, tfgrpo serve to {proxy[name].default}" in help_text
