"""What the upstream answers, checked once where it enters the proxy: the shape of an OpenAI completion
and of a streamed chunk (the fields the proxy reads, recorded and learned from), and text without lone
surrogates (a JSON `\\ud800` escape with no pair, which no UTF-8 encoder, store or client accepts: each
becomes U+FFFD, as the training loop does with model output). Anything else the upstream sends passes
through as it came, once it is JSON (no NaN or Infinity, which no client's parser need take). A choice's
index is one of the `n` choices asked for. A shape the proxy cannot read is the upstream's fault: a 502
`upstream_error`."""

from __future__ import annotations

import json
import re
from typing import Any

from ..core.experience import clean_text
from ..llm.base import token_count
from .openai_api import OpenAIError, loads_json

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
"""Where a lone surrogate could come from in JSON text (raw UTF-8 cannot encode one)."""


def bad_answer(what: str) -> OpenAIError:
    return OpenAIError(502, f"the upstream's answer is not an OpenAI completion: {what}", code="upstream_error")


def completion(raw: bytes, chat: bool, n: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """(the answer, its choices in index order, each choice's text) of a whole upstream completion of `n`
    choices asked for (a choice without an index is the one at its place)."""
    try:
        data = loads_json(raw)
    except (ValueError, RecursionError):
        raise bad_answer(repr(raw[:200])) from None
    if _ESCAPED_SURROGATE.search(raw):
        data = _clean(data)
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise bad_answer(f"no list of choices in {repr(raw[:200])}")
    choices = data["choices"]
    if len(choices) > n:
        raise bad_answer(f"{len(choices)} choices, {n} asked for")
    for i, choice in enumerate(choices):
        _check_choice(choice, chat, f"choices.{i}", n)
    indexes = [c.get("index", i) for i, c in enumerate(choices)]
    if len(set(indexes)) < len(indexes):
        raise bad_answer("two choices have one index")
    choices = [c for _, c in sorted(zip(indexes, choices), key=lambda pair: pair[0])]
    return data, choices, [choice_text(c, chat) for c in choices]


def chunk(data: str, chat: bool, n: int) -> dict[str, Any] | None:
    """One streamed event's JSON, checked, of a stream of `n` choices asked for (None: not an object,
    which the proxy skips)."""
    try:
        event = loads_json(data)
    except (ValueError, RecursionError):
        raise bad_answer(f"a bad event: {data[:200]!r}") from None
    if _ESCAPED_SURROGATE.search(data.encode("utf-8", "surrogatepass")):
        event = _clean(event)
    if not isinstance(event, dict) or "error" in event:
        return event if isinstance(event, dict) else None
    choices = event.get("choices")
    if choices is None:
        return event
    if not isinstance(choices, list):
        raise bad_answer(f"an event's choices are not a list: {data[:200]!r}")
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise bad_answer(f"an event's choices.{i} is not an object")
        _check_index(choice, f"choices.{i}", n)
        part = choice.get("delta") if chat else choice
        if chat and part is not None and not isinstance(part, dict):
            raise bad_answer(f"an event's choices.{i}.delta is not an object")
        _check_text((part or {}).get("content" if chat else "text"), f"choices.{i}")
    return event


def chunk_text(choice: dict[str, Any], chat: bool) -> str | None:
    """The text a checked chunk's choice adds (None: none, e.g. a chunk that only ends the choice)."""
    return (choice.get("delta") or {}).get("content") if chat else choice.get("text")


def choice_text(choice: dict[str, Any], chat: bool) -> str:
    """What a checked choice says: its text, or (chat) its tool calls as JSON when it has no text."""
    if not chat:
        return choice.get("text") or ""
    message = choice.get("message") or {}
    content = message.get("content")
    if isinstance(content, str) and content:
        return content
    calls = message.get("tool_calls")
    return json.dumps(calls, ensure_ascii=False) if calls else ""


def usage_of(answer: dict[str, Any] | None) -> dict[str, Any]:
    """The model and token counts an answer reports, for the rollout log (None where missing or not of
    the right type: the upstream's word, not needed to serve)."""
    usage = (answer or {}).get("usage")
    usage = usage if isinstance(usage, dict) else {}
    model = (answer or {}).get("model")
    return {
        "model": clean_text(model)[:200] if isinstance(model, str) else None,
        "prompt_tokens": token_count(usage.get("prompt_tokens")),
        "completion_tokens": token_count(usage.get("completion_tokens")),
    }


def _check_choice(choice: Any, chat: bool, where: str, n: int) -> None:
    if not isinstance(choice, dict):
        raise bad_answer(f"{where} is not an object")
    _check_index(choice, where, n)
    if not chat:
        _check_text(choice.get("text"), f"{where}.text")
        return
    message = choice.get("message")
    if message is None:
        return
    if not isinstance(message, dict):
        raise bad_answer(f"{where}.message is not an object")
    _check_text(message.get("content"), f"{where}.message.content")
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise bad_answer(f"{where}.message.tool_calls is not a list")


def _check_index(choice: dict[str, Any], where: str, n: int) -> None:
    index = choice.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise bad_answer(f"{where}.index is not a whole number")
    if not 0 <= index < n:
        raise bad_answer(f"{where}.index is {index}, not one of the {n} choices asked for")


def _check_text(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, str):
        raise bad_answer(f"{where} is a JSON {type(value).__name__}, not text")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
