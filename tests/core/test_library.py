"""The library's semantics one rule at a time: advantages, the threshold, pruning by age and by size
(both eviction policies), counters, retrieval, metadata and the `experience_library` view."""

from __future__ import annotations

import pytest

from support.core import NOW, FakeClock, quiet_config
from tfgrpo import Experience, ExperienceLibrary, TrainingFreeGRPO, compute_advantages


def responses(lib: TrainingFreeGRPO) -> list[str]:
    return [e.response for e in lib.experience_library]


# -- advantages and the threshold ---------------------------------------------------------------------------


def test_advantage_is_reward_minus_group_mean():
    assert compute_advantages([1.0, 0.0, 0.5, 0.5]) == [0.5, -0.5, 0.0, 0.0]
    assert compute_advantages([3, 1]) == [1.0, -1.0]
    assert compute_advantages([0.7, 0.7, 0.7]) == [0.0, 0.0, 0.0]


def test_scaled_advantages_divide_by_sample_std():
    # rewards 0, 1: mean 0.5, advantages -0.5, 0.5, sample std sqrt(0.5)
    scaled = compute_advantages([0.0, 1.0], scale_by_std=True)
    assert scaled == pytest.approx([-0.5 / (0.5**0.5 + 1e-4), 0.5 / (0.5**0.5 + 1e-4)])
    lib = TrainingFreeGRPO(quiet_config(scale_advantages_by_std=True))
    lib.add_rollout_group([("p", "lo"), ("p", "hi")], [0.0, 1.0])
    assert [e.advantage for e in lib.experience_library] == [scaled[1]]


def test_stored_only_strictly_above_the_threshold():
    lib = TrainingFreeGRPO(quiet_config(min_advantage_threshold=0.25))
    stored = lib.add_rollout_group([("p", r) for r in "abcd"], [1.0, 0.75, 0.5, 0.0])  # +.44, +.19, -.06, -.56
    assert [e.response for e in stored] == ["a"]
    lib2 = TrainingFreeGRPO(quiet_config(min_advantage_threshold=0.5))
    assert lib2.add_rollout_group([("p", "a"), ("p", "b")], [1.0, 0.0]) == []  # exactly 0.5: not above
    negative = TrainingFreeGRPO(quiet_config(min_advantage_threshold=-0.5))
    assert [e.response for e in negative.add_rollout_group([("p", "a"), ("p", "b")], [1.0, 0.2])] == ["a", "b"]


def test_equal_rewards_store_nothing_but_count_rollouts():
    lib = TrainingFreeGRPO()
    assert lib.add_rollout_group([("p", "a"), ("p", "b"), ("p", "c")], [0.1, 0.1, 0.1]) == []
    stats = lib.stats()
    assert (stats.total_rollouts, stats.total_stored, stats.current_library_size) == (3, 0, 0)


def test_stats_reflect_a_group_that_stored_nothing():
    lib = TrainingFreeGRPO()
    lib.add_rollout_group([("p", "a"), ("p", "b")], [1.0, 0.0])
    assert lib.stats().total_rollouts == 2  # (stats read, and maybe cached, here)
    lib.add_rollout_group([("p", "c"), ("p", "d")], [0.5, 0.5])
    assert lib.stats().total_rollouts == 4
    assert lib.stats().storage_efficiency() == 0.25


def test_group_metadata_is_copied_per_experience():
    lib = TrainingFreeGRPO()
    metadata = {"domain": "web"}
    a, b = lib.add_rollout_group([("p", "a"), ("p", "b"), ("p", "c")], [1.0, 1.0, 0.0], metadata=metadata)
    metadata["domain"] = "changed later"
    a.metadata["only"] = "a"
    assert a.metadata == {"domain": "web", "only": "a"}
    assert b.metadata == {"domain": "web"}


def test_rollouts_and_rewards_may_be_any_iterables():
    lib = TrainingFreeGRPO()
    lib.add_rollout_group(iter([("p", "a"), ["p", "b"]]), (r for r in [1.0, 0.0]))
    assert responses(lib) == ["a"]


# -- pruning by age -------------------------------------------------------------------------------------------


