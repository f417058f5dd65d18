"""The command line as a user types it: `tfgrpo.cli.main` in-process (what the installed script calls), and
the installed `tfgrpo` script itself in a subprocess where a process of its own is the point (the entry
point, a kill)."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.cli import TFGRPO
from support.cli import tfgrpo as run
from support.llm import StandIn, chat_reply
from tfgrpo import TFGRPOWarning, TrainingFreeGRPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
TINY_TRAIN = ["--task", "arithmetic", "--task-option", "n=40", "--task-option", "seed=5", "--limit", "6"]
TINY_GEN = ["-G", "4", "--batch-size", "2", "--max-tokens", "4", "--shots", "2"]


@pytest.fixture
def small_library(tmp_path: Path) -> Path:
    path = tmp_path / "lib.db"
    with TrainingFreeGRPO.open(path) as grpo:
        grpo.add_rollout_group([("Read file a.txt", "open('a.txt').read()"), ("Read file a.txt", "x")], [1, 0])
        grpo.add_rollout_group([("Reverse a string", "s[::-1]"), ("Reverse a string", "s")], [1, 0], {"domain": "str"})
    return path


def test_help_explains_every_command():
    installed = subprocess.run([TFGRPO, "--help"], capture_output=True, text=True, env=ENV, timeout=120)
    assert installed.returncode == 0  # the installed script, then main() in-process
    out = installed.stdout
    for command in ("demo", "train", "eval", "stats", "sample", "query", "export", "import", "serve-model"):
        assert command in out
        assert run(command, "--help").stdout.startswith("usage: tfgrpo " + command)
    assert "--group-size" in run("train", "--help").stdout


def test_library_commands(small_library: Path, tmp_path: Path):
    lib = str(small_library)
    stats = run("stats", "-l", lib).stdout
    assert "Total rollouts: 4" in stats and "Current library: 2 experiences" in stats
    assert json.loads(run("stats", "-l", lib, "--json").stdout)["current_library_size"] == 2
    assert "Lessons" not in stats  # none in this file

    drawn = [
        json.loads(line) for line in run("sample", "-l", lib, "-k", "2", "--distinct", "--json").stdout.splitlines()
    ]
    assert sorted(d["response"] for d in drawn) == ["open('a.txt').read()", "s[::-1]"]

    found = run("query", "-l", lib, "Read file", "--json").stdout.splitlines()
    assert [json.loads(line)["prompt"] for line in found] == ["Read file a.txt"]
    assert run("query", "-l", lib, "Re", "--where", "domain=str", "--json").stdout.count("\n") == 1
    # No match is a valid, empty answer (exit 0, stdout empty), said on stderr; it printed nothing at all.
    for args in (["Write a poem"], ["Re", "--where", "domain=io"]):
        none = run("query", "-l", lib, *args, "--json")
        assert none.returncode == 0 and none.stdout == ""
        assert none.stderr.startswith(f"no experiences match: no stored prompt starts with {args[0]!r}")
        assert "(2 experiences in" in none.stderr
    assert "with domain=io (2 experiences" in none.stderr
    empty = tmp_path / "empty.db"
    TrainingFreeGRPO.open(empty).close()
    nothing = run("sample", "-l", str(empty), "-k", "2")
    assert nothing.stdout == "" and f"no experiences to sample: {empty} is empty" in nothing.stderr
    huge = run("sample", "-l", lib, "-k", str(10**20), check=False)  # ran out of memory drawing them
    assert huge.returncode == 1 and "give at most 1,000,000" in huge.stderr

    exported = tmp_path / "out.json"
    run("export", "-l", lib, str(exported))
    assert len(json.loads(exported.read_text())) == 2
    imported = tmp_path / "copy.db"
    assert "2 experiences" in run("import", str(exported), "-l", str(imported)).stdout
    assert TrainingFreeGRPO.open(imported).library_size() == 2


def test_errors_are_one_clear_line(tmp_path: Path):
    missing = run("stats", "-l", str(tmp_path / "nope.db"), check=False)
    assert missing.returncode == 1 and "no library at" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    failed = run("import", str(bad), "-l", str(tmp_path / "x.db"), check=False)
    assert failed.returncode == 1 and "not valid JSON" in failed.stderr
    wrong = run("train", "--task", "nosuchtask", check=False)
    assert wrong.returncode == 1 and "unknown task" in wrong.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--port", "99999"], "argument --port: a port is a whole number from 1 to 65535, got '99999'"),
        (["serve-model", "--port", "-1"], "argument --port: a port is a whole number from 1 to 65535"),
        (["train", "--limit", "-1"], "argument --limit: a whole number >= 1, got '-1'"),
        (["demo", "--eval-prompts", "0"], "argument --eval-prompts: a whole number >= 1"),
        (["demo", "--seed", "-1"], "argument --seed: a whole number >= 0"),
        (["continual", "--seeds", "0", "-1"], "argument --seeds: a whole number >= 0 and <= 2147483647, got '-1'"),
        (["repeat", "--seeds", "-2"], "argument --seeds: a whole number >= 0"),
        (["sample", "--seed", "x"], "argument --seed: a whole number >= 0 and <= 2147483647, got 'x'"),
        (["continual", "--seeds", "99999999999999999999"], "argument --seeds: a whole number >= 0 and <= 2147483647"),
        (["eval", "--test-fraction", "1.5"], "argument --test-fraction: a number from 0 to 1, got '1.5'"),
        (["query", "p", "-k", "0"], "argument -k: a whole number >= 1"),  # it said no prompt matched
        (["sample", "-k", "0"], "argument -k: a whole number >= 1"),
        (["export", "--format", "sft", "--min-library-version", "9" * 25, "o.jsonl"], "<= 9223372036854775807"),
        (["train", "--test-fraction", "nan"], "argument --test-fraction: a number from 0 to 1, got 'nan'"),
    ],
)
def test_numbers_out_of_range_are_refused_before_any_work(args, says):
    """A port, count or seed that cannot work is a usage error at once: before a model loads or a socket
    opens (a port of 99999 served on another port; a negative --limit dropped the last prompt)."""
    ran = run(*args, check=False)
    assert ran.returncode == 2 and says in ran.stderr


def test_a_test_fraction_that_would_be_ignored_is_refused_before_the_model_is_called(tmp_path: Path):
    """--test-fraction splits a --data file; with a task (which splits its own samples) or beside
    --eval-data it changed nothing, silently."""
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "1+1", "answer": "2"}\n')
    with StandIn(_half_right) as server:
        model = ["--model", f"openai:m@{server.url}", "-l", tmp_path / "l.db"]
        ran = run("eval", *TINY_TRAIN, *model, "--test-fraction", "0.5", check=False)
        assert ran.returncode == 1 and "a task splits its own samples (--task-option test_fraction=X" in ran.stderr
        both = ["--data", data, "--eval-data", data, "--test-fraction", "0.5"]
        ran = run("train", *both, *model, check=False)
        assert ran.returncode == 1 and "--eval-data is the held-out side" in ran.stderr
        assert server.requests == []


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path: Path):
    """`eval --out` and `report -o` naming the library (or a result they read) wrote over it."""
    library = tmp_path / "lib.db"
    TrainingFreeGRPO.open(library).close()
    kept = library.read_bytes()
    with StandIn(_half_right) as server:
        model = ["--model", f"openai:m@{server.url}"]
        ran = run("eval", *TINY_TRAIN, *model, "-l", library, "--out", library, check=False)
        assert ran.returncode == 1 and "is one of this command's inputs" in ran.stderr
        assert server.requests == []
    ran = run("report", "-l", library, "-o", library, check=False)
    assert ran.returncode == 1 and "is one of this command's inputs" in ran.stderr
    assert library.read_bytes() == kept


def test_guidance_a_model_cannot_take_is_refused_before_any_call(tmp_path: Path):
    with StandIn(_half_right) as server:
        model = ["--model", f"openai:m@{server.url}", "-l", tmp_path / "l.db"]
        for command in ("train", "eval"):
            ran = run(command, *TINY_TRAIN, *model, "--guidance", "constrain", check=False)
            assert ran.returncode == 1 and "--guidance constrain needs a local model" in ran.stderr, command
            ran = run(command, *TINY_TRAIN, *model, "--guidance-strength", "5", check=False)  # changed nothing
            assert ran.returncode == 1 and "--guidance-strength works with --guidance" in ran.stderr, command
        ran = run("train", *TINY_TRAIN, *model, "--active-budget", "3", check=False)
        assert ran.returncode == 1 and "--active-budget works with --active" in ran.stderr
        assert server.requests == []


def test_what_could_not_be_read_is_a_clear_error_not_a_traceback(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"\xff\xfe")
    ran = run("train", "--config", config, check=False)
    assert ran.returncode == 1 and "is not UTF-8 text" in ran.stderr
    ran = run("stats", "-l", "postgresql://alice:S3cret@[::1/db", check=False)
    assert ran.returncode == 1 and "not a usable postgresql:// URL" in ran.stderr and "S3cret" not in ran.stderr
    ran = run(
        "learn-from-log", tmp_path / "none.jsonl", "-l", tmp_path / "l.db", "--max-line-bytes", "9" * 20, check=False
    )
    assert ran.returncode == 1 and "max_line_bytes must be <=" in ran.stderr


def test_a_negative_seed_in_a_config_is_refused_before_the_model_is_called(tmp_path: Path):
    with StandIn(_half_right) as server:
        for command in ("train", "eval"):
            model = ["--model", f"openai:m@{server.url}"]
            ran = run(command, *TINY_TRAIN, *model, "-l", tmp_path / "l.db", "--seed", "-1", check=False)
            assert ran.returncode == 1 and "Config.seed must be >= 0, got -1" in ran.stderr
        assert server.requests == []


STOP_AT_STEP_TWO = """
import threading
from pathlib import Path

