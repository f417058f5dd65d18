"""docs/evidence.md's fair-baseline run: on the bundled model and the arithmetic task, train one examples
library per training seed (the demo's text-mode prompt), then evaluate each beside the fair baselines
(zero-shot chat and text, the stop rule, labelled and bootstrapped few-shot) on the same held-out prompts,
and summarise the lift over the strongest baseline across training seeds.

    .venv/bin/python bench/fair_eval.py --out bench-out/fair --train-seeds 0 1 --train 12 --test 16 -k 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tfgrpo.core.config import GRPOConfig
from tfgrpo.core.library import TrainingFreeGRPO
from tfgrpo.learn import ExampleUpdate
from tfgrpo.llm import get_backend
from tfgrpo.loop import EvalConfig, TrainConfig, evaluate, show_progress, train
from tfgrpo.loop.evaluate import across_training_seeds, fair_baselines, repeat_table
from tfgrpo.prompting import PromptTemplate
from tfgrpo.tasks import get_task


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench-out/fair")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--train", type=int, default=12)
    p.add_argument("--test", type=int, default=16)
    p.add_argument("-k", type=int, default=2)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[0], help="evaluation seeds' values")
    p.add_argument("--max-tokens", type=int, default=24)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task("arithmetic", n=200, seed=0)
    train_samples, test_samples = task.load("train")[: args.train], task.load("test")[: args.test]
    template = PromptTemplate(instruction=task.instruction)
    text = {"template": template, "chat": False, "stop": ("\n",), "max_tokens": args.max_tokens, "shots": 3}
    eval_config = EvalConfig(k=args.k, batch_size=8, seed=1234, seeds=tuple(args.eval_seeds), **text)
    results = []
    started = time.perf_counter()
    with get_backend("local") as backend:
        baselines = fair_baselines(backend, train_samples, task.reward, eval_config, shots=3)
        print({name: b.describe() for name, b in baselines.items()}, flush=True)
        for seed in args.train_seeds:
            path = out / f"library-seed{seed}.db"
            path.unlink(missing_ok=True)
            with TrainingFreeGRPO.open(path, GRPOConfig(group_size=args.group_size), seed=seed) as grpo:
                config = TrainConfig(batch_size=4, group_size=args.group_size, temperature=0.7, seed=seed, **text)
                train(
                    backend,
                    train_samples,
                    task.reward,
                    [ExampleUpdate(grpo, task.name)],
                    config,
                    metrics_path=f"{path}.metrics.jsonl",
                )
                # Baselines are evaluated once per training seed too: their numbers do not depend on it.
                conditions = {**baselines, "library": grpo} if not results else {"library": grpo}
                report = evaluate(
                    backend,
                    test_samples,
                    task.reward,
                    conditions,
                    eval_config,
                    train_prompts={s["prompt"] for s in task.load("train")},
                    progress=show_progress(),
                )
                result = report.to_dict()
                if results:  # the baselines of the first run, and the comparison recomputed against them
                    result = _with_baselines(results[0], result, eval_config)
                result.update(train_seed=seed, library=str(path), library_size=grpo.library_size())
                results.append(result)
                (out / f"eval-seed{seed}.json").write_text(json.dumps(result, indent=1))
                print(_table(result), flush=True)
    summary = across_training_seeds(results)
    summary["seconds"] = time.perf_counter() - started
    (out / "repeat.json").write_text(json.dumps(summary, indent=1))
    print(repeat_table(summary))
    print(f"done in {summary['seconds']:.0f}s")


def _with_baselines(first: dict, result: dict, config: EvalConfig) -> dict:
    """`result` (the library alone) with the baselines of `first` added and compared again, as if evaluated together
    (same prompts and seeds: the baselines' rewards do not depend on the training seed)."""
    import numpy as np

    from tfgrpo.loop.evaluate import ConditionResult, compare

    conds = {**{k: v for k, v in first["conditions"].items() if v["baseline"]}, **result["conditions"]}
    objs = [
        ConditionResult(k, np.asarray(v["rewards"]), config.success_threshold, v["baseline"]) for k, v in conds.items()
    ]
    strongest = max((c for c in objs if c.baseline), key=lambda c: c.mean_at_k)
    comparisons = compare(objs, [(c, strongest) for c in objs if not c.baseline], config)
    return {
        **result,
        "conditions": conds,
        "strongest_baseline": strongest.name,
        "comparisons": [vars(c) for c in comparisons],
    }


def _table(result: dict) -> str:
    lines = [f"train seed {result.get('train_seed')}: strongest baseline {result['strongest_baseline']}"]
    for name, c in result["conditions"].items():
        lines.append(f"  {name:<40} Mean@k {c['mean_at_k']:.3f} Pass@k {c['pass_at_k']:.3f}")
    for d in result["comparisons"]:
        lines.append(
            f"  {d['name']} - {d['baseline']}: {d['mean_diff']:+.3f} ({d['ci_low']:+.3f} .. {d['ci_high']:+.3f}) "
            f"p {d['p_value']:.3f} Holm {d['p_holm']:.3f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
