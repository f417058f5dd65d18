"""The critic of paper mode (Training-Free GRPO, arXiv 2510.08191): an LLM that turns a group's
successes and failures into edits of the lesson library (the "semantic advantage").

Three calls, each a method here: `summarise` every rollout (steps, lessons used, where it went wrong,
given its reward and, with ground truth, the reference answer); `compare` each group's summaries and
propose at most N operations; `consolidate` all proposals of a batch into one set of operations. Every
answer is parsed as hostile (`parse_operations`): repairs and skips come back with reasons. The loop's
`LessonUpdate` decides which groups go to the critic and commits what it returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.knobs import check_knobs, knob, replace_known
from ..errors import ConfigError
from ..llm.base import Backend, GenerationParams
from ..rewards.base import Score
from .operations import KINDS, Kind, Operation, operations_schema, parse_operations, response_format
from .prompts import SemanticPrompts, batch_prompt, clip, group_prompt, summary_prompt


@dataclass(frozen=True)
class LessonConfig:
    """Every knob of the lesson strategy and its critic. `LessonConfig.preset("paper")` gives the
    paper's; the rollouts' own knobs (group size, batch size, temperature, ...) are `TrainConfig`'s."""

    critic_temperature: float = knob(0.0, "temperature of the critic's calls", minimum=0.0, maximum=2.0)
    critic_max_tokens: int = knob(1024, "longest critic answer, in tokens", minimum=1)
    eval_temperature: float = knob(
        0.3, "sampling temperature when validating an update (--validate-margin)", minimum=0.0, maximum=2.0
    )
    max_operations_per_query: int = knob(
        3, "most operations one group's comparison may propose", minimum=1, flag="--max-ops-per-query"
    )
    max_words: int = knob(32, "longest lesson the critic may write, in words (longer ones are shortened)", minimum=1)
    task_objective: str = knob("", "what the task is, told to the critic")
    learning_objective: str = knob("", "what the lessons should achieve, told to the critic")
    placement: str = knob("system", "where the lessons go in the policy's prompt", choices=("system", "user"))
    use_ground_truth: bool = knob(
        True,
        "show the critic rewards and reference answers and keep only groups with signal "
        "(false: the paper's 'without ground truth', every group goes on)",
    )
    reference_field: str = knob("answer", "the sample field holding the reference answer")
    max_chars: int = knob(4000, "longest question or response put into a critic prompt", minimum=200)
    validate_margin: float | None = knob(
        None,
        "validated updates: keep a step's lessons only if their validation reward is >= the current lessons' "
        "minus this margin (rejected candidates stay in the history as kind 'rejected')",
        minimum=0.0,
    )
    validation_size: int = knob(8, "samples in the validation minibatch of a validated update", minimum=1)
    structured_output: bool = knob(
        True,
        "ask the critic for operations as schema-constrained JSON (a json_schema response_format over HTTP, "
        "constrained decoding on the local model); false: free text, parsed as it comes",
    )

    def __post_init__(self) -> None:
        check_knobs(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LessonConfig:
        """A named preset with some fields changed ("paper": evaluation at temperature 0.3)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
        return replace_known(PRESETS[name], overrides)


PRESETS: dict[str, LessonConfig] = {"paper": LessonConfig(eval_temperature=0.3)}
GROUP_KINDS: tuple[Kind, ...] = ("add", "update", "delete", "none")
"""The operations a group's comparison may propose (the group prompt lists these; merging is the
batch update's)."""
_LESSON_ID = re.compile(r"^\[(G\d+)\]\. ", re.MULTILINE)


@dataclass
class Critique:
    """One group's comparison: the operations it proposes and what had to be repaired or skipped."""

    sample_id: str
    answer: str
    operations: list[Operation]
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "answer": self.answer,
            "operations": [op.to_dict() for op in self.operations],
            "problems": self.problems,
        }


