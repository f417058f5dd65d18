"""Fine-tuning data from a library and its rollout log: `tfgrpo export --format sft|dpo|grpo|kto OUT.jsonl`
and `tfgrpo.export_dataset(library, format, path, **filters)`.

One JSON object per line, in the formats TRL documents for its trainers (they load with Hugging Face
`datasets`: `load_dataset("json", data_files=OUT)`). Conversational by default (chat messages); `plain`
writes the standard form (strings):

- `sft` (SFTTrainer): the library's experiences, what it kept after pruning, each prompt and response
  once (a prompt answered alike in several epochs is one row, not a weight on the prompts trained most):
  `{"messages": [user, assistant]}`; plain `{"prompt", "completion"}`.
- `dpo` (DPOTrainer): per logged group, its best rollout (chosen) against its worst (rejected), when their
  rewards differ by at least `min_gap`: `{"prompt", "chosen", "rejected"}`. The prompt is the task's, not
  the prompt as sent with examples and lessons; a group whose best and worst do not share one prompt
  gives no pair.
- `grpo` (GRPOTrainer): each prompt of the log once, with its sample's other fields (the reference answer,
  tests) as columns, which TRL hands to the reward functions: `{"prompt", "answer", ...}`.
- `kto` (KTOTrainer): each logged rollout whose reward differs from its group's mean: `{"prompt",
  "completion", "label"}`, label true when above the mean.

`with_lessons`: the library's current lessons in a system message of every row (plain: before the prompt).

Filters (`learn.rollout_log.Filters`) select the log's rollouts: task, metadata (`where`), reward, library
and lessons version, date, and source. By default only rollouts on training prompts count (`train`,
`serve`, `learn-from-log`): evaluation's prompts are held out, and fine-tuning on them would spoil every
later evaluation. The reward bounds select: `sft`, `kto`, the rollout; `dpo`, the chosen one; `grpo`, the
group's mean reward (a prompt is written once, from the first of its groups that passes). `sft` reads the
experiences; with any filter, only those whose rollout is in the log and passes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import IO, Any

from ..core.files import atomic_write
from ..core.store import connect_db, is_store_target, read_library, shown_target, store_exists
from ..errors import ConfigError, LibraryNotFoundError
from .rollout_log import TRAINING_SOURCES, Filters, LoggedRollout, read_rows

FORMATS = ("sft", "dpo", "grpo", "kto")
FILTERS = (
    "task", "where", "min_reward", "max_reward", "min_library_version", "min_lessons_version", "since", "until",
    "sources",
)  # fmt: skip
DEFAULT_MIN_GAP = 0.5


def export_dataset(
    library: str | os.PathLike,
    format: str,
    path: str | os.PathLike,
    *,
    plain: bool = False,
    with_lessons: bool = False,
    min_gap: float = DEFAULT_MIN_GAP,
    **filters: Any,
) -> int:
    """Write `library`'s rows in `format` (sft, dpo, grpo, kto; see the module's docstring) to `path`, a
    JSON-lines file replaced atomically; returns how many rows it holds. `filters`: task, where (metadata
    key -> value), min_reward, max_reward, min_library_version, min_lessons_version, since and until (Unix
    seconds, a datetime, or an ISO date such as "2025-01-31", UTC when no zone is given), sources (of
    train, eval, attribute, serve, log; default train, serve, log)."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: one of {', '.join(FORMATS)}")
    if isinstance(min_gap, bool) or not isinstance(min_gap, (int, float)) or not min_gap >= 0:
        raise ConfigError(f"min_gap must be a number >= 0, got {min_gap!r}")
    chosen = make_filters(**filters)
    target = str(library)
    if not is_store_target(target):
        raise ConfigError(
            f"{target} is not an SQLite or PostgreSQL library: the rollout log, which the export reads, lives in one"
        )
    if not store_exists(target):
        raise LibraryNotFoundError(f"no library at {shown_target(target)}")
    system = _lessons(target) if with_lessons else None
    shape = _Shape(plain, system)
    db = connect_db(target)
    try:
        if format == "sft":
            rows = _sft(target, db, chosen, shape, filtered=chosen != Filters())
        elif format == "dpo":
            rows = _dpo(db, chosen, shape, float(min_gap))
        elif format == "grpo":
            rows = _grpo(db, chosen, shape)
        else:
            rows = _kto(db, chosen, shape)
        count = [0]

        def write(f: IO[str]) -> None:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count[0] += 1

        atomic_write(path, write)
    finally:
        db.close()
    return count[0]


