"""`--executor ray` on a Ray started on this machine (one for the module, 2 CPUs): the same library as
without Ray, a replica killed mid-step, rewards and their sandbox inside Ray workers."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from pathlib import Path

import pytest

from tfgrpo.core.library import TrainingFreeGRPO
from tfgrpo.errors import ConfigError, ExecutorError
from tfgrpo.executors import ExecutorConfig, open_executor
from tfgrpo.learn import ExampleUpdate
from tfgrpo.loop import TrainConfig
from tfgrpo.loop.training import train
from tfgrpo.rewards import FunctionReward, NumericMatchReward, SandboxConfig, UnitTestReward

from .support import SAMPLES, DigitModel, kill_when_started, library_state, metrics_lines, stop_if_told

pytest.importorskip("ray")
ray_executor = pytest.importorskip("tfgrpo.executors.ray_executor")
pytestmark = pytest.mark.slow

CONFIG = TrainConfig(batch_size=3, group_size=4, epochs=2, seed=5, max_tokens=4)
RAY = {"executor": "ray", "replicas": 2, "replica_cpus": 0.5, "reward_cpus": 0.5}


@pytest.fixture(scope="module", autouse=True)
def ray_for_the_module():
    """The Ray of `--executor ray`, started by the executor itself; the tests' executors join it."""
    with open_executor(ExecutorConfig(executor="ray", ray_cpus=2)) as executor:
        yield executor


def joined(killer) -> None:
    killer.join(timeout=300)  # a guard against a hang, not a measure: the kill happens long before
    assert not killer.is_alive(), "the generation to kill never started"


