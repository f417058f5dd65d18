import numpy as np
import pytest

from tfgrpo.loop.evaluate import ConditionResult, paired_bootstrap_ci


def test_mean_and_pass_at_k():
    rewards = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=float)
    result = ConditionResult("x", rewards, success_threshold=1.0)
    assert result.mean_at_k == pytest.approx(5 / 12)
    assert result.pass_at_k == pytest.approx(2 / 3)


def test_paired_bootstrap_covers_the_true_difference_and_is_seeded():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.2, 0.5, size=400)
    low, high = paired_bootstrap_ci(diffs, resamples=4000, seed=1)
    assert low < 0.2 < high and low > 0.1 and high < 0.3  # standard error is 0.025
    assert (low, high) == paired_bootstrap_ci(diffs, resamples=4000, seed=1)
    # The textbook normal interval agrees with the percentile bootstrap on a large sample.
    se = diffs.std(ddof=1) / np.sqrt(len(diffs))
    assert low == pytest.approx(diffs.mean() - 1.96 * se, abs=0.01)
    assert high == pytest.approx(diffs.mean() + 1.96 * se, abs=0.01)


def test_no_difference_gives_an_interval_around_zero():
    assert paired_bootstrap_ci(np.zeros(30)) == (0.0, 0.0)


def test_evaluation_seeds_are_values_not_a_count():
    from tfgrpo.errors import ConfigError
    from tfgrpo.loop.evaluate import SEED_STRIDE, EvalConfig, eval_seeds

    assert eval_seeds(EvalConfig(seed=5)) == [5]  # the default, one seed: the sampling of before
    assert eval_seeds(EvalConfig(seed=5, seeds=(0, 1, 2))) == [5, 5 + SEED_STRIDE, 5 + 2 * SEED_STRIDE]
    assert eval_seeds(EvalConfig(seed=5, seeds=[3])) == [5 + 3 * SEED_STRIDE]  # one seed, the value 3
    with pytest.raises(ConfigError, match=r"seeds' values, e\.g\. \(0, 1, 2\), not a count; got 3"):
        EvalConfig(seeds=3)
    with pytest.raises(ConfigError, match="each evaluation seed once"):
        EvalConfig(seeds=(1, 1))
    for bad in ((), (-1,), (True,), ("0",), (10**30,)):
        with pytest.raises(ConfigError, match="EvalConfig.seeds"):
            EvalConfig(seeds=bad)