def make_filters(
    *,
    task: str | None = None,
    where: Mapping[str, str] | Sequence[str] | None = None,
    min_reward: float | None = None,
    max_reward: float | None = None,
    min_library_version: int | None = None,
    min_lessons_version: int | None = None,
    since: Any = None,
    until: Any = None,
    sources: str | Sequence[str] | None = None,
    **unknown: Any,
) -> Filters:
    """`Filters` from the export's keywords, checked (an unknown keyword is refused, naming those there are)."""
    if unknown:
        raise ConfigError(f"unknown export filter {', '.join(sorted(unknown))}: the filters are {', '.join(FILTERS)}")
    pairs: dict[str, str] = {}
    if isinstance(where, Mapping):
        pairs = {str(k): str(v) for k, v in where.items()}
    elif where is not None:
        for item in [where] if isinstance(where, str) else where:
            key, sep, text = str(item).partition("=")
            if not sep:
                raise ConfigError(f"a metadata filter is KEY=VALUE, got {item!r}")
            pairs[key] = text
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",") if s.strip()]
    for name, version in (("min_library_version", min_library_version), ("min_lessons_version", min_lessons_version)):
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise ConfigError(f"{name} must be a whole number, got {version!r}")
    return Filters(
        task=task,
        where=pairs or None,
        min_reward=_number("min_reward", min_reward),
        max_reward=_number("max_reward", max_reward),
        min_library_version=min_library_version,
        min_lessons_version=min_lessons_version,
        since=when("since", since),
        until=when("until", until),
        sources=tuple(sources) if sources else TRAINING_SOURCES,
    )


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def when(name: str, value: Any) -> float | None:
    """Unix seconds from a number (or its text), a datetime, or an ISO date or date-time (UTC unless it
    says otherwise)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise ConfigError(
                    f"{name}: {value!r} is neither a date (2025-01-31, 2025-01-31T12:00) nor Unix seconds"
                ) from None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return _number(name, value)


class _Shape:
    """How a row's prompt and answer are written: chat messages or strings, with the lessons or not."""

    def __init__(self, plain: bool, system: str | None) -> None:
        self.plain = plain
        self.system = system

    def prompt(self, text: str, messages: list[dict] | None = None) -> Any:
        if self.plain:
            return f"{self.system}\n\n{text}" if self.system else text
        given = [dict(m) for m in messages] if messages else [{"role": "user", "content": text}]
        if self.system:
            if given and given[0].get("role") == "system":
                given[0]["content"] = f"{self.system}\n\n{given[0].get('content') or ''}".rstrip()
            else:
                given.insert(0, {"role": "system", "content": self.system})
        return given

    def answer(self, text: str) -> Any:
        return text if self.plain else [{"role": "assistant", "content": text}]


def _lessons(target: str) -> str | None:
    from ..semantic.lessons import LessonLibrary

    if not LessonLibrary.present_in(target):
        return None
    with LessonLibrary(target, refresh_interval=None) as lessons:
        return lessons.render() or None


def _key(prompt: str, response: str) -> bytes:
    return hashlib.sha1(f"{prompt}\0{response}".encode("utf-8", "surrogatepass")).digest()


def _sft(target: str, db, filters: Filters, shape: _Shape, filtered: bool) -> Iterator[dict]:
    experiences = read_library(target).experiences
    if filtered:  # only experiences whose rollout is in the log and passes
        wanted = {_key(e.prompt, e.response) for e in experiences}
        passed: set[bytes] = set()
        for row in read_rows(db, filters):
            key = _key(row.prompt, row.response)
            if key in wanted:
                passed.add(key)
        experiences = [e for e in experiences if _key(e.prompt, e.response) in passed]
    written: set[bytes] = set()
    for e in experiences:
        key = _key(e.prompt, e.response)
        if key in written:
            continue
        written.add(key)
        if shape.plain:
            yield {"prompt": shape.prompt(e.prompt), "completion": e.response}
        else:
            yield {"messages": [*shape.prompt(e.prompt), {"role": "assistant", "content": e.response}]}


def groups(db, filters: Filters) -> Iterator[list[LoggedRollout]]:
    """The log's groups (rows that pass `filters` but its reward bounds), each in rollout order."""
    group: list[LoggedRollout] = []
    for row in read_rows(db, filters.without_reward(), by_group=True):
        if group and row.group_id != group[0].group_id:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _dpo(db, filters: Filters, shape: _Shape, min_gap: float) -> Iterator[dict]:
    for group in groups(db, filters):
        scored = [r for r in group if r.reward is not None]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda r: r.reward)  # type: ignore[arg-type,return-value]
        worst = min(scored, key=lambda r: r.reward)  # type: ignore[arg-type,return-value]
        if best.prompt != worst.prompt or best.reward - worst.reward < min_gap:  # type: ignore[operator]
            continue
        if not filters.reward_ok(best.reward):
            continue
        yield {
            "prompt": shape.prompt(best.prompt, best.messages),
            "chosen": shape.answer(best.response),
            "rejected": shape.answer(worst.response),
        }


def _grpo(db, filters: Filters, shape: _Shape) -> Iterator[dict]:
    seen: set[bytes] = set()
    for group in groups(db, filters):
        rewards = [r.reward for r in group if r.reward is not None]
        if not filters.reward_ok(sum(rewards) / len(rewards) if rewards else None):
            continue
        first = group[0]
        key = _key(first.prompt, "")
        if key in seen:
            continue
        seen.add(key)
        fields = {k: v for k, v in (first.sample or {}).items() if k not in ("prompt", "messages")}
        yield {"prompt": shape.prompt(first.prompt, first.messages), **fields}


def _kto(db, filters: Filters, shape: _Shape) -> Iterator[dict]:
    for row in read_rows(db, filters):
        if row.advantage is None or row.advantage == 0:
            continue
        yield {
            "prompt": shape.prompt(row.prompt, row.messages),
            "completion": shape.answer(row.response),
            "label": row.advantage > 0,
        }
