"""`tfgrpo mcp`: a library as an MCP server (stdio or streamable HTTP), so a coding agent or an IDE asks
for the lessons and the experiences relevant to its task and posts a reward for what it did.

Tools: `context(task, k)` (the experiences and lessons `tfgrpo serve` would inject, and the prompt they
make), `lessons()`, `record(task, response, reward, trajectory?)`, `stats()`. What is recorded goes the
way of `tfgrpo serve`'s feedback, through the same objects: `ServedLibrary` (its records, committed to the
library's SQLite file before `record` answers; groups of `group_size` rewarded records of one task; its
learner, which commits each group through `ExampleUpdate` in order), so a restart loses nothing and
learns the groups formed before it. Each MCP session has its own counts and its own rate limit; every
argument is checked against `MCPLimits` before anything is stored."""

import asyncio
import json
import math
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import StrictFloat, StrictInt

from ..agents.trajectory import TOOL_CHARS, Message, Trajectory
from ..core.advantages import MAX_REWARD_MAGNITUDE
from ..core.experience import check_text
from ..core.knobs import check_knobs, knob
from ..errors import ConfigError, TFGRPOError
from ..prompting import build_prompt
from . import records
from .config import ProxyConfig
from .metrics import ProxyMetrics
from .served import ServedLibrary


@dataclass(frozen=True)
class MCPLimits:
    """What one `tfgrpo mcp` call may carry, and how often a session may record."""

    max_task_chars: int = knob(20_000, "longest task text (context, record)", minimum=1)
    max_response_chars: int = knob(100_000, "longest response text (record)", minimum=1)
    max_trajectory_bytes: int = knob(1_000_000, "largest trajectory (record), as JSON", minimum=1)
    max_k: int = knob(20, "most experiences one context call may ask for", minimum=1)
    records_per_minute: int = knob(120, "records one MCP session may post per minute", minimum=1)
    max_sessions: int = knob(10_000, "MCP sessions whose counts are kept (the least recent go first)", minimum=1)

    def __post_init__(self) -> None:
        check_knobs(self)


class Session:
    """One MCP session's state: its counts and its rate bucket."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.stamp = time.monotonic()
        self.records = 0
        self.contexts = 0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate / 60)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class LibraryService:
    """The tools' logic over one served library (no MCP in here, so it is testable as it is)."""

    def __init__(self, path: str | Path, config: ProxyConfig = ProxyConfig(), limits: MCPLimits = MCPLimits()) -> None:
        if not str(path).endswith((".db", ".sqlite", ".sqlite3")):
            raise ConfigError(f"tfgrpo mcp keeps its records in the library file, which must be SQLite (.db): {path}")
        self.path = Path(path)
        self.config = replace(config, shots=max(config.shots, limits.max_k))
        self.k = config.shots
        self.limits = limits
        self.sessions: dict[str, Session] = {}
        self.lib: ServedLibrary | None = None

    async def start(self) -> None:
        self.lib = ServedLibrary(self.path.stem, self.path, self.config, ProxyMetrics())
        await self.lib.start()

    async def close(self) -> None:
        if self.lib is not None:
            await self.lib.close()
            self.lib = None

    def session(self, key: str) -> Session:
        state = self.sessions.pop(key, None)  # (re-inserted: the dict's order is least recent first)
        if state is None:
            state = Session(self.limits.records_per_minute)
            if len(self.sessions) >= self.limits.max_sessions:
                del self.sessions[next(iter(self.sessions))]
        self.sessions[key] = state
        return state

    def _library(self) -> ServedLibrary:
        if self.lib is None:
            raise ConfigError("the library is not open (the server is starting or stopping)")
        return self.lib

    async def context(self, session: str, task: str, k: int | None = None) -> dict[str, Any]:
        """The experiences (most relevant first, at most k) and lessons for `task`, and the prompt they make."""
        self._text(task, "task", self.limits.max_task_chars)
        k = self.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.limits.max_k:
            raise ConfigError(f"k must be a whole number from 0 to {self.limits.max_k}, got {k!r}")
        lib = self._library()
        examples, lessons, template = await lib.ainject(task)
        examples = examples[:k]
        self.session(session).contexts += 1
        return {
            "prompt": build_prompt(task, examples, template, chat=False, contrast=self.config.contrast),
            "experiences": [
                {"id": e.id, "prompt": e.prompt, "response": e.response, "advantage": e.advantage} for e in examples
            ],
            "lessons": [{"id": i, "text": t} for i, t in lessons.items()],
            "lesson_version": lib.lessons.version,
        }

    async def lessons(self) -> dict[str, Any]:
        lib = self._library()
        return {
            "version": lib.lessons.version,
            "lessons": [{"id": i, "text": t} for i, t in lib.lessons.lessons.items()],
            "rendered": lib.lessons.render(),
        }

    async def record(
        self, session: str, task: str, response: str, reward: float, trajectory: Any = None
    ) -> dict[str, Any]:
        """Record what an agent did for `task` and its reward, committed before the answer; a record that
        completes a group (the `group_size`-th rewarded record of the task) is answered once the group is
        learned."""
        self._text(task, "task", self.limits.max_task_chars)
        self._text(response, "response", self.limits.max_response_chars)
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise ConfigError(f"reward must be a finite number, got {reward!r:.50}")
        if abs(reward) > MAX_REWARD_MAGNITUDE:
            raise ConfigError(
                f"reward {reward!r:.50} is too large to learn from (at most {MAX_REWARD_MAGNITUDE:g} either way)"
            )
        run = self._trajectory(trajectory, response)
        state = self.session(session)
        if not state.take():
            raise ConfigError(f"this session records more than {self.limits.records_per_minute} a minute; slow down")
        lib = self._library()
        cid = f"mcp-{uuid.uuid4().hex}"
        info: dict[str, Any] = {"library": lib.name, "via": "mcp"}
        text = response
        if run is not None:
            info["trajectory"] = run.figures()
            text = run.transcript(TOOL_CHARS)
        sent = records.Sent(task, lib.name) if lib.config.rollout_log else None
        await asyncio.wrap_future(lib.records.add(records.Completion(cid, task, [text], info=info, sent=sent)))
        result = await asyncio.wrap_future(lib.records.feedback(cid, {0: float(reward)}))
        for seq in result.groups:
            await lib.wait_learned(seq)
        state.records += 1
        return {"id": cid, "recorded": result.recorded, "groups": list(result.groups)}

    async def stats(self, session: str) -> dict[str, Any]:
        state = self.session(session)
        return {**self._library().stats(), "session": {"records": state.records, "contexts": state.contexts}}

    def _trajectory(self, value: Any, response: str) -> Trajectory | None:
        """A client's trajectory (a list of {"role", "content"} messages, or {"messages": [...]}) checked,
        with `response` as its final answer; None when none was given."""
        if value is None:
            return None
        size = len(json.dumps(value, default=str))
        if size > self.limits.max_trajectory_bytes:
            raise ConfigError(f"the trajectory is {size} bytes as JSON; at most {self.limits.max_trajectory_bytes}")
        from .openai_api import find_lone_surrogate  # here: openai_api loads fastapi, which `tfgrpo --help` needs not

        where = find_lone_surrogate(value)
        if where is not None:
            raise ConfigError(f"trajectory: {where} holds a lone surrogate, which UTF-8 cannot encode")
        messages = value.get("messages") if isinstance(value, dict) else value
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ("assistant", "tool") and isinstance(m.get("content", ""), str)
            for m in messages
        ):
            raise ConfigError(
                'trajectory: a list of {"role": "assistant" | "tool", "content": str, ...} messages '
                '(or {"messages": [...]})'
            )
        try:
            run = Trajectory([Message.from_dict(m) for m in messages], response)
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"trajectory: a message cannot be read ({error})") from None
        run.messages.append(Message("assistant", response))
        return run

    @staticmethod
    def _text(value: Any, name: str, most: int) -> None:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty string")
        if len(value) > most:
            raise ConfigError(f"{name} is {len(value)} characters long; at most {most}")
        check_text(value, name, ConfigError)


