"""`TrainingFreeGRPO`: the experience library at the heart of Training-Free GRPO.

For each prompt a group of rollouts is scored; each rollout's advantage is its reward minus the group
mean; rollouts above `min_advantage_threshold` are stored; stale and surplus experiences are pruned;
later prompts draw experiences with P proportional to exp(advantage / temperature).

Internals, all O(1) or O(log n) per experience:
- `_order`: experiences in library order (insertion order: a loaded file's order, then what was added
  since; also id order); removed ones are skipped and compacted lazily. While it is also in time order
  (`_time_sorted`, the usual case), stale experiences are pruned from its head; otherwise `_by_age`,
  a heap of (timestamp, id, experience) built when first needed, finds the oldest.
- `_by_id`: id -> experience, for `get`.
- `_heap`: (advantage, id, experience), the eviction order when over capacity (lowest first, ties
  oldest first); entries of removed experiences are skipped when popped. Kept from the start and built
  during a load (None with the "oldest" policy, or after a compaction until the next eviction), so the
  first eviction of a large library does not stall to build it.
- `_groups`, `_group_sizes` (the "balanced" policy only): per value of the eviction key, a heap like
  `_heap` and the number of live experiences; an eviction takes the lowest advantage of the largest
  group (O(values + log n)). A metadata change (`tag`, another process's) drops them, to be rebuilt
  from the live experiences at the next eviction.
- `_sampler`: buckets by advantage for O(1) weighted draws (see `sampler.py`).

With a store, the library may be shared by many processes (see `store/base.py`): each keeps these
structures in memory and follows the others through the store's change feed. Every change is one write
transaction that first applies what the others committed (under the store's lock), so ids, counters
and what is pruned are decided on exactly the stored library; reads catch up at most every
`refresh_interval` seconds, or when `refresh()` is called.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

from ..errors import (
    ConfigError,
    ConflictError,
    InvalidRolloutsError,
    LibraryFormatError,
    LibraryNotFoundError,
    StoreError,
    TFGRPOError,
)
from .advantages import compute_advantages
from .config import GRPOConfig
from .experience import MAX_TIMESTAMP, Experience, check_metadata, check_text, check_timestamp
from .files import fsync_dir, is_sqlite_file, is_sqlite_path, make_temp, read_json, write_json
from .index import MODES, ExperienceIndex, default_index
from .sampler import AdvantageSampler
from .stats import GRPOStats
from .store import (
    Changes,
    LibraryState,
    SQLiteStore,
    Store,
    StoreTransaction,
    is_postgres_url,
    open_store,
    read_library,
)

_COUNTERS = ("total_rollouts", "total_stored", "total_pruned", "total_loaded")
log = logging.getLogger("tfgrpo.library")


class ExperienceLibrary(Sequence[Experience]):
    """Read-only view of the stored experiences in library order: the order they were added in, a
    loaded file's own order first (`[-1]` is the one added last)."""

    def __init__(self, owner: TrainingFreeGRPO) -> None:
        self._owner = owner

    def __len__(self) -> int:
        return len(self._owner._sampler)

    def __iter__(self) -> Iterator[Experience]:
        order = self._owner._order
        return (e for e in order[self._owner._head :] if e.in_library)

    def __reversed__(self) -> Iterator[Experience]:
        order = self._owner._order
        return (order[i] for i in range(len(order) - 1, self._owner._head - 1, -1) if order[i].in_library)

    @overload
    def __getitem__(self, index: int) -> Experience: ...
    @overload
    def __getitem__(self, index: slice) -> list[Experience]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"experience index {index} out of range for a library of {n}")
        if index < 0:
            it, steps = reversed(self), -index - 1
        else:
            it, steps = iter(self), index
        for _ in range(steps):
            next(it)
        return next(it)

    def last(self) -> Experience | None:
        return next(reversed(self), None)

    def __repr__(self) -> str:
        return f"<ExperienceLibrary of {len(self)} experiences>"


