"""`--agent` from the command line, as a user types it: real `tfgrpo` subprocesses against a scripted
model on 127.0.0.1 (react-python's interpreter in the sandbox), and `tfgrpo repeat` passing the agent to
both training and evaluation."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.agents import Model, last_user
from support.llm import StandIn
from tfgrpo import TrainingFreeGRPO

pytestmark = pytest.mark.slow

TFGRPO = shutil.which("tfgrpo") or str(Path(sys.executable).parent / "tfgrpo")
TASK = ["--task", "arithmetic", "--task-option", "n=20", "--task-option", "difficulty=hard", "--limit", "4"]


def tfgrpo(*args):
    result = subprocess.run([TFGRPO, *args], capture_output=True, text=True, timeout=600, env={**os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def solver(messages, body):
    """Computes the question in Python on every other sample; answers a wrong guess on the rest."""
    question = next(m["content"] for m in messages if m["role"] == "user")
    expression = re.findall(r"What is ([0-9+\-* ]+)\?", question)[-1]
    if "Output:" in last_user(messages):
        return f"The answer is {last_user(messages).split()[2]}"
    if body.get("seed", 0) % 2:
        return "I think it is 1"
    return f"Let me compute.\n```python\nprint({expression})\n```"


def test_train_and_eval_with_react_python(tmp_path):
    library = tmp_path / "lib.db"
    model = Model(solver)
    with StandIn(model) as server:
        spec = f"openai:scripted@{server.url}"
        common = [*TASK, "--model", spec, "--agent", "react-python", "--max-turns", "3", "--shots", "1"]
        tfgrpo("train", *common, "--library", str(library), "-G", "2", "--batch-size", "2")
        result = tfgrpo("eval", *common, "--library", str(library), "-k", "2", "--json")
    steps = [json.loads(line) for line in Path(f"{library}.metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(s["trajectories"]["rollouts"] == 4 for s in steps)
    assert any(s["trajectories"]["tool_calls_per_rollout"] > 0 for s in steps)
    with TrainingFreeGRPO.open(library) as grpo:
        stored = grpo.experience_library
        assert stored and all("```python" in e.response and "Output:" in e.response for e in stored)
    report = json.loads(result.stdout)
    for condition in report["conditions"].values():
        assert condition["trajectories"]["rollouts"] == 2 * len(report["prompt_ids"])
    # The evaluation's policy turns saw the stored transcript as a few-shot example.
    users = [m["content"] for b in model.bodies for m in b.get("messages", []) if m["role"] == "user"]
    assert any("Output:\n```" in text and text.count("Q:") > 1 for text in users)


def test_repeat_passes_the_agent_to_training_and_evaluation(tmp_path):
    with StandIn(Model(solver)) as server:
        args = [*TASK, "--model", f"openai:scripted@{server.url}", "--max-turns", "2", "--shots", "0"]
        tfgrpo(
            "repeat", "--seeds", "0", "1", "--out", str(tmp_path), "--agent", "react-python",
            "--train-args", " ".join([*args, "-G", "2", "--batch-size", "4"]),
            "--eval-args", " ".join([*args, "-k", "1"]),
        )  # fmt: skip
    summary = json.loads((tmp_path / "repeat.json").read_text())
    assert summary["train_seeds"] == [0, 1]
    for evaluation in summary["evaluations"]:
        assert all("trajectories" in c for c in evaluation["conditions"].values())
    assert "trajectories" in json.loads((tmp_path / "library-seed0.db.metrics.jsonl").read_text().splitlines()[0])
