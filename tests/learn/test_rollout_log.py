"""The rollout log: every rollout of a training run, an evaluation and `tfgrpo serve`, in the library's own
database (SQLite and PostgreSQL), kept whatever the experience library prunes, with a retention setting;
over real HTTP to a scripted stand-in model (the one way to get the same answers on demand)."""

from __future__ import annotations

import pytest

from store.server import raw_query
from support.llm import StandIn, chat_reply
from tfgrpo import ConfigError, GRPOConfig, LibraryFormatError, TrainingFreeGRPO
from tfgrpo.learn import ExampleUpdate
from tfgrpo.learn.rollout_log import SOURCES, Filters, Recorder, RolloutLog
from tfgrpo.llm.base import to_messages
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import TrainConfig, run_step, train
from tfgrpo.loop.evaluate import EvalConfig, evaluate
from tfgrpo.rewards.base import FunctionReward, Score

SAMPLES = [
    {"id": "a", "prompt": "What is 2+2?", "answer": "4"},
    {"id": "b", "prompt": "What is 3+3?", "answer": "6"},
]
REWARD = FunctionReward(lambda prompt, response, sample: Score(float(response.strip() == sample["answer"]), "checked"))
CONFIG = TrainConfig(epochs=2, batch_size=2, group_size=3, max_tokens=8, shots=1)
EVERYTHING = Filters(sources=SOURCES)


async def policy(index, path, body):
    """Per group: the right answer, a wrong one, the right one again."""
    text = body["messages"][-1]["content"]
    answer = "4" if text.rfind("2+2") > text.rfind("3+3") else "6"  # the question, after any example
    return chat_reply([answer if i % 2 == 0 else "5" for i in range(body.get("n", 1))], 12, 3)


def backend(stand_in):
    return OpenAIBackend(base_url=stand_in.url, model="scripted", max_retries=0, timeout=10)


def test_a_training_run_logs_every_rollout_with_its_prompts_group_advantage_and_versions(store_target):
    with (
        StandIn(policy) as server,
        backend(server) as llm,
        TrainingFreeGRPO.open(store_target) as lib,
        RolloutLog(store_target) as log,
    ):
        train(llm, SAMPLES, REWARD, [ExampleUpdate(lib, "sums")], CONFIG, rollout_log=log, task_name="sums")
        rows = list(log.rows(EVERYTHING))
        bodies = server.bodies
    assert len(rows) == 2 * 2 * 3  # steps x prompts x G, each once
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row.group_id, []).append(row)
    assert len(groups) == 4
    for members in groups.values():
        members.sort(key=lambda r: r.index)
        assert [r.index for r in members] == [0, 1, 2]
        sample = next(s for s in SAMPLES if s["prompt"] == members[0].prompt)
        assert [r.response for r in members] == [sample["answer"], "5", sample["answer"]]
        assert [r.reward for r in members] == [1.0, 0.0, 1.0]
        assert [round(r.advantage, 9) for r in members] == [round(1 / 3, 9), round(-2 / 3, 9), round(1 / 3, 9)]
        assert {r.reason for r in members} == {"checked"}
        for r in members:
            assert (r.source, r.task, r.strategy, r.model, r.sample_id) == (
                "train", "sums", "examples", "scripted", sample["id"]
            )  # fmt: skip
            assert r.sample == {"id": sample["id"], "answer": sample["answer"]}
            assert r.metadata == {"task": "sums", "sample_id": sample["id"]}
            # (A server reports the completion tokens of a whole request of n: unknown for each.)
            assert r.prompt_tokens == 12 and r.completion_tokens is None and r.seconds >= 0
    # The prompt as sent is what went to the model: at step 2 with an example the library learned at step 1.
    by_step = {step: [r for r in rows if r.step == step] for step in (1, 2)}
    sent = {str(to_messages(r.sent)) for r in by_step[2]}
    assert {str(b["messages"]) for b in bodies[2:]} == sent and len(sent) == 2
    assert all("A: " in str(r.sent) for r in by_step[2]) and not any("A: " in str(r.sent) for r in by_step[1])
    assert all(r.library_version < min(s.library_version for s in by_step[2]) for r in by_step[1])
    assert all(r.lessons_version is None for r in rows)


def test_a_step_run_again_after_a_restart_rewrites_its_rows_instead_of_adding_them(tmp_path):
    path = str(tmp_path / "lib.db")
    with StandIn(policy) as server, backend(server) as llm, RolloutLog(path) as log:
        for _ in range(2):  # the same step of the same run, twice (as after a kill before its commit)
            with TrainingFreeGRPO.open(path) as lib:
                run_step(
                    llm,
                    SAMPLES,
                    REWARD,
                    [ExampleUpdate(lib)],
                    CONFIG,
                    global_step=1,
                    record=Recorder(log, "train", "r"),
                )
        assert len(log) == 6
        assert sorted(r.id for r in log.rows(EVERYTHING)) == sorted(
            f"train:r:1:g{g}:{i}" for g in range(2) for i in range(3)
        )