class TrainingFreeGRPO:
    """An experience library. `TrainingFreeGRPO()` is in-memory; pass `store=` (a `.db`/`.sqlite`
    path, a `postgresql://` URL or a store object) to write every change through and resume from it later.

    Any number of processes may open one store at once. Each change (`add_rollout_group`, `prune`,
    `tag`, ...) first catches up with what the others committed, inside its own write transaction, so
    it never acts on a stale library. Draws (`sample_experience`, `sample_multiple`,
    `get_experiences_for_prompt`) catch up when the last check is more than `refresh_interval` seconds
    old (one indexed read when nothing changed): a draw sees every change another process committed at
    least `refresh_interval` seconds before it (None: only after this process's own writes or
    `refresh()`). The other reads (`stats`, `library_size`, `get`, `experience_library`, ...) show what
    this process has caught up with, and never change the library (other threads may call them).
    """

    def __init__(
        self,
        config: GRPOConfig | None = None,
        *,
        store: Store | str | os.PathLike | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        retriever: ExperienceIndex | None = None,
        refresh_interval: float | None = 0.05,
    ) -> None:
        if config is not None and not isinstance(config, GRPOConfig):
            raise TypeError(f"config must be a GRPOConfig, got {type(config).__name__}")
        self._clock = clock
        self._seed = seed
        self._store: Store | None = None
        self.total_rollouts = self.total_stored = self.total_pruned = self.total_loaded = 0
        self.progress: dict | None = None
        self._next_id = 1
        if refresh_interval is not None and not (isinstance(refresh_interval, (int, float)) and refresh_interval >= 0):
            raise ConfigError(f"refresh_interval must be a number of seconds >= 0 or None, got {refresh_interval!r}")
        self.refresh_interval = refresh_interval
        self._seq = 0  # the last change of the store this library has applied
        self._contended = False  # whether the last write found changes of other processes to apply
        self._next_check = 0.0  # (time.monotonic) when a read next asks the store for changes
        self._retriever: ExperienceIndex | None = None
        self._set_config(config or GRPOConfig())
        self._reset_structures()
        if store is not None:
            self._attach(open_store(store), config)
        if retriever is not None:
            self.enable_retrieval(retriever=retriever)

    @classmethod
    def with_config(cls, config: GRPOConfig, **kwargs) -> TrainingFreeGRPO:
        return cls(config, **kwargs)

    @classmethod
    def open(cls, path: str | os.PathLike, config: GRPOConfig | None = None, **kwargs) -> TrainingFreeGRPO:
        """Open (or create) a write-through library: an SQLite path or a `postgresql://` URL; its stored
        config is used unless one is given (which then becomes the stored one)."""
        return cls(config, store=path, **kwargs)

    # -- construction -------------------------------------------------------------------------------

    def _set_config(self, config: GRPOConfig) -> None:
        self.config = config
        self._sampler = AdvantageSampler(config.sampling_temperature, config.use_advantage_weighting, self._seed)

    def _reset_structures(self) -> None:
        self._sampler.clear()
        self._order: list[Experience] = []
        self._head = 0
        self._time_sorted = True
        self._last_timestamp = -1  # of the last experience appended to _order
        # Entries are (key, id, experience); a stored experience always has its id.
        self._by_age: list[tuple[int, int | None, Experience]] | None = None
        self._by_id: dict[int | None, Experience] = {}  # stored experiences always have an id
        self._heap: list[tuple[float, int | None, Experience]] | None = (
            [] if self.config.eviction_policy == "lowest_advantage" else None
        )
        balanced = self.config.eviction_policy == "balanced"
        self._groups: dict[str, list[tuple[float, int | None, Experience]]] | None = {} if balanced else None
        self._group_sizes: dict[str, int] = {}
        self._stats_cache: GRPOStats | None = None
        if self._retriever is not None:
            self._retriever.clear()

    def _attach(self, store: Store, config: GRPOConfig | None) -> None:
        with _gc_paused():
            state = store.load()
        if config is None and state.config is not None:
            self._set_config(self._stored_config(state.config, store))
        self._store = store
        self._take_state(state)
        _freeze_loaded(len(state.experiences))
        if state.config != self.config.to_dict():
            with self._update() as change:
                change.tx.save_config(self.config.to_dict())

    @staticmethod
    def _stored_config(data: dict, store: Store) -> GRPOConfig:
        try:
            return GRPOConfig.from_dict(data)
        except ConfigError as exc:
            where = getattr(store, "where", "the store")
            raise LibraryFormatError(
                f"{where}: stored config is invalid: {exc} (pass a config to use instead)"
            ) from None

    def _take_state(self, state: LibraryState) -> None:
        """Hold exactly what a store holds (structures built anew)."""
        self._reset_structures()
        for name in _COUNTERS:
            setattr(self, name, int(state.counters.get(name, 0)))
        self.progress = state.progress
        self._next_id = state.next_id
        self._seq = state.seq
        with _gc_paused():
            self._bulk_insert(state.experiences)

    def _bulk_insert(self, experiences: list[Experience]) -> None:
        """Insert many experiences at once, in their order (ids kept when present, ascending), O(n log n)."""
        by_id = self._by_id
        next_id = self._next_id
        last, in_order = self._last_timestamp, self._time_sorted
        for exp in experiences:
            id_ = exp.id
            if id_ is None:
                id_ = exp.id = next_id
            if id_ >= next_id:
                next_id = id_ + 1
            by_id[id_] = exp
            if exp.timestamp < last:
                in_order = False
            last = exp.timestamp
        self._next_id = next_id
        self._sampler.add_many(experiences)
        self._order.extend(experiences)
        self._last_timestamp, self._time_sorted = last, in_order
        if self._by_age is not None:
            self._by_age.extend([(e.timestamp, e.id, e) for e in experiences])
            heapq.heapify(self._by_age)
        if self._heap is not None:
            self._heap.extend([(e.advantage, e.id, e) for e in experiences])
            heapq.heapify(self._heap)
        if self._groups is not None:
            for exp in experiences:
                self._group_add(exp, push=False)
            for heap in self._groups.values():
                heapq.heapify(heap)
        self._stats_cache = None
        if self._retriever is not None:
            self._retriever.add_many(experiences)

    # -- the algorithm --------------------------------------------------------------------------------

    def add_rollout_group(
        self,
        rollouts: Iterable[tuple[str, str]],
        rewards: Iterable[float],
        metadata: dict[str, str] | None = None,
    ) -> list[Experience]:
        """Score one group of (prompt, response) rollouts and store those whose advantage
        (reward - group mean) is above the threshold; then prune. Returns the experiences stored.

        `metadata` is copied onto every stored experience. Invalid input raises before anything changes.
        """
        return self.add_rollout_groups([(rollouts, rewards, metadata)])[0]

    def add_rollout_groups(
        self,
        groups: Iterable[
            tuple[Iterable[tuple[str, str]], Iterable[float], dict[str, str] | list[dict[str, str] | None] | None]
        ],
        progress: dict | None = None,
        *,
        only_if: Callable[[dict | None], bool] | None = None,
    ) -> list[list[Experience]]:
        """Several (rollouts, rewards, metadata) groups as one update: with a store, one transaction.
        A group's metadata is copied onto each experience it stores, or is a list with one per rollout.

        `progress` (any JSON-serialisable dict, e.g. a training loop's position) is saved in that same
        transaction and read back as `self.progress`, so a resumed run neither repeats nor loses a group.
        `only_if`: a test of the stored progress, made under the store's write lock after catching up
        with other processes; when it fails nothing is added and `ConflictError` is raised (so that two
        processes that set out to add the same groups add them once).
        """
        prepared = [self._prepare_group(*_check_group(i, group)) for i, group in enumerate(groups)]
        if self._store is None:
            _check_progress(only_if, self.progress)
            return self._add_prepared(prepared, progress)[0]
        with self._update() as change:
            _check_progress(only_if, self.progress)
            added_per_group, change.removed = self._add_prepared(prepared, progress)
            change.added = [e for added in added_per_group for e in added]
            change.tx.commit(change.added, change.removed, self._counters(), progress)
        return added_per_group

    def _add_prepared(
        self, prepared: list[tuple[int, list[tuple[str, str, float, dict | None]]]], progress: dict | None
    ) -> tuple[list[list[Experience]], list[Experience]]:
        """Store prepared groups in memory and prune: (the experiences added per group, those pruned)."""
        now = int(self._clock())
        if not 0 <= now <= MAX_TIMESTAMP:
            check_timestamp(now, "the clock's time (Unix seconds)", TFGRPOError)
        added_per_group = []
        for n_rollouts, scored in prepared:
            added = [
                Experience(prompt, response, advantage, now, metadata)
                for prompt, response, advantage, metadata in scored
            ]
            for exp in added:
                self._insert(exp)
            self.total_rollouts += n_rollouts
            self.total_stored += len(added)
            added_per_group.append(added)
        removed = self._prune_incremental(now)
        self.total_pruned += len(removed)
        self._stats_cache = None  # the counters changed, even when the contents did not
        if progress is not None:
            self.progress = progress
        return added_per_group, removed

    def _prepare_group(
        self,
        rollouts: Iterable[tuple[str, str]],
        rewards: Iterable[float],
        metadata: dict[str, str] | list[dict[str, str] | None] | None = None,
    ) -> tuple[int, list[tuple[str, str, float, dict | None]]]:
        """Check a group and pick what to store: (number of rollouts, [(prompt, response, advantage, metadata)]).
        `metadata` is one dict for every rollout, or a list with one (or None) per rollout."""
        for name, value in (("rollouts", rollouts), ("rewards", rewards)):
            if type(value) is not list and (isinstance(value, (str, bytes)) or not isinstance(value, Iterable)):
                raise InvalidRolloutsError(f"{name} must be a list, got {type(value).__name__} {value!r:.80}")
        rollouts = [_check_rollout(i, r) for i, r in enumerate(rollouts)]
        rewards = list(rewards)
        if len(rollouts) != len(rewards):
            raise InvalidRolloutsError(f"got {len(rollouts)} rollouts but {len(rewards)} rewards; they must pair up")
        if isinstance(metadata, list):  # one per rollout
            if len(metadata) != len(rollouts):
                raise InvalidRolloutsError(
                    f"got {len(rollouts)} rollouts but {len(metadata)} metadata; a list of metadata must pair up"
                )
            for m in metadata:
                if m is not None:
                    check_metadata(m)
            per_rollout = metadata
        else:
            if metadata is not None:
                check_metadata(metadata)
            per_rollout = [metadata] * len(rollouts)
        advantages = compute_advantages(rewards, self.config.scale_advantages_by_std)
        shared_prompts: dict[str, str] = {}  # one string object per distinct prompt in the group
        threshold = self.config.min_advantage_threshold
        return len(rollouts), [
            (shared_prompts.setdefault(prompt, prompt), response, advantage, m)
            for (prompt, response), advantage, m in zip(rollouts, advantages, per_rollout)
            if advantage > threshold
        ]

    @contextlib.contextmanager
    def _update(self) -> Iterator[_Change]:
        """One change of a library with a store, as one write transaction. First what other processes
        committed since this one last looked is applied (read under the store's write lock, so that what
        the block decides, ids, counters, what to prune, is decided on exactly the stored library). The
        block then changes memory, notes in `change` what it added and removed, and tells `change.tx`.
        If anything fails before the commit returns, memory is put back as it was after catching up."""
        assert self._store is not None
        if self._contended:
            # Others write too: read most of what they committed before taking the lock, so that it is
            # held (and they wait) only for the little committed in between.
            self.refresh()
        change = None
        try:
            with self._store.write(self._seq) as tx:
                self._contended = tx.changes is not None
                if tx.changes is not None:
                    self._follow(tx.changes)
                self._next_id = max(self._next_id, tx.next_id)
                change = _Change(tx, self._counters(), self.progress)
                yield change
            self._seq = max(self._seq, tx.seq)
        except BaseException:
            if change is not None:
                self._undo(change)
            raise

    def _undo(self, change: _Change) -> None:
        for exp in change.added:
            if exp.in_library:
                self._remove(exp)
        new_ids = {e.id for e in change.added}
        for exp in change.removed:
            if exp.id not in new_ids and not exp.in_library:
                self._insert(exp)
        if change.removed:
            # A re-inserted experience can be listed twice in _order (its old entry is live again).
            live = {id(e): e for e in self.experience_library}
            self._order = sorted(live.values(), key=lambda e: e.id or 0)
            self._head = 0
        if change.restore is not None:
            change.restore()
        for name, value in change.counters.items():
            setattr(self, name, value)
        self.progress = change.progress
        self._stats_cache = None

    def _follow(self, changes: Changes) -> None:
        """Apply what other processes committed (the store's change feed since `self._seq`)."""
        if changes.reload is not None:
            state = changes.reload
            if state.config is not None and state.config != self.config.to_dict():
                self._set_config(self._stored_config(state.config, self._store))  # type: ignore[arg-type]
            self._take_state(state)
            _freeze_loaded(len(state.experiences))
            return
        if changes.config is not None and changes.config != self.config.to_dict():
            live = list(self.experience_library)
            self._set_config(self._stored_config(changes.config, self._store))  # type: ignore[arg-type]
            self._reset_structures()
            self._bulk_insert(live)
        by_id, rows = self._by_id, changes.rows
        for op, id_ in changes.ops:
            if op == "add":
                exp = rows.get(id_)  # type: ignore[arg-type]
                if exp is not None and id_ not in by_id:
                    self._insert(exp)
            elif op == "remove":
                exp = by_id.get(id_)
                if exp is not None:
                    self._remove(exp)
            elif op == "metadata":
                exp, row = by_id.get(id_), rows.get(id_)  # type: ignore[arg-type]
                if exp is not None and row is not None and exp is not row:
                    exp.metadata = dict(row.stored_metadata or {})
                    self._regroup()
        for name in _COUNTERS:
            setattr(self, name, int(changes.counters.get(name, 0)))
        self.progress = changes.progress
        self._next_id = max(self._next_id, changes.next_id)
        self._seq = changes.seq
        self._stats_cache = None

    def refresh(self) -> bool:
        """Catch up with what other processes committed to the store (one indexed read when nothing
        changed). Returns whether anything did. Without a store: nothing to do."""
        if self._store is None:
            return False
        changes = self._store.changes_since(self._seq)
        if changes is None:
            return False
        self._follow(changes)
        return True

    def _catch_up(self) -> None:
        """What every read calls first: `refresh()` when the last check is `refresh_interval` old. A
        store that cannot be reached leaves the library as it is (and is logged); the next read tries again."""
        if self._store is None or self.refresh_interval is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.refresh_interval
        try:
            self.refresh()
        except StoreError as exc:
            log.warning("cannot catch up with the store, reading what this process holds: %s", exc)

    def _insert(self, exp: Experience) -> None:
        if exp.id is None:
            exp.id = self._next_id
        if exp.id >= self._next_id:
            self._next_id = exp.id + 1
        self._sampler.add(exp)
        self._order.append(exp)
        self._by_id[exp.id] = exp
        if exp.timestamp < self._last_timestamp:
            self._time_sorted = False
        self._last_timestamp = exp.timestamp
        if self._by_age is not None:
            heapq.heappush(self._by_age, (exp.timestamp, exp.id, exp))
        if self._heap is not None:
            heapq.heappush(self._heap, (exp.advantage, exp.id, exp))
        if self._groups is not None:
            self._group_add(exp)
        self._stats_cache = None
        if self._retriever is not None:
            self._retriever.add(exp)

    def _group_of(self, exp: Experience) -> str:
        return (exp.stored_metadata or {}).get(self.config.eviction_key, "")

    def _group_add(self, exp: Experience, push: bool = True) -> None:
        assert self._groups is not None
        group = self._group_of(exp)
        heap = self._groups.setdefault(group, [])
        if push:
            heapq.heappush(heap, (exp.advantage, exp.id, exp))
        else:
            heap.append((exp.advantage, exp.id, exp))
        self._group_sizes[group] = self._group_sizes.get(group, 0) + 1

    def _regroup(self) -> None:
        """Metadata changed: the "balanced" groups are rebuilt at the next eviction."""
        if self.config.eviction_policy == "balanced":
            self._groups = None

    def _remove(self, exp: Experience) -> None:
        self._sampler.remove(exp)
        del self._by_id[exp.id]
        self._stats_cache = None
        if self._retriever is not None:
            self._retriever.remove(exp)
        live = len(self._sampler)
        # Removed entries linger in _order and _heap until skipped; compact when they dominate.
        if len(self._order) - self._head > 2 * live + 64:
            self._order = [e for e in self._order[self._head :] if e.in_library]
            self._head = 0
        if self._heap is not None and len(self._heap) > 2 * live + 64:
            self._heap = None  # rebuilt from the live experiences at the next eviction
        if self._groups is not None:
            group = self._group_of(exp)
            if self._group_sizes.get(group, 0) < 1:  # its metadata was changed in place: count again
                self._groups = None
            else:
                self._group_sizes[group] -= 1
                if sum(len(h) for h in self._groups.values()) > 2 * live + 64:
                    self._groups = None
        if self._by_age is not None and len(self._by_age) > 2 * live + 64:
            self._by_age = None  # rebuilt when next needed

    def _prune_incremental(self, now: int) -> list[Experience]:
        """Stale experiences, oldest first, then the surplus over capacity."""
        removed = []
        max_age = self.config.max_experience_age
        while (exp := self._oldest()) is not None and now - exp.timestamp > max_age:
            self._remove(exp)
            removed.append(exp)
        while len(self._sampler) > self.config.max_library_size:
            exp = self._next_to_evict()
            self._remove(exp)
            removed.append(exp)
        return removed

    def _prune_all(self, now: int) -> list[Experience]:
        """Like `_prune_incremental`, but finds every stale experience, even out of time order."""
        stale = [e for e in self.experience_library if now - e.timestamp > self.config.max_experience_age]
        for exp in stale:
            self._remove(exp)
        return stale + self._prune_incremental(now)

    def _next_to_evict(self) -> Experience:
        if self.config.eviction_policy == "oldest":
            oldest = self._oldest()
            assert oldest is not None, "evicting from an empty library"
            return oldest
        if self.config.eviction_policy == "balanced":
            if self._groups is None:
                self._groups, self._group_sizes = {}, {}
                live = list(self.experience_library)
                for exp in live:
                    self._group_add(exp, push=False)
                for heap in self._groups.values():
                    heapq.heapify(heap)
            sizes = self._group_sizes
            largest = max(sizes, key=lambda g: (sizes[g], g))  # ties: the same group every time
            heap = self._groups[largest]
            while not heap[0][2].in_library:
                heapq.heappop(heap)
            return heapq.heappop(heap)[2]
        if self._heap is None:
            self._heap = [(e.advantage, e.id, e) for e in self.experience_library]
            heapq.heapify(self._heap)
        while not self._heap[0][2].in_library:
            heapq.heappop(self._heap)
        return heapq.heappop(self._heap)[2]

    def _oldest(self) -> Experience | None:
        """The live experience with the earliest timestamp (ties: the lowest id), or None."""
        if self._time_sorted:
            order = self._order
            while self._head < len(order) and not order[self._head].in_library:
                self._head += 1
            return order[self._head] if self._head < len(order) else None
        if self._by_age is None:
            self._by_age = [(e.timestamp, e.id, e) for e in self.experience_library]
            heapq.heapify(self._by_age)
        heap = self._by_age
        while heap and not heap[0][2].in_library:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def prune(self) -> int:
        """Remove every stale experience (a full scan, exact even if the clock went backwards) and the
        surplus over capacity. Returns how many went."""
        if self._store is None:
            removed = self._prune_all(int(self._clock()))
            self.total_pruned += len(removed)
            return len(removed)
        with self._update() as change:
            change.removed = self._prune_all(int(self._clock()))
            self.total_pruned += len(change.removed)
            if change.removed:
                change.tx.commit([], change.removed, self._counters())
        return len(change.removed)

    # -- reading ----------------------------------------------------------------------------------------

    @property
    def experience_library(self) -> ExperienceLibrary:
        return ExperienceLibrary(self)

    @property
    def version(self) -> int:
        """The library's change number: the last change of its store this process has applied (0 without a
        store). The rollout log records it with every rollout whose prompt drew from the library."""
        return self._seq

    def library_size(self) -> int:
        return len(self._sampler)

    def is_at_capacity(self) -> bool:
        return len(self._sampler) >= self.config.max_library_size

    def sample_experience(self) -> Experience | None:
        """One experience, P proportional to exp(advantage / T) (uniform when weighting is off)."""
        if self._store is not None:
            self._catch_up()
        return self._sampler.sample()

    def sample_multiple(self, k: int, replace: bool = True) -> list[Experience]:
        """k experiences drawn like `sample_experience`; `replace=False` gives distinct ones."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise TFGRPOError(f"k must be a whole number >= 0, got {k!r}")
        self._catch_up()
        return self._sampler.sample_many(k, replace)

    def seed(self, seed: int | None) -> None:
        """Reseed sampling so that the following draws are reproducible."""
        self._seed = seed
        self._sampler.seed(seed)

    def get_experiences_for_prompt(
        self,
        prompt: str,
        k: int | None = None,
        mode: str = "prefix",
        where: dict[str, str] | None = None,
        **options,
    ) -> list[Experience]:
        """Experiences for a prompt, best advantage first (ties: newest first).

        mode "prefix" (the spec's behaviour): stored prompts that start with `prompt`.
        `where` keeps only experiences whose metadata has all the given key/value pairs.
        Modes "lexical" (BM25), "semantic" (embeddings) and "hybrid" rank by relevance instead, through
        the attached retriever (one with the default embedder is attached on first use); `options`
        (min_similarity, mmr, mmr_lambda, advantage_weight, token_budget, ...) are those of
        `tfgrpo.retrieval.Retriever.search`.
        """
        if not isinstance(prompt, str):
            raise TFGRPOError(f"prompt must be a string, got {type(prompt).__name__} {prompt!r:.80}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise TFGRPOError(f"k must be a whole number >= 0 (or None for all), got {k!r}")
        if where is not None:
            check_metadata(where, TFGRPOError, "where")
        self._catch_up()
        if mode != "prefix":
            if mode not in MODES:
                raise TFGRPOError(
                    f"unknown retrieval mode {mode!r}; available: 'prefix', 'lexical', 'semantic', 'hybrid'"
                )
            retriever = self._retriever or self.enable_retrieval()
            return retriever.search(prompt, k, mode=mode, where=where, **options)
        if options:
            raise TFGRPOError(f"options {sorted(options)} apply to the lexical, semantic and hybrid modes only")
        found = [
            e for e in self.experience_library if e.prompt.startswith(prompt) and (where is None or e.matches(where))
        ]
        found.sort(key=lambda e: (e.advantage, e.id), reverse=True)
        return found if k is None else found[:k]

    def enable_retrieval(
        self, embedder=None, *, retriever: ExperienceIndex | None = None, **options
    ) -> ExperienceIndex:
        """Attach a retriever (lexical, semantic and hybrid `get_experiences_for_prompt`) and index the
        library; it is kept in step with every later change. `embedder`: None (all-MiniLM-L6-v2), a
        sentence-transformers name or path, "openai:MODEL[@BASE_URL]" or an embedder object; `options`
        go to `tfgrpo.retrieval.Retriever`. Nothing is embedded before the first semantic query."""
        if retriever is None:
            retriever = default_index(embedder, **options)
        elif embedder is not None or options:
            raise TFGRPOError("pass either a retriever or embedder/options to build one, not both")
        # Attaching to a large library makes an object or two per text that live on, as a load does.
        with _gc_paused():
            retriever.attach(self)
        _freeze_loaded(len(self))
        self._retriever = retriever
        return retriever

    @property
    def retriever(self) -> ExperienceIndex | None:
        """The attached retriever, if any."""
        return self._retriever

    @property
    def store(self) -> Store | None:
        """The store the library writes through to (None: in memory only)."""
        return self._store

    def filter_by_metadata(self, **where: str) -> list[Experience]:
        """Experiences whose metadata has all the given key/value pairs, oldest first."""
        return [e for e in self.experience_library if e.matches(where)]

    def get(self, experience_id: int) -> Experience | None:
        """The stored experience with this id, or None; O(1)."""
        return self._by_id.get(experience_id)

    def stats(self) -> GRPOStats:
        if self._stats_cache is None:
            advantages = [e.advantage for e in self.experience_library]
            self._stats_cache = GRPOStats(
                total_rollouts=self.total_rollouts,
                total_stored=self.total_stored,
                total_pruned=self.total_pruned,
                current_library_size=len(advantages),
                avg_advantage=_mean(advantages),
                max_advantage=max(advantages, default=0.0),
                min_advantage=min(advantages, default=0.0),
                total_loaded=self.total_loaded,
            )
        return self._stats_cache

    # -- editing ----------------------------------------------------------------------------------------

    def tag(self, experience: Experience | int, **metadata: str) -> Experience:
        """Add metadata to a stored experience (written through to the store)."""
        check_metadata(metadata)
        self._regroup()
        if self._store is None:
            exp = self._member(experience)
            exp.metadata.update(metadata)
            return exp
        with self._update() as change:  # (another process may have removed it: looked up after catching up)
            exp = self._member(experience)
            before = dict(exp.metadata)

            def restore() -> None:
                exp.metadata = before
                self._regroup()

            change.restore = restore
            exp.metadata.update(metadata)
            change.tx.update_metadata(exp)
        return exp

    def remove(self, experience: Experience | int) -> None:
        """Delete one stored experience (not counted as pruned)."""
        if self._store is None:
            self._remove(self._member(experience))
            return
        with self._update() as change:
            exp = self._member(experience)
            self._remove(exp)
            change.removed.append(exp)
            change.tx.commit([], [exp], self._counters())

    def _member(self, experience: Experience | int) -> Experience:
        exp = experience if isinstance(experience, Experience) else self._by_id.get(experience)
        if exp is None or exp not in self._sampler:  # (an experience of another library is not ours)
            raise TFGRPOError(f"experience {experience!r} is not in this library")
        return exp

    def clear(self) -> None:
        """Remove every experience and reset the counters."""
        self._replace([], None)

    def _replace(self, experiences: list[Experience], loaded: int | None) -> None:
        """Swap in a whole new content (pruned like new experiences), written through in one
        transaction; on any failure the old content is restored. `loaded`: add that many to
        `total_loaded` (None: every counter starts again from 0)."""
        if self._store is None:
            self._swap(experiences, loaded)
            return
        with self._update() as change:
            change.restore = self._swap(experiences, loaded)
            change.tx.replace(list(self.experience_library), self._counters())

    def _swap(self, experiences: list[Experience], loaded: int | None) -> Callable[[], None]:
        """`_replace` in memory; returns what puts the old content back."""
        old_experiences, old_counters, old_next_id = list(self.experience_library), self._counters(), self._next_id

        def restore() -> None:
            self._reset_structures()
            self._next_id = old_next_id
            self._bulk_insert(old_experiences)
            for name, value in old_counters.items():
                setattr(self, name, value)

        counters = dict.fromkeys(_COUNTERS, 0) if loaded is None else {**old_counters}
        counters["total_loaded"] += loaded or 0
        try:
            self._reset_structures()
            self._bulk_insert(experiences)
            for name, value in counters.items():
                setattr(self, name, value)
            self.total_pruned += len(self._prune_all(int(self._clock())))
        except BaseException:
            restore()
            raise
        return restore

    # -- files ------------------------------------------------------------------------------------------

    def save_to_file(self, path: str | os.PathLike) -> None:
        """Write the library atomically: SQLite for .db/.sqlite/.sqlite3 paths (with config and
        counters), otherwise the spec's JSON array."""
        if is_sqlite_path(path):
            self._save_sqlite(path)
        else:
            write_json(path, self.experience_library)

    def _save_sqlite(self, path: str | os.PathLike) -> None:
        target = Path(path)
        fd, name = make_temp(target)
        os.close(fd)  # an empty file: SQLite makes it a database
        tmp = Path(name)
        try:
            store = SQLiteStore(tmp, durability="normal")
            try:
                store.save_config(self.config.to_dict())
                store.replace(list(self.experience_library), self._counters())
                store.checkpoint()
            finally:
                store.close()
            os.replace(tmp, target)
        except BaseException:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)

    def load_from_file(self, path: str | os.PathLike) -> None:
        """Replace the library with a file's experiences (JSON or SQLite, told apart by content; or
        those of the library at a `postgresql://` URL).

        The whole file is read and checked first: a bad file raises `LibraryFormatError` and leaves the
        library (and its store) as it was. The file is only read, never changed. Its order is kept.
        Counters are kept; loaded experiences count as `total_loaded` and are pruned like new ones.
        """
        if not is_postgres_url(path) and not os.path.exists(path):
            raise LibraryNotFoundError(f"no library file at {path}")
        with _gc_paused():
            experiences = _read_library_file(path)
            self._replace(experiences, len(experiences))
        _freeze_loaded(len(experiences))

    def close(self) -> None:
        """Close the store, if any (the library stays usable in memory)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> TrainingFreeGRPO:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _COUNTERS}

    def __len__(self) -> int:
        return len(self._sampler)

    def __repr__(self) -> str:
        path = getattr(self._store, "where", None)
        where = f", store={path}" if path else ""
        return f"<TrainingFreeGRPO {len(self)}/{self.config.max_library_size} experiences{where}>"


class _Change:
    """What one change of a stored library did in memory, to undo it if the store's commit fails."""

    __slots__ = ("tx", "counters", "progress", "added", "removed", "restore")

    def __init__(self, tx: StoreTransaction, counters: dict[str, int], progress: dict | None) -> None:
        self.tx = tx
        self.counters = counters
        self.progress = progress
        self.added: list[Experience] = []
        self.removed: list[Experience] = []
        self.restore: Callable[[], None] | None = None


