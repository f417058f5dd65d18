"""The rollout log: every rollout tfgrpo makes or is given (`train`, `eval`, `attribute`, `serve`,
`learn-from-log`), kept in the library's own database (the same SQLite file, or PostgreSQL) whatever the
experience library keeps or prunes.

A row is one rollout: the task's prompt and the prompt as sent (with the examples and lessons it carried),
the response (an agent's run as its transcript, and the run itself), the reward and its reason, the group
it was scored in with its advantage (its reward minus the group's mean reward: the spec's advantage, before
any scaling a library's config asks for), the strategies that learned from it, the versions of the library
and of the lessons its prompt was built from, the model, tokens and seconds, and the sample's other fields
(a reference answer, tests). What it is for: fine-tuning data (`learn/export.py`), and knowing afterwards
what every prompt was and what came back.

Rows are written in batches: one transaction per training step (before the step's commit), per
evaluation batch, and inside the transaction of `tfgrpo serve`'s records. A row's id says where it came
from (source, run, step, condition, group, rollout), so a rollout written again (a step run again after
a restart) replaces its row instead of adding a second one.

Tables (schema 1, their own version in `rollout_meta`, as the lessons keep theirs): `rollout_meta` (key ->
JSON: `schema_version`, `retention_days`) and `rollout_log`. Retention: rows older than the library's
`retention_days` (none: kept for ever) are deleted as rows are written, at most once a minute per writer.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..agents.trajectory import TOOL_CHARS, Trajectory
from ..core.experience import json_text
from ..core.knobs import check_knobs, knob
from ..core.store import connect_db
from ..core.store.sql import Database, Transaction, check_version, upsert
from ..errors import ConfigError, LibraryFormatError, StoreError
from ..llm.base import Prompt
from ..rewards.base import Score

SCHEMA_VERSION = 1
SOURCES = ("train", "eval", "attribute", "serve", "log")
TRAINING_SOURCES = ("train", "serve", "log")
"""Where rollouts on training prompts come from: what an export reads unless told otherwise (evaluation
and attribution roll out on held-out prompts, which fine-tuning must not see)."""
PRUNE_EVERY_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollout_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_log (
    id TEXT PRIMARY KEY,
    created {real} NOT NULL,
    source TEXT NOT NULL,
    run TEXT NOT NULL,
    step {int},
    condition TEXT,
    group_id TEXT NOT NULL,
    rollout {int} NOT NULL,
    task TEXT,
    sample_id TEXT,
    prompt TEXT NOT NULL,
    sent TEXT,
    response TEXT NOT NULL,
    trajectory TEXT,
    reward {real},
    reason TEXT,
    advantage {real},
    strategy TEXT,
    library_version {int},
    lessons_version {int},
    model TEXT,
    prompt_tokens {int},
    completion_tokens {int},
    seconds {real},
    sample TEXT,
    metadata TEXT
);
CREATE INDEX IF NOT EXISTS rollout_log_created ON rollout_log(created);
CREATE INDEX IF NOT EXISTS rollout_log_group ON rollout_log(group_id, rollout)
"""
COLUMNS = (
    "id", "created", "source", "run", "step", "condition", "group_id", "rollout", "task", "sample_id", "prompt",
    "sent", "response", "trajectory", "reward", "reason", "advantage", "strategy", "library_version",
    "lessons_version", "model", "prompt_tokens", "completion_tokens", "seconds", "sample", "metadata",
)  # fmt: skip
_JSON_COLUMNS = ("sent", "trajectory", "sample", "metadata")
_PUT = upsert("rollout_log", COLUMNS, ("id",))
_PAGE = 2000


