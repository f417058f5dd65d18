"""The model-facing commands: demo, train, eval, serve-model."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError


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

    p = command(
        "train",
        cmd_train,
        "Train an experience library (--strategy examples: groups, rewards, advantages, library updates), "
        "LLM-distilled lessons (--strategy lessons, the paper's semantic advantage), or both in turn.",
    )
    p.add_argument(
        "--strategy",
        choices=["examples", "lessons", "both"],
        default="examples",
        help="examples: few-shot experience library; lessons: natural-language lessons (paper mode), kept "
        "in the same .db; both: examples, then lessons, on the same samples",
    )
    _task_args(p)
    _model_args(p)
    _rollout_args(p, temperature=0.7, given=True)
    p.add_argument("--library", "-l", default="library.db", help="SQLite library (resumes if it exists)")
    p.add_argument("--epochs", type=int, default=1, action=_Given)
    p.add_argument(
        "--batch-size", type=int, default=4, action=_Given, help="prompts per step (one library update each)"
    )
    p.add_argument("--group-size", "-G", type=int, default=8, action=_Given, help="rollouts per prompt")
    p.add_argument("--max-library-size", type=int, default=None, help="library capacity (new libraries)")
    p.add_argument(
        "--metrics",
        default=None,
        help="JSONL file for per-step metrics (default: LIBRARY.metrics.jsonl; lessons: LIBRARY.lessons.metrics.jsonl)",
    )
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("lessons (--strategy lessons or both)")
    g.add_argument(
        "--preset",
        choices=["paper"],
        default=None,
        help="start from the paper's settings (3 epochs, G=5, batch 100); flags given explicitly still win",
    )
    g.add_argument("--critic", default=None, help="backend spec of the critic LLM (default: the policy model)")
    g.add_argument("--max-ops-per-query", type=int, default=3, help="most operations one group may propose")
    g.add_argument("--max-words", type=int, default=32, help="longest lesson, in words")
    g.add_argument("--critic-max-tokens", type=int, default=1024, help="longest critic answer")
    g.add_argument("--critic-temperature", type=float, default=0.0, help="temperature of the critic's calls")
    g.add_argument("--task-objective", default="", help="what the task is, told to the critic")
    g.add_argument("--learning-objective", default="", help="what the lessons should achieve, told to the critic")
    g.add_argument(
        "--no-ground-truth",
        action="store_true",
        help="the critic sees no rewards or reference answers, and every group goes on",
    )
    g.add_argument("--placement", choices=["system", "user"], default="system", help="where the lessons go")
    g.add_argument(
        "--validate-margin",
        type=float,
        default=None,
        metavar="M",
        help="validated updates: keep a step's lessons only if their validation reward is >= the old lessons' "
        "minus M (rejected candidates stay in the history as kind 'rejected')",
    )
    g.add_argument(
        "--validation-size",
        type=int,
        default=8,
        metavar="N",
        help="samples of the step's batch in the validation minibatch (--validate-margin)",
    )

    p = command(
        "eval",
        cmd_eval,
        "Compare baseline (no library) against a library on held-out prompts: few-shot examples, lessons, "
        "or both (all conditions on the same prompts and seeds).",
    )
    p.add_argument(
        "--strategy",
        choices=["examples", "lessons", "both", "all"],
        default="examples",
        help="conditions: examples: baseline, library; lessons: baseline, lessons; both: baseline, both "
        "(lessons plus examples); all: baseline, examples, lessons, both",
    )
    _task_args(p)
    _model_args(p)
    _rollout_args(p, temperature=0.3)
    p.add_argument("--library", "-l", default="library.db", help="library to evaluate")
    p.add_argument(
        "--placement", choices=["system", "user"], default="system", help="where the lessons go (lessons, both)"
    )
    p.add_argument("-k", type=int, default=4, help="samples per prompt (Mean@k, Pass@k)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = command(
        "attribute",
        cmd_attribute,
        "Leave-one-out attribution of the lessons (paper mode) on held-out prompts: reward with every lesson "
        "minus reward without lesson i (same prompts and seeds), with a paired bootstrap 95 percent CI, "
        "most helpful first.",
    )
    _task_args(p)
    _model_args(p)
    _rollout_args(p, temperature=0.3)
    p.add_argument("--library", "-l", default="library.db", help="lesson library to attribute")
    p.add_argument("--placement", choices=["system", "user"], default="system", help="where the lessons go")
    p.add_argument("-k", type=int, default=4, help="samples per prompt")
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


class _Given(argparse.Action):
    """Stores the value and notes that the flag was given, so a --preset fills only the others."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        given = set(getattr(namespace, "given", None) or ())
        namespace.given = given | {self.dest}


