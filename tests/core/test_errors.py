"""Bad input: a clear error from the `tfgrpo.errors` family, and nothing changed.

"Nothing changed" is checked on everything observable: contents (with ids, in order), counters, stats,
config and what a seeded sampler draws afterwards (see `support.snapshot`)."""

from __future__ import annotations

import math
import warnings

import pytest

from support.core import FakeClock, snapshot
from tfgrpo import (
    ConfigError,
    GRPOConfig,
    InvalidRolloutsError,
    TFGRPOError,
    TFGRPOWarning,
    TrainingFreeGRPO,
    compute_advantages,
)


@pytest.fixture
def lib():
    """A small library with some history: stored, pruned and tagged experiences."""
    with pytest.warns(TFGRPOWarning):
        config = GRPOConfig(max_library_size=3)
    grpo = TrainingFreeGRPO(config, clock=FakeClock(), seed=5)
    grpo.add_rollout_group([("p1", "a"), ("p1", "b"), ("p1", "c")], [1.0, 0.0, 0.5])
    grpo.add_rollout_group([("p2", "d"), ("p2", "e"), ("p2", "f"), ("p2", "g")], [3.0, 2.0, 0.0, 1.0])
    grpo.add_rollout_group([("p3", "h"), ("p3", "i")], [0.0, 2.0], metadata={"domain": "x"})
    assert grpo.library_size() == 3 and grpo.stats().total_pruned == 1  # "a" (+0.5, oldest) went
    return grpo


# -- rollout groups -----------------------------------------------------------------------------------------

PAIRS = [("p", "r1"), ("p", "r2"), ("p", "r3")]

BAD_GROUPS = {
    "more rollouts than rewards": (PAIRS, [1.0, 0.0], None, "3 rollouts but 2 rewards"),
    "more rewards than rollouts": (PAIRS[:2], [1.0, 0.0, 0.5], None, "2 rollouts but 3 rewards"),
    "group of one": (PAIRS[:1], [1.0], None, "at least 2"),
    "empty group": ([], [], None, "at least 2"),
    "NaN reward": (PAIRS, [1.0, math.nan, 0.0], None, "reward 1"),
    "infinite reward": (PAIRS, [math.inf, 1.0, 0.0], None, "reward 0"),
    "minus infinite reward": (PAIRS, [1.0, 0.0, -math.inf], None, "reward 2"),
    "string reward": (PAIRS, [1.0, "0.5", 0.0], None, "reward 1"),
    "None reward": (PAIRS, [1.0, None, 0.0], None, "reward 1"),
    "bool reward": (PAIRS, [True, False, 0.0], None, "reward 0"),
    "reward too large for a float": (PAIRS, [10**400, 0.0, 1.0], None, "reward 0"),
    "rewards whose mean overflows": (PAIRS, [1e308, 1.5e308, 0.0], None, "too large"),
    "rollout is a bare string": ([("p", "r1"), "p r2"], [1.0, 0.0], None, "rollout 1"),
    "rollout of three": ([("p", "r1"), ("p", "r2", "x")], [1.0, 0.0], None, "rollout 1"),
    "non-string prompt": ([(1, "r1"), ("p", "r2")], [1.0, 0.0], None, "rollout 0"),
    "non-string response": ([("p", "r1"), ("p", None)], [1.0, 0.0], None, "rollout 1"),
    "bytes response": ([("p", b"r1"), ("p", "r2")], [1.0, 0.0], None, "rollout 0"),
    "metadata not a dict": (PAIRS, [1.0, 0.0, 0.5], "domain=web", "metadata"),
    "metadata non-string key": (PAIRS, [1.0, 0.0, 0.5], {1: "web"}, "metadata"),
    "metadata non-string value": (PAIRS, [1.0, 0.0, 0.5], {"step": 3}, "metadata"),
    "metadata None value": (PAIRS, [1.0, 0.0, 0.5], {"domain": None}, "metadata"),
}