@dataclass(frozen=True)
class RolloutLogConfig:
    """The rollout log's knobs on every command that rolls out (`--no-rollout-log`, `--rollout-log-days`)."""

    rollout_log: bool = knob(
        True,
        "keep every rollout (prompt as given and as sent, response, reward, group, advantage, model, tokens) in "
        "the library's database, for `tfgrpo export --format sft|dpo|grpo|kto` (an SQLite or PostgreSQL library)",
    )
    rollout_log_days: float | None = knob(
        None,
        "delete logged rollouts older than this many days (0: keep them for ever); stored in the library, so "
        "it holds for every later command until set again (default: as the library says; for ever)",
        minimum=0.0,
    )

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class LoggedRollout:
    """One row of the rollout log."""

    id: str
    group_id: str
    index: int
    """The rollout's place in its group."""
    prompt: str
    """The task's prompt (what the experience library keys an experience by), before examples and lessons."""
    response: str
    """What the library stores of it: a completion's text, an agent run's transcript (tool results cut to
    `TOOL_CHARS`; the whole run is in `trajectory`)."""
    source: str
    run: str
    created: float = 0.0
    reward: float | None = None
    """None until it is known (a served completion before its feedback)."""
    reason: str = ""
    advantage: float | None = None
    """Its reward minus its group's mean reward (None while the group is not complete)."""
    step: int | None = None
    condition: str | None = None
    """Evaluation: the condition; serve: "holdout" for a completion served without the library."""
    task: str | None = None
    sample_id: str | None = None
    sent: Any = None
    """The prompt as sent: its text, or its chat messages (with the examples and lessons)."""
    trajectory: dict | None = None
    """An agent's run (`Trajectory.to_dict`), when it was one."""
    strategy: str | None = None
    """The update strategies that learned from it ("examples", "lessons", "examples+lessons"), if any."""
    library_version: int | None = None
    lessons_version: int | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None
    sample: dict | None = None
    """The sample's other fields (a reference answer, tests; a logged record's chat messages)."""
    metadata: dict | None = None

    def row(self) -> tuple:
        values = []
        for name in COLUMNS:
            value = getattr(self, "index" if name == "rollout" else name)
            if name in _JSON_COLUMNS:
                value = None if value is None else json_text(value, default=str)
            values.append(value)
        return tuple(values)

    @classmethod
    def of_row(cls, row: Sequence[Any], where: str) -> LoggedRollout:
        values = dict(zip(COLUMNS, row))
        try:
            for name in _JSON_COLUMNS:
                if values[name] is not None:
                    values[name] = json.loads(values[name])
        except (ValueError, TypeError, RecursionError):
            raise LibraryFormatError(f"{where}: logged rollout {values['id']!r:.80} is damaged") from None
        values["index"] = values.pop("rollout")
        return cls(**values)

    @property
    def messages(self) -> list[dict[str, Any]] | None:
        """The chat messages a logged record gave as its prompt (None: the prompt is `prompt`'s text)."""
        messages = (self.sample or {}).get("messages")
        return messages if isinstance(messages, list) else None


