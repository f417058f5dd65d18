"""A stand-in model whose rollouts a seeded call fixes (what the executors must not change), which can be
told to stop in the middle of a generation so a test can kill the process holding it; and helpers to
compare two libraries."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tfgrpo.llm.base import Backend, Generation, GenerationParams, Prompt, Usage, check_prompts, group_seed, to_messages

SAMPLES = [{"id": str(i), "prompt": f"Question {i}: pick a digit", "answer": str(i % 3)} for i in range(6)]


class DigitModel(Backend):
    """Answers digits 0-2 drawn from the group's seed, as the local backend draws: a group depends on its
    prompt and the params only. `control`: a folder where a file `block-<id>-<n>` (id: the question's
    number) makes the next generation of that question write `started-<pid>` there and wait until its
    process is killed; every generation notes its pid in `calls-<pid>`."""

    model_name = "digits"

    def __init__(self, control: str | None = None) -> None:
        self.control = Path(control) if control else None
        self._usage = Usage()

    @property
    def usage(self) -> Usage:
        return self._usage

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[list[Generation]]:
        params = params or GenerationParams()
        groups = []
        for prompt in check_prompts(prompts):
            self._maybe_block(prompt)
            seed = group_seed(params.seed, prompt) if params.seed is not None else None
            rng = random.Random(seed)
            groups.append([Generation(str(rng.randrange(3)), "stop", 5, 1) for _ in range(params.n)])
            self._usage.record(5, params.n)
        return groups

    def _maybe_block(self, prompt: Prompt) -> None:
        if self.control is not None:
            (self.control / f"calls-{os.getpid()}").touch()
            stop_if_told(self.control, to_messages(prompt)[-1]["content"])


def stop_if_told(control: Path, text: str) -> None:
    """Wait here until this process is killed if a `block-<id>-<n>` file in `control` names the question
    in `text` (the file is claimed: one stop per file); `started-<pid>` tells where."""
    for trigger in sorted(control.glob("block-*")):
        if f"Question {trigger.name.split('-')[1]}:" not in text:
            continue
        try:
            trigger.unlink()
        except FileNotFoundError:
            continue
        (control / f"started-{os.getpid()}").touch()
        threading.Event().wait()


def kill_when_started(control: Path, times: int, check: Callable[[], None] | None = None) -> threading.Thread:
    """A thread that SIGKILLs the process of each generation that stops (`DigitModel`), `times` times;
    `check()` runs while the first is stopped."""

    def run() -> None:
        for _ in range(times):
            while not (started := list(control.glob("started-*"))):
                time.sleep(0.01)
            if check is not None and _ == 0:
                check()
            pid = int(started[0].name.split("-")[1])
            started[0].unlink()
            os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def library_state(path: Path) -> dict:
    """What two runs must agree on: every experience (id, texts, advantage, metadata), the counters and
    the position committed."""
    from tfgrpo.core.library import TrainingFreeGRPO

    with TrainingFreeGRPO.open(path) as grpo:
        experiences = [
            (e.id, e.prompt, e.response, e.advantage, sorted(e.metadata.items())) for e in grpo.experience_library
        ]
        position = {k: v for k, v in (grpo.progress or {}).items() if k != "run"}
        return {"experiences": sorted(experiences), "stats": grpo.stats().to_dict(), "position": position}


def metrics_lines(path: Path) -> list[dict]:
    import json

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]
