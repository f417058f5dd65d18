"""Chat and text completions through the proxy: the library's lessons and experiences go into the request
(`inject_messages` / `build_prompt`, the functions training and evaluation use), the request goes upstream
with every other field untouched, the completion is recorded before its answer leaves, and the answer
comes back with the proxy's id and a `tfgrpo` field saying what was injected. With a server-side reward,
best-of-G: `group_size` choices sampled, scored, the best (or first) returned, all of them learned."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from starlette.types import Receive

from ..agents.trajectory import TOOL_CHARS, Message, ToolCall, Trajectory
from ..prompting import build_prompt, inject_messages
from . import _answers as answers
from . import records
from ._state import Passthrough, ProxyState
from ._streaming import until_disconnected
from .limits import check_limits
from .metrics import log_fields
from .openai_api import bad_request
from .served import ServedLibrary

log = logging.getLogger("tfgrpo.serve")

Answer = dict[str, Any] | Passthrough | AsyncGenerator[dict[str, Any], None]
"""A completion's answer: the JSON body, the upstream's own refusal as it came, or the chunks of a stream."""


class Completions(ProxyState):
    async def complete(
        self, lib: ServedLibrary, body: dict[str, Any], chat: bool, receive: Receive | None = None
    ) -> Answer:
        """`POST /v1/chat/completions` (`chat`) or `/v1/completions` for `lib`'s key. `receive`: the
        connection's, so that a client who hangs up cancels the upstream call."""
        started = time.perf_counter()
        config = self.config
        check_limits(body, self.limits)
        n = check_body(body, chat)
        extra = body.pop("tfgrpo", None) or {}
        stream = body.get("stream") is True
        run_id = extra.get("trajectory")  # a turn of an agent's run: its task is the first user message
        prompt = prompt_text(body, chat, first=run_id is not None)
        holdout = run_id is None and config.holdout > 0 and self.rng.random() < config.holdout
        upstream_body = dict(body)
        if self.upstream_model and not body.get("model"):
            upstream_body["model"] = self.upstream_model
        used_examples: list = []
        used_lessons: dict[str, str] = {}
        if prompt is not None and not holdout:
            used_examples, used_lessons, template = await lib.ainject(prompt)
            if used_examples or used_lessons:
                if chat:
                    messages = [dict(m) for m in body["messages"]]
                    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
                    target = users[0] if run_id is not None else users[-1]
                    messages[target]["content"] = prompt  # text parts, joined
                    upstream_body["messages"] = (
                        inject_messages(
                            messages[: target + 1],
                            used_examples,
                            template,
                            example_format=config.example_format,
                            contrast=config.contrast,
                        )
                        + messages[target + 1 :]
                    )
                else:
                    upstream_body["prompt"] = build_prompt(
                        prompt, used_examples, template, chat=False, contrast=config.contrast
                    )
        self.metrics.injected.labels(lib.name, "lessons").inc(len(used_lessons))
        self.metrics.injected.labels(lib.name, "experiences").inc(len(used_examples))
        cid = f"{'chatcmpl' if chat else 'cmpl'}-tfgrpo-{uuid.uuid4().hex}"
        info = {
            "library": lib.name,
            "version": lib.lessons.version,
            "lessons": list(used_lessons),
            "experiences": [e.id for e in used_examples],
            "holdout": holdout,
        }
        key = prompt
        if chat:
            asked = body["messages"]
            if run_id is not None:  # the runs of one task share their key: the messages up to the task
                asked = asked[: next((i for i, m in enumerate(asked) if m.get("role") == "user"), len(asked) - 1) + 1]
            key = json.dumps(asked, sort_keys=True, ensure_ascii=False)
        path = "chat/completions" if chat else "completions"
        sample = {**(extra.get("sample") or {}), "prompt": prompt or ""}

        library_version, lessons_version = lib.experiences.version, lib.lessons.version

        def record(
            texts: list[str], scored: tuple[list[str], list[float]] | None = None, answer: dict | None = None
        ) -> records.Completion:
            sent = None
            if config.rollout_log:
                sent = records.Sent(
                    upstream_body.get("messages" if chat else "prompt"),
                    lib.name,
                    seconds=(time.perf_counter() - started),
                    library_version=library_version,
                    lessons_version=lessons_version,
                    **answers.usage_of(answer),
                )
            if run_id is not None:  # a turn: learned only as part of its run, once the run is rewarded
                turn = {**info, **run_so_far(run_id, body, texts[0] if texts else "")}
                return records.Completion(
                    cid, prompt or "", texts, key, holdout, False, turn, None, extra.get("sample"), sent
                )
            return records.Completion(
                cid, prompt or "", texts, key, holdout, prompt is not None, info, scored, extra.get("sample"), sent
            )

        def logged(**fields: Any) -> None:
            log.info(
                "completion",
                extra=log_fields(
                    id=cid,
                    library=lib.name,
                    endpoint=path,
                    holdout=holdout,
                    lessons=len(used_lessons),
                    experiences=len(used_examples),
                    **fields,
                    ms=round(1000 * (time.perf_counter() - started), 2),
                ),
            )

        if stream and self.reward is None:
            return await self._stream(lib, path, upstream_body, chat, cid, info, record, logged, receive)
        if self.reward is not None:
            upstream_body["n"] = max(n, config.group_size)
            upstream_body.pop("stream", None)
            upstream_body.pop("stream_options", None)
        upstream_started = time.perf_counter()
        call = self.upstream.call("POST", path, upstream_body)
        status, raw, ctype = await (until_disconnected(receive, call) if receive is not None else call)
        upstream_ms = 1000 * (time.perf_counter() - upstream_started)
        if status >= 400:  # the upstream's own refusal, as it is
            return Passthrough(status, raw, ctype)
        data, choices, texts = answers.completion(raw, chat, upstream_body.get("n") or 1)
        scored = None
        if self.reward is not None:
            scores = await self.reward.ascore_batch([(prompt or "", t, sample) for t in texts])
            values = [s.value for s in scores]
            order = (
                sorted(range(len(texts)), key=lambda i: -values[i])
                if config.return_choice == "best"
                else list(range(len(texts)))
            )
            if prompt is not None and len(texts) >= 2:
                scored = (texts, values)
            choices = [dict(choices[i], index=j) for j, i in enumerate(order[:n])]
            info = {**info, "rewards": [values[i] for i in order[:n]]}
            texts = [texts[i] for i in order[:n]]
        await asyncio.wrap_future(lib.records.add(record(texts, scored, data)))
        data["id"] = cid
        data["choices"] = choices
        data["tfgrpo"] = info
        logged(n=n, upstream_ms=round(upstream_ms, 2))
        if stream:  # best-of-G: the choice is known only once all are scored; it goes out as one chunk
            return as_chunks(data, chat)
        return data

    async def _stream(self, lib, path, upstream_body, chat, cid, info, record, logged, receive) -> Answer:
        opening = self.upstream.open("POST", path, upstream_body)
        response = await (until_disconnected(receive, opening) if receive is not None else opening)
        if response.status_code != 200:
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            return Passthrough(response.status_code, raw, response.headers.get("content-type", "application/json"))

        asked = upstream_body.get("n") or 1

        async def events() -> AsyncGenerator[dict[str, Any], None]:
            texts: dict[int, list[str]] = {}
            first = True
            try:
                async for line in response.aiter_lines():  # 502/504 when it breaks off, stalls or runs too long
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = answers.chunk(data, chat, asked)
                    if chunk is None:
                        continue
                    if "error" in chunk:  # the upstream's own error event, as it is
                        yield chunk
                        return
                    chunk["id"] = cid
                    if first:
                        chunk["tfgrpo"] = info
                        first = False
                    for choice in chunk.get("choices") or ():
                        piece = answers.chunk_text(choice, chat)
                        if piece is not None:
                            texts.setdefault(choice.get("index", 0), []).append(piece)
                    yield chunk
                if first:  # not one event: no answer to record or learn from
                    raise answers.bad_answer("the stream ended without an event")
                n = max(texts, default=0) + 1
                await asyncio.wrap_future(lib.records.add(record(["".join(texts.get(i, [])) for i in range(n)])))
                logged(stream=True)
            finally:
                await response.aclose()

        return events()


