"""Library files: the spec's JSON format (an array of experiences, readable by its Rust reference)
and atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from ..errors import LibraryFormatError, LibraryNotFoundError
from .experience import Experience

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def is_sqlite_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SQLITE_SUFFIXES


def is_sqlite_file(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == _SQLITE_MAGIC


def atomic_write(path: str | os.PathLike, write: Callable[[IO[str]], None]) -> None:
    """Write a file so that readers see the old or the new content, never a mix: a temp file in the
    same folder, fsync, rename over the target, fsync the folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    """Parse and check a whole JSON library; raises before returning anything half-read."""
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
