"""`--executor` on the command line: what it accepts, what it says without Ray, and a training run of the
bundled model on two replicas that leaves the library the same run leaves without Ray."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tfgrpo.cli import main
from tfgrpo.errors import BackendError, ConfigError, ExecutorError
from tfgrpo.executors import ExecutorConfig, LocalExecutor, open_executor
from tfgrpo.llm.local import bundled_model_path

from .support import library_state, metrics_lines


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("local", None),
        ("ray", "local"),
        ("ray:auto", "auto"),
        ("ray:10.1.2.3:6379", "10.1.2.3:6379"),
        ("ray://head.example:10001", "ray://head.example:10001"),
    ],
)
def test_executor_specs(spec, address):
    assert ExecutorConfig(executor=spec).ray_address() == address


@pytest.mark.parametrize(
    "spec", ["Ray", "ray:", "ray://", "ray://host", "dask", "ray:host", "ray://host:1\n", "ray:host:1\n"]
)
def test_a_spec_it_cannot_read_is_refused_naming_the_forms(spec):
    with pytest.raises(ConfigError, match="use local, ray, ray:auto, ray:HOST:PORT or ray://HOST:PORT"):
        ExecutorConfig(executor=spec)


def test_local_is_the_default_and_runs_in_this_process():
    executor = open_executor()
    assert isinstance(executor, LocalExecutor)
    reward = object.__new__(type("R", (), {}))
    assert executor.reward(reward) is reward  # type: ignore[arg-type]


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` finds where Ray is not installed
    with pytest.raises(ConfigError, match=r"pip install 'tfgrpo\[ray\]'"):
        open_executor(ExecutorConfig(executor="ray"))
    library = tmp_path / "lib.db"
    assert main(["train", "--task", "arithmetic", "--limit", "2", "-l", str(library), "--executor", "ray"]) != 0
    assert "pip install 'tfgrpo[ray]'" in capsys.readouterr().err
    assert not library.with_name("lib.db.metrics.jsonl").exists()  # refused before any step


def test_print_config_shows_where_the_work_runs(capsys):
    assert main(["train", "--executor", "ray", "--replicas", "2", "--print-config", "json"]) == 0
    out = capsys.readouterr().out
    assert '"executor": "ray"' in out and '"replicas": 2' in out and '"worker_retries": 2' in out


@pytest.mark.slow
@pytest.mark.model
def test_the_bundled_model_on_two_replicas_trains_the_library_of_a_local_run(tmp_path, capsys):
    pytest.importorskip("ray")
    try:
        bundled_model_path()
    except BackendError as exc:  # `make test` installs it: its absence in CI is a failure
        pytest.fail(str(exc)) if os.environ.get("CI") else pytest.skip(str(exc))
    args = ["train", "--task", "arithmetic", "--limit", "2", "--batch-size", "2", "-G", "4", "--max-tokens", "6"]
    assert main([*args, "-l", str(tmp_path / "local.db")]) == 0
    ray = ["--executor", "ray", "--ray-cpus", "2", "--replicas", "2", "--replica-cpus", "0.5", "--reward-cpus", "0.5"]
    assert main([*args, "-l", str(tmp_path / "ray.db"), *ray]) == 0
    capsys.readouterr()
    local = library_state(tmp_path / "local.db")
    assert local["position"]["global_step"] == 1
    assert library_state(tmp_path / "ray.db") == local
    assert metrics_lines(tmp_path / "ray.db.metrics.jsonl") == metrics_lines(tmp_path / "local.db.metrics.jsonl")


@pytest.mark.slow
def test_repeat_with_rewards_on_ray_gives_the_results_of_a_local_repeat(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    from support.llm import StandIn
    from support.repeat import policy, repeat, setup
    from tfgrpo.executors.ray_executor import RayReward

    sent: list[int] = []
    real = RayReward._collect
    monkeypatch.setattr(RayReward, "_collect", lambda self, refs: sent.append(len(refs)) or real(self, refs))

    with StandIn(policy) as server:
        train, evaluate = setup(tmp_path, server)
        assert repeat(tmp_path / "local", train, evaluate, 0, 1) == 0
        ray = ["--executor", "ray", "--ray-cpus", "2", "--reward-cpus", "0.5"]
        assert main(["repeat", "--out", str(tmp_path / "ray"), "--seeds", "0", "1", "--train-args", train,
                     "--eval-args", evaluate, *ray]) == 0  # fmt: skip
    capsys.readouterr()
    assert sum(sent) > 100  # every rollout of both trainings and of the evaluations scored in Ray tasks
    for seed in (0, 1):
        name = f"library-seed{seed}.db"
        assert library_state(tmp_path / "ray" / name) == library_state(tmp_path / "local" / name)
    local, remote = (json.loads((tmp_path / run / "repeat.json").read_text()) for run in ("local", "ray"))
    for evaluation in remote["evaluations"]:  # where each library lies: the one difference
        evaluation["library"]["path"] = evaluation["library"]["path"].replace(f"{tmp_path}/ray", f"{tmp_path}/local")
    assert remote == local and local["train_seeds"] == [0, 1]


@pytest.mark.parametrize(
    ("failures", "joined", "tries"),
    [
        ([ConnectionAbortedError("Initialization failure from server")], True, 2),
        ([ConnectionAbortedError("Initialization failure from server")] * 3, False, 3),
        ([ConnectionError("ray client connection timeout")], False, 1),
    ],
)
def test_a_cluster_that_fails_to_start_a_client_server_is_tried_again_one_that_does_not_answer_is_not(
    monkeypatch, failures, joined, tries
):
    # A stand-in for ray.init: a cluster whose proxier loses its race cannot be had on demand.
    ray_executor = pytest.importorskip("tfgrpo.executors.ray_executor")
    calls = []

    def init(address, **kwargs):
        calls.append(address)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]

    monkeypatch.setattr(ray_executor.ray, "init", init)
    monkeypatch.setattr(ray_executor.ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray_executor.ray, "is_initialized", lambda: False)
    config = ExecutorConfig(executor="ray://head.example:10001")
    if joined:
        ray_executor.RayExecutor(config).close()
    else:
        with pytest.raises(ExecutorError, match="cannot join the Ray cluster at ray://head.example:10001"):
            ray_executor.RayExecutor(config)
    assert calls == ["ray://head.example:10001"] * tries