class Critic:
    """The three semantic-advantage calls on `backend`, `concurrency` prompts per call."""

    def __init__(
        self,
        backend: Backend,
        config: LessonConfig,
        prompts: SemanticPrompts = SemanticPrompts(),
        concurrency: int = 16,
    ) -> None:
        self.backend = backend
        self.config = config
        self.prompts = prompts
        self.concurrency = concurrency

    def summarise(self, items: Sequence[tuple[Any, ...]], lessons: str, seed: int) -> list[str]:
        """One summary per (sample, response, score) or (sample, response, score, trajectory): a rollout
        that was an agent's run with tools is summarised from its `critic_view` (the tools it called, their
        errors, how it ended, its transcript) with the `trajectory` prompt."""
        gt = self.config.use_ground_truth
        prompts = []
        for sample, response, score, *rest in items:
            trajectory = rest[0] if rest else None
            agent_run = trajectory is not None and not trajectory.plain
            if trajectory is not None and agent_run:
                response = trajectory.critic_view()
            prompts.append(
                summary_prompt(
                    self.prompts,
                    question=sample["prompt"],
                    response=response,
                    reward=score.value if gt else None,
                    reward_reason=score.reason if gt else "",
                    lessons=lessons,
                    reference=self.reference(sample),
                    task_objective=self.config.task_objective,
                    max_chars=self.config.max_chars,
                    template=self.prompts.trajectory if agent_run else None,
                )
            )
        return [text.strip() or "(no summary)" for text in self.ask(prompts, seed)]

    def compare(
        self, groups: Sequence[tuple[str, dict, list[tuple[Score, str]]]], lessons: str, seed: int
    ) -> list[Critique]:
        """Per (sample id, sample, [(score, summary), ...]): the proposed operations, at most N each."""
        config = self.config
        prompts = [
            group_prompt(
                self.prompts,
                question=sample["prompt"],
                summaries=[(s.value if config.use_ground_truth else None, clip(t, config.max_chars)) for s, t in rows],
                lessons=lessons,
                max_operations=config.max_operations_per_query,
                max_words=config.max_words,
                reference=self.reference(sample),
                task_objective=config.task_objective,
                learning_objective=config.learning_objective,
                max_chars=config.max_chars,
            )
            for _, sample, rows in groups
        ]
        structured = self.response_format(GROUP_KINDS, lessons, config.max_operations_per_query)
        critiques = []
        for (sample_id, _, _), answer in zip(groups, self.ask(prompts, seed, structured)):
            parsed = parse_operations(answer, limit=config.max_operations_per_query)
            operations = [op for op in parsed.operations if op.kind != "none"]
            critiques.append(Critique(sample_id, answer, operations, parsed.problems))
        return critiques

    def consolidate(self, proposals: list[list[Operation]], lessons: str, seed: int) -> tuple[list[Operation], dict]:
        """One set of operations from every group's proposals, and the record of the call. An answer
        with no usable JSON falls back to the proposals as they are."""
        prompt = batch_prompt(
            self.prompts,
            proposals=[[op.to_dict() for op in ops] for ops in proposals],
            lessons=lessons,
            max_words=self.config.max_words,
            task_objective=self.config.task_objective,
            learning_objective=self.config.learning_objective,
        )
        answer = self.ask([prompt], seed, self.response_format(KINDS, lessons))[0]
        parsed = parse_operations(answer)
        record: dict[str, Any] = {"answer": answer, "problems": list(parsed.problems)}
        if parsed.found_json:
            return parsed.operations, record
        record["fallback"] = "batch update gave no usable JSON; applying the groups' proposals directly"
        record["problems"].append(record["fallback"])
        return [op for ops in proposals for op in ops], record

    def response_format(
        self, kinds: tuple[Kind, ...], lessons: str, max_operations: int | None = None
    ) -> dict[str, Any] | None:
        """The structured output asked of a compare or consolidate call (None: structured_output is off):
        operations of `kinds` on the lessons listed in `lessons` (their `[G3]. ` ids)."""
        if not self.config.structured_output:
            return None
        ids = tuple(dict.fromkeys(_LESSON_ID.findall(lessons)))
        return response_format(operations_schema(kinds, ids, max_operations))

    def ask(self, prompts: list[str], seed: int, structured: dict[str, Any] | None = None) -> list[str]:
        if not prompts:
            return []
        params = GenerationParams(
            n=1,
            temperature=self.config.critic_temperature,
            max_tokens=self.config.critic_max_tokens,
            seed=seed,
            response_format=structured,
        )
        texts = []
        for start in range(0, len(prompts), self.concurrency):
            groups = self.backend.generate(prompts[start : start + self.concurrency], params)
            texts += [group[0].text if group else "" for group in groups]
        return texts

    def reference(self, sample: dict) -> str | None:
        if not self.config.use_ground_truth or self.config.reference_field not in sample:
            return None
        value = sample[self.config.reference_field]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
