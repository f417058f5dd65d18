"""`tfgrpo eval` (baseline against a library) and `tfgrpo attribute` (leave-one-out over the lessons)."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .common import (
    agent_args,
    load_task,
    make_backend,
    model_arg,
    open_agent,
    open_library,
    require_lesson_library,
    task_args,
    task_hints,
    template,
)
from .options import add_config_args, add_config_file_args, config_from_args, print_config, resolved_options
from .report import finish_result, result_args

if TYPE_CHECKING:
    from ..loop.evaluate import ConditionResult


def add_commands(command) -> None:
    from ..loop.evaluate import EvalConfig
    from ..semantic import LessonConfig

    def common(p) -> None:
        task_args(p)
        model_arg(p.add_argument_group("model"))
        add_config_args(p.add_argument_group("evaluation (EvalConfig)"), EvalConfig)
        add_config_args(p, LessonConfig, only=["placement"])
        agent_args(p)
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        result_args(p)
        add_config_file_args(p)

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
    p.add_argument("--library", "-l", default="library.db", help="library to evaluate")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also evaluate the fair baselines: zero-shot in chat and text mode (each with and without "
        "--stop-after-content), labelled few-shot (reference answers) and bootstrapped few-shot (first "
        "successful zero-shot rollouts on training prompts); libraries are compared with the strongest",
    )
    common(p)

    p = command(
        "attribute",
        cmd_attribute,
        "Leave-one-out attribution of the lessons (paper mode) on held-out prompts: reward with every lesson "
        "minus reward without lesson i (same prompts and seeds), with a paired bootstrap 95 percent CI, "
        "most helpful first.",
    )
    p.add_argument("--library", "-l", default="library.db", help="lesson library to attribute")
    common(p)


def eval_config(args, task):
    """The `EvalConfig` of the flags and config file, with the task's hints where neither set a field."""
    from ..loop.evaluate import EvalConfig

    return config_from_args(EvalConfig, args, hints=task_hints(task), template=template(args, task))


def library_conditions(args, stack: ExitStack) -> dict:
    """The conditions of --strategy, with their libraries opened on `stack` (no baseline among them)."""
    from ..loop.evaluate import LessonCondition
    from ..semantic import LessonLibrary

    strategy = args.strategy
    examples = strategy in ("examples", "both", "all")
    lessons = strategy in ("lessons", "both", "all")
    if lessons:
        require_lesson_library(args.library)
    grpo = stack.enter_context(open_library(args.library)) if examples else None
    library = stack.enter_context(LessonLibrary(args.library)) if lessons else None
    if library is not None and not len(library):
        print(f"warning: {args.library} holds no lessons (version {library.version})", file=sys.stderr)
    conditions: dict = {}
    if strategy == "examples":
        conditions["library"] = grpo
    if strategy == "all":
        conditions["examples"] = grpo
    if library is not None and strategy in ("lessons", "all"):
        conditions["lessons"] = LessonCondition(library, placement=args.placement)
    if library is not None and strategy in ("both", "all"):
        conditions["both"] = LessonCondition(library, examples=grpo, placement=args.placement)
    return conditions


def score(task, config, backend, conditions: dict, agent=None) -> list[ConditionResult]:
    """`score_conditions` on the task's held-out samples, checked against its training prompts."""
    from ..loop.evaluate import score_conditions, show_progress

    train_prompts = {s["prompt"] for s in task.train}
    return score_conditions(
        backend, task.test, task.reward, conditions, config, train_prompts, show_progress(), agent=agent
    )


def score_baselines(args, task, config, backend, agent=None) -> list[ConditionResult]:
    """The baselines, which do not depend on the library: zero-shot as configured ("baseline"), and with
    --baselines the fair ones (`fair_baselines`)."""
    from ..loop.evaluate import fair_baselines

    conditions: dict = {"baseline": None}
    if args.baselines:
        conditions.update(
            fair_baselines(backend, task.train, task.reward, config, shots=config.shots or 3, agent=agent)
        )
    return score(task, config, backend, conditions, agent)


def cmd_eval(args) -> int | None:
    from ..loop.evaluate import report_of

    task = load_task(args)
    config = eval_config(args, task)
    if args.print_config:
        print(print_config(resolved_options(args, config), args.print_config))
        return 0
    with ExitStack() as stack:
        conditions = library_conditions(args, stack)
        backend = stack.enter_context(make_backend(args.model, config.concurrency))
        agent = open_agent(args, stack)
        baselines = score_baselines(args, task, config, backend, agent)
        report = report_of([*baselines, *score(task, config, backend, conditions, agent)], task.test, config)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    finish_result(args, report.to_dict(), "eval", args.library)
    return None


def cmd_attribute(args) -> int | None:
    from ..loop.attribution import attribute_lessons
    from ..loop.evaluate import show_progress
    from ..semantic import LessonLibrary

    task = load_task(args)
    config = eval_config(args, task)
    if args.print_config:
        print(print_config(resolved_options(args, config), args.print_config))
        return 0
    require_lesson_library(args.library)
    with ExitStack() as stack:
        library = stack.enter_context(LessonLibrary(args.library))
        if not len(library):
            raise ConfigError(f"{args.library} holds no lessons (version {library.version}); nothing to attribute")
        backend = stack.enter_context(make_backend(args.model, config.concurrency))
        report = attribute_lessons(
            backend,
            task.test,
            task.reward,
            library,
            config,
            placement=args.placement,
            progress=show_progress(),
            agent=open_agent(args, stack),
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    finish_result(args, report.to_dict(), "attribute", args.library)
    return None
