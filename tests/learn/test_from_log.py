"""`tfgrpo learn-from-log`: a library learns from a log of rollouts it never made. Every record shape, the
window that groups them, malformed lines (skipped with their line numbers, or refused with --strict, with
nothing already learned lost), resuming after a stop and after the log grew, the lessons strategy with a
critic, bounded memory, and the rollout log of what was read."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from support.cli import tfgrpo
from support.llm import StandIn, chat_reply
from tfgrpo import ConfigError, GRPOConfig, TrainingFreeGRPO
from tfgrpo.errors import DatasetError, DatasetNotFoundError
from tfgrpo.learn import ExampleUpdate, LessonUpdate
from tfgrpo.learn.ingest import BadRecord, parse_record
from tfgrpo.learn.rollout_log import SOURCES, Filters, RolloutLog
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop.from_log import FromLogConfig, learn_from_log
from tfgrpo.semantic import LessonConfig, LessonLibrary

EVERYTHING = Filters(sources=SOURCES)


def write(path, lines) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def chat_record(question, answer, reward, **extra):
    return {
        "request": {"model": "prod-model", "messages": [{"role": "user", "content": question}]},
        "response": {
            "model": "prod-model-2025",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2},
        },
        "reward": reward,
        **extra,
    }


def test_every_record_shape_is_read_and_grouped_by_prompt_or_group(tmp_path):
    log = tmp_path / "log.jsonl"
    write(
        log,
        [
            {"prompt": "2+2?", "response": "4", "reward": 1, "metadata": {"user": "u1", "thumbs": True}},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+3?"}],
             "response": "6", "reward": 1.0, "timestamp": "2025-01-31T12:00:00Z"},
            {"prompt": "2+2?", "response": "5", "reward": 0},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+3?"},
                          {"role": "assistant", "content": "7"}], "reward": 0.0},
            chat_record("5+5?", "10", 1.0, sample={"answer": "10"}),
            {"request": {"body": {"messages": [{"role": "user", "content": "6+6?"}]}},
             "response": {"status_code": 200, "body": {"choices": [
                 {"index": 1, "message": {"role": "assistant", "content": "13"}},
                 {"index": 0, "message": {"role": "assistant", "content": [{"type": "text", "text": "12"}]}}]}},
             "rewards": [1.0, 0.0]},
            {"request": {"prompt": "7+7="}, "response": {"choices": [{"text": " 14"}, {"text": " 15"}]},
             "rewards": [1, 0]},
            chat_record("5+5?", "11", 0.0),
            {"prompt": "a", "response": "x", "reward": 0.5, "group": 7},
            {"prompt": "b", "response": "y", "reward": 1.5, "group": 7},
            {"prompt": "2+2?", "response": "4", "reward": 1, "group": "other"},
        ],
    )  # fmt: skip
    path = str(tmp_path / "lib.db")
    with TrainingFreeGRPO.open(path) as lib, RolloutLog(path) as rollouts:
        report = learn_from_log(log, [ExampleUpdate(lib, "prod")], rollout_log=rollouts, show_progress=False)
        rows = list(rollouts.rows(EVERYTHING))
        stored = {(e.prompt, e.response): e for e in lib.experience_library}
        total = lib.total_rollouts
    assert (report.lines, report.records, report.rollouts, report.bad_count) == (11, 11, 13, 0)
    # Groups: 2+2 (4, 5), 3+3 chat (6, 7), 5+5 (10, 11), 6+6 (its two choices), 7+7 (its two), group 7; the lone
    # record of group "other" is logged, not learned.
    assert (report.groups, report.groups_with_signal, total) == (6, 6, 12)
    assert set(stored) == {("2+2?", "4"), ("3+3?", "6"), ("5+5?", "10"), ("6+6?", "12"), ("7+7=", " 14"), ("a", "y")}
    assert stored[("2+2?", "4")].metadata == {
        "user": "u1", "thumbs": "true", "task": "prod", "sample_id": "line-1",
        "contrast_response": "5", "contrast_reward": "0.0",
    }  # fmt: skip
    by_id = {r.id: r for r in rows}
    assert len(rows) == 13 and {r.source for r in rows} == {"log"}
    chat = by_id[next(i for i in by_id if i.endswith(":2:0"))]
    assert (chat.prompt, chat.response, chat.reward, chat.advantage) == ("3+3?", "6", 1.0, 0.5)
    assert chat.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+3?"}]
    assert chat.created == 1738324800.0  # the record's own time
    openai = by_id[next(i for i in by_id if i.endswith(":5:0"))]
    assert (openai.model, openai.prompt_tokens, openai.completion_tokens) == ("prod-model-2025", 9, 2)
    assert openai.sample == {"answer": "10", "messages": [{"role": "user", "content": "5+5?"}]}
    twelve = [r for r in rows if r.prompt == "6+6?"]
    assert [(r.response, r.reward) for r in sorted(twelve, key=lambda r: r.index)] == [("12", 1.0), ("13", 0.0)]
    assert len({r.group_id for r in twelve}) == 1
    grouped = [r for r in rows if r.prompt in ("a", "b")]
    assert len({r.group_id for r in grouped}) == 1 and {r.prompt for r in grouped} == {"a", "b"}


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ([1, 2], "a JSON object"),
        ({"response": "4", "reward": 1}, 'needs "prompt" or "messages"'),
        ({"prompt": "q", "response": "4"}, '"reward" must be a number'),
        ({"prompt": "q", "response": "4", "reward": True}, '"reward" must be a number'),
        ({"prompt": "q", "response": "4", "reward": 1e400}, "must be finite"),
        ({"prompt": "q", "response": "4", "reward": 1e308}, "too large to learn from"),  # two overflow a sum
        ({"prompt": "q", "response": 4, "reward": 1}, '"response" must be text'),
        ({"prompt": "q", "response": "4", "reward": 1, "metadata": {"k": [1]}}, "metadata.k"),
        ({"prompt": "q", "response": "4", "reward": 1, "timestamp": "yesterday"}, "ISO date-time"),
        ({"prompt": "q", "response": "4", "reward": 1, "timestamp": "0001-01-01T00:00:00"}, "before 1970"),
        ({"prompt": "q", "response": "4", "reward": 1, "group": 1.5}, '"group"'),
        ({"messages": [{"role": "user", "content": "q"}], "reward": 1}, "assistant's answer"),
        ({"messages": [{"role": "system", "content": "s"}], "response": "r", "reward": 1}, "no user message"),
        ({"request": {"messages": [{"role": "user", "content": "q"}]}, "response": {"choices": []}}, "non-empty"),
        (chat_record("q", "a", 1) | {"reward": None, "rewards": [1, 2]}, "one reward per choice"),
        ({"request": {"x": 1}, "response": {"choices": [{"text": "a"}]}, "reward": 1}, '"messages" or "prompt"'),
        (
            {
                "request": {"prompt": "q"},
                "response": {"choices": [{"index": "x", "text": "a"}, {"index": 1, "text": "b"}]},
            },
            "choices.0.index is not a whole number",
        ),
        ({"request": {"prompt": "q"}, "response": {"choices": [{"text": "a"}, 7]}, "rewards": [1, 0]}, "choices.1"),
        ({"prompt": "q", "response": "4", "reward": 1, "sample": {"answer": float("nan")}}, "NaN or Infinity"),
        (
            {
                "request": {"messages": [{"role": "user", "content": "weather?"}]},
                "response": {"choices": [{"message": {"content": None, "tool_calls": [{"id": "c1"}]}}]},
                "reward": 1,
            },
            "no text content",  # it was learned as the empty answer
        ),
        ({"messages": [{"role": "user", "content": None}], "response": "r", "reward": 1}, "no user message with text"),
    ],
)
def test_a_malformed_record_says_why(record, why):
    with pytest.raises(BadRecord, match=why):
        parse_record(record, 1)


def lines(n: int, start: int = 0, prompts: int = 5) -> list[dict]:
    """n records: prompt i % prompts, right (reward 1) on even lines and wrong on odd ones."""
    return [
        {"prompt": f"q{(start + i) % prompts}", "response": f"r{start + i}", "reward": float((start + i) % 2 == 0)}
        for i in range(n)
    ]


def test_malformed_lines_are_reported_with_their_number_and_skipped_or_refused_by_strict(tmp_path, caplog):
    log = tmp_path / "log.jsonl"
    good = lines(30, prompts=1)
    write(log, [*good[:12], "{cut off", *good[12:25], "", json.dumps({"prompt": "q", "reward": 1}), *good[25:]])
    path = str(tmp_path / "strict.db")
    config = FromLogConfig(window=10, strict=True)
    with TrainingFreeGRPO.open(path) as lib:
        with pytest.raises(DatasetError, match=rf"{log}:13: not JSON"):
            learn_from_log(log, [ExampleUpdate(lib)], config, show_progress=False)
        assert lib.total_rollouts == 10  # the first window was committed before the bad line, and is kept
    with TrainingFreeGRPO.open(path) as lib:
        report = learn_from_log(log, [ExampleUpdate(lib)], FromLogConfig(window=10), show_progress=False)
        assert lib.total_rollouts == 30  # resumed after line 10: nothing twice, nothing lost
    assert report.resumed_at == 10 and report.bad_lines == [
        (13, report.bad_lines[0][1]),
        (28, '"response" must be text, got NoneType'),
    ]
    assert report.bad_lines[0][1].startswith("not JSON") and report.bad_count == 2
    assert f"{log}:13: not JSON" in caplog.text and f"{log}:28:" in caplog.text


def test_a_stopped_run_resumes_after_its_last_window_and_ends_as_one_uninterrupted_run(tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, lines(100))
    config = FromLogConfig(window=20)
    with TrainingFreeGRPO.open(tmp_path / "whole.db", seed=0) as lib:
        learn_from_log(log, [ExampleUpdate(lib)], config, show_progress=False)
        whole = sorted((e.prompt, e.response, e.advantage) for e in lib.experience_library)

    class Stop(Exception):
        pass

    class StopsAtWindow3(ExampleUpdate):
        def commit(self, groups, ctx):
            if ctx.global_step == 3:
                raise Stop  # (a kill between two commits)
            return super().commit(groups, ctx)

    path = str(tmp_path / "stopped.db")
    with TrainingFreeGRPO.open(path, seed=0) as lib, RolloutLog(path) as rollouts:
        with pytest.raises(Stop):
            learn_from_log(log, [StopsAtWindow3(lib)], config, rollout_log=rollouts, show_progress=False)
        assert lib.total_rollouts == 40
    with TrainingFreeGRPO.open(path, seed=0) as lib, RolloutLog(path) as rollouts:
        report = learn_from_log(log, [ExampleUpdate(lib)], config, rollout_log=rollouts, show_progress=False)
        assert (report.resumed_at, report.lines, report.windows) == (40, 60, 3)
        assert lib.total_rollouts == 100
        assert sorted((e.prompt, e.response, e.advantage) for e in lib.experience_library) == whole
        assert len(rollouts) == 100  # window 3 was logged before the stop, and rewritten, not added again
        # The log grew: only the new lines are read.
        with open(log, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in lines(10, start=100))
        again = learn_from_log(log, [ExampleUpdate(lib)], config, rollout_log=rollouts, show_progress=False)
        assert (again.resumed_at, again.lines, lib.total_rollouts, len(rollouts)) == (100, 10, 110, 110)
        (position,) = lib.progress["logs"].values()
        assert (position["window"], position["line"], position["offset"]) == (6, 110, log.stat().st_size)
        # A file that begins the same but differs before the position is not taken for the same log.
        write(log, [*lines(99), {"prompt": "q", "response": "changed", "reward": 0}, *lines(10, start=100)])
        with pytest.raises(ConfigError, match="is not the log the library's examples learned up to line 110"):
            learn_from_log(log, [ExampleUpdate(lib)], config, show_progress=False)
        assert lib.total_rollouts == 110


def test_a_trained_librarys_position_is_kept_beside_the_logs(tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, lines(4))
    with TrainingFreeGRPO.open(tmp_path / "lib.db") as lib:
        lib.add_rollout_groups(
            [([("p", "a"), ("p", "b")], [1.0, 0.0], None)], progress={"global_step": 7, "run": {"x": 1}}
        )
        learn_from_log(log, [ExampleUpdate(lib)], show_progress=False)
        assert lib.progress["global_step"] == 7 and lib.progress["run"] == {"x": 1} and "logs" in lib.progress
        assert ExampleUpdate(lib).done() == 7  # `tfgrpo train` resumes where it was


def test_the_lessons_strategy_learns_each_windows_groups_with_signal_through_the_critic(tmp_path):
    lesson = json.dumps([{"operation": "add", "text": "Answer with the number only."}])

    async def critic(index, path, body):
        text = body["messages"][-1]["content"]
        return chat_reply(["The attempt answered." if "analysing" in text else lesson])

    log = tmp_path / "log.jsonl"
    write(log, lines(8, prompts=3))  # in each window of 4, one prompt twice: right, then wrong
    path = str(tmp_path / "lib.db")
    with (
        StandIn(critic) as server,
        OpenAIBackend(base_url=server.url, model="critic", max_retries=0, timeout=10) as llm,
        LessonLibrary(path) as lessons,
        TrainingFreeGRPO.open(path) as lib,
    ):
        updates = [ExampleUpdate(lib), LessonUpdate(lessons, LessonConfig(critic_max_tokens=64), critic=llm)]
        report = learn_from_log(log, updates, FromLogConfig(window=4), show_progress=False)
        assert report.windows == 2 and lessons.lessons == {"G0": "Answer with the number only."}
        assert [v.kind for v in lessons.history()] == ["init", "step", "step"]
        assert lessons.progress["logs"] == lib.progress["logs"]
        calls = len(server.requests)
        assert learn_from_log(log, updates, FromLogConfig(window=4), show_progress=False).windows == 0
        assert len(server.requests) == calls  # resumed at the end: no critic call


def test_memory_stays_bounded_by_the_window_whatever_the_files_length(tmp_path):
    def peak(n: int) -> int:
        log = tmp_path / f"log{n}.jsonl"
        write(log, lines(n, prompts=n))  # every prompt new: nothing groups, the library stays at its capacity
        path = str(tmp_path / f"lib{n}.db")
        with TrainingFreeGRPO.open(path, GRPOConfig(max_library_size=1000)) as lib, RolloutLog(path) as rollouts:
            tracemalloc.start()
            try:
                learn_from_log(
                    log, [ExampleUpdate(lib)], FromLogConfig(window=500), rollout_log=rollouts, show_progress=False
                )
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    small, large = peak(4000), peak(16000)
    assert large < 1.5 * small  # four times the lines, about the same peak


def test_the_command_learns_resumes_and_stops_at_a_malformed_line_with_strict(tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, [*lines(6, prompts=1), "[]", *lines(4, start=6, prompts=1)])
    library = tmp_path / "lib.db"
    ran = tfgrpo("learn-from-log", log, "-l", library, "--window", "4", "--strict", check=False)
    assert ran.returncode == 1 and f"{log}:7: a record is a JSON object, not list" in ran.stderr
    ran = tfgrpo("learn-from-log", log, "-l", library, "--window", "4", "--no-rollout-log")
    assert "7 lines (resumed after line 4)" in ran.stdout and "1 malformed lines were skipped" in ran.stderr
    with TrainingFreeGRPO.open(library) as lib:
        assert lib.total_rollouts == 10
    with RolloutLog(library) as rollouts:
        assert len(rollouts) == 4  # the first run logged its window; --no-rollout-log, none
    ran = tfgrpo("learn-from-log", tmp_path / "missing.jsonl", "-l", library, check=False)
    assert ran.returncode == 1 and "no log file at" in ran.stderr
    with pytest.raises(DatasetNotFoundError):
        learn_from_log(tmp_path / "missing.jsonl", [ExampleUpdate(TrainingFreeGRPO())], show_progress=False)


def test_a_record_that_breaks_the_parser_is_that_lines_error_not_the_runs_end(monkeypatch):
    import io

    from tfgrpo.learn import ingest

    def broken(value, line):
        raise TypeError("a shape nobody checked")

    monkeypatch.setattr(ingest, "parse_record", broken)
    [line] = list(ingest.read_lines(io.BytesIO(b'{"prompt": "q"}\n')))
    assert line.record is None and line.error == "unreadable record (TypeError: a shape nobody checked)"


def test_the_command_creates_a_library_with_the_capacity_and_eviction_policy_asked(tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, lines(8, prompts=3))
    library = tmp_path / "lib.db"
    ran = tfgrpo("learn-from-log", log, "-l", library, "--max-library-size", "0", check=False)
    assert ran.returncode == 1 and "max_library_size must be >= 1" in ran.stderr and not library.exists()
    tfgrpo("learn-from-log", log, "-l", library, "--window", "4", "--max-library-size", "2",
           "--eviction-policy", "balanced")  # fmt: skip
    with TrainingFreeGRPO.open(library) as lib:
        assert (lib.config.max_library_size, lib.config.eviction_policy) == (2, "balanced")
        assert len(lib.experience_library) <= 2


def test_what_a_log_line_cannot_set_or_break(tmp_path):
    """A token count past a database integer stopped every run at its window (it was written to the rollout
    log); a sample's "messages" became the exported rows' prompt; an unfinished last line (a log still being
    written) was skipped for good."""
    log = tmp_path / "log.jsonl"
    huge = chat_record("q", "x", 1)
    huge["response"]["usage"]["prompt_tokens"] = 10**20
    write(log, [
        huge, chat_record("q", "y", 0),
        {"prompt": "p", "response": "a", "reward": 1, "sample": {"messages": [{"role": "user", "content": "OTHER"}]}},
        {"prompt": "p", "response": "b", "reward": 0},
    ])  # fmt: skip
    with open(log, "ab") as f:
        f.write(b'{"prompt": "r", "response": "a", "re')  # the writer is still at it
    library = tmp_path / "lib.db"
    tfgrpo("learn-from-log", log, "-l", library)
    with TrainingFreeGRPO.open(library) as grpo:
        learned = {(e.prompt, e.response) for e in grpo.experience_library}
    assert learned == {("q", "x"), ("p", "a")}
    out = tmp_path / "dpo.jsonl"
    tfgrpo("export", "-l", library, "--format", "dpo", out)
    assert "OTHER" not in out.read_text()
    with open(log, "ab") as f:
        f.write(b'ward": 1}\n{"prompt": "r", "response": "b", "reward": 0}\n')
    tfgrpo("learn-from-log", log, "-l", library)
    with TrainingFreeGRPO.open(library) as grpo:
        assert ("r", "a") in {(e.prompt, e.response) for e in grpo.experience_library}


def test_export_refuses_to_write_over_its_library_or_into_a_database(tmp_path):
    library = tmp_path / "lib.db"
    write(tmp_path / "log.jsonl", [chat_record("q", "x", 1), chat_record("q", "y", 0)])
    tfgrpo("learn-from-log", tmp_path / "log.jsonl", "-l", library)
    kept = library.read_bytes()
    ran = tfgrpo("export", "-l", library, "--format", "sft", library, check=False)
    assert ran.returncode == 1 and "is one of this command's inputs" in ran.stderr and library.read_bytes() == kept
    ran = tfgrpo("export", "-l", library, "--format", "sft", "postgresql://alice:S3cret@127.0.0.1:9/db", check=False)
    assert ran.returncode == 1 and "is a database" in ran.stderr and "S3cret" not in ran.stderr
