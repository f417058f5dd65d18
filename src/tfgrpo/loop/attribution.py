"""Leave-one-out attribution of lessons: for each lesson, the held-out reward with every lesson in the
prompt minus the reward with every lesson but that one, on the same prompts and generation seeds (and
evaluation seeds), with a paired bootstrap 95% confidence interval over prompts and a sign-flip p-value,
Holm-corrected over the lessons (one comparison per lesson)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..agents.base import Agent
from ..agents.trajectory import Tally
from ..learn.rollout_log import Recorder
from ..llm.base import Backend
from ..rewards.base import Reward
from ..semantic.lessons import LessonLibrary
from .evaluate import (
    EvalConfig,
    LessonCondition,
    Progress,
    across,
    eval_seeds,
    holm,
    paired_bootstrap_ci,
    score_condition,
    sign_flip_p_value,
)


@dataclass
class LessonAttribution:
    lesson_id: str
    text: str
    mean_diff: float
    """Mean over prompts of reward(all lessons) - reward(all but this one): > 0 means the lesson helps."""
    ci_low: float
    ci_high: float
    diffs: list[float] = field(repr=False)
    """Per-prompt differences (each prompt's mean over its k samples and the evaluation seeds)."""
    p_value: float = 1.0
    """Two-sided paired sign-flip test over prompts."""
    p_holm: float = 1.0
    """`p_value` after Holm's correction over every lesson of the report."""


@dataclass
class AttributionReport:
    n_prompts: int
    k: int
    version: int
    full_mean: float
    """Mean reward with every lesson."""
    lessons: list[LessonAttribution]
    """Most helpful first."""
    seeds: list[int] = field(default_factory=list)
    prompt_ids: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    """With an agent: the trajectories' figures with every lesson (`Tally.to_dict`)."""

    def table(self) -> str:
        lines = [
            f"Leave-one-out attribution of {len(self.lessons)} lessons (v{self.version}): "
            f"{self.n_prompts} prompts x k={self.k} samples; Mean@k with all lessons {self.full_mean:.3f}",
            f"{'lesson':<8} {'all - without':>13}  {'95% CI':<17} {'Holm p':>6}  text",
        ]
        for a in self.lessons:
            ci = f"{a.ci_low:+.3f} .. {a.ci_high:+.3f}"
            lines.append(f"{a.lesson_id:<8} {a.mean_diff:>+13.3f}  {ci:<17} {a.p_holm:>6.3f}  {a.text}")
        lines.append(f"Holm p: paired sign-flip test over prompts, Holm-corrected over the {len(self.lessons)} lessons")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "kind": "attribution",
            "correction": "holm",
            "seeds": self.seeds,
            "prompt_ids": self.prompt_ids,
            "settings": self.settings,
            **self.meta,
            "n_prompts": self.n_prompts,
            "k": self.k,
            "version": self.version,
            "full_mean": self.full_mean,
            "lessons": [vars(a) for a in self.lessons],
            **({"trajectories": self.figures} if self.figures else {}),
        }


def attribute_lessons(
    backend: Backend,
    samples: Sequence[dict],
    reward: Reward,
    library: LessonLibrary,
    config: EvalConfig = EvalConfig(),
    *,
    placement: str = "system",
    progress: Progress | None = None,
    agent: Agent | None = None,
    record: Recorder | None = None,
) -> AttributionReport:
    """Leave-one-out attribution of every current lesson of `library` on `samples` (held out), k samples
    per prompt, every condition with the same seeds; ranked most helpful first. `record`: every rollout
    logged, under its condition ("all lessons", "without G3")."""
    lessons = library.lessons
    tally = Tally() if agent is not None else None
    count = 1 + len(lessons)
    full = score_condition(
        backend,
        samples,
        reward,
        LessonCondition(library, placement=placement),
        config,
        across(progress, 0, count),
        "all lessons",
        agent,
        tally,
        record.at(condition="all lessons") if record is not None else None,
    )
    full_per_prompt = full.mean(axis=(0, 2))
    results = []
    for index, (lesson_id, text) in enumerate(lessons.items(), start=1):
        rest = {i: t for i, t in lessons.items() if i != lesson_id}
        with library.detached(rest) as without:
            condition = LessonCondition(without, placement=placement)
            shown = across(progress, index, count)
            name = f"without {lesson_id}"
            logged = record.at(condition=name) if record is not None else None
            rewards = score_condition(backend, samples, reward, condition, config, shown, name, agent, None, logged)
        diffs = full_per_prompt - rewards.mean(axis=(0, 2))
        low, high = paired_bootstrap_ci(diffs, config.bootstrap, config.seed)
        p = sign_flip_p_value(diffs, config.bootstrap, config.seed)
        results.append(LessonAttribution(lesson_id, text, float(diffs.mean()), low, high, diffs.tolist(), p))
    for attribution, adjusted in zip(results, holm([a.p_value for a in results])):
        attribution.p_holm = adjusted
    results.sort(key=lambda a: -a.mean_diff)
    return AttributionReport(
        len(samples),
        config.k,
        library.version,
        float(full.mean()),
        results,
        seeds=eval_seeds(config),
        prompt_ids=[str(s.get("id", i)) for i, s in enumerate(samples)],
        settings=config.to_dict(),
        figures=tally.to_dict() if tally is not None else {},
    )
