"""`ToolAgent`: the ReAct loop over a set of tools (the paper's agent with a Python interpreter, your
functions, an MCP server's tools): the model thinks and calls a tool, the result comes back, until it
answers without a call or a limit ends the run.

Two protocols. Text, for any model: a call is a fenced block in the model's reply (```python for the
interpreter, ```tool holding `{"name": ..., "arguments": {...}}` for any tool); the reply is cut after the
first such block (what the model wrote after it, its guess at the output, is dropped), and the result
comes back as the next user message, an `Output:` (or `Error:`) block. No stop string is sent with a turn,
so none can cut a code block in half; the task's stop strings cut only a final answer, and only outside
code blocks. Native: the tools go out as OpenAI function definitions and the model's `tool_calls` come
back (`Backend.achat_tools`), for backends that declare them or with `tool_calls="native"`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, TFGRPOError
from ..llm.base import Prompt, to_messages
from .base import Agent, AgentConfig, AgentContext
from .tools import Tool, Toolbox, ToolOutput, ToolUnavailable
from .trajectory import Message, ToolCall, Trajectory, render_result

PYTHON_INSTRUCTION = (
    "You can run Python code: write it in a ```python block and end your reply there; what it prints comes "
    "back to you in the next message, and variables are kept from one block to the next. When you know the "
    "final answer, write it without a code block."
)
TOOLS_INSTRUCTION = (
    "You can call these tools: write one call as a ```tool block holding JSON such as "
    '{{"name": "TOOL", "arguments": {{...}}}} and end your reply there; the result comes back to you in the '
    "next message.\n{tools}\nWhen you know the final answer, write it without a tool block."
)
NATIVE_INSTRUCTION = "When you know the final answer, reply with it and call no tool."

_OPEN = re.compile(r"```[ \t]*(python3?|py|tool)[ \t]*\n", re.IGNORECASE)
_ANY_FENCE = re.compile(r"```")


class ToolAgent(Agent):
    """ReAct over `tools`, bounded by `config` (turns, tool timeout and errors, result size, the whole
    run's time). `instruction`: what the model is told about the tools (default: written from them)."""

    def __init__(
        self,
        tools: Sequence[Tool],
        config: AgentConfig = AgentConfig(),
        name: str = "tools",
        instruction: str | None = None,
    ) -> None:
        names = [t.name for t in tools]
        if not tools or len(set(names)) < len(names):
            raise ConfigError(f"an agent needs tools with distinct names, got {names}")
        self.tools = {t.name: t for t in tools}
        self.config = config
        self.name = name
        self.instruction = instruction

    def text_instruction(self) -> str:
        if self.instruction is not None:
            return self.instruction
        others = [t for name, t in self.tools.items() if name != "python"]
        parts = [PYTHON_INSTRUCTION] if "python" in self.tools else []
        if others:
            parts.append(TOOLS_INSTRUCTION.format(tools="\n".join(f"- {t.signature()}" for t in others)))
        return "\n\n".join(parts)

    def native(self, context: AgentContext) -> bool:
        mode = self.config.tool_calls
        if mode == "native" and context.chat is False:
            raise ConfigError("native tool calls need chat mode; use --tool-calls text with plain-text prompts")
        return mode == "native" or (mode == "auto" and context.chat is not False and context.backend.tool_calls)

    async def run(self, sample: dict, context: AgentContext) -> Trajectory:
        config = self.config
        async with Toolbox(self.tools, config.tool_timeout, config.max_tool_output) as box:
            run = Run()
            try:
                if self.native(context):
                    await self._native(context, box, run)
                else:
                    await self._text(context, box, run)
            except ToolUnavailable as error:
                run.end("tool_unavailable", str(error))
            except TFGRPOError as error:  # the model's backend, after its retries; a refused call
                run.end("model_error", str(error))
            return run.trajectory

    async def _text(self, context: AgentContext, box: Toolbox, run: Run) -> None:
        conversation = with_instruction(context.prompt, self.text_instruction(), context.chat)
        for turn in range(self.config.max_turns):
            generation = await context.generate(conversation)
            run.count(generation.prompt_tokens, generation.completion_tokens, generation.finish_reason)
            text, call, problem = parse_text_turn(generation.text, generation.finish_reason, turn)
            if call is None and problem is None:
                run.answer(cut_outside_code(text, context.stop))
                return
            run.messages.append(Message("assistant", text, (call,) if call else ()))
            if turn == self.config.max_turns - 1:
                break
            if call is not None:
                output = await box.call(call.name, call.arguments)
                content, error = output.content, output.error
            else:
                content, error = problem or "", True
            run.messages.append(Message("tool", content, tool_call_id=call.id if call else None,
                                        name=call.name if call else None, error=error))  # fmt: skip
            if run.too_many_errors(self.config):
                return
            conversation = extended(conversation, text, render_result(content, error))
        run.end("max_turns", f"still calling tools after {self.config.max_turns} turns")

    async def _native(self, context: AgentContext, box: Toolbox, run: Run) -> None:
        messages: list[dict[str, Any]] = to_messages(with_instruction(context.prompt, NATIVE_INSTRUCTION, True))
        specs = [t.spec() for t in self.tools.values()]
        for turn in range(self.config.max_turns):
            reply = await context.backend.achat_tools(messages, context.params, specs)
            run.count(reply.prompt_tokens, reply.completion_tokens, reply.finish_reason)
            if not reply.tool_calls:
                run.answer(cut_outside_code(reply.text, context.stop))
                return
            calls = tuple(ToolCall(c["id"], c["name"], parse_arguments(c["arguments"])) for c in reply.tool_calls)
            run.messages.append(Message("assistant", reply.text, calls))
            if turn == self.config.max_turns - 1:
                break
            messages.append(
                {
                    "role": "assistant",
                    "content": reply.text or None,
                    "tool_calls": [
                        {"id": c["id"], "type": "function", "function": {k: c[k] for k in ("name", "arguments")}}
                        for c in reply.tool_calls
                    ],
                }
            )
            for i, call in enumerate(calls):
                if i < self.config.max_tool_calls:
                    output = await box.call(call.name, call.arguments)
                else:  # (a turn of thousands of calls ran them all; now the error limit ends it soon)
                    limit = self.config.max_tool_calls
                    output = ToolOutput(f"not run: one turn may make at most {limit} tool calls", True)
                run.messages.append(Message("tool", output.content, tool_call_id=call.id, name=call.name,
                                            error=output.error))  # fmt: skip
                messages.append({"role": "tool", "tool_call_id": call.id, "content": output.content})
                if run.too_many_errors(self.config):  # within the turn: one turn may hold thousands of calls
                    return
        run.end("max_turns", f"still calling tools after {self.config.max_turns} turns")


class Run:
    """A trajectory being made."""

    def __init__(self) -> None:
        self.trajectory = Trajectory([], None, "max_turns")
        self.messages = self.trajectory.messages

    def count(self, prompt_tokens: int | None, completion_tokens: int | None, finish: str | None) -> None:
        self.trajectory.prompt_tokens += prompt_tokens or 0
        self.trajectory.completion_tokens += completion_tokens or 0
        self.trajectory.finish_reason = finish

    def answer(self, text: str) -> None:
        self.messages.append(Message("assistant", text))
        self.trajectory.answer = text
        self.trajectory.ended = "answer"

    def end(self, why: str, detail: str) -> None:
        self.trajectory.answer = None
        self.trajectory.ended = why
        self.trajectory.detail = detail[:1000]

    def too_many_errors(self, config: AgentConfig) -> bool:
        if self.trajectory.tool_errors >= config.max_tool_errors:
            self.end("tool_errors", f"{self.trajectory.tool_errors} tool errors (the most is {config.max_tool_errors})")
            return True
        return False


def parse_text_turn(text: str, finish_reason: str | None, turn: int) -> tuple[str, ToolCall | None, str | None]:
    """(the turn's text, the call it makes, what is wrong with the call) for a text-protocol reply: the
    first ```python or ```tool block is the call and the text ends after it; no such block, no call."""
    opening = _OPEN.search(text)
    if opening is None:
        return text, None, None
    body_start = opening.end()
    closing = re.compile(r"(^|\n)[ \t]*```").search(text, body_start)
    if closing is None:
        if finish_reason == "length":
            return text, None, "the code block was cut off by the turn's token limit; write shorter code"
        body, end = text[body_start:], len(text)
        text = text.rstrip() + "\n```"
    else:
        body, end = text[body_start : closing.start()], closing.end()
        text = text[:end]
    call_id = f"call_{turn}"
    if opening.group(1).lower() != "tool":
        return text, ToolCall(call_id, "python", {"code": body.strip("\n")}, inline=True), None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        return text, None, f'the tool block is not JSON ({error}); write {{"name": ..., "arguments": {{...}}}}'
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return text, None, 'the tool block needs {"name": "TOOL", "arguments": {...}}'
    return text, ToolCall(call_id, data["name"], data.get("arguments", {}), inline=True), None


def parse_arguments(raw: str) -> dict[str, Any] | str:
    """A native call's arguments: the JSON object, or the raw text when it is none (the toolbox says so)."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return raw
    return value if isinstance(value, dict) else raw


def cut_outside_code(text: str, stops: Sequence[str]) -> str:
    """`text` cut at the first stop string that is not inside a fenced code block."""
    if not stops:
        return text
    inside = [False] * (len(text) + 1)
    fences = [m.start() for m in _ANY_FENCE.finditer(text)]
    for opening, closing in zip(fences[::2], [*fences[1::2], len(text)]):
        for i in range(opening, min(closing + 3, len(text))):
            inside[i] = True
    cut = len(text)
    for stop in stops:
        start = text.find(stop)
        while start >= 0 and inside[start]:
            start = text.find(stop, start + 1)
        if start >= 0:
            cut = min(cut, start)
    return text[:cut]


def with_instruction(prompt: Prompt, instruction: str, chat: bool | None) -> Prompt:
    """The prompt with the agent's instruction after the system message's (or as one); in a plain-text
    prompt, as its first paragraph."""
    if not instruction:
        return prompt
    if isinstance(prompt, str) and chat is False:
        return f"{instruction}\n\n{prompt}"
    messages = [dict(m) for m in to_messages(prompt)]
    if messages[0]["role"] == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{instruction}"
    else:
        messages.insert(0, {"role": "system", "content": instruction})
    return messages


def extended(conversation: Prompt, reply: str, result: str) -> Prompt:
    """The conversation after the model's `reply` and the tool `result` fed back."""
    if isinstance(conversation, str):
        return f"{conversation}{reply}\n{result}\n"
    return [*conversation, {"role": "assistant", "content": reply}, {"role": "user", "content": result}]