def _check_group(i: int, group: object) -> tuple | list:
    if not isinstance(group, (tuple, list)) or not 2 <= len(group) <= 3:
        raise InvalidRolloutsError(f"group {i} must be a (rollouts, rewards, metadata) tuple, got {group!r:.80}")
    return group


def _check_rollout(i: int, rollout: object) -> tuple[str, str]:
    if type(rollout) is tuple and len(rollout) == 2:
        prompt, response = rollout
        if type(prompt) is str and type(response) is str and prompt.isascii() and response.isascii():
            return rollout  # the common case, checked cheaply
    if not isinstance(rollout, (tuple, list)) or len(rollout) != 2:
        raise InvalidRolloutsError(f"rollout {i} must be a (prompt, response) pair of strings, got {rollout!r:.80}")
    return check_text(rollout[0], f"rollout {i} prompt"), check_text(rollout[1], f"rollout {i} response")


def _read_library_file(path: str | os.PathLike) -> list[Experience]:
    if not is_postgres_url(path) and not is_sqlite_file(path):
        return read_json(path)
    experiences = read_library(path).experiences
    for exp in experiences:
        exp.id = None  # new ids in this library
    return experiences


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Bulk loads create millions of objects that all stay alive; the cyclic collector would walk
    them again and again for nothing (about a fifth of a million-experience load)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_FREEZE_AT = 100_000


def _check_progress(only_if: Callable[[dict | None], bool] | None, progress: dict | None) -> None:
    if only_if is not None and not only_if(progress):
        raise ConflictError(f"the library's progress is no longer what this update expected (it is {progress!r})")


def _freeze_loaded(n: int) -> None:
    """After a large load, move every object alive into the collector's permanent generation
    (`gc.freeze()`): the loaded experiences live on and hold no cycles, and otherwise each of the next
    full collections walks all of them (half a second at 1M, in the middle of an `add_rollout_group`).
    The garbage made so far is collected first, so that freezing keeps none of it. (Only then: before
    every load, that collection walked everything else the process holds, 0.5-0.8 s in one with torch
    loaded, for libraries too small to freeze.)"""
    if n >= _FREEZE_AT and gc.isenabled():
        gc.collect()
        gc.freeze()


def _mean(values: list[float]) -> float:
    if not values:
        return 0.0
    try:
        return math.fsum(values) / len(values)
    except OverflowError:  # advantages near the float limit: their sum overflows, their mean does not
        return math.fsum(v / len(values) for v in values)