def run_so_far(run_id: str, body: dict, answer: str) -> dict:
    """What a turn of an agent's run records: the run's id, its transcript so far (the messages after the
    task, tool results cut, then this turn's answer) and its figures: the last turn's are the run's."""
    messages: list[Message] = []
    after_task = False
    for m in body.get("messages") or []:
        role, content = m.get("role"), m.get("content")
        text = content if isinstance(content, str) else ""
        if not after_task:
            after_task = role == "user"
            continue
        if role == "assistant":
            calls = []
            for i, call in enumerate(m.get("tool_calls") or []):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    arguments = function.get("arguments")
                    calls.append(ToolCall(str(call.get("id") or i), function["name"], str(arguments or "")))
            messages.append(Message("assistant", text, tuple(calls)))
        elif role in ("tool", "user"):
            messages.append(Message("tool", text, name=m.get("name")))
    run = Trajectory([*messages, Message("assistant", answer)], answer)
    return {"trajectory": run_id, "transcript": run.transcript(TOOL_CHARS), "figures": run.figures()}


def prompt_text(body: dict, chat: bool, first: bool = False) -> str | None:
    """The caller's text the library is asked about: the last user message (chat; its text parts
    joined; `first`: the first one, the task of an agent's run) or the prompt (text completions). None
    when there is none to inject into."""
    if not chat:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        return prompt if isinstance(prompt, str) else None
    messages = body["messages"]
    users = [m for m in messages if m.get("role") == "user"]
    last = (users[0] if first else users[-1]) if users else None
    if last is None:
        return None
    content = last.get("content")
    if (
        isinstance(content, list)
        and content
        and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content)
    ):
        return "".join(p["text"] for p in content)
    return content if isinstance(content, str) else None


