"""`tfgrpo eval`'s options, parsed and resolved as the command runs them (`--print-config`: no model)."""

from __future__ import annotations

import json

from tfgrpo.cli import main, parse_command
from tfgrpo.cli.options import config_from_args
from tfgrpo.loop.evaluate import EvalConfig


def test_seeds_take_values_on_the_command_line_and_in_a_config_file(tmp_path, capsys):
    # `eval --seeds 3` was a count while `repeat --seeds 0 1 2` were values: now values everywhere.
    assert config_from_args(EvalConfig, parse_command(["eval", "--seeds", "0", "1", "2"])).seeds == (0, 1, 2)
    (tmp_path / "a.yaml").write_text("seeds: [4, 5]\n")
    assert config_from_args(EvalConfig, parse_command(["eval", "--config", str(tmp_path / "a.yaml")])).seeds == (4, 5)
    (tmp_path / "b.toml").write_text("seeds = 3\n")
    assert config_from_args(EvalConfig, parse_command(["eval", "--config", str(tmp_path / "b.toml")])).seeds == (3,)

    # One value is one seed, and the command says so.
    assert main(["eval", "--seeds", "3", "--print-config", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["seeds"] == [3]
    assert "one evaluation seed (3): no spread across seeds. --seeds takes the seeds' values" in err
    assert main(["eval", "--print-config", "json"]) == 0  # the default: one seed, nothing to say
    out, err = capsys.readouterr()
    assert json.loads(out)["seeds"] == [0] and "evaluation seed" not in err
    assert main(["attribute", "--seeds", "1", "1", "--print-config"]) == 1
    assert "each evaluation seed once" in capsys.readouterr().err


def test_print_config_needs_no_dataset_file(tmp_path, capsys):
    # "--print-config: every option as it would run, no training" failed when the data file was not there yet.
    missing = str(tmp_path / "not-yet.jsonl")
    for command in ("train", "eval", "attribute"):
        assert main([command, "--data", missing, "--eval-data", missing, "--print-config", "json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["data"] == missing and printed["max_tokens"] == 256 and printed["stop"] == ["\n"]
    assert main(["train", "--data", missing, "-l", str(tmp_path / "lib.db")]) == 1  # running needs the file
    assert "no dataset file at" in capsys.readouterr().err
    assert not (tmp_path / "lib.db").exists()