@pytest.mark.parametrize("case", list(BAD_GROUPS), ids=list(BAD_GROUPS))
def test_bad_rollout_group_raises_and_changes_nothing(lib, case):
    rollouts, rewards, metadata, message = BAD_GROUPS[case]
    before = snapshot(lib)
    with pytest.raises(InvalidRolloutsError, match=message) as info:
        lib.add_rollout_group(rollouts, rewards, metadata=metadata)
    assert isinstance(info.value, TFGRPOError)
    assert snapshot(lib) == before


def test_library_works_normally_after_rejected_input(lib):
    with pytest.raises(InvalidRolloutsError):
        lib.add_rollout_group(PAIRS, [1.0, math.nan, 0.0])
    stored = lib.add_rollout_group(PAIRS, [9.0, 0.0, 0.0])
    assert [e.response for e in stored] == ["r1"]
    assert lib.stats().total_rollouts == 9 + 3


def test_rewards_may_be_numpy_values():
    np = pytest.importorskip("numpy")
    grpo = TrainingFreeGRPO()
    grpo.add_rollout_group([("p", "a"), ("p", "b")], np.array([1, 0]))
    grpo.add_rollout_group([("p", "c"), ("p", "d")], np.array([0.0, 2.0], dtype=np.float32))
    grpo.add_rollout_group([("p", "e"), ("p", "f")], np.array([3.0, 1.0]))
    assert [(e.response, e.advantage) for e in grpo.experience_library] == [("a", 0.5), ("d", 1.0), ("e", 1.0)]
    assert all(type(e.advantage) is float for e in grpo.experience_library)
    with pytest.raises(InvalidRolloutsError):
        grpo.add_rollout_group([("p", "g"), ("p", "h")], np.array([np.nan, 1.0]))


def test_compute_advantages_rejects_bad_rewards_directly():
    with pytest.raises(InvalidRolloutsError):
        compute_advantages([1.0])
    with pytest.raises(InvalidRolloutsError):
        compute_advantages([1.0, math.nan])


# -- other library calls -------------------------------------------------------------------------------------


def test_tag_with_bad_metadata_changes_nothing(lib):
    target = lib.experience_library[0]
    before = snapshot(lib)
    with pytest.raises(InvalidRolloutsError, match="metadata"):
        lib.tag(target, step=3)
    with pytest.raises(InvalidRolloutsError, match="metadata"):
        lib.tag(target, ok="yes", bad=None)  # one bad value: none of them is applied
    assert snapshot(lib) == before
    assert "ok" not in target.metadata


def test_setting_bad_metadata_on_an_experience_is_refused(lib):
    target = lib.experience_library[-1]
    with pytest.raises(InvalidRolloutsError):
        target.metadata = {"step": 1}
    assert target.metadata == {"domain": "x"}


def test_tag_or_remove_an_unknown_experience(lib):
    before = snapshot(lib)
    outsider = TrainingFreeGRPO()
    outsider.add_rollout_group([("q", "x"), ("q", "y")], [1.0, 0.0])
    stranger = outsider.experience_library[0]
    for call in (lambda: lib.tag(stranger, a="b"), lambda: lib.remove(stranger), lambda: lib.remove(10_000)):
        with pytest.raises(TFGRPOError, match="not in this library"):
            call()
    assert snapshot(lib) == before

    gone = lib.experience_library[0]
    lib.remove(gone)
    with pytest.raises(TFGRPOError, match="not in this library"):
        lib.remove(gone)  # twice
    with pytest.raises(TFGRPOError, match="not in this library"):
        lib.tag(gone, a="b")


@pytest.mark.parametrize("k", [-1, 2.0, "3", True, None])
def test_sample_multiple_bad_k(lib, k):
    before = snapshot(lib)
    with pytest.raises(TFGRPOError, match="k must be"):
        lib.sample_multiple(k)
    assert snapshot(lib) == before


def test_unknown_retrieval_mode(lib):
    with pytest.raises(TFGRPOError, match="mode"):
        lib.get_experiences_for_prompt("p", mode="semantic-maybe")