@pytest.mark.filterwarnings("ignore::tfgrpo.TFGRPOWarning")  # (a library of one experience, to prune)
def test_pruning_clearing_or_reloading_the_library_never_deletes_the_log(tmp_path):
    path = str(tmp_path / "lib.db")
    with StandIn(policy) as server, backend(server) as llm, RolloutLog(path) as log:
        with TrainingFreeGRPO.open(path, GRPOConfig(max_library_size=1)) as lib:
            train(llm, SAMPLES, REWARD, [ExampleUpdate(lib)], CONFIG, rollout_log=log)
            assert lib.total_pruned > 0 and lib.library_size() == 1
            assert len(log) == 12
            lib.prune()
            lib.save_to_file(tmp_path / "copy.json")
            lib.clear()
            lib.load_from_file(tmp_path / "copy.json")
        assert len(log) == 12
    assert raw_query(path, "SELECT COUNT(*) FROM rollout_log") == [(12,)]


def test_rows_past_the_retention_are_deleted_and_the_setting_is_the_librarys(store_target):
    now = [1_000_000.0]
    with RolloutLog(store_target, retention_days=1, clock=lambda: now[0]) as log:
        old = Recorder(log, "train", "old", clock=lambda: now[0] - 2 * 86400)
        old.add(SAMPLES[0], "q", [_run("4")], [Score(1.0)])
        new = Recorder(log, "train", "new", clock=lambda: now[0])
        new.add(SAMPLES[1], "q", [_run("6")], [Score(1.0)])
        old.flush()  # the first write also deletes what is past the retention: the row just written
        assert len(log) == 0
        new.flush()
        assert [r.run for r in log.rows(EVERYTHING)] == ["new"]
    with RolloutLog(store_target, clock=lambda: now[0]) as log:  # the setting is stored with the library
        assert log.retention_days == 1
        now[0] += 2 * 86400
        assert log.prune() == 1 and len(log) == 0
    with RolloutLog(store_target, retention_days=0) as log:  # 0: for ever again
        assert log.retention_days is None and log.prune() == 0
    with pytest.raises(ConfigError, match="retention_days"):
        RolloutLog(store_target, retention_days=-1)


def test_a_log_written_by_a_newer_tfgrpo_is_refused(store_target):
    RolloutLog(store_target).close()
    raw_query(store_target, "UPDATE rollout_meta SET value = '9' WHERE key = 'schema_version'")
    with pytest.raises(LibraryFormatError, match=r"rollout log .* newer tfgrpo \(schema 9"):
        RolloutLog(store_target)


def test_an_evaluation_logs_each_conditions_rollouts_apart_from_the_training_ones(tmp_path):
    path = str(tmp_path / "lib.db")
    config = EvalConfig(k=2, max_tokens=8, shots=1, seeds=(0, 1))
    with (
        StandIn(policy) as server,
        backend(server) as llm,
        TrainingFreeGRPO.open(path) as lib,
        RolloutLog(path) as log,
    ):
        lib.add_rollout_group([("What is 1+1?", "2"), ("What is 1+1?", "3")], [1.0, 0.0])
        evaluate(llm, SAMPLES, REWARD, {"library": lib, "zero-shot": None}, config, record=Recorder(log, "eval", "e1"))
        rows = list(log.rows(EVERYTHING))
        assert list(log.rows()) == rows  # no filter: every row
        assert list(log.rows(Filters())) == []  # an export's default: training rollouts only
    assert len(rows) == 2 * 2 * 2 * 2  # conditions x seeds x prompts x k
    assert {r.condition for r in rows} == {"library", "zero-shot"}
    assert {r.source for r in rows} == {"eval"} and len({r.group_id for r in rows}) == 2 * 2 * 2
    assert all(("Q: What is 1+1?" in str(r.sent)) == (r.condition == "library") for r in rows)


def test_an_attribution_logs_every_lesson_conditions_rollouts_with_the_lessons_version(tmp_path):
    from tfgrpo.loop.attribution import attribute_lessons
    from tfgrpo.semantic import LessonLibrary

    path = str(tmp_path / "lib.db")
    config = EvalConfig(k=2, max_tokens=8, shots=0)
    with (
        StandIn(policy) as server,
        backend(server) as llm,
        LessonLibrary(path) as lessons,
        RolloutLog(path) as log,
    ):
        lessons.replace_all({"G0": "Give only the number.", "G1": "Check the sum."})
        attribute_lessons(llm, SAMPLES, REWARD, lessons, config, record=Recorder(log, "attribute", "a1"))
        rows = list(log.rows(Filters(sources=("attribute",))))
        version = lessons.version
    assert len(rows) == 3 * 2 * 2  # conditions (all lessons, without each) x prompts x k
    assert {r.condition for r in rows} == {"all lessons", "without G0", "without G1"}
    assert {r.lessons_version for r in rows} == {version}
    for r in rows:  # the prompt as sent holds exactly the lessons of its condition
        sent = str(r.sent)
        assert ("Give only the number." in sent) == (r.condition != "without G0")
        assert ("Check the sum." in sent) == (r.condition != "without G1")
    assert {r.reward for r in rows} == {1.0, 0.0} and all(r.reason == "checked" for r in rows)


def _run(text):
    from tfgrpo.agents.trajectory import Trajectory
    from tfgrpo.llm.base import Generation

    return Trajectory.of(Generation(text))
