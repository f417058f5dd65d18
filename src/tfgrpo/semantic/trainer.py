"""Paper mode (Training-Free GRPO, arXiv 2510.08191): the library holds natural-language lessons, and the
"advantage" of a group is semantic: the LLM reads the group's successes and failures and edits the
lessons.

One step, for one batch of samples:

1. rollouts: G completions per sample, with the current lessons in the prompt;
2. rewards: score every rollout; only groups with both better and worse rollouts (std > 0) go on
   (all groups when ground truth is withheld, or with G=1, the paper's ablation without comparison);
3. summaries: the critic LLM summarises each rollout of those groups (steps, lessons used, where it went
   wrong), given its reward and, with ground truth, the reference answer and the reward's reason;
4. group advantage: per sample, the critic compares the group's summaries and proposes at most N
   operations on the library;
5. batch update: the critic consolidates all proposals into one set of operations, which the library
   validates (repairing or skipping bad ones, with reasons) and commits as one version, together with
   the training position, the summaries and the critiques.

Every LLM call goes through `CachedBackend` when a cache is given, so a killed run resumes at the step
it was in without paying again for what that step had already received.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..llm.base import Backend, Generation, GenerationParams
from ..llm.cache import CachedBackend, LLMCache
from ..loop.rollouts import RolloutConfig, rollout_batch
from ..loop.steps import StepRecord, run_steps
from ..prompting import with_lessons
from ..rewards.base import Reward, Score
from .lessons import LessonLibrary, Skipped
from .operations import Operation, parse_operations
from .prompts import SemanticPrompts, batch_prompt, clip, group_prompt, summary_prompt

log = logging.getLogger("tfgrpo.semantic")


@dataclass(frozen=True)
class LessonConfig(RolloutConfig):
    """Every knob of paper mode. `LessonConfig.preset("paper")` gives the paper's settings.

    The policy's prompt is the `RolloutConfig`'s (template, stop strings, few-shot examples when the
    trainer is given an examples library, chat or plain text) with the lessons put in by
    `with_lessons`, exactly as `evaluate` does, so training and evaluation prompt alike."""

    epochs: int = 3
    """Passes over the training samples."""
    batch_size: int = 8
    """Samples per step (the library gets one consolidated update per step)."""
    group_size: int = 5
    """Rollouts per sample (G). G=1 is the paper's ablation without group comparison: every rollout goes
    to the critic, which learns from it and its reward alone."""
    temperature: float = 0.7
    """Sampling temperature of the rollouts during training."""
    eval_temperature: float = 0.3
    """Sampling temperature when evaluating with the lessons (validated updates)."""
    critic_temperature: float = 0.0
    """Temperature of the summarise / compare / consolidate calls."""
    max_tokens: int = 1024
    """Longest rollout."""
    critic_max_tokens: int = 1024
    """Longest answer of a summarise / compare / consolidate call."""
    concurrency: int = 16
    """Prompts sent to a backend in one `generate` call (the backend bounds requests in flight); a killed
    run loses at most one such call's answers that the cache had not yet stored."""
    max_operations_per_query: int = 3
    """Most operations the group comparison of one sample may propose."""
    max_words: int = 32
    """Longest lesson, in words (longer ones are shortened with a logged reason)."""
    task_objective: str = ""
    """What the task is, told to the critic (e.g. "solve competition math problems; answer in \\boxed{}")."""
    learning_objective: str = ""
    """What the lessons should achieve, told to the critic (e.g. "fewer arithmetic slips")."""
    placement: str = "system"
    """Where the lessons go in the policy's prompt: "system" (after the template's instruction) or
    "user" (before the query)."""
    use_ground_truth: bool = True
    """Show the critic the rewards, reward reasons and reference answers, and keep only groups with
    signal. False: the critic sees neither, and every group goes on (the paper's "w/o ground truth")."""
    reference_field: str = "answer"
    """The sample field holding the reference answer (left out when absent)."""
    max_chars: int = 4000
    """Longest question or response put into a critic prompt (the middle is cut)."""
    seed: int = 0
    validate_margin: float | None = None
    """Validated updates: when set, a step's candidate lessons are kept only if their mean reward on a
    validation minibatch is >= the current lessons' mean minus this margin (same seeds); a rejected
    candidate is recorded as a version of kind "rejected" and the lessons stay as they were."""
    validation_size: int = 8
    """Samples in the validation minibatch (drawn from `train(validation=...)`, else from the batch)."""

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "batch_size",
            "group_size",
            "max_tokens",
            "critic_max_tokens",
            "concurrency",
            "max_words",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"LessonConfig.{name} must be a whole number >= 1, got {value!r}")
        if self.shots < 0 or self.token_budget < 0:
            raise ConfigError("LessonConfig.shots and token_budget must be >= 0")
        if not isinstance(self.max_operations_per_query, int) or self.max_operations_per_query < 1:
            raise ConfigError("LessonConfig.max_operations_per_query must be a whole number >= 1")
        for name in ("temperature", "eval_temperature", "critic_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
                raise ConfigError(f"LessonConfig.{name} must be a number in [0, 2], got {value!r}")
        if self.placement not in ("system", "user"):
            raise ConfigError(f"LessonConfig.placement must be 'system' or 'user', got {self.placement!r}")
        if self.max_chars < 200:
            raise ConfigError("LessonConfig.max_chars must be >= 200")
        margin = self.validate_margin
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0):
            raise ConfigError(f"LessonConfig.validate_margin must be a number >= 0 or None, got {margin!r}")
        size = self.validation_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"LessonConfig.validation_size must be a whole number >= 1, got {size!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LessonConfig:
        """A named preset with some fields changed: "paper" (3 epochs, G=5, one batch of the whole
        100-sample training set, temperature 0.7 for training and 0.3 for evaluation)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"LessonConfig has no field {', '.join(unknown)}")
        return replace(PRESETS[name], **overrides)


PRESETS: dict[str, LessonConfig] = {
    "paper": LessonConfig(epochs=3, batch_size=100, group_size=5, temperature=0.7, eval_temperature=0.3),
}


@dataclass
class LessonStepMetrics(StepRecord):
    proposed: int
    applied: int
    skipped: int
    library_size: int
    version: int
    llm_requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    cache_hits: int
    seconds: float
    problems: list[str] = field(default_factory=list)
    """Every repair or skip of this step, with its reason (also logged)."""
    validation_current: float | None = None
    """Validated updates: mean validation reward with the lessons before the step (None: not validated)."""
    validation_candidate: float | None = None
    """... and with the step's candidate lessons."""
    accepted: bool | None = None
    """Whether the candidate was kept (None: not validated)."""
    rejected_version: int | None = None
    """The version recording a rejected candidate."""


