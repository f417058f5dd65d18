"""Chosen evaluation conditions, one process each, combined afterwards into `tfgrpo repeat`'s summary.

`tfgrpo eval --baselines` evaluates every fair baseline beside each library, again for every training
seed. The baselines do not depend on the library (same held-out prompts, same generation seeds, same
training prompts), so on a slow machine they can be evaluated once and each training seed's library
alone; `combine` then compares every library with the strongest baseline exactly as `evaluate` does
(paired bootstrap CI, sign-flip p, Holm) and summarises the lift across training seeds.

    python bench/conditions_eval.py run --condition library -l lib-seed0.db --out lib0.json -- EVAL_ARGS
    python bench/conditions_eval.py run --condition zero-shot-chat --condition labelled --out base.json -- EVAL_ARGS
    python bench/conditions_eval.py combine --baselines base.json --library 0=lib0.json --library 1=lib1.json \
        --out repeat.json

EVAL_ARGS are `tfgrpo eval`'s own flags (task, sizes, prompting, --seed), the same for every run.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from tfgrpo.cli import build_parser
from tfgrpo.cli.common import load_task, make_backend, open_library
from tfgrpo.cli.eval import eval_config
from tfgrpo.core.formats import atomic_write
from tfgrpo.loop.evaluate import (
    Baseline,
    ConditionResult,
    EvalReport,
    across_training_seeds,
    bootstrap_examples,
    compare,
    evaluate,
    labelled_examples,
    repeat_table,
)

CONDITIONS = ("library", "zero-shot-chat", "zero-shot-text", "labelled", "bootstrapped")


def eval_args(argv: list[str]):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["eval"].parse_args(argv)


def run(opts) -> None:
    args = eval_args(opts.eval_args)
    task = load_task(args)
    config = eval_config(args, task)
    shots = config.shots or 3
    with make_backend(args.model, config.concurrency) as backend:
        conditions: dict = {}
        for name in opts.condition:
            if name == "library":
                conditions["library"] = open_library(opts.library)
            elif name.startswith("zero-shot"):
                conditions[f"zero-shot {name[10:]}"] = Baseline(chat=name == "zero-shot-chat")
            elif name == "labelled":
                examples = labelled_examples(task.train, shots)
                conditions[f"labelled {len(examples)}-shot"] = Baseline("labelled", examples)
            else:
                examples = bootstrap_examples(backend, task.train, task.reward, config, shots)
                if examples:
                    conditions[f"bootstrapped {len(examples)}-shot"] = Baseline("bootstrapped", examples)
        report = evaluate(backend, task.test, task.reward, conditions, config, {s["prompt"] for s in task.train})
    print(report.table())
    result = {**report.to_dict(), "eval_args": opts.eval_args, "library": opts.library}
    atomic_write(opts.out, lambda f: json.dump(result, f, indent=1))


def load_results(path: str) -> tuple[dict, list[ConditionResult]]:
    data = json.loads(open(path).read())
    return data, [
        ConditionResult(
            name,
            np.asarray(c["rewards"], dtype=float),
            data["settings"]["success_threshold"],
            baseline=c["baseline"],
            description=c["description"],
        )
        for name, c in data["conditions"].items()
    ]


def combine(opts) -> None:
    baselines: list[ConditionResult] = []
    reference: dict | None = None
    for path in opts.baselines:
        data, results = load_results(path)
        if reference is not None and (data["prompt_ids"], data["seeds"]) != (
            reference["prompt_ids"],
            reference["seeds"],
        ):
            sys.exit(f"{path}: other prompts or seeds than {opts.baselines[0]}")
        reference = data
        baselines += [r for r in results if r.baseline]
    assert reference is not None
    config = eval_config(eval_args(reference["eval_args"]), load_task(eval_args(reference["eval_args"])))
    per_seed = []
    for item in opts.library:
        seed, path = item.split("=", 1)
        data, results = load_results(path)
        if (data["prompt_ids"], data["seeds"]) != (reference["prompt_ids"], reference["seeds"]):
            sys.exit(f"{path}: other prompts or seeds than the baselines")
        if data["settings"] != reference["settings"]:
            sys.exit(f"{path}: other evaluation settings than the baselines")
        libraries = [r for r in results if not r.baseline]
        strongest = max(baselines, key=lambda r: r.mean_at_k)
        everything = [*baselines, *libraries]
        report = EvalReport(
            everything,
            compare(everything, [(lib, strongest) for lib in libraries], config),
            data["n_prompts"],
            data["k"],
            seeds=data["seeds"],
            prompt_ids=data["prompt_ids"],
            settings=data["settings"],
        )
        print(f"training seed {seed}:\n{report.table()}\n")
        per_seed.append({**report.to_dict(), "train_seed": int(seed), "library": data["library"]})
    summary = across_training_seeds(per_seed)
    atomic_write(opts.out, lambda f: json.dump(summary, f, indent=1))
    print(repeat_table(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="evaluate the chosen conditions")
    r.add_argument("--condition", action="append", choices=CONDITIONS, required=True)
    r.add_argument("--library", "-l", default=None, help="the library (for --condition library)")
    r.add_argument("--out", required=True)
    r.add_argument("eval_args", nargs=argparse.REMAINDER, help="-- then `tfgrpo eval`'s flags")
    c = sub.add_parser("combine", help="compare each library with the strongest baseline, across training seeds")
    c.add_argument("--baselines", nargs="+", required=True, help="results of `run` holding baselines")
    c.add_argument("--library", action="append", required=True, help="SEED=RESULT.json of `run --condition library`")
    c.add_argument("--out", required=True)
    opts = parser.parse_args()
    if opts.command == "run":
        opts.eval_args = opts.eval_args[1:] if opts.eval_args[:1] == ["--"] else opts.eval_args
        run(opts)
    else:
        combine(opts)


if __name__ == "__main__":
    main()
