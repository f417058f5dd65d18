"""`tfgrpo demo`: train on the bundled model and arithmetic task, then compare the library with the
strongest of the fair baselines."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .common import open_rollout_log, positive_int, rollout_log_args, seed_value


def add_commands(command) -> None:
    p = command(
        "demo",
        cmd_demo,
        "Train a library on the bundled model and arithmetic task into an SQLite file, then compare it with "
        "the strongest of the simple alternatives (zero-shot in chat and text mode, labelled and bootstrapped "
        "few-shot) on held-out prompts.",
    )
    p.add_argument(
        "--out",
        default="demo-out",
        help="folder for the library and metrics: a new or empty folder, or one an earlier demo wrote (emptied first)",
    )
    p.add_argument("--model", default="local", help="backend spec (see `train --help`)")
    p.add_argument("--train-prompts", type=positive_int, default=32, help="training prompts")
    p.add_argument("--eval-prompts", type=positive_int, default=40, help="held-out prompts")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the task's questions, training and evaluation")
    rollout_log_args(p)


def cmd_demo(args) -> None:
    from ..core.config import GRPOConfig
    from ..core.library import TrainingFreeGRPO
    from ..learn import ExampleUpdate
    from ..learn.rollout_log import Recorder
    from ..llm import get_backend
    from ..loop.config import TrainConfig
    from ..loop.evaluate import EvalConfig, evaluate, fair_baselines, show_progress
    from ..loop.training import train
    from ..prompting import PromptTemplate
    from ..report import write_report
    from ..tasks import get_task

    started = time.perf_counter()
    out = fresh_output(Path(args.out))
    # Enough questions that the held-out fifth covers --eval-prompts.
    n = max(5 * args.eval_prompts, 2 * args.train_prompts)
    task = get_task("arithmetic", n=n, seed=args.seed)
    train_samples = task.load("train")[: args.train_prompts]
    test_samples = task.load("test")[: args.eval_prompts]
    # The bundled 135M model answers best as a plain-text completion in the spec's Q/A form.
    template = PromptTemplate(instruction=task.instruction)
    rollout: dict[str, Any] = {"template": template, "chat": False, "stop": ("\n",), "max_tokens": 12, "shots": 3}
    print("[demo] loading the bundled model ...", file=sys.stderr, flush=True)
    with get_backend(args.model) as backend:
        library_path = out / "library.db"
        with contextlib.ExitStack() as stack:
            grpo = stack.enter_context(
                TrainingFreeGRPO.open(library_path, GRPOConfig(group_size=8, max_library_size=1000), seed=args.seed)
            )
            # Every rollout, for `tfgrpo export --format sft|dpo|...` (None with --no-rollout-log).
            rollout_log = open_rollout_log(args, str(library_path), stack)
            print(
                f"[demo] training on {len(train_samples)} arithmetic prompts, G=8, into {library_path}",
                file=sys.stderr,
                flush=True,
            )
            config = TrainConfig(batch_size=8, group_size=8, temperature=0.7, seed=args.seed, **rollout)
            update = ExampleUpdate(grpo, task_name=task.name)
            train(
                backend,
                train_samples,
                task.reward,
                [update],
                config,
                metrics_path=out / "metrics.jsonl",
                rollout_log=rollout_log,
                task_name=task.name,
            )
            print("\n" + grpo.stats().summary() + "\n")
            print(f"[demo] evaluating on {len(test_samples)} held-out prompts ...", file=sys.stderr, flush=True)
            eval_config = EvalConfig(k=4, batch_size=8, seed=args.seed + 1, **rollout)
            # The headline is the library against the strongest of the simple things a user could do instead;
            # zero-shot as the demo prompts (text mode) is one of them.
            record = Recorder(rollout_log, "eval", "demo", task=task.name) if rollout_log is not None else None
            baselines = fair_baselines(backend, train_samples, task.reward, eval_config, record=record)
            report = evaluate(
                backend,
                test_samples,
                task.reward,
                {**baselines, "library": grpo},
                eval_config,
                train_prompts={s["prompt"] for s in task.load("train")},
                progress=show_progress(),
                record=record,
            )
        print(report.table())
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
        html = write_report(library_path, out / "report.html", [out / "report.json"], [out / "metrics.jsonl"])
        print(f"[demo] report: {html}")
        print(
            f"\n[demo] done in {time.perf_counter() - started:.0f}s; model usage {backend.usage.to_dict()}; "
            f"files in {out}/"
        )


MARK = ".tfgrpo-demo"
"""The file that marks a folder as the demo's own, which a later demo may empty."""


def fresh_output(out: Path) -> Path:
    """`out` made empty for a new demo. Only a folder the demo wrote (its MARK inside) or an empty one is
    emptied: `--out` naming a folder of the user's own is refused, never deleted."""
    from ..core.files import output_folder
    from ..errors import ConfigError

    if out.is_dir() and any(out.iterdir()):
        if not (out / MARK).is_file():
            raise ConfigError(
                f"--out {out}: the folder holds files an earlier demo did not write; name a new or empty folder "
                "(the demo empties its folder first)"
            )
        shutil.rmtree(out)
    output_folder(out)
    (out / MARK).write_text("written by tfgrpo demo: the next demo with this --out empties this folder\n")
    return out
