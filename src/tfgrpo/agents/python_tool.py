"""The Python interpreter tool of the ReAct agent: one sandboxed interpreter per trajectory (the sandbox
of `tfgrpo.rewards`: its limits, no network, a private temporary directory, no files of the host), kept
alive across the trajectory's turns so the variables of one code block are there in the next.

The interpreter is a small program that reads code blocks from one pipe and answers on another (as the
unit-test reward's candidate does): each block runs in one namespace, its printed output (capped) and its
error come back as one line of JSON, and the value of a last bare expression is shown as a notebook would.
A block that runs past the timeout, or an interpreter that dies (memory, output, a crash, `os._exit`) or
writes junk on the pipe, is killed; the next block starts a fresh interpreter, and the model is told that
its variables are gone. Hostile code meets the same sandbox as the unit-test reward: it reaches neither
the reward's data nor the host."""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import select
import time
from dataclasses import replace
from typing import Any

from ..errors import SandboxError
from ..rewards.sandbox import SandboxConfig, SandboxRun
from .base import AgentConfig
from .react import ToolAgent
from .tools import Tool, ToolOutput, ToolSession, ToolUnavailable

_REQUEST_FD, _RESPONSE_FD = 3, 4
MAX_CODE_CHARS = 100_000
_START_S = 30.0
"""Longest an interpreter may take to start (the sandbox's namespaces and Python's own start)."""

_PROGRAM = r"""
import ast, io, json, os, sys, traceback
CAP = {cap}
_pid = os.getpid()
_requests = os.fdopen({request_fd}, "rb", buffering=0)

class _Capped(io.TextIOBase):
    def __init__(self):
        self.parts, self.size, self.dropped = [], 0, 0
    def writable(self):
        return True
    def write(self, text):
        text = str(text)
        room = max(0, CAP - self.size)
        self.parts.append(text[:room])
        self.size += min(len(text), room)
        self.dropped += max(0, len(text) - room)
        return len(text)
    def text(self):
        out = "".join(self.parts)
        return out + ("\n[... %d more characters of output cut ...]" % self.dropped if self.dropped else "")

def _send(message):
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write({response_fd}, data):]

_namespace = {{"__name__": "__main__", "__builtins__": __builtins__}}
_send({{"ready": True}})
for _line in iter(_requests.readline, b""):
    _request = json.loads(_line)
    _code = _request["code"]
    _out, _error = _Capped(), None
    sys.stdout = sys.stderr = _out
    try:
        _tree = ast.parse(_code, "<cell>", "exec")
        _last = _tree.body.pop() if _tree.body and isinstance(_tree.body[-1], ast.Expr) else None
        exec(compile(_tree, "<cell>", "exec"), _namespace)
        if _last is not None:
            _value = eval(compile(ast.Expression(_last.value), "<cell>", "eval"), _namespace)
            if _value is not None:
                print(repr(_value))
    except BaseException as _exc:
        _error = "".join(traceback.format_exception(type(_exc), _exc, _exc.__traceback__.tb_next))[-3000:]
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if os.getpid() != _pid:
        os._exit(0)
    _send({{"id": _request["id"], "output": _out.text(), "error": _error}})
"""


class PythonTool(Tool):
    """Run Python code in a sandboxed interpreter that keeps its variables across one trajectory's calls.
    `sandbox`: its limits (the trajectory's whole life is bounded by its `timeout_s`)."""

    name = "python"
    description = (
        "Run Python code (standard library only, no network, no files of the host) and see what it prints; "
        "variables are kept between calls. The value of a last bare expression is shown."
    )
    parameters = {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "the Python code to run"}},
        "required": ["code"],
    }

    def __init__(self, sandbox: SandboxConfig | None = None, max_output: int = 20_000) -> None:
        self.sandbox = sandbox or SandboxConfig(timeout_s=300.0, cpu_s=120)
        self.max_output = max_output

    async def open(self) -> ToolSession:
        return Interpreter(self.sandbox, self.max_output)

    async def call(self, arguments: dict[str, Any], timeout: float) -> ToolOutput:
        session = Interpreter(self.sandbox, self.max_output)
        try:
            return await session.call(arguments, timeout)
        finally:
            await session.close()


