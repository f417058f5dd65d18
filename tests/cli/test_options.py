"""Flags and config files derived from a config dataclass (`tfgrpo.cli.options`), on a dataclass of
the test's own, parsed by a real argparse parser."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from tfgrpo.cli.options import (
    FILE_VALUES,
    add_config_args,
    add_config_file_args,
    apply_config_file,
    config_from_args,
    print_config,
    read_config_file,
    resolved_options,
)
from tfgrpo.core.knobs import check_knobs, knob
from tfgrpo.errors import ConfigError


@dataclass(frozen=True)
class Knobs:
    batch_size: int = knob(4, "prompts per step", minimum=1)
    temperature: float = knob(0.7, "sampling temperature", minimum=0.0, maximum=2.0)
    mode: str = knob("sample", "how", choices=("sample", "retrieve"))
    stop: tuple[str, ...] = knob(("\n",), "stop strings")
    chat: bool | None = knob(None, "chat or plain text")
    greedy: bool = knob(False, "no sampling")
    margin: float | None = knob(None, "a margin, or none")
    k: int = knob(2, "samples per prompt", minimum=1)
    name: str = knob("x", "a name with 100% of the text", flag="--the-name")
    hidden: int = knob(3, "set from Python only", cli=False)
    greedy_depth: int = knob(3, "with --greedy: how deep", minimum=1, needs="greedy")

    def __post_init__(self) -> None:
        check_knobs(self)


def parser(**kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="local")
    p.add_argument("--option", action="append", default=[])
    add_config_args(p, Knobs, **kwargs)
    add_config_file_args(p)
    return p


def build(argv: list[str], file_values: dict | None = None, **kwargs) -> Knobs:
    return config_from_args(Knobs, parser().parse_args(argv), file_values or {}, **kwargs)


def test_no_flags_give_the_dataclass_defaults():
    assert build([]) == Knobs()


def test_each_kind_of_field_parses():
    cfg = build(
        [
            "--batch-size",
            "8",
            "--temperature",
            "0",
            "--mode",
            "retrieve",
            "--stop",
            "A",
            "--stop",
            "B",
            "--chat",
            "--greedy",
            "--margin",
            "0.5",
            "-k",
            "3",
            "--the-name",
            "y",
        ]  # fmt: skip
    )
    assert cfg == Knobs(8, 0.0, "retrieve", ("A", "B"), True, True, 0.5, 3, "y")
    assert build(["--no-chat", "--no-greedy"]).chat is False
    assert build(["--no-greedy"]).greedy is False


def test_a_repeatable_flag_replaces_the_default_instead_of_adding_to_it():
    assert build(["--stop", "Q:"]).stop == ("Q:",)


def test_wrong_values_are_refused_by_the_parser_or_the_dataclass(capsys):
    with pytest.raises(SystemExit):
        build(["--batch-size", "many"])
    with pytest.raises(SystemExit):
        build(["--mode", "other"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        build(["--batch-size", "0"])


def test_fields_left_out_get_no_flag():
    p = parser(exclude=["temperature"])
    flags = {s for a in p._actions for s in a.option_strings}
    assert "--temperature" not in flags and "--hidden" not in flags and "--batch-size" in flags
    assert {"--chat", "--no-chat", "--the-name", "-k"} <= flags
    assert {s for a in parser(only=["k"])._actions for s in a.option_strings} >= {"-k"}
    assert "--batch-size" not in {s for a in parser(only=["k"])._actions for s in a.option_strings}


def test_help_shows_the_field_help_range_and_default():
    text = parser().format_help()
    assert "prompts per step [>= 1] (default: 4)" in " ".join(text.split())
    assert "100% of the text" in text  # a % in the help is no format directive
    assert "--greedy | --no-greedy" in text


def test_every_flag_default_is_its_fields_default():
    from dataclasses import fields

    p = parser()
    defaults = {f.name: f.default for f in fields(Knobs) if f.metadata.get("cli", True)}
    flags = {a.dest: a.default for a in p._actions if a.dest in defaults}
    assert flags == defaults and len(flags) == 10


def test_precedence_flag_over_file_over_hint_over_default():
    file_values = {"batch_size": 16, "temperature": 0.1}
    args = parser().parse_args(["--batch-size", "2"])
    args.temperature = 0.1  # as the file made it the default
    cfg = config_from_args(Knobs, args, file_values, hints={"temperature": 1.5, "stop": ("Z",), "k": 5})
    assert (cfg.batch_size, cfg.temperature, cfg.stop, cfg.k) == (2, 0.1, ("Z",), 5)
    assert config_from_args(Knobs, parser().parse_args(["--stop", "S"]), {}, hints={"stop": ("Z",)}).stop == ("S",)
    assert config_from_args(Knobs, parser().parse_args([]), {}, hidden=9).hidden == 9


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text",
    [
        ("run.yaml", "batch_size: 16\nstop: ['A', 'B']\nchat: true\nmodel: openai\noption: [x=1]\ntemperature: 1\n"),
        (
            "run.toml",
            'batch_size = 16\nstop = ["A", "B"]\nchat = true\nmodel = "openai"\noption = ["x=1"]\ntemperature = 1\n',
        ),  # fmt: skip
    ],
)
def test_a_config_file_sets_defaults_that_flags_override(tmp_path, name, text):
    path = write(tmp_path, name, text)
    p = parser()
    values = apply_config_file(p, path)
    assert values == {"batch_size": 16, "stop": ("A", "B"), "chat": True, "model": "openai", "option": ["x=1"],
                      "temperature": 1.0}  # fmt: skip
    args = p.parse_args(["--batch-size", "3", "--stop", "C"])
    cfg = config_from_args(Knobs, args, values, hints={"stop": ("hint",), "k": 7})
    assert (cfg.batch_size, cfg.stop, cfg.chat, cfg.temperature, cfg.k) == (3, ("C",), True, 1.0, 7)
    assert args.model == "openai" and args.option == ["x=1"]


def test_unknown_keys_and_wrong_types_in_a_file_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option batchsize, tempreature"):
        apply_config_file(parser(), write(tmp_path, "a.yaml", "batchsize: 3\ntempreature: 1\nk: 2\n"))
    with pytest.raises(ConfigError, match=r"batch_size \(--batch-size\) takes a whole number, got '3'"):
        apply_config_file(parser(), write(tmp_path, "b.yaml", "batch_size: '3'\n"))
    with pytest.raises(ConfigError, match=r"greedy \(--greedy\) takes true or false"):
        apply_config_file(parser(), write(tmp_path, "c.toml", "greedy = 1\n"))
    with pytest.raises(ConfigError, match="mode must be one of sample, retrieve"):
        apply_config_file(parser(), write(tmp_path, "d.yaml", "mode: other\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_file(write(tmp_path, "e.toml", "batch_size = \n"))
    with pytest.raises(ConfigError, match="must hold a table"):
        read_config_file(write(tmp_path, "f.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"must end in \.yaml, \.yml or \.toml"):
        read_config_file(write(tmp_path, "g.ini", "x=1"))
    with pytest.raises(ConfigError, match="no config file at"):
        read_config_file(tmp_path / "missing.yaml")


def test_a_renamed_flag_is_its_own_key_and_the_field_name_still_reads(tmp_path):
    assert apply_config_file(parser(), write(tmp_path, "a.yaml", "the_name: y\n")) == {"name": "y"}
    assert apply_config_file(parser(), write(tmp_path, "b.yaml", "name: z\n")) == {"name": "z"}  # as printed before
    with pytest.raises(ConfigError, match="the_name is given twice"):
        apply_config_file(parser(), write(tmp_path, "c.yaml", "name: z\nthe-name: y\n"))
    assert "the_name" in resolved_options(parser().parse_args([]), Knobs())


@pytest.mark.parametrize("fmt, suffix", [("toml", ".toml"), ("yaml", ".yaml"), ("json", None)])
def test_printed_config_reads_back_to_the_same_config(tmp_path, fmt, suffix):
    p = parser()
    args = p.parse_args(["--batch-size", "6", "--stop", 'say "hi"\n', "--margin", "0.25", "--the-name", "ünï"])
    cfg = config_from_args(Knobs, args, {})
    values = resolved_options(args, cfg)
    text = print_config(values, fmt)
    if suffix is None:
        assert json.loads(text)["stop"] == ['say "hi"\n']
        return
    path = write(tmp_path, "run" + suffix, text)
    p2 = parser()
    again = p2.parse_args([])
    file_values = apply_config_file(p2, path)
    again = p2.parse_args([])
    setattr(again, FILE_VALUES, file_values)
    assert config_from_args(Knobs, again) == cfg
    assert again.model == "local"


def test_tfgrpo_warnings_read_as_the_clis_errors_do_and_others_as_python_writes_them():
    from tfgrpo.cli import _format_warning
    from tfgrpo.errors import TFGRPOWarning

    said = _format_warning(TFGRPOWarning("G=2 is small"), TFGRPOWarning, "<string>", 11)
    assert said == "tfgrpo: warning: G=2 is small\n"
    assert _format_warning(UserWarning("odd"), UserWarning, "f.py", 3) == "f.py:3: UserWarning: odd\n"


def test_a_ranged_number_in_a_file_is_checked_as_on_the_command_line(tmp_path):
    from tfgrpo.cli import parse_command

    with pytest.raises(ConfigError, match=r"limit \(--limit\) takes a whole number >= 1, got '-1'"):
        parse_command(["train", "--config", str(write(tmp_path, "a.yaml", "limit: -1\n"))])
    with pytest.raises(ConfigError, match=r"seeds \(--seeds\) takes a whole number >= 0 and <= 2147483647, got '-2'"):
        parse_command(["continual", "--config", str(write(tmp_path, "b.yaml", "seeds: [0, -2]\n"))])
    with pytest.raises(ConfigError, match=r"test_seed \(--test-seed\) takes a whole number, got '5'"):
        parse_command(["continual", "--config", str(write(tmp_path, "c.yaml", "test_seed: '5'\n"))])
    assert parse_command(["continual", "--config", str(write(tmp_path, "d.yaml", "test_seed: 5\n"))]).test_seed == 5
    with pytest.raises(ConfigError, match=r"test_fraction \(--test-fraction\) takes a number from 0 to 1, got '2'"):
        parse_command(["eval", "--config", str(write(tmp_path, "e.yaml", "test_fraction: 2\n"))])
    with pytest.raises(ConfigError, match=r"test_fraction \(--test-fraction\) takes a number, got 'x'"):
        parse_command(["eval", "--config", str(write(tmp_path, "f.yaml", "test_fraction: x\n"))])
    assert parse_command(["eval", "--config", str(write(tmp_path, "g.yaml", "test_fraction: 0\n"))]).test_fraction == 0


def test_a_flag_that_works_with_another_is_refused_alone_but_not_from_a_file(tmp_path):
    """`--guidance-strength` without `--guidance` (or `--active-min` without `--active`) changed nothing."""
    with pytest.raises(ConfigError, match="--greedy-depth works with --greedy: give that too"):
        build(["--greedy-depth", "5"])
    assert build(["--greedy", "--greedy-depth", "5"]).greedy_depth == 5
    # A config file may hold every option (as --print-config writes them): there it is no error.
    p = parser()
    file_values = apply_config_file(p, write(tmp_path, "run.yaml", "greedy_depth: 5\n"))
    args = p.parse_args([])
    setattr(args, FILE_VALUES, file_values)
    assert config_from_args(Knobs, args).greedy_depth == 5
