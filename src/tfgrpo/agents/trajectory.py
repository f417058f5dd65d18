"""`Trajectory`: one agent run (or one plain completion) as every part of learning sees it: the messages
(assistant text, tool calls with their arguments, tool results and tool errors), the final answer, and
its figures (turns, tool calls, tool errors, tokens, time, why it ended).

A plain completion is a one-turn trajectory (`Trajectory.of`): its `text` and `answer` are the
completion's text, so a rollout that used no tool reads, scores and stores exactly as a completion does.
A run that used tools reads as its transcript (`text`): what the model wrote and what the tools answered,
in the text protocol of `tfgrpo.agents.react` (fenced code blocks, `Output:` blocks), so a transcript
stored as a few-shot example shows a model the very protocol it is run in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ENDINGS = (
    "answer",
    "max_turns",
    "tool_errors",
    "tool_unavailable",
    "model_error",
    "agent_error",
    "timeout",
)
"""Why a trajectory ended: with an answer; out of turns while still calling tools; after too many tool
errors; a tool server that went away; the model failed (after its retries); the agent itself raised; the
whole run took longer than its limit. Only "answer" carries an answer to score."""

CUT_MARKER = "[... {n} characters cut ...]"


def cut(text: str, most: int) -> str:
    """`text` cut to about `most` characters, its start and end kept, with a marker saying how much went."""
    if len(text) <= most:
        return text
    half = max(1, most // 2)
    return f"{text[:half]}\n{CUT_MARKER.format(n=len(text) - 2 * half)}\n{text[-half:]}"


@dataclass(frozen=True)
class ToolCall:
    """One call a model asked for: its id (the model's, or made up for the text protocol), the tool's
    name and its arguments (a dict; the raw text when the model's arguments were not a JSON object)."""

    id: str
    name: str
    arguments: dict[str, Any] | str
    inline: bool = False
    """Written in the assistant's text (the text protocol's fenced block), not sent beside it."""

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "name": self.name, "arguments": self.arguments}
        return {**out, "inline": True} if self.inline else out


@dataclass(frozen=True)
class Message:
    """One message of a run after the prompt: an assistant turn (its text and the tool calls it made)
    or a tool's result (`error` when the call failed: unknown tool, bad arguments, the tool raised,
    timed out or crashed)."""

    role: str
    """"assistant" or "tool"."""
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    """The tool that answered (tool messages)."""
    error: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.role == "tool":
            out.update(tool_call_id=self.tool_call_id, name=self.name, error=self.error)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        calls = tuple(
            ToolCall(str(c["id"]), str(c["name"]), c["arguments"], bool(c.get("inline")))
            for c in data.get("tool_calls") or ()
        )
        return cls(
            str(data["role"]),
            str(data.get("content") or ""),
            calls,
            data.get("tool_call_id"),
            data.get("name"),
            bool(data.get("error", False)),
        )


def render_call(call: ToolCall) -> str:
    """A tool call as the text protocol writes it: a python block for the interpreter's code, else a
    `tool` block holding the call as JSON."""
    args = call.arguments
    if call.name == "python" and isinstance(args, dict) and isinstance(args.get("code"), str) and len(args) == 1:
        return f"```python\n{args['code'].strip()}\n```"
    body = json.dumps({"name": call.name, "arguments": args}, ensure_ascii=False)
    return f"```tool\n{body}\n```"


def render_result(content: str, error: bool) -> str:
    """A tool's result as the text protocol feeds it back to the model (the next user message)."""
    return f"{'Error' if error else 'Output'}:\n```\n{content.strip()}\n```"


TOOL_CHARS = 400
"""Most characters of one tool result kept in a stored trajectory (cut in the middle, marked): in the
library's experiences and the rollout log alike."""


@dataclass
class Trajectory:
    """One rollout: the messages after the prompt, the final answer (None when none came), why it ended
    and what it cost. `text` is what learning sees of it (the transcript; a plain completion's text)."""

    messages: list[Message]
    answer: str | None
    ended: str = "answer"
    detail: str = ""
    """Why it ended, in words (the error of a model or tool, the limit reached)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str | None = None
    """The last model turn's finish reason ("stop", "length", "tool_calls", ...)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Whatever an agent wants to keep with the run (its framework's own record, say)."""

    @classmethod
    def of(cls, generation: Any) -> Trajectory:
        """A plain completion (a `Generation`) as a one-turn trajectory."""
        return cls(
            [Message("assistant", generation.text)],
            generation.text,
            prompt_tokens=generation.prompt_tokens or 0,
            completion_tokens=generation.completion_tokens or 0,
            finish_reason=generation.finish_reason,
        )

    # -- figures

    @property
    def turns(self) -> int:
        return sum(m.role == "assistant" for m in self.messages)

    @property
    def tool_calls(self) -> int:
        return sum(len(m.tool_calls) for m in self.messages)

    @property
    def tool_errors(self) -> int:
        return sum(m.role == "tool" and m.error for m in self.messages)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def plain(self) -> bool:
        """One assistant turn, no tool: a completion like any other."""
        return len(self.messages) == 1 and not self.messages[0].tool_calls and self.ended == "answer"

    def called(self) -> list[str]:
        """The tools called, in order."""
        return [c.name for m in self.messages for c in m.tool_calls]

    def figures(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 3),
            "ended": self.ended,
        }

    # -- as text

    @property
    def text(self) -> str:
        """What learning sees: a plain completion's text, else the transcript."""
        if self.plain:
            return self.messages[0].content
        return self.transcript()

    def transcript(self, tool_chars: int | None = None) -> str:
        """The run in the text protocol: each assistant turn (its calls as fenced blocks) and each tool
        result as an `Output:` (or `Error:`) block, tool results cut to `tool_chars` with a marker."""
        parts = []
        for message in self.messages:
            if message.role == "assistant":
                written = message.content.strip()
                calls = "\n".join(render_call(c) for c in message.tool_calls if not c.inline)
                parts.append("\n".join(p for p in (written, calls) if p))
            else:
                content = message.content if tool_chars is None else cut(message.content, tool_chars)
                parts.append(render_result(content, message.error))
        if self.answer is None:
            parts.append(f"(no answer: {self.ended}{': ' + self.detail if self.detail else ''})")
        return "\n".join(p for p in parts if p)

    def turns_as_messages(self, tool_chars: int | None = None) -> list[tuple[str, str]]:
        """(role, content) chat turns of the run in the text protocol: assistant turns, and each tool
        result as the user message that fed it back."""
        out: list[tuple[str, str]] = []
        for message in self.messages:
            if message.role == "assistant":
                written = message.content.strip()
                calls = "\n".join(render_call(c) for c in message.tool_calls if not c.inline)
                out.append(("assistant", "\n".join(p for p in (written, calls) if p)))
            else:
                content = message.content if tool_chars is None else cut(message.content, tool_chars)
                out.append(("user", render_result(content, message.error)))
        return out

    def critic_view(self, tool_chars: int = 600) -> str:
        """The run as the lessons critic reads it: which tools were called, how many failed, how it ended,
        then the transcript with long tool outputs cut."""
        called = self.called()
        counts = ", ".join(f"{name} x{called.count(name)}" for name in dict.fromkeys(called)) or "none"
        head = (
            f"[{self.turns} turns; tool calls: {counts}; tool errors: {self.tool_errors}; "
            f"ended: {self.ended}{' (' + self.detail + ')' if self.detail else ''}]"
        )
        return f"{head}\n{self.transcript(tool_chars)}"

    # -- stored form

    def to_dict(self, tool_chars: int | None = None) -> dict[str, Any]:
        messages = [m.to_dict() for m in self.messages]
        if tool_chars is not None:
            for m in messages:
                if m["role"] == "tool":
                    m["content"] = cut(m["content"], tool_chars)
        return {
            "messages": messages,
            "answer": self.answer,
            "ended": self.ended,
            "detail": self.detail,
            **{k: v for k, v in self.figures().items() if k != "ended"},
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        return cls(
            [Message.from_dict(m) for m in data.get("messages") or ()],
            data.get("answer"),
            str(data.get("ended", "answer")),
            str(data.get("detail", "")),
            int(data.get("prompt_tokens") or 0),
            int(data.get("completion_tokens") or 0),
            float(data.get("seconds") or 0.0),
            data.get("finish_reason"),
        )


def failed(ended: str, detail: str, messages: list[Message] | None = None, **figures: Any) -> Trajectory:
    """A trajectory that ended without an answer."""
    return Trajectory(list(messages or []), None, ended, detail, **figures)


@dataclass
class Tally:
    """The figures of many trajectories (a condition of an evaluation, a training step): means per
    rollout and how they ended."""

    rollouts: int = 0
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    answered: int = 0
    endings: dict[str, int] = field(default_factory=dict)

    def add(self, trajectory: Trajectory) -> None:
        self.rollouts += 1
        self.turns += trajectory.turns
        self.tool_calls += trajectory.tool_calls
        self.tool_errors += trajectory.tool_errors
        self.prompt_tokens += trajectory.prompt_tokens
        self.completion_tokens += trajectory.completion_tokens
        self.seconds += trajectory.seconds
        self.answered += trajectory.answer is not None
        self.endings[trajectory.ended] = self.endings.get(trajectory.ended, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        n = max(1, self.rollouts)
        return {
            "rollouts": self.rollouts,
            "turns_per_rollout": self.turns / n,
            "tool_calls_per_rollout": self.tool_calls / n,
            "tool_errors_per_rollout": self.tool_errors / n,
            "tokens_per_rollout": (self.prompt_tokens + self.completion_tokens) / n,
            "seconds_per_rollout": self.seconds / n,
            "answered": self.answered / n,
            "endings": dict(sorted(self.endings.items())),
        }
