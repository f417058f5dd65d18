"""`tfgrpo continual`: a library trained on domains in sequence (or interleaved), every domain's held-out
prompts evaluated after every phase, beside the baselines that learn from the same stream; the accuracy
matrix and the continual-learning figures (average accuracy, backward and forward transfer) with CIs
across training seeds (`tfgrpo.loop.continual`)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .common import (
    HINTED,
    capacity_args,
    check_lesson_path,
    creating,
    load_task,
    make_backend,
    model_arg,
    new_library_config,
    positive_int,
    seed_value,
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
        "continual",
        cmd_continual,
        "Continual and multi-domain learning, measured: train a library on the domains one after another (a "
        "phase per domain, or --schedule mixed), evaluate the held-out prompts of every domain before training "
        "and after every phase, beside zero-shot, bootstrapped k-shot (fixed) and the same successes retrieved "
        "per prompt (knn), all on the same prompts and seeds; write the accuracy matrix R[phase][domain] and the "
        "average accuracy, backward and forward transfer (GEM), each with a t 95%% CI across training seeds. "
        "Rerun the same command to resume.",
    )
    p.add_argument("--domains", default=None, help="the domains, in the order learned: A,B,C (default: all, as met)")
    p.add_argument("--schedule", choices=["phases", "mixed"], default="phases", help="a phase per domain, or mixed")
    p.add_argument("--seeds", type=seed_value, nargs="+", default=[0, 1, 2], help="training seeds' values, e.g. 0 1 2")
    p.add_argument("--out", default="continual-out", help="folder of the results (OUT/continual.json) and evaluations")
    p.add_argument(
        "--library",
        "-l",
        default=None,
        help="the library: LIB becomes LIB-seedN per training seed (default: OUT/library.db)",
    )
    p.add_argument("--name", default="library", help="what the library condition is called in the results")
    p.add_argument(
        "--strategy",
        choices=["examples", "lessons", "both"],
        default="examples",
        help="the library condition: its few-shot examples, its lessons (paper mode), or both",
    )
    p.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the baselines fixed and knn (zero-shot always: it is the row before training)",
    )
    p.add_argument("--baselines-only", action="store_true", help="score the baselines alone (no library is trained)")
    p.add_argument(
        "--baselines-dir",
        default=None,
        help="folder of the baselines' pools and scores, reused by every run made on the same prompts and seeds "
        "(default: OUT/baselines); give several runs the same one to score the baselines once",
    )
    capacity_args(p)
    task_args(p, default="multidomain")  # the bundled task whose samples carry a domain
    g = p.add_argument_group("model")
    model_arg(g)
    g.add_argument("--critic", default=None, help="backend spec of the critic LLM (default: the policy model)")
    add_config_args(
        p.add_argument_group("training (TrainConfig; the prompting is the evaluation's too)"),
        TrainConfig,
        exclude=["seed", "active", "active_min", "active_budget"],  # phases are trained uniformly (train --active)
        aliases={"group_size": ["-G"]},
        defaults=HINTED,
    )
    g = p.add_argument_group("evaluation")
    g.add_argument("-k", type=positive_int, default=4, help="samples per held-out prompt")
    g.add_argument("--test-temperature", type=float, default=0.3, help="sampling temperature of the evaluation")
    g.add_argument(
        "--test-seed", type=seed_value, default=1234, help="seed of the evaluation's sampling (every condition)"
    )
    g.add_argument("--test-batch-size", type=positive_int, default=8, help="held-out prompts per generation call")
    add_config_args(p.add_argument_group("lessons (LessonConfig; --strategy lessons or both)"), LessonConfig)
    result_args(p, out=False)
    add_config_file_args(p)


BASELINES = ("zero-shot", "fixed", "knn")
"""The conditions every continual run scores beside its library (their names are taken)."""


def seed_library(path: str, seed: int) -> str:
    """LIB-seedN: the library of one training seed, beside LIB; in PostgreSQL, the schema of LIB's
    (`library` when it names none) with `_seedN` added, in the same database."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from ..core.store import is_postgres_url

    if is_postgres_url(path):
        parts = urlsplit(path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), "library")
        query = [(k, v) for k, v in query if k != "schema"] + [("schema", f"{schema}_seed{seed}")]
        return urlunsplit(parts._replace(query=urlencode(query)))
    base = Path(path)
    return str(base.with_name(f"{base.stem}-seed{seed}{base.suffix}"))


def claim_out(out: Path, run: dict) -> None:
    """Keep in OUT what run its files belong to (its seeds aside, which a rerun may add to); refuse another
    run's, whose scores and phase evaluations it would write over."""
    from ..core.files import atomic_write, read_saved
    from ..errors import ConfigError

    path = out / "continual-run.json"
    saved = read_saved(path)
    if saved is not None and saved != run:
        changed = ", ".join(sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k)))
        raise ConfigError(
            f"{out} holds the results of another continual run (it differs in: {changed}); rerun with its settings "
            "to resume it, or give this one another --out"
        )
    if saved is None:
        atomic_write(path, lambda f: json.dump(run, f, indent=1))


