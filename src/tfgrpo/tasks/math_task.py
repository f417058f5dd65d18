"""`math`: problems from a file you supply (JSONL, CSV or Parquet), checked with `MathReward`."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..rewards.math_reward import MathReward
from .dataset import load_samples
from .task import Task

INSTRUCTION = "Solve the problem step by step, then give the final answer in \\boxed{}."


def math_task(
    path: str | Path | None = None,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    id_field: str | None = "id",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Task:
    """Math problems from `path`: the question in `prompt_field` (MATH-style files: "problem"), the
    reference answer in `answer_field`."""
    if path is None:
        raise ConfigError("the math task reads your problems from a file: get_task('math', path='problems.jsonl')")
    reward = MathReward()  # fails now, not at the first score, if math-verify is missing
    return Task(
        name="math",
        loader=lambda: load_samples(path, prompt_field=prompt_field, answer_field=answer_field, id_field=id_field),
        reward=reward,
        instruction=INSTRUCTION,
        max_tokens=1024,
        test_fraction=test_fraction,
        seed=seed,
    )
