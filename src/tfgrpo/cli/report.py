"""`tfgrpo report`: one self-contained HTML file about a library and its evaluation results."""

from __future__ import annotations


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
        help="a result file of `eval --out`, `attribute --out` or `repeat` (repeatable)",
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
    from ..report import write_report

    path = write_report(args.library, args.output, args.eval, args.metrics)
    print(f"report: {path}")
