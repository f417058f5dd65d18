"""Held-out evaluation: k samples per prompt, Mean@k and Pass@k, per condition (no library, a
library, ...), all on the same prompts and generation seeds, with a paired bootstrap 95% confidence
interval for each condition's difference from the first one."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..llm.base import Backend
from ..prompting import with_lessons
from ..rewards.base import Reward
from .rollouts import RolloutConfig, rollout_batch

if TYPE_CHECKING:
    from ..semantic.lessons import LessonLibrary


@dataclass(frozen=True)
class EvalConfig(RolloutConfig):
    k: int = 4
    """Samples per prompt."""
    temperature: float = 0.3
    seed: int = 1234
    batch_size: int = 8
    success_threshold: float = 1.0
    """A sample counts as solved for Pass@k when its reward is at least this."""
    bootstrap: int = 2000
    """Bootstrap resamples for the confidence interval."""


@dataclass(frozen=True)
class LessonCondition:
    """A condition with a lesson library's lessons (paper mode) in the prompt, and with few-shot
    examples from `examples` too when given. The lessons (`LessonLibrary.render()`) go after the
    template's instruction in the system message (`placement="system"`) or before the question
    ("user"); everything else (query form, stop strings, sampling) is the evaluation's own, so the
    conditions differ only in what the prompt holds."""

    library: LessonLibrary
    examples: TrainingFreeGRPO | None = None
    placement: str = "system"

    def __post_init__(self) -> None:
        if self.placement not in ("system", "user"):
            raise ConfigError(f"lesson placement must be 'system' or 'user', got {self.placement!r}")

    def apply(self, config: RolloutConfig) -> RolloutConfig:
        """`config` with the lessons put into its prompt template."""
        return replace(config, template=with_lessons(config.template, self.library.render(), self.placement))


Condition = TrainingFreeGRPO | LessonCondition | None


def print_progress(condition: str, done: int, total: int) -> None:
    """Plain progress lines on stderr (one per batch), for `evaluate(progress=...)`."""
    print(f"eval {condition}: {done}/{total} prompts", file=sys.stderr, flush=True)


@dataclass
class ConditionResult:
    name: str
    rewards: np.ndarray  # (prompts, k)
    success_threshold: float

    @property
    def mean_at_k(self) -> float:
        return float(self.rewards.mean())

    @property
    def pass_at_k(self) -> float:
        return float((self.rewards >= self.success_threshold).any(axis=1).mean())


@dataclass
class Comparison:
    name: str
    baseline: str
    mean_diff: float
    ci_low: float
    ci_high: float


@dataclass
class EvalReport:
    conditions: list[ConditionResult]
    comparisons: list[Comparison]
    n_prompts: int
    k: int

    def table(self) -> str:
        lines = [
            f"Held-out evaluation: {self.n_prompts} prompts x k={self.k} samples",
            f"{'condition':<14} {'Mean@k':>8} {'Pass@k':>8}",
        ]
        for c in self.conditions:
            lines.append(f"{c.name:<14} {c.mean_at_k:>8.3f} {c.pass_at_k:>8.3f}")
        for d in self.comparisons:
            lines.append(
                f"{d.name} - {d.baseline}: Mean@k {d.mean_diff:+.3f} "
                f"(paired bootstrap 95% CI {d.ci_low:+.3f} .. {d.ci_high:+.3f})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "n_prompts": self.n_prompts,
            "k": self.k,
            "conditions": {c.name: {"mean_at_k": c.mean_at_k, "pass_at_k": c.pass_at_k} for c in self.conditions},
            "comparisons": [vars(d) for d in self.comparisons],
        }


def paired_bootstrap_ci(
    diffs: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile confidence interval of the mean of per-prompt differences, prompts resampled."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


Progress = Callable[[str, int, int], None]
"""Called as `progress(condition, prompts_done, prompts_total)` after each batch."""


def score_condition(
    backend: Backend,
    samples: Sequence[dict],
    reward: Reward,
    grpo: Condition,
    config: EvalConfig,
    progress: Progress | None = None,
    name: str = "",
) -> np.ndarray:
    """Rewards (prompts x k) for one condition; seeded per batch, so every condition meets the same
    randomness."""
    if isinstance(grpo, LessonCondition):
        config, grpo = grpo.apply(config), grpo.examples
    rows = []
    for start in range(0, len(samples), config.batch_size):
        batch = samples[start : start + config.batch_size]
        _, scores = rollout_batch(backend, batch, reward, grpo, config.k, config, seed=config.seed + start)
        rows.extend([[s.value for s in group] for group in scores])
        if progress is not None:
            progress(name, len(rows), len(samples))
    return np.asarray(rows, dtype=float)


def evaluate(
    backend: Backend,
    samples: Sequence[dict],
    reward: Reward,
    conditions: dict[str, Condition],
    config: EvalConfig = EvalConfig(),
    train_prompts: set[str] | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate each condition (name -> library, `LessonCondition`, None for no library) on the same
    held-out samples.
    `train_prompts`, when given, is checked: evaluating on a training prompt is an error."""
    if not samples:
        raise ConfigError("no evaluation samples")
    if train_prompts:
        leaked = [s["prompt"] for s in samples if s["prompt"] in train_prompts]
        if leaked:
            raise ConfigError(f"{len(leaked)} evaluation prompts are also training prompts, e.g. {leaked[0]!r:.80}")
    results = [
        ConditionResult(
            name, score_condition(backend, samples, reward, grpo, config, progress, name), config.success_threshold
        )
        for name, grpo in conditions.items()
    ]
    base = results[0]
    comparisons = []
    for other in results[1:]:
        diffs = other.rewards.mean(axis=1) - base.rewards.mean(axis=1)
        low, high = paired_bootstrap_ci(diffs, config.bootstrap, config.seed)
        comparisons.append(Comparison(other.name, base.name, float(diffs.mean()), low, high))
    return EvalReport(results, comparisons, len(samples), config.k)
