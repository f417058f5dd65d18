"""Hostile critic output through the project's own `serve-model` app: a real uvicorn server on
127.0.0.1 serving a scripted model (the only way to get each malformed answer on demand), queried by
`OpenAIBackend` from a `LessonUpdate` step. Every case must leave a consistent library and say why."""

from __future__ import annotations

import pytest

from support.llm import UvicornThread
from tfgrpo.learn import LessonUpdate
from tfgrpo.llm.base import Backend, Generation, Usage
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import TrainConfig, train
from tfgrpo.rewards.base import FunctionReward, Score
from tfgrpo.semantic import LessonConfig, LessonLibrary, Operation
from tfgrpo.server.model_server import create_app

SAMPLES = [{"id": "a", "prompt": "What is 2+2?", "answer": "4"}]
OVERLONG = " ".join(["word"] * 50)

# name: (the critic's answer to both the group comparison and the batch update, lessons after, a reason)
CASES = {
    "truncated JSON": (
        '[{"operation": "add", "text": "Check the sum."}, {"operation": "add", "te',
        {"G0": "Read the question.", "G1": "Check the sum."},
        "took the JSON embedded in prose",
    ),
    "JSON in prose": (
        'Sure! [{"operation": "add", "text": "Check the sum."}] Hope it helps.',
        {"G0": "Read the question.", "G1": "Check the sum."},
        "took the JSON embedded in prose",
    ),
    "JSON in a fence": (
        '```json\n[{"operation": "add", "text": "Check the sum."}]\n```',
        {"G0": "Read the question.", "G1": "Check the sum."},
        "inside a markdown fence",
    ),
    "ids that do not exist": (
        '[{"operation": "update", "id": "G42", "text": "Check the sum."}, {"operation": "delete", "id": "G7"}]',
        {"G0": "Read the question.", "G1": "Check the sum."},
        "delete of G7, which does not exist",
    ),
    "merge of invented ids": (
        '[{"operation": "merge", "ids": ["G0", "G9"], "text": "Check the sum twice."}]',
        {"G0": "Check the sum twice."},
        "merge named lessons that do not exist (G9)",
    ),
    "empty lessons": (
        '[{"operation": "add", "text": "   "}, {"operation": "add"}]',
        {"G0": "Read the question."},
        "add with an empty lesson",
    ),
    "placeholder lessons": (
        '[{"id": "G3", "text": "..."}, {"operation": "add", "text": "..."}, {"operation": "add", "text": "- -"}]',
        {"G0": "Read the question."},
        "add with a lesson that has no words ('...')",
    ),
    "overlong lesson": (
        f'[{{"operation": "add", "text": "{OVERLONG}"}}]',
        {"G0": "Read the question.", "G1": " ".join(["word"] * 12) + "..."},
        "had 50 words (limit 12); shortened",
    ),
    "duplicates": (
        '[{"operation": "add", "text": "Read the question."}, {"operation": "add", "text": "read the question"}]',
        {"G0": "Read the question."},
        "duplicate of G0; skipped",
    ),
    "no JSON at all": ("I think the attempts were fine.", {"G0": "Read the question."}, "no JSON found"),
    "an unknown operation": ('[{"operation": "explode"}]', {"G0": "Read the question."}, "no known operation"),
}


class ScriptedModel(Backend):
    """Answers the policy right and wrong in turn (so the group has signal), and the critic's
    summary with a line and its comparison and batch update with `answer`."""

    model_name = "scripted"

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self._usage = Usage()

    @property
    def usage(self) -> Usage:
        return self._usage

    def generate(self, prompts, params=None, *, chat=None):
        out = []
        for prompt in prompts:
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            if text.startswith("You are analysing"):
                replies = ["Added the numbers."] * params.n
            elif text.startswith(("You study attempts", "You maintain")):
                replies = [self.answer] * params.n
            else:
                replies = ["4" if i % 2 == 0 else "5" for i in range(params.n)]
            out.append([Generation(r, "stop") for r in replies])
        return out


def exact(prompt, response, sample):
    return Score(float(response.strip() == sample["answer"]))


@pytest.fixture(scope="module")
def served():
    """One `serve-model` server for the module, over a scripted model whose critic answer each case sets."""
    model = ScriptedModel("")
    with UvicornThread(create_app(model)) as server:
        yield model, server


@pytest.mark.parametrize("case", list(CASES))
def test_a_step_survives_hostile_critic_output_served_by_serve_model(case, served, tmp_path, caplog):
    answer, lessons_after, reason = CASES[case]
    model, server = served
    model.answer = answer
    config = TrainConfig(epochs=1, batch_size=1, group_size=2, max_tokens=8)
    lessons = LessonConfig(max_words=12, critic_max_tokens=200)
    with (
        OpenAIBackend(base_url=f"{server.url}/v1", model="scripted", max_retries=0, timeout=10) as llm,
        LessonLibrary(tmp_path / "run.db") as lib,
    ):
        lib.apply([Operation("add", "Read the question.")])
        metrics = train(llm, SAMPLES, FunctionReward(exact), [LessonUpdate(lib, lessons)], config)
        assert lib.lessons == lessons_after and lib.progress["global_step"] == 1
        (step,) = metrics
        assert step.groups_with_signal == 1
        assert any(reason in problem for problem in step.problems), step.problems
        version = lib.history()[-1]
        recorded = version.context["problems"] + [s.reason for s in version.skipped]
        assert any(reason in r for r in recorded)
        assert reason in caplog.text
    # Reopened from disk: the same lessons, each a well-formed, short lesson.
    with LessonLibrary(tmp_path / "run.db") as lib:
        assert lib.lessons == lessons_after
        assert all(text and len(text.split()) <= 12 for text in lib.lessons.values())
