"""Library files: the spec's JSON format (an array of experiences, readable by its Rust reference)
and atomic writes."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from ..errors import ConfigError, LibraryFormatError, LibraryNotFoundError, TFGRPOWarning
from .experience import Experience

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def is_sqlite_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SQLITE_SUFFIXES


def is_sqlite_file(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except FileNotFoundError:
        raise LibraryNotFoundError(f"no library file at {path}") from None
    except IsADirectoryError:
        raise LibraryFormatError(f"{path} is a folder, not a library file") from None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[str]], None]) -> None:
    """Write a file so that readers see the old or the new content, never a mix: a temp file in the
    same folder, fsync, rename over the target, fsync the folder."""
    path = Path(path)
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside `path` (fd, name), named `.NAME.PID.RANDOM.tmp`. A save whose process is
    killed cannot remove its temp file, so each save first removes those of `path` left by processes
    that no longer exist (never one of a save still running, in this process or another).

    The file gets the mode `open(path, "w")` would leave: the mode of the file it replaces, else 0o666
    less the umask (`tempfile.mkstemp` makes 0o600, which the rename would give the user's file)."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; name a file to write")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: there is no folder {path.parent}")
    remove_orphaned_temps(path)
    try:
        mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        except PermissionError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror} in {path.parent}") from None
        if mode is not None:
            os.fchmod(fd, mode)
        return fd, name
    raise FileExistsError(f"no free temp file name beside {path}")


def remove_orphaned_temps(path: Path) -> None:
    prefix = f".{path.name}."
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix)]
    except OSError:
        return  # the save itself will report an unusable folder
    for name in names:
        found = _TEMP_NAME.fullmatch(name, len(prefix))
        if found and not _process_exists(int(found.group(1))):
            (path.parent / name).unlink(missing_ok=True)


_TEMP_NAME = re.compile(r"(\d+)\.[a-z0-9_]+\.tmp(-wal|-shm|-journal)?")


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process (or no way to tell): leave its file alone
    return True


def output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """The folder a command writes its results into, made with its parents if missing; a ConfigError
    naming `flag` when a file is in the way or the folder cannot be made."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{flag} {folder}: a file is in the way; name a folder") from None
    except OSError as exc:
        raise ConfigError(f"{flag} {folder}: cannot make the folder ({exc.strerror or exc})") from None
    return folder


def read_saved(path: str | os.PathLike) -> dict | None:
    """A JSON object an earlier run saved at `path` to spare work (scores, results), or None: nothing there,
    or a file that cannot be read back (damaged, edited), which a warning names; the caller makes it again."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        saved_unreadable(path, str(exc))
        return None
    if not isinstance(saved, dict):
        saved_unreadable(path, "not a JSON object")
        return None
    return saved


def saved_unreadable(path: str | os.PathLike, why: str) -> None:
    """Say that a saved file cannot be read back and is made again."""
    warnings.warn(f"{path} cannot be read back ({why[:200]}); it is made again", TFGRPOWarning, stacklevel=3)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, experiences: Iterable[Experience]) -> None:
    """The spec's format: a JSON array of {prompt, response, advantage, timestamp, metadata}."""

    def write(f: IO[str]) -> None:
        f.write("[")
        sep = "\n"
        encode = json.JSONEncoder(ensure_ascii=False).encode
        for exp in experiences:
            f.write(sep)
            f.write(encode(exp.to_dict()))
            sep = ",\n"
        f.write("\n]\n")

    atomic_write(path, write)


def read_json(path: str | os.PathLike) -> list[Experience]:
    """Parse and check a whole JSON library (the spec's array, or the experiences of a full copy written
    by `tfgrpo export --full`); raises before returning anything half-read."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise LibraryNotFoundError(f"no library file at {path}") from None
    except UnicodeDecodeError as exc:
        raise LibraryFormatError(f"{path} is not a text JSON library ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise LibraryFormatError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise LibraryFormatError(f"{path} is not a library: its JSON is nested too deeply to read") from None
    except ValueError as exc:  # e.g. a number with more digits than Python converts
        raise LibraryFormatError(f"{path} is not a readable JSON library: {exc}") from None
    if isinstance(data, dict) and data.get("format") == "tfgrpo-dump":  # `tfgrpo export --full`: its experiences
        library = data.get("library")
        data = library.get("experiences") if isinstance(library, dict) else None
    if not isinstance(data, list):
        raise LibraryFormatError(f"{path}: a JSON library is an array of experiences, found a {type(data).__name__}")
    try:
        experiences = [Experience.from_dict(item) for item in data]
    except LibraryFormatError:  # find the bad one again, to name it (not done for every good one)
        for i, item in enumerate(data):
            Experience.from_dict(item, where=f"{path}: experience {i}")
        raise
    prompts: dict[str, str] = {}
    for exp in experiences:  # one string per distinct prompt, as when the groups were added
        exp.prompt = prompts.setdefault(exp.prompt, exp.prompt)
    return experiences
