"""Leave-one-out attribution of lessons, against a scripted OpenAI-compatible stand-in on 127.0.0.1 whose
policy answers right only when one particular lesson is in its prompt."""

import re

import pytest

from support.llm import StandIn, chat_reply
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import EvalConfig, attribute_lessons
from tfgrpo.rewards.base import FunctionReward, Score
from tfgrpo.semantic import LessonLibrary, Operation

QUESTION = re.compile(r"What is (\d+)\+(\d+)\?")
KEY = "Add the two numbers exactly."
SAMPLES = [{"id": str(a), "prompt": f"What is {a}+{a + 1}?", "answer": str(2 * a + 1)} for a in range(1, 7)]


async def policy(index, path, body):
    chat = "messages" in body
    text = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
    a, b = map(int, QUESTION.findall(text)[-1])
    n = body.get("n", 1)
    # right every time with the key lesson; otherwise right on every other sample
    return chat_reply([str(a + b + (0 if KEY in text else i % 2)) for i in range(n)], chat=chat)


def exact(prompt, response, sample):
    return Score(float(response.strip() == sample["answer"]))


@pytest.mark.parametrize("chat", [True, False])
def test_leave_one_out_ranks_the_lesson_that_matters_first(chat):
    with (
        StandIn(policy) as stand_in,
        OpenAIBackend(base_url=stand_in.url, model="scripted", max_retries=0, timeout=10) as llm,
        LessonLibrary() as lib,
    ):
        lib.apply([Operation("add", "Be brief."), Operation("add", KEY), Operation("add", "Show no working.")])
        report = attribute_lessons(llm, SAMPLES, FunctionReward(exact), lib, EvalConfig(k=4, chat=chat, batch_size=4))
        assert [a.lesson_id for a in report.lessons][0] == "G1"
        top, *rest = report.lessons
        assert top.text == KEY and top.mean_diff == pytest.approx(0.5) and top.diffs == [0.5] * 6
        assert (top.ci_low, top.ci_high) == pytest.approx((0.5, 0.5))
        assert all(a.mean_diff == 0 and a.ci_low == a.ci_high == 0 for a in rest)
        assert report.full_mean == 1.0 and report.n_prompts == 6 and report.k == 4
        assert "G1" in report.table().splitlines()[2] and report.to_dict()["lessons"][0]["lesson_id"] == "G1"
        # The library itself is untouched.
        assert len(lib) == 3 and lib.version == 1
