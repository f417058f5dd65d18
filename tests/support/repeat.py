"""`tfgrpo repeat` against a scripted policy: the sums task, its train and eval arguments, one call."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

from support.llm import chat_reply
from tfgrpo.cli import main

QUESTION = re.compile(r"What is (\d+)\+(\d+)\?")


async def policy(index, path, body):
    """A sum, wrong by one on about a third of the samples, chosen by a checksum of the whole prompt and
    the request's seed: deterministic, and different for each condition's prompt."""
    chat = "messages" in body
    text = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
    a, b = map(int, QUESTION.findall(text)[-1])
    seed = body.get("seed", 0)
    wrong = [zlib.crc32(f"{text}|{seed}|{i}".encode()) % 3 == 0 for i in range(body.get("n", 1))]
    return chat_reply([str(a + b + w) for w in wrong], chat=chat)


def setup(tmp_path: Path, stand_in) -> tuple[str, str]:
    data = tmp_path / "sums.jsonl"
    rows = [{"id": f"s{a}", "prompt": f"What is {a}+{a + 1}?", "answer": str(2 * a + 1)} for a in range(1, 17)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = f"--data {data} --reward exact --test-fraction 0.5 --model openai:scripted@{stand_in.url}"
    return f"{task} -G 4 --batch-size 4", f"{task} --baselines -k 2 --bootstrap 200"


def repeat(out: Path, train: str, evaluate: str, *seeds: int) -> int:
    return main(
        ["repeat", "--out", str(out), "--seeds", *map(str, seeds), "--train-args", train, "--eval-args", evaluate]
    )
