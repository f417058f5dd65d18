"""Your own reward, task, held-out file and config file from the command line, and the resume check:
`tfgrpo.cli.main` in-process, or the installed `tfgrpo` script in a subprocess where modules are found
next to where it runs (and for the entry point itself), with real files in tmp_path, talking over HTTP
to a scripted stand-in policy on 127.0.0.1 (no model needed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import TFGRPO
from support.cli import tfgrpo as run
from support.llm import StandIn, chat_reply
from tfgrpo import TrainingFreeGRPO

# -G 2 keeps the runs small; its warning (a group size outside the recommended range) is expected.
pytestmark = pytest.mark.filterwarnings("ignore:GRPOConfig.group_size=2 is outside:tfgrpo.TFGRPOWarning")

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

REWARD_FILE = """
import logging

log = logging.getLogger("tfgrpo.user_reward")


def score(prompt, response, sample):
    log.info("scored %r", response)
    log.warning("a warning line")
    return 1.0 if response.strip() == "yes" else 0.0


class YesReward:
    pass


NOT_CALLABLE = 3


def two_args(prompt, response):
    return 0.0
"""

TASK_MODULE = """
from tfgrpo.rewards import FunctionReward
from tfgrpo.tasks import Task


def make(size=4):
    return Task(
        "mine",
        loader=lambda: [{"id": f"q{i}", "prompt": f"Question {i}?"} for i in range(size)],
        reward=FunctionReward(lambda p, r, s: float(r.strip() == "yes")),
        instruction="Say yes.",
        max_tokens=3,
        stop=("\\n",),
        test_fraction=0.5,
    )


def not_a_task():
    return 42