def test_stale_experiences_go_when_the_next_group_arrives():
    clock = FakeClock()
    lib = TrainingFreeGRPO(quiet_config(max_experience_age=3600), clock=clock)
    lib.add_rollout_group([("p", "old"), ("p", "x")], [1.0, 0.0])
    clock.advance(3600)
    lib.add_rollout_group([("p", "mid"), ("p", "x")], [1.0, 0.0])
    assert responses(lib) == ["old", "mid"]  # exactly max_age old is not stale yet
    clock.advance(1)
    lib.add_rollout_group([("p", "new"), ("p", "x")], [1.0, 0.0])
    assert responses(lib) == ["mid", "new"]
    assert lib.stats().total_pruned == 1
    assert [e.timestamp for e in lib.experience_library] == [NOW + 3600, NOW + 3601]


def test_prune_is_exact_even_after_the_clock_went_backwards():
    clock = FakeClock()
    lib = TrainingFreeGRPO(quiet_config(max_experience_age=1000), clock=clock)
    lib.add_rollout_group([("p", "a"), ("p", "x")], [1.0, 0.0])  # at NOW
    clock.now = NOW - 500  # the system clock was set back
    lib.add_rollout_group([("p", "b"), ("p", "x")], [1.0, 0.0])  # at NOW - 500
    clock.now = NOW + 800  # b is 1300 s old (stale), a only 800 s
    lib.add_rollout_group([("p", "c"), ("p", "x")], [1.0, 0.0])
    lib.prune()
    assert sorted(responses(lib)) == ["a", "c"]
    assert lib.stats().total_pruned == 1
    assert lib.prune() == 0


# -- pruning by size -------------------------------------------------------------------------------------------


def test_over_capacity_the_lowest_advantages_go_ties_oldest_first():
    clock = FakeClock()
    lib = TrainingFreeGRPO(quiet_config(max_library_size=3), clock=clock)
    lib.add_rollout_group([("p", "a1"), ("p", "x")], [1.0, 0.0])  # +0.5
    lib.add_rollout_group([("p", "b1"), ("p", "x")], [2.0, 0.0])  # +1.0
    lib.add_rollout_group([("p", "a2"), ("p", "x")], [1.0, 0.0])  # +0.5
    assert lib.is_at_capacity()
    lib.add_rollout_group([("p", "a3"), ("p", "x")], [1.0, 0.0])  # +0.5: a1 (oldest of the lowest) goes
    assert responses(lib) == ["b1", "a2", "a3"]
    lib.add_rollout_group([("p", "c1"), ("p", "x")], [6.0, 0.0])  # +3.0: a2 goes
    assert responses(lib) == ["b1", "a3", "c1"]
    lib.add_rollout_group([("p", "low"), ("p", "x")], [0.2, 0.0])  # +0.1: itself the lowest, goes at once
    assert responses(lib) == ["b1", "a3", "c1"]
    stats = lib.stats()
    assert (stats.total_stored, stats.total_pruned, stats.current_library_size) == (6, 3, 3)


def test_over_capacity_with_oldest_policy_the_oldest_go():
    lib = TrainingFreeGRPO(quiet_config(max_library_size=2, eviction_policy="oldest"), clock=FakeClock())
    lib.add_rollout_group([("p", "best"), ("p", "x")], [10.0, 0.0])
    lib.add_rollout_group([("p", "b"), ("p", "x")], [1.0, 0.0])
    lib.add_rollout_group([("p", "c"), ("p", "x")], [0.2, 0.0])
    assert responses(lib) == ["b", "c"]  # the best went: it was the oldest
    assert lib.stats().total_pruned == 1


def test_prune_counts_age_and_size_together():
    clock = FakeClock()
    lib = TrainingFreeGRPO(quiet_config(max_library_size=10, max_experience_age=100), clock=clock)
    for i in range(4):
        lib.add_rollout_group([("p", f"old{i}"), ("p", "x")], [1.0, 0.0])
    clock.advance(101)
    lib.add_rollout_group([("p", f"n{i}") for i in range(12)] + [("p", "x")], [1.0] * 12 + [0.0])
    # 4 stale + 2 over capacity (12 new, capacity 10)
    stats = lib.stats()
    assert (stats.total_stored, stats.total_pruned, stats.current_library_size) == (16, 6, 10)


def test_remove_is_not_counted_as_pruned_and_clear_resets():
    lib = TrainingFreeGRPO()
    lib.add_rollout_group([("p", "a"), ("p", "b"), ("p", "c")], [1.0, 1.0, 0.0])
    lib.remove(lib.experience_library[0])
    lib.remove(lib.experience_library[0].id)
    stats = lib.stats()
    assert (stats.total_stored, stats.total_pruned, stats.current_library_size) == (2, 0, 0)
    assert stats.retention_rate() == 0.0
    lib.add_rollout_group([("p", "d"), ("p", "e")], [1.0, 0.0])
    lib.clear()
    assert lib.library_size() == 0 and lib.stats().to_dict()["total_rollouts"] == 0
    assert lib.sample_experience() is None


