"""The `tfgrpo` command line in a test: in-process through `tfgrpo.cli.main` (what the installed script
calls), with what it prints captured, or as the installed script in a subprocess (`TFGRPO`), for the tests
that need a process of its own: the entry point itself, a kill, modules found next to where it runs."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tfgrpo.cli import main

TFGRPO = shutil.which("tfgrpo") or str(Path(sys.executable).parent / "tfgrpo")


@dataclass
class Ran:
    """What a command did, as `subprocess.run(..., capture_output=True, text=True)` tells it."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def tfgrpo(*args: object, check: bool = True) -> Ran:
    """Run `tfgrpo ARGS...` in this process. `check`: a non-zero exit fails the test, with its stderr."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("tfgrpo")
    handlers, level = list(logger.handlers), logger.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help, --version and usage errors
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:  # main() points the package's log lines at this call's stderr: undo it
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
        logger.setLevel(level)
    ran = Ran(argv, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"tfgrpo {' '.join(argv)} exited {code}:\n{ran.stderr}")
    return ran
