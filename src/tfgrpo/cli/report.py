"""`tfgrpo report`: one self-contained HTML file about a library and its evaluation results."""

from __future__ import annotations

import os
import sys


def add_commands(command) -> None:
    p = command(
        "report",
        cmd_report,
        "Write one self-contained HTML report (no network needed) of a library: training curves from its "
        "metrics log, library growth, advantages, evaluation conditions with CIs and seeds, lesson attribution, "
        "the lesson history with diffs, and the top experiences.",
    )
    p.add_argument("--library", "-l", default="library.db", help="library to report on")
    p.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="RESULT.json",
        help="a result file of `eval --out`, `attribute --out`, `repeat` or `continual` (repeatable; several "
        "continual results are also drawn side by side)",
    )
    p.add_argument(
        "--metrics",
        action="append",
        default=None,
        metavar="FILE",
        help="metrics log (repeatable; default: LIBRARY.metrics.jsonl and LIBRARY.lessons.metrics.jsonl)",
    )
    p.add_argument("--output", "-o", default="report.html", help="HTML file to write")


def cmd_report(args) -> None:
    from ..errors import ConfigError
    from ..loop.continual import merge, recomputed
    from ..report import read_result, write_report
    from .common import check_output

    check_output(args.output, "--output", args.library, *args.eval, *(args.metrics or []))
    results = {str(p): read_result(p) for p in args.eval}
    continual = [path for path, r in results.items() if r["kind"] == "continual"]
    for name in continual:  # each on its own first, so that a damaged one is named; its figures from its matrices
        try:
            results[name] = recomputed(results[name])
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    merged = merge([results[p] for p in continual]) if len(continual) > 1 else None  # side by side
    print(f"report: {write_report(args.library, args.output, list(results.items()), args.metrics, merged)}")


def result_args(p, out: bool = True) -> None:
    """--out (the full result as JSON) and --track, for eval and attribute (train: --track only)."""
    from ..tracking import DEFAULT_DIR, TRACKERS

    if out:
        p.add_argument(
            "--out", default=None, metavar="FILE.json", help="write the full result (every condition, per-prompt "
            "rewards, CIs, seeds, settings, library version) to this JSON file; `tfgrpo report --eval` reads it",
        )  # fmt: skip
    p.add_argument("--track", choices=TRACKERS, default=None, help="log the run to this tracking tool (offline)")
    p.add_argument("--track-dir", default=DEFAULT_DIR, help="folder of the tracking tool's local runs")


def open_run_tracker(args, command: str):
    """The tracker of --track (one that tracks nothing without it), with the command's settings logged."""
    from ..tracking import open_tracker, run_name

    tracker = open_tracker(getattr(args, "track", None), run_name(command), getattr(args, "track_dir", "."))
    from ..core.store import shown_target

    # (a PostgreSQL URL's password is no setting to keep)
    settings = {
        k: shown_target(v) if isinstance(v, str) else v
        for k, v in vars(args).items()
        if not k.startswith("_") and not callable(v)
    }
    tracker.log_config({"command": command, **settings})
    return tracker


def finish_result(args, result: dict, command: str, library: str | None = None) -> None:
    """Add what names the run to `result`, write it to --out and log it to --track."""
    import json

    from .. import __version__
    from ..core.files import atomic_write

    result.update(command=command, tfgrpo=__version__, model=getattr(args, "model", None))
    result.update(task=getattr(args, "task", None), data=getattr(args, "data", None))
    if library:
        from ..core.store import shown_target

        result["library"] = {"path": shown_target(library), **_library_versions(library)}
    if getattr(args, "out", None):
        atomic_write(args.out, lambda f: json.dump(result, f, indent=1))
        print(f"result: {args.out}", file=sys.stderr)
    if getattr(args, "track", None):
        with open_run_tracker(args, command) as tracker:
            tracker.log_result(result, "attribution" if result.get("kind") == "attribution" else "evaluation")
            if library and os.path.exists(library):
                tracker.log_artifact(library)


def _library_versions(path: str) -> dict:
    """The library's identity at evaluation time: experiences stored, lesson version."""
    from ..core.store import is_store_target, store_exists

    out: dict = {}
    if is_store_target(path) and store_exists(path):
        from ..core.library import TrainingFreeGRPO
        from ..semantic.lessons import LessonLibrary

        with TrainingFreeGRPO.open(path) as grpo:
            out.update(experiences=grpo.library_size(), step=(grpo.progress or {}).get("global_step"))
        if LessonLibrary.present_in(path):
            with LessonLibrary(path) as lessons:
                out.update(lesson_version=lessons.version, lessons=len(lessons))
    return out
