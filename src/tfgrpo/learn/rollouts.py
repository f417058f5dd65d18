"""One batch of rollouts, shared by training, evaluation and the lessons' validation: build each prompt
with examples from the library and the lessons, generate a group per prompt, score every rollout."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..agents.base import Agent, AgentContext
from ..agents.trajectory import Trajectory
from ..core.knobs import check_knobs, knob
from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..llm.base import Backend, Generation, GenerationParams
from ..llm.guidance import GuidanceConfig, guided_generate
from ..prompting import EXAMPLE_FORMATS, PromptTemplate, build_prompt, select_examples, with_lessons
from ..rewards.base import Reward, Score
from ..semantic.lessons import LessonLibrary
from .rollout_log import Recorder

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
    lessons_k: int = knob(
        0,
        "with lessons: put only the k lessons most relevant to each prompt into it (lexical retrieval over the "
        "lessons' text) instead of all of them (0: all)",
        minimum=0,
    )
    template: PromptTemplate = knob(
        default_factory=PromptTemplate, help="how examples and the query are written", cli=False
    )

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class RolloutConfig(GuidanceConfig, PromptingConfig):
    """How the policy is prompted and sampled; training and evaluation share it."""

    where: tuple[str, ...] = knob(
        (),
        "with select=retrieve (and --guidance): only experiences whose metadata matches; KEY=VALUE a fixed value, "
        "KEY alone the prompt's own (its sample's metadata[KEY], as a router tagged it; none: no filter), e.g. "
        "--where domain",
    )
    where_fallback: bool = knob(
        False,
        "with --where: a prompt for which the filter finds no experience gets examples retrieved without it "
        "(a new domain borrows from the others until it has its own)",
    )

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
        object.__setattr__(self, "where", tuple(self.where))
        if self.where and self.select != "retrieve" and (self.shots > 0 or self.guidance == "none"):
            raise ConfigError("--where filters retrieved experiences: use it with --select retrieve")
        if self.where_fallback and not self.where:
            raise ConfigError("--where-fallback falls back from a --where filter: give --where too")
        for item in self.where:
            if not item.partition("=")[0].strip():
                raise ConfigError(f"--where takes KEY=VALUE or KEY, got {item!r}")

    def where_for(self, sample: dict) -> dict[str, str] | None:
        """The metadata filter of `where` for one sample (a KEY alone takes the sample's own value)."""
        tags: dict = sample["metadata"] if isinstance(sample.get("metadata"), dict) else {}
        found: dict[str, str] = {}
        for item in self.where:
            key, sep, value = item.partition("=")
            if sep:
                found[key.strip()] = value
            elif tags.get(key.strip()) is not None:
                found[key.strip()] = str(tags[key.strip()])
        return found or None


def rollout_batch(
    backend: Backend,
    batch: Sequence[dict],
    reward: Reward,
    n: int,
    config: RolloutConfig,
    seed: int,
    *,
    examples: TrainingFreeGRPO | None = None,
    lessons: str | LessonLibrary = "",
    placement: str = "system",
    agent: Agent | None = None,
    record: Recorder | None = None,
) -> tuple[list[list[Trajectory]], list[list[Score]]]:
    """n rollouts per sample and their scores, `config.concurrency` samples per backend call.
    `examples` gives the few-shot examples, `lessons` (a rendered lesson block) goes into the prompt
    by `with_lessons` (a `LessonLibrary`: its lessons rendered for each prompt, all of them, or with
    `config.lessons_k` the k most relevant to the prompt). `seed` fixes both the examples drawn and the
    sampling, so two conditions given the same seed meet the same randomness.

    Without `agent` each rollout is one completion (a one-turn `Trajectory`); with one, each is a
    trajectory the agent runs from the same prompt (each with a seed of its own, `config.max_tokens` per
    turn). The reward scores each rollout's final answer (a trajectory that ended without one scores
    the bottom of the reward's range, with the reason); a reward whose `trajectory` attribute is true
    finds the whole trajectory in the sample it is given, as `sample["trajectory"]`.

    `record`: each group also goes to the rollout log's recorder (with the prompt as sent, the model, the
    versions of the library and lessons it drew from); the caller flushes it."""
    if isinstance(lessons, LessonLibrary):
        library, k = lessons, config.lessons_k
        whole = with_lessons(config.template, library.render(), placement)

        def template_for(prompt: str) -> PromptTemplate:
            return with_lessons(config.template, library.render(query=prompt, k=k), placement) if k else whole

    else:
        fixed = with_lessons(config.template, lessons, placement)

        def template_for(prompt: str) -> PromptTemplate:
            return fixed

    groups: list[list[Trajectory]] = []
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
                    where=config.where_for(sample),
                    where_fallback=config.where_fallback,
                ),
                template_for(sample["prompt"]),
                config.token_budget,
                chat=config.chat is not False,
                example_format=config.example_format,
                contrast=config.contrast,
            )
            for sample in chunk
        ]
        started = time.perf_counter()
        if agent is None:
            params = GenerationParams(
                n=n,
                temperature=config.temperature,
                top_p=config.top_p,
                max_tokens=config.max_tokens,
                stop=[s for s in config.stop if not (config.stop_after_content and s.isspace())] or None,
                seed=chunk_seed,
            )
            if config.guidance != "none" and examples is not None:
                successes = [guidance_for(examples, s, config) for s in chunk]
                made = guided_generate(backend, prompts, successes, params, config, chat=config.chat)
            else:
                made = backend.generate(prompts, params, chat=config.chat)
            # (A `Generation`'s text is already clean: a lone surrogate became U+FFFD where it was made.)
            chunk_groups = [[Trajectory.of(cut_after_content(g, config)) for g in group] for group in made]
        else:
            chunk_groups = run_agent(agent, backend, chunk, prompts, n, config, chunk_seed)
        share = (time.perf_counter() - started) / max(1, len(chunk) * n)
        flat = score_rollouts(reward, [(s, t) for s, group in zip(chunk, chunk_groups) for t in group])
        chunk_scores = [flat[i * n : (i + 1) * n] for i in range(len(chunk))]
        if record is not None:
            library_version = examples.version if examples is not None else None
            lessons_version = lessons.version if isinstance(lessons, LessonLibrary) else None
            for sample, prompt, runs, group_scores in zip(chunk, prompts, chunk_groups, chunk_scores):
                record.add(
                    sample,
                    prompt,
                    runs,
                    group_scores,
                    model=backend.model_name,
                    library_version=library_version,
                    lessons_version=lessons_version,
                    seconds=share,
                )
        groups += chunk_groups
        scores += chunk_scores
    return groups, scores


