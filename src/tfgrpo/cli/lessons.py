"""`tfgrpo lessons ACTION`: inspect and edit the lessons of paper mode."""

from __future__ import annotations

import argparse
import json
import sys

from ..core.store import shown_target
from .common import check_lesson_path, library_arg, require_lesson_library
from .options import HelpFormatter


def add_commands(command) -> None:
    p = command("lessons", cmd_lessons, "Inspect and edit the lessons of paper mode (`train --strategy lessons`).")
    actions = p.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        library_arg(a)
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
    a = action(
        "export",
        'Write the lessons to a file: JSON {"G0": ...} (the official format), .yaml/.yml: a youtu-agent agent '
        "config (an existing one keeps its config, only its experiences change), or --text.",
    )
    a.add_argument("path", help="file to write")
    a.add_argument("--text", action="store_true", help="a plain system-prompt text file instead of JSON")
    a.add_argument("--base", metavar="AGENT.yaml", help="for .yaml: take the rest of the agent config from this file")
    a = action(
        "import",
        "Replace the lessons with a file's (.json: {\"G0\": ...}; .yaml/.yml: a youtu-agent agent config's "
        "experiences; otherwise `[G0]. text` lines).",
    )
    a.add_argument("path", help="file to read")


def cmd_lessons(args) -> None:
    import time

    from ..errors import ConfigError
    from ..semantic import LessonLibrary

    if args.action == "import":
        check_lesson_path(args.library)
    else:
        require_lesson_library(args.library)
    with LessonLibrary(args.library) as lib:
        if args.action == "show":
            if args.json:
                print(json.dumps(lib.to_dict(), ensure_ascii=False, indent=2))
            elif args.prompt:
                print(lib.render())
            else:
                print(f"{shown_target(args.library)}: {len(lib)} lessons at version {lib.version}")
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
            elif args.path.lower().endswith((".yaml", ".yml")):
                lib.export_agent_yaml(args.path, base=args.base)
            elif args.base:
                raise ConfigError(f"--base is for .yaml exports; {args.path} is not one")
            else:
                lib.export_json(args.path)
            print(f"wrote {len(lib)} lessons (version {lib.version}) to {args.path}")
        elif args.action == "import":
            if args.path.lower().endswith(".json"):
                result = lib.import_json(args.path)
            elif args.path.lower().endswith((".yaml", ".yml")):
                result = lib.import_agent_yaml(args.path)
            else:
                result = lib.import_text(args.path)
            for skipped in result.skipped:
                print(f"note: {skipped.reason}", file=sys.stderr)
            shown = shown_target(args.library)
            print(f"{shown}: {len(lib)} lessons at version {result.version} after importing {args.path}")
