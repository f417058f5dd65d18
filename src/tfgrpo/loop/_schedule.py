"""The resumable step driver: epochs, batches in a seeded order, skipping what a previous run committed,
one metrics line per step."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def epoch_batches(samples: Sequence[dict], batch_size: int, seed: int, epoch: int) -> list[list[dict]]:
    """An epoch's batches: samples shuffled by (seed, epoch), so a resumed run sees the same order."""
    order = list(samples)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def total_steps(samples: int, batch_size: int, epochs: int) -> int:
    """How many global steps a run over `samples` samples takes."""
    return -(-samples // batch_size) * epochs


def run_steps(
    samples: Sequence[dict],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    done: int,
    step: Callable[[list[dict], int, int, int], Any],
    report: Callable[[Any, int], None],
    metrics_path: str | Path | None = None,
    batches: Iterable[tuple[int, int, list[dict]]] | None = None,
    start: int = 0,
    total: int | None = None,
) -> list:
    """Call `step(batch, epoch, step_in_epoch, global_step)` for every batch of every epoch, skipping the
    first `done` global steps (committed before a restart). Each step's metrics (an object with
    `to_dict()`) is appended to `metrics_path` as a JSON line and passed to `report(metrics, total)`.

    `batches`, when given, are the steps instead, as (epoch, step in epoch, batch), numbered from `start`
    + 1 (a continual run's phase after the phases before it; an active schedule that decides each batch
    from the steps before it, resumed at `start`); `total`: the run's steps, for the report."""
    if not samples:
        raise ConfigError("no training samples")
    if batches is None:
        batches = (
            (epoch, index, batch)
            for epoch in range(epochs)
            for index, batch in enumerate(epoch_batches(samples, batch_size, seed, epoch))
        )
    total = total if total is not None else start + total_steps(len(samples), batch_size, epochs)
    log = open(metrics_path, "a", encoding="utf-8") if metrics_path is not None else None
    if log is not None and metrics_path is not None:
        _mark_lost_metrics(Path(metrics_path), log, done)
    history = []
    try:
        global_step = start
        for epoch, index, batch in batches:
            global_step += 1
            if global_step <= done:
                continue
            metrics = step(batch, epoch, index, global_step)
            history.append(metrics)
            if log:
                log.write(json.dumps(metrics.to_dict(), ensure_ascii=False) + "\n")
                log.flush()
            report(metrics, total)
    finally:
        if log:
            log.close()
    return history


def _mark_lost_metrics(path: Path, log, done: int) -> None:
    """A run killed after a step's commit but before its metrics line leaves the log one step short:
    say so with a marker line, so the log's steps match the library's. A line the kill cut short is
    ended, so the next line starts on its own."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        log.write("\n")
    last = 0
    for line in text.splitlines():
        try:
            last = max(last, int(json.loads(line).get("global_step", 0)))
        except (ValueError, TypeError, AttributeError):
            continue  # a line cut short by the kill, or not ours
    if last == 0:
        return  # a new log for a resumed run: nothing to compare with
    for global_step in range(last + 1, done + 1):
        note = "the run stopped after this step was committed and before its metrics were written"
        log.write(json.dumps({"global_step": global_step, "metrics_lost": note}) + "\n")
    log.flush()
