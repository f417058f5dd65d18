"""Training: the step (`step.run_step`) over every batch of every epoch, with one or more update
strategies (`ExampleUpdate`, `LessonUpdate`, or both in the same step), resumable.

Each strategy commits a step together with its position and the run's identity, so a killed run that is
started again continues at the next step without redoing or double-counting a group, and a rerun whose
data, seed, batch size or group size differ is refused instead of silently misaligning the batches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..agents.base import Agent
from ..errors import ConfigError
from ..learn.example_update import ExampleUpdate
from ..learn.rollout_log import Recorder, RolloutLog
from ..learn.update import Update
from ..llm.base import Backend
from ..llm.cache import LLMCache
from ..rewards.base import Reward
from ._active import ActiveAllocation
from ._progress import Progress
from ._schedule import run_steps, total_steps
from .config import RUN_FIELDS, TrainConfig
from .step import StepMetrics, run_step


def train(
    policy: Backend,
    samples: Sequence[dict],
    reward: Reward,
    updates: Sequence[Update],
    config: TrainConfig = TrainConfig(),
    *,
    cache: LLMCache | None = None,
    metrics_path: str | Path | None = None,
    on_step: Callable[[StepMetrics, int], None] | None = None,
    validation: Sequence[dict] | None = None,
    run: dict[str, Any] | None = None,
    agent: Agent | None = None,
    rollout_log: RolloutLog | None = None,
    task_name: str | None = None,
) -> list[StepMetrics]:
    """Run (or resume) training; returns the metrics of the steps run now.

    `updates`: the strategies, each committing every step. `cache`: every call of the policy and the
    critic goes through it, so a resumed run pays once. `validation`: the samples validated lesson
    updates draw from (default: each step's batch). `run`: what else identifies the run (e.g. the data
    file's name), stored and checked on resume with the data fingerprint and `RUN_FIELDS`. `agent`: each
    rollout is a trajectory it runs (None: one completion). `rollout_log`: every rollout is logged there
    (source "train", the run named by its identity, `task_name` as the task). With `config.active`, the
    batches are allocated actively (`ActiveAllocation`) instead of every prompt once per epoch.
    """
    if not updates:
        raise ConfigError("train needs at least one update strategy (ExampleUpdate, LessonUpdate)")
    for update in updates:
        update.check(config.group_size)
    identity = run_identity(samples, config, run)
    check_resume(updates, identity)
    done = min(u.done() for u in updates)
    total = total_steps(len(samples), config.batch_size, config.epochs)
    allocation = None
    if config.active:
        examples = next((u for u in updates if isinstance(u, ExampleUpdate)), None)
        if examples is None:
            raise ConfigError("--active counts each prompt's experiences: use it with --strategy examples or both")
        allocation = ActiveAllocation(examples.library, samples, config)
        updates = [allocation, *updates]  # first: the strategies save the allocation with their change
    display = Progress(total, "step", label="train", done=done)
    record = None
    if rollout_log is not None:
        name = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
        record = Recorder(rollout_log, "train", name, task=task_name)

    def report(metrics: StepMetrics, total: int) -> None:
        display.update(metrics.global_step, _summary(metrics))
        if on_step is not None:
            on_step(metrics, total)

    with display:
        return run_steps(
            samples,
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed,
            done=done,
            step=lambda batch, epoch, step, global_step: run_step(
                policy,
                batch,
                reward,
                updates,
                config,
                epoch=epoch,
                step=step,
                global_step=global_step,
                cache=cache,
                validation=list(validation) if validation else None,
                progress_extra={"run": identity},
                agent=agent,
                record=record,
            ),
            report=report,
            metrics_path=metrics_path,
            batches=allocation.batches() if allocation is not None else None,
            start=done if allocation is not None else 0,
            total=total,
        )


def run_identity(samples: Sequence[dict], config: TrainConfig, run: dict[str, Any] | None) -> dict[str, Any]:
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(json.dumps([str(sample.get("id", "")), sample["prompt"]], ensure_ascii=False).encode())
    identity = {
        **(run or {}),
        "samples": len(samples),
        "data_fingerprint": digest.hexdigest()[:16],
        **{name: getattr(config, name) for name in RUN_FIELDS},
    }
    if config.active:  # (only then: libraries trained before --active existed keep their identity)
        identity["active"] = {"min": config.active_min, "budget": config.active_budget}
    return identity


def check_resume(updates: Sequence[Update], identity: dict[str, Any]) -> None:
    """Refuse to continue a library trained with other data or settings: its stored position would
    point into different batches."""
    for update in updates:
        stored = update.stored_run()
        if update.done() == 0 or stored is None:
            continue
        differences = [
            f"{key}: {stored.get(key)!r} in the library, {identity.get(key)!r} now"
            for key in sorted(set(stored) | set(identity))
            if stored.get(key) != identity.get(key)
        ]
        if differences:
            raise ConfigError(
                f"this library's {update.name} were trained (up to step {update.done()}) by a different run: "
                + "; ".join(differences)
                + ". Rerun with the same settings to resume, or train into a new library file "
                "(another --library path) to start over."
            )


def _summary(m: StepMetrics) -> str:
    parts = [f"reward {m.reward_mean:.3f}", f"signal {m.groups_with_signal}/{m.groups}"]
    if m.trajectories:
        parts.append(f"tool calls/rollout {m.trajectories['tool_calls_per_rollout']:.2f}")
    if "examples" in m.updates:
        parts.append(f"+{m.stored} -{m.pruned} | library {m.library_size}")
    if "lessons" in m.updates:
        parts.append(f"ops {m.applied} applied, {m.skipped} skipped | lessons {m.lessons} (v{m.lesson_version})")
        if m.accepted is not None:
            verdict = "accepted" if m.accepted else "rejected"
            parts.append(f"validation {m.validation_current:.3f} -> {m.validation_candidate:.3f} {verdict}")
    return " | ".join(parts) + f" | {m.seconds:.1f}s"
