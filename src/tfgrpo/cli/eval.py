"""`tfgrpo eval` (baseline against a library) and `tfgrpo attribute` (leave-one-out over the lessons)."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack

from ..errors import ConfigError
from .common import (
    load_task,
    make_backend,
    model_args,
    open_library,
    require_lesson_library,
    rollout_args,
    rollout_settings,
    task_args,
)


def add_commands(command) -> None:
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
    task_args(p)
    model_args(p)
    rollout_args(p, temperature=0.3)
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
    task_args(p)
    model_args(p)
    rollout_args(p, temperature=0.3)
    p.add_argument("--library", "-l", default="library.db", help="lesson library to attribute")
    p.add_argument("--placement", choices=["system", "user"], default="system", help="where the lessons go")
    p.add_argument("-k", type=int, default=4, help="samples per prompt")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_eval(args) -> None:
    from ..loop.evaluate import EvalConfig, LessonCondition, evaluate, print_progress
    from ..semantic import LessonLibrary

    task = load_task(args)
    config = EvalConfig(k=args.k, seed=args.seed, **rollout_settings(args, task))
    strategy = args.strategy
    examples = strategy in ("examples", "both", "all")
    lessons = strategy in ("lessons", "both", "all")
    if lessons:
        require_lesson_library(args.library)
    with ExitStack() as stack:
        grpo = stack.enter_context(open_library(args.library)) if examples else None
        library = stack.enter_context(LessonLibrary(args.library)) if lessons else None
        if library is not None and not len(library):
            print(f"warning: {args.library} holds no lessons (version {library.version})", file=sys.stderr)
        backend = stack.enter_context(make_backend(args.model, args.concurrency))
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
    from ..loop.evaluate import EvalConfig, print_progress
    from ..semantic import LessonLibrary, attribute_lessons

    require_lesson_library(args.library)
    task = load_task(args)
    config = EvalConfig(k=args.k, seed=args.seed, **rollout_settings(args, task))
    with LessonLibrary(args.library) as library, make_backend(args.model, args.concurrency) as backend:
        if not len(library):
            raise ConfigError(f"{args.library} holds no lessons (version {library.version}); nothing to attribute")
        report = attribute_lessons(
            backend, task.test, task.reward, library, config, placement=args.placement, progress=print_progress
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
