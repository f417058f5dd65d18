"""Answer-matching rewards (math-verify, exact, regex, numeric) and the LLM judge."""

from __future__ import annotations

import threading

import pytest

from tfgrpo.errors import ConfigError
from tfgrpo.rewards import (
    ExactMatchReward,
    JudgeReward,
    MathReward,
    NumericMatchReward,
    RegexReward,
    RewardError,
    Score,
)
from tfgrpo.rewards.math_reward import parse_judge_score


@pytest.fixture(scope="module")
def math_reward() -> MathReward:
    return MathReward()


@pytest.mark.parametrize(
    "answer, response",
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "so the result is $\\boxed{\\frac{1}{2}}$"),
        ("\\sqrt{2}", "It is $\\sqrt 2$."),
        ("x^2+2x+1", "$(x+1)^2$"),
        ("42", "After some work I get 42."),
        (["1/2", "0.5"], "$\\frac12$"),
    ],
)
def test_math_equal_answers_score_one(math_reward, answer, response):
    score = math_reward.score("q", response, {"answer": answer})
    assert score.value == 1.0, score.reason


@pytest.mark.parametrize(
    "answer, response, reason",
    [
        ("3", "\\boxed{4}", "answer 4 differs from the reference 3"),
        ("\\frac{1}{2}", "I do not know", "no final answer found in the response"),
    ],
)
def test_math_wrong_or_missing_answers_score_zero(math_reward, answer, response, reason):
    assert math_reward.score("q", response, {"answer": answer}) == Score(0.0, reason)


def test_math_reward_needs_a_reference(math_reward):
    with pytest.raises(RewardError, match="'answer'"):
        math_reward("q", "1", {"solution": "1"})
    assert MathReward(answer_field="solution")("q", "1", {"solution": "1"}) == 1.0


def test_math_reward_works_outside_the_main_thread(math_reward):
    results = []
    worker = threading.Thread(target=lambda: results.append(math_reward("q", "0.25", {"answer": "\\frac14"})))
    worker.start()
    worker.join()
    assert results == [1.0]


def test_math_reward_batches_run_in_the_calling_thread(math_reward):
    scores = math_reward.score_batch([("q", "2", {"answer": "2"}), ("q", "3", {"answer": "2"}), ("q", "2", {})])
    assert [s.value for s in scores] == [1.0, 0.0, 0.0]
    assert "RewardError" in scores[2].reason


def test_exact_match_normalises_case_and_whitespace_by_default():
    reward = ExactMatchReward()
    assert reward("q", "  Paris\n", {"answer": "paris"}) == 1.0
    assert reward("q", "New   York", {"answer": "new york"}) == 1.0
    assert reward("q", "Paris, France", {"answer": "Paris"}) == 0.0
    assert reward("q", "Lyon", {"answer": ["Paris", "Lyon"]}) == 1.0
    strict = ExactMatchReward(ignore_case=False, collapse_whitespace=False)
    assert strict("q", "Paris", {"answer": "paris"}) == 0.0
    assert strict("q", "New  York", {"answer": "New York"}) == 0.0
    assert strict("q", " Paris ", {"answer": "Paris"}) == 1.0


def test_regex_without_group_checks_presence():
    reward = RegexReward(r"\bdef \w+\(")
    assert reward("q", "def f(x): pass", {}) == 1.0
    score = reward.score("q", "lambda x: x", {})
    assert score.value == 0.0 and "not found" in score.reason


def test_regex_group_of_the_last_match_is_compared_to_the_answer():
    reward = RegexReward(r"answer:\s*(\w+)", group=1)
    assert reward("q", "answer: no\nFinal answer: YES", {"answer": "yes"}) == 1.0
    assert reward("q", "answer: yes\nanswer: no", {"answer": "yes"}) == 0.0
    named = RegexReward(r"<(?P<ans>[^>]+)>", group="ans")
    assert named("q", "I think <42>", {"answer": "42"}) == 1.0


def test_regex_configuration_errors_are_caught_early():
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        RegexReward("(unclosed")
    with pytest.raises(ConfigError, match="no group named"):
        RegexReward("(x)", group="name")
    with pytest.raises(ConfigError, match="groups"):
        RegexReward("(x)", group=2)


def test_numeric_match_uses_the_last_number():
    reward = NumericMatchReward()
    assert reward("q", "7 + 5 = 12", {"answer": 12}) == 1.0
    assert reward("q", "The answer is 12.0.", {"answer": "12"}) == 1.0
    assert reward("q", "1,200", {"answer": 1200}) == 1.0
    assert reward.score("q", "12 or maybe 13", {"answer": 12}).reason == "13 is not 12"
    assert reward.score("q", "twelve", {"answer": 12}).reason == "no number in the response"
    with pytest.raises(RewardError, match="not a number"):
        reward("q", "1", {"answer": "many"})


