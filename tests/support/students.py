"""A scripted stand-in for a small model learning from examples, for the continual, active-learning and
guidance tests (the bundled model does the same, only a hundred times slower and not on cue): it knows the
samples it may be asked, answers a prompt right whenever its conversation shows an example of the same
domain, and otherwise right one time in `lottery` (seeded by the call's seed, the prompt and the choice),
so zero-shot rollouts now and then succeed, as the bundled model's do, and a library has something to
learn from. It counts its calls and keeps the sampling parameters it was given."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

from tfgrpo.llm.base import Backend, Generation, GenerationParams, Prompt, Usage, to_messages
from tfgrpo.tasks.multidomain import generate_domain


class Student(Backend):
    model_name = "student"

    def __init__(self, samples: Sequence[dict], lottery: int = 4, fail_after: int | None = None) -> None:
        self.known = {s["prompt"]: s for s in samples}
        self.lottery = lottery
        self.fail_after = fail_after
        """Raise on the call after this many (a run killed mid-way); None: never."""
        self.calls = 0
        self.params: list[GenerationParams] = []
        self.shown: list[tuple[str, set[str]]] = []
        """(the asked sample's domain, the domains of the examples its prompt showed), per prompt answered."""
        self._usage = Usage()
        self._lock = threading.Lock()

    @property
    def usage(self) -> Usage:
        return self._usage

    def domains_shown(self, prompt: Prompt) -> set[str]:
        """The domains of the examples a prompt shows: earlier user turns, or `Q:` lines in a user message."""
        messages = to_messages(prompt)
        query = self.query(prompt)
        shown = set()
        for message in messages:
            for text in [message["content"], *message["content"].split("Q: ")]:
                sample = self.known.get(text.split("\n")[0].strip())
                if sample is not None and sample["prompt"] != query:
                    shown.add(sample["domain"])
        return shown

    def query(self, prompt: Prompt) -> str:
        last = to_messages(prompt)[-1]["content"]
        return last.rsplit("Q: ", 1)[-1].split("\n")[0].strip()

    def answer(self, prompt: Prompt, seed: int | None, i: int) -> str:
        sample = self.known.get(self.query(prompt))
        if sample is None:
            return "I do not know."
        draw = hashlib.sha256(f"{seed}:{sample['prompt']}:{i}".encode()).digest()[0]
        if sample["domain"] in self.domains_shown(prompt) or draw % self.lottery == 0:
            return str(sample["answer"])
        return f"The answer to {sample['prompt']!r} is something."

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[list[Generation]]:
        params = params or GenerationParams()
        with self._lock:
            self.calls += 1
            if self.fail_after is not None and self.calls > self.fail_after:
                raise KeyboardInterrupt("the student was stopped (a killed run)")
            self.params.append(params)
        for p in prompts:
            asked = self.known.get(self.query(p))
            if asked is not None:
                with self._lock:
                    self.shown.append((asked["domain"], self.domains_shown(p)))
        groups = [[Generation(self.answer(p, params.seed, i), "stop", 10, 5) for i in range(params.n)] for p in prompts]
        self._usage.record(10 * len(prompts), 5 * params.n * len(prompts), requests=len(prompts))
        return groups


def domain_samples(names: Sequence[str], n: int, seed: int = 0) -> list[dict]:
    """`n` samples of each named domain of the multidomain task."""
    return [s for name in names for s in generate_domain(name, n, seed)]