def run_source(args, task, plan) -> dict:
    """What the scores of a run come from besides its plan and prompting: the model, the reward and the
    reference answers (kept with every saved scoring, so a rerun with another is scored again)."""
    import hashlib

    answers = hashlib.sha256()
    for sample in (*(s for _, samples in plan.phases for s in samples), *plan.test):
        answers.update(json.dumps([str(sample.get("id", "")), sample.get("answer")], default=str).encode())
    return {
        "model": args.model,
        "reward": args.reward or f"{task.name}'s own",
        "data": task.run,
        "answers": answers.hexdigest()[:16],
    }


def cmd_continual(args) -> int | None:
    import dataclasses
    import functools

    import numpy as np

    from ..core.files import atomic_write, output_folder
    from ..core.library import TrainingFreeGRPO
    from ..core.store import is_store_target, shown_target, store_exists
    from ..errors import ConfigError
    from ..learn import ExampleUpdate, LessonUpdate, Update
    from ..llm.cache import LLMCache
    from ..llm.guidance import check_guidance
    from ..loop import Progress
    from ..loop.config import TrainConfig
    from ..loop.continual import (
        Evaluator,
        baseline_config,
        by_domain,
        make_plan,
        matrix,
        phase_batches,
        run_baselines,
        run_identity,
        run_library,
        summarise,
        table,
    )
    from ..loop.evaluate import EvalConfig, show_progress
    from ..loop.training import check_resume
    from ..semantic import LessonConfig, LessonLibrary

    if not args.seeds or len(set(args.seeds)) < len(args.seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, args.seeds))}: give each training seed once")
    if not args.name or args.name in BASELINES:
        raise ConfigError(f"--name {args.name!r}: name the library condition, other than {', '.join(BASELINES)}")
    if not args.baselines and args.baselines_only:
        raise ConfigError("--no-baselines and --baselines-only: one or the other")
    out = Path(args.out)
    base_dir = Path(args.baselines_dir) if args.baselines_dir else out / "baselines"
    if base_dir.resolve() == out.resolve() and not args.baselines_only:  # both keep seedN/phaseP.json
        raise ConfigError(f"--baselines-dir {base_dir} is --out: give the baselines a folder of their own")
    library_path = args.library or str(out / "library.db")
    if not args.baselines_only and args.strategy != "examples":
        check_lesson_path(library_path)
    task = load_task(argparse.Namespace(**{**vars(args), "limit": None}), with_samples=not args.print_config)
    if args.print_config:
        config = config_from_args(TrainConfig, args, hints=task_hints(task), template=template(args, task))
        print(print_config(resolved_options(args, config, config_from_args(LessonConfig, args)), args.print_config))
        return None
    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    if domains is not None and (not domains or len(set(domains)) < len(domains)):
        raise ConfigError(f"--domains {args.domains!r}: name each domain once, A,B,C")
    plan = make_plan(
        by_domain(task.train, domains, args.limit, "training data"),
        by_domain(task.test, domains, args.limit, "held-out data"),
        args.schedule,
    )
    config = config_from_args(TrainConfig, args, hints=task_hints(task), template=template(args, task))
    lesson_config = config_from_args(LessonConfig, args)
    rollout = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in EVAL_FIELDS}
    eval_config = EvalConfig(
        **rollout, k=args.k, temperature=args.test_temperature, seed=args.test_seed, batch_size=args.test_batch_size
    )
    new_library = new_library_config(args, group_size=config.group_size)
    output_folder(out)
    output_folder(base_dir, "--baselines-dir")

    def open_seed(seed: int, opened: ExitStack, critic=None) -> tuple[Any, Any, list[Update]]:
        """Seed `seed`'s libraries (made if missing) and the updates that train them."""
        path = seed_library(library_path, seed)
        grpo = lessons = None
        if args.strategy in ("examples", "both"):
            grpo_config = creating(path, new_library, args)
            grpo = opened.enter_context(TrainingFreeGRPO.open(path, grpo_config, seed=seed))
        if args.strategy in ("lessons", "both"):
            lessons = opened.enter_context(LessonLibrary(path, max_words=lesson_config.max_words))
        updates: list[Update] = [
            *([ExampleUpdate(grpo, task_name=task.name)] if grpo is not None else []),
            *([LessonUpdate(lessons, lesson_config, critic=critic)] if lessons is not None else []),
        ]
        return grpo, lessons, updates

    # Before any model is called: a library trained by another run, or one that cannot be read, is refused
    # now, not after the baselines were scored.
    if not args.baselines_only:
        for seed in args.seeds:
            if store_exists(seed_library(library_path, seed)):
                with ExitStack() as opened:
                    check_resume(open_seed(seed, opened)[2], run_identity(plan, dataclasses.replace(config, seed=seed)))
    source = run_source(args, task, plan)
    claim_out(out, {
        "plan": plan.fingerprint(),
        "source": source,
        # (the seed and how many calls are in flight change no result)
        "train": json.loads(
            json.dumps(dataclasses.asdict(dataclasses.replace(config, seed=0, concurrency=1)), default=str)
        ),
        "eval": json.loads(json.dumps(dataclasses.replace(eval_config, concurrency=1).to_dict(), default=str)),
        "strategy": None if args.baselines_only else args.strategy,
        "name": None if args.baselines_only else args.name,
        "library": None if args.baselines_only else shown_target(library_path),
    })  # fmt: skip
    matrices: dict[str, dict[int, np.ndarray]] = {}
    with ExitStack() as stack:
        policy = stack.enter_context(make_backend(args.model, config.concurrency))
        check_guidance(policy, config)
        critic = stack.enter_context(make_backend(args.critic, config.concurrency)) if args.critic else None
        tracker = stack.enter_context(open_run_tracker(args, "continual"))
        evaluator = Evaluator(policy, task.reward, plan, show_progress(), source=source)
        zero = evaluator.rows(
            base_dir / "zero-shot.json", lambda: {"zero-shot": (None, baseline_config(eval_config))}, {}
        )["zero-shot"]
        phases = len(plan.phases)
        matrices["zero-shot"] = {s: matrix([zero] * (phases + 1), plan) for s in args.seeds}
        for seed in args.seeds:
            seed_config = dataclasses.replace(config, seed=seed)
            if args.baselines or args.baselines_only:
                (base_dir / f"seed{seed}").mkdir(parents=True, exist_ok=True)
                pool_cache = stack.enter_context(LLMCache(str(base_dir / f"seed{seed}" / "cache.db")))
                rows = run_baselines(
                    evaluator, policy, seed_config, eval_config, base_dir / f"seed{seed}",
                    retrieval_mode=config.retrieval_mode, cache=pool_cache,
                )  # fmt: skip
                for name, scored in rows.items():
                    filled = [zero if r is None else r for r in scored]
                    matrices.setdefault(name, {})[seed] = matrix([zero, *filled], plan)
            if args.baselines_only:
                continue
            path = seed_library(library_path, seed)
            output_folder(Path(path).parent, "--library")
            (out / f"seed{seed}").mkdir(parents=True, exist_ok=True)
            with ExitStack() as opened:
                grpo, lessons, updates = open_seed(seed, opened, critic)
                condition = functools.partial(library_condition, grpo, lessons, lesson_config.placement)
                cache = opened.enter_context(LLMCache(path)) if is_store_target(path) else None
                steps = sum(len(phase_batches(s, seed_config, p)) for p, (_, s) in enumerate(plan.phases, start=1))
                display = opened.enter_context(
                    Progress(
                        steps,
                        "step",
                        label=f"{args.name} seed {seed}",
                        done=min(u.done() for u in updates),
                    )
                )

                def report(metrics, total, seed=seed, display=display) -> None:
                    display.update(metrics.global_step, f"reward {metrics.reward_mean:.3f}")
                    tracker.log_metrics({f"seed{seed}": metrics.to_dict()}, metrics.global_step)

                def on_phase(p, rewards, seed=seed) -> None:
                    row = matrix([rewards], plan)[0]
                    figures = {d: float(v) for d, v in zip(plan.domains, row)}
                    tracker.log_metrics({f"seed{seed}/R": figures, f"seed{seed}/mean": float(row.mean())}, p)

                rows_lib = run_library(
                    evaluator, policy, updates, condition, args.name, seed_config, eval_config,
                    out / f"seed{seed}", cache=cache, metrics_path=out / f"seed{seed}" / "metrics.jsonl",
                    report=report, on_phase=on_phase,
                )  # fmt: skip
                matrices.setdefault(args.name, {})[seed] = matrix([zero, *rows_lib], plan)
        summary = summarise(matrices, plan)
        summary["settings"] = {
            "train": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
            "eval": json.loads(json.dumps(eval_config.to_dict(), default=str)),
            "strategy": None if args.baselines_only else args.strategy,
            "library": None if args.baselines_only else shown_target(library_path),
            "model": args.model,
            "task": args.task if not args.data else args.data,
            "seeds": args.seeds,
        }
        atomic_write(out / "continual.json", lambda f: json.dump(summary, f, indent=1))
        tracker.log_result(summary, "continual")
    print(table(summary))
    print(f"results: {out / 'continual.json'} (tfgrpo report --eval reads it)", file=sys.stderr)
    return None


def library_condition(grpo, lessons, placement: str):
    """What a library condition puts into a prompt: its examples, its lessons, or both."""
    from ..loop.evaluate import LessonCondition

    return grpo if lessons is None else LessonCondition(lessons, examples=grpo, placement=placement)


EVAL_FIELDS = frozenset(
    "shots select retrieval_mode advantage_weight min_relevance example_format contrast token_budget lessons_k "
    "template guidance guidance_k guidance_retrieval guidance_strength guidance_constraint guidance_tokenizer where "
    "where_fallback "
    "top_p max_tokens stop chat stop_after_content concurrency".split()
)
"""The prompting a continual run's evaluation shares with its training (the rest is the evaluation's own)."""
