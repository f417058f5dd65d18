"""The `tfgrpo` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import TFGRPOError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except TFGRPOError as exc:
        print(f"tfgrpo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tfgrpo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfgrpo",
        description="Training-Free GRPO: improve a frozen LLM from a reward signal with an experience library.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(func=func)
        return p

    from . import run as cli_run  # the model-facing commands

    cli_run.add_commands(command)

    p = command("stats", cmd_stats, "Print a library's statistics.")
    _library_arg(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    p = command("sample", cmd_sample, "Draw experiences from a library by advantage.")
    _library_arg(p)
    p.add_argument("-k", type=int, default=5, help="how many to draw")
    p.add_argument("--distinct", action="store_true", help="no experience twice")
    p.add_argument("--seed", type=int, default=None, help="seed for a reproducible draw")
    p.add_argument("--json", action="store_true", help="print JSON lines")

    p = command("query", cmd_query, "Find a library's experiences for a prompt (prefix match), best first.")
    _library_arg(p)
    p.add_argument("prompt", help="the prompt (stored prompts starting with it match)")
    p.add_argument("-k", type=int, default=10, help="most experiences to show")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="metadata filter (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON lines")

    p = command("export", cmd_export, "Write a library to a file (.json: the spec's format; .db: SQLite).")
    _library_arg(p)
    p.add_argument("output", help="file to write")

    p = command("import", cmd_import, "Load a JSON or SQLite library file into a library (replacing its content).")
    p.add_argument("input", help="file to read")
    _library_arg(p)

    p = command("lessons", cmd_lessons, "Inspect and edit the lessons of paper mode (`train --strategy lessons`).")
    actions = p.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = actions.add_parser(
            name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        _library_arg(a)
        return a

    a = action("show", "Print the current lessons.")
    a.add_argument("--json", action="store_true", help='print {"G0": "lesson", ...}')
    a.add_argument("--prompt", action="store_true", help="print the block as it goes into the prompt")
    a = action("history", "List every version: what made it, what was applied and skipped.")
    a.add_argument(
        "--json",
        action="store_true",
        help="print the full records (lessons, operations, skips with reasons, and the rollouts, rewards, "
        "summaries and critiques that led to each version)",
    )
    a.add_argument("--version", type=int, default=None, metavar="V", help="only version V")
    a = action("diff", "What changed from version A to version B (default: the current one).")
    a.add_argument("a", type=int, help="older version")
    a.add_argument("b", type=int, nargs="?", default=None, help="newer version")
    a = action("rollback", "Make the lessons what they were at version V (as a new version; history is kept).")
    a.add_argument("version", type=int)
    a = action("export", 'Write the lessons to a file: JSON {"G0": ...} (the official format) or --text.')
    a.add_argument("path", help="file to write")
    a.add_argument("--text", action="store_true", help="a plain system-prompt text file instead of JSON")
    a = action("import", 'Replace the lessons with a file\'s (.json: {"G0": ...}; otherwise `[G0]. text` lines).')
    a.add_argument("path", help="file to read")
    return parser


def _library_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", "-l", default="library.db", help="library file (.db/.sqlite: SQLite; .json)")


def open_library(path: str, must_exist: bool = True):
    """A library from a path: SQLite files are opened write-through, JSON files loaded into memory."""
    from ..core.formats import is_sqlite_path
    from ..core.library import TrainingFreeGRPO
    from ..errors import LibraryNotFoundError

    if must_exist and not os.path.exists(path):
        raise LibraryNotFoundError(f"no library at {path} (train one with `tfgrpo train --library {path}`)")
    if is_sqlite_path(path):
        return TrainingFreeGRPO.open(path)
    grpo = TrainingFreeGRPO()
    if os.path.exists(path):
        grpo.load_from_file(path)
    return grpo


def _print_experiences(experiences, as_json: bool) -> None:
    for exp in experiences:
        if as_json:
            print(json.dumps({"id": exp.id, **exp.to_dict()}, ensure_ascii=False))
        else:
            print(f"[{exp.id}] advantage={exp.advantage:+.3f} metadata={exp._metadata or {}}")
            print(f"  prompt:   {_one_line(exp.prompt)}")
            print(f"  response: {_one_line(exp.response)}")


def _one_line(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_stats(args) -> None:
    from ..semantic import LessonLibrary

    with open_library(args.library) as grpo:
        stats = grpo.stats()
    lessons = None
    if LessonLibrary.present_in(args.library):  # paper mode's lessons, in the same file
        with LessonLibrary(args.library) as lib:
            lessons = {"count": len(lib), "version": lib.version}
    if args.json:
        print(json.dumps({**stats.to_dict(), **({"lessons": lessons} if lessons else {})}, indent=2))
        return
    print(stats.summary())
    if lessons:
        print(f"Lessons: {lessons['count']} at version {lessons['version']} (tfgrpo lessons show)")


def cmd_sample(args) -> None:
    with open_library(args.library) as grpo:
        grpo.seed(args.seed)
        _print_experiences(grpo.sample_multiple(args.k, replace=not args.distinct), args.json)


def cmd_query(args) -> None:
    where = {}
    for item in args.where:
        key, sep, value = item.partition("=")
        if not sep:
            raise TFGRPOError(f"--where takes KEY=VALUE, got {item!r}")
        where[key] = value
    with open_library(args.library) as grpo:
        _print_experiences(grpo.get_experiences_for_prompt(args.prompt, k=args.k, where=where or None), args.json)


def cmd_export(args) -> None:
    with open_library(args.library) as grpo:
        grpo.save_to_file(args.output)
        print(f"wrote {grpo.library_size()} experiences to {args.output}")


def cmd_import(args) -> None:
    from ..core.formats import is_sqlite_path

    with open_library(args.library, must_exist=False) as grpo:
        grpo.load_from_file(args.input)
        if not is_sqlite_path(args.library):  # a JSON library is a file to rewrite
            grpo.save_to_file(args.library)
        print(f"{args.library}: {grpo.library_size()} experiences after importing {args.input}")


def cmd_lessons(args) -> None:
    import time

    from ..errors import LibraryNotFoundError
    from ..semantic import LessonLibrary
    from .run import check_lesson_path

    check_lesson_path(args.library)
    if args.action != "import" and not os.path.exists(args.library):
        raise LibraryNotFoundError(
            f"no library at {args.library} (train one with `tfgrpo train --strategy lessons --library {args.library}`)"
        )
    with LessonLibrary(args.library) as lib:
        if args.action == "show":
            if args.json:
                print(json.dumps(lib.to_dict(), ensure_ascii=False, indent=2))
            elif args.prompt:
                print(lib.render())
            else:
                print(f"{args.library}: {len(lib)} lessons at version {lib.version}")
                print(lib.render_list())
        elif args.action == "history":
            versions = lib.history() if args.version is None else [lib.get_version(args.version)]
            if args.json:
                print(json.dumps([v.to_dict() for v in versions], ensure_ascii=False, indent=2))
            else:
                for v in versions:
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created))
                    step = f" step {v.step}" if v.step is not None else ""
                    note = f" to v{v.context['rollback_to']}" if v.kind == "rollback" and v.context else ""
                    print(
                        f"v{v.version}  {when}  {v.kind}{note}{step}: {len(v.lessons)} lessons, "
                        f"{sum(op.kind != 'none' for op in v.applied)} applied, {len(v.skipped)} skipped"
                    )
        elif args.action == "diff":
            print(lib.diff(args.a, args.b))
        elif args.action == "rollback":
            before = lib.version
            result = lib.rollback(args.version)
            print(f"rolled back to v{args.version}: v{before} -> v{result.version}, {len(lib)} lessons")
        elif args.action == "export":
            if args.text:
                lib.export_text(args.path)
            else:
                lib.export_json(args.path)
            print(f"wrote {len(lib)} lessons (version {lib.version}) to {args.path}")
        elif args.action == "import":
            if args.path.lower().endswith(".json"):
                result = lib.import_json(args.path)
            else:
                result = lib.import_text(args.path)
            for skipped in result.skipped:
                print(f"note: {skipped.reason}", file=sys.stderr)
            print(f"{args.library}: {len(lib)} lessons at version {result.version} after importing {args.path}")


if __name__ == "__main__":
    sys.exit(main())