def rollout_with_lessons(
    backend: Backend,
    batch: Sequence[dict],
    reward: Reward,
    library: LessonLibrary | None,
    n: int,
    config: LessonConfig,
    *,
    seed: int,
    examples: TrainingFreeGRPO | None = None,
) -> tuple[list[list[Generation]], list[list[Score]]]:
    """n rollouts per sample and their scores, with the library's lessons (none when `library` is None)
    and `examples`' few-shot examples in the prompt; `config.concurrency` samples per backend call."""
    block = library.render() if library is not None else ""
    config = replace(config, template=with_lessons(config.template, block, config.placement))
    groups: list[list[Generation]] = []
    scores: list[list[Score]] = []
    for start in range(0, len(batch), config.concurrency):
        chunk = batch[start : start + config.concurrency]
        chunk_groups, chunk_scores = rollout_batch(backend, chunk, reward, examples, n, config, seed=seed + start)
        groups += chunk_groups
        scores += chunk_scores
    return groups, scores


class LessonTrainer:
    """Training-Free GRPO with lessons.

    Args:
        policy: the model being improved (its weights never change).
        reward: scores a rollout given the sample.
        library: the lessons (and their history).
        config: the knobs; `LessonConfig.preset("paper")` for the paper's settings.
        critic: the model that summarises, compares and consolidates (default: the policy itself).
        cache: an `LLMCache`; every call of both models goes through it, so a resumed run pays once.
        prompts: the three semantic prompt templates.
        examples: an experience library whose few-shot examples (`config.shots`) go into the policy's
            prompt beside the lessons (the "both" strategy); None: lessons only.
    """

    def __init__(
        self,
        policy: Backend,
        reward: Reward,
        library: LessonLibrary,
        config: LessonConfig = LessonConfig(),
        *,
        critic: Backend | None = None,
        cache: LLMCache | None = None,
        prompts: SemanticPrompts = SemanticPrompts(),
        examples: TrainingFreeGRPO | None = None,
    ) -> None:
        if library.max_words != config.max_words:
            library.max_words = config.max_words
        self.config = config
        self.reward = reward
        self.library = library
        self.prompts = prompts
        self.examples = examples
        self.validation: list[dict] | None = None
        """Samples for validated updates (set by `train`); None: drawn from each step's batch."""
        self._raw_backends = [policy] if critic is None or critic is policy else [policy, critic]
        if cache is not None:
            policy_c = CachedBackend(policy, cache, namespace="policy")
            critic_c = policy_c if critic is None or critic is policy else CachedBackend(critic, cache, "critic")
            self.policy, self.critic = policy_c, critic_c
        else:
            self.policy, self.critic = policy, critic or policy

    # ------------------------------------------------------------------ loop

    def train(
        self,
        samples: Sequence[dict],
        on_step: Callable[[LessonStepMetrics, int], None] | None = None,
        metrics_path: str | None = None,
        validation: Sequence[dict] | None = None,
    ) -> list[LessonStepMetrics]:
        """Run (or resume) training; returns the metrics of the steps run now. `validation`: the samples
        validated updates draw their minibatch from (default: each step's batch)."""
        config = self.config
        self.validation = list(validation) if validation else None
        return run_steps(
            samples,
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed,
            done=(self.library.progress or {}).get("global_step", 0),
            step=lambda batch, epoch, step, global_step: self.step(
                batch, epoch=epoch, step=step, global_step=global_step
            ),
            report=on_step or _printer,
            metrics_path=metrics_path,
        )

    def step(self, batch: Sequence[dict], *, epoch: int = 0, step: int = 0, global_step: int = 1) -> LessonStepMetrics:
        """One step on one batch: rollouts, rewards, summaries, group critiques, batch update."""
        config = self.config
        started = time.perf_counter()
        usage_before = [b.usage.snapshot() for b in self._raw_backends]
        hits_before = self._cache_hits()
        lessons_text = self.library.render_list()
        seed = config.seed * 1_000_003 + global_step

        # 1-2. A group of rollouts per sample, with the current lessons; their rewards.
        groups, scores = rollout_with_lessons(
            self.policy, batch, self.reward, self.library, config.group_size, config, seed=seed, examples=self.examples
        )
        values = [[s.value for s in group] for group in scores]
        with_signal = [i for i, v in enumerate(values) if len(v) > 1 and statistics.pstdev(v) > 0]
        # Without ground truth, or with one rollout per group (G=1), signal cannot be told: all go on.
        learn_from_all = not config.use_ground_truth or config.group_size == 1
        chosen = list(range(len(batch))) if learn_from_all else with_signal

        # 3. Summarise every rollout of the groups that go on.
        items = [(i, j) for i in chosen for j in range(config.group_size)]
        summary_prompts = [self._summary_prompt(batch[i], groups[i][j], scores[i][j], lessons_text) for i, j in items]
        summary_texts = self._critic(summary_prompts, seed)
        summaries: dict[int, list[tuple[Score, str]]] = {}
        for (i, j), text in zip(items, summary_texts):
            summaries.setdefault(i, []).append((scores[i][j], text.strip() or "(no summary)"))

        # 4. Group advantage: compare each group, propose at most N operations.
        group_prompts = [self._group_prompt(batch[i], summaries[i], lessons_text) for i in chosen]
        critiques = []
        proposals: list[list[Operation]] = []
        problems: list[str] = []
        for i, answer in zip(chosen, self._critic(group_prompts, seed)):
            parsed = parse_operations(answer, limit=config.max_operations_per_query)
            ops = [op for op in parsed.operations if op.kind != "none"]
            proposals.append(ops)
            sample_id = str(batch[i].get("id", i))
            problems += [f"group {sample_id}: {p}" for p in parsed.problems]
            critiques.append(
                {
                    "sample_id": sample_id,
                    "answer": answer,
                    "operations": [op.to_dict() for op in ops],
                    "problems": parsed.problems,
                }
            )

        # 5. Batch update: consolidate every proposal into one set of operations, and apply it.
        consolidation: dict[str, Any] = {}
        final: list[Operation] = []
        if any(proposals):
            prompt = batch_prompt(
                self.prompts,
                proposals=[[op.to_dict() for op in ops] for ops in proposals],
                lessons=lessons_text,
                max_words=config.max_words,
                task_objective=config.task_objective,
                learning_objective=config.learning_objective,
            )
            answer = self._critic([prompt], seed)[0]
            parsed = parse_operations(answer)
            consolidation = {"answer": answer, "problems": parsed.problems}
            problems += [f"batch update: {p}" for p in parsed.problems]
            if parsed.found_json:
                final = parsed.operations
            else:
                final = [op for ops in proposals for op in ops]
                note = "batch update gave no usable JSON; applying the groups' proposals directly"
                problems.append(note)
                consolidation["fallback"] = note
        for problem in problems:
            log.warning("step %d: %s", global_step, problem)

        context = {
            "rewards": {str(batch[i].get("id", i)): values[i] for i in range(len(batch))},
            "summaries": [
                {
                    "sample_id": str(batch[i].get("id", i)),
                    "rollouts": [
                        {"response": g.text, "reward": s.value, "reason": s.reason, "summary": t}
                        for g, (s, t) in zip(groups[i], summaries[i])
                    ],
                }
                for i in chosen
            ],
            "critiques": critiques,
            "consolidation": consolidation,
            "problems": problems,
        }
        progress = {"epoch": epoch, "step": step, "global_step": global_step}
        validated = self._validate(batch, final, seed) if config.validate_margin is not None else None
        if validated is not None:
            context["validation"] = validated
        rejected = validated is not None and not validated["accepted"]
        result = self.library.apply(
            final, step=global_step, context=context, progress=progress, kind="step", rejected=rejected
        )

        spent = [b.usage.snapshot() - before for b, before in zip(self._raw_backends, usage_before)]
        return LessonStepMetrics(
            epoch=epoch,
            step=step,
            global_step=global_step,
            groups=len(batch),
            groups_with_signal=len(with_signal),
            reward_mean=sum(map(sum, values)) / max(1, sum(map(len, values))),
            proposed=sum(map(len, proposals)),
            applied=sum(op.kind != "none" for op in result.applied),
            skipped=len(result.skipped),
            library_size=len(self.library),
            version=self.library.version,
            llm_requests=sum(u.requests for u in spent),
            prompt_tokens=sum(u.prompt_tokens for u in spent),
            completion_tokens=sum(u.completion_tokens for u in spent),
            cost=sum(u.cost for u in spent),
            cache_hits=self._cache_hits() - hits_before,
            seconds=time.perf_counter() - started,
            problems=problems + [_skip_line(s) for s in result.skipped],
            validation_current=validated["current"] if validated else None,
            validation_candidate=validated["candidate"] if validated else None,
            accepted=validated["accepted"] if validated else None,
            rejected_version=result.version if rejected else None,
        )

    def _validate(self, batch: Sequence[dict], operations: list[Operation], seed: int) -> dict[str, Any] | None:
        """Score the current lessons and the candidate `operations` would give on a validation
        minibatch, with the same seeds; None when the candidate changes nothing."""
        config = self.config
        candidate = self.library.preview(operations)
        if candidate == self.library.lessons:
            return None
        pool = self.validation or list(batch)
        rng = random.Random(seed)
        chosen = rng.sample(pool, min(config.validation_size, len(pool)))
        means = []
        with self.library.detached(candidate) as after:
            for library in (self.library, after):
                _, scores = rollout_with_lessons(
                    self.policy,
                    chosen,
                    self.reward,
                    library,
                    config.group_size,
                    replace(config, temperature=config.eval_temperature),
                    seed=seed + 500_009,
                    examples=self.examples,
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

    # ------------------------------------------------------------- helpers

    def _critic(self, prompts: list[str], seed: int) -> list[str]:
        if not prompts:
            return []
        params = GenerationParams(
            n=1, temperature=self.config.critic_temperature, max_tokens=self.config.critic_max_tokens, seed=seed
        )
        chunk = self.config.concurrency
        texts = []
        for start in range(0, len(prompts), chunk):
            groups = self.critic.generate(prompts[start : start + chunk], params)
            texts += [group[0].text if group else "" for group in groups]
        return texts

    def _reference(self, sample: dict) -> str | None:
        if not self.config.use_ground_truth or self.config.reference_field not in sample:
            return None
        value = sample[self.config.reference_field]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    def _summary_prompt(self, sample: dict, generation: Generation, score: Score, lessons: str) -> str:
        gt = self.config.use_ground_truth
        return summary_prompt(
            self.prompts,
            question=sample["prompt"],
            response=generation.text,
            reward=score.value if gt else None,
            reward_reason=score.reason if gt else "",
            lessons=lessons,
            reference=self._reference(sample),
            task_objective=self.config.task_objective,
            max_chars=self.config.max_chars,
        )

    def _group_prompt(self, sample: dict, summaries: list[tuple[Score, str]], lessons: str) -> str:
        gt = self.config.use_ground_truth
        return group_prompt(
            self.prompts,
            question=sample["prompt"],
            summaries=[(s.value if gt else None, clip(t, self.config.max_chars)) for s, t in summaries],
            lessons=lessons,
            max_operations=self.config.max_operations_per_query,
            max_words=self.config.max_words,
            reference=self._reference(sample),
            task_objective=self.config.task_objective,
            learning_objective=self.config.learning_objective,
            max_chars=self.config.max_chars,
        )

    def _cache_hits(self) -> int:
        backends = {id(b): b for b in (self.policy, self.critic)}.values()
        return sum(b.hits for b in backends if isinstance(b, CachedBackend))


def _skip_line(skipped: Skipped) -> str:
    return f"{json.dumps(skipped.operation.to_dict(), ensure_ascii=False)[:200]}: {skipped.reason}"


def _printer(m: LessonStepMetrics, total: int) -> None:
    print(
        f"step {m.global_step}/{total} reward {m.reward_mean:.3f} | signal {m.groups_with_signal}/{m.groups} | "
        f"ops {m.applied} applied, {m.skipped} skipped | lessons {m.library_size} (v{m.version}) | {m.seconds:.1f}s"
        + (
            ""
            if m.accepted is None
            else f" | validation {m.validation_current:.3f} -> {m.validation_candidate:.3f} "
            f"{'accepted' if m.accepted else 'rejected'}"
        ),
        file=sys.stderr,
        flush=True,
    )
