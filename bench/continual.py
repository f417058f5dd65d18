"""The continual and multi-domain benchmark of docs/evidence.md: every condition of `tfgrpo continual` on the
bundled multidomain task, the same prompts and seeds, then one table of them all against the strongest
baseline.

    python bench/continual.py run [CONDITION ...] [--seeds 0 1 2] [--jobs 1] [--out bench-out/continual]
    python bench/continual.py table [--out bench-out/continual]

`run` starts one `tfgrpo continual` per condition (at most --jobs at a time, each with one math thread),
its log in OUT/CONDITION.log; run it again to resume whatever was cut short (each run resumes where it
stopped). `table` merges their results (`tfgrpo.loop.continual.merge`) and prints the figures, each
library's ACC minus the strongest baseline's, and the final row of each matrix, as markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

COMMON = (
    "--task multidomain --task-option n=12 --task-option test_fraction=0.5 --domains dates,json,quote,lower,hyphen "
    "--seeds 0 1 2 -G 8 --batch-size 3 --max-tokens 20 --shots 3 --example-format turns --retrieval-mode lexical "
    "-k 2 --critic-max-tokens 96"
)

CONDITIONS = {
    "baselines": "--baselines-only",
    "retrieve": "--select retrieve",
    "sample": "--select sample",
    "route": "--select retrieve --where domain",
    "route-fallback": "--select retrieve --where domain --where-fallback",
    "retrieve-adv": "--select retrieve --advantage-weight 0.5",
    "cap10-lowest": "--select retrieve --max-library-size 10 --eviction-policy lowest_advantage",
    "cap10-oldest": "--select retrieve --max-library-size 10 --eviction-policy oldest",
    "cap10-balanced": "--select retrieve --max-library-size 10 --eviction-policy balanced",
    "bias": "--select retrieve --shots 0 --guidance bias",
    "constrain": "--select retrieve --shots 0 --guidance constrain",
    "lessons": "--strategy lessons",
    "both": "--strategy both --select retrieve",
}


def command(name: str, out: Path, seeds: list[int] | None = None) -> list[str]:
    extra = CONDITIONS[name]
    own = [] if name == "baselines" else ["--no-baselines", "--name", name]
    own += ["--seeds", *map(str, seeds)] if seeds else []  # fewer seeds than COMMON's (the last --seeds counts)
    return [
        str(Path(sys.executable).parent / "tfgrpo"), "continual", *shlex.split(COMMON), *shlex.split(extra), *own,
        "--out", str(out / name), "--baselines-dir", str(out / "baselines"),
    ]  # fmt: skip


def run(names: list[str], out: Path, jobs: int, seeds: list[int] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    waiting, running = list(names), {}
    while waiting or running:
        while waiting and len(running) < jobs:
            name = waiting.pop(0)
            log = open(out / f"{name}.log", "a")
            print(f"start {name}", flush=True)
            running[name] = (
                subprocess.Popen(command(name, out, seeds), stdout=log, stderr=subprocess.STDOUT, env=env),
                log,
            )
        time.sleep(5)
        for name, (process, log) in list(running.items()):
            if process.poll() is not None:
                log.close()
                print(f"done {name}: exit {process.returncode}", flush=True)
                del running[name]


def table(out: Path) -> None:
    from tfgrpo.loop.continual import merge

    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/continual.json"))]
    summary = merge(results)
    (out / "merged.json").write_text(json.dumps(summary, indent=1))

    def fig(v: dict | None) -> str:
        if not v:
            return "n/a"
        if len(v["per_seed"]) < 2:
            return f"{v['mean']:+.3f} (1 seed)"
        return f"{v['mean']:+.3f} ({v['ci_low']:+.3f} .. {v['ci_high']:+.3f})"

    print(f"strongest baseline: {summary['strongest_baseline']}; phases: {', '.join(summary['phases'])}\n")
    from tfgrpo.loop.continual import across_seeds

    def minus_knn(c: dict) -> dict | None:  # the fair retrieval baseline, seed by seed
        knn = summary["conditions"].get("knn")
        if knn is None or c["baseline"]:
            return None
        theirs = dict(zip(knn["seeds"], knn["acc"]["per_seed"]))
        return across_seeds([v - theirs[s] for s, v in zip(c["seeds"], c["acc"]["per_seed"]) if s in theirs])

    print("| condition | seeds | ACC | BWT | FWT | ACC - strongest baseline | ACC - knn | ACC per seed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, c in summary["conditions"].items():
        lift = summary["lifts"].get(name)
        seeds = ", ".join(f"{v:.3f}" for v in c["acc"]["per_seed"])
        print(f"| {name} | {len(c['seeds'])} | {fig(c['acc'])} | {fig(c['bwt'])} | {fig(c['fwt'])} | {fig(lift)} | "
              f"{fig(minus_knn(c))} | {seeds} |")  # fmt: skip
    print("\nR[phase][domain], mean over each condition's training seeds (rows: after each phase):")
    for name, c in summary["conditions"].items():
        print(f"\n{name} ({len(c['seeds'])} training seed(s))\n")
        print("| after | " + " | ".join(summary["domains"]) + " | mean |")
        print("| --- |" + " --- |" * (len(summary["domains"]) + 1))
        for phase, row in zip(summary["phases"], c["R_mean"]):
            print(f"| {phase} | " + " | ".join(f"{v:.2f}" for v in row) + f" | {sum(row) / len(row):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "table"])
    parser.add_argument("conditions", nargs="*", help=f"default: all ({', '.join(CONDITIONS)})")
    parser.add_argument("--out", type=Path, default=Path("bench-out/continual"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: 0 1 2)")
    args = parser.parse_intermixed_args()
    if args.action == "run":
        unknown = [c for c in args.conditions if c not in CONDITIONS]
        if unknown:
            parser.error(f"unknown condition(s) {', '.join(unknown)}")
        run(args.conditions or list(CONDITIONS), args.out, args.jobs, args.seeds)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