# -- retrieval and metadata ------------------------------------------------------------------------------------


def test_prompt_lookup_prefix_order_k_and_where():
    clock = FakeClock()
    lib = TrainingFreeGRPO(clock=clock)
    lib.add_rollout_group([("Read file a", "r1"), ("Read file b", "r2"), ("Write", "w")], [2.0, 1.0, 0.0])
    clock.advance(1)
    lib.add_rollout_group([("Read file c", "r3"), ("x", "y")], [2.0, 0.0], metadata={"lang": "py"})
    # r1: +1.0, r2: 0.0 (not stored), r3: +1.0 (a tie with r1: the newer first)
    assert [e.response for e in lib.get_experiences_for_prompt("Read file")] == ["r3", "r1"]
    assert [e.response for e in lib.get_experiences_for_prompt("Read file", k=1)] == ["r3"]
    assert [e.response for e in lib.get_experiences_for_prompt("Read", where={"lang": "py"})] == ["r3"]
    assert lib.get_experiences_for_prompt("Read file", where={"lang": "rs"}) == []
    assert lib.get_experiences_for_prompt("read file") == []  # case-sensitive, like the reference
    assert len(lib.get_experiences_for_prompt("")) == lib.library_size() == 2
    assert lib.filter_by_metadata(lang="py") == lib.get_experiences_for_prompt("Read file c")
    assert lib.filter_by_metadata() == list(lib.experience_library)


def test_tag_by_experience_or_id():
    lib = TrainingFreeGRPO()
    a, b = lib.add_rollout_group([("p", "a"), ("p", "b"), ("p", "c")], [1.0, 1.0, 0.0])
    assert lib.tag(a, domain="web") is a
    lib.tag(b.id, domain="math")
    assert lib.filter_by_metadata(domain="web") == [a] and lib.filter_by_metadata(domain="math") == [b]
    assert lib.get(b.id) is b and lib.get(12345) is None


# -- the experience_library view ---------------------------------------------------------------------------------


def test_experience_library_is_a_sequence_oldest_first():
    clock = FakeClock()
    lib = TrainingFreeGRPO(clock=clock)
    for i in range(5):
        lib.add_rollout_group([("p", f"r{i}"), ("p", "x")], [1.0, 0.0])
        clock.advance(1)
    view = lib.experience_library
    assert isinstance(view, ExperienceLibrary) and len(view) == 5
    assert view[0].response == "r0" and view[-1].response == "r4" and view[-2].response == "r3"
    assert [e.response for e in view[1:3]] == ["r1", "r2"]
    assert [e.response for e in reversed(view)] == ["r4", "r3", "r2", "r1", "r0"]
    assert view.last() is view[-1]
    with pytest.raises(IndexError):
        view[5]
    with pytest.raises(IndexError):
        view[-6]
    lib.remove(view[2])
    assert [e.response for e in lib.experience_library] == ["r0", "r1", "r3", "r4"]
    assert TrainingFreeGRPO().experience_library.last() is None


def test_experience_equality_and_repr():
    a = Experience("p", "r", 0.5, timestamp=1, metadata={"k": "v"})
    assert a == Experience("p", "r", 0.5, timestamp=1, metadata={"k": "v"})
    assert a != Experience("p", "r", 0.5, timestamp=2, metadata={"k": "v"})
    assert Experience("p", "r", 0.5, timestamp=1) == Experience("p", "r", 0.5, timestamp=1, metadata={})
    assert "advantage=0.500" in repr(a)
    with pytest.raises(TypeError):
        hash(a)


def test_stats_stay_finite_at_extreme_advantages():
    lib = TrainingFreeGRPO()
    for i in range(3):
        lib.add_rollout_group([("p", f"a{i}"), ("p", f"b{i}")], [1.7e308, -1.7e308])  # advantage 1.7e308
    stats = lib.stats()
    assert stats.avg_advantage == pytest.approx(1.7e308) and stats.max_advantage == 1.7e308
    assert all(v == v and abs(v) != float("inf") for v in stats.to_dict().values())
    assert "inf" not in stats.summary() and "nan" not in stats.summary()
    assert len(lib.sample_multiple(3, replace=False)) == 3