class ScriptedJudge:
    """Stands in for an LLM: returns fixed text (a real model cannot be made to answer 'Score: NaN')."""

    def __init__(self, output):
        self.output = output
        self.prompts: list[str] = []

    def __call__(self, prompt: str):
        self.prompts.append(prompt)
        return self.output


def test_judge_gets_the_task_reference_and_response_and_its_score_is_scaled():
    judge = ScriptedJudge("Mostly right but misses an edge case.\nScore: 7")
    score = JudgeReward(judge).score("What is 2+2?", "4, I think", {"answer": "4"})
    assert score.value == pytest.approx(0.7)
    assert "What is 2+2?" in judge.prompts[0] and "4, I think" in judge.prompts[0]
    assert "Reference answer (may be empty):\n4" in judge.prompts[0]


@pytest.mark.parametrize(
    "output, value",
    [
        ("Score: 8/10", 0.8),
        ("Score: **9**", 0.9),
        ("score = 0.5 out of 1", 0.5),
        ("Score: 80%", 0.8),
        ("I would score it 2. On reflection, Final score: 6", 0.6),
        ("10", 1.0),
        ("Score: 15", 1.0),
        ("Score: -4", 0.0),
    ],
)
def test_judge_output_is_parsed_robustly_and_clamped(output, value):
    assert parse_judge_score(output) == pytest.approx(value)


@pytest.mark.parametrize("output", ["I refuse to grade this.", "Score: 1e400", "Score: 5/0", "", None, 7])
def test_judge_output_without_a_usable_score_gives_zero_with_a_reason(output):
    score = JudgeReward(ScriptedJudge(output)).score("q", "r", {})
    assert score.value == 0.0
    assert score.reason.startswith(("no score in the judge's output", "the judge returned"))


def test_a_judge_that_raises_scores_zero_in_a_batch():
    def broken(prompt):
        raise TimeoutError("judge timed out")

    [score] = JudgeReward(broken).score_batch([("q", "r", {})])
    assert score.value == 0.0 and "judge timed out" in score.reason


def test_judge_configuration_errors():
    with pytest.raises(ConfigError):
        JudgeReward("not callable")
    with pytest.raises(ConfigError):
        JudgeReward(ScriptedJudge("Score: 1"), scale=0)


def test_a_whole_number_answer_is_matched_exactly_not_within_a_tolerance():
    """A relative tolerance of 1e-6 gave an estimate of a large product (off by thousands) full credit."""
    reward = NumericMatchReward()
    gold = {"answer": "2890100750"}
    assert reward.score("", "2890100750", gold).value == 1.0
    assert reward.score("", "2,890,100,750.0", gold).value == 1.0
    for estimate in ("2890103640", "about 2890101000", "2.89e9"):
        assert reward.score("", estimate, gold).value == 0.0, estimate
    assert reward.score("", "12345678901234567000", {"answer": "12345678901234567890"}).value == 0.0
    assert reward.score("", "3.5000001", {"answer": "3.5"}).value == 1.0  # a decimal answer keeps its tolerance


@pytest.mark.slow
def test_off_the_main_thread_an_answer_is_still_checked_within_its_time():
    """math_verify's timeouts work on the main thread only: a server scoring in a worker thread (ascore)
    was held for ever by an answer such as 9^{9^{9^{9}}}. There it is checked in a process of its own."""
    import asyncio
    import threading

    reward = MathReward(timeout_s=1)
    found: dict = {}

    def score_all() -> None:
        found["scores"] = [reward.score("", r"\boxed{9^{9^{9^{9}}}}", {"answer": "42"}).value,
                           reward.score("", r"\boxed{42}", {"answer": "42"}).value]  # fmt: skip

    worker = threading.Thread(target=score_all)
    worker.start()
    worker.join(120)
    assert found.get("scores") == [0.0, 1.0]
    assert asyncio.run(reward.ascore("", r"the answer is $\frac{84}{2}$", {"answer": "42"})).value == 1.0
    with pytest.raises(RewardError, match="cannot parse the reference"):
        asyncio.run(reward.ascore("", "42", {"answer": ""}))


def test_a_math_reward_travels_by_pickle_without_its_checker_process():
    """What a Ray worker gets: the reward without the caller's lock or checker process, and it scores."""
    import pickle

    copy = pickle.loads(pickle.dumps(MathReward(timeout_s=2)))
    assert copy.score("", r"\boxed{42}", {"answer": "42"}).value == 1.0 and copy._worker is None
