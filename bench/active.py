"""Active learning against uniform allocation at the same rollouts (docs/evidence.md, "Continual and
multi-domain"): for each training seed, `tfgrpo train` and `tfgrpo train --active` on the bundled multidomain
task, then `tfgrpo eval` of each library on the same held-out prompts; the held-out reward of each, the
rollouts each spent, and active minus uniform with a t 95% CI across training seeds.

    python bench/active.py [--out bench-out/active] [--seeds 0 1 2]

One model process at a time, each with one math thread; rerun to resume (a finished seed is not redone).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

TASK = (
    "--task multidomain --task-option n=6 --task-option test_fraction=0.5 "
    "--task-option domains=dates,json,quote,lower,hyphen"
)
TRAIN = "-G 4 --batch-size 4 --epochs 2 --max-tokens 20 --shots 2 --select retrieve --example-format turns"
ACTIVE = "--active --active-min 2 --active-budget 5"
EVAL = "--no-baselines -k 2 --max-tokens 20 --shots 2 --select retrieve --example-format turns --seed 1234"


def tfgrpo(*args: str, log: Path) -> None:
    binary = str(Path(sys.executable).parent / "tfgrpo")
    with open(log, "a") as f:
        subprocess.run([binary, *args], stdout=f, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def one(out: Path, seed: int, mode: str) -> dict:
    result = out / f"{mode}-seed{seed}.json"
    if not result.exists():
        library = out / f"{mode}-seed{seed}.db"
        extra = shlex.split(ACTIVE) if mode == "active" else []
        tfgrpo("train", *shlex.split(TASK), *shlex.split(TRAIN), *extra, "--seed", str(seed), "-l", str(library),
               log=out / f"{mode}-seed{seed}.log")  # fmt: skip
        tfgrpo("eval", *shlex.split(TASK), *shlex.split(EVAL), "-l", str(library), "--out", str(result),
               log=out / f"{mode}-seed{seed}.log")  # fmt: skip
    evaluation = json.loads(result.read_text())
    metrics = [json.loads(line) for line in (out / f"{mode}-seed{seed}.db.metrics.jsonl").read_text().splitlines()]
    return {
        "reward": evaluation["conditions"]["library"]["mean_at_k"],
        "zero_shot": next(c["mean_at_k"] for n, c in evaluation["conditions"].items() if n != "library"),
        "rollouts": sum(m["groups"] for m in metrics) * 4,
        "extra_groups": sum(m.get("extra_groups", 0) for m in metrics),
    }


def text(figure: dict | None) -> str:
    return "n/a" if not figure else f"{figure['mean']:+.3f} ({figure['ci_low']:+.3f} .. {figure['ci_high']:+.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out/active"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from tfgrpo.loop.continual import across_seeds

    rows = {mode: [one(args.out, s, mode) for s in args.seeds] for mode in ("uniform", "active")}
    print("| allocation | held-out reward per seed | mean (t 95% CI) | rollouts per run | gain over zero-shot "
          "per 1,000 rollouts (t 95% CI) | extra groups per seed |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, runs in rows.items():
        figure = across_seeds([r["reward"] for r in runs])
        gain = across_seeds([(r["reward"] - r["zero_shot"]) * 1000 / r["rollouts"] for r in runs])
        per_seed = ", ".join(f"{r['reward']:.3f}" for r in runs)
        rollouts, extra = sorted({r["rollouts"] for r in runs}), [r["extra_groups"] for r in runs]
        print(f"| {mode} | {per_seed} | {text(figure)} | {rollouts} | {text(gain)} | {extra} |")
    diff = across_seeds([a["reward"] - u["reward"] for a, u in zip(rows["active"], rows["uniform"])])
    print(f"\nactive - uniform (held-out reward, t 95% CI across training seeds): {text(diff)}")
    print("zero-shot on the same prompts:", ", ".join(f"{r['zero_shot']:.3f}" for r in rows["uniform"]))


if __name__ == "__main__":
    main()
