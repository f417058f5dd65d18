"""Tracking through each tool's own client, read back with its own reader: the config, a real training
run's per-step metrics, an evaluation result and the library file; a failing tracker warns and the run
goes on."""

from __future__ import annotations

import json
import logging

import pytest

from support.report import build
from tfgrpo.report import read_metrics
from tfgrpo.tracking import open_tracker

CONFIG = {"group_size": 4, "batch_size": 4, "stop": ["\n"], "template": {"instruction": "x"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tracked"))


def log_run(tracker, trained) -> list[dict]:
    steps = read_metrics(f"{trained['library']}.metrics.jsonl")
    with tracker:
        tracker.log_config(CONFIG)
        for record in steps:
            tracker.log_metrics(record, record["global_step"])
        tracker.log_result(json.loads(trained["eval"].read_text()))
        tracker.log_artifact(trained["library"])
    assert tracker.active is False  # closed
    return steps


def test_mlflow_run_reads_back_with_mlflow(trained, tmp_path, caplog):
    pytest.importorskip("mlflow", reason="pip install 'tfgrpo[track]'")
    from mlflow.tracking import MlflowClient

    with caplog.at_level(logging.WARNING, logger="tfgrpo"):
        tracker = open_tracker("mlflow", "train-test", tmp_path)
        steps = log_run(tracker, trained)
    assert not [r for r in caplog.records if r.name.startswith("tfgrpo.tracking")]
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params["group_size"] == "4"
    history = client.get_metric_history(tracker.run_id, "reward_mean")
    assert [m.step for m in history] == [s["global_step"] for s in steps]
    assert [m.value for m in history] == [s["reward_mean"] for s in steps]
    assert run.data.metrics["eval/library/mean_at_k"] == pytest.approx(1.0)
    artifacts = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert {"lib.db", "evaluation.json", "config.json"} <= artifacts


def test_tensorboard_events_read_back_with_tensorboard(trained, tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'tfgrpo[track]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = open_tracker("tensorboard", "train-test", tmp_path)
    steps = log_run(tracker, trained)
    events = EventAccumulator(str(tracker.logdir))
    events.Reload()
    scalars = events.Scalars("signal_share")
    assert [e.step for e in scalars] == [s["global_step"] for s in steps]
    assert [e.value for e in scalars] == pytest.approx([s["signal_share"] for s in steps])
    assert events.Scalars("eval/library/mean_at_k")[0].value == pytest.approx(1.0)
    assert {"config", "evaluation"} <= set(events.Tags()["tensors"])
    (config,) = events.Tensors("config")
    assert '"group_size": 4' in config.tensor_proto.string_val[0].decode()
    assert (tracker.logdir / "lib.db").read_bytes() == trained["library"].read_bytes()


@pytest.mark.slow  # importing wandb takes seconds
def test_wandb_offline_run_files_are_written(trained, tmp_path):
    pytest.importorskip("wandb", reason="pip install 'tfgrpo[track]'")
    tracker = open_tracker("wandb", "train-test", tmp_path)
    log_run(tracker, trained)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (records,) = run_dir.glob("run-*.wandb")
    data = records.read_bytes()
    assert len(data) > 1000 and b"reward_mean" in data and b"eval/library/mean_at_k" in data
    assert (run_dir / "files" / "evaluation.json").exists()


def test_a_tracker_that_fails_warns_once_and_the_run_goes_on(trained, tmp_path, caplog):
    pytest.importorskip("mlflow", reason="pip install 'tfgrpo[track]'")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the run folder should be")
    with caplog.at_level(logging.WARNING, logger="tfgrpo"):
        off = open_tracker("mlflow", "train-test", blocked)
        log_run(off, trained)  # nothing raised
        tracker = open_tracker("tensorboard", "train-test", tmp_path / "tb")
        tracker.writer.close()
        tracker.logdir.rename(tmp_path / "gone")
        tracker.logdir.parent.joinpath(tracker.logdir.name).write_text("not a folder")
        tracker.log_artifact(trained["library"])  # fails: the run folder is now a file
        tracker.log_metrics({"reward_mean": 0.5}, 1)  # tracking is off: nothing more is tried
    warnings = [r.getMessage() for r in caplog.records if r.name == "tfgrpo.tracking"]
    assert len(warnings) == 2, warnings
    assert "could not start" in warnings[0] and "the run goes on" in warnings[0]
    assert "tensorboard tracking stopped" in warnings[1] and tracker.active is False
