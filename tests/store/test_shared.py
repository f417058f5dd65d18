"""Several libraries (each with its own connection, as processes have) on one store, SQLite and PostgreSQL:
the store decides ids, counters, capacity and pruning; each library follows the others' commits."""

from __future__ import annotations

import subprocess
import sys

import pytest

from store.server import raw_query
from tfgrpo import GRPOConfig, TFGRPOError, TrainingFreeGRPO
from tfgrpo.core.store import sqlstore
from tfgrpo.llm.base import Generation
from tfgrpo.llm.cache import LLMCache
from tfgrpo.semantic import LessonLibrary
from tfgrpo.semantic.operations import Operation

pytestmark = pytest.mark.filterwarnings("ignore::tfgrpo.TFGRPOWarning")


def opened(target: str, **config) -> TrainingFreeGRPO:
    """A library on `target` that catches up only when asked (or when it writes)."""
    return TrainingFreeGRPO.open(target, GRPOConfig(**config) if config else None, refresh_interval=None, seed=1)


def contents(lib: TrainingFreeGRPO) -> list:
    return [(e.id, e.to_dict()) for e in lib.experience_library]


def add(lib: TrainingFreeGRPO, name: str, rewards=(1.0, 0.0)) -> list:
    return lib.add_rollout_group([(name, f"{name} answer {i}") for i in range(len(rewards))], list(rewards))


def test_a_second_library_follows_adds_removals_tags_and_counters(store_target):
    a, b = opened(store_target), opened(store_target)
    first = add(a, "one")
    second = add(a, "two", (3.0, 1.0, 0.0))
    assert b.sample_experience() is None and b.library_size() == 0  # not caught up yet
    assert b.refresh() and not b.refresh()
    assert contents(b) == contents(a)
    assert b.stats().to_dict() == a.stats().to_dict()

    a.tag(first[0], domain="web")
    a.remove(second[0])
    assert b.refresh()
    assert contents(b) == contents(a)
    assert b.get(first[0].id).metadata == {"domain": "web"}
    assert b.get(second[0].id) is None
    a.close()
    b.close()


def test_ids_and_counters_are_decided_by_the_store(store_target):
    a, b = opened(store_target), opened(store_target)
    ids = []
    for i in range(6):  # neither refreshes: each write catches up first
        lib = (a, b)[i % 2]
        ids += [e.id for e in add(lib, f"p{i}")]
    assert ids == sorted(set(ids))
    for lib in (a, b):
        lib.refresh()
        stats = lib.stats()
        assert (stats.total_rollouts, stats.total_stored, stats.current_library_size) == (12, 6, 6)
    assert contents(a) == contents(b)
    ((rollouts, stored),) = raw_query(store_target, "SELECT total_rollouts, total_stored FROM library_state")
    assert (rollouts, stored) == (12, 6)
    a.close()
    b.close()


@pytest.mark.parametrize("policy", ["lowest_advantage", "oldest"])
def test_capacity_holds_and_each_prune_is_decided_once(store_target, policy):
    a = opened(store_target, max_library_size=5, eviction_policy=policy)
    b = opened(store_target)  # the stored config
    assert b.config.max_library_size == 5
    for i in range(12):
        add((a, b)[i % 3 == 0], f"p{i}", (1.0 + i, 0.0))
        (stored,) = raw_query(store_target, "SELECT COUNT(*) FROM experiences")[0]
        assert stored <= 5
    for lib in (a, b):
        lib.refresh()
        stats = lib.stats()
        assert stats.current_library_size == 5 and stats.total_stored == 12 and stats.total_pruned == 7
    assert contents(a) == contents(b)
    removals = raw_query(store_target, "SELECT experience_id FROM library_changes WHERE op = 'remove'")
    assert len(removals) == len(set(removals)) == 7
    a.close()
    b.close()


def test_clear_and_load_make_the_others_start_over(store_target, tmp_path):
    a, b = opened(store_target), opened(store_target)
    add(a, "one")
    add(a, "two")
    a.save_to_file(tmp_path / "saved.json")
    b.refresh()
    a.clear()
    assert b.refresh() and b.library_size() == 0 and b.stats().total_rollouts == 0
    b.load_from_file(tmp_path / "saved.json")
    assert a.refresh()
    assert contents(a) == contents(b) and a.library_size() == 2 and a.stats().total_loaded == 2
    add(a, "three")  # ids go on after the reload
    assert len({e.id for e in a.experience_library}) == 3
    a.close()
    b.close()


def test_a_new_config_is_taken_up_by_the_others(store_target):
    a = opened(store_target, sampling_temperature=0.5)
    add(a, "one")
    b = opened(store_target, sampling_temperature=2.0, max_library_size=1000)  # replaces the stored config
    assert a.refresh()
    assert a.config == b.config == GRPOConfig(sampling_temperature=2.0, max_library_size=1000)
    assert contents(a) == contents(b)
    a.close()
    b.close()


