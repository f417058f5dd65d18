"""The `tfgrpo` command line. Each command group is its own module with an `add_commands(command)`
function; `COMMAND_MODULES` lists them in the order `tfgrpo --help` shows them."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable

from .. import __version__
from ..errors import TFGRPOError, TFGRPOWarning
from .options import FILE_VALUES, HelpFormatter, apply_config_file

COMMAND_MODULES = (
    "demo", "train", "from_log", "eval", "continual", "serve_model", "serve_proxy", "mcp_server", "library", "lessons",
    "report", "repeat",
)  # fmt: skip

# -v/-q steps through these from the default (INFO: the lesson critic's notes are worth seeing).
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
_DEFAULT_LEVEL = 1
_PYTHON_FORMAT = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    plain = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        args = with_config_file(parser, args, argv)
        return args.func(args) or 0
    except TFGRPOError as exc:
        print(f"tfgrpo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tfgrpo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tfgrpo ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        warnings.formatwarning = plain


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """tfgrpo's own warnings as the CLI's errors are written (where in tfgrpo they came from is no help to
    the user); any other warning as Python writes it."""
    if issubclass(category, TFGRPOWarning):
        return f"tfgrpo: warning: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


def with_config_file(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None
) -> argparse.Namespace:
    """`args` with the values of its --config file, if any: they become the command's defaults and
    `argv` is parsed again, so the flags given win."""
    if getattr(args, "config", None):
        values = apply_config_file(args._config_parser, args.config)
        args = parser.parse_args(argv)
        setattr(args, FILE_VALUES, values)
    return args


def parse_command(argv: list[str]) -> argparse.Namespace:
    """The arguments of one command line (`["eval", ...]`), with its config file applied, as `main` runs it."""
    parser = build_parser()
    return with_config_file(parser, parser.parse_args(argv), argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfgrpo",
        description="Training-Free GRPO: improve a frozen LLM from a reward signal with an experience library.",
    )
    parser.add_argument("--version", action="version", version=f"tfgrpo {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log lines (-v: debug); the default shows info"
    )
    parser.add_argument("-q", "--quiet", action="count", default=0, help="fewer log lines (-q: warnings, -qq: errors)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        # `help` is %-formatted by argparse (write a percent sign as %%); a description is printed as it is.
        description = help.replace("%%", "%")
        p = sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)
        p.set_defaults(func=func)
        return p

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_commands(command)
    return parser


class _Handler(logging.StreamHandler):
    """The CLI's own handler on the `tfgrpo` logger (a marker type, so a second `main()` replaces it)."""


def setup_logging(verbosity: int = 0) -> None:
    """Log lines of the whole `tfgrpo` package to stderr as `LEVEL name: message`; `verbosity` counts
    -v as +1 and -q as -1 from the default, INFO."""
    level = _LEVELS[max(0, min(len(_LEVELS) - 1, _DEFAULT_LEVEL - verbosity))]
    logger = logging.getLogger("tfgrpo")
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
    handler = _Handler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
