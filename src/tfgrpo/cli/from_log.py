"""`tfgrpo learn-from-log`: a library learns from the prompts, responses and rewards of a log you already
have, through the update strategies `train` uses, without running a prompt through a model again."""

from __future__ import annotations

import sys
from contextlib import ExitStack

from .common import (
    capacity_args,
    check_lesson_path,
    creating,
    library_arg,
    make_backend,
    new_library_config,
    open_rollout_log,
    rollout_log_args,
)
from .options import add_config_args, add_config_file_args, config_from_args, print_config, resolved_options


def add_commands(command) -> None:
    from ..loop.from_log import FromLogConfig
    from ..semantic import LessonConfig

    p = command(
        "learn-from-log",
        cmd_learn_from_log,
        'Learn from a log of rollouts you already have (JSON lines: {"prompt" or "messages", "response", "reward", '
        'optional "group", "metadata", "timestamp", "sample"}, or the OpenAI request/response shape a logging proxy '
        "writes): records of one prompt (or group) within a window of lines form a group, and each window goes "
        "through --strategy as a training step does. Streams files of any size; resumable (run it again); a "
        "malformed line is reported with its number and skipped (--strict: refused).",
    )
    p.add_argument("log", help="the log file (.jsonl)")
    library_arg(p, help="the library to learn into: an SQLite file (.db) or a postgresql:// URL (made if missing)")
    p.add_argument(
        "--strategy",
        choices=["examples", "lessons", "both"],
        default="examples",
        help="examples: the rollouts that beat their group go into the experience library; lessons: the critic "
        "turns each window's groups with signal into lessons (paper mode); both",
    )
    p.add_argument("--critic", default="local", help="backend spec of the critic LLM (--strategy lessons, both)")
    capacity_args(p)
    add_config_args(p.add_argument_group("reading the log (FromLogConfig)"), FromLogConfig)
    rollout_log_args(p)
    add_config_args(
        p.add_argument_group("lessons (LessonConfig; --strategy lessons or both)"),
        LessonConfig,
        # (what validates or places lessons in the policy's prompt: a log brings no policy to roll out)
        exclude=("validate_margin", "validation_size", "eval_temperature", "placement"),
        aliases={"use_ground_truth": ["--ground-truth"]},
    )
    add_config_file_args(p)


def cmd_learn_from_log(args) -> int | None:
    from ..core.library import TrainingFreeGRPO
    from ..learn import ExampleUpdate, LessonUpdate, Update
    from ..llm.cache import LLMCache
    from ..loop.from_log import FromLogConfig, learn_from_log
    from ..semantic import LessonConfig, LessonLibrary

    config = config_from_args(FromLogConfig, args)
    lesson_config = config_from_args(LessonConfig, args)
    if args.print_config:
        print(print_config(resolved_options(args, config, lesson_config), args.print_config))
        return 0
    check_lesson_path(args.library)  # (the position of the log is kept in a database)
    new_config = new_library_config(args)  # a library this run creates
    with ExitStack() as stack:
        updates: list[Update] = []
        if args.strategy in ("examples", "both"):
            grpo_config = creating(args.library, new_config, args)
            grpo = stack.enter_context(TrainingFreeGRPO.open(args.library, grpo_config))
            updates.append(ExampleUpdate(grpo, task_name=config.task))
        cache = None
        if args.strategy in ("lessons", "both"):
            library = stack.enter_context(LessonLibrary(args.library, max_words=lesson_config.max_words))
            critic = stack.enter_context(make_backend(args.critic, 16))
            cache = stack.enter_context(LLMCache(args.library))
            updates.append(LessonUpdate(library, lesson_config, critic=critic))
        rollout_log = open_rollout_log(args, args.library, stack)
        report = learn_from_log(args.log, updates, config, rollout_log=rollout_log, cache=cache)
        print(report.summary())
        for update in updates:
            if update.name == "examples":
                print(update.library.stats().summary())  # type: ignore[attr-defined]
            else:
                lessons = update.library  # type: ignore[attr-defined]
                print(f"Lessons: {len(lessons)} at version {lessons.version}")
                print(lessons.render_list())
    if report.bad_count:
        print(f"{report.bad_count} malformed lines were skipped (see the warnings above)", file=sys.stderr)
    return None
