"""`math-tool`: bundled math problems that call for computation (counting primes, Fibonacci numbers,
divisors, modular powers, digit sums of large powers, ...), each with an exact whole-number answer: a
model that runs code gets them right, one that guesses rarely does. The problems are in
`data/math_tool.jsonl`, written by `generate_math_tool()` (the answers computed, not typed), checked
against it by the tests."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

from ..rewards.math_reward import NumericMatchReward
from .task import Task

DATA = Path(__file__).with_name("data") / "math_tool.jsonl"
INSTRUCTION = "Solve the problem. Give the final answer as a single whole number."


def _primes_below(n: int) -> int:
    sieve = bytearray([1]) * n
    sieve[:2] = b"\x00\x00"
    for i in range(2, math.isqrt(n - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return sum(sieve)


def _fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _divisors(n: int) -> int:
    return sum(2 - (d * d == n) for d in range(1, math.isqrt(n) + 1) if n % d == 0)


KINDS: list[Callable[[random.Random], tuple[str, int]]] = [
    lambda r: (lambda n: (f"How many prime numbers are there below {n}?", _primes_below(n)))(r.randint(200, 5000)),
    lambda r: (lambda n: (f"What is the Fibonacci number F({n}), where F(1) = F(2) = 1?", _fibonacci(n)))(
        r.randint(25, 70)
    ),
    lambda r: (lambda n: (f"How many positive divisors does {n} have?", _divisors(n)))(r.randint(10_000, 999_999)),
    lambda r: (lambda a, b: (f"What is the greatest common divisor of {a} and {b}?", math.gcd(a, b)))(
        r.randint(10_000, 999_999) * r.choice((6, 12, 35, 84)), r.randint(10_000, 999_999) * r.choice((6, 12, 35))
    ),
    lambda r: (lambda a, b, m: (f"What is {a} to the power {b}, modulo {m}?", pow(a, b, m)))(
        r.randint(3, 97), r.randint(20, 200), r.randint(1000, 99_999)
    ),
    lambda r: (lambda k: (f"What is the sum of the digits of 2 to the power {k}?", sum(map(int, str(2**k)))))(
        r.randint(60, 400)
    ),
    lambda r: (
        lambda n: (
            f"What is the sum of the squares of the whole numbers from 1 to {n}?",
            n * (n + 1) * (2 * n + 1) // 6,
        )
    )(r.randint(50, 2000)),
    lambda r: (
        lambda n: (
            f"What is the sum of all multiples of 3 or 7 below {n}?",
            sum(i for i in range(n) if i % 3 == 0 or i % 7 == 0),
        )
    )(r.randint(500, 20_000)),
    lambda r: (lambda n: (f"How many digits does {n} factorial have?", len(str(math.factorial(n)))))(
        r.randint(30, 300)
    ),
]


def generate_math_tool(n: int = 120, seed: int = 0) -> list[dict]:
    """`n` distinct problems, the kinds in turn, numbers drawn with `seed` (what data/math_tool.jsonl holds)."""
    rng = random.Random(seed)
    samples: list[dict] = []
    seen: set[str] = set()
    while len(samples) < n:
        prompt, answer = KINDS[len(samples) % len(KINDS)](rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        samples.append({"id": f"math-tool-{len(samples)}", "prompt": prompt, "answer": answer})
    return samples


def math_tool_task(test_fraction: float = 0.5, seed: int = 0) -> Task:
    """The bundled problems, scored by the last number of the answer (`NumericMatchReward`)."""

    def load() -> list[dict]:
        with open(DATA, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    return Task(
        name="math-tool",
        loader=load,
        reward=NumericMatchReward(),
        instruction=INSTRUCTION,
        max_tokens=128,
        stop=(),
        test_fraction=test_fraction,
        seed=seed,
    )


if __name__ == "__main__":  # writes the bundled file: python -m tfgrpo.tasks.math_tool
    DATA.write_text("".join(json.dumps(s) + "\n" for s in generate_math_tool()), encoding="utf-8")
