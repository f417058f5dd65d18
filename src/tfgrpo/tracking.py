"""Experiment tracking (`--track mlflow|wandb|tensorboard`): a run's config, per-step metrics, evaluation
results and the library file, through each tool's own client: MLflow with a local file store, W&B in
offline mode, TensorBoard event files. Tracking never stops a run: the first failure of a tracker is
logged as a warning and the tracker turns itself off."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

log = logging.getLogger("tfgrpo.tracking")

TRACKERS = ("mlflow", "wandb", "tensorboard")
DEFAULT_DIR = "tfgrpo-runs"


def flat_numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a nested mapping, as `a/b/c` keys (booleans and lists left out)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_numbers(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out[name] = float(value)
    return out


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures of an `EvalReport.to_dict()`, an `AttributionReport.to_dict()` or a continual
    run's summary (`tfgrpo.loop.continual.summarise`)."""
    out: dict[str, float] = {}
    if result.get("kind") == "continual":
        for name, c in result["conditions"].items():
            for figure in ("acc", "bwt", "fwt"):
                if c.get(figure) is not None:
                    out[f"continual/{name}/{figure}"] = c[figure]["mean"]
        for name, lift in result.get("lifts", {}).items():
            if "mean" in lift:
                out[f"continual/{name} - {lift['baseline']}/acc"] = lift["mean"]
        return out
    for name, c in (result.get("conditions") or {}).items():
        out[f"eval/{name}/mean_at_k"] = c["mean_at_k"]
        out[f"eval/{name}/pass_at_k"] = c["pass_at_k"]
    for d in result.get("comparisons") or []:
        key = f"eval/{d['name']} - {d['baseline']}"
        out.update({f"{key}/diff": d["mean_diff"], f"{key}/ci_low": d["ci_low"], f"{key}/ci_high": d["ci_high"]})
        out[f"{key}/p_holm"] = d.get("p_holm", 1.0)
    for a in result.get("lessons") or []:
        out[f"attribution/{a['lesson_id']}"] = a["mean_diff"]
    return out


class Tracker:
    """One run in one tracking tool. Every method is safe: a failure warns once and ends tracking."""

    kind = "none"

    def __init__(self, run_name: str, folder: str | os.PathLike = DEFAULT_DIR) -> None:
        self.run_name = run_name
        self.folder = Path(folder)
        self.active = True
        self._lock = threading.Lock()  # `tfgrpo serve` logs each library's figures from its own thread

    def _safely(self, what: str, action: Callable[[], Any]) -> None:
        with self._lock:
            if not self.active:
                return
            try:
                action()
            except Exception as exc:  # tracking must never stop a run
                self.active = False
                log.warning("%s tracking stopped (%s failed: %s); the run goes on without it", self.kind, what, exc)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._safely("logging the config", lambda: self._config(_jsonable(config)))

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        numbers = flat_numbers(metrics)
        self._safely("logging metrics", lambda: self._metrics(numbers, step))

    def on_step(self, metrics: Any, total: int) -> None:
        """An `on_step` callback for `train`: the step's metrics record at its global step."""
        self.log_metrics(metrics.to_dict(), metrics.global_step)

    def log_result(self, result: Mapping[str, Any], name: str = "evaluation") -> None:
        """An evaluation or attribution result: its headline figures as metrics, the whole as a JSON file."""
        numbers = result_metrics(result)
        self._safely("logging the result", lambda: self._result(numbers, _jsonable(result), name))

    def log_artifact(self, path: str | os.PathLike) -> None:
        self._safely("logging the artifact", lambda: self._artifact(Path(path)))

    def close(self) -> None:
        self._safely("closing the run", self._close)
        self.active = False

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # What each tool does; the base class tracks nothing.
    def _config(self, config: dict) -> None: ...
    def _metrics(self, numbers: dict[str, float], step: int) -> None: ...
    def _result(self, numbers: dict[str, float], result: dict, name: str) -> None: ...
    def _artifact(self, path: Path) -> None: ...
    def _close(self) -> None: ...


