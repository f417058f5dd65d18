"""The task registry and the bundled tasks: arithmetic, humaneval, math."""

from __future__ import annotations

import json
import operator

import pytest

import tfgrpo.tasks.task
from tfgrpo.errors import ConfigError
from tfgrpo.rewards import MathReward, NumericMatchReward, UnitTestReward
from tfgrpo.tasks import Task, generate_arithmetic, get_task, list_tasks, load_humaneval, register_task

OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def evaluate(expression: str) -> int:
    """Independent check of the generator's answers: * first, then + and - left to right."""
    tokens = expression.split()
    terms, ops = [int(tokens[0])], []
    for op, number in zip(tokens[1::2], tokens[2::2]):
        if op == "*":
            terms[-1] *= int(number)
        else:
            terms.append(int(number))
            ops.append(op)
    total = terms[0]
    for op, term in zip(ops, terms[1:]):
        total = OPERATORS[op](total, term)
    return total


def test_bundled_tasks_are_registered():
    assert {"arithmetic", "humaneval", "math"} <= set(list_tasks())


def test_unknown_tasks_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown task 'chess'; available: arithmetic"):
        get_task("chess")
    with pytest.raises(ConfigError, match="has no option colour"):
        get_task("arithmetic", colour="red")


def test_arithmetic_is_deterministic_per_seed():
    assert generate_arithmetic(50, seed=3) == generate_arithmetic(50, seed=3)
    assert generate_arithmetic(50, seed=3) != generate_arithmetic(50, seed=4)
    assert get_task("arithmetic", seed=5).load("test") == get_task("arithmetic", seed=5).load("test")


def test_arithmetic_default_is_easy_two_number_sums_with_right_answers():
    samples = get_task("arithmetic").load("all")
    assert len(samples) == 200 == len({s["prompt"] for s in samples})
    for sample in samples:
        a, op, b = sample["expression"].split()
        assert op == "+" and 1 <= int(a) <= 20 and 1 <= int(b) <= 20
        assert sample["prompt"] == f"What is {sample['expression']}?"
        assert sample["answer"] == int(a) + int(b)


@pytest.mark.parametrize("difficulty", ["medium", "hard"])
def test_harder_presets_mix_operations_and_stay_correct(difficulty):
    samples = get_task("arithmetic", difficulty=difficulty, n=300, seed=1).load("all")
    used = {token for s in samples for token in s["expression"].split() if token in OPERATORS}
    assert used == set("+-" if difficulty == "medium" else "+-*")
    assert all(s["answer"] == evaluate(s["expression"]) >= 0 for s in samples)


def test_arithmetic_settings_override_the_preset():
    samples = generate_arithmetic(9, seed=0, operations="-", min_operand=10, max_operand=12, allow_negative=True)
    assert any(s["answer"] < 0 for s in samples)
    assert all(s["answer"] == evaluate(s["expression"]) for s in samples)
    samples = get_task("arithmetic", operands=3, max_operand=9).load("all")
    assert all(len(s["expression"].split()) == 5 for s in samples)


def test_arithmetic_bad_settings_fail_early():
    with pytest.raises(ConfigError, match="difficulty"):
        get_task("arithmetic", difficulty="insane")
    with pytest.raises(ConfigError, match="operations"):
        get_task("arithmetic", operations="/")
    with pytest.raises(ConfigError, match="distinct"):
        get_task("arithmetic", n=100, max_operand=3)  # only 9 sums exist


def test_arithmetic_reward_reads_the_number_in_the_reply():
    task = get_task("arithmetic")
    sample = task.load("train")[0]
    assert isinstance(task.reward, NumericMatchReward)
    assert task.reward("q", f"{sample['expression']} = {sample['answer']}", sample) == 1.0
    assert task.reward("q", f"The answer is {sample['answer'] + 1}.", sample) == 0.0
    assert task.instruction and task.max_tokens > 0


def test_task_splits_are_disjoint_and_cover_everything():
    task = get_task("arithmetic", n=100, test_fraction=0.25)
    train, test, everything = task.load("train"), task.load("test"), task.load("all")
    assert len(test) == 25 and len(train) == 75
    assert not {s["prompt"] for s in train} & {s["prompt"] for s in test}
    assert sorted(s["id"] for s in train + test) == sorted(s["id"] for s in everything)
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        task.load("dev")


def test_humaneval_has_the_164_problems_with_what_the_reward_needs():
    samples = load_humaneval()
    assert len(samples) == 164
    first = samples[0]
    assert first["id"] == "HumanEval/0" and first["entry_point"] == "has_close_elements"
    assert first["prompt"].startswith("from typing import List") and "def check(candidate)" in first["test"]
    assert first["answer"] == first["canonical_solution"]
    task = get_task("humaneval")
    assert isinstance(task.reward, UnitTestReward)
    assert len(task.load("train")) + len(task.load("test")) == 164


def test_humaneval_task_scores_a_real_solution():
    task = get_task("humaneval")
    sample = next(s for s in task.load("all") if s["id"] == "HumanEval/4")
    assert task.reward(sample["prompt"], sample["answer"], sample) == 1.0
    assert task.reward(sample["prompt"], "    return 0.0\n", sample) == 0.0


def test_math_task_from_a_jsonl_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    rows = [{"problem": "Half of one?", "answer": "\\frac{1}{2}"}, {"problem": "Two squared?", "answer": "4"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = get_task("math", path=path, prompt_field="problem", test_fraction=0.5)
    assert isinstance(task.reward, MathReward)
    samples = task.load("all")
    assert [s["prompt"] for s in samples] == ["Half of one?", "Two squared?"]
    assert task.reward("q", "The answer is $\\boxed{0.5}$", samples[0]) == 1.0
    with pytest.raises(ConfigError, match="path="):
        get_task("math")


def test_custom_tasks_can_be_registered(monkeypatch):
    monkeypatch.setattr("tfgrpo.tasks.task._REGISTRY", dict(tfgrpo.tasks.task._REGISTRY))
    task = Task(
        name="echo", loader=lambda: [{"id": "1", "prompt": "say hi", "answer": "hi"}], reward=NumericMatchReward()
    )
    register_task("echo-test", lambda: task)
    assert get_task("echo-test") is task
    assert "echo-test" in list_tasks()
    with pytest.raises(ConfigError):
        register_task("", lambda: task)
