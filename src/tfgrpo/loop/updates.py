"""Update strategies: how one step's scored groups change a library. The training step, and the online
updates of `tfgrpo serve`, call `commit`; adding a strategy means writing one more class here.

- `ExampleUpdate`: the spec's method. Advantages within each group; rollouts above the threshold are
  stored as few-shot examples (`TrainingFreeGRPO.add_rollout_groups`, one transaction per step), each
  with the group's worst rollout beside it in its metadata (`with_contrast`).
- `LessonUpdate`: the paper's semantic advantage. The critic summarises the rollouts of the groups with
  signal, compares each group, consolidates the proposals; the result is (optionally) validated and
  applied to the lesson library as one version.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from typing import Any

from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..llm.base import Backend
from ..llm.cache import CachedBackend
from ..semantic.critic import Critic, Critique, LessonConfig
from ..semantic.lessons import LessonLibrary, Skipped
from ..semantic.operations import Operation
from ..semantic.prompts import SemanticPrompts
from .rollouts import rollout_batch
from .step import Group, StepContext

log = logging.getLogger("tfgrpo.semantic")


class Update:
    """The interface of an update strategy."""

    name = ""

    def check(self, group_size: int) -> None:
        """Refuse a run this strategy cannot learn from (ConfigError)."""

    def prompt_condition(self) -> dict[str, Any]:
        """What this strategy's library puts into the policy's prompt (`rollout_batch` keywords)."""
        return {}

    def backends(self) -> list[Backend]:
        """Models this strategy calls itself (their usage counts in the step's)."""
        return []

    def done(self) -> int:
        """The last global step this strategy committed (0: none)."""
        return 0

    def stored_run(self) -> dict | None:
        """The run identity saved with the last commit (see `train`'s resume check)."""
        return None

    def commit(self, groups: list[Group], ctx: StepContext) -> dict[str, Any]:
        """Change the library from the step's groups; return the figures for the step's metrics."""
        raise NotImplementedError


class ExampleUpdate(Update):
    """Successful rollouts, by advantage, into an experience library (its few-shot examples go into the
    prompts of the next rollouts)."""

    name = "examples"

    def __init__(self, library: TrainingFreeGRPO, task_name: str = "task") -> None:
        self.library = library
        self.task_name = task_name

    def check(self, group_size: int) -> None:
        if group_size < 2:
            raise ConfigError("the examples strategy needs group_size >= 2: advantages compare rollouts within a group")

    def prompt_condition(self) -> dict[str, Any]:
        return {"examples": self.library}

    def done(self) -> int:
        return int((self.library.progress or {}).get("global_step", 0))

    def stored_run(self) -> dict | None:
        return (self.library.progress or {}).get("run")

    def commit(self, groups: list[Group], ctx: StepContext) -> dict[str, Any]:
        grpo = self.library
        stored, pruned = grpo.total_stored, grpo.total_pruned
        grpo.add_rollout_groups(
            [
                (
                    [(g.sample["prompt"], text) for text in g.responses],
                    g.rewards,
                    with_contrast(g.responses, g.rewards, {"task": self.task_name, "sample_id": g.sample_id}),
                )
                for g in groups
            ],
            progress=ctx.progress,
        )
        stats = grpo.stats()
        return {
            "stored": grpo.total_stored - stored,
            "pruned": grpo.total_pruned - pruned,
            "library_size": stats.current_library_size,
            "avg_advantage": stats.avg_advantage,
            "max_advantage": stats.max_advantage,
            "min_advantage": stats.min_advantage,
        }


CONTRAST_CHARS = 2000
"""Most characters of a failed rollout kept as a success's contrast."""


def with_contrast(responses: list[str], rewards: list[float], metadata: dict[str, str]) -> list[dict[str, str] | None]:
    """Per rollout, `metadata` and its contrast: the group's worst rollout (the first, on a tie) when its
    reward is lower, as `contrast_response` (model output kept as plain text, cut to CONTRAST_CHARS) and
    `contrast_reward`. Recorded whether or not prompts show it (`RolloutConfig.contrast`)."""
    if not rewards:
        return []
    worst = min(range(len(rewards)), key=rewards.__getitem__)
    contrast = {
        **metadata,
        "contrast_response": responses[worst][:CONTRAST_CHARS],
        "contrast_reward": repr(float(rewards[worst])),
    }
    return [contrast if reward > rewards[worst] else metadata for reward in rewards]


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
        return {"lessons": self.library.render(), "placement": self.config.placement}

    def backends(self) -> list[Backend]:
        return [self.critic] if self.critic is not None else []

    def done(self) -> int:
        return int((self.library.progress or {}).get("global_step", 0))

    def stored_run(self) -> dict | None:
        return (self.library.progress or {}).get("run")

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
        """Per group, (score, summary) for every rollout."""
        items = [(g.sample, text, score) for g in groups for text, score in zip(g.responses, g.scores)]
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
        pool = ctx.validation or batch
        chosen = random.Random(ctx.seed).sample(pool, min(config.validation_size, len(pool)))
        rollout = replace(ctx.config, temperature=config.eval_temperature)
        means = []
        with self.library.detached(candidate) as after:
            for library in (self.library, after):
                _, scores = rollout_batch(
                    ctx.policy,
                    chosen,
                    ctx.reward,
                    ctx.config.group_size,
                    rollout,
                    ctx.seed + 500_009,
                    examples=ctx.examples,
                    lessons=library.render(),
                    placement=config.placement,
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
            operations, step=ctx.global_step, context=context, progress=ctx.progress, kind="step", rejected=rejected
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
        backend = ctx.policy
        if self.critic is not None:
            backend = CachedBackend(self.critic, ctx.cache, namespace="critic") if ctx.cache else self.critic
        return Critic(backend, self.config, self.prompts, concurrency=ctx.config.concurrency)


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
