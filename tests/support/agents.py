"""Scripted tool-calling models: a real HTTP server on 127.0.0.1 (tests/support/llm.py's StandIn) whose
answers a test writes as a function of the conversation, in the text protocol or as OpenAI tool calls."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

from support.llm import Reply, StandIn, chat_reply
from tfgrpo.agents import AgentContext
from tfgrpo.llm.base import GenerationParams
from tfgrpo.llm.http import OpenAIBackend


def tool_reply(calls: list[tuple[str, str | dict]], text: str | None = None) -> Reply:
    """An assistant message that calls tools: (name, arguments as JSON text or an object)."""
    reply = chat_reply([""])
    message = reply.body["choices"][0]["message"]
    message["content"] = text
    message["tool_calls"] = [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}
        for i, (name, args) in enumerate(calls)
    ]
    reply.body["choices"][0]["finish_reason"] = "tool_calls"
    return reply


class Model:
    """A scripted model: `answer(messages, body)` gives each turn's reply (a string: text; a Reply: as
    it is). A text completion's prompt comes as one user message. Every request body is kept in `bodies`."""

    def __init__(self, answer: Callable[[list[dict], dict], str | Reply]) -> None:
        self.answer = answer
        self.bodies: list[dict] = []

    async def __call__(self, index, path, body):
        self.bodies.append(body)
        chat = "messages" in body
        reply = self.answer(body["messages"] if chat else [{"role": "user", "content": body["prompt"]}], body)
        return chat_reply([reply], chat=chat) if isinstance(reply, str) else reply


def last_user(messages: list[dict]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


@contextlib.contextmanager
def serve(model: Model, **backend) -> Iterator[OpenAIBackend]:
    """The scripted model on 127.0.0.1, and a backend that talks to it."""
    with (
        StandIn(model) as server,
        OpenAIBackend(base_url=server.url, model="scripted", max_retries=0, timeout=30, **backend) as llm,
    ):
        yield llm


def context(backend, prompt="What is 123456789 * 987654321?", stop=()) -> AgentContext:
    return AgentContext(backend, prompt, GenerationParams(max_tokens=64, seed=0), stop=stop)


def as_json(value) -> str:
    return json.dumps(value)
