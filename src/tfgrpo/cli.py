"""The `tfgrpo` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import TFGRPOError


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

    from . import cli_run  # the model-facing commands live beside this file

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
    return parser


def _library_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", "-l", default="library.db", help="library file (.db/.sqlite: SQLite; .json)")


def open_library(path: str, must_exist: bool = True):
    """A library from a path: SQLite files are opened write-through, JSON files loaded into memory."""
    from .errors import LibraryNotFoundError
    from .formats import is_sqlite_path
    from .library import TrainingFreeGRPO

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
    with open_library(args.library) as grpo:
        stats = grpo.stats()
        print(json.dumps(stats.to_dict(), indent=2) if args.json else stats.summary())


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
    from .formats import is_sqlite_path

    with open_library(args.library, must_exist=False) as grpo:
        grpo.load_from_file(args.input)
        if not is_sqlite_path(args.library):  # a JSON library is a file to rewrite
            grpo.save_to_file(args.library)
        print(f"{args.library}: {grpo.library_size()} experiences after importing {args.input}")


if __name__ == "__main__":
    sys.exit(main())
