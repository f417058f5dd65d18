"""`tfgrpo learn-from-log`: a library learns from a log of rollouts and rewards you already have (production
logs with thumbs, test results, conversions), through the same update strategies as training, without
running a single prompt through a model again.

The file is streamed in windows of `window` lines (`learn/ingest.py` says how records are read and
grouped); each window's groups are committed by each strategy in one transaction together with the
position reached (the window's number, line and byte offset, under a digest of the file's first line in
the strategy's stored progress), so a run that is stopped resumes after the last window committed, and a
log that grew since is read on from there (a file whose content before that position changed is
refused). Memory holds one window, whatever the file's size. A malformed line is reported with its number
and skipped (`strict`: the run stops there, after the windows before it were committed). Each window's
rollouts go to the rollout log first (source "log"), under ids made of the file's digest and the line, so
a window read again rewrites them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.knobs import check_knobs, knob
from ..errors import ConfigError, DatasetError, DatasetNotFoundError
from ..learn.ingest import MAX_LINE_BYTES, LogRecord, fingerprint, group_window, read_lines, tail_digest
from ..learn.rollout_log import LoggedRollout, RolloutLog, advantages
from ..learn.update import StepContext, Update
from ..llm.cache import LLMCache
from ._progress import Progress

log = logging.getLogger("tfgrpo.from_log")

LOGS = "logs"
"""The key of a strategy's stored progress under which each log file's position is kept."""


@dataclass(frozen=True)
class FromLogConfig:
    """The knobs of `tfgrpo learn-from-log`."""

    window: int = knob(
        1000,
        "lines read (and held in memory) at a time; the records of one prompt within a window form a group, and "
        "each window is committed with the position reached",
        minimum=1,
    )
    max_group: int = knob(16, "most rollouts in one group (more records of the prompt start another)", minimum=2)
    strict: bool = knob(False, "stop at the first malformed line (after committing the windows before it)")
    max_line_bytes: int = knob(
        MAX_LINE_BYTES, "longest line read; a longer one is malformed", minimum=64, maximum=2**31
    )
    task: str = knob("log", "the task name the experiences and the logged rollouts get")

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass
class FromLogReport:
    """What a run read and learned."""

    path: str
    lines: int = 0
    """Lines read in this run (after the position it resumed at)."""
    records: int = 0
    rollouts: int = 0
    groups: int = 0
    """Groups of two rollouts or more (the ones learned from; a lone rollout is only logged)."""
    groups_with_signal: int = 0
    windows: int = 0
    """Windows committed in this run."""
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    """(line, why) of every malformed line (the first 1,000)."""
    bad_count: int = 0
    resumed_at: int = 0
    """The line this run started after (0: the beginning)."""
    seconds: float = 0.0
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per strategy, the figures of its last commit."""

    def summary(self) -> str:
        rate = self.lines / self.seconds if self.seconds else 0.0
        start = f" (resumed after line {self.resumed_at})" if self.resumed_at else ""
        return (
            f"{self.path}: {self.lines} lines{start}, {self.records} records, {self.rollouts} rollouts in "
            f"{self.groups} groups ({self.groups_with_signal} with signal), {self.windows} windows committed, "
            f"{self.bad_count} malformed lines skipped; {rate:,.0f} lines/s"
        )