def test_reads_catch_up_after_the_refresh_interval(store_target):
    writer = opened(store_target)
    eager = TrainingFreeGRPO.open(store_target, refresh_interval=0)
    lazy = opened(store_target)
    add(writer, "one")
    assert eager.sample_experience().prompt == "one" and eager.library_size() == 1  # every draw looks
    assert lazy.sample_experience() is None and lazy.library_size() == 0  # until asked
    lazy.refresh()
    assert lazy.library_size() == 1
    for lib in (writer, eager, lazy):
        lib.close()


def test_a_reader_further_behind_than_the_feed_reloads(store_target, monkeypatch):
    monkeypatch.setattr(sqlstore, "KEEP_CHANGES", 3)
    monkeypatch.setattr(sqlstore, "_TRIM_EVERY", 2)
    a, b = opened(store_target), opened(store_target)
    for i in range(6):
        add(a, f"p{i}")
    (oldest,) = raw_query(store_target, "SELECT MIN(seq) FROM library_changes")[0]
    assert oldest > 1  # the start of the feed is gone
    assert b.refresh()
    assert contents(b) == contents(a) and b.stats().to_dict() == a.stats().to_dict()
    a.close()
    b.close()


def test_a_change_to_an_experience_another_process_removed_is_refused(store_target):
    a, b = opened(store_target), opened(store_target)
    exp = add(a, "one")[0]
    b.refresh()
    a.remove(exp.id)
    with pytest.raises(TFGRPOError, match="not in this library"):
        b.tag(exp.id, domain="web")
    assert b.library_size() == 0  # and it has caught up
    with pytest.raises(TFGRPOError, match="not in this library"):
        b.remove(exp.id)
    a.close()
    b.close()


def test_retrieval_indexes_follow_other_processes(store_target):
    a, b = opened(store_target), opened(store_target)
    b.enable_retrieval()
    add(a, "reverse a linked list in place")
    add(a, "parse a date string")
    b.refresh()
    found = b.get_experiences_for_prompt("how do I reverse a list", k=1, mode="lexical")
    assert [e.prompt for e in found] == ["reverse a linked list in place"]
    a.remove(found[0].id)
    b.refresh()
    assert b.get_experiences_for_prompt("reverse linked list", mode="lexical") == []
    assert [e.prompt for e in b.get_experiences_for_prompt("date", mode="lexical")] == ["parse a date string"]
    a.close()
    b.close()


# -- lessons and the LLM cache on both engines -------------------------------------------------------------------


def test_a_lesson_change_planned_on_an_old_version_is_planned_again(store_target):
    a = LessonLibrary(store_target, refresh_interval=None)
    b = LessonLibrary(store_target, refresh_interval=None)
    a.apply([Operation("add", "Check the units.")])
    # b still holds version 0, where G0 does not exist: its update is planned again on version 1.
    result = b.apply([Operation("update", "Check the units and the sign.", id="G0"), Operation("add", "Estimate.")])
    assert result.version == 2 and not result.skipped
    assert b.lessons == {"G0": "Check the units and the sign.", "G1": "Estimate."}
    assert a.refresh() and a.lessons == b.lessons and a.version == 2
    assert [v.kind for v in a.history()] == ["init", "apply", "apply"]
    a.close()
    b.close()


LESSON_WRITER = """
import sys
from tfgrpo.semantic import LessonLibrary
from tfgrpo.semantic.operations import Operation

with LessonLibrary(sys.argv[1], refresh_interval=None) as lib:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(15):
        lib.apply([Operation("add", f"Lesson {i} from writer {sys.argv[2]}.")])
"""


@pytest.mark.slow
def test_lesson_writers_at_once_lose_nothing(store_target):
    LessonLibrary(store_target).close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", LESSON_WRITER, store_target, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in "abc"
    ]
    for w in writers:
        assert w.stdout.readline() == "ready\n"
    for w in writers:  # at once: each plans while the others commit
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in writers:
        assert w.wait(timeout=120) == 0
        w.stdin.close()
        w.stdout.close()
    with LessonLibrary(store_target) as lib:
        assert sorted(lib.lessons.values()) == sorted(f"Lesson {i} from writer {n}." for i in range(15) for n in "abc")
        assert [v.version for v in lib.history()] == list(range(46))
        assert sorted(lib.lessons) == sorted(f"G{i}" for i in range(45))  # ids unique, none reused


def test_the_llm_cache_is_shared(store_target):
    with LLMCache(store_target) as one, LLMCache(store_target) as two:
        one.put_many([("k1", "m", "{}", [Generation("four", "stop", 3, 1)])])
        assert two.get("k1") == [Generation("four", "stop", 3, 1)] and len(two) == 1
        two.put_many([("k1", "m", "{}", [Generation("4", "stop", 3, 1)])])  # the same key again: replaced
        assert one.get("k1") == [Generation("4", "stop", 3, 1)] and len(one) == 1
