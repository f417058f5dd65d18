"""`LessonUpdate`, the paper's semantic advantage: the critic summarises the rollouts of the groups with
signal, compares each group, consolidates the proposals; the result is (optionally) validated and applied
to the lesson library as one version."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from typing import Any

from ..agents.trajectory import Trajectory
from ..errors import ConfigError
from ..llm.base import Backend
from ..llm.cache import CachedBackend
from ..semantic.critic import Critic, Critique, LessonConfig
from ..semantic.lessons import LessonLibrary, Skipped
from ..semantic.operations import Operation
from ..semantic.prompts import SemanticPrompts
from .group import Group
from .rollouts import RolloutConfig
from .update import StepContext, Update

log = logging.getLogger("tfgrpo.semantic")


class LessonUpdate(Update):
    """The semantic advantage into a lesson library.

    Args:
        library: the lessons (and their history).
        config: the critic's knobs; `LessonConfig.preset("paper")` for the paper's.
        critic: the model that summarises, compares and consolidates (default: the policy itself).
        prompts: the three semantic prompt templates.
    """

    name = "lessons"

    def __init__(
        self,
        library: LessonLibrary,
        config: LessonConfig = LessonConfig(),
        critic: Backend | None = None,
        prompts: SemanticPrompts = SemanticPrompts(),
    ) -> None:
        self.library = library
        self.config = config
        self.critic = critic
        self.prompts = prompts
        library.max_words = config.max_words

    def prompt_condition(self) -> dict[str, Any]:
        return {"lessons": self.library, "placement": self.config.placement}

    def backends(self) -> list[Backend]:
        return [self.critic] if self.critic is not None else []

    def done(self) -> int:
        return int((self.library.progress or {}).get("global_step", 0))

    def stored_run(self) -> dict | None:
        return (self.library.progress or {}).get("run")

    def progress(self) -> dict | None:
        return self.library.progress

    def commit(self, groups: list[Group], ctx: StepContext) -> dict[str, Any]:
        """The semantic advantage: the groups with signal, a summary of each rollout, a comparison of
        each group, one consolidated set of operations, (validated and) applied as one version."""
        critic = self._critic(ctx)
        lessons = self.library.render_list()
        chosen = self.groups_to_learn_from(groups)
        summaries = self.summarise(critic, chosen, lessons, ctx.seed)
        critiques = critic.compare(
            [(g.sample_id, g.sample, rows) for g, rows in zip(chosen, summaries)], lessons, ctx.seed
        )
        operations, consolidation = self.consolidate(critic, critiques, lessons, ctx.seed)
        problems = [f"group {c.sample_id}: {p}" for c in critiques for p in c.problems]
        problems += [f"batch update: {p}" for p in consolidation.get("problems", [])]
        for problem in problems:
            log.warning("step %d: %s", ctx.global_step, problem)
        context: dict[str, Any] = {
            "rewards": {g.sample_id: g.rewards for g in groups},
            "summaries": [_summary_record(g, rows) for g, rows in zip(chosen, summaries)],
            "critiques": [c.to_dict() for c in critiques],
            "consolidation": consolidation,
            "problems": problems,
        }
        validation = self.validate(operations, ctx, [g.sample for g in groups])
        if validation is not None:
            context["validation"] = validation
        return self.apply(operations, ctx, context)

    # -------------------------------------------------------------- the stages

    def groups_to_learn_from(self, groups: list[Group]) -> list[Group]:
        """Groups with signal; all of them without ground truth, or with one rollout per group (G=1,
        the paper's ablation without comparison), where signal cannot be told."""
        if not self.config.use_ground_truth or all(len(g.scores) == 1 for g in groups):
            return list(groups)
        return [g for g in groups if g.has_signal]

    def summarise(self, critic: Critic, groups: list[Group], lessons: str, seed: int) -> list[list[tuple[Any, str]]]:
        """Per group, (score, summary) for every rollout (a trajectory summarised as one: its tool calls,
        what failed, where the reasoning went wrong)."""
        items = []
        for g in groups:
            runs: list[Trajectory | None] = [*g.trajectories] if g.trajectories else [None] * len(g.responses)
            items += [(g.sample, text, score, run) for text, score, run in zip(g.responses, g.scores, runs)]
        texts = iter(critic.summarise(items, lessons, seed))
        return [[(score, next(texts)) for score in g.scores] for g in groups]

    def consolidate(
        self, critic: Critic, critiques: list[Critique], lessons: str, seed: int
    ) -> tuple[list[Operation], dict[str, Any]]:
        proposals = [c.operations for c in critiques]
        if not any(proposals):
            return [], {}
        return critic.consolidate(proposals, lessons, seed)

    def validate(self, operations: list[Operation], ctx: StepContext, batch: list[dict]) -> dict[str, Any] | None:
        """With `validate_margin`: the mean reward of the current lessons and of the candidate on a
        validation minibatch, with the same seeds. None when not validating or nothing would change."""
        config = self.config
        if config.validate_margin is None:
            return None
        candidate = self.library.preview(operations)
        if candidate == self.library.lessons:
            return None
        rollouts = ctx.rollouts
        if rollouts is None:
            raise ConfigError("validating lessons (validate_margin) rolls out the policy: give the step a reward")
        pool = list(rollouts.validation or batch)
        chosen = random.Random(ctx.seed).sample(pool, min(config.validation_size, len(pool)))
        rollout = replace(rollouts.config, temperature=config.eval_temperature)
        means = []
        with self.library.detached(candidate) as after:
            for name, library in (("validation current", self.library), ("validation candidate", after)):
                _, scores = rollouts.run(
                    chosen,
                    ctx.seed + 500_009,
                    lessons=library,
                    placement=config.placement,
                    config=rollout,
                    condition=name,
                )
                values = [s.value for group in scores for s in group]
                means.append(sum(values) / max(1, len(values)))
        current, proposed = means
        accepted = proposed >= current - config.validate_margin
        log.log(
            logging.INFO if accepted else logging.WARNING,
            "validated update: reward %.3f with the current lessons, %.3f with the candidate (margin %g): %s",
            current,
            proposed,
            config.validate_margin,
            "accepted" if accepted else "rejected",
        )
        return {
            "current": current,
            "candidate": proposed,
            "margin": config.validate_margin,
            "samples": [str(s.get("id", i)) for i, s in enumerate(chosen)],
            "accepted": accepted,
        }

    def apply(self, operations: list[Operation], ctx: StepContext, context: dict[str, Any]) -> dict[str, Any]:
        """Commit the operations as one version with everything that led to them (`context`), unless
        validation rejected them; the step's figures."""
        validation = context.get("validation")
        rejected = validation is not None and not validation["accepted"]
        result = self.library.apply(
            operations, step=ctx.global_step, context=context, progress=ctx.position, kind="step", rejected=rejected
        )
        return {
            "proposed": sum(len(c["operations"]) for c in context["critiques"]),
            "applied": sum(op.kind != "none" for op in result.applied),
            "skipped": len(result.skipped),
            "lessons": len(self.library),
            "lesson_version": self.library.version,
            "problems": context["problems"] + [_skip_line(s) for s in result.skipped],
            "validation_current": validation["current"] if validation else None,
            "validation_candidate": validation["candidate"] if validation else None,
            "accepted": validation["accepted"] if validation else None,
            "rejected_version": result.version if rejected else None,
        }

    def _critic(self, ctx: StepContext) -> Critic:
        """The critic: the given model behind the run's cache, or the policy (already behind it)."""
        if self.critic is not None:
            backend = CachedBackend(self.critic, ctx.cache, namespace="critic") if ctx.cache else self.critic
        elif ctx.rollouts is not None:
            backend = ctx.rollouts.policy
        else:
            raise ConfigError("the lessons update needs a critic model when the groups come without a policy")
        concurrency = ctx.rollouts.config.concurrency if ctx.rollouts is not None else RolloutConfig().concurrency
        return Critic(backend, self.config, self.prompts, concurrency=concurrency)


def _summary_record(group: Group, rows: list[tuple[Any, str]]) -> dict[str, Any]:
    return {
        "sample_id": group.sample_id,
        "rollouts": [
            {"response": text, "reward": score.value, "reason": score.reason, "summary": summary}
            for text, (score, summary) in zip(group.responses, rows)
        ],
    }


def _skip_line(skipped: Skipped) -> str:
    return f"{json.dumps(skipped.operation.to_dict(), ensure_ascii=False)[:200]}: {skipped.reason}"
