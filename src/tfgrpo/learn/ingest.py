"""The other way in: the records of a log you already have (JSON lines: prompts, responses and their
rewards), validated once here, where they enter, and made into `Group`s the update strategies learn from
(`tfgrpo learn-from-log`, driven by `loop/from_log.py`).

A record is one JSON object per line, in either shape:

- `{"prompt": "...", "response": "...", "reward": 1.0}`, or `{"messages": [...], "response": ..., "reward":
  ...}` (chat messages; without "response", the last message is the assistant's answer), with optional
  "group" (a string or number: records with the same group form one group), "metadata" (an object of
  strings, numbers or booleans), "timestamp" (Unix seconds or an ISO date-time), "sample" (an object of
  fields the rewards and the critic read: a reference answer, tests) and "model".
- The OpenAI chat-completions shape a logging proxy writes: `{"request": {"messages": [...], "model": ...},
  "response": {"choices": [...], "model": ..., "usage": {...}}, "reward": 1.0}` (or `"rewards": [...]`, one
  per choice in the order of their index; `"body"` wrappers, as in OpenAI's batch files, are unwrapped; a
  text completion's `"prompt"` and choices' `"text"` work too). An answer of n >= 2 choices is a group of
  its own.

Grouping (`group_window`): the file is read in windows of `window` lines; within a window, the records of
one prompt (its text, or its whole chat messages) or of one given group form a group, in line order, at
most `max_group` rollouts each (more start another). A window's records are all that is held in memory;
records of one prompt further apart than a window do not meet. A group of one rollout has nothing to be
compared with: it is logged, not learned.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

from ..core.advantages import MAX_REWARD_MAGNITUDE
from ..core.experience import MAX_TIMESTAMP, clean_text
from ..llm.base import token_count
from ..rewards.base import Score
from .group import Group

MAX_LINE_BYTES = 1 << 20


class BadRecord(ValueError):
    """A line that is no usable record, and why (said with its line number by the reader)."""


@dataclass(frozen=True)
class LogRecord:
    """One record of a log, checked."""

    line: int
    prompt: str
    """The task's prompt: the text, or a chat's last user message (what the library keys experiences by)."""
    responses: list[str]
    rewards: list[float]
    key: str
    """What groups it: the given group, else the prompt (its chat messages when it has them)."""
    messages: list[dict[str, Any]] | None = None
    """The chat messages before the response (None: a text prompt)."""
    metadata: dict[str, str] | None = None
    timestamp: float | None = None
    sample: dict[str, Any] | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    own_group: bool = False
    """Several choices of one answer: a group by themselves."""


def parse_record(value: Any, line: int) -> LogRecord:
    """A decoded JSON line as a record, every field checked (`BadRecord` says what is wrong)."""
    if not isinstance(value, dict):
        raise BadRecord(f"a record is a JSON object, not {type(value).__name__}")
    request, answer = value.get("request"), value.get("response")
    if isinstance(request, dict) or isinstance(answer, dict):
        return _openai_record(value, _unwrap(request, "request"), _unwrap(answer, "response"), line)
    messages = None
    if "messages" in value:
        messages = _messages(value["messages"])
        if "response" not in value:
            if not messages or messages[-1]["role"] != "assistant":
                raise BadRecord('without "response", the last message must be the assistant\'s answer')
            *messages, last = messages
            answer = last["content"]
        prompt = _last_user(messages)
    elif "prompt" in value:
        prompt = _text(value["prompt"], "prompt")
    else:
        raise BadRecord('a record needs "prompt" or "messages" (or the OpenAI "request"/"response" shape)')
    response = _text(answer, "response")
    return LogRecord(
        line,
        prompt,
        [response],
        [_reward(value.get("reward"), "reward")],
        _key(value, prompt, messages),
        messages,
        _metadata(value.get("metadata")),
        _timestamp(value.get("timestamp")),
        _sample(value.get("sample")),
        _optional_text(value.get("model"), "model"),
    )


def _openai_record(value: dict, request: dict, answer: dict, line: int) -> LogRecord:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise BadRecord("response.choices must be a non-empty list")
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise BadRecord(f"response.choices.{i} is not an object")
        index = choice.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int):
            raise BadRecord(f"response.choices.{i}.index is not a whole number")
    texts = []
    for i, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0))):
        if "message" in choice:
            message = choice["message"]
            if not isinstance(message, dict):
                raise BadRecord(f"response.choices.{i}.message is not an object")
            if message.get("content") is None:  # (tool calls alone: not a text answer to learn from)
                raise BadRecord(f"response.choices.{i}.message has no text content (tool calls are not learned)")
            texts.append(_text(message["content"], f"response.choices.{i}.message.content"))
        else:
            texts.append(_text(choice.get("text"), f"response.choices.{i}.text"))
    if "messages" in request:
        messages: list[dict[str, Any]] | None = _messages(request["messages"])
        prompt = _last_user(messages)  # type: ignore[arg-type]
    elif "prompt" in request:
        messages, prompt = None, _text(request["prompt"], "request.prompt")
    else:
        raise BadRecord('request needs "messages" or "prompt"')
    if "rewards" in value:
        rewards = value["rewards"]
        if not isinstance(rewards, list) or len(rewards) != len(texts):
            raise BadRecord(f'"rewards" must be a list of one reward per choice ({len(texts)})')
        rewards = [_reward(r, f"rewards.{i}") for i, r in enumerate(rewards)]
    elif len(texts) == 1:
        rewards = [_reward(value.get("reward"), "reward")]
    else:
        raise BadRecord(f'an answer of {len(texts)} choices needs "rewards", one per choice')
    usage: dict[str, Any] = answer["usage"] if isinstance(answer.get("usage"), dict) else {}
    return LogRecord(
        line,
        prompt,
        texts,
        rewards,
        _key(value, prompt, messages),
        messages,
        _metadata(value.get("metadata")),
        _timestamp(value.get("timestamp")),
        _sample(value.get("sample")),
        _optional_text(answer.get("model") or request.get("model"), "model"),
        token_count(usage.get("prompt_tokens")),
        token_count(usage.get("completion_tokens")) if len(texts) == 1 else None,
        own_group=len(texts) > 1,
    )


def _unwrap(part: Any, name: str) -> dict:
    if isinstance(part, dict) and isinstance(part.get("body"), dict):
        part = part["body"]
    if not isinstance(part, dict):
        raise BadRecord(f'"{name}" must be an object in the OpenAI shape')
    return part


def _text(value: Any, what: str) -> str:
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value
    ):
        value = "".join(p["text"] for p in value)  # OpenAI content parts
    if not isinstance(value, str):
        raise BadRecord(f'"{what}" must be text, got {type(value).__name__}')
    return clean_text(value)  # (logged model output: a lone surrogate becomes U+FFFD, as the loop does)


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None else _text(value, what)[:200]


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise BadRecord('"messages" must be a non-empty list of {"role", "content"} objects')
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRecord(f"messages.{i} must be an object with a string role")
        out.append({"role": m["role"], "content": _text(m.get("content") or "", f"messages.{i}.content")})
    return out


def _last_user(messages: list[dict[str, Any]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users or not users[-1]:
        raise BadRecord("the messages hold no user message with text (the prompt)")
    return users[-1]


def _reward(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord(f'"{what}" must be a number, got {json.dumps(value)[:40]}')
    try:
        value = float(value)
    except OverflowError:
        raise BadRecord(f'"{what}" is too large') from None
    if not math.isfinite(value):
        raise BadRecord(f'"{what}" must be finite')
    if abs(value) > MAX_REWARD_MAGNITUDE:
        raise BadRecord(f'"{what}" is too large to learn from (at most {MAX_REWARD_MAGNITUDE:g} either way)')
    return value


def _key(value: dict, prompt: str, messages: list | None) -> str:
    group = value.get("group")
    if group is not None:
        if isinstance(group, bool) or not isinstance(group, (str, int)):
            raise BadRecord('"group" must be a string or a whole number')
        return f"group:{json.dumps(group)}"  # (1 and "1" are two groups)
    return "messages:" + json.dumps(messages, ensure_ascii=False) if messages else "prompt:" + prompt


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRecord('"metadata" must be an object')
    out = {}
    for key, item in value.items():
        if not isinstance(item, (str, int, float)):  # (bool is an int)
            raise BadRecord(f"metadata.{key[:40]} must be a string, a number or a boolean")
        out[clean_text(key)] = clean_text(str(item).lower() if isinstance(item, bool) else str(item))
    return out or None


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadRecord(f'"timestamp" {value[:40]!r} is not an ISO date-time') from None
        value = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
        if not 0 <= value <= MAX_TIMESTAMP:  # (the same range as Unix seconds given as a number)
            raise BadRecord(f'"timestamp" {value:.0f} is before 1970 or too far ahead')
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_TIMESTAMP:
        raise BadRecord('"timestamp" must be Unix seconds or an ISO date-time')
    return float(value)


def _sample(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRecord('"sample" must be an object')
    if not _finite(value):
        raise BadRecord('"sample" holds NaN or Infinity, which JSON has not')
    # prompt, id and messages are the record's own (an export builds each row's prompt from them)
    return {k: v for k, v in value.items() if k not in ("prompt", "id", "messages")} or None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


@dataclass(frozen=True)
class Line:
    """What the reader found on one line: a record, or why there is none."""

    number: int
    end: int
    """The byte offset just after the line (where reading goes on)."""
    record: LogRecord | None = None
    error: str = ""
    blank: bool = False


def read_lines(f: IO[bytes], line: int = 0, max_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """Each line of `f` (a binary file, positioned where reading starts; `line`: the lines before it) as a
    record or an error, holding at most `max_bytes` of a line in memory (a longer one is an error)."""
    offset = f.tell()
    while True:
        data = f.readline(max_bytes + 1)
        if not data:
            return
        line += 1
        offset += len(data)
        if len(data) > max_bytes and not data.endswith(b"\n"):
            while data and not data.endswith(b"\n"):  # the rest of the line, a piece at a time
                data = f.readline(max_bytes)
                offset += len(data)
            yield Line(line, offset, error=f"longer than {max_bytes} bytes")
            continue
        if not data.strip():
            yield Line(line, offset, blank=True)
            continue
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:  # (UnicodeDecodeError is a ValueError)
            if not data.endswith(b"\n"):  # the last line, unfinished: a log still being written; left for next time
                return
            yield Line(line, offset, error=f"not JSON: {str(exc)[:120]}")
            continue
        try:
            record = parse_record(value, line)
        except BadRecord as exc:
            yield Line(line, offset, error=str(exc))
            continue
        except Exception as exc:  # a shape the checks above missed: still that line's error, not the run's end
            yield Line(line, offset, error=f"unreadable record ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        yield Line(line, offset, record=record)


def group_window(records: list[LogRecord], max_group: int) -> list[tuple[Group, list[LogRecord]]]:
    """The groups of one window's records, in the order of their first line, each with the records whose
    rollouts it holds (see the module's docstring)."""
    open_groups: dict[str, list[LogRecord]] = {}
    formed: list[list[LogRecord]] = []
    for record in records:
        if record.own_group:
            formed.append([record])
            continue
        members = open_groups.setdefault(record.key, [])
        members.append(record)
        if len(members) >= max_group:
            formed.append(members)
            del open_groups[record.key]
    formed += open_groups.values()
    formed.sort(key=lambda members: members[0].line)
    return [(_group(members), members) for members in formed]


def _group(members: list[LogRecord]) -> Group:
    first = members[0]
    sample: dict[str, Any] = {**(first.sample or {}), "prompt": first.prompt, "id": f"line-{first.line}"}
    if first.messages:
        sample["messages"] = first.messages
    responses = [text for m in members for text in m.responses]
    scores = [Score(reward) for m in members for reward in m.rewards]
    metadata = [m.metadata for m in members for _ in m.responses]
    return Group(sample, responses, scores, metadata=metadata if any(metadata) else None)


def fingerprint(f: IO[bytes]) -> str:
    """What names a log file for resuming: a digest of its first line (at most 64 KiB of it), which stays
    the same as the file grows."""
    at = f.tell()
    f.seek(0)
    digest = hashlib.sha256(f.readline(1 << 16)).hexdigest()[:16]
    f.seek(at)
    return digest


def tail_digest(f: IO[bytes], offset: int) -> str:
    """A digest of the 64 KiB before `offset`: what resuming there checks is still the same."""
    at = f.tell()
    start = max(0, offset - (1 << 16))
    f.seek(start)
    digest = hashlib.sha256(f.read(offset - start)).hexdigest()[:16]
    f.seek(at)
    return digest
