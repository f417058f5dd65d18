"""`tfgrpo export --format sft|dpo|grpo|kto` and `tfgrpo.export_dataset`: rows from a library made by a short
training run (over real HTTP to a scripted stand-in, so the groups are known), checked field by field against
the rollout log; every filter; the rows load with Hugging Face `datasets`."""

from __future__ import annotations

import json

import pytest

from support.cli import tfgrpo
from support.llm import StandIn, chat_reply
from tfgrpo import ConfigError, TrainingFreeGRPO, export_dataset
from tfgrpo.learn import ExampleUpdate
from tfgrpo.learn.rollout_log import Filters, Recorder, RolloutLog
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import TrainConfig, train
from tfgrpo.rewards.base import FunctionReward, Score
from tfgrpo.semantic import LessonLibrary

SAMPLES = [
    {"id": "a", "prompt": "What is 2+2?", "answer": "4"},
    {"id": "b", "prompt": "What is 3+3?", "answer": "6"},
    {"id": "c", "prompt": "What is 4+4?", "answer": "8"},
]
# The stand-in answers each question right, one off, and far off (rewards 1, 0.25, 0); "4+4" only one off
# or far off (a reward gap of 0.25: no DPO pair at the default 0.5).
ANSWERS = {"2+2": ["4", "5", "40"], "3+3": ["6", "7", "60"], "4+4": ["9", "80", "9"]}
CONFIG = TrainConfig(epochs=2, batch_size=3, group_size=3, max_tokens=8, shots=1)


def graded(prompt, response, sample):
    if response.strip() == sample["answer"]:
        return Score(1.0)
    near = response.strip().isdigit() and abs(int(response) - int(sample["answer"])) == 1
    return Score(0.25 if near else 0.0)


