"""The Training-Free GRPO loop: for each prompt, generate a group conditioned on the library, score it,
compute advantages, update the library; checkpoint after every step.

A step is one batch of prompts. Its groups go into the library in one update together with the loop's
position (`TrainingFreeGRPO.add_rollout_groups(..., progress=...)`), so with a store (SQLite) a killed
run resumes at the next step without redoing or double-counting a group.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..llm.base import Backend
from ..rewards.base import Reward
from .rollouts import RolloutConfig, rollout_batch
from .steps import StepRecord, run_steps


@dataclass(frozen=True)
class TrainConfig(RolloutConfig):
    epochs: int = 1
    """Passes over the training samples."""
    batch_size: int = 4
    """Prompts per step (the library is updated and checkpointed once per step)."""
    group_size: int = 8
    """Rollouts per prompt (G)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "group_size", "max_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if self.group_size < 2:
            raise ConfigError("TrainConfig.group_size must be >= 2: advantages compare rollouts within a group")
        if self.shots < 0 or self.token_budget < 0:
            raise ConfigError("TrainConfig.shots and token_budget must be >= 0")


@dataclass
class StepMetrics(StepRecord):
    stored: int
    pruned: int
    library_size: int
    avg_advantage: float
    max_advantage: float
    min_advantage: float
    prompt_tokens: int
    completion_tokens: int
    cost: float
    seconds: float


def train(
    backend: Backend,
    samples: Sequence[dict],
    reward: Reward,
    grpo: TrainingFreeGRPO,
    config: TrainConfig = TrainConfig(),
    metrics_path: str | Path | None = None,
    on_step: Callable[[StepMetrics, int], None] | None = None,
    task_name: str = "task",
) -> list[StepMetrics]:
    """Run (or resume) training; returns the metrics of the steps run now."""
    return run_steps(
        samples,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        done=(grpo.progress or {}).get("global_step", 0),
        step=lambda batch, epoch, step, global_step: run_step(
            backend, batch, reward, grpo, config, epoch, step, global_step, task_name
        ),
        report=on_step or _progress_printer(-(-len(samples) // config.batch_size) * config.epochs),
        metrics_path=metrics_path,
    )


def run_step(
    backend: Backend,
    batch: list[dict],
    reward: Reward,
    grpo: TrainingFreeGRPO,
    config: TrainConfig,
    epoch: int,
    step: int,
    global_step: int,
    task_name: str,
) -> StepMetrics:
    started = time.perf_counter()
    usage_before = backend.usage.snapshot()
    counters_before = (grpo.total_stored, grpo.total_pruned)

    # 1-2. Generate a group per prompt, conditioned on experiences from the library; score each rollout.
    groups, scores = rollout_batch(
        backend, batch, reward, grpo, config.group_size, config, seed=config.seed * 1_000_003 + global_step
    )
    rewards = [[s.value for s in group] for group in scores]

    # 3-4. Advantages and the library update: one update for the whole step, with the position.
    updates = []
    with_signal = 0
    for sample, group, group_rewards in zip(batch, groups, rewards):
        with_signal += min(group_rewards) != max(group_rewards)
        rollouts = [(sample["prompt"], g.text) for g in group]
        updates.append((rollouts, group_rewards, {"task": task_name, "sample_id": str(sample.get("id", ""))}))
    grpo.add_rollout_groups(updates, progress={"epoch": epoch, "step": step, "global_step": global_step})

    usage = backend.usage.snapshot() - usage_before
    stats = grpo.stats()
    return StepMetrics(
        epoch=epoch,
        step=step,
        global_step=global_step,
        groups=len(batch),
        groups_with_signal=with_signal,
        reward_mean=sum(map(sum, rewards)) / (len(batch) * config.group_size),
        stored=grpo.total_stored - counters_before[0],
        pruned=grpo.total_pruned - counters_before[1],
        library_size=stats.current_library_size,
        avg_advantage=stats.avg_advantage,
        max_advantage=stats.max_advantage,
        min_advantage=stats.min_advantage,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost=usage.cost,
        seconds=time.perf_counter() - started,
    )


def _progress_printer(total_steps: int) -> Callable[[StepMetrics, int], None]:
    """A bar on a terminal (tqdm when installed), plain lines otherwise (CI logs)."""
    bar = None
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True)
        except ImportError:
            bar = None

    def report(m: StepMetrics, total: int) -> None:
        text = (
            f"reward {m.reward_mean:.3f} | signal {m.groups_with_signal}/{m.groups} | "
            f"+{m.stored} -{m.pruned} | library {m.library_size}"
        )
        if bar is not None:
            bar.n = m.global_step
            bar.set_postfix_str(text)
        else:
            print(f"step {m.global_step}/{total} {text} | {m.seconds:.1f}s", file=sys.stderr, flush=True)

    return report
