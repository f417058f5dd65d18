"""One batch of rollouts, shared by training and evaluation: build each prompt with examples from the
library, generate a group per prompt, score every rollout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.library import TrainingFreeGRPO
from ..llm.base import Backend, Generation, GenerationParams
from ..prompting import PromptTemplate, build_prompt, select_examples
from ..rewards.base import Reward, Score


@dataclass(frozen=True)
class RolloutConfig:
    shots: int = 2
    """Few-shot examples from the library in each prompt."""
    select: str = "sample"
    """How examples are chosen: "sample" (by advantage) or "retrieve" (most relevant to the prompt)."""
    retrieval_mode: str = "semantic"
    """With select="retrieve": "lexical" (BM25), "semantic" (embeddings) or "hybrid"."""
    token_budget: int = 512
    """Most tokens the examples may take in one prompt."""
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    template: PromptTemplate = field(default_factory=PromptTemplate)
    chat: bool | None = None
    """Send chat messages (True), plain text for completion (False), or the backend's default (None)."""


def rollout_batch(
    backend: Backend,
    batch: Sequence[dict],
    reward: Reward,
    grpo: TrainingFreeGRPO | None,
    n: int,
    config: RolloutConfig,
    seed: int,
) -> tuple[list[list[Generation]], list[list[Score]]]:
    """n generations per sample and their scores. `seed` fixes both the examples drawn from the
    library and the sampling, so two conditions given the same seed meet the same randomness."""
    if grpo is not None:
        grpo.seed(seed)
    prompts = [
        build_prompt(
            sample["prompt"],
            select_examples(
                grpo, sample["prompt"], config.shots, select=config.select, retrieval_mode=config.retrieval_mode
            ),
            config.template,
            config.token_budget,
            chat=config.chat is not False,
        )
        for sample in batch
    ]
    params = GenerationParams(
        n=n,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
        stop=list(config.stop) or None,
        seed=seed,
    )
    groups = backend.generate(prompts, params, chat=config.chat)
    scores = reward.score_batch([(s["prompt"], g.text, s) for s, group in zip(batch, groups) for g in group])
    return groups, [scores[i * n : (i + 1) * n] for i in range(len(batch))]
