"""Advantage-weighted sampling: P(exp) proportional to exp(advantage / T), proven with chi-square
goodness-of-fit tests over many seeded (so deterministic) draws. Each test also checks that the same
counts reject a deliberately wrong distribution, so a pass means something."""

from __future__ import annotations

import math
import signal
from collections import Counter
from contextlib import contextmanager

import pytest

from support.core import chi2_sf, chi_square_p_value, library_with_advantages, softmax
from tfgrpo import TrainingFreeGRPO

ACCEPT = 1e-3  # the right distribution must reach at least this p-value (fixed seeds: deterministic)
REJECT = 1e-6  # a wrong one must fall below this


@contextmanager
def time_limit(seconds: float):
    """Turn a hang into a test failure (SIGALRM; the sampler's loops are pure Python)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def counts_of(draws, n: int) -> list[int]:
    counter = Counter(int(e.response) for e in draws)
    assert set(counter) <= set(range(n))
    return [counter[i] for i in range(n)]


# -- the chi-square machinery itself ----------------------------------------------------------------------


def test_chi2_survival_function_matches_tables():
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(11.070497693516351, 5) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(20.515005652432873, 5) == pytest.approx(0.001, rel=1e-9)
    assert chi2_sf(4.0, 2) == pytest.approx(math.exp(-2.0), rel=1e-12)  # 2 df: exponential
    assert chi2_sf(124.34211340400407, 100) == pytest.approx(0.05, rel=1e-8)
    assert chi2_sf(0.0, 3) == 1.0


def test_chi_square_test_accepts_truth_and_rejects_a_wrong_coin():
    assert chi_square_p_value([5040, 4960], [0.5, 0.5]) > 0.1
    assert chi_square_p_value([5400, 4600], [0.5, 0.5]) < REJECT


# -- the weighted distribution ------------------------------------------------------------------------------

CASES = {
    "neutral T=1": ([0.0, 0.3, 0.75, 1.3, 2.0, -0.4], 1.0),
    "sharp T=0.5": ([0.05, 0.2, 0.5, 0.9, 1.1], 0.5),
    "flat T=2": ([0.1, 0.5, 1.0, 3.0], 2.0),
    "huge advantages 1e6, T=0.1": ([1e6, 1e6 + 0.1, 1e6 - 0.2, 1e6 + 0.25], 0.1),
    "advantages -500..500, T=1": ([-500.0, -100.0, 0.0, 250.0, 499.0, 499.5, 500.0], 1.0),
    "tiny T=1e-3": ([0.1, 0.101, 0.102, 0.1005, 0.05], 1e-3),
    "large T=100": ([0.0, 50.0, 100.0, 200.0], 100.0),
    "one bucket of many": ([0.05 * i for i in range(13)], 1.0),  # all weights within a factor 2
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_sample_experience_follows_softmax_of_advantages(tmp_path, case):
    advantages, temperature = CASES[case]
    lib = library_with_advantages(tmp_path, advantages, seed=1234, sampling_temperature=temperature)
    n_draws = 30_000
    counts = counts_of((lib.sample_experience() for _ in range(n_draws)), len(advantages))

    expected = softmax(advantages, temperature)
    assert chi_square_p_value(counts, expected) > ACCEPT

    # Power: the same counts must reject a distribution that is wrong in a plausible way.
    wrong_temperature = softmax(advantages, temperature * 1.5)
    uniform = [1.0] * len(advantages)
    assert chi_square_p_value(counts, wrong_temperature) < REJECT
    assert chi_square_p_value(counts, uniform) < REJECT


def test_power_against_a_subtly_biased_sampler(tmp_path):
    """A bias of the kind a bucketed sampler can have (each weight off by up to a factor of 2 depending on
    where it falls in its bucket) must be caught; here the wrong model is only off by 15% on one cell."""
    advantages = [0.0, 1.3]
    lib = library_with_advantages(tmp_path, advantages, seed=99)
    counts = counts_of((lib.sample_experience() for _ in range(30_000)), 2)
    truth = softmax(advantages, 1.0)
    assert chi_square_p_value(counts, truth) > ACCEPT
    assert chi_square_p_value(counts, [truth[0] * 0.85, 1 - truth[0] * 0.85]) < REJECT


def test_dominant_experience_is_always_drawn(tmp_path):
    lib = library_with_advantages(tmp_path, [-500.0, 0.0, 499.0, 500.0], seed=3, sampling_temperature=0.1)
    # 500 vs 499 at T=0.1 is a factor e^10; the others are e^-5000 and e^-10000 times less likely.
    draws = [lib.sample_experience().advantage for _ in range(2000)]
    assert set(draws) <= {499.0, 500.0}
    assert draws.count(499.0) < 10


def test_uniform_when_weighting_is_off(tmp_path):
    advantages = [0.01, 0.5, 2.0, 10.0, 100.0, 1000.0]
    lib = library_with_advantages(tmp_path, advantages, seed=7, use_advantage_weighting=False)
    counts = counts_of((lib.sample_experience() for _ in range(30_000)), len(advantages))
    assert chi_square_p_value(counts, [1.0] * len(advantages)) > ACCEPT
    assert chi_square_p_value(counts, softmax(advantages, 1000.0)) < REJECT


def test_distribution_follows_library_changes(tmp_path):
    """After removals, additions and pruning, draws follow the softmax of what is stored *now*."""
    lib = library_with_advantages(tmp_path, [0.2, 0.4, 0.6, 0.8, 1.0, 1.2], seed=21)
    for exp in list(lib.experience_library):
        if exp.response in {"1", "4"}:
            lib.remove(exp)
    lib.add_rollout_group([("p", "6"), ("p", "x")], [1.5, 0.0])  # stores response 6 with +0.75
    stored = {int(e.response): e.advantage for e in lib.experience_library}
    assert set(stored) == {0, 2, 3, 5, 6}
    counts = counts_of((lib.sample_experience() for _ in range(30_000)), 7)
    probabilities = [0.0] * 7
    for i, p in zip(stored, softmax(list(stored.values()), 1.0)):
        probabilities[i] = p
    assert [counts[1], counts[4]] == [0, 0]
    assert chi_square_p_value(counts, probabilities) > ACCEPT


def test_empty_library_samples_nothing():
    lib = TrainingFreeGRPO(seed=1)
    assert lib.sample_experience() is None
    assert lib.sample_multiple(3) == []
    assert lib.sample_multiple(3, replace=False) == []


# -- seeding -------------------------------------------------------------------------------------------------


def _filled(seed=None, **kw) -> TrainingFreeGRPO:
    lib = TrainingFreeGRPO(seed=seed, **kw)
    for g in range(5):
        lib.add_rollout_group([(f"p{g}", f"r{g}-{i}") for i in range(6)], [float((g * i) % 5) for i in range(6)])
    return lib


def test_same_seed_same_draws():
    a, b = _filled(seed=42), _filled(seed=42)
    draws_a = [a.sample_experience().response for _ in range(200)]
    draws_b = [b.sample_experience().response for _ in range(200)]
    assert draws_a == draws_b
    assert [e.response for e in a.sample_multiple(50)] == [e.response for e in b.sample_multiple(50)]
    assert [e.response for e in a.sample_multiple(4, replace=False)] == [
        e.response for e in b.sample_multiple(4, replace=False)
    ]
    assert len(set(draws_a)) > 3  # and it is not a constant


def test_reseeding_replays_the_draws():
    lib = _filled()
    lib.seed(7)
    first = [lib.sample_experience().response for _ in range(100)]
    lib.seed(7)
    assert [lib.sample_experience().response for _ in range(100)] == first
    lib.seed(8)
    assert [lib.sample_experience().response for _ in range(100)] != first


def test_different_seeds_differ():
    a, b = _filled(seed=1), _filled(seed=2)
    assert [a.sample_experience().response for _ in range(100)] != [b.sample_experience().response for _ in range(100)]


# -- sample_multiple ------------------------------------------------------------------------------------------


def test_sample_multiple_with_replacement_follows_the_distribution(tmp_path):
    advantages = [0.0, 0.5, 1.0, 1.5]
    lib = library_with_advantages(tmp_path, advantages, seed=5)
    draws = lib.sample_multiple(30_000)
    assert len(draws) == 30_000
    counts = counts_of(draws, len(advantages))
    assert chi_square_p_value(counts, softmax(advantages, 1.0)) > ACCEPT
    assert chi_square_p_value(counts, softmax(advantages, 1.4)) < REJECT


def _ordered_pair_probabilities(weights: list[float]) -> dict[tuple[int, int], float]:
    """Successive sampling without replacement: P(first=i, second=j) = p_i * p_j / (1 - p_i)."""
    total = math.fsum(weights)
    p = [w / total for w in weights]
    return {(i, j): p[i] * p[j] / (1 - p[i]) for i in range(len(p)) for j in range(len(p)) if i != j}


@pytest.mark.parametrize("library_size", [4, 2], ids=["k < size (redraw path)", "k == size (full order path)"])
def test_sample_multiple_without_replacement_is_successive_sampling(tmp_path, library_size):
    advantages = [0.0, 0.4, 0.9, 1.6][:library_size]
    lib = library_with_advantages(tmp_path, advantages, seed=17)
    pairs = Counter()
    n_runs = 20_000
    for _ in range(n_runs):
        first, second = lib.sample_multiple(2, replace=False)
        assert first is not second
        pairs[int(first.response), int(second.response)] += 1

    expected = _ordered_pair_probabilities([math.exp(a) for a in advantages])
    cells = sorted(expected)
    observed = [pairs[c] for c in cells]
    assert sum(observed) == n_runs
    assert chi_square_p_value(observed, [expected[c] for c in cells]) > ACCEPT
    # Power: the same pairs must reject a wrong temperature and, with more than two to choose from,
    # "first weighted, second uniform among the rest" (a plausible wrong implementation).
    wrong_temperature = _ordered_pair_probabilities([math.exp(a / 1.5) for a in advantages])
    assert chi_square_p_value(observed, [wrong_temperature[c] for c in cells]) < REJECT
    if library_size > 2:
        p = softmax(advantages, 1.0)
        second_uniform = [p[i] / (library_size - 1) for i, _ in cells]
        assert chi_square_p_value(observed, second_uniform) < REJECT


def test_sample_multiple_without_replacement_gives_distinct_experiences(tmp_path):
    lib = library_with_advantages(tmp_path, [0.1 * i for i in range(10)], seed=2)
    for k in range(12):
        drawn = lib.sample_multiple(k, replace=False)
        assert len(drawn) == min(k, 10)
        assert len({id(e) for e in drawn}) == len(drawn)
        assert all(any(e is s for s in lib.experience_library) for e in drawn)
    assert lib.sample_multiple(0) == [] and lib.sample_multiple(0, replace=False) == []


@pytest.mark.parametrize(
    ("advantages", "temperature"),
    [
        ([50.0, 0.0, -50.0], 1.0),  # the others are e^-50 as likely as the first
        ([1e6, 0.0, 1.0, 2.0], 0.1),
        ([-500.0, 0.0, 500.0], 1e-3),
        ([-800.0, 0.0, 800.0, 1.0], 1.0),  # exp(800) overflows a float
    ],
)
def test_sample_multiple_without_replacement_never_hangs_or_overflows(tmp_path, advantages, temperature):
    lib = library_with_advantages(tmp_path, advantages, seed=4, sampling_temperature=temperature)
    best = max(advantages)
    with time_limit(5):
        for k in range(1, len(advantages) + 2):
            drawn = lib.sample_multiple(k, replace=False)
            assert len(drawn) == min(k, len(advantages))
            assert len({id(e) for e in drawn}) == len(drawn)
            assert drawn[0].advantage == best  # the dominant one comes first
            if k >= len(advantages):
                # Successive sampling with overwhelming weights is (essentially) best-first order.
                assert [e.advantage for e in drawn] == sorted(advantages, reverse=True)


@pytest.mark.parametrize("k", [2, 4], ids=["redraw path", "full order path"])
def test_unweighted_sampling_without_replacement_is_uniform(tmp_path, k):
    advantages = [0.0, 1.0, 5.0, 50.0]
    lib = library_with_advantages(tmp_path, advantages, seed=8, use_advantage_weighting=False)
    firsts, seconds = [0] * 4, [0] * 4
    for _ in range(12_000):
        drawn = lib.sample_multiple(k, replace=False)
        assert len({id(e) for e in drawn}) == k
        firsts[int(drawn[0].response)] += 1
        seconds[int(drawn[1].response)] += 1
    for counts in (firsts, seconds):
        assert chi_square_p_value(counts, [1.0] * 4) > ACCEPT
        assert chi_square_p_value(counts, softmax(advantages, 20.0)) < REJECT
