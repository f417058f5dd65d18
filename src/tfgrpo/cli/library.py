"""Library commands: stats, sample, query, export, import."""

from __future__ import annotations

import json
import sys

from ..core.store import shown_target
from ..errors import TFGRPOError
from .common import library_arg, open_library, positive_int, seed_value, version_number


def add_commands(command) -> None:
    p = command("stats", cmd_stats, "Print a library's statistics.")
    library_arg(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    p = command("sample", cmd_sample, "Draw experiences from a library by advantage.")
    library_arg(p)
    p.add_argument("-k", type=positive_int, default=5, help="how many to draw")
    p.add_argument("--distinct", action="store_true", help="no experience twice")
    p.add_argument("--seed", type=seed_value, default=None, help="seed for a reproducible draw")
    p.add_argument("--json", action="store_true", help="print JSON lines")

    p = command("query", cmd_query, "Find a library's experiences for a prompt (prefix match), best first.")
    library_arg(p)
    p.add_argument("prompt", help="the prompt (stored prompts starting with it match)")
    p.add_argument("-k", type=positive_int, default=10, help="most experiences to show")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="metadata filter (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON lines")

    p = command(
        "export",
        cmd_export,
        "Copy a library: to an SQLite file (.db; replaced) or an empty PostgreSQL database or schema "
        "(postgresql://...), everything: experiences with their ids, counters, config, lessons with every version, "
        "the LLM cache, embeddings, the rollout log, the proxy's records; to a .json file, the spec's array of "
        "experiences (--full: everything). With --format sft|dpo|grpo|kto: fine-tuning data for TRL's trainers "
        "instead, as JSON lines (OUT.jsonl) that Hugging Face `datasets` loads.",
    )
    library_arg(p)
    p.add_argument("output", help="file or postgresql:// URL to write (--format: a .jsonl file)")
    p.add_argument("--full", action="store_true", help=".json: everything, as one object `tfgrpo import` reads back")
    g = p.add_argument_group("fine-tuning data (--format)")
    g.add_argument(
        "--format",
        choices=["sft", "dpo", "grpo", "kto"],
        default=None,
        help="sft: the library's experiences (SFTTrainer); dpo: each logged group's best rollout against its worst "
        "(DPOTrainer); grpo: the logged prompts with their reference answers (GRPOTrainer); kto: logged rollouts "
        "labelled by whether they beat their group's mean (KTOTrainer)",
    )
    g.add_argument("--plain", action="store_true", help="strings (prompt/completion) instead of chat messages")
    g.add_argument("--with-lessons", action="store_true", help="the current lessons in the system message of every row")
    g.add_argument(
        "--min-gap",
        type=float,
        default=0.5,
        metavar="X",
        help="dpo: the least reward difference between chosen and rejected (default 0.5)",
    )
    g.add_argument("--task", default=None, help="only rollouts of this task")
    g.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="only this metadata (repeatable)")
    g.add_argument("--min-reward", type=float, default=None, metavar="X", help="only rewards >= X (dpo: the chosen's)")
    g.add_argument("--max-reward", type=float, default=None, metavar="X", help="only rewards <= X (dpo: the chosen's)")
    g.add_argument(
        "--min-library-version",
        type=version_number,
        metavar="N",
        help="only rollouts prompted from library change N on",
    )
    g.add_argument(
        "--min-lessons-version",
        type=version_number,
        metavar="N",
        help="only rollouts prompted with lessons version N on",
    )
    g.add_argument("--since", metavar="DATE", help="only rollouts logged at or after DATE (2025-01-31; UTC)")
    g.add_argument("--until", default=None, metavar="DATE", help="only rollouts logged before DATE")
    g.add_argument(
        "--source",
        default=None,
        metavar="LIST",
        help="where the rollouts come from, comma-separated: train, serve, log (learn-from-log), eval, attribute "
        "(default: train,serve,log; evaluation prompts are held out)",
    )

    p = command(
        "import",
        cmd_import,
        "Bring a library (a .json, .db or postgresql:// one) into --library. Where there is none yet: an exact "
        "copy of everything. Into an existing one: its experiences are replaced by the input's (counted as loaded, "
        "pruned by its config), the input's lessons become a new lesson version, cached calls are added.",
    )
    p.add_argument("input", help="file or postgresql:// URL to read")
    library_arg(p)


def _print_experiences(experiences, as_json: bool) -> None:
    for exp in experiences:
        if as_json:
            print(json.dumps({"id": exp.id, **exp.to_dict()}, ensure_ascii=False))
        else:
            metadata = dict(exp.stored_metadata or {})
            failure = metadata.pop("contrast_response", None)  # the group's worst rollout: shown on a line of its own
            print(f"[{exp.id}] advantage={exp.advantage:+.3f} metadata={metadata}")
            print(f"  prompt:   {_one_line(exp.prompt)}")
            print(f"  response: {_one_line(exp.response)}")
            if failure is not None:
                print(f"  contrast: {_one_line(failure)}")


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


