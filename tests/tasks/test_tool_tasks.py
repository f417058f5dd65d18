"""The bundled tasks that need a tool: `math-tool`'s problems (their answers computed again here, by
other means than the generator's) and `arithmetic`'s `large` difficulty."""

import json
import math

import pytest

from tfgrpo.tasks import generate_math_tool, get_task
from tfgrpo.tasks.math_tool import DATA


def test_the_bundled_file_is_what_the_generator_writes():
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert rows == generate_math_tool()
    assert len({r["prompt"] for r in rows}) == len(rows) == 120


def test_math_tool_answers_are_right():
    def is_prime(n):
        return n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))

    checks = {
        "How many prime numbers are there below": lambda n: sum(map(is_prime, range(n))),
        "How many positive divisors does": lambda n: sum(n % d == 0 for d in range(1, n + 1)),
        "How many digits does": lambda n: math.floor(math.lgamma(n + 1) / math.log(10)) + 1,
    }
    checked = 0
    for row in get_task("math-tool").load("all"):
        for start, check in checks.items():
            if row["prompt"].startswith(start):
                number = int(row["prompt"][len(start) :].split()[0].rstrip("?"))
                assert check(number) == row["answer"], row
                checked += 1
    assert checked >= 30


def test_math_tool_splits_and_scores_whole_numbers():
    task = get_task("math-tool")
    train, test = task.load("train"), task.load("test")
    assert len(train) == len(test) == 60 and not {s["prompt"] for s in train} & {s["prompt"] for s in test}
    sample = test[0]
    assert task.reward.score(sample["prompt"], f"The answer is {sample['answer']}.", sample).value == 1.0
    assert task.reward.score(sample["prompt"], "The answer is 7.", sample).value == 0.0


@pytest.mark.parametrize("seed", [0, 3])
def test_large_arithmetic_has_products_too_large_for_ones_head(seed):
    samples = get_task("arithmetic", difficulty="large", n=50, seed=seed).load("all")
    for s in samples:
        a, b = map(int, s["expression"].split(" * "))
        assert 1000 <= a <= 99999 and 1000 <= b <= 99999 and s["answer"] == a * b
    assert all(s["answer"] >= 1_000_000 for s in samples)
