"""The lesson library of the paper: short natural-language lessons with stable ids (G0, G1, ...), edited
by add / update / delete / merge operations, every version kept.

Every change is one version: the full set of lessons after it, the operations applied, the ones skipped
with their reasons, and the context behind them (summaries, critiques). Versions are written in one
transaction together with the training position, so a killed run loses nothing it finished and never
sees half a step. `rollback(v)` makes a new version equal to version `v` (history is never rewritten).
Ids are never reused, not even after a rollback.

Several processes may share one lesson library. A new version is committed only on top of the version
it was planned on (compare-and-swap, under the database's write lock); when another process committed
first, the change is planned again on the new version and retried, so nothing either of them did is
lost. Reads catch up with other processes' versions at most every `refresh_interval` seconds.

Storage: tables prefixed `lesson_`, in an SQLite file (WAL; it may be the experience library's own .db
file) or a PostgreSQL database (a `postgresql://` URL); `path=None` keeps everything in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..core.experience import clean_text as replace_surrogates
from ..core.experience import json_text
from ..core.files import atomic_write
from ..core.store import connect_db
from ..core.store.sql import Transaction, check_version, is_postgres_url, upsert
from ..errors import ConfigError, LibraryFormatError, StoreError
from .lesson_files import agent_yaml_text, read_agent_yaml, read_text_file
from .operations import MAX_LESSON_ID, Operation, normalize_id

log = logging.getLogger("tfgrpo.semantic")

SCHEMA_VERSION = 1
DEFAULT_MAX_WORDS = 32
DEFAULT_INSTRUCTION = (
    "Lessons learned from earlier attempts at this kind of task are listed below. You MUST read them "
    "carefully and apply those that are relevant before and while you answer."
)

_COLUMNS = "version, created, step, kind, lessons, applied, skipped, context"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS lesson_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lesson_versions (
    version {int} PRIMARY KEY,
    created {real} NOT NULL,
    step {int},
    kind TEXT NOT NULL,
    lessons TEXT NOT NULL,
    applied TEXT NOT NULL,
    skipped TEXT NOT NULL,
    context TEXT
)
"""
_ATTEMPTS = 50  # plans of one change, when other processes keep committing versions first


class _Stale(Exception):
    """Another process committed a version since this one's change was planned."""


@dataclass(frozen=True)
class Skipped:
    """An operation that was not applied as proposed, and why. `repaired` is what was applied in its
    place (None: nothing was)."""

    operation: Operation
    reason: str
    repaired: Operation | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operation": self.operation.to_dict(), "reason": self.reason}
        if self.repaired is not None:
            out["repaired"] = self.repaired.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Skipped:
        repaired = data.get("repaired")
        return cls(
            Operation.from_dict(data["operation"]), data["reason"], Operation.from_dict(repaired) if repaired else None
        )


@dataclass
class ApplyResult:
    version: int
    applied: list[Operation] = field(default_factory=list)
    """What was done, after repairs (ids filled in for adds)."""
    skipped: list[Skipped] = field(default_factory=list)
    """Proposals not applied as proposed (repaired or dropped), each with a reason."""

    @property
    def changed(self) -> bool:
        return any(op.kind != "none" for op in self.applied)


@dataclass(frozen=True)
class Version:
    version: int
    created: float
    step: int | None
    kind: str
    """"init", "step", "apply", "rollback", "import", "rejected" (a candidate that never became current)."""
    lessons: dict[str, str]
    applied: list[Operation]
    skipped: list[Skipped]
    context: Any

    def to_dict(self) -> dict[str, Any]:
        """Everything recorded about the version, as JSON-ready values."""
        return {
            "version": self.version,
            "created": self.created,
            "step": self.step,
            "kind": self.kind,
            "lessons": self.lessons,
            "applied": [op.to_dict() for op in self.applied],
            "skipped": [s.to_dict() for s in self.skipped],
            "context": self.context,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "lesson version") -> Version:
        """The inverse of `to_dict`, every field checked (a copy read from a file is untrusted)."""
        try:
            version, created, step, kind = data["version"], data["created"], data.get("step"), data["kind"]
            lessons = data["lessons"]
            if not (
                type(version) is int and version >= 0 and isinstance(created, (int, float)) and isinstance(kind, str)
            ):
                raise ValueError("version, created or kind is not what a version holds")
            if step is not None and type(step) is not int:
                raise ValueError(f"step {step!r:.40} is not a whole number")
            if not (
                isinstance(lessons, dict)
                and all(isinstance(v, str) and normalize_id(k) == k for k, v in lessons.items())
            ):
                raise ValueError("lessons must map ids (G0, G1, ...) to text")
            applied = [Operation.from_dict(op) for op in data["applied"]]
            skipped = [Skipped.from_dict(item) for item in data["skipped"]]
            json.dumps(data.get("context"))
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise LibraryFormatError(f"{where} is damaged: {exc}") from None
        return cls(version, float(created), step, kind, dict(lessons), applied, skipped, data.get("context"))


