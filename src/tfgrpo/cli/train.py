"""`tfgrpo train`: one training loop whose library update is a strategy: examples (few-shot
experiences by advantage), lessons (paper mode: the critic's semantic advantage), or both in each step."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

from ..core.store import library_label, shown_target
from .common import (
    HINTED,
    agent_args,
    capacity_args,
    check_lesson_path,
    creating,
    executor_args,
    load_task,
    make_backend,
    model_arg,
    new_library_config,
    open_agent,
    open_executor_of,
    open_rollout_log,
    rollout_log_args,
    task_args,
    task_hints,
    template,
)
from .options import add_config_args, add_config_file_args, config_from_args, print_config, resolved_options
from .report import open_run_tracker, result_args


def add_commands(command) -> None:
    from ..loop.config import TrainConfig
    from ..semantic import LessonConfig

    p = command(
        "train",
        cmd_train,
        "Train a library from a reward signal: each step generates a group of rollouts per prompt, scores "
        "them and updates the library by --strategy: examples (few-shot experiences by advantage), lessons "
        "(natural-language lessons from a critic LLM, the paper's semantic advantage), or both in the same step.",
    )
    p.add_argument(
        "--strategy",
        choices=["examples", "lessons", "both"],
        default="examples",
        help="examples: few-shot experience library; lessons: natural-language lessons (paper mode), kept "
        "in the same .db; both: both updates in every step, on the same rollouts",
    )
    p.add_argument("--library", "-l", default="library.db", help="SQLite library (resumes if it exists)")
    capacity_args(p)
    p.add_argument(
        "--metrics",
        default=None,
        help="JSONL file, one line per step (default: LIBRARY.metrics.jsonl; --strategy lessons: "
        "LIBRARY.lessons.metrics.jsonl)",
    )
    p.add_argument(
        "--preset",
        choices=["paper"],
        default=None,
        help="start from the paper's settings (3 epochs, G=5, batch 100, evaluation at temperature 0.3); "
        "flags and the config file still win",
    )
    task_args(p)
    g = p.add_argument_group("model")
    model_arg(g)
    g.add_argument("--critic", default=None, help="backend spec of the critic LLM (default: the policy model)")
    add_config_args(
        p.add_argument_group("training (TrainConfig)"), TrainConfig, aliases={"group_size": ["-G"]}, defaults=HINTED
    )
    executor_args(p)
    agent_args(p)
    rollout_log_args(p)
    add_config_args(
        p.add_argument_group("lessons (LessonConfig; --strategy lessons or both)"),
        LessonConfig,
        aliases={"use_ground_truth": ["--ground-truth"]},
    )
    result_args(p, out=False)
    add_config_file_args(p)


def configs(args, task):
    """The run's `TrainConfig` and `LessonConfig`: the preset (if any), the task's hints, the config
    file and the flags, each over the one before."""
    from ..loop.config import TrainConfig
    from ..semantic import LessonConfig

    train_config = config_from_args(
        TrainConfig, args, hints=task_hints(task), preset=args.preset, template=template(args, task)
    )
    return train_config, config_from_args(LessonConfig, args, preset=args.preset)


def cmd_train(args) -> int | None:
    from ..core.library import TrainingFreeGRPO
    from ..core.store import is_store_target
    from ..learn import ExampleUpdate, LessonUpdate, Update
    from ..llm.base import Backend
    from ..llm.cache import LLMCache
    from ..llm.guidance import check_guidance
    from ..loop import total_steps
    from ..loop.training import check_resume, run_identity, train
    from ..semantic import LessonLibrary

    task = load_task(args, with_samples=not args.print_config)
    config, lesson_config = configs(args, task)
    if args.print_config:
        print(print_config(resolved_options(args, config, lesson_config), args.print_config))
        return 0
    examples = args.strategy in ("examples", "both")
    lessons = args.strategy in ("lessons", "both")
    new_config = new_library_config(args, group_size=config.group_size)  # a library this run creates
    if lessons:
        check_lesson_path(args.library)
    label = library_label(args.library)
    default_metrics = f"{label}.lessons.metrics.jsonl" if args.strategy == "lessons" else None
    metrics_path = args.metrics or default_metrics or f"{label}.metrics.jsonl"
    with ExitStack() as stack:
        grpo = library = None
        if examples:
            grpo_config = creating(args.library, new_config, args)
            grpo = stack.enter_context(TrainingFreeGRPO.open(args.library, grpo_config, seed=config.seed))
        if lessons:
            library = stack.enter_context(LessonLibrary(args.library, max_words=lesson_config.max_words))

        def strategies(critic: Backend | None) -> list[Update]:
            return [
                *([ExampleUpdate(grpo, task_name=task.name)] if grpo is not None else []),
                *([LessonUpdate(library, lesson_config, critic=critic)] if library is not None else []),
            ]

        updates = strategies(None)
        check_resume(updates, run_identity(task.train, config, task.run))  # before saying "resuming"
        for update in updates:
            if update.done():
                what = "" if update.name == "examples" else f"{update.name} in "
                print(f"resuming {what}{shown_target(args.library)} after step {update.done()}", file=sys.stderr)
        total = total_steps(len(task.train), config.batch_size, config.epochs)
        finished = bool(task.train) and min(u.done() for u in updates) >= total
        policy: Backend | None = None
        critic: Backend | None = None
        reward = task.reward
        if not finished:  # a finished run loads no model (`tfgrpo repeat` calls train for every seed)
            executor = stack.enter_context(open_executor_of(args))
            policy = stack.enter_context(make_backend(args.model, config.concurrency, executor))
            check_guidance(policy, config)
            reward = executor.reward(task.reward)
            if args.critic:
                critic = stack.enter_context(make_backend(args.critic, config.concurrency))
        updates = strategies(critic)
        cache = stack.enter_context(LLMCache(args.library)) if is_store_target(args.library) else None
        tracker = stack.enter_context(open_run_tracker(args, "train"))
        agent = open_agent(args, stack) if policy is not None else None
        rollout_log = open_rollout_log(args, args.library, stack) if policy is not None else None
        steps = [] if policy is None else train(
            policy, task.train, reward, updates, config, cache=cache, metrics_path=metrics_path, run=task.run,
            on_step=tracker.on_step, agent=agent, rollout_log=rollout_log, task_name=task.name,
        )  # fmt: skip
        if os.path.exists(args.library):  # (a file, not a database server)
            tracker.log_artifact(args.library)
        if grpo is not None:
            print(grpo.stats().summary())
        if library is not None:
            print(f"Lessons ({task.name}): {len(library)} at version {library.version}")
            print(library.render_list())
        usage = {name: b.usage.to_dict() for name, b in (("policy", policy), ("critic", critic)) if b is not None}
        print(
            f"library: {shown_target(args.library)}   metrics: {metrics_path}   steps run: {len(steps)}   "
            f"cache hits: {sum(m.cache_hits for m in steps)}   model usage: {usage}"
        )
    return None