from tfgrpo.rewards import NumericMatchReward

base = NumericMatchReward()
lock = threading.Lock()
calls = 0


def reward(prompt, response, sample):
    # Step 1 scores 2 prompts x G=4; the first score of step 2 (after step 1 is committed) signals and waits.
    global calls
    with lock:
        calls += 1
        n = calls
    if n > 8:
        Path({marker!r}).write_text("step 2 scoring")
        threading.Event().wait()
    return base(prompt, response, sample)
"""


@pytest.mark.model
def test_train_resumes_after_a_kill_without_double_counting(tmp_path: Path, local_model):
    lib, metrics, marker = tmp_path / "lib.db", tmp_path / "m.jsonl", tmp_path / "in-step-2"
    reward = tmp_path / "stop_at_step_two.py"
    reward.write_text(STOP_AT_STEP_TWO.format(marker=str(marker)))
    args = ["train", *TINY_TRAIN, *TINY_GEN, "-l", str(lib), "--metrics", str(metrics), "--seed", "0"]
    proc = subprocess.Popen(
        [TFGRPO, *args, "--reward", f"{reward}:reward"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    deadline = time.monotonic() + 240
    # Killed while step 2 is being scored: after step 1's metrics line, before step 2 commits, at any speed.
    while not (marker.exists() and metrics.exists() and metrics.read_text().count("\n") == 1):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "step 2 never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with TrainingFreeGRPO.open(lib) as grpo:
        done = grpo.progress["global_step"]
        assert done == 1 and grpo.total_rollouts == 2 * 4

    resumed = run(*args)  # in-process, on the session's copy of the same model
    assert f"resuming {lib} after step {done}" in resumed.stderr
    assert "Total rollouts: 24" in resumed.stdout  # 6 prompts x G=4, each counted once
    with TrainingFreeGRPO.open(lib) as grpo:
        assert grpo.progress["global_step"] == 3 and grpo.total_rollouts == 24
    steps = [json.loads(line)["global_step"] for line in metrics.read_text().splitlines()]
    assert sorted(set(steps)) == sorted(steps) and set(steps) <= {1, 2, 3} and 3 in steps

    quick = ["-k", "2", "--max-tokens", "4", "--no-baselines", "--json"]
    report = json.loads(run("eval", *TINY_TRAIN, *quick, "-l", str(lib)).stdout)
    assert set(report["conditions"]) == {"zero-shot", "library"} and report["n_prompts"] == 6
    assert (
        report["comparisons"][0]["ci_low"]
        <= report["comparisons"][0]["mean_diff"]
        <= report["comparisons"][0]["ci_high"]
    )


@pytest.mark.model
def test_train_on_your_own_jsonl_dataset(tmp_path: Path, local_model):
    data = tmp_path / "capitals.jsonl"
    rows = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Peru", "Lima")]
    data.write_text("".join(json.dumps({"q": f"Capital of {c}?", "a": a}) + "\n" for c, a in rows))
    lib = tmp_path / "caps.db"
    args = ["--data", str(data), "--prompt-field", "q", "--answer-field", "a", "--reward", "regex:(\\w+)"]
    with pytest.warns(TFGRPOWarning, match="group_size=2"):
        out = run("train", *args, "-G", "2", "--batch-size", "2", "--max-tokens", "3", "-l", str(lib)).stdout
    assert "Total rollouts: 8" in out  # 4 training rows (one held out) x G=2
    with pytest.warns(TFGRPOWarning, match="group_size=2"), TrainingFreeGRPO.open(lib) as grpo:
        prompts = [e.prompt for e in grpo.experience_library]
        assert grpo.progress["global_step"] == 2
    steps = [json.loads(line) for line in (tmp_path / "caps.db.metrics.jsonl").read_text().splitlines()]
    # What was stored came from the groups with signal, and only from this file's prompts.
    assert len(set(prompts)) == sum(m["groups_with_signal"] for m in steps) <= 4
    assert all(p.startswith("Capital of") for p in prompts) and len(prompts) >= len(set(prompts))


@pytest.mark.model
def test_demo_runs_end_to_end_at_small_size(tmp_path: Path, local_model):
    out = tmp_path / "demo"
    result = run("demo", "--out", str(out), "--train-prompts", "4", "--eval-prompts", "4")
    assert "GRPO Stats:" in result.stdout and "Total rollouts: 32" in result.stdout
    # The headline is the library against the strongest of the fair baselines.
    assert "(strongest baseline)" in result.stdout and "paired bootstrap 95% CI" in result.stdout
    report = json.loads((out / "report.json").read_text())
    conditions = set(report["conditions"])
    assert report["n_prompts"] == 4 and {"library", "zero-shot chat", "zero-shot text"} <= conditions
    assert "baseline" not in conditions  # zero-shot text as the demo prompts, under one name
    [headline] = [c for c in report["comparisons"] if c["name"] == "library"]
    assert headline["baseline"] in conditions - {"library"}
    assert f"library - {headline['baseline']}: Mean@k" in result.stdout
    assert re.search(
        rf"^Headline: library (beat|lost to|tied with) {headline['baseline']} \(the strongest of", result.stdout, re.M
    )
    assert (out / "report.html").exists()
    assert (out / "library.db").exists() and (out / "metrics.jsonl").read_text().count("\n") == 1
    # Every rollout is in the library's rollout log: training's 4 x G=8, and the evaluation's apart from them.
    from tfgrpo.learn.rollout_log import SOURCES, Filters, RolloutLog

    with RolloutLog(out / "library.db") as log:
        trained = list(log.rows(Filters()))
        evaluated = list(log.rows(Filters(sources=("eval",))))
        assert len(log) == len(list(log.rows(Filters(sources=SOURCES))))
    assert (
        len(trained) == 32 and {r.source for r in trained} == {"train"} and {r.task for r in trained} == {"arithmetic"}
    )
    assert {"library", "zero-shot text"} <= {r.condition for r in evaluated}
    assert len([r for r in evaluated if r.condition == "library"]) == 4 * 4  # held-out prompts x k


async def _half_right(index, path, body):
    """A model that answers the demo's arithmetic right in every other choice, as text or in chat."""
    chat = path.endswith("/chat/completions")
    text = body["messages"][-1]["content"] if chat else body["prompt"]
    asked = re.findall(r"What is ([\d\s+*-]+)\?", text)
    right = str(eval(asked[-1], {})) if asked else "0"  # the task's own expressions: digits and + - *
    return chat_reply([right if i % 2 == 0 else "7" for i in range(body.get("n", 1))], chat=chat)