def _rollout_args(p: argparse.ArgumentParser, temperature: float, given: bool = False) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--shots", type=int, default=3, help="few-shot examples from the library per prompt")
    g.add_argument(
        "--select", choices=["sample", "retrieve"], default="sample", help="examples drawn by advantage or retrieved"
    )
    g.add_argument(
        "--retrieval-mode", choices=["lexical", "semantic", "hybrid"], default="semantic", help="with --select retrieve"
    )
    g.add_argument("--token-budget", type=int, default=512, help="most tokens the examples may take")
    g.add_argument("--temperature", type=float, default=temperature, **({"action": _Given} if given else {}))
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-tokens", type=int, default=None, help="default: the task's hint")
    g.add_argument(
        "--stop",
        action="append",
        default=None,
        help="stop string (repeatable; default: the task's: a newline for arithmetic and --data, a new 'Q:' line "
        "for humaneval and math)",
    )
    g.add_argument("--instruction", default=None, help="instruction before the examples (default: the task's)")


class LoadedTask(NamedTuple):
    """A task's samples and reward, and its generation hints (instruction, max_tokens, stop), which
    apply where the flags do not say otherwise."""

    name: str
    train: list[dict]
    test: list[dict]
    reward: object
    instruction: str
    max_tokens: int
    stop: tuple[str, ...]


def load_task(args) -> LoadedTask:
    """The bundled task or --data file named by the flags, split and limited."""
    from ..tasks import get_task, load_samples, split

    if args.data:
        samples = load_samples(args.data, prompt_field=args.prompt_field, answer_field=args.answer_field)
        train, test = split(samples, args.test_fraction, seed=0)
        loaded = LoadedTask(Path(args.data).stem, train, test, make_reward(args.reward), "", 256, ("\n",))
    else:
        options = dict(_parse_option(item) for item in args.task_option)
        task = get_task(args.task, **options)
        loaded = LoadedTask(
            task.name,
            task.load("train"),
            task.load("test"),
            task.reward,
            task.instruction,
            task.max_tokens,
            task.stop,
        )
    if args.limit:
        loaded = loaded._replace(train=loaded.train[: args.limit], test=loaded.test[: args.limit])
    return loaded


def make_reward(spec: str):
    from .. import rewards

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
    from ..llm import get_backend

    kwargs = {"concurrency": args.concurrency} if args.model.startswith(("openai", "http")) else {}
    return get_backend(args.model, **kwargs)


def _rollout_settings(args, task: LoadedTask) -> dict:
    from ..prompting import PromptTemplate

    return {
        "shots": args.shots,
        "select": args.select,
        "retrieval_mode": args.retrieval_mode,
        "token_budget": args.token_budget,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens or task.max_tokens,
        "stop": tuple(args.stop) if args.stop is not None else task.stop,
        "template": PromptTemplate(
            instruction=args.instruction if args.instruction is not None else task.instruction or None
        ),
        "chat": args.chat,
    }


def cmd_train(args) -> None:
    task = load_task(args)
    with make_backend(args) as backend:
        if args.strategy in ("examples", "both"):
            _train_examples(args, backend, task)
        if args.strategy in ("lessons", "both"):
            _train_lessons(args, backend, task)


