"""Time `LessonLibrary.apply` on one batch of N operations, for growing N (issue 10: 5,000 took 15 s).

    python bench/lesson_ops.py                    # 500, 1000, 2000, 5000
    python bench/lesson_ops.py --sizes 500 20000

The operations are a realistic mix on an in-memory library: 70 % adds, 10 % updates, 10 % deletes and
10 % merges of two lessons, each naming lessons that exist at that point, every text distinct. The
baseline is the smallest size of the same run: with linear work the time per operation stays flat, so
the last column stays near 1x (quadratic work makes it grow with N).
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tfgrpo.semantic import LessonLibrary, Operation  # noqa: E402


def operations(n: int, seed: int = 0) -> list[Operation]:
    """`n` operations, each valid against the lessons the earlier ones leave."""
    rng = random.Random(seed)
    alive: list[str] = []
    next_id = 0
    ops: list[Operation] = []
    for i in range(n):
        roll = rng.random()
        text = f"Lesson {i}: check intermediate result {i} against the constraint before moving on."
        if len(alive) < 2 or roll < 0.7:
            ops.append(Operation("add", text))
            alive.append(f"G{next_id}")
            next_id += 1
        elif roll < 0.8:
            ops.append(Operation("update", text, id=rng.choice(alive)))
        elif roll < 0.9:
            ops.append(Operation("delete", id=alive.pop(rng.randrange(len(alive)))))
        else:
            first, second = rng.sample(alive, 2)
            ops.append(Operation("merge", text, ids=(first, second)))
            alive.remove(second)
    return ops


def measure(n: int, repeats: int) -> float:
    ops = operations(n)
    best = float("inf")
    for _ in range(repeats):
        with LessonLibrary(None, max_words=64) as lib:
            start = time.perf_counter()
            result = lib.apply(ops)
            best = min(best, time.perf_counter() - start)
            assert not result.skipped, result.skipped[:3]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per size")
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, {platform.machine()}, best of {args.repeats}\n")
    print("| operations | apply [s] | per operation [us] | per operation / smallest |")
    print("| ---: | ---: | ---: | ---: |")
    base = None
    for n in args.sizes:
        seconds = measure(n, args.repeats)
        per_op = seconds / n * 1e6
        base = base or per_op
        print(f"| {n:,} | {seconds:.3f} | {per_op:,.1f} | {per_op / base:.1f}x |")


if __name__ == "__main__":
    main()