def test_demo_keeps_no_rollouts_with_no_rollout_log_and_empties_only_its_own_folder(tmp_path: Path):
    """`demo --no-rollout-log` trains and evaluates as usual and leaves the library's rollout log empty. A
    second demo into the same folder empties it first; a folder of the user's own, or a file, is refused and
    left as it was."""
    from tfgrpo.learn.rollout_log import SOURCES, Filters, RolloutLog

    out = tmp_path / "demo"
    sizes = ["--train-prompts", "2", "--eval-prompts", "2"]
    with StandIn(_half_right) as server:
        model = f"openai:m@{server.url}"
        result = run("demo", "--model", model, "--out", out, *sizes, "--no-rollout-log")
        assert "Total rollouts: 16" in result.stdout and (out / "report.json").exists()
        with RolloutLog(out / "library.db") as log:
            assert len(log) == 0 and list(log.rows(Filters(sources=SOURCES))) == []

        (out / "left-over.txt").write_text("from the first demo's folder")
        again = run("demo", "--model", model, "--out", out, *sizes)
        assert "Total rollouts: 16" in again.stdout and not (out / "left-over.txt").exists()
        with RolloutLog(out / "library.db") as log:
            assert len(log) > 0  # the log of this run alone: the first run's library went with its folder

        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "thesis.tex").write_text("years of work")
        refused = run("demo", "--model", model, "--out", mine, *sizes, check=False)
        assert refused.returncode == 1 and "holds files an earlier demo did not write" in refused.stderr
        assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
        a_file = tmp_path / "a-file"
        a_file.write_text("x")
        refused = run("demo", "--model", model, "--out", a_file, *sizes, check=False)
        assert refused.returncode == 1 and "a file is in the way" in refused.stderr and a_file.read_text() == "x"
    assert len(server.requests) > 0