# -- configuration -------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    ("group_size", 0),
    ("group_size", -8),
    ("group_size", 8.0),
    ("group_size", "8"),
    ("group_size", None),
    ("group_size", True),
    ("max_library_size", 0),
    ("max_library_size", 1.5),
    ("max_library_size", math.inf),
    ("max_experience_age", 0),
    ("max_experience_age", -3600),
    ("max_experience_age", "1 week"),
    ("min_advantage_threshold", math.nan),
    ("min_advantage_threshold", math.inf),
    ("min_advantage_threshold", "0.1"),
    ("min_advantage_threshold", None),
    ("sampling_temperature", 0),
    ("sampling_temperature", 0.0),
    ("sampling_temperature", -1.0),
    ("sampling_temperature", math.nan),
    ("sampling_temperature", math.inf),
    ("sampling_temperature", "1.0"),
    ("sampling_temperature", False),
    ("use_advantage_weighting", 1),
    ("use_advantage_weighting", "yes"),
    ("scale_advantages_by_std", None),
    ("eviction_policy", "random"),
    ("eviction_policy", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_CONFIGS, ids=[f"{f}={v!r}" for f, v in BAD_CONFIGS])
def test_config_values_that_cannot_work(field, value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TFGRPOWarning)
        with pytest.raises(ConfigError, match=f"GRPOConfig.{field}") as info:
            GRPOConfig(**{field: value})
        with pytest.raises(ConfigError, match=f"GRPOConfig.{field}"):
            GRPOConfig().replace(**{field: value})
    assert isinstance(info.value, TFGRPOError) and isinstance(info.value, ValueError)


def test_config_replace_unknown_field():
    with pytest.raises(ConfigError, match="temprature"):
        GRPOConfig().replace(temprature=0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_library_size", 10),
        ("max_library_size", 2_000_000),
        ("group_size", 2),
        ("group_size", 64),
        ("max_experience_age", 60),
        ("max_experience_age", 86_400 * 365),
        ("min_advantage_threshold", -2.0),
        ("min_advantage_threshold", 1.5),
        ("sampling_temperature", 0.01),
        ("sampling_temperature", 5.0),
    ],
)
def test_values_outside_recommended_ranges_warn_but_work(field, value):
    with pytest.warns(TFGRPOWarning, match=f"GRPOConfig.{field}={value}.*recommended range"):
        config = GRPOConfig(**{field: value})
    assert getattr(config, field) == value
    grpo = TrainingFreeGRPO(config)
    stored = grpo.add_rollout_group([("p", "a"), ("p", "b"), ("p", "c")], [5.0, 2.0, 2.0])  # +2, -1, -1
    assert len(stored) == {-2.0: 3, 1.5: 1}.get(config.min_advantage_threshold, 1)


def test_recommended_range_edges_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GRPOConfig(
            group_size=4,
            max_library_size=1000,
            max_experience_age=3600,
            min_advantage_threshold=-1.0,
            sampling_temperature=0.1,
        )
        GRPOConfig(
            group_size=32,
            max_library_size=1_000_000,
            max_experience_age=2_592_000,
            min_advantage_threshold=1.0,
            sampling_temperature=2.0,
        )


def test_config_numbers_are_normalised_and_frozen():
    config = GRPOConfig(sampling_temperature=1, min_advantage_threshold=0)
    assert type(config.sampling_temperature) is float and type(config.min_advantage_threshold) is float
    with pytest.raises(AttributeError):
        config.sampling_temperature = 0.5  # frozen: a library's config cannot drift silently


def test_config_round_trips_through_a_dict_and_ignores_unknown_keys():
    config = GRPOConfig(group_size=16, sampling_temperature=0.5, eviction_policy="oldest")
    data = config.to_dict() | {"from_a_newer_version": 1}
    assert GRPOConfig.from_dict(data) == config


def test_library_rejects_a_non_config():
    with pytest.raises((TypeError, TFGRPOError)):
        TrainingFreeGRPO({"group_size": 8})
