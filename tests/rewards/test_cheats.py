"""Known ways to game a unit-test reward, each scored for real (sandbox and judge): none may score more
than an honest wrong answer to the same problem, in either mode, and none may make `score()` raise."""

from __future__ import annotations

import pytest

from support.cheats import HONEST_WRONG, cheats
from support.rewards import humaneval_rows
from tfgrpo.rewards import SandboxConfig, UnitTestReward

pytestmark = pytest.mark.slow  # 41 programs in the sandbox, several of them until their limits end them

# Short limits: several cheats hang or stop themselves, and only the limits end them.
CONFIG = SandboxConfig(timeout_s=4, memory_mb=256)


@pytest.mark.parametrize("fractional", [False, True], ids=["all-or-nothing", "fractional"])
def test_no_cheat_scores_more_than_an_honest_wrong_answer(fractional):
    reward = UnitTestReward(CONFIG, fractional=fractional)
    rows = humaneval_rows()
    table = cheats()
    honest = {task: reward.score(rows[task]["prompt"], HONEST_WRONG, rows[task]) for task, _ in table.values()}
    assert {s.value for s in honest.values()} == {0.0}
    # In a batch a cheat that makes score() raise would show as "reward raised": none may.
    items = [(name, rows[task], response) for name, (task, response) in table.items()]
    scores = reward.score_batch([(row["prompt"], response, row) for _, row, response in items], max_workers=2)
    assert not [s.reason for s in scores if s.reason.startswith("reward raised")]
    better = {name: (s.value, s.reason) for (name, row, _), s in zip(items, scores) if s.value > 0.0}
    assert better == {}
    for name, row, response in items[:3]:  # and direct calls do not raise either
        assert reward.score(row["prompt"], response, row).value == 0.0, name


def test_the_cheats_cover_what_the_issue_lists():
    names = " | ".join(cheats())
    for listed in (
        "co_consts",
        "open(sys.argv[0])",
        "a class",
        "an int subclass",
        "len override",
        "print override",
        "forged count",
        "junk count",
        "through gc",
        "dataset file",
        "kill",
        "fd",
        "huge",
        "nested",
        "NaN",
        "exception with __eq__",
        "generator",
        "sys.modules",
        "SIGSTOP",
    ):
        assert listed in names, listed
