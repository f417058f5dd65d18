"""docs/evidence.md's "Fine-tuning on what the library found": examples/finetune_from_library.py once per training
seed (each in a process of its own, in OUT/seedN; a seed whose summary.json exists is not run again), then every
comparison summarised across the training seeds: the mean difference and a t 95% CI across seeds (the seeds are
the unit), beside each seed's paired bootstrap CI over prompts.

    .venv/bin/python bench/finetune_evidence.py --out ft-evidence --seeds 0 1 2 -- \\
        --train 32 --test 40 -G 8 --batch-size 8 -k 4 --sft-steps 40 --dpo-steps 40 --eval-seed 1

Everything after `--` goes to the example as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tfgrpo.loop.evaluate import across_training_seeds

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_from_library.py"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="ft-evidence")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("example_args", nargs=argparse.REMAINDER, help="after --: the example's own arguments")
    args = p.parse_args()
    passed = [a for a in args.example_args if a != "--"]
    out = Path(args.out)
    runs = []
    for seed in args.seeds:
        folder = out / f"seed{seed}"
        summary = folder / "summary.json"
        if not summary.exists():
            started = time.perf_counter()
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            command = [sys.executable, str(EXAMPLE), "--out", str(folder), "--seed", str(seed), *passed]
            out.mkdir(parents=True, exist_ok=True)
            with open(out / f"seed{seed}.log", "w") as log:
                subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
            print(f"seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
        runs.append(json.loads(summary.read_text()))
    print(table(runs))
    (out / "summary.json").write_text(json.dumps(across(runs), indent=1))


def across(runs: list[dict]) -> dict:
    """Every comparison of every run ("A - B"), summarised across the training seeds."""
    results = []
    for run in runs:
        comparisons = run["evaluation"]["comparisons"] + run["more comparisons"]
        unique = {f"{d['name']} - {d['baseline']}": d for d in comparisons}
        results.append(
            {
                "train_seed": run["args"]["seed"],
                "comparisons": [{**d, "name": name} for name, d in unique.items()],
            }
        )
    return across_training_seeds(results)


def table(runs: list[dict]) -> str:
    first = runs[0]["evaluation"]
    names = list(first["conditions"])
    seeds = [r["args"]["seed"] for r in runs]
    lines = [
        f"held out: {first['n_prompts']} prompts x k={first['k']}; training seeds {', '.join(map(str, seeds))}",
        "",
        "| condition | " + " | ".join(f"Mean@k, seed {s}" for s in seeds) + " |",
        "| --- |" + " ---: |" * len(seeds),
    ]
    for name in names:
        values = [r["evaluation"]["conditions"][name]["mean_at_k"] for r in runs]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    lines += ["", "| comparison | per seed (paired bootstrap 95% CI over prompts) | mean, t 95% CI across seeds |"]
    lines.append("| --- | --- | --- |")
    summary = across(runs)
    for name, s in summary["lifts"].items():
        per_seed = []
        for run in runs:
            for d in run["evaluation"]["comparisons"] + run["more comparisons"]:
                if f"{d['name']} - {d['baseline']}" == name:
                    per_seed.append(f"{d['mean_diff']:+.3f} ({d['ci_low']:+.3f} .. {d['ci_high']:+.3f})")
                    break
        lines.append(
            f"| {name} | {'; '.join(per_seed)} | {s['mean']:+.3f} ({s['ci_low']:+.3f} .. {s['ci_high']:+.3f}) |"
        )
    rows = [f"seed {r['args']['seed']}: {r['rows']['sft']} SFT rows, {r['rows']['dpo']} DPO pairs" for r in runs]
    losses = [
        f"seed {r['args']['seed']}: "
        + ", ".join(f"{k} loss {v[0]:.3f} -> {v[-1]:.3f}" for k, v in r["losses"].items())
        + f"; {r['seconds']['total']:.0f} s"
        for r in runs
    ]
    return "\n".join(lines + ["", *rows, *losses])


if __name__ == "__main__":
    main()
