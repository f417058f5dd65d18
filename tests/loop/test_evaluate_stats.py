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


def reported(library: list[float], baselines: dict[str, list[float]]):
    """The report of one library condition against baselines, from per-prompt rewards (k = 1)."""
    import numpy as np

    from tfgrpo.loop.evaluate import EvalConfig, report_of

    results = [ConditionResult(n, np.array([[r] for r in v]), 1.0, baseline=True) for n, v in baselines.items()]
    results.append(ConditionResult("library", np.array([[r] for r in library]), 1.0))
    return report_of(results, [{"id": str(i)} for i in range(len(library))], EvalConfig(k=1, bootstrap=200))


def test_the_headline_names_the_baseline_the_library_beat_or_lost_to():
    strong, weak = [1.0] * 10, [0.0] * 10
    lost = reported([0.0] * 10, {"zero-shot text": weak, "zero-shot chat": strong})
    assert lost.headline() == [
        "Headline: library lost to zero-shot chat (the strongest of 2 baselines) by 1.000 Mean@k "
        "(95% CI -1.000 .. -1.000)"
    ]
    beat = reported([1.0] * 10, {"zero-shot text": weak})
    assert beat.headline()[0].startswith("Headline: library beat zero-shot text (the only baseline evaluated) by 1.000")
    unsure = reported([1.0, 0.0] * 5, {"zero-shot chat": [0.0, 1.0] * 4 + [0.0, 0.0]})
    assert unsure.headline()[0].endswith("; it includes 0: no difference shown)")
    assert "library beat zero-shot chat" in unsure.headline()[0] and unsure.table().endswith(unsure.headline()[0])
    # Baselines alone (compared with the first): no library, no headline.
    import numpy as np

    from tfgrpo.loop.evaluate import EvalConfig, report_of

    alone = [ConditionResult(n, np.array([[1.0], [0.0]]), 1.0, baseline=True) for n in ("zero-shot chat", "text")]
    only = report_of(alone, [{"id": "a"}, {"id": "b"}], EvalConfig(k=1, bootstrap=200))
    assert len(only.comparisons) == 1 and only.headline() == [] and "Headline" not in only.table()


def test_progress_lines_say_the_time_taken_and_left(capsys):
    from tfgrpo.loop._progress import Progress

    now = [100.0]
    with Progress(40, "prompt", label="eval", clock=lambda: now[0]) as display:
        display.update(0)
        now[0] += 30
        display.update(8, "zero-shot chat")
        now[0] += 3600
        display.update(40, "library")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "eval prompt 0/40 | 0:00 elapsed, time left not known yet",
        "eval prompt 8/40 | zero-shot chat | 0:30 elapsed, ~2:00 left",
        "eval prompt 40/40 | library | 1:00:30 elapsed",
    ]
    # A resumed run's earlier units do not count towards the speed.
    resumed = Progress(10, "step", done=5, clock=lambda: now[0])
    now[0] += 10
    assert resumed.timing(6) == "0:10 elapsed, ~0:40 left"
