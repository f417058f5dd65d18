"""`--allow-unsandboxed` reaches the sandbox of every reward that runs generated code, and nothing else."""

import json

import pytest

from tfgrpo.cli import build_parser
from tfgrpo.cli.common import load_task


def loaded(argv):
    return load_task(build_parser().parse_args(argv))


@pytest.mark.parametrize("flag", [[], ["--allow-unsandboxed"]])
def test_the_flag_reaches_the_humaneval_sandbox(flag):
    task = loaded(["train", "--task", "humaneval", "--limit", "1", *flag])
    assert task.reward.sandbox.allow_unsandboxed is bool(flag)


@pytest.mark.parametrize("flag", [[], ["--allow-unsandboxed"]])
def test_the_flag_reaches_the_unittest_reward_of_your_data(tmp_path, flag):
    data = tmp_path / "code.jsonl"
    data.write_text(json.dumps({"prompt": "def f():\n", "test": "assert f() == 1", "answer": ""}) + "\n")
    task = loaded(["eval", "--data", str(data), "--reward", "unittest", "--eval-data", str(data), *flag])
    assert task.reward.sandbox.allow_unsandboxed is bool(flag)