def check_body(body: dict, chat: bool) -> int:
    """The request's n, after checking the fields the proxy itself reads (the rest is the upstream's)."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("messages: must be a non-empty list of messages", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise bad_request(f"messages.{i}: must be an object with a string role", param=f"messages.{i}")
    elif "prompt" not in body:
        raise bad_request("prompt: required", param="prompt")
    elif isinstance(body["prompt"], list) and len(body["prompt"]) > 1:
        raise bad_request(
            "prompt: tfgrpo serve takes one prompt per request (send one request per prompt)", param="prompt"
        )
    n = body.get("n", 1)
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise bad_request(f"n: must be a whole number >= 1, got {json.dumps(n)[:50]}", param="n")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise bad_request("stream: must be true or false", param="stream")
    extra = body.get("tfgrpo")
    if extra is not None and (not isinstance(extra, dict) or not isinstance(extra.get("sample", {}), dict)):
        raise bad_request('tfgrpo: must be an object such as {"sample": {"answer": "42"}}', param="tfgrpo")
    run = (extra or {}).get("trajectory")
    if run is not None and not (isinstance(run, str) and 0 < len(run) <= 128 and run.isprintable()):
        raise bad_request("tfgrpo.trajectory: the id of an agent's run, a string of 1-128 characters", param="tfgrpo")
    return n


async def as_chunks(data: dict, chat: bool) -> AsyncGenerator[dict[str, Any], None]:
    """A whole completion as the stream chunks that would have carried it."""
    head = {k: data[k] for k in ("id", "created", "model") if k in data}
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    for i, choice in enumerate(data["choices"]):
        if chat:
            delta = {k: v for k, v in (choice.get("message") or {}).items() if v is not None}
            piece = {"index": i, "delta": delta, "finish_reason": choice.get("finish_reason"), "logprobs": None}
        else:
            piece = {**choice, "index": i}
        yield {**head, "choices": [piece], **({"tfgrpo": data["tfgrpo"]} if i == 0 else {})}
