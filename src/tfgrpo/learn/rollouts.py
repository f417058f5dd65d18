"""One batch of rollouts, shared by training, evaluation and the lessons' validation: build each prompt
with examples from the library and the lessons, generate a group per prompt, score every rollout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..core.knobs import check_knobs, knob
from ..core.library import TrainingFreeGRPO
from ..llm.base import Backend, Generation, GenerationParams
from ..prompting import EXAMPLE_FORMATS, PromptTemplate, build_prompt, select_examples, with_lessons
from ..rewards.base import Reward, Score

SELECT_MODES = ("sample", "retrieve")
RETRIEVAL_MODES = ("lexical", "semantic", "hybrid")


@dataclass(frozen=True)
class PromptingConfig:
    """How a library's examples go into a prompt; training, evaluation and `tfgrpo serve` share it
    (serving overrides two defaults)."""

    shots: int = knob(3, "few-shot examples from the library in each prompt", minimum=0)
    select: str = knob(
        "sample",
        "how examples are chosen: by advantage (sample) or by relevance (retrieve); train and eval default to "
        "sample, tfgrpo serve to retrieve",
        choices=SELECT_MODES,
    )
    retrieval_mode: str = knob(
        "semantic",
        "with select=retrieve: lexical (BM25), semantic (embeddings) or hybrid; train and eval default to "
        "semantic, tfgrpo serve to lexical",
        choices=RETRIEVAL_MODES,
    )
    advantage_weight: float = knob(
        0.0,
        "with select=retrieve: rank the candidates by (1 - w) * relevance + w * advantage (0: relevance only)",
        minimum=0.0,
        maximum=1.0,
    )
    min_relevance: float = knob(
        0.0,
        "with select=retrieve: leave out experiences less relevant than this (0..1: lexical, the share of the "
        "prompt's words, weighed by rarity, that the experience's prompt holds; semantic and hybrid, cosine "
        "similarity), so an unrelated request gets no examples",
        minimum=0.0,
        maximum=1.0,
    )
    example_format: str = knob(
        "text",
        "how examples enter a chat prompt: text (the template's Q:/A: pairs inside the user message) or turns "
        "(each example a user message and the assistant's answer); plain-text prompts always use text",
        choices=EXAMPLE_FORMATS,
    )
    contrast: bool = knob(
        False,
        "show each example's recorded failure (its group's worst rollout) beside it: a 'Wrong answer:' line in "
        "text, the wrong answer and a correction as turns",
    )
    token_budget: int = knob(512, "most tokens the examples may take in one prompt", minimum=0)
    template: PromptTemplate = knob(
        default_factory=PromptTemplate, help="how examples and the query are written", cli=False
    )

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class RolloutConfig(PromptingConfig):
    """How the policy is prompted and sampled; training and evaluation share it."""

    temperature: float = knob(0.7, "sampling temperature of the policy", minimum=0.0, maximum=2.0)
    top_p: float = knob(1.0, "nucleus sampling of the policy", minimum=0.0, maximum=1.0)
    max_tokens: int = knob(128, "longest rollout, in tokens", minimum=1)
    stop: tuple[str, ...] = knob((), "stop strings")
    chat: bool | None = knob(None, "send chat messages (true), plain text (false), or the backend's default")
    stop_after_content: bool = knob(
        False,
        "a stop string made only of whitespace (e.g. a newline) cuts only after the answer's first non-space "
        "character, so an answer that starts with a newline is not cut to nothing",
    )
    concurrency: int = knob(
        16, "prompts sent to a backend in one call (the backend bounds requests in flight)", minimum=1
    )

    def __post_init__(self) -> None:
        check_knobs(self)
        object.__setattr__(self, "stop", tuple(self.stop))


def rollout_batch(
    backend: Backend,
    batch: Sequence[dict],
    reward: Reward,
    n: int,
    config: RolloutConfig,
    seed: int,
    *,
    examples: TrainingFreeGRPO | None = None,
    lessons: str = "",
    placement: str = "system",
) -> tuple[list[list[Generation]], list[list[Score]]]:
    """n generations per sample and their scores, `config.concurrency` samples per backend call.
    `examples` gives the few-shot examples, `lessons` (a rendered lesson block) goes into the prompt
    by `with_lessons`. `seed` fixes both the examples drawn and the sampling, so two conditions given
    the same seed meet the same randomness."""
    template = with_lessons(config.template, lessons, placement)
    groups: list[list[Generation]] = []
    scores: list[list[Score]] = []
    for start in range(0, len(batch), config.concurrency):
        chunk = batch[start : start + config.concurrency]
        chunk_seed = seed + start
        if examples is not None:
            examples.seed(chunk_seed)
        prompts = [
            build_prompt(
                sample["prompt"],
                select_examples(
                    examples,
                    sample["prompt"],
                    config.shots,
                    select=config.select,
                    retrieval_mode=config.retrieval_mode,
                    advantage_weight=config.advantage_weight,
                    min_relevance=config.min_relevance,
                ),
                template,
                config.token_budget,
                chat=config.chat is not False,
                example_format=config.example_format,
                contrast=config.contrast,
            )
            for sample in chunk
        ]
        params = GenerationParams(
            n=n,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
            stop=[s for s in config.stop if not (config.stop_after_content and s.isspace())] or None,
            seed=chunk_seed,
        )
        # (A `Generation`'s text is already clean: a lone surrogate became U+FFFD where it was made.)
        chunk_groups = [
            [cut_after_content(g, config) for g in group]
            for group in backend.generate(prompts, params, chat=config.chat)
        ]
        flat = reward.score_batch([(s["prompt"], g.text, s) for s, group in zip(chunk, chunk_groups) for g in group])
        groups += chunk_groups
        scores += [flat[i * n : (i + 1) * n] for i in range(len(chunk))]
    return groups, scores


@dataclass(frozen=True)
class Rollouts:
    """How a step's rollouts are made: the policy (behind the run's cache), the reward, the prompt config,
    G and the examples library in the prompts. A strategy that scores a candidate before committing it
    (validated lessons) rolls out the same way."""

    policy: Backend
    reward: Reward
    config: RolloutConfig
    group_size: int
    examples: TrainingFreeGRPO | None = None
    validation: Sequence[dict] | None = field(default=None)
    """The samples a validation draws from (None: the step's own batch)."""

    def run(
        self,
        batch: Sequence[dict],
        seed: int,
        *,
        lessons: str = "",
        placement: str = "system",
        config: RolloutConfig | None = None,
    ) -> tuple[list[list[Generation]], list[list[Score]]]:
        return rollout_batch(
            self.policy,
            batch,
            self.reward,
            self.group_size,
            config or self.config,
            seed,
            examples=self.examples,
            lessons=lessons,
            placement=placement,
        )


def cut_after_content(generation: Generation, config: RolloutConfig) -> Generation:
    """The rule of `RolloutConfig.stop_after_content`, in one place: leading whitespace is dropped, then
    the first stop string cuts (whitespace-only stops are not sent to the backend under this rule, so
    the model is not stopped before its answer begins). Without the rule, the generation as it came."""
    if not config.stop_after_content:
        return generation
    text = generation.text.lstrip()
    cut = min((i for i in (text.find(s) for s in config.stop) if i >= 0), default=-1)
    if cut < 0:
        return replace(generation, text=text)
    return replace(generation, text=text[:cut], finish_reason="stop")
