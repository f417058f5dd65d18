"""The loop end to end on the bundled model (small sizes)."""

import json

import pytest

from tfgrpo import ConfigError, TrainingFreeGRPO
from tfgrpo.learn import ExampleUpdate
from tfgrpo.loop import TrainConfig, train
from tfgrpo.loop.evaluate import EvalConfig, evaluate
from tfgrpo.tasks import get_task

pytestmark = pytest.mark.model

ROLLOUT = {"chat": False, "stop": ("\n",), "max_tokens": 6, "shots": 2}


@pytest.fixture(scope="module")
def task():
    return get_task("arithmetic", n=40, seed=5)


def test_training_fills_the_library_with_rollouts_that_beat_their_group(local_backend, task, tmp_path):
    samples = task.load("train")[:4]
    grpo = TrainingFreeGRPO.open(tmp_path / "lib.db", seed=0)
    # Two solved questions (not trained on) show the tiny model the answer format, so groups have signal.
    for solved in task.load("train")[4:6]:
        grpo.add_rollout_group([(solved["prompt"], f" {solved['answer']}"), (solved["prompt"], " 0")], [1.0, 0.0])
    config = TrainConfig(batch_size=2, group_size=4, seed=0, **ROLLOUT)
    updates = [ExampleUpdate(grpo, task_name="arithmetic")]
    history = train(local_backend, samples, task.reward, updates, config, metrics_path=tmp_path / "m.jsonl")

    assert [m.global_step for m in history] == [1, 2]
    assert grpo.total_rollouts == 4 + 16 and grpo.progress["global_step"] == 2
    assert grpo.total_stored == 2 + sum(m.stored for m in history) == grpo.library_size()
    # Not vacuous: some group had better and worse rollouts, and its better ones were kept.
    assert any(m.groups_with_signal for m in history) and grpo.total_stored > 2
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [line["global_step"] for line in lines] == [1, 2]
    assert {"reward_mean", "signal_share", "library_size", "completion_tokens", "seconds"} <= set(lines[0])
    assert all(line["completion_tokens"] > 0 for line in lines)
    by_prompt = {s["prompt"]: s for s in task.load("train")}
    for exp in grpo.experience_library:
        # 0/1 rewards: above the group mean means solved.
        assert exp.advantage > 0
        assert task.reward(exp.prompt, exp.response, by_prompt[exp.prompt]) == 1.0
        if exp.prompt in {s["prompt"] for s in samples}:  # trained, not one of the two seeded ones
            assert exp.metadata["task"] == "arithmetic"

    # Everything is done: running again changes nothing.
    assert train(local_backend, samples, task.reward, updates, config) == []
    assert grpo.total_rollouts == 4 + 16
    grpo.close()


def test_evaluation_compares_conditions_on_the_same_held_out_prompts(local_backend, task):
    train_samples, test_samples = task.load("train"), task.load("test")[:4]
    grpo = TrainingFreeGRPO(seed=0)
    solved = [(s["prompt"], f" {s['answer']}") for s in train_samples[:6]]
    for prompt, answer in solved:
        grpo.add_rollout_group([(prompt, answer), (prompt, " 0")], [1.0, 0.0])
    config = EvalConfig(k=2, batch_size=4, **ROLLOUT)
    report = evaluate(
        local_backend,
        test_samples,
        task.reward,
        {"baseline": None, "library": grpo},
        config,
        train_prompts={s["prompt"] for s in train_samples},
    )
    assert [c.name for c in report.conditions] == ["baseline", "library"]
    for condition in report.conditions:
        assert condition.rewards.shape == (1, 4, 2)  # evaluation seeds x prompts x k
        assert set(condition.rewards.ravel()) <= {0.0, 1.0}
    diff = report.comparisons[0]
    assert diff.ci_low <= diff.mean_diff <= diff.ci_high
    assert "library - baseline" in report.table()

    with pytest.raises(ConfigError, match="also training prompts"):
        evaluate(
            local_backend,
            train_samples[:2],
            task.reward,
            {"baseline": None},
            config,
            train_prompts={s["prompt"] for s in train_samples},
        )
