"""The reward interface: Score validation, FunctionReward, batches that survive failures, async."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from tfgrpo.errors import TFGRPOError
from tfgrpo.rewards import FunctionReward, Reward, RewardError, Score


def length_reward(prompt: str, response: str, sample: dict) -> float:
    return len(response) / 10


def test_score_keeps_a_finite_value_as_float_with_reason_and_details():
    score = Score(1, "fine", {"k": 2})
    assert (score.value, type(score.value), score.reason, score.details) == (1.0, float, "fine", {"k": 2})
    assert Score(0.5).reason == "" and Score(0.5).details == {}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1.0", None, True])
def test_score_rejects_values_that_are_not_finite_numbers(bad):
    with pytest.raises(RewardError) as caught:
        Score(bad)
    assert isinstance(caught.value, TFGRPOError)


def test_function_reward_calls_the_function():
    reward = FunctionReward(length_reward)
    assert reward("p", "abcde", {}) == 0.5
    assert reward.score("p", "ab", {}) == Score(0.2)
    assert repr(reward) == "FunctionReward(length_reward)"


def test_function_reward_passes_a_score_through():
    reward = FunctionReward(lambda p, r, s: Score(1.0, "because", {"x": s["x"]}))
    assert reward.score("p", "r", {"x": 3}) == Score(1.0, "because", {"x": 3})


def test_function_reward_rejects_what_is_not_callable():
    with pytest.raises(RewardError, match="callable"):
        FunctionReward(3)


def test_nan_from_a_reward_raises_in_score_and_scores_zero_with_reason_in_batches():
    reward = FunctionReward(lambda p, r, s: math.nan if r == "nan" else 1.0)
    with pytest.raises(RewardError, match="finite"):
        reward("p", "nan", {})
    scores = reward.score_batch([("p", "ok", {}), ("p", "nan", {}), ("p", "ok", {})])
    assert [s.value for s in scores] == [1.0, 0.0, 1.0]
    assert scores[1].reason.startswith("reward raised RewardError") and "finite" in scores[1].reason


def test_a_reward_that_raises_does_not_stop_the_batch():
    def fragile(prompt, response, sample):
        if response == "boom":
            raise KeyError("missing")
        return 1.0

    scores = FunctionReward(fragile).score_batch([("p", r, {}) for r in ["a", "boom", "b", "boom"]])
    assert [s.value for s in scores] == [1.0, 0.0, 1.0, 0.0]
    assert scores[1].reason == "reward raised KeyError: 'missing'"
    assert scores[1].details == {"error": "KeyError"}


def test_score_batch_keeps_order_with_many_threads():
    items = [("p", "x" * n, {}) for n in range(50)]
    scores = FunctionReward(length_reward, value_range=(0, 5)).score_batch(items, max_workers=8)
    assert [s.value for s in scores] == [n / 10 for n in range(50)]


def test_max_workers_one_scores_in_the_calling_thread():
    threads = []

    class Recording(Reward):
        max_workers = 1

        def score(self, prompt, response, sample):
            threads.append(threading.current_thread())
            return Score(1.0)

    Recording().score_batch([("p", "r", {})] * 3)
    assert threads == [threading.current_thread()] * 3


def test_an_async_function_works_sync_and_async():
    async def slow_reward(prompt, response, sample):
        await asyncio.sleep(0)
        return 1.0 if response == sample["answer"] else 0.0

    reward = FunctionReward(slow_reward)
    assert reward("p", "42", {"answer": "42"}) == 1.0
    assert reward.score_batch([("p", "42", {"answer": "42"}), ("p", "41", {"answer": "42"})]) == [
        Score(1.0),
        Score(0.0),
    ]
    assert asyncio.run(reward.ascore("p", "41", {"answer": "42"})) == Score(0.0)


def test_ascore_of_a_sync_reward_runs_off_the_event_loop_thread():
    seen = []

    def where(prompt, response, sample):
        seen.append(threading.current_thread())
        return 1.0

    assert asyncio.run(FunctionReward(where).ascore("p", "r", {})) == Score(1.0)
    assert seen and seen[0] is not threading.current_thread()


def test_ascore_batch_survives_failures():
    async def flaky(prompt, response, sample):
        if response == "bad":
            raise RuntimeError("judge unavailable")
        return 0.5

    scores = asyncio.run(FunctionReward(flaky).ascore_batch([("p", "ok", {}), ("p", "bad", {})]))
    assert scores[0] == Score(0.5)
    assert scores[1].value == 0.0 and "judge unavailable" in scores[1].reason


def test_reward_is_abstract():
    with pytest.raises(TypeError):
        Reward()


@pytest.mark.parametrize("bad", [501, -0.5, 1.0000001, math.nan, math.inf, "0.5", None, True])
def test_a_function_reward_outside_its_range_is_an_error_and_scores_the_bottom_in_batches(bad):
    reward = FunctionReward(lambda p, r, s: bad, name="greedy")
    with pytest.raises(RewardError, match="range|finite|real number"):
        reward.score("p", "r", {})
    with pytest.raises(RewardError):
        asyncio.run(reward.ascore("p", "r", {}))
    [score] = reward.score_batch([("p", "r", {})])
    assert score.value == 0.0 and score.reason.startswith("reward raised RewardError")


def test_an_async_function_reward_is_checked_too():
    async def greedy(prompt, response, sample):
        return 501.0

    reward = FunctionReward(greedy)
    with pytest.raises(RewardError, match=r"FunctionReward\(greedy\) gave 501.0, outside its range \[0, 1\]"):
        asyncio.run(reward.ascore("p", "r", {}))
    assert asyncio.run(reward.ascore_batch([("p", "r", {})]))[0].value == 0.0


def test_a_reward_subclass_is_held_to_its_range_and_fails_at_its_bottom():
    class Signed(Reward):
        value_range = (-1.0, 1.0)

        def score(self, prompt, response, sample):
            return Score(float(response))

    reward = Signed()
    assert reward("p", "-1", {}) == -1.0 and reward("p", "1", {}) == 1.0
    with pytest.raises(RewardError, match=r"Signed gave 1.5, outside its range \[-1, 1\]"):
        reward("p", "1.5", {})
    assert [s.value for s in reward.score_batch([("p", "0.5", {}), ("p", "501", {})])] == [0.5, -1.0]


def test_the_range_can_be_lifted_but_values_must_stay_finite_numbers():
    reward = FunctionReward(lambda p, r, s: float(r), value_range=None)
    assert reward("p", "501", {}) == 501.0
    with pytest.raises(RewardError, match="finite"):
        reward("p", "nan", {})
    for bad in [(1, 0), (0, math.inf), (0,), "01"]:
        with pytest.raises(RewardError, match="value_range"):
            FunctionReward(length_reward, value_range=bad)


def test_every_built_in_reward_documents_the_unit_range():
    from tfgrpo import rewards

    built_in = [getattr(rewards, name) for name in rewards.__all__]
    classes = [c for c in built_in if isinstance(c, type) and issubclass(c, Reward) and c is not Reward]
    assert classes and all(c.value_range == (0.0, 1.0) for c in classes)