def _train_examples(args, backend, task: LoadedTask) -> None:
    from ..core.config import GRPOConfig
    from ..core.library import TrainingFreeGRPO
    from ..loop.train import TrainConfig, train

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        group_size=args.group_size,
        seed=args.seed,
        **_rollout_settings(args, task),
    )
    grpo_config = None
    if not os.path.exists(args.library):
        changes = {"group_size": args.group_size}
        if args.max_library_size:
            changes["max_library_size"] = args.max_library_size
        grpo_config = GRPOConfig().replace(**changes)
    with TrainingFreeGRPO.open(args.library, grpo_config, seed=args.seed) as grpo:
        if grpo.progress:
            print(f"resuming {args.library} after step {grpo.progress['global_step']}", file=sys.stderr)
        metrics_path = args.metrics or f"{args.library}.metrics.jsonl"
        train(backend, task.train, task.reward, grpo, config, metrics_path=metrics_path, task_name=task.name)
        print(grpo.stats().summary())
        print(f"library: {args.library}   metrics: {metrics_path}   model usage: {backend.usage.to_dict()}")


def check_lesson_path(path: str) -> None:
    """Lessons live in SQLite only: refuse a JSON library path before a database is written there."""
    from ..core.formats import is_sqlite_path

    if not is_sqlite_path(path):
        raise ConfigError(f"lessons are kept in an SQLite library (.db, .sqlite); {path} is not one")


def lesson_config(args, task: LoadedTask):
    """The `LessonConfig` of `train --strategy lessons`: the preset (if any), then the flags given."""
    from ..semantic import LessonConfig

    given = getattr(args, "given", None) or set()
    shared = {"epochs": args.epochs, "batch_size": args.batch_size, "group_size": args.group_size}
    shared["temperature"] = args.temperature
    if args.preset:
        shared = {k: v for k, v in shared.items() if k in given}
    rollout = _rollout_settings(args, task)
    del rollout["temperature"]  # in `shared`, so a preset can set it
    settings = {
        **rollout,
        **shared,
        "seed": args.seed,
        "critic_max_tokens": args.critic_max_tokens,
        "critic_temperature": args.critic_temperature,
        "task_objective": args.task_objective,
        "learning_objective": args.learning_objective,
        "max_operations_per_query": args.max_ops_per_query,
        "max_words": args.max_words,
        "use_ground_truth": not args.no_ground_truth,
        "placement": args.placement,
        "concurrency": args.concurrency,
        "validate_margin": args.validate_margin,
        "validation_size": args.validation_size,
    }
    return LessonConfig.preset(args.preset, **settings) if args.preset else LessonConfig(**settings)


def _train_lessons(args, policy, task: LoadedTask) -> None:
    from ..core.library import TrainingFreeGRPO
    from ..llm import get_backend
    from ..semantic import LessonLibrary, LessonTrainer, LLMCache

    check_lesson_path(args.library)
    config = lesson_config(args, task)
    if args.metrics and args.strategy == "lessons":
        metrics_path = args.metrics
    else:
        metrics_path = f"{args.library}.lessons.metrics.jsonl"
    with ExitStack() as stack:
        library = stack.enter_context(LessonLibrary(args.library, max_words=config.max_words))
        cache = stack.enter_context(LLMCache(args.library))
        critic = None
        if args.critic:
            kwargs = {"concurrency": args.concurrency} if args.critic.startswith(("openai", "http")) else {}
            critic = stack.enter_context(get_backend(args.critic, **kwargs))
        # "both": the examples just trained go into the lesson rollouts too, as `eval`'s "both" condition has them.
        examples = stack.enter_context(TrainingFreeGRPO.open(args.library)) if args.strategy == "both" else None
        if library.progress:
            print(f"resuming lessons in {args.library} after step {library.progress['global_step']}", file=sys.stderr)
        trainer = LessonTrainer(policy, task.reward, library, config, critic=critic, cache=cache, examples=examples)
        steps = trainer.train(task.train, metrics_path=metrics_path)
        print(f"Lessons ({task.name}): {len(library)} at version {library.version}")
        print(library.render_list())
        usage = {"policy": policy.usage.to_dict()}
        if critic is not None:
            usage["critic"] = critic.usage.to_dict()
        hits = sum(m.cache_hits for m in steps)
        print(
            f"library: {args.library}   metrics: {metrics_path}   steps run: {len(steps)}   "
            f"cache hits: {hits}   model usage: {usage}"
        )


