"""The write-through stores: WAL mode, everything restored on reopen (SQLite and PostgreSQL, through the
`store_target` fixture), a failed commit leaves memory and disk unchanged, and nothing reported as added
is lost when the process is SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from store.server import raw_query
from support.core import FakeClock, quiet_config, snapshot
from tfgrpo import GRPOConfig, StoreError, TFGRPOError, TrainingFreeGRPO
from tfgrpo.core.store import LibraryState

# Reopening a library re-validates its stored config, which repeats the warnings for the small test
# sizes chosen here on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::tfgrpo.TFGRPOWarning")


def contents(lib: TrainingFreeGRPO) -> list:
    return [(e.id, e.to_dict()) for e in lib.experience_library]


def rows(path) -> list:
    return raw_query(
        str(path), "SELECT id, prompt, response, advantage, timestamp, metadata FROM experiences ORDER BY id"
    )


def populate(lib: TrainingFreeGRPO, groups: int = 6) -> None:
    for g in range(groups):
        lib.add_rollout_group([(f"p{g}", f"r{g}-{i}") for i in range(4)], [float((g + i) % 4) for i in range(4)])


# -- opening, write-through and reopening ------------------------------------------------------------------------


def test_open_creates_a_wal_database(tmp_path):
    path = tmp_path / "lib.db"
    with TrainingFreeGRPO.open(path) as lib:
        assert lib.library_size() == 0
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
    assert path.exists()


@pytest.mark.parametrize("how", ["open", "store="])
def test_every_group_is_written_through(store_target, how):
    path = store_target
    clock = FakeClock()
    config = quiet_config(max_library_size=5)
    lib = (
        TrainingFreeGRPO.open(path, config, clock=clock)
        if how == "open"
        else TrainingFreeGRPO(config, store=str(path), clock=clock)
    )
    for g in range(4):
        stored = lib.add_rollout_group([(f"p{g}", r) for r in ("best", "good", "bad", "worse")], [3.0, 2.0, 0.0, 0.0])
        assert [e.response for e in stored] == ["best", "good"]  # mean 1.25
        # Visible to another connection right away, without closing: the group was committed.
        on_disk = rows(path)
        assert [r[0] for r in on_disk] == [e.id for e in lib.experience_library]
        query = "SELECT total_rollouts, total_stored, total_pruned FROM library_state"
        counters = dict(zip(["total_rollouts", "total_stored", "total_pruned"], raw_query(path, query)[0]))
        assert counters["total_rollouts"] == 4 * (g + 1)
        assert counters["total_stored"] == lib.stats().total_stored
        assert counters["total_pruned"] == lib.stats().total_pruned
    assert lib.stats().total_pruned == 3  # 8 stored, capacity 5
    lib.close()


def test_reopening_restores_contents_counters_and_config(store_target):
    path = store_target
    clock = FakeClock()
    config = quiet_config(
        max_library_size=7,
        sampling_temperature=0.5,
        min_advantage_threshold=0.1,
        eviction_policy="oldest",
        scale_advantages_by_std=True,
    )
    lib = TrainingFreeGRPO.open(path, config, clock=clock)
    populate(lib)
    lib.tag(lib.experience_library[0], domain="web", note="naïve ✓")
    lib.remove(lib.experience_library[1])
    clock.advance(10)
    lib.add_rollout_group([("late", "x"), ("late", "y")], [1.0, 0.0], metadata={"k": "v"})
    before_contents, before_stats = contents(lib), lib.stats().to_dict()
    lib.close()

    reopened = TrainingFreeGRPO.open(path, clock=clock)  # no config given: the stored one is used
    assert reopened.config == config
    assert contents(reopened) == before_contents
    assert reopened.stats().to_dict() == before_stats
    assert reopened.experience_library[0].metadata == {"domain": "web", "note": "naïve ✓"}

    # And it carries on: ids stay unique, the eviction order is the stored config's.
    added = reopened.add_rollout_group([("next", "x"), ("next", "y")], [1.0, 0.0])
    assert added[0].id > max(i for i, _ in before_contents)
    reopened.close()


def test_a_given_config_replaces_the_stored_one(store_target):
    path = store_target
    TrainingFreeGRPO.open(path, GRPOConfig(sampling_temperature=0.5)).close()
    new = GRPOConfig(sampling_temperature=1.5)
    TrainingFreeGRPO.open(path, new).close()
    with TrainingFreeGRPO.open(path) as lib:
        assert lib.config == new


def test_clear_load_and_prune_are_written_through(store_target, tmp_path):
    path = store_target
    clock = FakeClock()
    lib = TrainingFreeGRPO.open(path, quiet_config(max_experience_age=100), clock=clock)
    populate(lib, 3)
    json_path = tmp_path / "snapshot.json"
    lib.save_to_file(json_path)

    clock.advance(101)
    assert lib.prune() == lib.stats().total_stored
    assert rows(path) == []

    lib.load_from_file(json_path)  # everything in it is stale now: pruned on load
    assert lib.library_size() == 0 and rows(path) == []

    clock.now -= 101
    lib.load_from_file(json_path)
    assert len(rows(path)) == lib.library_size() > 0
    lib.clear()
    assert rows(path) == [] and lib.stats().total_rollouts == 0
    lib.close()
    with TrainingFreeGRPO.open(path) as again:
        assert again.library_size() == 0 and again.stats().to_dict() == lib.stats().to_dict()


def test_not_a_store_path():
    with pytest.raises(StoreError, match=r"\.db"):
        TrainingFreeGRPO(store="library.json")
    with pytest.raises(StoreError, match="cannot connect to postgresql://nobody@127.0.0.1:1/x"):
        TrainingFreeGRPO(store="postgresql://nobody:secret@127.0.0.1:1/x")  # (the password is not shown)


# -- a store that fails ----------------------------------------------------------------------------------------


def test_database_locked_by_another_writer(tmp_path):
    path = tmp_path / "lib.db"
    lib = TrainingFreeGRPO.open(path, quiet_config(max_library_size=100), clock=FakeClock(), seed=3)
    populate(lib, 3)
    lib._store._db.execute("PRAGMA busy_timeout = 50")  # fail fast instead of waiting 5 s
    before, before_rows = snapshot(lib), rows(path)

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="lock") as info:
            lib.add_rollout_group([("p", "new"), ("p", "other")], [1.0, 0.0])
        assert isinstance(info.value, TFGRPOError)
        assert snapshot(lib) == before
        with pytest.raises(StoreError):
            lib.tag(lib.experience_library[0], domain="web")
        assert lib.experience_library[0].metadata == {}
        with pytest.raises(StoreError):
            lib.remove(lib.experience_library[0])
        with pytest.raises(StoreError):
            lib.clear()
        assert snapshot(lib) == before
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert rows(path) == before_rows
    lib.add_rollout_group([("p", "new"), ("p", "other")], [1.0, 0.0])  # works again once unlocked
    assert lib.library_size() == len(rows(path)) == len(before_rows) + 1
    lib.close()


def test_write_failing_inside_the_transaction_with_evictions(tmp_path):
    """A real SQLite failure after the transaction began (a trigger aborts one insert), on a group that
    also evicts: memory and disk must both be exactly as before."""
    path = tmp_path / "lib.db"
    lib = TrainingFreeGRPO.open(path, quiet_config(max_library_size=4), clock=FakeClock(), seed=3)
    populate(lib, 3)
    assert lib.is_at_capacity()
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON experiences WHEN NEW.response LIKE 'poison%' "
        "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END"
    )
    db.commit()
    db.close()
    before, before_rows, order = snapshot(lib), rows(path), [e.response for e in lib.experience_library]

    with pytest.raises(StoreError, match="disk full"):
        lib.add_rollout_group([("p", "poison-1"), ("p", "poison-2"), ("p", "x")], [9.0, 0.5, 0.0])

    assert rows(path) == before_rows
    assert [e.response for e in lib.experience_library] == order
    assert snapshot(lib)[:4] == before[:4]  # contents, stats, size, config
    assert lib.library_size() == len(list(lib.experience_library)) == 4
    lib.close()
    with TrainingFreeGRPO.open(path) as again:
        assert [e.response for e in again.experience_library] == order


class FlakyStore:
    """A stand-in store whose writes fail on demand (what a real disk cannot be made to do reliably);
    it is its own transaction."""

    def __init__(self) -> None:
        self.fail = False
        self.commits = []
        self.changes = None  # (what other processes committed: nothing)
        self.next_id = self.seq = 0

    def load(self) -> LibraryState:
        return LibraryState()

    def changes_since(self, seq):
        return None

    @contextlib.contextmanager
    def write(self, seq):
        yield self

    def _maybe_fail(self) -> None:
        if self.fail:
            raise StoreError("store unavailable (simulated)")

    def commit(self, added, removed, counters, progress=None) -> None:
        self._maybe_fail()
        self.commits.append(([e.id for e in added], [e.id for e in removed], dict(counters)))

    def replace(self, experiences, counters) -> None:
        self._maybe_fail()

    def save_config(self, config) -> None:
        pass

    def update_metadata(self, experience) -> None:
        self._maybe_fail()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("policy", ["lowest_advantage", "oldest"])
@pytest.mark.parametrize(
    "rewards",
    [
        [1.0, 0.0],  # adds one, evicts an older one
        [0.1, 0.0, -0.1],  # adds one that is itself evicted at once (lowest advantage)
        [5.0, 4.0, 3.0, 0.0, 0.0, 0.0],  # adds three, evicts everything that was there
        [0.0, 0.0],  # adds nothing
    ],
)
def test_failed_commit_leaves_memory_unchanged(policy, rewards):
    store = FlakyStore()
    clock = FakeClock()
    lib = TrainingFreeGRPO(quiet_config(max_library_size=3, eviction_policy=policy), store=store, clock=clock, seed=9)
    lib.add_rollout_group([("p", "a"), ("p", "b")], [1.0, 0.0])
    lib.add_rollout_group([("p", "c"), ("p", "d"), ("p", "e")], [2.0, 1.0, 0.0])
    clock.advance(5)
    lib.add_rollout_group([("p", "f"), ("p", "g")], [0.6, 0.0])
    assert lib.library_size() == 3
    before = snapshot(lib)
    order = [e.response for e in lib.experience_library]

    store.fail = True
    with pytest.raises(StoreError):
        lib.add_rollout_group([("p", f"new{i}") for i in range(len(rewards))], rewards)
    assert [e.response for e in lib.experience_library] == order
    assert snapshot(lib)[:4] == before[:4]
    assert lib.library_size() == 3 and not any(e.response.startswith("new") for e in lib.experience_library)

    # Stale pruning that fails to commit is undone too.
    clock.advance(lib.config.max_experience_age + 1)
    with pytest.raises(StoreError):
        lib.prune()
    assert [e.response for e in lib.experience_library] == order
    assert snapshot(lib)[:4] == before[:4]

    store.fail = False
    assert lib.prune() == 3
    assert lib.library_size() == 0


def test_failed_metadata_write_is_undone():
    store = FlakyStore()
    lib = TrainingFreeGRPO(store=store)
    lib.add_rollout_group([("p", "a"), ("p", "b")], [1.0, 0.0], metadata={"domain": "x"})
    exp = lib.experience_library[0]
    store.fail = True
    with pytest.raises(StoreError):
        lib.tag(exp, domain="y", extra="z")
    assert exp.metadata == {"domain": "x"}


# -- durability after a killed process ---------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from tfgrpo import GRPOConfig, TrainingFreeGRPO

    # Room for every group a fast machine writes before the kill: nothing may be pruned.
    lib = TrainingFreeGRPO.open(sys.argv[1], GRPOConfig(max_library_size=1_000_000))
    start = lib.library_size()
    for i in range(start, start + 100_000):
        lib.add_rollout_group([(f"group {i}", "good"), (f"group {i}", "bad")], [1.0, 0.0])
        print(i, flush=True)
    """
)


