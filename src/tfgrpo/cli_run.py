"""The model-facing commands: demo, train, eval, serve-model."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .errors import ConfigError


def add_commands(command) -> None:
    p = command(
        "demo",
        cmd_demo,
        "Train a library on the bundled model and arithmetic task into an SQLite file, then compare "
        "baseline against library on held-out prompts.",
    )
    p.add_argument("--out", default="demo-out", help="folder for the library and metrics (emptied first)")
    p.add_argument("--model", default="local", help="backend spec (see `train --help`)")
    p.add_argument("--train-prompts", type=int, default=32, help="training prompts")
    p.add_argument("--eval-prompts", type=int, default=40, help="held-out prompts")
    p.add_argument("--seed", type=int, default=0)

    p = command("train", cmd_train, "Train an experience library: groups, rewards, advantages, library updates.")
    _task_args(p)
    _model_args(p)
    _rollout_args(p, temperature=0.7)
    p.add_argument("--library", "-l", default="library.db", help="SQLite library (resumes if it exists)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4, help="prompts per step (one library update each)")
    p.add_argument("--group-size", "-G", type=int, default=8, help="rollouts per prompt")
    p.add_argument("--max-library-size", type=int, default=None, help="library capacity (new libraries)")
    p.add_argument("--metrics", default=None, help="JSONL file for per-step metrics (default: LIBRARY.metrics.jsonl)")
    p.add_argument("--seed", type=int, default=0)

    p = command("eval", cmd_eval, "Compare baseline (no library) against a library on held-out prompts.")
    _task_args(p)
    _model_args(p)
    _rollout_args(p, temperature=0.3)
    p.add_argument("--library", "-l", default="library.db", help="library to evaluate")
    p.add_argument("-k", type=int, default=4, help="samples per prompt (Mean@k, Pass@k)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = command("serve-model", cmd_serve_model, "Serve a backend as an OpenAI-compatible HTTP API.")
    p.add_argument("--model", default="local", help="backend spec (see `train --help`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default=None, help="the model id clients use (default: from the backend)")


def _task_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", default="arithmetic", help="bundled task: arithmetic, humaneval, math")
    g.add_argument(
        "--task-option", action="append", default=[], metavar="KEY=VALUE", help="task option, e.g. difficulty=medium"
    )
    g.add_argument("--data", default=None, help="your dataset (.jsonl, .csv, .parquet) instead of a bundled task")
    g.add_argument("--prompt-field", default="prompt", help="dataset field holding the prompt")
    g.add_argument("--answer-field", default="answer", help="dataset field holding the reference answer")
    g.add_argument(
        "--reward",
        default="numeric",
        help="reward for --data: numeric, exact, math, regex:PATTERN, unittest, compiler",
    )
    g.add_argument("--test-fraction", type=float, default=0.2, help="held-out share for --data")
    g.add_argument("--limit", type=int, default=None, help="use at most this many prompts of the split")


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default="local",
        help="'local' (bundled SmolLM2-135M-Instruct), 'local:PATH' (model dir or .gguf), "
        "'openai:MODEL@http://host:port/v1' or 'openai' (from OPENAI_BASE_URL, OPENAI_API_KEY, TFGRPO_MODEL)",
    )
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=False, help="send chat messages")
    g.add_argument("--concurrency", type=int, default=16, help="parallel requests (HTTP backends)")


def _rollout_args(p: argparse.ArgumentParser, temperature: float) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--shots", type=int, default=3, help="few-shot examples from the library per prompt")
    g.add_argument(
        "--select", choices=["sample", "retrieve"], default="sample", help="examples drawn by advantage or retrieved"
    )
    g.add_argument(
        "--retrieval-mode", choices=["lexical", "semantic", "hybrid"], default="semantic", help="with --select retrieve"
    )
    g.add_argument("--token-budget", type=int, default=512, help="most tokens the examples may take")
    g.add_argument("--temperature", type=float, default=temperature)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-tokens", type=int, default=None, help="default: the task's hint")
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable; default: newline)")
    g.add_argument("--instruction", default=None, help="instruction before the examples (default: the task's)")


def load_task(args):
    """(task name, train samples, test samples, reward, instruction, max_tokens hint)."""
    from .tasks import get_task, load_samples, split

    if args.data:
        samples = load_samples(args.data, prompt_field=args.prompt_field, answer_field=args.answer_field)
        train, test = split(samples, args.test_fraction, seed=0)
        name, reward, instruction, max_tokens = Path(args.data).stem, make_reward(args.reward), "", 256
    else:
        options = dict(_parse_option(item) for item in args.task_option)
        task = get_task(args.task, **options)
        train, test = task.load("train"), task.load("test")
        name, reward, instruction, max_tokens = task.name, task.reward, task.instruction, task.max_tokens
    if args.limit:
        train, test = train[: args.limit], test[: args.limit]
    return name, train, test, reward, instruction, max_tokens


def make_reward(spec: str):
    from . import rewards

    kind, _, arg = spec.partition(":")
    simple = {
        "numeric": rewards.NumericMatchReward,
        "exact": rewards.ExactMatchReward,
        "math": rewards.MathReward,
        "unittest": rewards.UnitTestReward,
        "compiler": rewards.CompilerReward,
    }
    if kind == "regex" and arg:
        return rewards.RegexReward(arg)
    if kind in simple and not arg:
        return simple[kind]()
    raise ConfigError(f"unknown reward {spec!r}; use numeric, exact, math, regex:PATTERN, unittest or compiler")


def _parse_option(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError(f"--task-option takes KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def make_backend(args):
    from .llm import get_backend

    kwargs = {"concurrency": args.concurrency} if args.model.startswith(("openai", "http")) else {}
    return get_backend(args.model, **kwargs)


def _rollout_settings(args, instruction: str, max_tokens: int) -> dict:
    from .prompting import PromptTemplate

    return {
        "shots": args.shots,
        "select": args.select,
        "retrieval_mode": args.retrieval_mode,
        "token_budget": args.token_budget,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens or max_tokens,
        "stop": tuple(args.stop if args.stop is not None else ["\n"]),
        "template": PromptTemplate(
            instruction=args.instruction if args.instruction is not None else instruction or None
        ),
        "chat": args.chat,
    }


def cmd_train(args) -> None:
    from .config import GRPOConfig
    from .library import TrainingFreeGRPO
    from .train import TrainConfig, train

    name, samples, _, reward, instruction, max_tokens = load_task(args)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        group_size=args.group_size,
        seed=args.seed,
        **_rollout_settings(args, instruction, max_tokens),
    )
    grpo_config = None
    if not os.path.exists(args.library):
        changes = {"group_size": args.group_size}
        if args.max_library_size:
            changes["max_library_size"] = args.max_library_size
        grpo_config = GRPOConfig().replace(**changes)
    with TrainingFreeGRPO.open(args.library, grpo_config, seed=args.seed) as grpo, make_backend(args) as backend:
        if grpo.progress:
            print(f"resuming {args.library} after step {grpo.progress['global_step']}", file=sys.stderr)
        metrics_path = args.metrics or f"{args.library}.metrics.jsonl"
        train(backend, samples, reward, grpo, config, metrics_path=metrics_path, task_name=name)
        print(grpo.stats().summary())
        print(f"library: {args.library}   metrics: {metrics_path}   model usage: {backend.usage.to_dict()}")


def cmd_eval(args) -> None:
    from .cli import open_library
    from .evaluate import EvalConfig, evaluate

    name, train_samples, test, reward, instruction, max_tokens = load_task(args)
    config = EvalConfig(k=args.k, seed=args.seed, **_rollout_settings(args, instruction, max_tokens))
    with open_library(args.library) as grpo, make_backend(args) as backend:
        report = evaluate(
            backend,
            test,
            reward,
            {"baseline": None, "library": grpo},
            config,
            train_prompts={s["prompt"] for s in train_samples},
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())


def cmd_demo(args) -> None:
    from .config import GRPOConfig
    from .evaluate import EvalConfig, evaluate
    from .library import TrainingFreeGRPO
    from .llm import get_backend
    from .prompting import PromptTemplate
    from .tasks import get_task
    from .train import TrainConfig, train

    started = time.perf_counter()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # Enough questions that the held-out fifth covers --eval-prompts.
    n = max(5 * args.eval_prompts, 2 * args.train_prompts)
    task = get_task("arithmetic", n=n, seed=args.seed)
    train_samples = task.load("train")[: args.train_prompts]
    test_samples = task.load("test")[: args.eval_prompts]
    # The bundled 135M model answers best as a plain-text completion in the spec's Q/A form.
    template = PromptTemplate(instruction=task.instruction)
    rollout = {"template": template, "chat": False, "stop": ("\n",), "max_tokens": 12, "shots": 3}
    print("[demo] loading the bundled model ...", file=sys.stderr, flush=True)
    with get_backend(args.model) as backend:
        library_path = out / "library.db"
        with TrainingFreeGRPO.open(
            library_path, GRPOConfig(group_size=8, max_library_size=1000), seed=args.seed
        ) as grpo:
            print(
                f"[demo] training on {len(train_samples)} arithmetic prompts, G=8, into {library_path}",
                file=sys.stderr,
                flush=True,
            )
            config = TrainConfig(batch_size=8, group_size=8, temperature=0.7, seed=args.seed, **rollout)
            train(backend, train_samples, task.reward, grpo, config, out / "metrics.jsonl", task_name=task.name)
            print("\n" + grpo.stats().summary() + "\n")
            print(f"[demo] evaluating on {len(test_samples)} held-out prompts ...", file=sys.stderr, flush=True)
            report = evaluate(
                backend,
                test_samples,
                task.reward,
                {"baseline": None, "library": grpo},
                EvalConfig(k=4, batch_size=8, seed=args.seed + 1, **rollout),
                train_prompts={s["prompt"] for s in task.load("train")},
            )
        print(report.table())
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
        print(
            f"\n[demo] done in {time.perf_counter() - started:.0f}s; model usage {backend.usage.to_dict()}; "
            f"files in {out}/"
        )


def cmd_serve_model(args) -> None:
    from .server.model_server import run_model_server

    run_model_server(args.model, args.host, args.port, args.model_name)
