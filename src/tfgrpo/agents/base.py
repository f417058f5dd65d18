"""The `Agent` interface (`async run(sample, context) -> Trajectory`), what an agent is given
(`AgentContext`: the policy, the prompt that prompting built with the library's examples and lessons, the
sampling of each turn), its knobs (`AgentConfig`), and how many trajectories are run at once on one
private event loop, each ending with a reason whatever its agent does (raises, hangs, returns junk)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..core.experience import clean_text
from ..core.knobs import check_knobs, knob
from ..errors import BackendError, ConfigError
from ..llm.base import Backend, Generation, GenerationParams, Prompt
from .trajectory import Message, ToolCall, Trajectory, failed

TOOL_CALL_MODES = ("auto", "text", "native")


@dataclass(frozen=True)
class AgentConfig:
    """How an agent's trajectories are bounded. `--max-tokens` bounds each model turn."""

    max_turns: int = knob(5, "most model turns in one trajectory (agents)", minimum=1)
    tool_timeout: float = knob(10.0, "seconds one tool call may take (agents)", minimum=0.001)
    tool_calls: str = knob(
        "auto",
        "how the model calls tools (agents): text (fenced blocks in its reply, results fed back as the next "
        "message), native (OpenAI tool calls), auto (native when the backend declares them)",
        choices=TOOL_CALL_MODES,
    )
    max_tool_output: int = knob(
        2000, "most characters of one tool result fed back to the model (cut in the middle, marked)", minimum=50
    )
    max_tool_errors: int = knob(3, "tool errors that end a trajectory (agents)", minimum=1)
    max_tool_calls: int = knob(
        16, "most tool calls run from one model turn; each one past it is answered as an error (agents)", minimum=1
    )
    trajectory_timeout: float = knob(300.0, "seconds one whole trajectory may take (agents)", minimum=0.001)

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class AgentContext:
    """What an agent is given for one trajectory. `prompt` is the prompt every rollout gets (the task's
    instruction, the library's lessons and examples, the query), built by `tfgrpo.prompting`; `params`
    is the sampling of each model turn (n = 1, this trajectory's own seed, no stop strings); `stop` are
    the task's stop strings, which cut a final answer only outside code blocks."""

    backend: Backend
    prompt: Prompt
    params: GenerationParams
    chat: bool | None = None
    stop: tuple[str, ...] = ()

    async def generate(self, prompt: Prompt, **changes: Any) -> Generation:
        """One model turn for `prompt` (the sampling of `params`, with `changes`)."""
        params = self.params.replace(**changes) if changes else self.params
        return (await self.backend.agenerate(prompt, params, chat=self.chat))[0]


class Agent:
    """An agent: `run` one trajectory for a sample. Subclass it, or give any object with an async
    `run(sample, context)` method (`as_agent` wraps it); `aclose` releases what it holds (tool servers).
    `config` bounds its trajectories (the whole run's time here; turns and tools in the agents that have
    them)."""

    name = "agent"
    config: AgentConfig = AgentConfig()

    async def run(self, sample: dict, context: AgentContext) -> Trajectory:
        raise NotImplementedError

    async def aclose(self) -> None:  # noqa: B027 (an optional hook)
        """Release what the agent holds; runs on the agent's loop."""

    # -- running many trajectories (from synchronous code: a training step, an evaluation)

    def run_many(self, jobs: Sequence[tuple[dict, AgentContext]], concurrency: int = 16) -> list[Trajectory]:
        """A trajectory per (sample, context), at most `concurrency` at once, in order. Never raises for
        one trajectory: an agent that raises, hangs past `trajectory_timeout` or returns something that
        is no trajectory gives one that ended with the reason (no answer). But when the model failed
        every one of them (`model_error`: its backend down or refusing every request after its
        retries), a `BackendError`, as a plain rollout's backend raises: scoring them all 0 would have
        a training step commit what never ran."""
        semaphore: asyncio.Semaphore | None = None

        async def one(sample: dict, context: AgentContext) -> Trajectory:
            nonlocal semaphore
            semaphore = semaphore or asyncio.Semaphore(concurrency)
            async with semaphore:
                return await self.guarded(sample, context)

        async def all_of() -> list[Trajectory]:
            return list(await asyncio.gather(*(one(s, c) for s, c in jobs)))

        trajectories = self._loop().run(all_of())
        if trajectories and all(t.ended == "model_error" for t in trajectories):
            raise BackendError(
                f"the model failed all {len(trajectories)} trajectories; the first: {trajectories[0].detail}"
            )
        return trajectories

    async def guarded(self, sample: dict, context: AgentContext) -> Trajectory:
        """`run` with its limits and faults turned into reasons, its output checked and cleaned."""
        started = time.perf_counter()
        limit = self.config.trajectory_timeout
        try:
            result = await asyncio.wait_for(self.run(sample, context), limit)
        except asyncio.TimeoutError:
            result = failed("timeout", f"the trajectory took longer than {limit:g} s")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the agent's own fault: this trajectory ends, the others go on
            result = failed("agent_error", f"{type(error).__name__}: {str(error)[:500]}")
        trajectory = checked(result)
        if not trajectory.seconds:
            trajectory.seconds = time.perf_counter() - started
        return trajectory

    def close(self) -> None:
        """Release the agent's tools and its loop. Safe to call twice."""
        loop = self.__dict__.get("_agent_loop")
        if loop is not None:
            try:
                loop.run(self.aclose())
            finally:
                loop.stop()
                del self.__dict__["_agent_loop"]

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> _LoopThread:
        if "_agent_loop" not in self.__dict__:
            self.__dict__["_agent_loop"] = _LoopThread(self.name)
        return self.__dict__["_agent_loop"]