class MLflowTracker(Tracker):
    """An MLflow run in a local file store (`FOLDER/mlruns`), experiment "tfgrpo"."""

    kind = "mlflow"

    def __init__(self, run_name: str, folder: str | os.PathLike = DEFAULT_DIR) -> None:
        super().__init__(run_name, folder)
        # MLflow 3 keeps the file store (no database, no server) behind this opt-in.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.uri = (self.folder / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name("tfgrpo")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("tfgrpo")
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def _config(self, config: dict) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, _short(v)) for k, v in config.items()])
        self.client.log_dict(self.run_id, config, "config.json")

    def _metrics(self, numbers: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_mlflow_key(k), v, now, step) for k, v in numbers.items()])

    def _result(self, numbers: dict[str, float], result: dict, name: str) -> None:
        self._metrics(numbers, 0)
        self.client.log_dict(self.run_id, result, f"{name}.json")

    def _artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def _close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker(Tracker):
    """A W&B run in offline mode under `FOLDER/wandb` (sync it later with `wandb sync`)."""

    kind = "wandb"

    def __init__(self, run_name: str, folder: str | os.PathLike = DEFAULT_DIR) -> None:
        super().__init__(run_name, folder)
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(
            project="tfgrpo", name=run_name, mode="offline", dir=str(self.folder), settings=wandb.Settings(silent=True)
        )

    def _config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def _metrics(self, numbers: dict[str, float], step: int) -> None:
        self.run.log(numbers, step=step)

    def _result(self, numbers: dict[str, float], result: dict, name: str) -> None:
        self.run.summary.update(numbers)
        path = Path(self.run.dir) / f"{name}.json"
        path.write_text(json.dumps(result))
        self._artifact(path, kind="result")

    def _artifact(self, path: Path, kind: str = "library") -> None:
        artifact = self.wandb.Artifact(_wandb_name(path.name), type=kind)
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def _close(self) -> None:
        self.run.finish()
        self.wandb.teardown()  # finish() leaves the offline run file to the W&B service: this writes it out


class TensorBoardTracker(Tracker):
    """TensorBoard event files under `FOLDER/tensorboard/RUN` written by TensorBoard's own event writer:
    scalars per step, the config and results as text. TensorBoard keeps no artifacts: the library file is
    copied next to the event file."""

    kind = "tensorboard"

    def __init__(self, run_name: str, folder: str | os.PathLike = DEFAULT_DIR) -> None:
        super().__init__(run_name, folder)
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.logdir = self.folder / "tensorboard" / run_name
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(self.logdir))

    def _summary(self, summary: Any, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def _text(self, tag: str, text: str) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        self._summary(text_pb(tag, text), 0)

    def _config(self, config: dict) -> None:
        self._text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def _metrics(self, numbers: dict[str, float], step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._summary(Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in numbers.items()]), step)
        self.writer.flush()

    def _result(self, numbers: dict[str, float], result: dict, name: str) -> None:
        self._metrics(numbers, 0)
        self._text(name, "```\n" + json.dumps(result, indent=1)[:100_000] + "\n```")

    def _artifact(self, path: Path) -> None:
        shutil.copy2(path, self.logdir / path.name)

    def _close(self) -> None:
        self.writer.close()


def open_tracker(kind: str | None, run_name: str, folder: str | os.PathLike = DEFAULT_DIR) -> Tracker:
    """The tracker `--track` names (None: one that tracks nothing). A tool that is not installed or will
    not start gives a warning and a tracker that tracks nothing: the run goes on."""
    if kind is None:
        return Tracker(run_name, folder)
    classes = {"mlflow": MLflowTracker, "wandb": WandbTracker, "tensorboard": TensorBoardTracker}
    if kind not in classes:
        raise ConfigError(f"--track takes one of {', '.join(TRACKERS)}, got {kind!r}")
    try:
        return classes[kind](run_name, folder)
    except Exception as exc:  # tracking must never stop a run
        hint = " (pip install 'tfgrpo[track]')" if isinstance(exc, ImportError) else ""
        log.warning("%s tracking is off: it could not start (%s)%s; the run goes on without it", kind, exc, hint)
        off = Tracker(run_name, folder)
        off.active = False
        return off


def run_name(command: str) -> str:
    return f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _jsonable(values: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(dict(values), default=str))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:500]  # MLflow refuses longer parameter values


def _mlflow_key(key: str) -> str:
    # MLflow keys allow letters, digits, _ - . space / only.
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)


def _wandb_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