def _run_and_kill(path, rng: random.Random, after_lines: int | None) -> list[int]:
    """Start a writer, SIGKILL it after some reported groups (or at a random moment), and return every
    group number it reported."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    reported = []
    try:
        reported.append(int(child.stdout.readline()))  # it is in the loop now
        if after_lines is None:
            time.sleep(rng.uniform(0.01, 0.3))
        else:
            while len(reported) < after_lines:
                reported.append(int(child.stdout.readline()))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        reported += [int(line) for line in child.stdout.read().split()]  # reported before it died
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return reported


def test_nothing_reported_is_lost_when_the_writer_is_killed(tmp_path):
    path = tmp_path / "crash.db"
    rng = random.Random(20240601)
    all_reported: list[int] = []
    for after_lines in [rng.randint(1, 60), None, rng.randint(30, 120), None]:
        all_reported += _run_and_kill(path, rng, after_lines)

        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()

        with TrainingFreeGRPO.open(path) as lib:
            present = sorted(int(e.prompt.split()[1]) for e in lib.experience_library)
            # Every reported group is there; the ones present are exactly 0..n-1 (each group atomic).
            assert set(all_reported) <= set(present)
            assert present == list(range(len(present)))
            assert all(e.response == "good" and e.advantage == 0.5 for e in lib.experience_library)
            stats = lib.stats()
            assert stats.total_stored == stats.current_library_size == len(present)
            assert stats.total_rollouts == 2 * len(present)
            assert stats.total_pruned == 0
    assert len(all_reported) >= 4