class Interpreter(ToolSession):
    """One trajectory's interpreter, started at its first call (calls run one at a time in a worker
    thread: the pipes are read with deadlines, not on the event loop). A call takes at most its timeout,
    plus the interpreter's start (at most `_START_S`) when it starts one."""

    bounded = True

    def __init__(self, sandbox: SandboxConfig, max_output: int) -> None:
        self.sandbox = sandbox
        self.max_output = max_output
        self.run: SandboxRun | None = None
        self._fds: list[int] = []
        self._buffer = b""
        self.restarts = 0

    async def call(self, arguments: dict[str, Any], timeout: float) -> ToolOutput:
        return await asyncio.to_thread(self._call, str(arguments.get("code", "")), timeout)

    async def close(self) -> None:
        await asyncio.to_thread(self._stop)

    # -- in a worker thread

    def _call(self, code: str, timeout: float) -> ToolOutput:
        if len(code) > MAX_CODE_CHARS:
            return ToolOutput(f"the code is {len(code)} characters long; at most {MAX_CODE_CHARS} run", True)
        restarted = self.run is None and self.restarts > 0
        if self.run is None:
            self._start()
        deadline = time.monotonic() + timeout
        # Each block's answer carries the block's own random id: a line the code forged, or an earlier
        # block's answer left behind by one, is passed over, so no block can answer for a later one.
        block = secrets.token_hex(8)
        try:
            self._write(json.dumps({"id": block, "code": code}).encode() + b"\n", deadline)
            line = self._answer(block, deadline)
        except TimeoutError:
            return self._lost(f"the code ran longer than {timeout:g} s and was stopped")
        except EOFError:
            return self._lost(f"the interpreter stopped ({self._ending()})")
        except ValueError as junk:
            return self._lost(f"the interpreter answered junk ({junk})")
        try:
            answer = json.loads(line)
            output, error = str(answer["output"]), answer["error"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return self._lost(f"the interpreter answered junk: {line[:200]!r}")
        note = "(the interpreter was restarted before this code: earlier variables are gone)\n" if restarted else ""
        if error is not None:
            return ToolOutput(f"{note}{output}{str(error)}".strip(), True)
        return ToolOutput(f"{note}{output}".rstrip() or "(no output)")

    def _start(self) -> None:
        request_r, request_w = os.pipe()
        response_r, response_w = os.pipe()
        program = _PROGRAM.format(cap=self.max_output, request_fd=_REQUEST_FD, response_fd=_RESPONSE_FD)
        config = self.sandbox
        if config.cpu_s is None:
            config = replace(config, cpu_s=math.ceil(config.timeout_s))
        try:
            self.run = SandboxRun(program, config, pass_fds=(request_r, response_w))
        except BaseException as exc:
            os.close(request_w)
            os.close(response_r)
            if isinstance(exc, SandboxError):
                raise ToolUnavailable(f"the Python sandbox cannot start: {exc}") from None
            raise
        finally:
            os.close(request_r)  # the program's ends: it holds them now
            os.close(response_w)
        self._fds = [request_w, response_r]
        os.set_blocking(request_w, False)
        self._buffer = b""
        try:
            ready = json.loads(self._read_line(time.monotonic() + _START_S))
            if ready != {"ready": True}:
                raise ValueError(ready)
        except (TimeoutError, EOFError, ValueError, RecursionError):
            ending = self._ending()
            self._stop()
            raise ToolUnavailable(f"the Python interpreter did not start ({ending})") from None

    def _answer(self, block: str, deadline: float) -> str:
        """The first line that answers `block` (others are passed over; a line that is no JSON is junk)."""
        while True:
            line = self._read_line(deadline)
            try:
                answer = json.loads(line)
            except (ValueError, RecursionError):
                return line
            if not isinstance(answer, dict) or answer.get("id") == block:
                return line

    def _write(self, data: bytes, deadline: float) -> None:
        fd = self._fds[0]
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            _, writable, _ = select.select([], [fd], [], left)
            if writable:
                try:
                    data = data[os.write(fd, data) :]
                except BrokenPipeError:
                    raise EOFError from None

    def _read_line(self, deadline: float) -> str:
        fd = self._fds[1]
        most = 4 * self.max_output + 65536
        while b"\n" not in self._buffer:
            if len(self._buffer) > most:
                raise ValueError(f"a line of more than {most} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace")

    def _ending(self) -> str:
        """How the interpreter's program ended (it is stopped first if it has not)."""
        if self.run is None:
            return "not running"
        try:
            return self.run.finish(wait_s=1.0).reason
        except SandboxError as error:
            return str(error)

    def _lost(self, why: str) -> ToolOutput:
        self._stop()
        self.restarts += 1
        return ToolOutput(f"{why}; the interpreter is restarted at the next call, so its variables are gone", True)

    def _stop(self) -> None:
        run, self.run = self.run, None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        if run is not None:
            run.__exit__(None, None, None)


def react_python(
    config: AgentConfig = AgentConfig(), sandbox: SandboxConfig | None = None, allow_unsandboxed: bool = False
) -> ToolAgent:
    """The paper's agent: ReAct with a Python interpreter (`--agent react-python`). The interpreter's
    sandbox lives as long as a trajectory may (`config.trajectory_timeout`, at most 120 s of CPU) unless
    `sandbox` says otherwise; `allow_unsandboxed` as for the unit-test reward (`--allow-unsandboxed`)."""
    if sandbox is None:
        timeout = config.trajectory_timeout
        cpu = max(1, min(120, math.ceil(timeout)))
        sandbox = SandboxConfig(timeout_s=timeout, cpu_s=cpu, allow_unsandboxed=allow_unsandboxed)
    tool = PythonTool(sandbox, max_output=max(4 * config.max_tool_output, 10_000))
    return ToolAgent([tool], config, name="react-python")