MAX_DRAWS = 1_000_000
"""Most experiences `sample` draws: beyond it a draw with replacement would only run out of memory."""


def cmd_sample(args) -> None:
    if args.k > MAX_DRAWS:
        raise TFGRPOError(f"-k {args.k} is more draws than sample makes; give at most {MAX_DRAWS:,}")
    with open_library(args.library) as grpo:
        grpo.seed(args.seed)
        drawn = grpo.sample_multiple(args.k, replace=not args.distinct)
    _print_experiences(drawn, args.json)
    if not drawn:  # as `query`: a valid empty answer, said on stderr
        print(f"no experiences to sample: {shown_target(args.library)} is empty", file=sys.stderr)


def cmd_query(args) -> None:
    where = {}
    for item in args.where:
        key, sep, value = item.partition("=")
        if not sep:
            raise TFGRPOError(f"--where takes KEY=VALUE, got {item!r}")
        where[key] = value
    with open_library(args.library) as grpo:
        found = grpo.get_experiences_for_prompt(args.prompt, k=args.k, where=where or None)
        size = grpo.library_size()
    _print_experiences(found, args.json)
    if not found:
        # An empty answer is a valid one (exit 0, nothing on stdout, so --json stays JSON lines); the
        # note is for whoever reads the terminal.
        filters = f" with {' and '.join(args.where)}" if args.where else ""
        print(
            f"no experiences match: no stored prompt starts with {args.prompt!r}{filters} "
            f"({size} experiences in {shown_target(args.library)})",
            file=sys.stderr,
        )


_DATASET_ONLY = ("plain", "with_lessons", "task", "where", "min_reward", "max_reward", "min_library_version",
                 "min_lessons_version", "since", "until", "source")  # fmt: skip


def cmd_export(args) -> None:
    from ..core.store import is_store_target
    from ..transfer import read, write

    if args.format is not None:
        return export_dataset_of(args)
    given = [name for name in _DATASET_ONLY if getattr(args, name) not in (None, False, [])]
    if given or args.min_gap != 0.5:
        flags = ", ".join("--" + name.replace("_", "-") for name in given or ["min_gap"])
        raise TFGRPOError(f"{flags}: only with --format sft|dpo|grpo|kto (fine-tuning data)")
    copy = read(args.library)
    write(copy, args.output, full_json=args.full)
    print(f"wrote {len(copy.library.experiences)} experiences to {args.output} ({copy.summary()})")
    if copy.lessons and not args.full and not is_store_target(args.output):
        print("note: the spec's JSON holds experiences only; --full writes the lessons too", file=sys.stderr)


def export_dataset_of(args) -> None:
    from ..core.store import is_postgres_url, shown_target
    from ..learn.export import export_dataset
    from .common import check_output

    if args.full:
        raise TFGRPOError("--full copies a whole library; --format writes fine-tuning data: give one of them")
    if is_postgres_url(args.output):
        raise TFGRPOError(f"--format writes a JSONL file; {shown_target(args.output)} is a database")
    check_output(args.output, "the output", args.library)
    rows = export_dataset(
        args.library,
        args.format,
        args.output,
        plain=args.plain,
        with_lessons=args.with_lessons,
        min_gap=args.min_gap,
        task=args.task,
        where=args.where,
        min_reward=args.min_reward,
        max_reward=args.max_reward,
        min_library_version=args.min_library_version,
        min_lessons_version=args.min_lessons_version,
        since=args.since,
        until=args.until,
        sources=args.source,
    )
    print(f"wrote {rows} {args.format} rows to {args.output}")
    if not rows:
        print("note: no rollout passed the filters (tfgrpo train or serve logs them; see --source)", file=sys.stderr)


def cmd_import(args) -> None:
    from ..core.store import is_store_target, store_exists
    from ..transfer import merge, read, write

    copy = read(args.input)
    if not is_store_target(args.library):  # a JSON library is a file to rewrite
        with open_library(args.library, must_exist=False) as grpo:
            grpo.load_from_file(args.input)
            grpo.save_to_file(args.library)
            _say_imported(args, grpo, len(copy.library.experiences))
        return
    if copy.exact and not store_exists(args.library):
        write(copy, args.library)
        print(f"{shown_target(args.library)}: a copy of {shown_target(args.input)}: {copy.summary()}")
        return
    for note in merge(copy, args.library, args.input):
        print(f"note: {note}", file=sys.stderr)
    with open_library(args.library) as grpo:
        _say_imported(args, grpo, len(copy.library.experiences))


def _say_imported(args, grpo, given: int) -> None:
    size = grpo.library_size()
    print(f"{shown_target(args.library)}: {size} experiences after importing {shown_target(args.input)}")
    if size < given:  # the library's own config pruned some: say so, an empty result is otherwise a puzzle
        config = grpo.config
        print(
            f"note: {given - size} of the {given} experiences in {args.input} were pruned by the library's "
            f"config: older than max_experience_age ({config.max_experience_age} s), or beyond "
            f"max_library_size ({config.max_library_size}), fields of the library's GRPOConfig",
            file=sys.stderr,
        )