async def policy(index, path, body):
    text = body["messages"][-1]["content"]
    question = max(ANSWERS, key=text.rfind)  # the question asked, after any example
    return chat_reply(ANSWERS[question][: body.get("n", 1)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A library trained two steps on SAMPLES (rollouts logged), with one lesson."""
    path = str(tmp_path_factory.mktemp("export") / "lib.db")
    with (
        StandIn(policy) as server,
        OpenAIBackend(base_url=server.url, model="scripted", max_retries=0, timeout=10) as llm,
        TrainingFreeGRPO.open(path) as lib,
        RolloutLog(path) as log,
    ):
        train(
            llm,
            SAMPLES,
            FunctionReward(graded),
            [ExampleUpdate(lib, "sums")],
            CONFIG,
            rollout_log=log,
            task_name="sums",
        )
    with LessonLibrary(path) as lessons:
        lessons.replace_all({"G0": "Give only the number."})
    return path


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def log_rows(path, **filters) -> list:
    with RolloutLog(path) as log:
        return list(log.rows(Filters(**filters)))


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def test_sft_rows_are_the_librarys_experiences_and_each_is_a_logged_rollout_that_beat_its_group(trained, tmp_path):
    with TrainingFreeGRPO.open(trained) as lib:
        kept = list(lib.experience_library)
    assert len(kept) == 2 * (1 + 1 + 2)  # two epochs; 4+4: both "9"s
    # Each prompt and response once, in the library's order.
    experiences, seen = [], set()
    for e in kept:
        if (e.prompt, e.response) not in seen:
            seen.add((e.prompt, e.response))
            experiences.append(e)
    assert seen == {("What is 2+2?", "4"), ("What is 3+3?", "6"), ("What is 4+4?", "9")}
    assert export_dataset(trained, "sft", tmp_path / "sft.jsonl") == 3
    rows = rows_of(tmp_path / "sft.jsonl")
    assert rows == [{"messages": user(e.prompt) + assistant(e.response)} for e in experiences]
    logged = {(r.prompt, r.response): r for r in log_rows(trained)}
    for e in experiences:
        assert logged[(e.prompt, e.response)].advantage > 0 and logged[(e.prompt, e.response)].task == "sums"
    export_dataset(trained, "sft", tmp_path / "plain.jsonl", plain=True)
    assert rows_of(tmp_path / "plain.jsonl") == [{"prompt": e.prompt, "completion": e.response} for e in experiences]


def test_dpo_pairs_each_groups_best_with_its_worst_on_the_tasks_prompt(trained, tmp_path):
    count = export_dataset(trained, "dpo", tmp_path / "dpo.jsonl")
    rows = rows_of(tmp_path / "dpo.jsonl")
    groups: dict[str, list] = {}
    for r in log_rows(trained):
        groups.setdefault(r.group_id, []).append(r)
    expected = []
    for group_id in sorted(groups):
        members = sorted(groups[group_id], key=lambda r: r.index)
        best, worst = max(members, key=lambda r: r.reward), min(members, key=lambda r: r.reward)
        if best.reward - worst.reward >= 0.5:
            expected.append(
                {"prompt": user(best.prompt), "chosen": assistant(best.response), "rejected": assistant(worst.response)}
            )
    assert rows == expected and count == len(rows) == 4  # 2 steps x 2 questions with a gap of 1 (4+4: 0.25)
    assert {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows} == {("4", "40"), ("6", "60")}
    # The prompt is the task's: never the prompt as sent (step 2's carried an example).
    assert all(r["prompt"] == user(s["prompt"]) for r in rows for s in SAMPLES if s["prompt"] in str(r["prompt"]))
    assert export_dataset(trained, "dpo", tmp_path / "small.jsonl", min_gap=0.25, plain=True) == 6
    assert {"prompt": "What is 4+4?", "chosen": "9", "rejected": "80"} in rows_of(tmp_path / "small.jsonl")


def test_grpo_rows_are_the_prompts_once_with_their_reference_answers(trained, tmp_path):
    assert export_dataset(trained, "grpo", tmp_path / "grpo.jsonl") == 3
    rows = sorted(rows_of(tmp_path / "grpo.jsonl"), key=lambda r: r["id"])
    assert rows == [{"prompt": user(s["prompt"]), "id": s["id"], "answer": s["answer"]} for s in SAMPLES]
    export_dataset(trained, "grpo", tmp_path / "hard.jsonl", plain=True, max_reward=0.2)  # group means 0.42, 0.42, 0.17
    assert rows_of(tmp_path / "hard.jsonl") == [{"prompt": "What is 4+4?", "id": "c", "answer": "8"}]


def test_kto_rows_are_the_rollouts_that_differ_from_their_groups_mean_labelled_by_which_way(trained, tmp_path):
    export_dataset(trained, "kto", tmp_path / "kto.jsonl", plain=True)
    rows = rows_of(tmp_path / "kto.jsonl")
    logged = [r for r in log_rows(trained) if r.advantage]
    assert rows == [{"prompt": r.prompt, "completion": r.response, "label": r.advantage > 0} for r in logged]
    assert len(rows) == 2 * 3 * 3 and sum(r["label"] for r in rows) == 2 * (1 + 1 + 2)  # 4+4: "9","9" above "80"


def test_with_lessons_puts_the_current_lessons_in_every_rows_system_message(trained, tmp_path):
    with LessonLibrary(trained) as lessons:
        block = lessons.render()
    assert "[G0]. Give only the number." in block
    export_dataset(trained, "dpo", tmp_path / "dpo.jsonl", with_lessons=True)
    assert {json.dumps(r["prompt"][0]) for r in rows_of(tmp_path / "dpo.jsonl")} == {
        json.dumps({"role": "system", "content": block})
    }
    export_dataset(trained, "sft", tmp_path / "sft.jsonl", with_lessons=True, plain=True)
    assert all(r["prompt"].startswith(block + "\n\n") for r in rows_of(tmp_path / "sft.jsonl"))


def test_filters_select_by_task_metadata_reward_version_date_and_source(trained, tmp_path):
    out = tmp_path / "rows.jsonl"
    steps = {1: [r for r in log_rows(trained) if r.step == 1], 2: [r for r in log_rows(trained) if r.step == 2]}
    second = min(r.library_version for r in steps[2])
    assert max(r.library_version for r in steps[1]) < second

    def kto(**filters) -> list[tuple[str, str]]:
        export_dataset(trained, "kto", out, plain=True, **filters)
        return [(r["prompt"], r["completion"]) for r in rows_of(out)]

    everything = kto()
    assert kto(task="sums") == everything and kto(task="other") == []
    assert kto(where={"sample_id": "a"}) == [p for p in everything if "2+2" in p[0]]
    assert kto(where=["sample_id=a", "task=sums"]) == kto(where={"sample_id": "a"})
    assert kto(min_reward=0.25) == [p for p in everything if p[1] in ("4", "5", "6", "7", "9")]
    assert kto(max_reward=0.0) == [p for p in everything if p[1] in ("40", "60", "80")]
    assert len(kto(min_library_version=second)) == len(everything) // 2
    created = sorted(r.created for r in log_rows(trained))
    assert kto(since=created[-1] + 1) == [] and kto(until=created[0]) == [] and kto(since="2001-01-01") == everything
    assert kto(until="2001-01-01T00:00:00+02:00") == []
    # Evaluation rollouts (held-out prompts) count only when asked for.
    with RolloutLog(trained) as log:
        held_out = Recorder(log, "eval", "e", task="sums")
        held_out.add(
            {"prompt": "What is 9+9?", "answer": "18"}, None, [_run("18"), _run("1")], [Score(1.0), Score(0.0)]
        )
        held_out.flush()
    assert kto() == everything
    assert kto(sources="eval") == [("What is 9+9?", "18"), ("What is 9+9?", "1")]
    assert len(kto(sources=["train", "eval"])) == len(everything) + 2
    for bad, match in (
        ({"sources": "test"}, "sources must be some of"),
        ({"since": "yesterday"}, "neither a date"),
        ({"min_reward": float("nan")}, "finite"),
        ({"colour": "red"}, "unknown export filter colour"),
        ({"where": ["task"]}, "KEY=VALUE"),
    ):
        with pytest.raises(ConfigError, match=match):
            kto(**bad)
    with pytest.raises(ConfigError, match="unknown export format"):
        export_dataset(trained, "ppo", out)


def test_rows_load_with_hugging_face_datasets(trained, tmp_path):
    datasets = pytest.importorskip("datasets")
    for format, columns in {
        "sft": {"messages"},
        "dpo": {"prompt", "chosen", "rejected"},
        "grpo": {"prompt", "id", "answer"},
        "kto": {"prompt", "completion", "label"},
    }.items():
        for plain in (False, True):
            path = tmp_path / f"{format}-{plain}.jsonl"
            count = export_dataset(trained, format, path, plain=plain, with_lessons=True)
            loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
            expected = {"prompt", "completion"} if (format, plain) == ("sft", True) else columns
            assert set(loaded.column_names) == expected and len(loaded) == count > 0
            assert loaded[0] == rows_of(path)[0]


def test_the_command_line_writes_the_same_rows_and_refuses_dataset_flags_without_format(trained, tmp_path):
    out = tmp_path / "cli.jsonl"
    result = tfgrpo("export", "-l", trained, "--format", "dpo", "--plain", "--min-gap", "0.25", out)
    assert "wrote 6 dpo rows" in result.stdout
    export_dataset(trained, "dpo", tmp_path / "api.jsonl", plain=True, min_gap=0.25)
    assert out.read_text() == (tmp_path / "api.jsonl").read_text()
    tfgrpo("export", "-l", trained, "--format", "kto", "--where", "sample_id=b", "--since", "2001-01-01",
           "--source", "train,serve", out)  # fmt: skip
    assert {r["completion"][0]["content"] for r in rows_of(out)} == {"6", "7", "60"}
    result = tfgrpo("export", "-l", trained, "--plain", tmp_path / "copy.db", check=False)
    assert result.returncode == 1 and "--plain: only with --format" in result.stderr
    assert not (tmp_path / "copy.db").exists()


def _run(text):
    from tfgrpo.agents.trajectory import Trajectory
    from tfgrpo.llm.base import Generation

    return Trajectory.of(Generation(text))
