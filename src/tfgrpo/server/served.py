"""One library as `tfgrpo serve` serves it: its experiences, lessons and completion records, and the
learner that turns complete groups into library updates in `seq` order.

Retrieval and the library's updates run on one worker thread per library, off the event loop: a BM25
or vector search over a large library takes milliseconds, and on the loop every other request (their
upstream calls, their streamed chunks, feedback) would wait behind it. One thread, so a search never
sees an update half done (the retrieval indexes are not safe for concurrent use).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.library import TrainingFreeGRPO
from ..core.store import is_postgres_url
from ..errors import ConflictError, StoreError
from ..learn import ExampleUpdate, Group, LessonUpdate, Rollouts, StepContext
from ..llm.base import Backend
from ..prompting import PromptTemplate, fit_examples, select_examples, with_lessons
from ..semantic.lessons import LessonLibrary
from . import records
from .config import ProxyConfig
from .metrics import ProxyMetrics, log_fields

if TYPE_CHECKING:
    from ..tracking import Tracker

log = logging.getLogger("tfgrpo.serve")
T = TypeVar("T")

_SERVED_PROGRESS = "serve_group"
"""The key of the library's progress that holds the last group learned (`seq`)."""
_LEASE_S = 2.0
"""How long the learner lease lasts unrenewed: a holder that dies is taken over within this."""
_POLL_S = 0.02
"""How often a process looks for groups to learn (the lease's holder) or for the library's changes (the others)."""
_CHOSEN_PROMPTS = 1024
"""Prompts whose retrieved experiences are kept until the library next changes (a prompt is often asked
again: n = 1 groups are made of its repeats)."""


@dataclass(frozen=True)
class OnlineLessons:
    """The lessons update of `tfgrpo serve`: each library's `LessonUpdate` (its critic given), and how to
    roll the policy out to validate a candidate (None without a server-side reward: no validation)."""

    update: Callable[[LessonLibrary], LessonUpdate]
    rollouts: Rollouts | None = None
    backends: tuple[Backend, ...] = ()
    """The models it made, closed when the proxy stops."""