ANSWER = "no task here"
"""


def installed(*args, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([TFGRPO, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"tfgrpo {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr}")
    return result


async def yes_or_no(index, path, body):
    """Plain-text completions: 'yes' for even choices, 'no' for odd ones."""
    n = body.get("n", 1)
    return chat_reply(["yes" if i % 2 == 0 else "no" for i in range(n)], chat="messages" in body)


@pytest.fixture
def server():
    with StandIn(yes_or_no) as stand_in:
        yield stand_in


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "myreward.py").write_text(REWARD_FILE)
    (tmp_path / "mytask.py").write_text(TASK_MODULE)
    rows = [{"prompt": f"Is {i} a number?", "answer": "yes"} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    held = [{"prompt": f"Is {c} a letter?", "answer": "yes"} for c in "abc"]
    (tmp_path / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    return tmp_path


@pytest.fixture
def in_files(files: Path, monkeypatch):
    """`files` as the current folder of the in-process commands, which import myreward.py and mytask.py from
    there as modules (the CLI puts the current folder on sys.path); both are undone after the test."""
    monkeypatch.chdir(files)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield files
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(files)):
            del sys.modules[name]


def model(server) -> list[str]:
    return ["--model", f"openai:scripted@{server.url}", "--no-chat"]


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_reward_from_a_file_scores_the_rollouts(server, files):
    lib = files / "lib.db"
    reward = f"{files / 'myreward.py'}:score"
    args = ["--data", files / "train.jsonl", "--reward", reward, "--test-fraction", "0", "-G", "4"]
    result = run("train", *args, "--batch-size", "3", *model(server), "-l", lib, "--metrics", files / "m.jsonl")
    steps = metrics(files / "m.jsonl")
    assert [m["global_step"] for m in steps] == [1, 2] and all(m["reward_mean"] == 0.5 for m in steps)
    with TrainingFreeGRPO.open(lib) as grpo:
        responses = [e.response for e in grpo.experience_library]
    assert len(responses) >= 6 and set(responses) == {"yes"}  # only what this reward scored 1
    # The package's log lines reach stderr: info by default, fewer with -q, none with -qq.
    assert "INFO tfgrpo.user_reward: scored 'yes'" in result.stderr
    again = ["--data", files / "train.jsonl", "--reward", reward, "--test-fraction", "0", "-G", "2", *model(server)]
    quiet = run("-q", "train", *again, "-l", files / "q.db")
    assert "a warning line" in quiet.stderr and "scored" not in quiet.stderr
    assert "a warning line" not in run("-qq", "train", *again, "-l", files / "qq.db").stderr
    assert "DEBUG" not in result.stderr


def test_a_reward_from_a_module_and_a_task_factory_with_its_hints(server, files):
    lib = files / "lib.db"
    args = ["--task", "mytask:make", "--task-option", "size=8", "--reward", "myreward:score", "-G", "2"]
    shown = installed("train", *args, *model(server), "-l", lib, "--print-config", "json", cwd=files)
    printed = json.loads(shown.stdout)
    # The task's hints apply where neither a flag nor a file set the field.
    assert printed["instruction"] == "Say yes." and printed["max_tokens"] == 3 and printed["stop"] == ["\n"]
    assert not lib.exists()  # --print-config trains nothing
    out = installed("train", *args, *model(server), "-l", lib, "--batch-size", "2", cwd=files).stdout
    assert "Total rollouts: 8" in out  # the 4 training samples of 8 (test_fraction 0.5) x G=2
    policy = [b for b in server.bodies if "prompt" in b]
    assert policy and all(b["max_tokens"] == 3 and b["prompt"].startswith("Say yes.") for b in policy)
    assert all(re.search(r"Question \d\?", b["prompt"]) for b in policy)


def test_eval_data_is_the_held_out_side_and_train_uses_the_whole_file(server, files):
    lib = files / "lib.db"
    args = ["--data", files / "train.jsonl", "--eval-data", files / "held.jsonl", "--reward", "exact", *model(server)]
    assert "Total rollouts: 12" in run("train", *args, "-G", "2", "--batch-size", "6", "-l", lib).stdout  # all 6 rows
    first = len(server.bodies)
    # --no-baselines: the bootstrapped few-shot baseline would try training prompts too
    report = json.loads(run("eval", *args, "-l", lib, "-k", "2", "--no-baselines", "--json").stdout)
    assert report["n_prompts"] == 3
    asked = {re.findall(r"Is \w+ a \w+\?", b["prompt"])[-1] for b in server.bodies[first:]}
    assert asked == {"Is a a letter?", "Is b a letter?", "Is c a letter?"}


@pytest.mark.parametrize(
    "flag, spec, message",
    [
        ("--reward", "nosuchmodule_xyz:score", "no module named 'nosuchmodule_xyz'"),
        ("--reward", "missing.py:score", "no file missing.py"),
        ("--reward", "myreward.py:nothere", "myreward.py has no attribute 'nothere' (it has: "),
        ("--reward", "myreward:YesReward", "class YesReward is no tfgrpo.rewards.Reward"),
        ("--reward", "myreward:NOT_CALLABLE", "is a int, not callable"),
        ("--reward", "myreward:two_args", "cannot be called as (prompt, response, sample)"),
        ("--reward", "nonsense", "unknown reward 'nonsense'; use one of numeric"),
        ("--task", "mytask:not_a_task", "returned a int; expected a function returning a tfgrpo.tasks.Task"),
        ("--task", "mytask:ANSWER", "is a str; expected a function returning a tfgrpo.tasks.Task"),
        ("--task", "mytask:", "expected module:name or path/to/file.py:name"),
    ],
)
def test_a_wrong_spec_says_what_was_not_found_and_what_is_expected(in_files, flag, spec, message):
    files = in_files
    args = ["--data", files / "train.jsonl"] if flag == "--reward" else []
    result = run("train", *args, flag, spec, "-l", files / "x.db", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert not (files / "x.db").exists()


def test_a_config_file_with_flags_over_it(server, files):
    config = files / "run.yaml"
    config.write_text(
        f"data: {files / 'train.jsonl'}\nreward: exact\ntest_fraction: 0.0\nbatch_size: 2\ngroup_size: 2\n"
        "stop: ['END']\nseed: 7\n"
    )
    printed = json.loads(run("train", "--config", config, "--batch-size", "3", "--print-config", "json").stdout)
    assert (printed["batch_size"], printed["group_size"], printed["seed"], printed["stop"]) == (3, 2, 7, ["END"])
    assert printed["max_tokens"] == 256  # a --data file's hint, which neither the file nor a flag set
    toml = files / "run.toml"
    toml.write_text(run("train", "--config", config, "--print-config", "toml").stdout)
    assert json.loads(run("train", "--config", toml, "--print-config", "json").stdout) == {**printed, "batch_size": 2}

    config.write_text("batch_size: 2\nbatchsize: 3\ngroup: 2\n")
    bad = run("train", "--config", config, check=False)
    assert bad.returncode == 1 and "unknown option batchsize, group" in bad.stderr
    config.write_text("batch_size: two\n")
    bad = run("train", "--config", config, check=False)
    assert bad.returncode == 1 and "batch_size (--batch-size) takes a whole number, got 'two'" in bad.stderr


def test_a_rerun_with_other_settings_is_refused_naming_each_difference(server, files):
    lib = files / "lib.db"
    args = ["train", "--data", files / "train.jsonl", "--reward", "exact", *model(server), "-l", lib, "-G", "4"]
    run(*args, "--batch-size", "2", "--seed", "0")
    with TrainingFreeGRPO.open(lib) as grpo:
        before = (grpo.total_rollouts, grpo.progress["global_step"])
    refused = run(*args, "--batch-size", "3", "--seed", "1", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "resuming" not in refused.stderr
    (error,) = [line for line in refused.stderr.splitlines() if line.startswith("tfgrpo: error:")]
    assert "batch_size: 2 in the library, 3 now" in error and "seed: 0 in the library, 1 now" in error
    assert "group_size" not in error and "another --library path" in error
    other = files / "other.jsonl"
    other.write_text((files / "train.jsonl").read_text().replace("number", "digit"))
    refused = run(*[a if a != files / "train.jsonl" else other for a in args], "--batch-size", "2", check=False)
    assert refused.returncode == 1 and "data: " in refused.stderr and "data_fingerprint" in refused.stderr
    with TrainingFreeGRPO.open(lib) as grpo:
        assert (grpo.total_rollouts, grpo.progress["global_step"]) == before  # nothing was touched
    assert "resuming" in run(*args, "--batch-size", "2", "--seed", "0").stderr  # the same run resumes


def test_version_and_help_name_the_package_version():
    from tfgrpo import __version__

    assert installed("--version").stdout.strip() == f"tfgrpo {__version__}"
    assert "-v, --verbose" in installed("--help").stdout
