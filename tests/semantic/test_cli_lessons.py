"""Paper mode from the command line, as a user types it (`tfgrpo.cli.main` in-process), talking over HTTP
to a scripted OpenAI-compatible stand-in on 127.0.0.1 (policy and critic), so no model is needed; one
small run on the bundled model at the end."""

import json
import re
from pathlib import Path

import pytest

from support.cli import tfgrpo as run
from support.llm import StandIn, chat_reply, error_reply
from tfgrpo import TrainingFreeGRPO
from tfgrpo.semantic import LessonLibrary, Operation

QUESTION = re.compile(r"What is (\d+)\+(\d+)\?")


class Script:
    """Answers as the critic (by what the request asks for) or as the policy: the policy is right on
    every other sample of a group, and always right when evaluated (temperature < 0.5) with lessons in
    its prompt."""

    def __init__(self):
        self.kinds = []
        self.fail_batch_at = None  # fail the n-th consolidation request (HTTP 400), as a crash would
        self.batches = 0

    async def __call__(self, index, path, body):
        chat = "messages" in body
        text = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        n = body.get("n", 1)
        if "You are analysing one attempt" in text:
            self.kinds.append("summary")
            return chat_reply(["Added the two numbers; the odd attempts slipped by one."] * n, chat=chat)
        if "You study attempts" in text:
            self.kinds.append("group")
            reply = '[{"operation": "add", "text": "Add the two numbers digit by digit."}]'
            return chat_reply([reply] * n, chat=chat)
        if "You maintain a short library" in text:
            self.kinds.append("batch")
            self.batches += 1
            if self.batches == self.fail_batch_at:
                return error_reply(400, "scripted failure")
            reply = json.dumps([{"operation": "add", "text": f"Check the sum a second time ({self.batches})."}])
            return chat_reply([reply] * n, chat=chat)
        self.kinds.append("policy")
        a, b = map(int, QUESTION.findall(text)[-1])
        if "Lessons learned" in text and body.get("temperature", 1) < 0.5:
            return chat_reply([str(a + b)] * n, chat=chat)
        return chat_reply([str(a + b + (i % 2)) for i in range(n)], chat=chat)