def learn_from_log(
    path: str | os.PathLike,
    updates: Sequence[Update],
    config: FromLogConfig = FromLogConfig(),
    *,
    rollout_log: RolloutLog | None = None,
    cache: LLMCache | None = None,
    show_progress: bool = True,
) -> FromLogReport:
    """Stream the log at `path` into `updates` (`ExampleUpdate`, `LessonUpdate`), resuming where a previous
    run over the same file stopped. `rollout_log`: its records are logged there (source "log"); `cache`:
    the critic's calls go through it (a resumed run pays once). Raises `DatasetError` for a malformed line
    with `config.strict`, `DatasetNotFoundError` when there is no file."""
    if not updates:
        raise ConfigError("learn-from-log needs at least one update strategy (ExampleUpdate, LessonUpdate)")
    started = time.perf_counter()
    name = str(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no log file at {name}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {name}: {exc}") from None
    report = FromLogReport(name)
    with f:
        fp = fingerprint(f)
        done = {u.name: _position(u, fp) for u in updates}
        start = min(done.values(), key=lambda p: p["window"])
        size = os.fstat(f.fileno()).st_size
        for update, position in zip(updates, done.values()):
            if position["offset"] and (
                position["offset"] > size or tail_digest(f, position["offset"]) != position["tail"]
            ):
                raise ConfigError(
                    f"{name} is not the log the library's {update.name} learned up to line {position['line']} "
                    "(it begins the same but differs before that line): learn it into another library, or start a "
                    "log that begins with another line"
                )
        report.resumed_at = start["line"]
        if start["offset"]:
            log.info("resuming %s after line %d (window %d)", name, start["line"], start["window"])
        f.seek(start["offset"])
        display = (
            Progress(max(size, 1), "byte", label="learn-from-log", done=start["offset"]) if show_progress else None
        )
        shown = 0.0
        window, last, end, lines = start["window"], start["line"], start["offset"], 0
        records: list[LogRecord] = []

        def commit() -> None:
            nonlocal window, lines, records, shown
            window += 1
            tail = tail_digest(f, end)
            _commit(window, records, last, end, tail, fp, updates, done, config, rollout_log, cache, report)
            report.lines += lines
            lines, records = 0, []
            if display is not None and (time.monotonic() - shown >= 1.0 or end >= size):
                shown = time.monotonic()
                display.update(end, _progress_text(report, last))

        try:
            for line in read_lines(f, start["line"], config.max_line_bytes):
                lines, last, end = lines + 1, line.number, line.end
                if line.error:
                    _bad(report, line.number, line.error, name, config.strict)
                elif line.record is not None:
                    records.append(line.record)
                if lines == config.window:
                    commit()
            if lines:
                commit()
        finally:
            if display is not None:
                display.close()
    report.seconds = time.perf_counter() - started
    return report


def _position(update: Update, fp: str) -> dict[str, Any]:
    position = ((update.progress() or {}).get(LOGS) or {}).get(fp) or {}
    try:
        return {
            **{key: int(position.get(key, 0)) for key in ("window", "line", "offset")},
            "tail": position.get("tail"),
        }
    except (TypeError, ValueError, AttributeError):
        raise ConfigError(f"the stored position of this log in the library's {update.name} is damaged") from None


def _bad(report: FromLogReport, number: int, why: str, name: str, strict: bool) -> None:
    if strict:
        raise DatasetError(f"{name}:{number}: {why} (--strict stops here; the lines before it were learned)")
    report.bad_count += 1
    if len(report.bad_lines) < 1000:
        report.bad_lines.append((number, why))
    log.warning("%s:%d: %s; skipped", name, number, why)


def _commit(
    window: int,
    records: list[LogRecord],
    last_line: int,
    end: int,
    tail: str,
    fp: str,
    updates: Sequence[Update],
    done: dict[str, dict[str, Any]],
    config: FromLogConfig,
    rollout_log: RolloutLog | None,
    cache: LLMCache | None,
    report: FromLogReport,
) -> None:
    """One window: its groups logged, then committed by every strategy that has not committed it, each with
    its stored progress and this position."""
    formed = group_window(records, config.max_group)
    groups = [g for g, _ in formed if len(g.responses) > 1]  # (one rollout: nothing to compare it with)
    learning = [u for u in updates if done[u.name]["window"] < window]
    if rollout_log is not None and learning:
        rollout_log.write(_logged(formed, fp, window, config.task, "+".join(u.name for u in learning)))
    here = {"window": window, "line": last_line, "offset": end, "tail": tail}
    for update in learning:
        stored = update.progress() or {}
        position = {**stored, LOGS: {**(stored.get(LOGS) or {}), fp: here}}
        ctx = StepContext(seed=window, global_step=window, position=position, cache=cache)
        report.updates[update.name] = update.commit(groups, ctx)  # (with no group: the position alone)
        done[update.name] = here
    report.windows += 1
    report.records += len(records)
    report.rollouts += sum(len(g.responses) for g, _ in formed)
    report.groups += len(groups)
    report.groups_with_signal += sum(g.has_signal for g in groups)


def _logged(formed, fp: str, window: int, task: str, strategy: str) -> list[LoggedRollout]:
    rows = []
    now = time.time()
    for group, members in formed:
        group_id = f"log:{fp}:{members[0].line}"
        values = advantages(group.rewards)
        k = 0
        for record in members:
            sample = {**(record.sample or {}), **({"messages": record.messages} if record.messages else {})}
            for choice, (text, reward) in enumerate(zip(record.responses, record.rewards)):
                rows.append(
                    LoggedRollout(
                        id=f"log:{fp}:{record.line}:{choice}",
                        group_id=group_id,
                        index=k,
                        prompt=record.prompt,
                        response=text,
                        source="log",
                        run=fp,
                        created=record.timestamp if record.timestamp is not None else now,
                        reward=reward,
                        advantage=values[k],
                        step=window,
                        task=task,
                        sample_id=f"line-{record.line}",
                        strategy=strategy,
                        model=record.model,
                        prompt_tokens=record.prompt_tokens,
                        completion_tokens=record.completion_tokens,
                        sample=sample or None,
                        metadata={"task": task, **(record.metadata or {})},
                    )
                )
                k += 1
    return rows


def _progress_text(report: FromLogReport, line: int) -> str:
    return f"line {line:,} | {report.groups:,} groups, {report.groups_with_signal:,} with signal"