def checked(result: Any) -> Trajectory:
    """An agent's result as a trajectory: a `Trajectory` (its text cleaned of lone surrogates), a plain
    string (its final answer, one turn), or an `agent_error` one for anything else."""
    if isinstance(result, str):
        text = clean_text(result)
        return Trajectory([Message("assistant", text)], text)
    if not isinstance(result, Trajectory):
        return failed("agent_error", f"the agent returned {type(result).__name__}, not a Trajectory or a string")
    messages = []
    for m in result.messages:
        if not isinstance(m, Message) or m.role not in ("assistant", "tool"):
            return failed("agent_error", f"the agent's trajectory holds {m!r:.100}, not an assistant or tool Message")
        calls = tuple(replace(c, name=clean_text(str(c.name))) for c in m.tool_calls if isinstance(c, ToolCall))
        messages.append(replace(m, content=clean_text(str(m.content)), tool_calls=calls))
    answer = None if result.answer is None else clean_text(str(result.answer))
    return replace(result, messages=messages, answer=answer)


class FunctionAgent(Agent):
    """Any object with an async `run(sample, context)` (an agent of another framework, wrapped by your
    factory), as an `Agent`."""

    def __init__(self, target: Any, name: str | None = None, config: AgentConfig | None = None) -> None:
        run = getattr(target, "run", None)
        if run is None or not inspect.iscoroutinefunction(run):
            raise ConfigError(
                f"{target!r:.100} is no agent: it needs an async method run(sample, context) returning a "
                "tfgrpo.agents.Trajectory (or the final answer as a string)"
            )
        self.target = target
        self.name = str(name or getattr(target, "name", None) or type(target).__name__)
        self.config = config or getattr(target, "config", None) or AgentConfig()
        if not isinstance(self.config, AgentConfig):
            self.config = AgentConfig()

    async def run(self, sample: dict, context: AgentContext) -> Trajectory:
        return await self.target.run(sample, context)

    async def aclose(self) -> None:
        close = getattr(self.target, "aclose", None)
        if close is not None and inspect.iscoroutinefunction(close):
            await close()


def as_agent(target: Any, config: AgentConfig | None = None) -> Agent:
    """`target` as an `Agent` (an `Agent` as it is, with `config` when given)."""
    if isinstance(target, Agent):
        if config is not None:
            target.config = config
        return target
    return FunctionAgent(target, config=config)


class _LoopThread:
    """A private event loop in a daemon thread: an agent's trajectories and its tool connections (an MCP
    session lives on the loop that opened it) run here, whoever calls."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"tfgrpo-agent-{name}", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine) -> Any:
        if threading.current_thread() is self.thread:
            coro.close()
            raise ConfigError("an agent's run_many was called from inside its own loop; await guarded() instead")
        future: concurrent.futures.Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