@pytest.fixture
def server():
    script = Script()
    with StandIn(script) as stand_in:
        stand_in.script = script
        yield stand_in


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "sums.jsonl"
    rows = [{"prompt": f"What is {a}+{a + 1}?", "answer": str(2 * a + 1)} for a in range(1, 9)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def task_args(data: Path, server) -> list[str]:
    return ["--data", data, "--reward", "exact", "--test-fraction", "0.5", "--model", f"openai:scripted@{server.url}"]


def test_help_names_the_paper_mode_commands():
    assert "lessons" in run("--help").stdout
    train = run("train", "--help").stdout
    for flag in ("--strategy", "--preset", "--critic", "--max-ops-per-query", "--max-words", "--no-ground-truth"):
        assert flag in train
    assert "all" in run("eval", "--help").stdout
    for action in ("show", "history", "diff", "rollback", "export", "import"):
        assert run("lessons", action, "--help").stdout.startswith(f"usage: tfgrpo lessons {action}")


def test_train_lessons_writes_versions_and_resumes_without_repeating_a_call(server, data, tmp_path):
    lib = tmp_path / "run.db"
    args = ["train", "--strategy", "lessons", *task_args(data, server), "-l", lib, "-G", "4", "--batch-size", "2"]
    script = server.script
    script.fail_batch_at = 2  # the second step dies at its last call, after its rollouts and critiques

    failed = run(*args, check=False)
    assert failed.returncode == 1 and "scripted failure" in failed.stderr and "Traceback" not in failed.stderr
    with LessonLibrary(lib) as lessons:
        assert lessons.progress["global_step"] == 1 and lessons.version == 1
        assert lessons.lessons == {"G0": "Check the sum a second time (1)."}
    first = len(script.kinds)

    resumed = run(*args)
    assert "resuming lessons in" in resumed.stderr and "after step 1" in resumed.stderr
    assert script.kinds[first:] == ["batch"]  # step 2's rollouts, summaries and critiques came from the cache
    assert "Lessons (sums): 2 at version 2" in resumed.stdout and "[G1]. Check the sum a second time (3)." in (
        resumed.stdout
    )
    with LessonLibrary(lib) as lessons:
        assert lessons.progress["global_step"] == 2
        assert [v.kind for v in lessons.history()] == ["init", "step", "step"]
        assert lessons.history()[1].context["summaries"]  # the critic's reasoning is kept with the version
    metrics = [json.loads(line) for line in (tmp_path / "run.db.lessons.metrics.jsonl").read_text().splitlines()]
    assert [m["global_step"] for m in metrics] == [1, 2] and metrics[1]["cache_hits"] > 0

    second = len(script.kinds)
    again = run(*args)
    assert "after step 2" in again.stderr and len(script.kinds) == second  # nothing left to do, no call made

    # The same file takes the few-shot experience library too (and keeps the lessons).
    run("train", *task_args(data, server), "-l", lib, "-G", "2", "--batch-size", "4")
    with TrainingFreeGRPO.open(lib) as grpo:
        assert grpo.total_rollouts == 8
    with LessonLibrary(lib) as lessons:
        assert len(lessons) == 2


def test_critic_flags_reach_the_critic_and_the_policy_keeps_the_task_prompt(server, data, tmp_path):
    args = [*task_args(data, server), "-l", tmp_path / "run.db", "-G", "2", "--batch-size", "2", "--limit", "4"]
    objectives = ["--task-objective", "add two numbers", "--learning-objective", "fewer slips"]
    # --no-chat: the policy gets plain text (the CLI's default, like Python's, is the backend's mode: chat here).
    run("train", "--strategy", "lessons", *args, *objectives, "--critic-temperature", "0.2", "--instruction", "Sum.",
        "--no-chat")  # fmt: skip
    critic = [b for b in server.bodies if "messages" in b]  # the critic speaks chat; the policy, plain text
    policy = [b for b in server.bodies if "prompt" in b]
    assert critic and all(b["temperature"] == 0.2 for b in critic)
    group = next(b["messages"][-1]["content"] for b in critic if "You study attempts" in b["messages"][-1]["content"])
    assert "Task objective: add two numbers" in group and "Learning objective: fewer slips" in group
    # The policy's prompt is the evaluation's: the instruction (then the lessons), the Q/A query, a newline stop.
    assert policy and all(b["stop"] == ["\n"] and b["prompt"].startswith("Sum.\n\n") for b in policy)
    assert all(re.search(r"\n\nQ: What is \d+\+\d+\?\nA:$", b["prompt"]) for b in policy)
    assert any("[G0]. " in b["prompt"] for b in policy[1:])  # the second step's rollouts had the first's lesson


def test_train_lessons_with_validated_updates_records_both_means(server, data, tmp_path):
    lib = tmp_path / "run.db"
    args = [*task_args(data, server), "-l", lib, "-G", "4", "--batch-size", "2"]
    run("train", "--strategy", "lessons", *args, "--validate-margin", "0", "--validation-size", "2")
    metrics = [json.loads(line) for line in (tmp_path / "run.db.lessons.metrics.jsonl").read_text().splitlines()]
    # Without lessons the policy is right half the time; with them (evaluated at 0.3), always.
    assert [(m["validation_current"], m["validation_candidate"], m["accepted"]) for m in metrics] == [
        (0.5, 1.0, True),
        (1.0, 1.0, True),
    ]
    with LessonLibrary(lib) as lessons:
        assert [v.kind for v in lessons.history()] == ["init", "step", "step"]
        assert lessons.history()[1].context["validation"]["accepted"] is True


def test_attribute_ranks_the_lessons_by_leave_one_out(server, data, tmp_path):
    lib = tmp_path / "run.db"
    with LessonLibrary(lib) as lessons:
        lessons.apply([Operation("add", "Add the two numbers digit by digit.")])
    out = run("attribute", *task_args(data, server), "-l", lib, "-k", "4", "--json")
    report = json.loads(out.stdout)
    # With its one lesson the policy (at 0.3) is always right; without it, half the time.
    assert report["full_mean"] == 1.0 and report["n_prompts"] == 4
    (g0,) = report["lessons"]
    assert g0["lesson_id"] == "G0" and g0["mean_diff"] == 0.5 and g0["ci_low"] == g0["ci_high"] == 0.5
    result = run("attribute", *task_args(data, server), "-l", lib)
    table = result.stdout
    # One progress display over every condition: the whole attribution's time left.
    assert "eval prompt 4/8 | all lessons | " in result.stderr and "eval prompt 8/8 | without G0 | " in result.stderr
    assert "Leave-one-out attribution of 1 lessons" in table and "G0" in table
    missing = run("attribute", *task_args(data, server), "-l", tmp_path / "none.db", check=False)
    assert missing.returncode != 0 and "no library at" in missing.stderr


def test_lessons_commands(tmp_path):
    lib = tmp_path / "lessons.db"
    with LessonLibrary(lib) as lessons:
        lessons.apply([Operation("add", "Check the units."), Operation("add", "Carry the ones.")])
        lessons.apply([Operation("delete", id="G0"), Operation("update", "Carry the tens too.", id="G1")])
    show = run("lessons", "show", "-l", lib).stdout
    assert "2 lessons" not in show and "1 lessons at version 2" in show and "[G1]. Carry the tens too." in show
    assert json.loads(run("lessons", "show", "--json", "-l", lib).stdout) == {"G1": "Carry the tens too."}
    assert run("lessons", "show", "--prompt", "-l", lib).stdout.startswith("Lessons learned")

    assert run("stats", "-l", lib).stdout.splitlines()[-1].startswith("Lessons: 1 at version 2")
    assert json.loads(run("stats", "--json", "-l", lib).stdout)["lessons"] == {"count": 1, "version": 2}

    history = run("lessons", "history", "-l", lib).stdout.splitlines()
    assert [line.split()[0] for line in history] == ["v0", "v1", "v2"]
    assert "2 lessons, 2 applied" in history[1]
    [v2] = json.loads(run("lessons", "history", "--json", "--version", "2", "-l", lib).stdout)
    assert v2["version"] == 2 and v2["lessons"] == {"G1": "Carry the tens too."}
    assert v2["applied"] == [
        {"operation": "delete", "id": "G0"},
        {"operation": "update", "id": "G1", "text": "Carry the tens too."},
    ]
    assert len(json.loads(run("lessons", "history", "--json", "-l", lib).stdout)) == 3
    bad = run("lessons", "history", "--version", "9", "-l", lib, check=False)
    assert bad.returncode != 0 and "no lesson library version 9" in bad.stderr

    diff = run("lessons", "diff", "1", "2", "-l", lib).stdout
    assert "- [G0]. Check the units." in diff and "~ [G1]. Carry the ones." in diff and "-> Carry the tens" in diff
    assert run("lessons", "diff", "2", "-l", lib).stdout.strip() == "(no changes)"

    assert "v2 -> v3" in run("lessons", "rollback", "1", "-l", lib).stdout
    assert json.loads(run("lessons", "show", "--json", "-l", lib).stdout) == {
        "G0": "Check the units.",
        "G1": "Carry the ones.",
    }
    assert "rollback to v1" in run("lessons", "history", "-l", lib).stdout

    as_json, as_text = tmp_path / "lessons.json", tmp_path / "system.txt"
    run("lessons", "export", as_json, "-l", lib)
    assert json.loads(as_json.read_text()) == {"G0": "Check the units.", "G1": "Carry the ones."}
    run("lessons", "export", as_text, "--text", "-l", lib)
    assert as_text.read_text().splitlines()[1:] == ["[G0]. Check the units.", "[G1]. Carry the ones."]

    other = tmp_path / "other.db"
    assert "2 lessons at version 1" in run("lessons", "import", as_text, "-l", other).stdout
    as_json.write_text(json.dumps({"G5": "Estimate first.", "G0": "Check the units."}))
    run("lessons", "import", as_json, "-l", other)
    assert json.loads(run("lessons", "show", "--json", "-l", other).stdout) == {
        "G0": "Check the units.",
        "G5": "Estimate first.",
    }

    missing = run("lessons", "show", "-l", tmp_path / "nope.db", check=False)
    assert missing.returncode == 1 and "no library at" in missing.stderr
    bad = run("lessons", "rollback", "9", "-l", lib, check=False)
    assert bad.returncode == 1 and "no lesson library version 9" in bad.stderr
    not_sqlite = run("lessons", "import", as_json, "-l", tmp_path / "lib.json", check=False)
    assert not_sqlite.returncode == 1 and "SQLite" in not_sqlite.stderr and not (tmp_path / "lib.json").exists()


def test_eval_all_compares_every_condition_on_the_same_prompts(server, data, tmp_path):
    lib = tmp_path / "both.db"
    args = task_args(data, server)
    out = run("train", "--strategy", "both", *args, "-l", lib, "-G", "4", "--batch-size", "2").stdout
    assert "Total rollouts: 16" in out and "Lessons (sums): 2 at version 2" in out
    # One run: each step's rollouts went to both strategies, one metrics line per step with both's figures.
    steps = [json.loads(line) for line in (tmp_path / "both.db.metrics.jsonl").read_text().splitlines()]
    assert [(m["global_step"], m["strategies"]) for m in steps] == [
        (1, ["examples", "lessons"]),
        (2, ["examples", "lessons"]),
    ]

    # By default every condition is compared with the strongest of the fair baselines, each under one name.
    baselines = ["zero-shot chat", "zero-shot chat, stop after content", "zero-shot text"]
    baselines += ["zero-shot text, stop after content", "labelled 3-shot", "bootstrapped 3-shot"]
    result = run("eval", "--strategy", "all", *args, "-l", lib, "-k", "2")
    table = result.stdout
    for name in [*baselines, "examples", "lessons", "both"]:
        assert re.search(rf"^{name} +\d\.\d{{3}} +\d\.\d{{3}}( |$)", table, flags=re.M), table
    # The scripted policy is always right with lessons in its prompt, right half the time without: every
    # baseline scores 0.5, and the first of them is the strongest.
    for name in ("examples", "lessons", "both"):
        assert f"{name} - zero-shot chat: Mean@k" in table
    assert (
        "Headline: lessons beat zero-shot chat (the strongest of 6 baselines) by 0.500 Mean@k (95% CI +0.500 .. +0.500)"
    ) in table.splitlines()
    # One progress display over the conditions scored together, with the time taken and left.
    assert re.search(r"^eval prompt 4/24 \| zero-shot chat \| \d+:\d\d elapsed, ~\d+:\d\d left$", result.stderr, re.M)
    assert re.search(r"^eval prompt 12/12 \| both \| \d+:\d\d elapsed$", result.stderr, re.M), result.stderr
    # and the model's work before the first condition is said too
    assert "INFO tfgrpo.eval: bootstrapped few-shot: looking for 3 successful rollouts in up to 4" in result.stderr

    report = json.loads(run("eval", "--strategy", "all", *args, "-l", lib, "-k", "2", "--json").stdout)
    assert list(report["conditions"]) == [*baselines, "examples", "lessons", "both"] and report["n_prompts"] == 4
    assert report["conditions"]["zero-shot chat"]["mean_at_k"] == 0.5
    assert report["conditions"]["lessons"]["mean_at_k"] == report["conditions"]["both"]["mean_at_k"] == 1.0
    assert report["comparisons"][1]["mean_diff"] == 0.5 and report["strongest_baseline"] == "zero-shot chat"

    # lessons only: no experience library needed; --no-baselines: zero-shot as configured, named as it is
    quick = ["--no-baselines", "-k", "2", "--json"]
    lessons = run("eval", "--strategy", "lessons", *args, "-l", lib, *quick)
    assert list(json.loads(lessons.stdout)["conditions"]) == ["zero-shot", "lessons"]
    assert "--no-baselines: compared with zero-shot as configured only" in lessons.stderr
    examples = json.loads(run("eval", *args, "-l", lib, "--chat", *quick).stdout)
    assert list(examples["conditions"]) == ["zero-shot chat", "library"]
    missing = run("eval", "--strategy", "lessons", *args, "-l", tmp_path / "nope.db", check=False)
    assert missing.returncode == 1 and "no library at" in missing.stderr


@pytest.mark.model
def test_train_and_eval_lessons_on_the_bundled_model(tmp_path, local_model):
    lib = tmp_path / "model.db"
    task = ["--task", "arithmetic", "--task-option", "n=40", "--task-option", "seed=5", "--limit", "2"]
    out = run(
        "train",
        "--strategy",
        "lessons",
        *task,
        "-l",
        lib,
        "-G",
        "2",
        "--batch-size",
        "2",
        "--max-tokens",
        "4",
        "--critic-max-tokens",
        "24",
    ).stdout
    assert "Lessons (arithmetic):" in out
    with LessonLibrary(lib) as lessons:
        assert lessons.progress["global_step"] == 1 and lessons.version == 1
    report = json.loads(
        run("eval", "--strategy", "lessons", *task, "-l", lib, "-k", "1", "--max-tokens", "4", "--json").stdout
    )
    assert list(report["conditions"])[-1] == "lessons" and report["n_prompts"] == 2
    assert report["comparisons"][0]["baseline"] == report["strongest_baseline"] != "lessons"
