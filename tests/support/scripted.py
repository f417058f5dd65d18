"""A scripted stand-in backend for server tests: it answers at once, fails, or hangs until cancelled on
demand (what the bundled model cannot do on cue), and signals with events when it starts and when it is
cancelled, so that tests synchronise on events, never on sleeps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

from tfgrpo.errors import BackendError
from tfgrpo.llm.base import Backend, Delta, Generation, GenerationParams, Prompt, Usage, to_messages

HANG = "hang"
"""A prompt containing this never finishes on its own (streamed: after its first piece)."""
FAIL = "fail"
"""A prompt containing this raises BackendError (streamed: after its first piece)."""


def reply_for(prompt: Prompt, index: int) -> str:
    return f"reply {index} to {to_messages(prompt)[-1]['content']}"


class ScriptedBackend(Backend):
    model_name = "scripted"

    def __init__(self) -> None:
        self._usage = Usage()
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.params: list[GenerationParams] = []

    @property
    def usage(self) -> Usage:
        return self._usage

    def reset(self) -> None:
        self.started.clear()
        self.cancelled.clear()

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[list[Generation]]:
        params = params or GenerationParams()
        self.params.append(params)
        return [[Generation(reply_for(p, i), "stop", 3, 4) for i in range(params.n)] for p in prompts]

    async def _hang(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def agenerate(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[Generation]:
        text = to_messages(prompt)[-1]["content"]
        if HANG in text:
            await self._hang()
        if FAIL in text:
            raise BackendError("the scripted backend failed on purpose")
        return self.generate([prompt], params, chat=chat)[0]

    async def astream(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> AsyncIterator[Delta]:
        """Each completion word by word (a piece per word, then the final one)."""
        text = to_messages(prompt)[-1]["content"]
        group = self.generate([prompt], params, chat=chat)[0]
        try:
            for index, generation in enumerate(group):
                words = generation.text.split(" ")
                for k, word in enumerate(words[:-1]):
                    yield Delta(index, word + " ")
                    if k == 0 and HANG in text:
                        await self._hang()
                    if k == 0 and FAIL in text:
                        raise BackendError("the scripted backend failed on purpose")
                yield Delta(index, words[-1], generation)
        except GeneratorExit:
            self.cancelled.set()  # closed by the server while it was paused at a piece
            raise
