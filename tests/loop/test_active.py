"""Active allocation (`tfgrpo train --active`): extra groups go to prompts with signal that hold fewer than
--active-min experiences, within --active-budget per epoch; prompts whose last group was flat move to the
end of the next epoch; every epoch runs as many groups as a uniform one; a resumed run allocates as an
unbroken one would."""

from __future__ import annotations

import json

import pytest

from support.cli import tfgrpo
from support.students import Student
from tfgrpo import TrainingFreeGRPO
from tfgrpo.learn import ExampleUpdate, Group
from tfgrpo.learn.update import StepContext
from tfgrpo.loop._active import ActiveAllocation
from tfgrpo.loop.config import TrainConfig
from tfgrpo.rewards.base import Score
from tfgrpo.tasks import get_task

SIGNAL, RIGHT, WRONG = "s", "r", "w"
KIND = {f"{k}{i}": k for k, n in ((SIGNAL, 3), (RIGHT, 3), (WRONG, 4)) for i in range(n)}
SAMPLES = [{"id": i, "prompt": f"prompt {i}"} for i in KIND]
CONFIG = TrainConfig(batch_size=4, epochs=3, group_size=4, active=True, active_min=3, active_budget=3)


def group_of(sample: dict) -> Group:
    rewards = {SIGNAL: [1.0, 0.0, 0.0, 0.0], RIGHT: [1.0] * 4, WRONG: [0.0] * 4}[KIND[sample["id"]]]
    return Group(sample, [f"answer {r}" for r in rewards], [Score(r) for r in rewards])


def run(library: TrainingFreeGRPO, steps: int | None = None, start: int = 0, held: dict | None = None) -> list:
    """Steps of an active run (epoch, the batch's ids), each committed as `train` commits it; `held`: each
    group's (id, experiences its prompt held before it), in order."""
    allocation = ActiveAllocation(library, SAMPLES, CONFIG)
    examples = ExampleUpdate(library)
    made = []
    for global_step, (epoch, _index, batch) in enumerate(allocation.batches(), start=start + 1):
        groups = [group_of(s) for s in batch]
        if held is not None:
            held.setdefault(epoch, []).extend(
                (s["id"], len(library.filter_by_metadata(sample_id=s["id"]))) for s in batch
            )
        ctx = StepContext(seed=global_step, global_step=global_step, position={"global_step": global_step})
        allocation.commit(groups, ctx)
        examples.commit(groups, ctx)
        made.append((epoch, [s["id"] for s in batch]))
        if steps is not None and len(made) == steps:
            break
    return made


def test_extra_groups_go_where_there_is_signal_within_the_budget():
    library = TrainingFreeGRPO()
    held: dict[int, list] = {}
    steps = run(library, held=held)
    for epoch in range(CONFIG.epochs):
        ids = [i for e, batch in steps if e == epoch for i in batch]
        assert len(ids) == len(SAMPLES)  # as many groups as a uniform epoch
        assert len(ids) - len(set(ids)) <= CONFIG.active_budget
        seen: set[str] = set()
        for i, before in held[epoch]:
            if i in seen:  # an extra group: for a prompt with signal that held fewer than --active-min
                assert KIND[i] == SIGNAL and before < CONFIG.active_min
            seen.add(i)
    assert len(held[0]) > len({i for i, _ in held[0]})  # the first epoch spent extra groups
    # A prompt with signal stores one rollout per group; once it holds --active-min, no more extra groups.
    assert held[2] and all(before >= CONFIG.active_min for i, before in held[2] if KIND[i] == SIGNAL)


def test_flat_prompts_go_to_the_end_of_the_next_epoch_where_extra_groups_displace_them():
    steps = run(TrainingFreeGRPO())
    for epoch in (1, 2):
        before = {i for e, batch in steps if e < epoch for i in batch}
        known_flat = [
            KIND[i] != SIGNAL and i in before for i in dict.fromkeys(i for e, b in steps if e == epoch for i in b)
        ]
        # each prompt's first group of the epoch, in order: those whose last group was flat come last
        assert known_flat == sorted(known_flat) and any(known_flat)
    first_epoch = [i for e, batch in steps if e == 0 for i in batch]
    assert len(set(first_epoch)) < len(SAMPLES)  # the extra groups took the places of the last prompts


def test_a_resumed_allocation_continues_as_the_unbroken_one(tmp_path):
    with TrainingFreeGRPO.open(tmp_path / "whole.db", seed=0) as library:
        whole = run(library)
    for stop in (1, 3, 5):
        path = tmp_path / f"broken{stop}.db"
        with TrainingFreeGRPO.open(path, seed=0) as library:
            first = run(library, steps=stop)
        with TrainingFreeGRPO.open(path, seed=0) as library:  # a new process: the state comes from the library
            assert library.progress["active"]["epoch"] == first[-1][0]
            rest = run(library, start=stop)
        assert first + rest == whole


def test_a_library_trained_without_active_allocation_is_not_resumed_with_it():
    library = TrainingFreeGRPO()
    library.add_rollout_groups([([("p", "a"), ("p", "b")], [1.0, 0.0], None)], progress={"global_step": 1})
    with pytest.raises(Exception, match="trained without --active"):
        ActiveAllocation(library, SAMPLES, CONFIG)


@pytest.fixture
def student(monkeypatch):
    samples = get_task("multidomain", domains="dates,json", n=8, test_fraction=0.25).load("all")
    made: list[Student] = []

    def get_backend(spec, **kwargs):
        made.append(Student(samples, lottery=3))
        return made[-1]

    monkeypatch.setattr("tfgrpo.llm.get_backend", get_backend)
    return made


ARGS = ["--task", "multidomain", "--task-option", "domains=dates,json", "--task-option", "n=8", "--task-option",
        "test_fraction=0.25", "-G", "4", "--batch-size", "4", "--epochs", "2", "--shots", "0"]  # fmt: skip


def test_train_active_runs_as_many_groups_as_uniform_and_refuses_what_it_cannot_do(student, tmp_path):
    uniform = tmp_path / "uniform.db"
    tfgrpo("train", *ARGS, "-l", uniform)
    active = tmp_path / "active.db"
    ran = tfgrpo("train", *ARGS, "-l", active, "--active", "--active-min", "2", "--active-budget", "2")
    assert "library:" in ran.stdout
    lines = [json.loads(line) for line in (tmp_path / "active.db.metrics.jsonl").read_text().splitlines()]
    uniform_lines = [json.loads(line) for line in (tmp_path / "uniform.db.metrics.jsonl").read_text().splitlines()]
    assert sum(m["groups"] for m in lines) == sum(m["groups"] for m in uniform_lines) == 12 * 2
    assert max(m["extra_groups"] for m in lines) <= 2
    assert any(m["extra_groups"] > 0 for m in lines)
    # Resuming a finished run does nothing; resuming without --active is refused.
    again = tfgrpo("train", *ARGS, "-l", active, "--active", "--active-min", "2", "--active-budget", "2")
    assert "steps run: 0" in again.stdout
    refused = tfgrpo("train", *ARGS, "-l", active, check=False)
    assert refused.returncode == 1 and "active" in refused.stderr
    lessons = tfgrpo("train", *ARGS, "-l", tmp_path / "l.db", "--strategy", "lessons", "--active", check=False)
    assert lessons.returncode == 1 and "--strategy examples or both" in lessons.stderr
