"""Durable completion records and feedback for `tfgrpo serve`, in tables prefixed `proxy_` inside the
library's own SQLite file.

Every served completion is recorded (its prompt, the text of every choice, whether it was a holdout,
what was injected) before its answer leaves the proxy, so feedback may come hours later and after a
restart. Feedback is committed before it is acknowledged; the same reward twice is counted once, a
different reward for a choice that already has one is a conflict and changes nothing.

Groups (what the library learns from), formed in the same transaction as the feedback that completes
them and numbered in the order they were formed (`seq`):
- the choices of one request with n >= 2, once every choice has its reward;
- requests with n = 1 and the same prompt (the caller's text, before injection): each one that gets
  feedback joins the open group of its prompt; once `group_size` of them have feedback, the oldest
  `group_size` form a group. A member whose completion is older than `window_s` seconds when the next
  feedback for its prompt arrives is left out (it never joins a group).
- best-of-G requests scored by the proxy's own reward form their group at once.
Holdout completions never join a group: they measure the model without the library.

All writes go through one writer thread that commits whatever is queued in one transaction (group
commit), so many concurrent feedback posts cost one commit (and one fsync), not one each.

The rollout log (`learn/rollout_log.py`, unless turned off) is kept in the same transactions: a row per
choice as the completion is recorded (a best-of-G completion: a row per sampled response, with its reward
and advantage), its reward with the feedback, its group and advantage when its group forms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from ..core.store import connect_db
from ..core.store.proxy_tables import create_proxy_tables
from ..core.store.sql import SQLiteDatabase
from ..errors import StoreError, excerpt
from ..learn import rollout_log
from ..learn.group import Group
from ..learn.rollout_log import LoggedRollout, RolloutLog
from ..rewards.base import Score

log = logging.getLogger("tfgrpo.serve")


_COUNTED = ("completions", "feedback", "groups")


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Completion:
    """What is recorded about one served completion."""

    id: str
    prompt: str
    """The caller's prompt text (before injection): the experience's prompt when it is learned."""
    choices: list[str]
    """The text of every choice returned (client feedback names them by index)."""
    key: str | None = None
    """What makes two n = 1 requests "the same prompt" (default: the prompt text)."""
    holdout: bool = False
    learnable: bool = True
    """Whether client feedback may form groups (False for holdout and best-of-G completions, and for
    prompts with no text to learn from); feedback is recorded either way, for stats and lift."""
    info: dict[str, Any] | None = None
    scored: tuple[list[str], list[float]] | None = None
    """Best-of-G: every sampled response and the proxy's reward of each, learned as a group at once."""
    sample: dict[str, Any] | None = None
    """The request's sample fields (`"tfgrpo": {"sample": {...}}`: a reference answer, tests), given to
    the rewards and the critic with the group."""
    sent: Sent | None = None
    """What the rollout log keeps beside the record (None: the completion is not logged)."""


@dataclass(frozen=True)
class Sent:
    """What the rollout log keeps of a served completion beside its record."""

    prompt: Any
    """The request's prompt or messages as they went upstream (with what was injected)."""
    library: str
    """The served library's name (the log's run)."""
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None
    library_version: int | None = None
    lessons_version: int | None = None


@dataclass(frozen=True)
class FormedGroup:
    """A group formed from served completions, numbered in the order groups formed (`seq`)."""

    seq: int
    group: Group
    """What the library learns from: the caller's prompt (id `serve-SEQ`), the responses, their rewards."""
    members: list[str]
    """Completion ids (one for an n >= 2 request, `group_size` for accumulated n = 1 feedback)."""

    @classmethod
    def of(
        cls, seq: int, prompt: str, responses: list[str], rewards: list[float], members: list[str], sample: str | None
    ) -> FormedGroup:
        """From what the records hold (`sample`: the request's sample fields as JSON)."""
        fields = {**(json.loads(sample) if sample else {}), "prompt": prompt, "id": f"serve-{seq}"}
        return cls(seq, Group(fields, responses, [Score(r) for r in rewards]), members)


@dataclass(frozen=True)
class FeedbackResult:
    status: int
    """200, or 404 (unknown id), 409 (a different reward for a choice that has one), 400 (bad choice)."""
    message: str = ""
    recorded: int = 0
    duplicates: int = 0
    groups: tuple[int, ...] = ()


