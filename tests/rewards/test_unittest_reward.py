"""UnitTestReward on real HumanEval problems, run in the real sandbox."""

from __future__ import annotations

import pytest

from support.rewards import humaneval_rows
from tfgrpo.rewards import RewardError, SandboxConfig, UnitTestReward
from tfgrpo.rewards.unittest_reward import complete_function

SAMPLE_IDS = ["HumanEval/0", "HumanEval/2", "HumanEval/10", "HumanEval/53", "HumanEval/163"]
CONFIG = SandboxConfig(timeout_s=5)


@pytest.fixture(scope="module")
def reward() -> UnitTestReward:
    return UnitTestReward(CONFIG)


def items(responses: dict[str, str]) -> list[tuple[str, str, dict]]:
    rows = humaneval_rows()
    return [(rows[task_id]["prompt"], response, rows[task_id]) for task_id, response in responses.items()]


def test_canonical_solutions_pass(reward):
    rows = humaneval_rows()
    scores = reward.score_batch(items({task_id: rows[task_id]["canonical_solution"] for task_id in SAMPLE_IDS}))
    assert [(s.value, s.reason) for s in scores] == [(1.0, "all tests passed")] * len(SAMPLE_IDS)


def test_wrong_solutions_fail_with_the_reason(reward):
    scores = reward.score_batch(items({task_id: "    return None\n" for task_id in SAMPLE_IDS}))
    assert [s.value for s in scores] == [0.0] * len(SAMPLE_IDS)
    assert all(s.reason.startswith("assertion") for s in scores), [s.reason for s in scores]


def test_a_whole_function_in_a_markdown_fence_passes(reward):
    response = (
        "Here is my solution:\n\n```python\n"
        "def truncate_number(number: float) -> float:\n"
        "    return number % 1.0\n\n\n"
        "if __name__ == '__main__':\n"
        "    print(truncate_number(float(input())))\n"
        "```\n"
    )
    [score] = reward.score_batch(items({"HumanEval/2": response}))
    assert score.value == 1.0, score.reason


def test_a_body_written_flush_left_is_indented(reward):
    [score] = reward.score_batch(items({"HumanEval/53": "return x + y"}))
    assert score.value == 1.0, score.reason


def test_a_helper_defined_in_the_prompt_stays_available(reward):
    # HumanEval/10's prompt defines is_palindrome before make_palindrome; a whole-function answer uses it.
    response = (
        "```python\ndef make_palindrome(string: str) -> str:\n"
        "    for i in range(len(string) + 1):\n"
        "        if is_palindrome(string[i:]):\n"
        "            return string + string[:i][::-1]\n```"
    )
    [score] = reward.score_batch(items({"HumanEval/10": response}))
    assert score.value == 1.0, score.reason


def test_hostile_completions_score_zero_with_the_reason():
    reward = UnitTestReward(SandboxConfig(timeout_s=2, memory_mb=256))
    scores = reward.score_batch(
        items(
            {
                "HumanEval/53": "    while True:\n        pass\n",
                "HumanEval/2": "    import os\n    while True:\n        os.fork()\n",
                "HumanEval/0": "    return undefined_name\n",
            }
        )
    )
    assert [s.value for s in scores] == [0.0, 0.0, 0.0]
    assert scores[0].reason.startswith("timeout")
    assert scores[1].reason.startswith(("process_limit", "timeout"))
    assert scores[2].reason == "exception: NameError: name 'undefined_name' is not defined"
    assert scores[2].details["outcome"] == "exception"


def test_fractional_reward_counts_passing_asserts():
    reward = UnitTestReward(CONFIG, fractional=True)
    row = humaneval_rows()["HumanEval/53"]  # add(x, y): 5 asserts, then a loop of random cases
    half_right = "    return x + y if x < 5 else 0\n"
    scores = reward.score_batch(
        [
            (row["prompt"], half_right, row),
            (row["prompt"], row["canonical_solution"], row),
            (row["prompt"], "    1/0", row),
        ]
    )
    partial, full, broken = scores
    # Passes the asserts with x < 5 (3 of them), fails x = 5, x = 7 and the random loop.
    assert (partial.value, partial.reason) == (0.5, "3 of 6 asserts passed")
    assert full.value == 1.0 and full.details["failed"] == 0
    assert broken.value == 0.0


def test_tests_without_an_entry_point_run_as_they_are():
    reward = UnitTestReward(CONFIG)
    sample = {"prompt": "def double(x):\n", "test": "assert double(2) == 4\nassert double(-1) == -2\n"}
    assert reward("ignored", "    return 2 * x", sample) == 1.0
    assert reward("ignored", "    return x + 2", sample) == 0.0


def test_the_sandboxed_program_is_the_completed_prompt_and_holds_none_of_the_tests():
    row = humaneval_rows()["HumanEval/53"]
    program = UnitTestReward().program("    return x + y\n", row)
    assert repr(row["prompt"] + "    return x + y\n") in program
    assert "def check" not in program and "candidate(0, 1)" not in program and "tfgrpo-" not in program
    assert program.rstrip().endswith("serve(_module.__dict__, 3, 4)")