@dataclass(frozen=True)
class Filters:
    """Which logged rollouts an export reads (every field None: no limit)."""

    task: str | None = None
    where: Mapping[str, str] | None = None
    """Metadata that must match exactly (key -> value)."""
    min_reward: float | None = None
    max_reward: float | None = None
    min_library_version: int | None = None
    min_lessons_version: int | None = None
    since: float | None = None
    """Unix seconds: rollouts logged at or after."""
    until: float | None = None
    """Unix seconds: rollouts logged before."""
    sources: tuple[str, ...] = TRAINING_SOURCES

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise ConfigError(f"sources must be some of {', '.join(SOURCES)}; got {', '.join(self.sources) or 'none'}")
        for name in ("min_reward", "max_reward", "since", "until"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")

    def without_reward(self) -> Filters:
        return replace(self, min_reward=None, max_reward=None)

    def reward_ok(self, reward: float | None) -> bool:
        if self.min_reward is None and self.max_reward is None:
            return True
        if reward is None:
            return False
        return (self.min_reward is None or reward >= self.min_reward) and (
            self.max_reward is None or reward <= self.max_reward
        )

    def sql(self) -> tuple[str, list[Any]]:
        """The filter as a WHERE clause over the table's columns (the metadata is matched in Python)."""
        clauses = [f"source IN ({', '.join('?' * len(self.sources))})"]
        params: list[Any] = list(self.sources)
        for column, op, value in (
            ("task", "=", self.task),
            ("reward", ">=", self.min_reward),
            ("reward", "<=", self.max_reward),
            ("library_version", ">=", self.min_library_version),
            ("lessons_version", ">=", self.min_lessons_version),
            ("created", ">=", self.since),
            ("created", "<", self.until),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        return " AND ".join(clauses), params

    def metadata_ok(self, rollout: LoggedRollout) -> bool:
        if not self.where:
            return True
        metadata = rollout.metadata or {}
        return all(str(metadata.get(key)) == value and key in metadata for key, value in self.where.items())


def create_tables(tx: Transaction, db: Database) -> float | None:
    """Make the log's tables where they are missing (in the caller's write transaction) and check their
    schema; the stored retention in days (None: for ever)."""
    for statement in db.dialect.ddl(_SCHEMA).split(";"):
        if statement.strip():
            tx.execute(statement)
    meta = dict(tx.execute("SELECT key, value FROM rollout_meta").fetchall())
    if "schema_version" not in meta:
        tx.execute(upsert("rollout_meta", ("key", "value"), ("key",)), ("schema_version", str(SCHEMA_VERSION)))
        return None
    try:
        schema = int(json.loads(meta["schema_version"]))
        days = json.loads(meta.get("retention_days", "null"))
    except (ValueError, TypeError):
        raise LibraryFormatError(f"{db.where}: the rollout log's settings are damaged") from None
    check_version(f"the rollout log in {db.where}", schema, SCHEMA_VERSION)
    return days if isinstance(days, (int, float)) and days > 0 else None


def write_rows(tx: Transaction, rollouts: Sequence[LoggedRollout]) -> None:
    """Rows into the log in the caller's transaction (a row with the id of one there replaces it)."""
    if rollouts:
        tx.executemany(_PUT, [r.row() for r in rollouts])


def set_rewards(tx: Transaction, rewards: Sequence[tuple[str, float]]) -> None:
    """(id, reward) of rows whose reward came later (a served completion's feedback)."""
    tx.executemany("UPDATE rollout_log SET reward = ? WHERE id = ?", [(r, i) for i, r in rewards])


def set_group(tx: Transaction, group_id: str, ids: Sequence[str], rewards: Sequence[float]) -> None:
    """The rows `ids`, scored `rewards`, became one group: its id and each one's advantage."""
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    tx.executemany(
        "UPDATE rollout_log SET group_id = ?, advantage = ?, reward = ? WHERE id = ?",
        [(group_id, r - mean, r, i) for i, r in zip(ids, rewards)],
    )


def advantages(rewards: Sequence[float]) -> list[float]:
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    return [r - mean for r in rewards]


class RolloutLog:
    """The rollout log in the database at `target` (an SQLite path, a `postgresql://` URL; None: in
    memory). `retention_days`, when given, becomes the library's setting (0: keep for ever)."""

    def __init__(
        self, target: str | os.PathLike | None, *, retention_days: float | None = None, clock=time.time
    ) -> None:
        if retention_days is not None and (isinstance(retention_days, bool) or not retention_days >= 0):
            raise ConfigError(f"retention_days must be a number of days >= 0, got {retention_days!r}")
        self._clock = clock
        self._db = connect_db(target)
        self.where = self._db.where
        try:
            with self._db.creating() as tx:
                self.retention_days = create_tables(tx, self._db)
                if retention_days is not None:
                    tx.execute(
                        upsert("rollout_meta", ("key", "value"), ("key",)),
                        ("retention_days", json.dumps(retention_days or None)),
                    )
                    self.retention_days = retention_days or None
        except BaseException:
            self._db.close()
            raise
        self._next_prune = 0.0

    def write(self, rollouts: Sequence[LoggedRollout]) -> None:
        """Rows in one transaction (and, at most once a minute, those past the retention deleted)."""
        if rollouts:
            try:
                with self._db.writing() as tx:
                    write_rows(tx, rollouts)
            except StoreError as exc:
                raise StoreError(f"cannot write the rollout log: {exc}") from None
        self.prune_if_due()

    def prune_if_due(self) -> int:
        now = time.monotonic()
        if self.retention_days is None or now < self._next_prune:
            return 0
        self._next_prune = now + PRUNE_EVERY_S
        return self.prune()

    def prune(self) -> int:
        """Delete the rows older than the retention; how many went."""
        if self.retention_days is None:
            return 0
        cutoff = self._clock() - self.retention_days * 86400
        with self._db.writing() as tx:
            (count,) = tx.execute("SELECT COUNT(*) FROM rollout_log WHERE created < ?", (cutoff,)).fetchone()
            if count:
                tx.execute("DELETE FROM rollout_log WHERE created < ?", (cutoff,))
        return count

    def rows(self, filters: Filters | None = None, *, by_group: bool = False) -> Iterator[LoggedRollout]:
        """The rows that pass `filters` (default: every row), oldest first, or group by group
        (`by_group`: ordered by group id, then rollout), read a page at a time."""
        return read_rows(self._db, filters, by_group=by_group)

    def __len__(self) -> int:
        return self._db.query("SELECT COUNT(*) FROM rollout_log")[0][0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RolloutLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_rows(db: Database, filters: Filters | None = None, *, by_group: bool = False) -> Iterator[LoggedRollout]:
    """`RolloutLog.rows` on an open database, which may hold no log (then: no rows; nothing is created)."""
    if "rollout_log" not in db.tables():
        return
    params: list[Any] = []
    if filters is None:
        clause = "1 = 1"
    else:
        clause, params = filters.sql()
    keys = ("group_id", "rollout") if by_group else ("created", "id")
    after: tuple | None = None
    while True:
        page_clause = clause
        page_params = list(params)
        if after is not None:
            page_clause += f" AND ({keys[0]} > ? OR ({keys[0]} = ? AND {keys[1]} > ?))"
            page_params += [after[0], after[0], after[1]]
        query = (
            f"SELECT {', '.join(COLUMNS)} FROM rollout_log WHERE {page_clause} "
            f"ORDER BY {keys[0]}, {keys[1]} LIMIT {_PAGE}"
        )
        page = db.query(query, page_params)
        for row in page:
            rollout = LoggedRollout.of_row(row, db.where)
            if filters is None or filters.metadata_ok(rollout):
                yield rollout
        if len(page) < _PAGE:
            return
        last = dict(zip(COLUMNS, page[-1]))
        after = (last[keys[0]], last[keys[1]])


@dataclass
class Recorder:
    """Where the rollouts being made go in the log: the source, run and task, and where in the run
    (step, condition, the strategies learning from them). Rows gather until `flush()` writes them, one
    transaction. `at(...)` is a recorder for a part of the work (a step, a condition): the same log and
    run, rows and group numbers of its own."""

    log: RolloutLog
    source: str
    run: str
    task: str | None = None
    step: int | None = None
    condition: str | None = None
    strategy: str | None = None
    rows: list[LoggedRollout] = field(default_factory=list)
    groups: int = 0
    """Groups recorded so far (each group's id ends with its number)."""
    clock: Any = time.time

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown rollout source {self.source!r}: one of {', '.join(SOURCES)}")

    def at(self, **where: Any) -> Recorder:
        kept = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("rows", "groups")}
        return Recorder(**{**kept, **where})

    def group_id(self) -> str:
        parts = [self.source, self.run, self.step, self.condition, f"g{self.groups}"]
        return ":".join(str(p) for p in parts if p is not None)

    def add(
        self,
        sample: Mapping[str, Any],
        sent: Prompt | None,
        runs: Sequence[Trajectory],
        scores: Sequence[Score],
        *,
        model: str | None = None,
        library_version: int | None = None,
        lessons_version: int | None = None,
        seconds: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """One group: a sample's rollouts (`runs`) and their scores. `seconds`: each rollout's share of the
        call that made it (an agent's run has its own)."""
        group_id = self.group_id()
        self.groups += 1
        now = self.clock()
        rewards = [s.value for s in scores]
        kept = {k: v for k, v in sample.items() if k not in ("prompt", "trajectory")}
        task_metadata = {
            **({"task": self.task} if self.task else {}),
            **({"sample_id": str(sample["id"])} if "id" in sample else {}),
            **(metadata or {}),
        }
        for index, (run, score, advantage) in enumerate(zip(runs, scores, advantages(rewards))):
            self.rows.append(
                LoggedRollout(
                    id=f"{group_id}:{index}",
                    group_id=group_id,
                    index=index,
                    prompt=str(sample["prompt"]),
                    response=run.text if run.plain else run.transcript(TOOL_CHARS),
                    source=self.source,
                    run=self.run,
                    created=now,
                    reward=score.value,
                    reason=score.reason or "",
                    advantage=advantage,
                    step=self.step,
                    condition=self.condition,
                    task=self.task,
                    sample_id=str(sample["id"]) if "id" in sample else None,
                    sent=sent,
                    trajectory=None if run.plain else run.to_dict(),
                    strategy=self.strategy,
                    library_version=library_version,
                    lessons_version=lessons_version,
                    model=model,
                    prompt_tokens=run.prompt_tokens or None,
                    completion_tokens=run.completion_tokens or None,
                    seconds=run.seconds or seconds,
                    sample=kept or None,
                    metadata=task_metadata or None,
                )
            )

    def flush(self) -> None:
        if self.rows:
            rows, self.rows = self.rows, []
            self.log.write(rows)