@dataclass(frozen=True)
class LessonDiff:
    added: dict[str, str]
    removed: dict[str, str]
    changed: dict[str, tuple[str, str]]
    """id -> (old text, new text)."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def __str__(self) -> str:
        lines = [f"- [{i}]. {t}" for i, t in self.removed.items()]
        lines += [f"~ [{i}]. {old}\n  -> {new}" for i, (old, new) in self.changed.items()]
        lines += [f"+ [{i}]. {t}" for i, t in self.added.items()]
        return "\n".join(lines) if lines else "(no changes)"


_NO_ID_LEFT = f"no lesson id is left (G{MAX_LESSON_ID} is the last); skipped"

_WORD = re.compile(r"[^\W_]")
"""A letter or digit: a lesson has at least one (even "15 + 17 = 22" can help, by showing a format)."""


def word_count(text: str) -> int:
    return len(text.split())


def shorten(text: str, max_words: int) -> str:
    """`text` cut to `max_words` words, at the last sentence end inside the limit when that keeps at
    least half of them."""
    words = text.split()
    if len(words) <= max_words:
        return text
    cut = " ".join(words[:max_words])
    ends = [m.end() for m in re.finditer(r"[.!?;](?=\s|$)", cut)]
    if ends and word_count(cut[: ends[-1]]) >= max_words // 2:
        return cut[: ends[-1]]
    return cut.rstrip(",;:") + "..."


def _fingerprint(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _id_number(lesson_id: str) -> int:
    return int(lesson_id[1:])


class _Draft:
    """Lessons being edited by a plan, indexed by fingerprint: the duplicate check of each operation is
    then a lookup, not a scan of every lesson (which made applying n operations O(n^2))."""

    def __init__(self, lessons: Mapping[str, str], next_id: int) -> None:
        self.lessons = dict(lessons)
        self.next_id = next_id
        self._by_fingerprint: dict[str, dict[str, None]] = {}  # an ordered set of ids per fingerprint
        for lesson_id, text in self.lessons.items():
            self._by_fingerprint.setdefault(_fingerprint(text), {})[lesson_id] = None

    def set(self, lesson_id: str, text: str) -> None:
        if lesson_id in self.lessons:
            self._unindex(lesson_id)
        self.lessons[lesson_id] = text
        self._by_fingerprint.setdefault(_fingerprint(text), {})[lesson_id] = None

    def remove(self, lesson_id: str) -> None:
        self._unindex(lesson_id)
        del self.lessons[lesson_id]

    def duplicate_of(self, text: str, ignore: Iterable[str] = ()) -> str | None:
        """A lesson (other than those in `ignore`) with the same words as `text`."""
        skip = set(ignore)
        return next((i for i in self._by_fingerprint.get(_fingerprint(text), ()) if i not in skip), None)

    def _unindex(self, lesson_id: str) -> None:
        fingerprint = _fingerprint(self.lessons[lesson_id])
        ids = self._by_fingerprint[fingerprint]
        del ids[lesson_id]
        if not ids:
            del self._by_fingerprint[fingerprint]


class LessonLibrary:
    """Lessons with stable ids, persisted with their full history.

    Args:
        path: an SQLite file (created if missing; may also hold an experience library), a
            `postgresql://` URL, or None for memory.
        max_words: the longest lesson an operation may write; longer ones are shortened (with a logged
            reason). Imported lessons are kept whole.
        instruction: the sentence put before the lessons when they are rendered into a prompt.
        refresh_interval: reads catch up with versions other processes committed when the last check
            is this many seconds old (None: only on `refresh()` and before each change).
    """

    @staticmethod
    def present_in(path: str | os.PathLike) -> bool:
        """Whether the SQLite file or PostgreSQL database at `path` holds a lesson library (nothing is
        created)."""
        if is_postgres_url(path):
            database = connect_db(path)
            try:
                return "lesson_versions" in database.tables()
            finally:
                database.close()
        if not Path(path).is_file():
            return False
        try:
            with closing(sqlite3.connect(path)) as db:
                row = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='lesson_versions'")
                return row.fetchone() is not None
        except sqlite3.Error:
            return False

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        max_words: int = DEFAULT_MAX_WORDS,
        instruction: str = DEFAULT_INSTRUCTION,
        refresh_interval: float | None = 0.05,
    ) -> None:
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ConfigError(f"max_words must be a whole number >= 1, got {max_words!r}")
        self.path = None if path is None or is_postgres_url(path) else Path(path)
        self.max_words = max_words
        self.instruction = instruction
        self.refresh_interval = refresh_interval
        self._next_check = 0.0
        self._lock = threading.RLock()
        self._db = connect_db(path if is_postgres_url(path) else self.path)
        self.where = f"{self._db.where} (lesson library)"
        try:
            with self._creating() as tx:
                for statement in self._db.dialect.ddl(_SCHEMA).split(";"):
                    if statement.strip():
                        tx.execute(statement)
                if tx.execute("SELECT version FROM lesson_versions LIMIT 1").fetchone() is None:
                    self._put(tx, "schema_version", SCHEMA_VERSION)
                    self._put(tx, "next_id", 0)
                    self._insert_version(tx, 0, {}, None, "init", [], [], None)
            self._load()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, StoreError) and not is_postgres_url(path):  # e.g. a foreign SQLite file
                raise LibraryFormatError(f"{self._db.where} cannot hold a lesson library: {exc}") from None
            raise

    # ----------------------------------------------------------------- reading

    @property
    def lessons(self) -> dict[str, str]:
        """The current lessons, id -> text, in id order (a copy)."""
        with self._lock:
            self._catch_up()
            return dict(self._lessons)

    @property
    def version(self) -> int:
        with self._lock:
            self._catch_up()
            return self._version

    @property
    def next_id(self) -> int:
        """The number the next new lesson's id gets (ids are never reused)."""
        return self._next_id

    def refresh(self) -> bool:
        """Catch up with the versions other processes committed (one indexed read when there are none).
        Returns whether there were."""
        with self._lock:
            self._next_check = time.monotonic() + (self.refresh_interval or 0)
            latest = self._db.query("SELECT MAX(version) FROM lesson_versions")[0][0]
            if latest == self._version:
                return False
            self._load()
            return True

    def _catch_up(self) -> None:
        if self.refresh_interval is not None and time.monotonic() >= self._next_check:
            try:
                self.refresh()
            except StoreError as exc:
                log.warning("cannot catch up with the stored lessons, using those this process holds: %s", exc)

    @property
    def progress(self) -> dict | None:
        """The training position stored with the last step (None before the first)."""
        return self._meta("progress")

    def __len__(self) -> int:
        return len(self._lessons)

    def __contains__(self, lesson_id: object) -> bool:
        return normalize_id(lesson_id) in self._lessons

    def __getitem__(self, lesson_id: str) -> str:
        norm = normalize_id(lesson_id)
        if norm is None or norm not in self._lessons:
            raise KeyError(lesson_id)
        return self._lessons[norm]

    def history(self) -> list[Version]:
        """Every version, oldest first."""
        rows = self._db.query(f"SELECT {_COLUMNS} FROM lesson_versions ORDER BY version")
        return [self._row_to_version(row) for row in rows]

    def get_version(self, version: int) -> Version:
        latest = self.version  # (caught up with other processes)
        known = isinstance(version, int) and not isinstance(version, bool) and 0 <= version <= latest
        rows = []
        if known:  # (a number beyond the database's integers is no version either)
            rows = self._db.query(f"SELECT {_COLUMNS} FROM lesson_versions WHERE version = ?", (version,))
        if not rows:
            raise ConfigError(f"no lesson library version {version}; versions are 0..{latest}")
        return self._row_to_version(rows[0])

    def at(self, version: int) -> dict[str, str]:
        """The lessons as they were at `version`."""
        return self.get_version(version).lessons

    def diff(self, old: int, new: int | None = None) -> LessonDiff:
        """What changed from version `old` to version `new` (default: the current one)."""
        before = self.at(old)
        after = self.at(self._version if new is None else new)
        return LessonDiff(
            added={i: t for i, t in after.items() if i not in before},
            removed={i: t for i, t in before.items() if i not in after},
            changed={i: (before[i], t) for i, t in after.items() if i in before and before[i] != t},
        )

    def relevant(self, query: str, k: int) -> dict[str, str]:
        """The `k` lessons most relevant to `query` (BM25, the library's lexical retrieval, over the
        lessons' text; a tie goes to the older lesson), in the library's order; every lesson when `k` is 0
        or there are no more than `k`."""
        lessons = self.lessons
        if k <= 0 or len(lessons) <= k:
            return lessons
        from ..retrieval.lexical import BM25Index

        version = self.version
        cached = self.__dict__.get("_relevance")
        if cached is None or cached[0] != version or cached[1] != list(lessons):
            index = BM25Index()
            for row, text in enumerate(lessons.values()):
                index.add(row, text)
            cached = self.__dict__["_relevance"] = (version, list(lessons), index)
        rows, scores = cached[2].search(query)
        score = dict(zip(rows.tolist(), scores.tolist()))
        ids = list(lessons)
        chosen = sorted(range(len(ids)), key=lambda row: (-score.get(row, 0.0), row))[:k]
        return {ids[row]: lessons[ids[row]] for row in sorted(chosen)}

    def render(self, instruction: str | None = None, empty: str = "", *, query: str | None = None, k: int = 0) -> str:
        """The lessons as a prompt block: the instruction, then one `[G3]. text` line per lesson
        (`empty` when there are none). With `query` and `k` > 0, only the `k` most relevant to the query
        (`relevant`)."""
        lessons = self.lessons if query is None else self.relevant(query, k)
        if not lessons:
            return empty
        head = self.instruction if instruction is None else instruction
        lines = "\n".join(f"[{i}]. {t}" for i, t in lessons.items())
        return f"{head}\n{lines}" if head else lines

    def render_list(self) -> str:
        """The `[G3]. text` lines alone ("(no lessons yet)" when empty), for the semantic prompts."""
        return self.render(instruction="", empty="(no lessons yet)")

    # ----------------------------------------------------------------- writing

    def apply(
        self,
        operations: Iterable[Operation],
        *,
        step: int | None = None,
        context: Any = None,
        progress: dict | None = None,
        kind: str = "apply",
        extra_skipped: Sequence[Skipped] = (),
        rejected: bool = False,
    ) -> ApplyResult:
        """Validate `operations` against the current lessons, in order, and commit one new version.

        Nothing raises for bad operations: each is applied, repaired (an overlong lesson shortened, an
        update of a missing id added as new, a merge's invented ids dropped, a lone surrogate replaced by
        U+FFFD as in all model output) or skipped, and every repair or skip is logged and recorded with
        its reason. The version (and `progress`, when given) is written in one transaction: after a
        crash the library is at the old version or the new one.

        `rejected=True` records the result as a version of kind "rejected" (inspectable in the history)
        followed, in the same transaction, by a "rollback" version restoring the current lessons: the
        lessons do not change. The result's `version` is the rejected one.
        """
        operations = list(operations)

        def attempt() -> ApplyResult:
            lessons, next_id, applied, skipped = self._plan(operations, extra_skipped)
            if rejected:
                version = self._commit_rejected(lessons, next_id, step, applied, skipped, context, progress)
            else:
                version = self._commit(lessons, next_id, step, kind, applied, skipped, context, progress)
            for item in skipped:
                log.warning("lesson operation %s: %s", json.dumps(item.operation.to_dict())[:200], item.reason)
            return ApplyResult(version, applied, skipped)

        return self._planned(attempt)

    def _planned(self, attempt: Callable[[], ApplyResult]) -> ApplyResult:
        """`attempt()` plans a change on the current lessons and commits it; when another process
        committed a version since, the commit refuses (`_Stale`), and the change is planned again on
        the new version."""
        with self._lock:
            for _ in range(_ATTEMPTS):
                try:
                    return attempt()
                except _Stale:
                    self._load()
            raise StoreError(
                f"{self.where}: other processes committed {_ATTEMPTS} versions while this change was being "
                "planned; nothing was changed, try again"
            )

    def preview(self, operations: Iterable[Operation]) -> dict[str, str]:
        """The lessons `apply(operations)` would leave, without committing anything."""
        with self._lock:
            return self._plan(operations, ())[0]

    def detached(self, lessons: Mapping[str, str] | None = None) -> LessonLibrary:
        """An in-memory library holding `lessons` (default: the current ones) under the same ids, with
        the same instruction and word limit: for rendering a candidate or a subset into a prompt."""
        copy = LessonLibrary(None, max_words=self.max_words, instruction=self.instruction)
        copy.replace_all(self.lessons if lessons is None else lessons, kind="detached")
        return copy

    def _plan(
        self, operations: Iterable[Operation], extra_skipped: Sequence[Skipped]
    ) -> tuple[dict[str, str], int, list[Operation], list[Skipped]]:
        with self._lock:
            draft = _Draft(self._lessons, self._next_id)
            applied: list[Operation] = []
            skipped: list[Skipped] = list(extra_skipped)
            for op in operations:
                if not isinstance(op, Operation):
                    shown = Operation("none", reason=f"{op!r:.200}")
                    skipped.append(Skipped(shown, f"not an Operation ({type(op).__name__})"))
                    continue
                outcome = self._apply_one(op, draft)
                if outcome.applied is not None:
                    applied.append(outcome.applied)
                if outcome.skip_reason:
                    skipped.append(Skipped(op, outcome.skip_reason, outcome.applied))
            return draft.lessons, draft.next_id, applied, skipped

    def rollback(self, version: int, *, context: Any = None) -> ApplyResult:
        """Make the lessons what they were at `version`, as a new version (history is kept)."""
        target = self.at(version)
        note = {"rollback_to": version, **({"note": context} if context is not None else {})}

        def attempt() -> ApplyResult:
            diff = self.diff(self._version, version) if version != self._version else None
            applied = []
            if diff is not None:
                applied += [Operation("delete", id=i) for i in diff.removed]
                applied += [Operation("update", text=new, id=i) for i, (_, new) in diff.changed.items()]
                applied += [Operation("add", text=t, id=i) for i, t in diff.added.items()]
            new = self._commit(target, self._next_id, None, "rollback", applied, [], note, None)
            return ApplyResult(new, applied, [])

        return self._planned(attempt)

    def replace_all(self, lessons: Mapping[Any, object], *, kind: str = "import", context: Any = None) -> ApplyResult:
        """Make the library exactly `lessons` ({id: text}), keeping valid ids ("G3") and giving the
        others new ones. Texts are kept as given, whitespace aside (a lesson is one line): the word
        limit is for what the critic writes, not for what is imported. Entries that are empty, not text
        or a duplicate of an earlier one are skipped with reasons. One new version."""
        return self._planned(lambda: self._replace_all(lessons, kind, context))

    def _replace_all(self, lessons: Mapping[Any, object], kind: str, context: Any) -> ApplyResult:
        result: dict[str, str] = {}
        skipped: list[Skipped] = []
        pending: list[tuple[object, str]] = []
        seen: dict[str, str] = {}
        for key, value in lessons.items():
            text = " ".join(value.split()) if isinstance(value, str) else ""
            op = Operation("add", text=text if text else str(value)[:200], id=normalize_id(key))
            if not text:
                skipped.append(Skipped(op, f"entry {key!r:.40}: empty or not text"))
                continue
            if replace_surrogates(text) != text:
                text = replace_surrogates(text)
                skipped.append(Skipped(op, f"entry {key!r:.40}: a lone surrogate replaced by U+FFFD; kept"))
            fp = _fingerprint(text)
            if fp in seen:
                skipped.append(Skipped(op, f"entry {key!r:.40}: duplicate of {seen[fp]}"))
                continue
            norm = normalize_id(key)
            if norm is not None and norm not in result:
                result[norm] = text
                seen[fp] = norm
            else:
                pending.append((key, text))
                seen[fp] = "(new)"
        next_id = max([self._next_id, *(_id_number(i) + 1 for i in result)])
        for key, text in pending:
            if next_id > MAX_LESSON_ID:
                skipped.append(Skipped(Operation("add", text), f"entry {key!r:.40}: {_NO_ID_LEFT}"))
                continue
            result[f"G{next_id}"] = text
            skipped.append(Skipped(Operation("add", text), f"entry {key!r:.40} has no usable id; stored as G{next_id}"))
            next_id += 1
        ordered = dict(sorted(result.items(), key=lambda kv: _id_number(kv[0])))
        applied = [Operation("add", text=t, id=i) for i, t in ordered.items()]
        version = self._commit(ordered, next_id, None, kind, applied, skipped, context, None)
        for item in skipped:
            log.warning("lesson import: %s", item.reason)
        return ApplyResult(version, applied, skipped)

    # ------------------------------------------------------------ import/export

    def to_dict(self) -> dict[str, str]:
        """The official implementation's format: {"G0": "text", ...}."""
        return self.lessons

    def export_json(self, path: str | os.PathLike) -> None:
        """Write the lessons as {"G0": "text", ...} (atomically)."""
        data = self.lessons
        atomic_write(path, lambda f: json.dump(data, f, ensure_ascii=False, indent=2))

    def export_text(self, path: str | os.PathLike, instruction: str | None = None) -> None:
        """Write the lessons as a plain system-prompt text file (the instruction, then `[G3]. text` lines)."""
        text = self.render(instruction)
        _write_text(path, text + ("\n" if text else ""))

    def import_json(self, path: str | os.PathLike) -> ApplyResult:
        """Replace the lessons with those of a {"G0": "text", ...} file (a list of strings works too)."""
        data = read_text_file(path)
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise LibraryFormatError(f'{path} is not JSON ({exc}); expected {{"G0": "lesson", ...}}') from None
        if isinstance(value, list):
            value = {str(i): v for i, v in enumerate(value)}
        if not isinstance(value, dict):
            raise LibraryFormatError(f'{path} holds a JSON {type(value).__name__}; expected {{"G0": "lesson", ...}}')
        return self.replace_all(value, context={"imported_from": str(path)})

    def import_text(self, path: str | os.PathLike) -> ApplyResult:
        """Replace the lessons with the `[G3]. text` lines (or "G3: text", or bullets) of a text file;
        other lines (the instruction) are ignored."""
        entries: dict[object, object] = {}
        for n, line in enumerate(read_text_file(path).splitlines()):
            match = re.match(r"^\s*\[?(G\d{1,9})\]?\s*[.:)\-]\s*(.+)$", line, flags=re.IGNORECASE)
            bullet = re.match(r"^\s*[-*•]\s+(\S.*)$", line)
            if match:
                entries[match.group(1)] = match.group(2)
            elif bullet:
                entries[f"line {n + 1}"] = bullet.group(1)
        return self.replace_all(entries, context={"imported_from": str(path)})

    def import_agent_yaml(self, path: str | os.PathLike) -> ApplyResult:
        """Replace the lessons with the experiences of a youtu-agent agent YAML (the paper's code; see
        `formats`): every `[Gn]. text` line, ids and texts as in the file. A file that is not such a
        config (malformed, another YAML, wrong types, binary) raises `LibraryFormatError` first."""
        agent = read_agent_yaml(path)
        entries: dict[str, str] = {}
        for lesson_id, text in agent.lessons:
            # A repeated id keeps its lesson, under a new id (stored with a reason).
            entries[lesson_id if lesson_id not in entries else f"{lesson_id} (repeated)"] = text
        return self.replace_all(entries, context={"imported_from": str(path), "format": "youtu-agent yaml"})

    def export_agent_yaml(self, path: str | os.PathLike, base: str | os.PathLike | None = None) -> None:
        """Write the lessons as the experiences of a youtu-agent agent YAML (atomically).

        The rest of the config comes from `base` when given, else from the agent YAML already at `path`
        (so exporting into an agent config replaces its experiences and keeps everything else), else it
        is a minimal simple-agent config. A `base` (or existing file) that is not an agent config raises
        `LibraryFormatError` and nothing is written."""
        source = base if base is not None else (path if Path(path).exists() else None)
        _write_text(path, agent_yaml_text(self.lessons, None if source is None else read_agent_yaml(source)))

    def restore(self, versions: Sequence[Version], next_id: int, progress: dict | None) -> None:
        """Make this library, which holds no change yet (version 0 only), hold these versions, every one
        as it was, with the id counter and the training position (a copy of another library)."""
        if [v.version for v in versions] != list(range(len(versions))) or not versions:
            raise LibraryFormatError("lesson versions to restore must be numbered 0, 1, 2, ... without a gap")
        used = [_id_number(i) + 1 for v in versions for i in v.lessons]
        with self._lock:
            with self._writing() as tx:
                if self._version != 0:
                    raise ConfigError(
                        f"{self.where} already holds lessons (version {self._version}); copy into an empty one"
                    )
                tx.execute("DELETE FROM lesson_versions")
                for v in versions:
                    self._insert_version(
                        tx, v.version, v.lessons, v.step, v.kind, v.applied, v.skipped, v.context, created=v.created
                    )
                self._put(tx, "next_id", max([next_id, *used]))
                if progress is not None:
                    self._put(tx, "progress", progress)
            self._load()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LessonLibrary:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    @dataclass
    class _Outcome:
        applied: Operation | None
        skip_reason: str = ""

    def _fit(self, text: str) -> tuple[str, str]:
        """A lesson text within the word limit, with a note when it was shortened."""
        count = word_count(text)
        if count <= self.max_words:
            return text, ""
        short = shorten(text, self.max_words)
        return short, f"lesson had {count} words (limit {self.max_words}); shortened"

    def _apply_one(self, op: Operation, draft: _Draft) -> _Outcome:
        Outcome = LessonLibrary._Outcome
        lessons = draft.lessons  # read here; every change goes through draft
        removed: list[str]
        if op.kind == "none":
            return Outcome(op)
        if op.kind not in ("add", "update", "delete", "merge"):
            return Outcome(None, f"unknown operation {op.kind!r}")

        if op.kind == "delete":
            if op.id is None:
                return Outcome(None, "delete without a lesson id")
            if op.id not in lessons:
                return Outcome(None, f"delete of {op.id}, which does not exist")
            draft.remove(op.id)
            return Outcome(Operation("delete", id=op.id, reason=op.reason))

        # add, update and merge carry a text
        if not op.text:
            return Outcome(None, f"{op.kind} with an empty lesson")
        if not _WORD.search(op.text):
            # What a small critic writes when it copies the prompt's placeholder "...".
            return Outcome(None, f"{op.kind} with a lesson that has no words ({op.text!r:.60})")
        cleaned = replace_surrogates(op.text)
        text, note = self._fit(cleaned)
        notes = [note] if note else []
        if cleaned != op.text:
            notes.append("a lone surrogate (not text) in the lesson replaced by U+FFFD")

        if op.kind == "merge":
            existing = list(dict.fromkeys(i for i in op.ids if i in lessons))  # a repeated id merges once
            invented = [i for i in op.ids if i not in lessons]
            if invented:
                notes.append(f"merge named lessons that do not exist ({', '.join(invented)}); dropped them")
            if not existing:
                notes.append("no lesson left to merge; added as a new lesson")
                op_kind, target, removed = "add", "", []
            elif len(existing) == 1:
                notes.append(f"only {existing[0]} left to merge; updated it instead")
                op_kind, target, removed = "update", existing[0], []
            else:
                op_kind, target, removed = "merge", existing[0], existing[1:]
        elif op.kind == "update":
            if op.id is None or op.id not in lessons:
                what = "update without a lesson id" if op.id is None else f"update of {op.id}, which does not exist"
                notes.append(f"{what}; added as a new lesson")
                op_kind, target, removed = "add", "", []
            else:
                op_kind, target, removed = "update", op.id, []
        else:
            op_kind, target, removed = "add", "", []  # an add's target is its new id, chosen below

        ignore = ([target] if target else []) + removed
        duplicate = draft.duplicate_of(text, ignore)
        if duplicate is not None:
            if op_kind == "merge":
                # The merged text already exists elsewhere: the merged lessons are redundant with it.
                for lesson_id in [target, *removed]:
                    draft.remove(lesson_id)
                notes.append(f"merged lesson duplicates {duplicate}; deleted {', '.join([target, *removed])}")
                done = Operation("merge", text=lessons[duplicate], id=duplicate, ids=(target, *removed))
                return Outcome(done, "; ".join(notes))
            notes.append(f"duplicate of {duplicate}; skipped")
            return Outcome(None, "; ".join(notes))
        if op_kind == "update" and lessons[target] == text:
            notes.append(f"update leaves {target} unchanged; skipped")
            return Outcome(None, "; ".join(notes))

        if op_kind == "add" and draft.next_id > MAX_LESSON_ID:
            return Outcome(None, "; ".join([*notes, _NO_ID_LEFT]))
        if op_kind == "add":
            target = f"G{draft.next_id}"
            draft.next_id += 1
            draft.set(target, text)
            done = Operation("add", text=text, id=target, reason=op.reason)
        elif op_kind == "update":
            draft.set(target, text)
            done = Operation("update", text=text, id=target, reason=op.reason)
        else:
            draft.set(target, text)
            for lesson_id in removed:
                draft.remove(lesson_id)
            done = Operation("merge", text=text, id=target, ids=(target, *removed), reason=op.reason)
        return Outcome(done, "; ".join(notes))

    def _creating(self) -> Any:
        return self._db.creating()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Transaction]:
        """A write transaction that goes ahead only on top of the version this process holds (else
        `_Stale`): the lock on the `next_id` row keeps other writers out until it ends."""
        with self._db.writing() as tx:
            tx.execute("SELECT value FROM lesson_meta WHERE key = 'next_id'" + self._db.dialect.for_update)
            (latest,) = tx.execute("SELECT MAX(version) FROM lesson_versions").fetchone()
            if latest != self._version:
                raise _Stale
            yield tx

    def _meta(self, key: str) -> Any:
        rows = self._db.query("SELECT value FROM lesson_meta WHERE key = ?", (key,))
        return None if not rows else json.loads(rows[0][0])

    @staticmethod
    def _put(tx: Transaction, key: str, value: Any) -> None:
        tx.execute(upsert("lesson_meta", ("key", "value"), ("key",)), (key, json.dumps(value)))

    def _load(self) -> None:
        with self._db.reading() as tx:
            meta = dict(tx.execute("SELECT key, value FROM lesson_meta").fetchall())
            row = tx.execute("SELECT version, lessons FROM lesson_versions ORDER BY version DESC LIMIT 1").fetchone()
        try:
            schema = json.loads(meta.get("schema_version", "null"))
            next_id = int(json.loads(meta.get("next_id", "0")) or 0)
            if row is None:
                raise ValueError("no version is stored")
            lessons = {str(k): str(v) for k, v in json.loads(row[1]).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise LibraryFormatError(f"{self.where}: stored lessons are damaged: {exc}") from None
        if isinstance(schema, int):
            check_version(self.where, schema, SCHEMA_VERSION)
        self._version, self._lessons, self._next_id = row[0], lessons, next_id

    def _insert_version(
        self, tx: Transaction, version, lessons, step, kind, applied, skipped, context, created: float | None = None
    ) -> None:
        tx.execute(
            "INSERT INTO lesson_versions(version, created, step, kind, lessons, applied, skipped, context) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                version,
                time.time() if created is None else created,
                step,
                kind,
                # Reasons, the skipped proposals and the context hold model output as it came: stored
                # so that any text can be (a lone surrogate as U+FFFD).
                json_text(lessons),
                json_text([op.to_dict() for op in applied]),
                json_text([s.to_dict() for s in skipped]),
                None if context is None else json_text(context, default=str),
            ),
        )

    def _commit(self, lessons, next_id, step, kind, applied, skipped, context, progress) -> int:
        version = self._version + 1
        with self._writing() as tx:
            self._insert_version(tx, version, lessons, step, kind, applied, skipped, context)
            self._put(tx, "next_id", next_id)
            if progress is not None:
                self._put(tx, "progress", progress)
        self._version, self._lessons, self._next_id = version, dict(lessons), next_id
        return version

    def _commit_rejected(self, lessons, next_id, step, applied, skipped, context, progress) -> int:
        rejected = self._version + 1
        note = {"rollback_to": self._version, "note": f"candidate v{rejected} rejected"}
        with self._writing() as tx:
            self._insert_version(tx, rejected, lessons, step, "rejected", applied, skipped, context)
            self._insert_version(tx, rejected + 1, self._lessons, step, "rollback", [], [], note)
            self._put(tx, "next_id", next_id)
            if progress is not None:
                self._put(tx, "progress", progress)
        self._version, self._next_id = rejected + 1, next_id
        return rejected

    def _row_to_version(self, row) -> Version:
        version, created, step, kind, lessons, applied, skipped, context = row
        return Version(
            version,
            created,
            step,
            kind,
            json.loads(lessons),
            [Operation.from_dict(d) for d in json.loads(applied)],
            [Skipped.from_dict(d) for d in json.loads(skipped)],
            None if context is None else json.loads(context),
        )


def _write_text(path: str | os.PathLike, text: str) -> None:
    def write(f: IO[str]) -> None:
        f.write(text)

    atomic_write(path, write)
