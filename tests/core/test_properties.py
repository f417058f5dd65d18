"""Property tests (hypothesis): random sequences of operations against a plain-list reference model that
does what the spec's Rust reference does (filter on every group, full sort on prune), plus properties
of advantages, JSON round trips and sampling at extreme scales."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from support.core import NOW, FakeClock, quiet_config  # noqa: E402
from support.properties import examples  # noqa: E402
from tfgrpo import Experience, InvalidRolloutsError, TrainingFreeGRPO, compute_advantages  # noqa: E402
from tfgrpo.core.files import read_json, write_json  # noqa: E402
from tfgrpo.core.store import SQLiteStore  # noqa: E402

# -- the reference model --------------------------------------------------------------------------------------


def reference_advantages(rewards: list[float]) -> list[float]:
    if min(rewards) == max(rewards):
        return [0.0] * len(rewards)
    mean = math.fsum(rewards) / len(rewards)
    return [r - mean for r in rewards]


@dataclass
class Item:
    prompt: str
    response: str
    advantage: float
    timestamp: int
    metadata: dict
    seq: int  # insertion order: "oldest" means smallest seq

    def as_tuple(self) -> tuple:
        return (self.prompt, self.response, self.advantage, self.timestamp, self.metadata)


@dataclass
class Model:
    max_size: int
    max_age: int
    threshold: float
    policy: str
    items: list[Item] = field(default_factory=list)
    total_rollouts: int = 0
    total_stored: int = 0
    total_pruned: int = 0
    total_loaded: int = 0
    dropped: int = 0  # left without being pruned: remove(), or replaced by a load
    seq: int = 0

    def add(self, rollouts, rewards, metadata, now) -> list[Item]:
        added = []
        for (prompt, response), advantage in zip(rollouts, reference_advantages(rewards)):
            if advantage > self.threshold:
                self.seq += 1
                added.append(Item(prompt, response, advantage, now, dict(metadata or {}), self.seq))
        self.items += added
        self.total_rollouts += len(rollouts)
        self.total_stored += len(added)
        self.prune(now)
        return added

    def prune(self, now) -> int:
        keep = [i for i in self.items if not now - i.timestamp > self.max_age]
        surplus = max(0, len(keep) - self.max_size)
        if surplus:
            if self.policy == "lowest_advantage":
                order = sorted(keep, key=lambda i: (i.advantage, i.seq))  # lowest first, ties oldest first
            else:
                order = sorted(keep, key=lambda i: i.seq)
            gone = {id(i) for i in order[:surplus]}
            keep = [i for i in keep if id(i) not in gone]
        pruned = len(self.items) - len(keep)
        self.items = keep
        self.total_pruned += pruned
        return pruned

    def load_same_content(self, now) -> None:
        self.dropped += len(self.items)
        self.total_loaded += len(self.items)
        self.prune(now)

    def clear(self) -> None:
        self.items = []
        self.total_rollouts = self.total_stored = self.total_pruned = self.total_loaded = self.dropped = 0


REWARDS = st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, -1.0]), min_size=2, max_size=6)


class LibraryMachine(RuleBasedStateMachine):
    @initialize(
        policy=st.sampled_from(["lowest_advantage", "oldest"]),
        max_size=st.integers(1, 6),
        max_age=st.sampled_from([5, 100]),
        threshold=st.sampled_from([-0.5, 0.0, 0.25]),
        with_store=st.booleans(),
    )
    def setup(self, policy, max_size, max_age, threshold, with_store):
        self.config = quiet_config(
            max_library_size=max_size,
            max_experience_age=max_age,
            min_advantage_threshold=threshold,
            eviction_policy=policy,
        )
        self.dir = Path(tempfile.mkdtemp(prefix="tfgrpo-props-"))
        self.db = self.dir / "lib.db" if with_store else None
        self.clock = FakeClock()
        self.lib = self._open()
        self.model = Model(max_size, max_age, threshold, policy)
        self.n = 0

    def _open(self) -> TrainingFreeGRPO:
        store = SQLiteStore(self.db) if self.db else None
        return TrainingFreeGRPO(self.config, store=store, clock=self.clock, seed=0)

    def teardown(self):
        if hasattr(self, "lib"):
            self.lib.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- operations ---------------------------------------------------------------------------------------

    @rule(rewards=REWARDS, prompt=st.sampled_from(["alpha", "beta"]), tagged=st.booleans())
    def add_group(self, rewards, prompt, tagged):
        rollouts = []
        for _ in rewards:
            self.n += 1
            rollouts.append((prompt, f"response {self.n}"))  # unique: identifies an experience
        metadata = {"domain": prompt} if tagged else None
        stored = self.lib.add_rollout_group(rollouts, rewards, metadata=metadata)
        expected = self.model.add(rollouts, rewards, metadata, int(self.clock()))
        assert [e.response for e in stored] == [i.response for i in expected]

    @rule(
        case=st.sampled_from(["mismatch", "single", "nan", "inf", "bad pair", "bad metadata"]),
    )
    def add_bad_group(self, case):
        rollouts, rewards, metadata = [("p", "x"), ("p", "y")], [1.0, 0.0], None
        if case == "mismatch":
            rewards = [1.0, 0.0, 0.5]
        elif case == "single":
            rollouts, rewards = rollouts[:1], rewards[:1]
        elif case == "nan":
            rewards = [math.nan, 0.0]
        elif case == "inf":
            rewards = [1.0, -math.inf]
        elif case == "bad pair":
            rollouts = [("p", "x"), ("p", 2)]
        else:
            metadata = {"k": 1}
        with pytest.raises(InvalidRolloutsError):
            self.lib.add_rollout_group(rollouts, rewards, metadata=metadata)

    @rule(seconds=st.integers(0, 150))
    def time_passes(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def prune(self):
        assert self.lib.prune() == self.model.prune(int(self.clock()))

    @precondition(lambda self: self.model.items)
    @rule(data=st.data())
    def remove(self, data):
        item = data.draw(st.sampled_from(self.model.items))
        exp = next(e for e in self.lib.experience_library if e.response == item.response)
        self.lib.remove(exp if data.draw(st.booleans()) else exp.id)
        self.model.items.remove(item)
        self.model.dropped += 1

    @precondition(lambda self: self.model.items)
    @rule(data=st.data(), value=st.sampled_from(["x", "y"]))
    def tag(self, data, value):
        item = data.draw(st.sampled_from(self.model.items))
        exp = next(e for e in self.lib.experience_library if e.response == item.response)
        self.lib.tag(exp, note=value)
        item.metadata["note"] = value

    @rule()
    def clear(self):
        self.lib.clear()
        self.model.clear()

    @rule(fmt=st.sampled_from(["json", "sqlite"]))
    def save_and_load(self, fmt):
        path = self.dir / ("snapshot.json" if fmt == "json" else "snapshot.sqlite")
        self.lib.save_to_file(path)
        self.lib.load_from_file(path)
        self.model.load_same_content(int(self.clock()))

    @precondition(lambda self: self.db is not None)
    @rule()
    def reopen(self):
        before = [(e.id, e.to_dict()) for e in self.lib.experience_library]
        self.lib.close()
        self.lib = self._open()
        assert [(e.id, e.to_dict()) for e in self.lib.experience_library] == before

    # -- invariants ---------------------------------------------------------------------------------------

    @invariant()
    def capacity_is_never_exceeded(self):
        assert self.lib.library_size() <= self.config.max_library_size
        assert self.lib.is_at_capacity() == (self.lib.library_size() == self.config.max_library_size)

    @invariant()
    def nothing_at_or_below_the_threshold(self):
        assert all(e.advantage > self.config.min_advantage_threshold for e in self.lib.experience_library)

    @invariant()
    def same_experiences_as_the_reference_in_the_same_order(self):
        assert [(e.prompt, e.response, e.advantage, e.timestamp, e.metadata) for e in self.lib.experience_library] == [
            i.as_tuple() for i in self.model.items
        ]

    @invariant()
    def counters_are_consistent(self):
        s, m = self.lib.stats(), self.model
        assert (s.total_rollouts, s.total_stored, s.total_pruned, s.total_loaded) == (
            m.total_rollouts,
            m.total_stored,
            m.total_pruned,
            m.total_loaded,
        )
        # Everything that entered either is still there, was pruned, or was dropped (removed / replaced).
        assert s.total_stored + s.total_loaded == s.current_library_size + s.total_pruned + m.dropped
        assert s.current_library_size == self.lib.library_size() == len(self.lib.experience_library)
        assert s.total_stored <= s.total_rollouts

    @invariant()
    def stats_match_the_contents(self):
        s = self.lib.stats()
        advantages = [e.advantage for e in self.lib.experience_library]
        if advantages:
            assert (s.max_advantage, s.min_advantage) == (max(advantages), min(advantages))
            assert s.avg_advantage == pytest.approx(sum(advantages) / len(advantages))
        else:
            assert (s.avg_advantage, s.max_advantage, s.min_advantage) == (0.0, 0.0, 0.0)
        assert all(math.isfinite(v) for v in s.to_dict().values())

    @invariant()
    def ids_are_unique_and_lookups_agree(self):
        ids = [e.id for e in self.lib.experience_library]
        assert len(set(ids)) == len(ids)
        if ids:
            assert self.lib.get(ids[-1]) is self.lib.experience_library[-1]

    @invariant()
    def samples_come_from_the_library(self):
        drawn = self.lib.sample_multiple(3)
        if self.model.items:
            responses = {i.response for i in self.model.items}
            assert len(drawn) == 3 and all(e.response in responses for e in drawn)
            distinct = self.lib.sample_multiple(len(responses), replace=False)
            assert sorted(e.response for e in distinct) == sorted(responses)
        else:
            assert drawn == [] and self.lib.sample_experience() is None


LibraryMachine.TestCase.settings = settings(
    max_examples=examples(100),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLibraryAgainstReference = LibraryMachine.TestCase


# -- advantages --------------------------------------------------------------------------------------------------

FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(FINITE, min_size=2, max_size=40))
def test_advantages_are_reward_minus_mean(rewards):
    advantages = compute_advantages(rewards)
    assert advantages == reference_advantages(rewards)
    assert abs(math.fsum(advantages)) <= 1e-9 * max(1.0, max(abs(r) for r in rewards)) * len(rewards)
    # Order is preserved: a better reward never gets a lower advantage.
    by_reward = [a for _, a in sorted(zip(rewards, advantages))]
    assert by_reward == sorted(by_reward)


@given(st.lists(FINITE, min_size=3, max_size=40))
def test_scaled_advantages_have_unit_sample_std(rewards):
    mean = math.fsum(rewards) / len(rewards)
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))
    assume(std > 1e-2)
    scaled = compute_advantages(rewards, scale_by_std=True)
    plain = compute_advantages(rewards)
    for s, p in zip(scaled, plain):
        assert s == pytest.approx(p / (std + 1e-4), rel=1e-9, abs=1e-12)
    scaled_std = math.sqrt(math.fsum(s * s for s in scaled) / (len(scaled) - 1))
    assert scaled_std == pytest.approx(1.0, rel=1e-2)


@given(st.floats(-1e6, 1e6), st.integers(2, 10))
def test_equal_rewards_carry_no_signal(reward, n):
    assert compute_advantages([reward] * n) == [0.0] * n
    assert compute_advantages([reward] * n, scale_by_std=True) == [0.0] * n


@given(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=2, max_size=8))
def test_std_scaling_option_is_used_by_the_library(rewards):
    lib = TrainingFreeGRPO(quiet_config(scale_advantages_by_std=True, min_advantage_threshold=-10.0))
    lib.add_rollout_group([("p", str(i)) for i in range(len(rewards))], rewards)
    assert [e.advantage for e in lib.experience_library] == compute_advantages(rewards, scale_by_std=True)


# -- JSON round trips --------------------------------------------------------------------------------------------

TEXT = st.text(max_size=30)  # any Unicode except lone surrogates (which UTF-8 cannot hold)
EXPERIENCES = st.builds(
    Experience,
    prompt=TEXT,
    response=TEXT,
    advantage=st.floats(allow_nan=False, allow_infinity=False),
    timestamp=st.integers(0, 2**63 - 1),
    metadata=st.dictionaries(TEXT, TEXT, max_size=3),
)


@given(EXPERIENCES)
def test_experience_dict_round_trip(exp):
    data = json.loads(json.dumps(exp.to_dict()))
    assert list(data) == ["prompt", "response", "advantage", "timestamp", "metadata"]
    again = Experience.from_dict(data)
    assert again == exp
    assert math.copysign(1.0, again.advantage) == math.copysign(1.0, exp.advantage)


@settings(max_examples=examples(40))
@given(st.lists(EXPERIENCES, max_size=8), st.booleans())
def test_json_file_round_trip(experiences, pretty):
    folder = Path(tempfile.mkdtemp(prefix="tfgrpo-json-"))
    try:
        ours = folder / "ours.json"
        write_json(ours, experiences)
        assert read_json(ours) == experiences
        # The same data as serde_json would write it (pretty or compact) reads back the same.
        rust = folder / "rust.json"
        data = [e.to_dict() for e in experiences]
        text = json.dumps(data, indent=2, ensure_ascii=False) if pretty else json.dumps(data, separators=(",", ":"))
        rust.write_text(text, encoding="utf-8")
        assert read_json(rust) == experiences
    finally:
        shutil.rmtree(folder)


# -- sampling at any scale ----------------------------------------------------------------------------------------


@settings(max_examples=examples(60))
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=12),
    st.floats(1e-3, 1e3),
    st.integers(0, 2**32),
)
def test_sampling_never_overflows_and_respects_dominance(advantages, temperature, seed):
    lib = TrainingFreeGRPO(
        quiet_config(sampling_temperature=temperature, max_library_size=100), seed=seed, clock=FakeClock()
    )
    folder = Path(tempfile.mkdtemp(prefix="tfgrpo-sampling-"))
    try:
        write_json(folder / "lib.json", [Experience("p", str(i), a, NOW) for i, a in enumerate(advantages)])
        lib.load_from_file(folder / "lib.json")
    finally:
        shutil.rmtree(folder)
    members = {id(e) for e in lib.experience_library}
    assert len(members) == len(advantages)
    draws = lib.sample_multiple(20)
    assert all(id(e) in members for e in draws)
    order = lib.sample_multiple(len(advantages), replace=False)
    assert sorted(id(e) for e in order) == sorted(members)
    some = lib.sample_multiple(max(1, len(advantages) // 2), replace=False)
    assert len({id(e) for e in some}) == len(some)

    best = max(advantages)
    runner_up = max((a for a in advantages if a != best), default=-math.inf)
    if (best - runner_up) / temperature > 60 and advantages.count(best) == 1:
        # Everything else is e^-60 times less likely: the best is all one ever sees.
        assert all(e.advantage == best for e in draws)
        assert order[0].advantage == best and some[0].advantage == best