def guidance_for(examples: TrainingFreeGRPO | None, sample: dict, config: RolloutConfig) -> list:
    """The successes that guide a sample's decoding (`--guidance`): retrieved for its prompt as examples are."""
    return select_examples(
        examples,
        sample["prompt"],
        config.guidance_k,
        select="retrieve",
        retrieval_mode=config.guidance_retrieval,
        where=config.where_for(sample),
        where_fallback=config.where_fallback,
    )


def run_agent(
    agent: Agent,
    backend: Backend,
    samples: Sequence[dict],
    prompts: Sequence,
    n: int,
    config: RolloutConfig,
    seed: int,
) -> list[list[Trajectory]]:
    """n trajectories per sample, each from its sample's prompt with a seed of its own."""
    jobs = []
    for i, (sample, prompt) in enumerate(zip(samples, prompts)):
        for j in range(n):
            params = GenerationParams(
                n=1,
                temperature=config.temperature,
                top_p=config.top_p,
                max_tokens=config.max_tokens,
                seed=(seed * 7919 + i * n + j) % 2**31,
            )
            jobs.append((sample, AgentContext(backend, prompt, params, chat=config.chat, stop=tuple(config.stop))))
    flat = agent.run_many(jobs, concurrency=config.concurrency)
    return [flat[i * n : (i + 1) * n] for i in range(len(samples))]


def score_rollouts(reward: Reward, rollouts: Sequence[tuple[dict, Trajectory]]) -> list[Score]:
    """The reward of each (sample, trajectory): its final answer scored (the whole trajectory in the
    sample for a reward that asks for it), or the bottom of the range, with the reason, when none came."""
    wants_trajectory = bool(getattr(reward, "trajectory", False))
    items, where = [], []
    for k, (sample, t) in enumerate(rollouts):
        if t.answer is not None:
            items.append((sample["prompt"], t.answer, {**sample, "trajectory": t} if wants_trajectory else sample))
            where.append(k)
    scored = dict(zip(where, reward.score_batch(items)))
    floor = 0.0 if reward.value_range is None else reward.value_range[0]
    return [
        scored[k] if k in scored else Score(floor, f"no answer: {t.ended}: {t.detail}", {"ended": t.ended})
        for k, (_, t) in enumerate(rollouts)
    ]


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
    agent: Agent | None = None
    """The agent each rollout is a trajectory of (None: one completion)."""
    record: Recorder | None = None
    """Where these rollouts go in the rollout log (None: not logged)."""

    def run(
        self,
        batch: Sequence[dict],
        seed: int,
        *,
        lessons: str | LessonLibrary = "",
        placement: str = "system",
        config: RolloutConfig | None = None,
        condition: str = "again",
    ) -> tuple[list[list[Trajectory]], list[list[Score]]]:
        """`rollout_batch` the step's way; logged (as `condition`, apart from the step's own rollouts, in a
        transaction of their own) when the step's rollouts are."""
        record = self.record.at(condition=condition, strategy=None) if self.record is not None else None
        made = rollout_batch(
            self.policy,
            batch,
            self.reward,
            self.group_size,
            config or self.config,
            seed,
            examples=self.examples,
            lessons=lessons,
            placement=placement,
            agent=self.agent,
            record=record,
        )
        if record is not None:
            record.flush()
        return made


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