class CompletionRecords:
    """The proxy's records for one library (an SQLite file or a `postgresql://` URL, beside the library's own
    tables). `on_group(group)` is called from the writer thread, in `seq` order, after the transaction that
    formed the group committed. Several processes may write the same records (`tfgrpo serve --workers`):
    each batch holds the records' lock row, so every group is formed once and numbered in one order."""

    def __init__(
        self,
        target: str | os.PathLike,
        group_size: int = 4,
        window_s: float = 86400.0,
        on_group: Callable[[FormedGroup], None] | None = None,
        clock: Callable[[], float] = time.time,
        log_rollouts: bool = True,
        log_retention_days: float | None = None,
    ) -> None:
        self.target = target
        self.group_size = group_size
        self.window_s = window_s
        self.on_group = on_group
        self._clock = clock
        self._db = connect_db(target)  # the writer's
        self._sqlite = self._db.connection if isinstance(self._db, SQLiteDatabase) else None
        self._synchronous = "NORMAL"  # as an SQLite connection starts
        try:
            with self._db.creating() as tx:
                create_proxy_tables(tx, self._db)
                if tx.execute("SELECT COUNT(*) FROM proxy_figures").fetchone()[0] == 0:
                    tx.executemany("INSERT INTO proxy_figures(name, value) VALUES (?, ?)", _scan_figures(tx))
            # Reads from request handlers, and leases: never inside the writer's transaction (SQLite: a
            # connection of their own; PostgreSQL: a pool).
            self._other = connect_db(target)
        except BaseException:
            self._db.close()
            raise
        # The rollout log's tables and retention (its rows are written in the writer's transactions).
        try:
            self._log = RolloutLog(target, retention_days=log_retention_days, clock=clock) if log_rollouts else None
        except BaseException:
            self._db.close()
            self._other.close()
            raise
        self._pending: dict[str, float] = {}  # the batch's changes of `proxy_figures`
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tfgrpo-records", daemon=True)
        self._closed = False
        self._thread.start()

    # ----------------------------------------------------------------- writing (through the writer thread)

    def add(self, completion: Completion) -> Future:
        """Record a completion; the future resolves once it is committed (to its groups, for `scored`)."""
        return self._submit(("add", completion))

    def feedback(self, completion_id: str, rewards: dict[int, float]) -> Future:
        """Record rewards (choice -> reward) for a completion; resolves to a `FeedbackResult` once committed."""
        return self._submit(("feedback", completion_id, rewards))

    def feedback_trajectory(self, trajectory: str, reward: float) -> Future:
        """One reward for every completion of an agent's run (`"tfgrpo": {"trajectory": ID}`); the run
        itself is recorded as one more completion (id `trajectory-ID`: the run's task, its transcript)
        that forms groups with other runs of the same task, as an n = 1 completion does."""
        return self._submit(("trajectory", trajectory, reward))

    def _submit(self, item: tuple) -> Future:
        future: Future = Future()
        # Running from the start: a client that goes away (its awaiting task cancelled) cannot cancel the
        # write, which is committed all the same, and the writer never resolves a cancelled future.
        future.set_running_or_notify_cancel()
        if self._closed:
            future.set_exception(StoreError("the proxy's records are closed (the server is shutting down)"))
            return future
        self._queue.put((item, future))
        return future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 512:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                self._commit_batch(batch)
            except Exception:  # the writer outlives any batch: its callers are told, later batches go on
                log.exception("recording a batch failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StoreError("recording failed; see the server's log"))

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs (it stops only when the records are closed)."""
        return self._thread.is_alive()

    def _commit_batch(self, batch: list[tuple[tuple, Future]]) -> None:
        results: list[Any] = []
        groups: list[FormedGroup] = []
        try:
            self._sync(any(item[0] == "feedback" for item, _ in batch))
            self._pending = {}
            with self._db.writing() as tx:
                # The lock row: writers of these records in other processes wait here (SQLite: the file's lock).
                tx.execute("SELECT value FROM proxy_figures WHERE name = 'groups'" + self._db.dialect.for_update)
                for item, _ in batch:
                    if item[0] == "add":
                        self._add(tx, item[1], groups)
                        results.append(None)
                    elif item[0] == "trajectory":
                        results.append(self._trajectory_feedback(tx, item[1], item[2], groups))
                    else:
                        results.append(self._feedback(tx, item[1], item[2], groups))
                tx.executemany(
                    "UPDATE proxy_figures SET value = value + ? WHERE name = ?",
                    [(delta, name) for name, delta in self._pending.items()],
                )
        except BaseException as exc:  # nothing of the batch was committed: every caller hears so
            for _, future in batch:
                future.set_exception(exc if isinstance(exc, StoreError) else StoreError(f"recording failed: {exc}"))
            return
        for group in groups:
            if self.on_group is not None:
                try:
                    self.on_group(group)
                except Exception:  # the group is committed: the learner finds it at its next poll
                    log.exception("handing a formed group to the learner failed")
        for (_, future), result in zip(batch, results):
            future.set_result(result)
        if self._log is not None:
            try:
                self._log.prune_if_due()
            except StoreError:
                log.warning("cannot delete the rollout log's rows past their retention; trying again later")

    def _sync(self, feedback: bool) -> None:
        """SQLite: a batch with feedback is on disk (the WAL fsynced) before any of it is acknowledged, so a
        200 for feedback survives a power cut, not only a crash; group commit pays the fsync once per batch.
        Completion records alone survive a crash of the proxy (WAL, synchronous=NORMAL) without an fsync on
        every answer's path (one costs 4 ms p50, 16 ms p99 on the benchmark machine's disk). PostgreSQL
        commits durably as the server is configured."""
        synchronous = "FULL" if feedback else "NORMAL"
        if self._sqlite is not None and synchronous != self._synchronous:
            self._sqlite.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous

    def _new_group(
        self,
        tx,
        prompt: str,
        responses: list[str],
        rewards: list[float],
        members: list[str],
        sample: str | None,
        logged: list[str],
    ) -> FormedGroup:
        """A group formed; `logged`: its rollouts' ids in the rollout log, in the order of `responses`."""
        seq = tx.execute("SELECT COALESCE(MAX(seq), 0) FROM proxy_groups").fetchone()[0] + 1
        group = FormedGroup.of(seq, prompt, responses, rewards, members, sample)
        tx.execute(
            "INSERT INTO proxy_groups(seq, created, prompt, responses, rewards, members, sample)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (group.seq, self._clock(), prompt, _dumps(responses), json.dumps(rewards), json.dumps(members), sample),
        )
        tx.executemany("UPDATE proxy_completions SET group_seq = ? WHERE id = ?", [(group.seq, m) for m in members])
        self._count("groups", 1)
        if self._log is not None:
            rollout_log.set_group(tx, f"serve:group-{group.seq}", logged, rewards)
        return group

    def _add(self, tx, c: Completion, groups: list[FormedGroup]) -> None:
        sample = _dumps(c.sample) if c.sample else None
        tx.execute(
            "INSERT INTO proxy_completions(id, created, prompt, prompt_key, n, choices, holdout, learnable, info,"
            " sample) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                c.id,
                self._clock(),
                c.prompt,
                prompt_key(c.key if c.key is not None else c.prompt),
                len(c.choices),
                _dumps(c.choices),
                int(c.holdout),
                int(c.learnable and not c.holdout and c.scored is None),
                _dumps(c.info or {}),
                sample,
            ),
        )
        self._count("completions", 1)
        trajectory = (c.info or {}).get("trajectory")
        if trajectory:  # a turn of an agent's run: found by the run's id when its reward comes
            tx.execute(
                "INSERT INTO proxy_turns(completion_id, trajectory, created) VALUES (?, ?, ?)",
                (c.id, str(trajectory), self._clock()),
            )
        if self._log is not None and c.sent is not None:
            rollout_log.write_rows(tx, self._logged(c))
        if c.scored is not None and not c.holdout:
            ids = [f"serve:{c.id}:s{i}" for i in range(len(c.scored[0]))]
            groups.append(self._new_group(tx, c.prompt, list(c.scored[0]), list(c.scored[1]), [c.id], sample, ids))

    def _logged(self, c: Completion) -> list[LoggedRollout]:
        """The rollout log's rows of a completion: one per choice; for best-of-G, one per sampled response
        (with the proxy's reward and the advantage), the choices returned among them."""
        sent = c.sent
        assert sent is not None
        scored = c.scored is not None and not c.holdout
        texts = list(c.scored[0]) if c.scored is not None and scored else list(c.choices)
        rewards: list[float | None] = list(c.scored[1]) if c.scored is not None and scored else [None] * len(texts)
        advantages: list[float | None] = [*rollout_log.advantages(c.scored[1])] if c.scored and scored else rewards
        first = LoggedRollout(
            id="",
            group_id=f"serve:{c.id}",
            index=0,
            prompt=c.prompt,
            response="",
            source="serve",
            run=sent.library,
            created=self._clock(),
            condition="holdout" if c.holdout else None,
            sent=sent.prompt,
            library_version=sent.library_version,
            lessons_version=sent.lessons_version,
            model=sent.model,
            prompt_tokens=sent.prompt_tokens,
            completion_tokens=sent.completion_tokens if len(texts) == 1 else None,
            seconds=None if sent.seconds is None else sent.seconds / max(1, len(texts)),
            sample=c.sample or None,
            metadata={"task": "serve"},
        )
        return [
            replace(
                first,
                id=f"serve:{c.id}:{'s' if scored else ''}{i}",
                index=i,
                response=text,
                reward=reward,
                advantage=advantage,
            )
            for i, (text, reward, advantage) in enumerate(zip(texts, rewards, advantages))
        ]

    def _feedback(self, tx, completion_id: str, rewards: dict[int, float], groups: list[FormedGroup]) -> FeedbackResult:
        row = tx.execute(
            "SELECT prompt, prompt_key, n, choices, holdout, learnable, group_seq, sample FROM proxy_completions"
            " WHERE id = ?",
            (completion_id,),
        ).fetchone()
        if row is None:
            return FeedbackResult(404, f"no completion {excerpt(completion_id)} (ids are the `id` of a proxy response)")
        prompt, key, n, choices, holdout, learnable, group_seq, sample = row
        bad = [c for c in rewards if not 0 <= c < n]
        if bad:
            return FeedbackResult(400, f"choice {bad[0]} does not exist: that completion has {n} choice(s), 0..{n - 1}")
        existing = dict(
            tx.execute("SELECT choice, reward FROM proxy_feedback WHERE completion_id = ?", (completion_id,)).fetchall()
        )
        for choice, reward in rewards.items():
            if choice in existing and existing[choice] != reward:
                return FeedbackResult(
                    409,
                    f"choice {choice} of {completion_id} already has reward {existing[choice]!r}; "
                    f"a different reward ({reward!r}) is refused (nothing was changed)",
                )
        new = {c: r for c, r in rewards.items() if c not in existing}
        now = self._clock()
        tx.executemany(
            "INSERT INTO proxy_feedback(completion_id, choice, reward, created) VALUES (?, ?, ?, ?)",
            [(completion_id, c, r, now) for c, r in new.items()],
        )
        if new:
            self._count("feedback", len(new))
            self._moment(bool(holdout), list(existing.values()), [*existing.values(), *new.values()])
            if self._log is not None:
                rollout_log.set_rewards(tx, [(f"serve:{completion_id}:{c}", r) for c, r in new.items()])
        formed: list[int] = []
        if new and learnable and group_seq is None:
            existing.update(new)
            if n >= 2 and len(existing) == n:
                group = self._new_group(
                    tx,
                    prompt,
                    json.loads(choices),
                    [existing[i] for i in range(n)],
                    [completion_id],
                    sample,
                    [f"serve:{completion_id}:{i}" for i in range(n)],
                )
                groups.append(group)
                formed.append(group.seq)
            elif n == 1:
                members = tx.execute(
                    "SELECT c.id, c.choices, f.reward, c.sample FROM proxy_completions c"
                    " JOIN proxy_feedback f ON f.completion_id = c.id"
                    " WHERE c.prompt_key = ? AND c.group_seq IS NULL AND c.n = 1 AND c.learnable = 1"
                    " AND c.created >= ? ORDER BY c.created LIMIT ?",
                    (key, now - self.window_s, self.group_size),
                ).fetchall()
                if len(members) >= self.group_size:
                    group = self._new_group(
                        tx,
                        prompt,
                        [json.loads(m[1])[0] for m in members],
                        [m[2] for m in members],
                        [m[0] for m in members],
                        members[0][3],
                        [f"serve:{m[0]}:0" for m in members],
                    )
                    groups.append(group)
                    formed.append(group.seq)
        return FeedbackResult(200, recorded=len(new), duplicates=len(rewards) - len(new), groups=tuple(formed))

    def _trajectory_feedback(self, tx, trajectory: str, reward: float, groups: list[FormedGroup]) -> FeedbackResult:
        turns = tx.execute(
            "SELECT c.id, c.prompt, c.prompt_key, c.info, c.sample FROM proxy_turns t"
            " JOIN proxy_completions c ON c.id = t.completion_id WHERE t.trajectory = ? ORDER BY t.created, c.id",
            (trajectory,),
        ).fetchall()
        if not turns:
            return FeedbackResult(404, f"no completion of trajectory {excerpt(trajectory)} was served")
        for turn_id, *_ in turns:  # each turn scored (stats, lift); the turns never form groups themselves
            result = self._feedback(tx, turn_id, {0: reward}, groups)
            if result.status != 200:
                return result
        run_id = f"trajectory-{trajectory}"
        if tx.execute("SELECT 1 FROM proxy_completions WHERE id = ?", (run_id,)).fetchone() is None:
            first, last = turns[0], turns[-1]
            info = json.loads(last[3])
            tx.execute(
                "INSERT INTO proxy_completions(id, created, prompt, prompt_key, n, choices, holdout, learnable, info,"
                " sample) VALUES (?, ?, ?, ?, 1, ?, 0, 1, ?, ?)",
                (
                    run_id,
                    self._clock(),
                    first[1],
                    first[2],
                    _dumps([info.get("transcript", "")]),
                    _dumps({"trajectory": trajectory, "turns": [t[0] for t in turns], **info.get("figures", {})}),
                    first[4],
                ),
            )
            self._count("completions", 1)
            if self._log is not None:  # the run as one rollout (its turns are logged as they were served)
                rollout_log.write_rows(tx, [self._logged_run(run_id, first[1], info, first[4])])
        return self._feedback(tx, run_id, {0: reward}, groups)

    def _logged_run(self, run_id: str, prompt: str, info: dict, sample: str | None) -> LoggedRollout:
        figures = info.get("figures") or {}
        return LoggedRollout(
            id=f"serve:{run_id}:0",
            group_id=f"serve:{run_id}",
            index=0,
            prompt=prompt,
            response=str(info.get("transcript", "")),
            source="serve",
            run=str(info.get("library", "")),
            created=self._clock(),
            condition="trajectory",
            library_version=None,
            lessons_version=info.get("version"),
            prompt_tokens=figures.get("prompt_tokens") or None,
            completion_tokens=figures.get("completion_tokens") or None,
            sample=json.loads(sample) if sample else None,
            metadata={"task": "serve"},
        )

    # ----------------------------------------------------------------- reading, and the learner's lease

    def groups_after(self, seq: int) -> list[FormedGroup]:
        """Groups formed after `seq`, in order (those the library has still to learn)."""
        rows = self._other.query(
            "SELECT seq, prompt, responses, rewards, members, sample FROM proxy_groups WHERE seq > ? ORDER BY seq",
            (seq,),
        )
        return [FormedGroup.of(r[0], r[1], json.loads(r[2]), json.loads(r[3]), json.loads(r[4]), r[5]) for r in rows]

    def last_group(self) -> int:
        """The seq of the last group formed (0: none), by any process writing these records."""
        return self._other.query("SELECT COALESCE(MAX(seq), 0) FROM proxy_groups")[0][0]

    def get(self, completion_id: str) -> dict[str, Any] | None:
        with self._other.reading() as tx:
            row = tx.execute(
                "SELECT prompt, n, choices, holdout, learnable, info, group_seq FROM proxy_completions WHERE id = ?",
                (completion_id,),
            ).fetchone()
            if row is None:
                return None
            rewards = dict(
                tx.execute(
                    "SELECT choice, reward FROM proxy_feedback WHERE completion_id = ?", (completion_id,)
                ).fetchall()
            )
        prompt, n, choices, holdout, learnable, info, group_seq = row
        return {
            "id": completion_id,
            "prompt": prompt,
            "choices": json.loads(choices),
            "holdout": bool(holdout),
            "learnable": bool(learnable),
            "info": json.loads(info),
            "group": group_seq,
            "rewards": {str(k): v for k, v in sorted(rewards.items())},
        }

    def counts(self) -> dict[str, int]:
        """Completions, feedback (rewarded choices) and groups recorded (committed), by every process that
        writes these records."""
        figures = self._figures()
        return {name: int(figures[name]) for name in _COUNTED}

    def reward_moments(self) -> dict[bool, tuple[int, float, float]]:
        """Per arm (holdout True/False): (completions with feedback, sum, sum of squares) of each
        completion's mean reward over its rewarded choices, for the lift and its confidence interval."""
        got = self._figures()
        return {
            arm: (int(got[f"n:{int(arm)}"]), got[f"sum:{int(arm)}"], got[f"sq:{int(arm)}"]) for arm in (False, True)
        }

    def _figures(self) -> dict[str, float]:
        """`proxy_figures`: kept in the transaction of every batch, so one read answers for all writers."""
        return dict(self._other.query("SELECT name, value FROM proxy_figures"))

    def hold(self, lease: str, holder: str, seconds: float) -> bool:
        """Take or renew `lease` for `holder` until `seconds` from now, unless another holder's is still
        running; whether `holder` holds it. (The clock is each process's wall clock: hosts sharing one
        PostgreSQL library must keep theirs in step, as NTP does, to well under the lease.)"""
        now = self._clock()
        held = self._other.query("SELECT holder, until FROM proxy_leases WHERE name = ?", (lease,))
        if held and held[0][0] != holder and held[0][1] > now:
            return False  # (without a write: the others look often)
        with self._other.writing() as tx:
            row = tx.execute(
                "SELECT holder, until FROM proxy_leases WHERE name = ?" + self._other.dialect.for_update, (lease,)
            ).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return False
            tx.execute(
                "INSERT INTO proxy_leases(name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                "SET holder = excluded.holder, until = excluded.until",
                (lease, holder, now + seconds),
            )
        return True

    def release(self, lease: str, holder: str) -> None:
        """Give `lease` up, if `holder` holds it (another process may take it at once)."""
        with self._other.writing() as tx:
            tx.execute("DELETE FROM proxy_leases WHERE name = ? AND holder = ?", (lease, holder))

    def _count(self, name: str, n: float) -> None:
        self._pending[name] = self._pending.get(name, 0) + n

    def _moment(self, holdout: bool, before: list[float], after: list[float]) -> None:
        """A completion's mean reward went from that of `before` (none: not counted yet) to that of `after`."""
        arm = int(holdout)
        if before:
            old = sum(before) / len(before)
            self._count(f"n:{arm}", -1)
            self._count(f"sum:{arm}", -old)
            self._count(f"sq:{arm}", -old * old)
        new = sum(after) / len(after)
        self._count(f"n:{arm}", 1)
        self._count(f"sum:{arm}", new)
        self._count(f"sq:{arm}", new * new)

    # ----------------------------------------------------------------- closing

    def drain(self) -> None:
        """Commit what is queued and stop taking more (the reads go on). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def close(self) -> None:
        """`drain`, then close the connections. Safe to call twice."""
        self.drain()
        for db in (self._db, self._other, self._log):
            try:
                if db is not None:
                    db.close()
            except StoreError:
                pass


def _scan_figures(tx) -> list[tuple[str, float]]:
    """The figures from the tables themselves (once, for records kept before `proxy_figures` existed)."""
    rows = [(name, tx.execute(f"SELECT COUNT(*) FROM proxy_{name}").fetchone()[0]) for name in _COUNTED]
    found = tx.execute(
        "SELECT c.holdout, COUNT(*), SUM(m), SUM(m * m) FROM ("
        " SELECT completion_id, AVG(reward) AS m FROM proxy_feedback GROUP BY completion_id) f"
        " JOIN proxy_completions c ON c.id = f.completion_id GROUP BY c.holdout"
    ).fetchall()
    moments = {arm: (0, 0.0, 0.0) for arm in (0, 1)}
    for holdout, count, total, squares in found:
        moments[int(holdout)] = (count, total or 0.0, squares or 0.0)
    for arm, (count, total, squares) in moments.items():
        rows += [(f"n:{arm}", count), (f"sum:{arm}", total), (f"sq:{arm}", squares)]
    return rows


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def lift(moments: dict[bool, tuple[int, float, float]]) -> dict[str, Any]:
    """Mean reward with and without the library, their difference and its 95% confidence interval
    (normal approximation with each arm's own variance, Welch), from `reward_moments()`."""

    def arm(count: int, total: float, squares: float) -> tuple[float | None, float | None]:
        if count == 0:
            return None, None
        mean = total / count
        var = max(0.0, (squares - count * mean * mean) / (count - 1)) if count > 1 else None
        return mean, var

    (n_lib, *lib), (n_hold, *hold) = moments[False], moments[True]
    mean_lib, var_lib = arm(n_lib, *lib)
    mean_hold, var_hold = arm(n_hold, *hold)
    out: dict[str, Any] = {
        "with_library": {"n": n_lib, "mean_reward": mean_lib},
        "without_library": {"n": n_hold, "mean_reward": mean_hold},
        "lift": None,
        "ci95": None,
    }
    if mean_lib is not None and mean_hold is not None:
        out["lift"] = mean_lib - mean_hold
        if var_lib is not None and var_hold is not None:
            half = 1.96 * (var_lib / n_lib + var_hold / n_hold) ** 0.5
            out["ci95"] = [out["lift"] - half, out["lift"] + half]
    return out
