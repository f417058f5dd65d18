"""Shared helpers for the core tests: a fixed clock, library snapshots, and a chi-square test."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

from tfgrpo import GRPOConfig, TFGRPOWarning, TrainingFreeGRPO

NOW = 1_718_000_000  # a fixed "now" (Unix seconds) for libraries built on a FakeClock


class FakeClock:
    """A clock that stands still until the test moves it (the library reads it through `clock=`)."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def quiet_config(**fields) -> GRPOConfig:
    """A config whose values may lie outside the recommended ranges, without the warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TFGRPOWarning)
        return GRPOConfig(**fields)


def group(prompt: str, responses: Sequence[str]) -> list[tuple[str, str]]:
    return [(prompt, r) for r in responses]


def snapshot(lib: TrainingFreeGRPO) -> tuple:
    """Everything observable about a library: contents (with ids, in order), counters, stats,
    config, and what a seeded sampler draws from it."""
    contents = [(e.id, e.to_dict()) for e in lib.experience_library]
    lib.seed(20240601)
    draws = [e.id for e in lib.sample_multiple(25)]
    lib.seed(20240601)
    single = lib.sample_experience()
    return (
        contents,
        lib.stats().to_dict(),
        lib.library_size(),
        lib.config,
        draws,
        None if single is None else single.id,
    )


def library_with_advantages(tmp_path: Path, advantages: Sequence[float], seed: int = 0, **config) -> TrainingFreeGRPO:
    """A library holding exactly these advantages (response i has advantage i), built by loading a
    JSON file in the spec's format."""
    path = tmp_path / f"advantages-{len(advantages)}-{abs(hash(tuple(advantages)))}.json"
    path.write_text(
        json.dumps(
            [
                {"prompt": "p", "response": str(i), "advantage": a, "timestamp": NOW, "metadata": {}}
                for i, a in enumerate(advantages)
            ]
        )
    )
    lib = TrainingFreeGRPO(
        quiet_config(max_library_size=max(1, len(advantages)), **config), seed=seed, clock=FakeClock()
    )
    lib.load_from_file(path)
    assert sorted(e.advantage for e in lib.experience_library) == sorted(float(a) for a in advantages)
    return lib


# -- chi-square goodness of fit (no scipy: the survival function is computed here) ------------------------


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df): the regularized upper incomplete gamma Q(df/2, x/2)."""
    if x <= 0:
        return 1.0
    a, x = df / 2.0, x / 2.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:  # series for the lower function P(a, x)
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefactor))
    # continued fraction for Q(a, x) (modified Lentz)
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(log_prefactor) * h


def chi_square_p_value(observed: Sequence[int], probabilities: Sequence[float]) -> float:
    """p-value of Pearson's goodness-of-fit test. Cells expected fewer than 5 times are pooled into one;
    a pooled cell with an expected count of (almost) zero must also be observed (almost) never."""
    n = sum(observed)
    total_p = math.fsum(probabilities)
    cells: list[tuple[float, float]] = []
    pooled_obs = pooled_exp = 0.0
    for obs, p in zip(observed, probabilities):
        expected = n * p / total_p
        if expected < 5:
            pooled_obs += obs
            pooled_exp += expected
        else:
            cells.append((obs, expected))
    if pooled_exp >= 5 or (pooled_obs and pooled_exp >= 1e-9):
        cells.append((pooled_obs, pooled_exp))
    elif pooled_obs:
        return 0.0  # something drawn that should (essentially) never be
    if len(cells) < 2:
        return 1.0
    statistic = math.fsum((obs - exp) ** 2 / exp for obs, exp in cells)
    return chi2_sf(statistic, len(cells) - 1)


def softmax(advantages: Sequence[float], temperature: float) -> list[float]:
    """exp(a / T) normalised, via log-sum-exp (the test's own, independent of the library's sampler)."""
    logits = [a / temperature for a in advantages]
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    total = math.fsum(weights)
    return [w / total for w in weights]
