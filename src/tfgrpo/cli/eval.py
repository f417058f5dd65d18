"""`tfgrpo eval` (baseline against a library) and `tfgrpo attribute` (leave-one-out over the lessons)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING

from ..core.store import shown_target
from ..errors import ConfigError
from .common import (
    HINTED,
    agent_args,
    check_output,
    executor_args,
    load_task,
    make_backend,
    model_arg,
    open_agent,
    open_executor_of,
    open_library,
    open_rollout_log,
    require_lesson_library,
    rollout_log_args,
    task_args,
    task_hints,
    template,
)
from .options import (
    add_config_args,
    add_config_file_args,
    config_from_args,
    explicit,
    print_config,
    resolved_options,
)
from .report import finish_result, result_args

if TYPE_CHECKING:
    from ..loop.evaluate import ConditionResult


def add_commands(command) -> None:
    from ..loop.evaluate import EvalConfig
    from ..semantic import LessonConfig

    def common(p) -> None:
        task_args(p)
        model_arg(p.add_argument_group("model"))
        add_config_args(p.add_argument_group("evaluation (EvalConfig)"), EvalConfig, defaults=HINTED)
        executor_args(p)
        add_config_args(p, LessonConfig, only=["placement"])
        agent_args(p)
        rollout_log_args(p)
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        result_args(p)
        add_config_file_args(p)

    p = command(
        "eval",
        cmd_eval,
        "Compare a library (few-shot examples, lessons, or both) with the strongest of the simple things a "
        "user could do instead (--baselines) on held-out prompts, all on the same prompts and seeds.",
    )
    p.add_argument(
        "--strategy",
        choices=["examples", "lessons", "both", "all"],
        default="examples",
        help="the library's conditions: examples: library (its few-shot examples); lessons: lessons; both: "
        "both (lessons plus examples); all: examples, lessons, both. Each is compared with the strongest baseline",
    )
    p.add_argument("--library", "-l", default="library.db", help="library to evaluate")
    p.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate the fair baselines: zero-shot in chat and text mode (each with and without "
        "--stop-after-content), labelled few-shot (reference answers) and bootstrapped few-shot (first "
        "successful zero-shot rollouts on training prompts), and compare the library with the strongest. "
        "--no-baselines, for a quick look: only zero-shot as --chat and --stop-after-content say",
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

    config = config_from_args(EvalConfig, args, hints=task_hints(task), template=template(args, task))
    if "seeds" in explicit(args) and len(config.seeds) == 1:
        print(
            f"one evaluation seed ({config.seeds[0]}): no spread across seeds. --seeds takes the seeds' values: "
            "--seeds 0 1 2 evaluates three times",
            file=sys.stderr,
        )
    return config


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
        print(f"warning: {shown_target(args.library)} holds no lessons (version {library.version})", file=sys.stderr)
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


def score(task, config, backend, conditions: dict, agent=None, record=None) -> list[ConditionResult]:
    """`score_conditions` on the task's held-out samples, checked against its training prompts."""
    from ..loop.evaluate import score_conditions, show_progress

    train_prompts = {s["prompt"] for s in task.train}
    return score_conditions(
        backend, task.test, task.reward, conditions, config, train_prompts, show_progress(), agent=agent, record=record
    )


def score_baselines(args, task, config, backend, agent=None, record=None) -> list[ConditionResult]:
    """The baselines, which do not depend on the library: the fair ones (`fair_baselines`, among them
    zero-shot as configured), or with --no-baselines zero-shot as configured alone."""
    from ..loop.evaluate import fair_baselines, zero_shot_name

    if args.baselines:
        conditions: dict = fair_baselines(
            backend, task.train, task.reward, config, shots=config.shots or 3, agent=agent, record=record
        )
    else:
        conditions = {zero_shot_name(config.chat, config.stop_after_content): None}
    return score(task, config, backend, conditions, agent, record)


def recorder(args, source: str, task, stack):
    """The rollout log's recorder of one evaluation (a run of its own), or None (--no-rollout-log)."""
    import uuid

    from ..learn.rollout_log import Recorder

    log = open_rollout_log(args, args.library, stack)
    return None if log is None else Recorder(log, source, uuid.uuid4().hex[:12], task=task.name)


def cmd_eval(args) -> int | None:
    from ..llm.guidance import check_guidance
    from ..loop.evaluate import report_of

    check_output(args.out, "--out", args.library, args.data, args.eval_data)
    task = load_task(args, with_samples=not args.print_config)
    config = eval_config(args, task)
    if args.print_config:
        print(print_config(resolved_options(args, config), args.print_config))
        return 0
    with ExitStack() as stack:
        conditions = library_conditions(args, stack)
        executor = stack.enter_context(open_executor_of(args))
        backend = stack.enter_context(make_backend(args.model, config.concurrency, executor))
        check_guidance(backend, config)
        task = task._replace(reward=executor.reward(task.reward))
        agent = open_agent(args, stack)
        record = recorder(args, "eval", task, stack)
        baselines = score_baselines(args, task, config, backend, agent, record)
        scored = score(task, config, backend, conditions, agent, record)
        report = report_of([*baselines, *scored], task.test, config)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    if not args.baselines:
        print("(--no-baselines: compared with zero-shot as configured only; by default with the strongest of "
              "the fair baselines)", file=sys.stderr)  # fmt: skip
    finish_result(args, report.to_dict(), "eval", args.library)
    return None


def cmd_attribute(args) -> int | None:
    from ..loop.attribution import attribute_lessons
    from ..loop.evaluate import show_progress
    from ..semantic import LessonLibrary

    check_output(args.out, "--out", args.library, args.data, args.eval_data)
    task = load_task(args, with_samples=not args.print_config)
    config = eval_config(args, task)
    if args.print_config:
        print(print_config(resolved_options(args, config), args.print_config))
        return 0
    require_lesson_library(args.library)
    with ExitStack() as stack:
        library = stack.enter_context(LessonLibrary(args.library))
        executor = stack.enter_context(open_executor_of(args))
        backend = stack.enter_context(make_backend(args.model, config.concurrency, executor))
        task = task._replace(reward=executor.reward(task.reward))
        if not len(library):
            raise ConfigError(f"{args.library} holds no lessons (version {library.version}); nothing to attribute")
        report = attribute_lessons(
            backend,
            task.test,
            task.reward,
            library,
            config,
            placement=args.placement,
            progress=show_progress(),
            agent=open_agent(args, stack),
            record=recorder(args, "attribute", task, stack),
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    finish_result(args, report.to_dict(), "attribute", args.library)
    return None