def build_server(service: LibraryService) -> Any:
    """The MCP server (the `mcp` package's MCPServer) whose tools call `service`."""
    try:
        from mcp.server.mcpserver import Context, MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError as error:
        raise ConfigError(f"tfgrpo mcp needs the mcp package ({error}): pip install 'tfgrpo[agents]'") from None

    server = MCPServer(
        "tfgrpo",
        instructions="Ask `context` for what the library learned about your task before you work on it; "
        "`record` what you did and how well it went (a reward) afterwards, so the library learns.",
    )

    def session_of(ctx: Context) -> str:
        """The session a call belongs to: over stdio, the one connection; over HTTP, the client's
        `mcp-session-id` (clients of the stateless protocol share one state)."""
        if ctx.headers is None:
            return "stdio"
        return str(ctx.headers.get("mcp-session-id") or "http")

    async def answer(call: Any) -> dict[str, Any]:
        try:
            return await call
        except TFGRPOError as error:  # bad arguments, limits: the client is told why, nothing was stored
            raise ToolError(str(error)) from None

    @server.tool()
    async def context(task: str, ctx: Context, k: StrictInt | None = None) -> dict[str, Any]:
        """The experiences (worked examples that scored well) and lessons the library holds for a task, most
        relevant first, and the prompt they make with the task.

        Args:
            task: the task, as it would be asked
            k: most experiences to return (default: the server's --shots)
        """
        return await answer(service.context(session_of(ctx), task, k))

    @server.tool()
    async def lessons() -> dict[str, Any]:
        """The library's lessons (its current version): short rules learned from what scored well and badly."""
        return await answer(service.lessons())

    @server.tool()
    async def record(
        task: str, response: str, reward: StrictInt | StrictFloat, ctx: Context, trajectory: Any = None
    ) -> dict[str, Any]:
        # (Strict: the SDK would turn true, "1" or " 1e2 " into a number before the service could refuse it)
        """Record what was done for a task and how well it went, so the library learns from it: records of one
        task form a group once enough are rewarded, and the better ones become experiences.

        Args:
            task: the task, as it was asked
            response: the final answer or result
            reward: how good it was (higher is better; e.g. 1 passed, 0 failed)
            trajectory: optional, the run: a list of {"role": "assistant" | "tool", "content": ...} messages
        """
        return await answer(service.record(session_of(ctx), task, response, reward, trajectory))

    @server.tool()
    async def stats(ctx: Context) -> dict[str, Any]:
        """The library's figures (experiences, lessons, records, groups learned) and this session's."""
        return await answer(service.stats(session_of(ctx)))

    return server


async def run_server(service: LibraryService, http: tuple[str, int] | None = None) -> None:
    """Open the library, serve MCP over stdio (or streamable HTTP on `http`), close the library."""
    server = build_server(service)
    await service.start()
    try:
        if http is None:
            await server.run_stdio_async()
        else:
            await server.run_streamable_http_async(host=http[0], port=http[1])
    finally:
        await service.close()
