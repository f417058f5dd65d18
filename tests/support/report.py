"""A real trained library for the report and tracking tests: `train()` with the examples strategy against a
scripted OpenAI-compatible stand-in on 127.0.0.1 (right on some samples, so groups have signal), lessons
(with hostile text) in the same SQLite file, and real `evaluate` / `attribute_lessons` results."""

from __future__ import annotations

import json
import re
from pathlib import Path

from support.llm import StandIn, chat_reply
from tfgrpo.core.library import TrainingFreeGRPO
from tfgrpo.learn import ExampleUpdate
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import EvalConfig, TrainConfig, attribute_lessons, evaluate, train
from tfgrpo.loop.evaluate import Baseline
from tfgrpo.rewards.base import FunctionReward, Score
from tfgrpo.semantic import LessonLibrary, Operation

QUESTION = re.compile(r"What is (\d+)\+(\d+)\?")
KEY = "Add the two numbers exactly."
HOSTILE = '<img src="http://127.0.0.1:9/pixel.png"><script>fetch("http://127.0.0.1:9/x")</script> & "quotes"'
TRAIN = [{"id": f"t{a}", "prompt": f"What is {a}+{a + 2}?", "answer": str(2 * a + 2)} for a in range(1, 13)]
TEST = [{"id": f"e{a}", "prompt": f"What is {a}+{a + 1}?", "answer": str(2 * a + 1)} for a in range(20, 26)]


async def policy(index, path, body):
    """Right on every other sample; right on all of them with the key lesson or an example in the prompt."""
    chat = "messages" in body
    text = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
    a, b = map(int, QUESTION.findall(text)[-1])
    helped = KEY in text or "A: " in text.replace(f"What is {a}+{b}?\nA:", "")
    return chat_reply([str(a + b + (0 if helped or i % 2 == 0 else 1)) for i in range(body.get("n", 1))], chat=chat)


def exact(prompt, response, sample):
    return Score(float(response.strip() == sample["answer"]))


def build(folder: Path) -> dict[str, Path]:
    """Train a library into folder/lib.db (metrics next to it), add lessons, write eval and attribution
    results; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    library_path = folder / "lib.db"
    reward = FunctionReward(exact)
    with (
        StandIn(policy) as stand_in,
        OpenAIBackend(base_url=stand_in.url, model="scripted", max_retries=0, timeout=10) as llm,
    ):
        with TrainingFreeGRPO.open(library_path, seed=0) as grpo:
            config = TrainConfig(batch_size=4, group_size=4, stop=("\n",), chat=True, shots=0)
            train(llm, TRAIN, reward, [ExampleUpdate(grpo)], config, metrics_path=f"{library_path}.metrics.jsonl")
            with LessonLibrary(library_path) as lessons:
                lessons.apply([Operation("add", "Be brief."), Operation("add", KEY)], step=1)
                lessons.apply([Operation("add", HOSTILE), Operation("update", "Keep it short.", id="G0")], step=2)
                eval_config = EvalConfig(k=2, seeds=(0, 1), batch_size=3, stop=("\n",), chat=True)
                conditions = {"zero-shot": Baseline(), "library": grpo}
                report = evaluate(llm, TEST, reward, conditions, eval_config)
                attribution = attribute_lessons(llm, TEST, reward, lessons, eval_config)
    paths = {"library": library_path, "eval": folder / "eval.json", "attribution": folder / "attribution.json"}
    paths["eval"].write_text(json.dumps(report.to_dict()))
    paths["attribution"].write_text(json.dumps(attribution.to_dict()))
    return paths
