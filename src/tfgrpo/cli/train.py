"""`tfgrpo train`: examples, lessons (paper mode), or both."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

from .common import (
    Given,
    LoadedTask,
    check_lesson_path,
    load_task,
    make_backend,
    model_args,
    rollout_args,
    rollout_settings,
    task_args,
)


def add_commands(command) -> None:
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
    task_args(p)
    model_args(p)
    rollout_args(p, temperature=0.7, given=True)
    p.add_argument("--library", "-l", default="library.db", help="SQLite library (resumes if it exists)")
    p.add_argument("--epochs", type=int, default=1, action=Given)
    p.add_argument("--batch-size", type=int, default=4, action=Given, help="prompts per step (one library update each)")
    p.add_argument("--group-size", "-G", type=int, default=8, action=Given, help="rollouts per prompt")
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


def cmd_train(args) -> None:
    task = load_task(args)
    with make_backend(args.model, args.concurrency) as backend:
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
        **rollout_settings(args, task),
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


def lesson_config(args, task: LoadedTask):
    """The `LessonConfig` of `train --strategy lessons`: the preset (if any), then the flags given."""
    from ..semantic import LessonConfig

    given = getattr(args, "given", None) or set()
    shared = {"epochs": args.epochs, "batch_size": args.batch_size, "group_size": args.group_size}
    shared["temperature"] = args.temperature
    if args.preset:
        shared = {k: v for k, v in shared.items() if k in given}
    rollout = rollout_settings(args, task)
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
            critic = stack.enter_context(make_backend(args.critic, args.concurrency))
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
