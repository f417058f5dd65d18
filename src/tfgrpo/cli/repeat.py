"""`tfgrpo repeat`: one library per training seed, each evaluated, and the lift over the strongest
baseline summarised across the seeds (mean, t 95% CI, spread): run-to-run noise seen, not hidden.

The baselines do not depend on the library (same held-out prompts, generation seeds and training
prompts), so they are scored once and kept in OUT/baselines.json; each seed's library is scored alone
and compared with them exactly as `tfgrpo eval` compares (the same functions). A rerun resumes: the
libraries resume training (nothing to do when done), and a saved evaluation is reused only when it
was made with the same settings, data and library version; anything else is evaluated again."""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.files import read_saved, saved_unreadable
from ..core.knobs import knob_fields
from ..executors.config import ExecutorConfig
from .common import executor_args, open_executor_of, seed_value
from .options import explicit, flag_of

if TYPE_CHECKING:
    from ..loop.evaluate import ConditionResult

LIBRARY_OPTIONS = (
    "library", "strategy", "placement", "out", "json", "track", "track_dir", "print_config", "contrast",
    "rollout_log", "rollout_log_days",
)  # fmt: skip
"""`tfgrpo eval` options that do not change the baselines (their fixed examples record no failure to contrast;
the rollout log records them)."""
EXECUTOR_OPTIONS = tuple(f.name for f in knob_fields(ExecutorConfig))
"""Where the work runs: it changes no result, so it is no part of the baselines' identity."""


def add_commands(command) -> None:
    p = command(
        "repeat",
        cmd_repeat,
        "Train one library per training seed (`tfgrpo train`) and evaluate each as `tfgrpo eval --out` does, "
        "the baselines once for all seeds, then report the lift over the strongest baseline across the seeds: "
        "mean, t 95%% CI and spread. Rerun the same command to resume, or with more --seeds to add seeds.",
    )
    p.add_argument(
        "--seeds",
        type=seed_value,
        nargs="+",
        default=[0, 1, 2],
        help="the training seeds' values, e.g. 0 1 2 (not a count)",
    )
    p.add_argument("--out", default="repeat-out", help="folder for the libraries and results")
    p.add_argument("--train-args", default="", help='arguments for `tfgrpo train`, e.g. "--task arithmetic -G 8"')
    p.add_argument("--eval-args", default="", help='arguments for `tfgrpo eval`, e.g. "--task arithmetic -k 4"')
    executor_args(p)
    p.add_argument(
        "--agent",
        default=None,
        metavar="SPEC",
        help="the agent of every rollout, in training and evaluation alike (`tfgrpo train --agent`); its knobs "
        "(--max-turns, ...) go in --train-args and --eval-args",
    )


def cmd_repeat(args) -> int | None:
    from ..core.files import atomic_write, output_folder
    from ..errors import ConfigError, TFGRPOError
    from ..loop.evaluate import across_training_seeds, repeat_table
    from . import main, parse_command

    if len(set(args.seeds)) < len(args.seeds):
        raise ConfigError(
            f"--seeds {' '.join(map(str, args.seeds))}: a seed given twice would count one library twice; "
            "give each training seed once"
        )
    if len(args.seeds) == 1:
        print(
            f"one training seed ({args.seeds[0]}): no spread or CI across seeds. --seeds takes the seeds' "
            "values: --seeds 0 1 2 trains three libraries",
            file=sys.stderr,
        )
    out = output_folder(args.out)
    # The executor's flags go to every train and eval run, which join the one Ray opened here.
    given = explicit(args)
    executor = [
        str(i) for f in knob_fields(ExecutorConfig) if f.name in given for i in (flag_of(f), getattr(args, f.name))
    ]
    agent = ["--agent", args.agent] if args.agent else []
    runs = {  # parsed before any training, so a mistake in them is found at once
        seed: parse_command(
            ["eval", *shlex.split(args.eval_args), *executor, *agent, "--library", str(out / f"library-seed{seed}.db")]
            + ["--out", str(out / f"eval-seed{seed}.json")]
        )
        for seed in args.seeds
    }
    with open_executor_of(args):
        for seed in args.seeds:
            train = ["train", *shlex.split(args.train_args), *agent, "--library", str(out / f"library-seed{seed}.db")]
            if main([*train, *executor, "--seed", str(seed)]) not in (0, None):
                raise TFGRPOError(f"tfgrpo {' '.join(train)} --seed {seed} failed; see above")
        summary = across_training_seeds(evaluate_seeds(runs, shlex.split(args.train_args), out))
    atomic_write(out / "repeat.json", lambda f: json.dump(summary, f, indent=1))
    print(repeat_table(summary))
    print(f"results: {out / 'repeat.json'} (tfgrpo report --eval reads it)")
    return None