def run_training(config: ExecutorConfig, library: Path, control: Path | None = None) -> None:
    with open_executor(config) as executor, TrainingFreeGRPO.open(library, seed=CONFIG.seed) as grpo:
        policy = executor.backend(functools.partial(DigitModel, str(control) if control else None))
        reward = executor.reward(NumericMatchReward())
        train(policy, SAMPLES, reward, [ExampleUpdate(grpo)], CONFIG, metrics_path=f"{library}.metrics.jsonl")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The run every Ray run must reproduce: the same training in this process."""
    library = tmp_path_factory.mktemp("local") / "library.db"
    run_training(ExecutorConfig(), library)
    return library


def test_the_same_library_and_figures_as_a_local_run(local_run, tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    run_training(ExecutorConfig(**RAY), tmp_path / "library.db", control)
    local = library_state(local_run)
    assert local["stats"]["total_stored"] > 0 and local["position"]["global_step"] == 4
    assert library_state(tmp_path / "library.db") == local
    # The per-step figures (what --track logs): rewards, signal, tokens, stored, ...; all but the time.
    assert metrics_lines(tmp_path / "library.db.metrics.jsonl") == metrics_lines(Path(f"{local_run}.metrics.jsonl"))
    assert len(list(control.glob("calls-*"))) == 2  # the groups went to both replicas


def test_a_replica_killed_mid_step_is_replaced_and_the_library_is_the_same(local_run, tmp_path, caplog, monkeypatch):
    control = tmp_path / "control"
    control.mkdir()
    (control / "block-4-1").touch()  # question 4's first generation stops: its process is killed there
    monkeypatch.setattr(ray_executor, "PROGRESS_EVERY_S", 0.05)
    seen: list[dict] = []

    def check() -> None:  # while the generation is stopped: the progress line, and what it is made of
        while "ray: in flight: replica 0 (pid" not in caplog.text:
            time.sleep(0.01)
        seen.append(executor.in_flight())

    with open_executor(ExecutorConfig(**RAY, worker_retries=2)) as executor:
        killer = kill_when_started(control, 1, check=check)
        with caplog.at_level(logging.INFO, logger="tfgrpo.executors"):
            run_training_with(executor, tmp_path / "library.db", control)
        joined(killer)
    assert any(busy for name, busy in seen[0].items() if name.startswith("replica"))  # work in flight, per worker
    assert "died" in caplog.text
    assert library_state(tmp_path / "library.db") == library_state(local_run)


def run_training_with(executor, library: Path, control: Path) -> None:
    with TrainingFreeGRPO.open(library, seed=CONFIG.seed) as grpo:
        policy = executor.backend(functools.partial(DigitModel, str(control)))
        train(policy, SAMPLES, executor.reward(NumericMatchReward()), [ExampleUpdate(grpo)], CONFIG,
              metrics_path=f"{library}.metrics.jsonl")  # fmt: skip


def test_past_the_retries_the_step_fails_uncommitted_and_a_rerun_resumes(local_run, tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    for attempt in range(2):  # question 1 is lost twice: once more than --worker-retries 1 allows
        (control / f"block-1-{attempt}").touch()
    library = tmp_path / "library.db"
    killer = kill_when_started(control, 2)
    with pytest.raises(ExecutorError, match="Rerun the same command to resume"):
        run_training(ExecutorConfig(**RAY, worker_retries=1), library, control)
    joined(killer)
    failed = library_state(library)
    done = failed["position"].get("global_step", 0)
    assert done < 4  # the failing step and those after it: not committed
    assert len(metrics_lines(Path(f"{library}.metrics.jsonl"))) == done
    run_training(ExecutorConfig(**RAY), library, control)  # the same command again
    assert library_state(library) == library_state(local_run)


def test_a_reward_worker_killed_mid_task_is_retried_and_scores_stay_in_order(tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    (control / "block-2-0").touch()

    def digit_reward(prompt, response, sample):  # stops once in question 2 (its process is killed there)
        stop_if_told(control, prompt)
        return float(response == sample["answer"])

    items = [(s["prompt"], str(i % 3), s) for i, s in enumerate(SAMPLES)]
    with open_executor(ExecutorConfig(**RAY, worker_retries=1)) as executor:
        killer = kill_when_started(control, 1)
        scores = executor.reward(FunctionReward(digit_reward)).score_batch(items)
        joined(killer)
    assert [s.value for s in scores] == [float(str(i % 3) == s["answer"]) for i, s in enumerate(SAMPLES)]
    assert not list(control.glob("block-*"))  # the stop happened, in a worker that was then killed


def test_the_proxys_awaited_scores_come_back_in_order():
    # `tfgrpo serve --reward ... --executor ray` awaits the batch (best-of-G) on its event loop.
    items = [(s["prompt"], str(i % 2), s) for i, s in enumerate(SAMPLES)]
    inline = NumericMatchReward()
    with open_executor(ExecutorConfig(**RAY)) as executor:
        remote = asyncio.run(executor.reward(inline).ascore_batch(items))
    assert remote == inline.score_batch(items) and {s.value for s in remote} == {0.0, 1.0}


SANDBOX = SandboxConfig(timeout_s=4, memory_mb=256)
ESCAPES = {
    "hangs": "    while True:\n        pass\n",
    "hangs after stopping itself": "    import os, signal\n    os.kill(os.getpid(), signal.SIGSTOP)\n",
    "fork bomb": "    import os\n    while True:\n        os.fork()\n",
    "writes to the host's /tmp": "    open('{marker}', 'w').write('escaped')\n    return x + y\n",
    "reads the library file": "    return len(open('{library}', 'rb').read())\n",
    "kills every process it can": "    import os, signal\n    os.kill(-1, signal.SIGKILL)\n    return None\n",
}


def test_hanging_and_escaping_rewards_are_stopped_by_the_sandbox_inside_ray_workers(tmp_path):
    from support.cheats import HONEST_WRONG, cheats
    from support.rewards import humaneval_rows

    row = humaneval_rows()["HumanEval/53"]  # add(x, y)
    marker, library = tmp_path / "escaped", tmp_path / "library.db"
    library.write_bytes(b"SQLite format 3\x00")
    responses = {name: code.format(marker=marker, library=library) for name, code in ESCAPES.items()}
    chosen = ("__eq__ always True (a class)", "builtins.len override", "marker from open(sys.argv[0])")
    responses.update({name: response for name, (task, response) in cheats().items() if name in chosen})
    responses["honest wrong"] = HONEST_WRONG
    responses["right"] = "    return x + y\n"
    items = [(row["prompt"], response, row) for response in responses.values()]
    inline = UnitTestReward(SANDBOX)
    with open_executor(ExecutorConfig(**RAY)) as executor:
        remote = executor.reward(inline).score_batch(items)
    expected = inline.score_batch(items, max_workers=1)
    assert [s.value for s in remote] == [s.value for s in expected]
    verdicts = {name: (s.value, s.details.get("outcome")) for name, s in zip(responses, remote)}
    assert {name for name, (value, _) in verdicts.items() if value > 0} == {"right"}
    assert verdicts["hangs"] == verdicts["hangs after stopping itself"] == (0.0, "timeout")
    assert not marker.exists()  # what it wrote stayed in the sandbox's own /tmp
    assert library.read_bytes() == b"SQLite format 3\x00"


def test_resources_the_cluster_cannot_hold_are_refused_before_anything_runs():
    with open_executor(ExecutorConfig(executor="ray", replicas=3, replica_cpus=1.0)) as executor:
        with pytest.raises(ConfigError, match="need 4 CPUs; the Ray cluster has 2"):
            executor.backend(DigitModel)
        with pytest.raises(ConfigError, match="--replicas 3 copies a local model"):
            executor.backend("openai:m@http://127.0.0.1:9/v1")
