"""Held-out evaluation: k samples per prompt, Mean@k and Pass@k, per condition (no library, a
library, ...), all on the same prompts and generation seeds, with a paired bootstrap 95% confidence
interval for each condition's difference from the first one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.knobs import knob
from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..llm.base import Backend
from ..rewards.base import Reward
from .progress import Progress as ProgressDisplay
from .rollouts import RolloutConfig, rollout_batch

if TYPE_CHECKING:
    from ..semantic.lessons import LessonLibrary


@dataclass(frozen=True)
class EvalConfig(RolloutConfig):
    """The knobs of a held-out evaluation (and, through `RolloutConfig`, of its prompts)."""

    k: int = knob(4, "samples per prompt", minimum=1, flag="-k")
    temperature: float = knob(0.3, "sampling temperature of the policy", minimum=0.0, maximum=2.0)
    seed: int = knob(1234, "seed of the examples drawn and the sampling (the same for every condition)")
    batch_size: int = knob(8, "prompts per generation call", minimum=1)
    success_threshold: float = knob(1.0, "a sample counts as solved for Pass@k when its reward is at least this")
    bootstrap: int = knob(2000, "bootstrap resamples for the confidence intervals", minimum=100)


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

    def prompt_condition(self) -> dict:
        """The `rollout_batch` keywords that put this condition into the prompt."""
        return {"examples": self.examples, "lessons": self.library.render(), "placement": self.placement}


Condition = TrainingFreeGRPO | LessonCondition | None


def show_progress() -> Callable[[str, int, int], None]:
    """A `progress` callback for `evaluate` and `attribute_lessons`: the package's progress display
    (a bar on a terminal, lines otherwise), one per condition."""
    displays: dict[str, ProgressDisplay] = {}

    def report(condition: str, done: int, total: int) -> None:
        display = displays.get(condition)
        if display is None:
            display = displays[condition] = ProgressDisplay(total, "prompt", label=f"eval {condition}")
        display.update(done)
        if done >= total:
            display.close()

    return report


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
    condition = grpo.prompt_condition() if isinstance(grpo, LessonCondition) else {"examples": grpo}
    rows = []
    for start in range(0, len(samples), config.batch_size):
        batch = samples[start : start + config.batch_size]
        _, scores = rollout_batch(backend, batch, reward, config.k, config, config.seed + start, **condition)
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