def evaluate_seeds(runs: dict[int, argparse.Namespace], train_args: list[str], out: Path) -> list[dict]:
    """Each seed's `eval --out` result (`runs`: its `tfgrpo eval` arguments), with "train_seed": the
    baselines scored once (or read back from OUT/baselines.json), each library scored (or read back from
    its result), then compared with the strongest baseline by `report_of`, as `tfgrpo eval` does."""
    from ..loop.evaluate import report_of
    from .common import load_task, make_backend, open_agent
    from .eval import eval_config, library_conditions, recorder, score
    from .report import _library_versions, finish_result

    first = next(iter(runs.values()))
    task = load_task(first)
    config = eval_config(first, task)
    identity = _identity(first, task, config)
    results = []
    with ExitStack() as stack:
        backends: list = []  # the model (and the agent) are made only if something is to be scored

        executor = stack.enter_context(open_executor_of(first))
        task = task._replace(reward=executor.reward(task.reward))

        def backend():
            if not backends:
                backends.append(stack.enter_context(make_backend(first.model, config.concurrency, executor)))
                backends.append(open_agent(first, stack))
            return backends[0]

        def agent():
            backend()
            return backends[1]

        baselines = _baselines(out / "baselines.json", identity, first, task, config, backend, agent)

        for seed, run in runs.items():
            library = {key: getattr(run, key) for key in ("strategy", "placement", "contrast")}
            library["train_args"] = train_args
            expected = {**identity, "library": {**library, **_library_versions(run.library)}}
            saved = read_saved(run.out)
            scored = None
            if saved is not None and saved.get("repeat") == expected:
                scored = _conditions(Path(run.out), saved, config.success_threshold)
                saved = saved if scored is not None else None
            if scored is not None:
                libraries = [c for c in scored if not c.baseline]
                print(f"training seed {seed}: reusing the library's evaluation in {run.out}", file=sys.stderr)
            else:
                if saved is not None:
                    print(f"{run.out}: {_why(saved.get('repeat'), expected)}; evaluating again", file=sys.stderr)
                with ExitStack() as opened:
                    conditions = library_conditions(run, opened)
                    record = recorder(run, "eval", task, opened)
                    libraries = score(task, config, backend(), conditions, agent(), record)
            report = report_of([*baselines, *libraries], task.test, config)
            print(f"training seed {seed}:\n{report.table()}\n")
            result = json.loads(json.dumps({**report.to_dict(), "repeat": expected}))
            if saved is None or any(saved.get(key) != value for key, value in result.items()):
                finish_result(run, result, "eval", run.library)
            else:
                result = saved
            results.append({**result, "train_seed": seed})
    return results


def _baselines(path: Path, identity: dict, args, task, config, backend, agent) -> list[ConditionResult]:
    """The baselines of `tfgrpo eval` (`score_baselines`), read back from `path` when it was written with
    this `identity`, else scored (`backend()` gives the model) and saved there."""
    from ..core.files import atomic_write
    from .eval import score_baselines

    saved = read_saved(path)
    if saved is not None and saved.get("identity") == identity:
        reused = _conditions(path, saved, config.success_threshold)
        if reused is not None:
            print(f"reusing the baselines in {path}: {', '.join(c.name for c in reused)}", file=sys.stderr)
            return reused
        saved = None
    if saved is not None:
        print(f"{path}: {_why(saved.get('identity'), identity)}; evaluating the baselines again", file=sys.stderr)
    baselines = score_baselines(args, task, config, backend(), agent())
    record = {"kind": "baselines", "identity": identity, "conditions": {c.name: c.to_dict() for c in baselines}}
    atomic_write(path, lambda f: json.dump(record, f, indent=1))
    return baselines


def _identity(args, task, config) -> dict:
    """What the baselines depend on: the eval options (not the library's), the resolved settings, and
    the held-out and training samples (by digest), as JSON values."""
    unrelated = (*LIBRARY_OPTIONS, *EXECUTOR_OPTIONS)
    options = {k: v for k, v in vars(args).items() if k not in unrelated and not k.startswith("_") and not callable(v)}
    settings = {k: v for k, v in config.to_dict().items() if k not in LIBRARY_OPTIONS}
    samples = {name: _digest(getattr(task, name)) for name in ("test", "train")}
    return json.loads(json.dumps({"options": options, "settings": settings, "samples": samples}, default=str))


def _digest(samples: list[dict]) -> str:
    return hashlib.sha256(json.dumps(samples, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _conditions(path: Path, saved: dict, threshold: float) -> list | None:
    """The scored conditions of a saved result, or None when they are of another shape (said)."""
    from ..loop.evaluate import ConditionResult

    try:
        return [ConditionResult.from_dict(n, c, threshold) for n, c in saved["conditions"].items()]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        saved_unreadable(path, f"its conditions are of another shape: {type(exc).__name__}: {exc}")
        return None


def _why(saved: dict | None, now: dict) -> str:
    """What differs between a saved identity and the current one, in a few words."""
    if not saved:
        return "written without the settings `tfgrpo repeat` checks"
    differences = []
    for part in sorted(set(saved) | set(now)):
        old, new = saved.get(part) or {}, now.get(part) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                differences.append(f"{key}: {old.get(key)!r:.60} then, {new.get(key)!r:.60} now")
    more = "; ..." if len(differences) > 6 else ""
    return f"made by another run ({'; '.join(differences[:6])}{more})"