def test_train_creates_a_library_with_the_capacity_and_eviction_policy_asked(tmp_path: Path):
    lib = tmp_path / "lib.db"
    with StandIn(_half_right) as server:
        model = ["--model", f"openai:m@{server.url}", "--no-chat", "--stop", "\n"]
        ran = run("train", *TINY_TRAIN, *TINY_GEN, *model, "-l", lib, "--max-library-size", "0", check=False)
        assert ran.returncode == 1 and "max_library_size must be >= 1" in ran.stderr
        assert server.requests == [] and not lib.exists()
        run(
            "train", *TINY_TRAIN, *TINY_GEN, *model, "-l", lib, "--max-library-size", "3", "--eviction-policy", "oldest"
        )
    with TrainingFreeGRPO.open(lib) as grpo:
        assert (grpo.config.max_library_size, grpo.config.eviction_policy) == (3, "oldest")
        assert grpo.total_stored > 3 and len(grpo.experience_library) == 3  # the oldest went
    # An existing library keeps its own: the flags are said to change nothing (they were silently ignored).
    with StandIn(_half_right) as server:
        model = ["--model", f"openai:m@{server.url}", "--no-chat", "--stop", "\n"]
        with pytest.warns(TFGRPOWarning, match="exists: it keeps its own capacity and eviction policy"):
            run("train", *TINY_TRAIN, *TINY_GEN, *model, "-l", lib, "--max-library-size", "2", "--epochs", "2")
    with TrainingFreeGRPO.open(lib) as grpo:
        assert grpo.config.max_library_size == 3