def test_exiting_early_with_status_zero_does_not_pass(reward):
    scores = reward.score_batch(
        items({"HumanEval/53": "    pass\nimport sys\nsys.exit(0)", "HumanEval/2": "    import os; os._exit(0)"})
    )
    assert [s.value for s in scores] == [0.0, 0.0]
    assert scores[0].reason == "exit: the program ended before its tests did"


def test_complete_function_handles_bare_signatures():
    program = complete_function("def f(x):\n", "```python\ndef f(x):\n    return x\n```", "f")
    namespace: dict = {}
    exec(compile(program, "<test>", "exec"), namespace)  # our own fixed code, not model output
    assert namespace["f"](3) == 3


def test_a_sample_without_tests_is_a_reward_error():
    with pytest.raises(RewardError, match="'test'"):
        UnitTestReward().score("p", "pass", {"prompt": "def f():\n"})


ONE_FUNCTION = {"prompt": "def f(x):\n    '''Return something.'''\n", "entry_point": "f"}


def test_exceptions_reach_the_tests_as_the_built_in_ones():
    test = (
        "def check(candidate):\n"
        "    try:\n        candidate(-1)\n    except ValueError as error:\n        assert str(error) == 'negative'\n"
        "    else:\n        raise AssertionError('no ValueError')\n"
        "    assert candidate(2) == [2, (2,), {'two': 2.0}]\n"
    )
    sample = dict(ONE_FUNCTION, test=test)
    good = "    if x < 0:\n        raise ValueError('negative')\n    return [x, (x,), {'two': float(x)}]\n"
    assert UnitTestReward(CONFIG)("", good, sample) == 1.0
    wrong_type = "    if x < 0:\n        raise TypeError('negative')\n    return [x, [x], {'two': float(x)}]\n"
    score = UnitTestReward(CONFIG).score("", wrong_type, sample)
    assert (score.value, score.reason) == (0.0, "exception: TypeError: negative")


def test_a_candidate_raising_stop_iteration_cannot_end_a_tests_map_early():
    """StopIteration out of the candidate, raised again in the judge, ended `all(map(...))` as if every case
    had passed."""
    cases = "[(1, [1, (1,), {'two': 1.0}])]"
    test = f"def check(candidate):\n    assert all(map(lambda c: candidate(c[0]) == c[1], {cases}))\n"
    sample = dict(ONE_FUNCTION, test=test)
    for cheat in ("    raise StopIteration\n", "    raise StopAsyncIteration\n"):
        assert UnitTestReward(CONFIG).score("", cheat, sample).value == 0.0, cheat
    assert UnitTestReward(CONFIG)("", "    return [x, (x,), {'two': float(x)}]\n", sample) == 1.0


def test_a_call_that_hangs_fails_after_the_call_timeout_and_so_do_the_later_ones():
    test = "def check(candidate):\n" + "".join(f"    assert candidate({i}) == {i}\n" for i in range(4))
    sample = dict(ONE_FUNCTION, test=test)
    hangs_on_two = "    while x == 2:\n        pass\n    return x\n"
    reward = UnitTestReward(SandboxConfig(timeout_s=60), fractional=True, call_timeout_s=1)
    score = reward.score("", hangs_on_two, sample)
    assert (score.value, score.reason) == (0.5, "2 of 4 asserts passed")
    assert score.details["outcome"] == "timeout"
    assert score.details["first_failure"] == "the candidate's program did not answer f() in time"


def test_tests_that_cannot_run_are_a_reward_error_not_a_zero():
    reward = UnitTestReward(CONFIG)
    for test, message in [
        ("def check(candidate)\n", "do not compile"),
        ("assert True\n", "no check"),
        ("def check(candidate):\n    assert candidate(print) == 1\n", "cannot be sent"),
    ]:
        with pytest.raises(RewardError, match=message):
            reward.score("", "    return 1\n", dict(ONE_FUNCTION, test=test))


def test_without_an_entry_point_the_prompt_must_leave_a_function_unwritten():
    sample = {"prompt": "def helper(x):\n    return x\n", "test": "assert helper(1) == 1\n"}
    with pytest.raises(RewardError, match="leaves no function unwritten"):
        UnitTestReward(CONFIG).score("", "", sample)


def test_without_an_entry_point_fractional_counts_the_top_level_asserts():
    sample = {"prompt": "def double(x):\n", "test": "assert double(2) == 4\nassert double(-1) == -2\nx = 1\n"}
    score = UnitTestReward(CONFIG, fractional=True).score("", "    return 4", sample)
    assert (score.value, score.reason) == (0.5, "1 of 2 asserts passed")


def test_honest_wrong_answers_still_get_partial_credit():
    rows = humaneval_rows()
    row = rows["HumanEval/0"]  # seven asserts, four True and three False
    score = UnitTestReward(CONFIG, fractional=True).score(row["prompt"], "    return True\n", row)
    assert (score.value, score.reason) == (4 / 7, "4 of 7 asserts passed")