class ServedLibrary:
    """One library as the proxy serves it: experiences, lessons, completion records, and the learner
    that turns complete groups into library updates (on the library's worker thread, in `seq` order)."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        config: ProxyConfig,
        metrics: ProxyMetrics,
        tracker: Tracker | None = None,
        lessons: OnlineLessons | None = None,
    ) -> None:
        self.name = name
        self.path = path  # an SQLite file or a postgresql:// URL
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"tfgrpo-library-{name}")
        self.config = config
        self.metrics = metrics
        self.experiences = TrainingFreeGRPO.open(self.path, seed=config.seed)
        if config.select == "retrieve":
            self.experiences.enable_retrieval()
        self.lessons = LessonLibrary(self.path)
        self.examples = ExampleUpdate(self.experiences, task_name="serve")
        self.online_lessons = lessons
        self.lesson_update: LessonUpdate | None = lessons.update(self.lessons) if lessons is not None else None
        self._chosen: OrderedDict[str, list] = OrderedDict()  # prompt -> `select_examples`' answer (retrieve)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._learned_changed: asyncio.Condition | None = None
        self._stopping = False
        self._signal_groups: list[Group] = []
        # One process at a time learns the library's groups: the holder of this lease.
        self._lease = f"learner:{name}"
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held = False
        self._renew_at = 0.0
        self._waiting = 0  # feedback requests waiting for their groups to be learned
        self._checked = 0.0  # when `inject` last looked for other processes' changes
        self._lesson_task: asyncio.Task | None = None
        self.learned = int((self.experiences.progress or {}).get(_SERVED_PROGRESS, 0))
        self.failed = 0  # the last group whose commit failed this run (learned at the next start)
        self.records = records.CompletionRecords(
            self.path,
            config.group_size,
            config.group_window,
            on_group=self._group_formed,
            log_rollouts=config.rollout_log,
            log_retention_days=config.rollout_log_days,
        )
        self.tracker = tracker
        self._tracking: asyncio.Future | None = None
        self.update_gauges()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the library's worker thread (anything that reads or changes the experiences)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    # -- injection

    async def ainject(self, prompt: str) -> tuple[list, dict[str, str], PromptTemplate]:
        """`inject` on the worker thread (at once when no experience is asked for: nothing is searched)."""
        if self.config.shots == 0:
            return self.inject(prompt)
        return await self.run(self.inject, prompt)

    def inject(self, prompt: str) -> tuple[list, dict[str, str], PromptTemplate]:
        """The experiences that fit the budget, the lessons, and the template carrying them."""
        now = time.monotonic()
        if self.config.shots > 0 and now - self._checked > _POLL_S:
            # What other processes learned (a draw would look too; an answer kept for the prompt would not).
            # (Only on the worker thread: with no shots, `inject` runs on the loop and reads no experience.)
            self._checked = now
            if self.experiences.refresh():
                self._chosen.clear()
        examples = self._chosen.get(prompt)
        if examples is None:
            examples = select_examples(
                self.experiences,
                prompt,
                self.config.shots,
                select=self.config.select,
                retrieval_mode=self.config.retrieval_mode,
                advantage_weight=self.config.advantage_weight,
                min_relevance=self.config.min_relevance,
            )
            if self.config.select == "retrieve" and self.config.shots > 0:  # (sampling draws anew each time)
                self._chosen[prompt] = examples
                if len(self._chosen) > _CHOSEN_PROMPTS:
                    self._chosen.popitem(last=False)
        if not examples and self.config.select == "retrieve" and self.config.shots > 0 and len(self.experiences):
            self.metrics.injection_skipped.labels(self.name).inc()
        lessons = self.lessons.relevant(prompt, self.config.lessons_k)
        template = self.config.template
        if lessons:
            template = with_lessons(
                template, self.lessons.render(query=prompt, k=self.config.lessons_k), self.config.placement
            )
        fitted = fit_examples(examples, template, self.config.token_budget, contrast=self.config.contrast)
        return fitted, lessons, template

    # -- learning

    async def start(self) -> None:
        """Learn the groups formed before a restart but not yet in the library; then learn as they form."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._learned_changed = asyncio.Condition()
        self._signal_groups = await asyncio.to_thread(self._unconsidered_signal_groups)
        if await self._holding():
            await self._learn_pending()
        self._task = asyncio.create_task(self._learner())

    def _group_formed(self, group: records.FormedGroup) -> None:  # called in the records' writer thread
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _learner(self) -> None:
        """Learns every group formed and not yet in the library, in `seq` order. Any number of processes may
        serve one library (`--workers`, or proxies on several machines sharing a PostgreSQL library): the one
        holding the library's learner lease learns every group (at once for those it formed, within a poll
        for those the others formed), and the others follow the library. Never stops on a bad group (it is
        skipped, logged and counted) or a failed commit (those groups are learned at the next start or by
        the next holder); waiters are woken either way."""
        assert self._wake is not None and self._learned_changed is not None
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _POLL_S)
            self._wake.clear()
            try:
                if await self._holding():
                    await self._learn_pending()
                elif self._waiting:  # feedback here waits for a group another process learns
                    await self.run(self._follow)
            except Exception:
                log.exception(
                    "the learner could not look for groups; it tries again", extra=log_fields(library=self.name)
                )
            async with self._learned_changed:
                self._learned_changed.notify_all()

    async def _learn_pending(self) -> None:
        pending = await asyncio.to_thread(self.records.groups_after, self.learned)
        if not pending:
            return
        try:
            self._learned(await self.run(self._commit_each, pending))
        except Exception:
            log.exception(
                "learning groups %d..%d failed; they are learned at the next start",
                pending[0].seq,
                pending[-1].seq,
                extra=log_fields(library=self.name),
            )
            self.failed = pending[-1].seq

    async def _holding(self) -> bool:
        """Whether this process holds the learner lease (taken, or renewed when a quarter of it has gone)."""
        now = time.monotonic()
        if now >= self._renew_at:
            held = await asyncio.to_thread(self.records.hold, self._lease, self._holder, _LEASE_S)
            if held and not self._held:
                log.info("this worker learns the library's groups now", extra=log_fields(library=self.name))
                await self.run(self._follow)  # what the last holder learned
                self._signal_groups = await asyncio.to_thread(self._unconsidered_signal_groups)
            self._held = held
            self._renew_at = now + (_LEASE_S / 4 if held else _POLL_S * 5)
        return self._held

    def _follow(self) -> None:
        """What other processes committed, into this one's library (on the worker thread)."""
        if self.experiences.refresh():
            self._chosen.clear()
        self.learned = max(self.learned, int((self.experiences.progress or {}).get(_SERVED_PROGRESS, 0)))
        self.update_gauges()

    def _unconsidered_signal_groups(self) -> list[Group]:
        """Groups with signal learned since the last lessons update considered them (so that a restart, or a
        new learner, takes up the count where it was)."""
        if self.lesson_update is None:
            return []
        considered = int((self.lessons.progress or {}).get(_SERVED_PROGRESS, 0))
        return [f.group for f in self.records.groups_after(considered) if f.seq <= self.learned and f.group.has_signal]

    def _commit_each(self, batch: list[records.FormedGroup]) -> list[Group]:
        """The batch in one commit; if that fails for a reason other than the store, each group alone, and
        a group that cannot be learned is passed over (its seq counts as learned, so nothing waits on it)."""
        try:
            return self._commit(batch)
        except StoreError:
            raise
        except Exception:
            if len(batch) == 1:
                return self._skip(batch[0])
        learned: list[Group] = []
        for formed in batch:
            try:
                learned += self._commit([formed])
            except StoreError:
                raise
            except Exception:
                learned += self._skip(formed)
        return learned

    def _skip(self, formed: records.FormedGroup) -> list[Group]:
        log.exception(
            "group %d cannot be learned; it is skipped",
            formed.seq,
            extra=log_fields(library=self.name, group=formed.seq),
        )
        self.metrics.groups_skipped.labels(self.name).inc()
        self._commit([formed], skip=True)
        return []

    def _commit(self, batch: list[records.FormedGroup], skip: bool = False) -> list[Group]:
        """The groups into the library (on the worker thread), with the last one's seq as the library's
        progress, in one transaction, unless the stored progress shows them learned already (by another
        process: then nothing is written, and this one catches up). `skip`: only the progress moves."""
        first, last = batch[0].seq, batch[-1].seq
        groups = [] if skip else [formed.group for formed in batch]
        progress = {**(self.experiences.progress or {}), _SERVED_PROGRESS: last}
        ctx = StepContext(
            seed=0, global_step=last, position=progress, expect=lambda stored: _learned_in(stored) < first
        )
        self._chosen.clear()  # the library changes: retrieval may answer differently
        try:
            self.examples.commit(groups, ctx)
        except ConflictError:
            self._follow()
            return []
        self.learned = last
        return groups

    def _learned(self, groups: list[Group]) -> None:
        """After a commit, on the loop: the metrics, and the lessons update when it is due."""
        for g in groups:
            self.metrics.groups.labels(self.name, str(g.has_signal).lower()).inc()
        self._signal_groups += [g for g in groups if g.has_signal]
        self.update_gauges()
        self._maybe_update_lessons()
        self._track()

    async def wait_learned(self, seq: int) -> None:
        """Return once group `seq` is in the library (or failed to go in; it is retried at the next start)."""
        if self._learned_changed is None:
            return
        self._waiting += 1
        try:
            async with self._learned_changed:
                await self._learned_changed.wait_for(
                    lambda: self.learned >= seq or self.failed >= seq or self._task.done()
                )
        finally:
            self._waiting -= 1

    def _maybe_update_lessons(self) -> None:
        every = self.config.lessons_every
        if self.lesson_update is None or every == 0 or len(self._signal_groups) < every:
            return
        if self._lesson_task is not None and not self._lesson_task.done():
            return  # one at a time; the groups keep accumulating for the next one
        groups, self._signal_groups = self._signal_groups, []
        self._lesson_task = asyncio.ensure_future(asyncio.to_thread(self._update_lessons, groups, self.learned))

    def _update_lessons(self, groups: list[Group], seq: int) -> None:
        """The paper's lessons update on the groups with signal (a worker thread: the critic is an LLM)."""
        assert self.lesson_update is not None and self.online_lessons is not None
        rollouts = self.online_lessons.rollouts
        if rollouts is not None:
            rollouts = replace(rollouts, validation=[g.sample for g in groups])
        ctx = StepContext(seed=seq, global_step=seq, position={_SERVED_PROGRESS: seq}, rollouts=rollouts)
        try:
            figures = self.lesson_update.commit(groups, ctx)
            log.info(
                "lessons updated",
                extra=log_fields(
                    library=self.name,
                    **{k: figures.get(k) for k in ("applied", "skipped", "lessons", "lesson_version", "accepted")},
                ),
            )
        except Exception:
            log.exception("the lessons update failed (the lessons are as they were)")
        self.update_gauges()

    def update_gauges(self) -> None:
        self.metrics.set_library(self.name, self.experiences.library_size(), self.lessons.version, len(self.lessons))

    # -- tracking (`tfgrpo serve --track`)

    def _track(self) -> None:
        """The library's figures to the tracker, on a thread of its own. While one record is being written
        later batches are not queued behind it (the tracker never holds serving back; `close` writes the last)."""
        if self.tracker is None or (self._tracking is not None and not self._tracking.done()):
            return
        assert self._loop is not None
        self._tracking = self._loop.run_in_executor(None, self._log_figures, True)

    def _log_figures(self, with_records: bool) -> None:
        assert self.tracker is not None
        figures: dict[str, Any] = {
            "experiences": self.experiences.library_size(),
            "lessons": len(self.lessons),
            "lesson_version": self.lessons.version,
            "groups_learned": self.learned,
        }
        if with_records:
            figures["records"] = self.records.counts()
            lift = records.lift(self.records.reward_moments())
            figures["lift"] = {"lift": lift["lift"], **dict(zip(("ci_low", "ci_high"), lift["ci95"] or ()))}
            figures["reward_with_library"] = lift["with_library"]["mean_reward"]
            figures["reward_without_library"] = lift["without_library"]["mean_reward"]
        self.tracker.log_metrics({self.name: figures}, self.learned)

    def stats(self) -> dict[str, Any]:
        return {
            "library": self.name,
            "experiences": self.experiences.stats().to_dict(),
            "lessons": {"count": len(self.lessons), "version": self.lessons.version},
            "records": self.records.counts(),
            "groups_learned": self.learned,
        }

    async def close(self) -> None:
        """Commit what is queued, learn the groups it formed, and close the files (with --track: the last
        figures, then the library file as an artifact)."""
        if self.tracker is not None:
            if self._tracking is not None:
                await asyncio.wait([self._tracking])
            # Every acknowledged feedback is committed by now (uvicorn has finished the requests).
            await asyncio.to_thread(self._log_figures, True)
        await asyncio.to_thread(self.records.drain)
        if self._wake is not None and not self._task.done():
            self._stopping = True
            self._wake.set()
            await self._task
            if self._held:  # what the last batch of records formed; then another process may learn
                await self._learn_pending()
                await asyncio.to_thread(self.records.release, self._lease, self._holder)
        await asyncio.to_thread(self.records.close)
        if self._lesson_task is not None:
            with contextlib.suppress(Exception):
                await self._lesson_task
        self._worker.shutdown(wait=True)
        if self.tracker is not None:
            if self._tracking is not None:
                await asyncio.wait([self._tracking])
            self._log_figures(with_records=False)  # the groups the last feedback formed are learned now
        self.lessons.close()
        self.experiences.close()
        if self.tracker is not None and not is_postgres_url(self.path):
            self.tracker.log_artifact(Path(self.path))


def _learned_in(progress: dict | None) -> int:
    return int((progress or {}).get(_SERVED_PROGRESS, 0))