def cmd_eval(args) -> None:
    from ..errors import LibraryNotFoundError
    from ..loop.evaluate import EvalConfig, LessonCondition, evaluate, print_progress
    from ..semantic import LessonLibrary
    from . import open_library

    task = load_task(args)
    config = EvalConfig(k=args.k, seed=args.seed, **_rollout_settings(args, task))
    strategy = args.strategy
    examples = strategy in ("examples", "both", "all")
    lessons = strategy in ("lessons", "both", "all")
    if lessons:
        check_lesson_path(args.library)
    if lessons and not os.path.exists(args.library):
        raise LibraryNotFoundError(
            f"no library at {args.library} (train one with `tfgrpo train --strategy lessons --library {args.library}`)"
        )
    with ExitStack() as stack:
        grpo = stack.enter_context(open_library(args.library)) if examples else None
        library = stack.enter_context(LessonLibrary(args.library)) if lessons else None
        if library is not None and not len(library):
            print(f"warning: {args.library} holds no lessons (version {library.version})", file=sys.stderr)
        backend = stack.enter_context(make_backend(args))
        conditions: dict = {"baseline": None}
        if strategy == "examples":
            conditions["library"] = grpo
        if strategy == "all":
            conditions["examples"] = grpo
        if strategy in ("lessons", "all"):
            conditions["lessons"] = LessonCondition(library, placement=args.placement)
        if strategy in ("both", "all"):
            conditions["both"] = LessonCondition(library, examples=grpo, placement=args.placement)
        train_prompts = {s["prompt"] for s in task.train}
        report = evaluate(
            backend, task.test, task.reward, conditions, config, train_prompts=train_prompts, progress=print_progress
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())


def cmd_attribute(args) -> None:
    from ..errors import LibraryNotFoundError
    from ..loop.evaluate import EvalConfig, print_progress
    from ..semantic import LessonLibrary, attribute_lessons

    check_lesson_path(args.library)
    if not os.path.exists(args.library):
        raise LibraryNotFoundError(
            f"no library at {args.library} (train one with `tfgrpo train --strategy lessons --library {args.library}`)"
        )
    task = load_task(args)
    config = EvalConfig(k=args.k, seed=args.seed, **_rollout_settings(args, task))
    with LessonLibrary(args.library) as library, make_backend(args) as backend:
        if not len(library):
            raise ConfigError(f"{args.library} holds no lessons (version {library.version}); nothing to attribute")
        report = attribute_lessons(
            backend, task.test, task.reward, library, config, placement=args.placement, progress=print_progress
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())


def cmd_demo(args) -> None:
    from ..core.config import GRPOConfig
    from ..core.library import TrainingFreeGRPO
    from ..llm import get_backend
    from ..loop.evaluate import EvalConfig, evaluate, print_progress
    from ..loop.train import TrainConfig, train
    from ..prompting import PromptTemplate
    from ..tasks import get_task

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
                progress=print_progress,
            )
        print(report.table())
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
        print(
            f"\n[demo] done in {time.perf_counter() - started:.0f}s; model usage {backend.usage.to_dict()}; "
            f"files in {out}/"
        )


def cmd_serve_model(args) -> None:
    from ..server.model_server import run_model_server

    run_model_server(args.model, args.host, args.port, args.model_name)
