"""`arithmetic`: generated questions like "What is 7 + 12?", checked by the last number in the reply.

Deterministic for a seed. The default ("easy": sums of two numbers from 1 to 20) is meant to be partly
solvable by a very small model, so that training has a signal to work with.
"""

from __future__ import annotations

import random

from ..errors import ConfigError
from ..rewards.math_reward import NumericMatchReward
from .task import Task

DIFFICULTIES = {
    # name: (operations, smallest operand, largest operand, operands per question)
    "easy": ("+", 1, 20, 2),
    "medium": ("+-", 1, 99, 2),
    "hard": ("+-*", 1, 99, 3),
    # numbers too large to work out in one's head: a model gets them right by running code
    "large": ("*", 1000, 99999, 2),
}

INSTRUCTION = "Answer the arithmetic question. Reply with the final answer as a single number."


def generate_arithmetic(
    n: int = 200,
    seed: int = 0,
    operations: str = "+",
    min_operand: int = 1,
    max_operand: int = 20,
    operands: int = 2,
    allow_negative: bool = False,
) -> list[dict]:
    """`n` distinct questions (samples with "id", "prompt", "answer" as an int, and "expression").
    `operations` is a string of "+", "-", "*"; `*` binds tighter, as usual. Without `allow_negative`
    only questions with a non-negative answer are drawn."""
    if not operations or set(operations) - set("+-*"):
        raise ConfigError(f"operations must be made of '+', '-' and '*', got {operations!r}")
    if not (isinstance(n, int) and n >= 1 and isinstance(operands, int) and operands >= 2):
        raise ConfigError(f"need n >= 1 and operands >= 2, got n={n!r}, operands={operands!r}")
    if not (isinstance(min_operand, int) and isinstance(max_operand, int) and 0 <= min_operand <= max_operand):
        raise ConfigError(f"need 0 <= min_operand <= max_operand, got {min_operand!r} and {max_operand!r}")
    rng = random.Random(seed)
    samples: list[dict] = []
    seen: set[str] = set()
    for _ in range(n * 100):
        numbers = [rng.randint(min_operand, max_operand) for _ in range(operands)]
        ops = [rng.choice(operations) for _ in range(operands - 1)]
        expression = " ".join([str(numbers[0])] + [f"{op} {x}" for op, x in zip(ops, numbers[1:])])
        answer = _evaluate(numbers, ops)
        if expression in seen or (answer < 0 and not allow_negative):
            continue
        seen.add(expression)
        samples.append(
            {
                "id": f"arithmetic-{seed}-{len(samples)}",
                "prompt": f"What is {expression}?",
                "answer": answer,
                "expression": expression,
            }
        )
        if len(samples) == n:
            return samples
    raise ConfigError(f"could not draw {n} distinct questions at this difficulty; lower n or widen the operand range")


def _evaluate(numbers: list[int], ops: list[str]) -> int:
    terms, signs = [numbers[0]], []
    for op, x in zip(ops, numbers[1:]):
        if op == "*":
            terms[-1] *= x
        else:
            terms.append(x)
            signs.append(op)
    return terms[0] + sum(t if sign == "+" else -t for sign, t in zip(signs, terms[1:]))


def arithmetic_task(
    n: int = 200,
    seed: int = 0,
    difficulty: str = "easy",
    operations: str | None = None,
    min_operand: int | None = None,
    max_operand: int | None = None,
    operands: int | None = None,
    allow_negative: bool = False,
    test_fraction: float = 0.2,
) -> Task:
    """The arithmetic task: a `difficulty` preset (see `DIFFICULTIES`), each part overridable."""
    if difficulty not in DIFFICULTIES:
        raise ConfigError(f"unknown difficulty {difficulty!r}; use one of {', '.join(DIFFICULTIES)}")
    preset = DIFFICULTIES[difficulty]

    def load() -> list[dict]:
        return generate_arithmetic(
            n,
            seed,
            operations=preset[0] if operations is None else operations,
            min_operand=preset[1] if min_operand is None else min_operand,
            max_operand=preset[2] if max_operand is None else max_operand,
            operands=preset[3] if operands is None else operands,
            allow_negative=allow_negative,
        )

    load()  # fail now on bad settings
    return Task(
        name="arithmetic",
        loader=load,
        reward=NumericMatchReward(),
        instruction=INSTRUCTION,
        max_tokens=64,
        stop=("\n",),
        test_fraction=test_fraction,
        seed=seed,
    )
