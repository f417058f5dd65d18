"""The tools of any MCP server (the `mcp` package): a command run as a subprocess and spoken to over
stdio, or a streamable-HTTP URL. One connection per agent, held by a task of its own on the agent's loop
(an MCP session is entered and left in one task); a server that dies is noticed, the trajectory that was
calling it ends ("tool_unavailable"), and the next trajectory connects again."""

from __future__ import annotations

import asyncio
import json
import shlex
from typing import Any

from ..errors import ConfigError
from .base import AgentConfig, AgentContext
from .react import ToolAgent
from .tools import Tool, ToolOutput, ToolUnavailable
from .trajectory import Trajectory, failed

CONNECTION_CLOSED = -32000
"""The JSON-RPC error code of a call whose connection closed (`mcp_types.CONNECTION_CLOSED`)."""
CONNECT_S = 30.0
"""Longest a connection (a server's start, its handshake, its tool list) may take."""


class MCPConnection:
    """A connection to one MCP server: `target` is a URL (streamable HTTP) or a command line (stdio)."""

    def __init__(self, target: str) -> None:
        target = target.strip()
        if not target:
            raise ConfigError("an MCP agent needs a server: mcp:COMMAND ARGS or mcp:http://host:port/mcp")
        self.target = target
        self.is_url = target.startswith(("http://", "https://"))
        self.argv = [] if self.is_url else shlex.split(target)
        self._client: Any = None
        self._holder: asyncio.Task | None = None
        self._closing: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None

    def _server(self) -> Any:
        try:
            from mcp import StdioServerParameters
        except ImportError as error:
            raise ConfigError(f"MCP tools need the mcp package ({error}): pip install 'tfgrpo[agents]'") from None
        if self.is_url:
            return self.target
        return StdioServerParameters(command=self.argv[0], args=self.argv[1:])

    @property
    def alive(self) -> bool:
        return self._client is not None and self._holder is not None and not self._holder.done()

    async def tools(self) -> list[MCPTool]:
        """The server's tools (connecting first, or again when the last connection died)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self.alive:
                await self._connect()
            try:
                listed = await asyncio.wait_for(self._client.list_tools(), CONNECT_S)
            except Exception as error:
                raise ToolUnavailable(f"the MCP server {self.target!r} did not list its tools: {error}") from None
        tools = []
        for tool in listed.tools:
            schema = tool.input_schema if isinstance(tool.input_schema, dict) else {"type": "object"}
            tools.append(MCPTool(self, tool.name, tool.description or "", schema))
        return tools

    async def _connect(self) -> None:
        from mcp import Client

        await self._drop()
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._closing = asyncio.Event()
        closing = self._closing

        async def hold() -> None:
            try:
                async with Client(self._server(), read_timeout_seconds=CONNECT_S) as client:
                    ready.set_result(client)
                    await closing.wait()
            except BaseException as error:  # the server died, or never came up
                if not ready.done():
                    ready.set_exception(error)
                if isinstance(error, asyncio.CancelledError):
                    raise

        self._holder = asyncio.ensure_future(hold())
        try:
            self._client = await asyncio.wait_for(asyncio.shield(ready), CONNECT_S)
        except Exception as error:
            await self._drop()
            raise ToolUnavailable(f"cannot connect to the MCP server {self.target!r}: {_message(error)}") from None

    async def call(self, name: str, arguments: dict[str, Any], timeout: float) -> ToolOutput:
        if not self.alive:
            raise ToolUnavailable(f"the MCP server {self.target!r} is gone")
        try:
            result = await self._client.call_tool(name, arguments, read_timeout_seconds=timeout)
        except Exception as error:
            await asyncio.sleep(0)  # let the holder notice a dead connection first
            if not self.alive or getattr(error, "code", None) == CONNECTION_CLOSED:
                await self._drop()  # the next trajectory connects again
                raise ToolUnavailable(f"the MCP server {self.target!r} went away: {_message(error)}") from None
            return ToolOutput(f"the MCP server failed the call: {_message(error)}", True)
        return _output(result)

    async def _drop(self) -> None:
        holder, self._holder, self._client = self._holder, None, None
        if self._closing is not None:
            self._closing.set()
        if holder is not None and not holder.done():
            try:
                await asyncio.wait_for(holder, 10)
            except BaseException:  # noqa: BLE001 - a connection that fails to close is dropped anyway
                holder.cancel()

    async def close(self) -> None:
        await self._drop()


def _output(result: Any) -> ToolOutput:
    """A `CallToolResult` as text: its text parts, other parts named, structured content as JSON."""
    parts = []
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", None)
        if kind == "text":
            parts.append(str(item.text))
        else:
            parts.append(f"[{kind or type(item).__name__} content]")
    structured = getattr(result, "structured_content", None)
    if not parts and structured is not None:
        parts.append(json.dumps(structured, ensure_ascii=False, default=str))
    return ToolOutput("\n".join(parts) or "(no content)", bool(getattr(result, "is_error", False)))


def _message(error: BaseException) -> str:
    inner = getattr(error, "exceptions", None)  # an exception group (anyio's task groups raise them)
    if isinstance(inner, tuple) and inner:
        return "; ".join(_message(e) for e in inner)
    return f"{type(error).__name__}: {str(error)[:300]}"


class MCPTool(Tool):
    bounded = True  # the MCP client bounds each call (read_timeout_seconds)

    def __init__(self, connection: MCPConnection, name: str, description: str, parameters: dict[str, Any]) -> None:
        self.connection = connection
        self.name = name
        self.description = description
        self.parameters = parameters

    async def call(self, arguments: dict[str, Any], timeout: float) -> ToolOutput:
        return await self.connection.call(self.name, arguments, timeout)


class MCPAgent(ToolAgent):
    """ReAct over the tools of one MCP server (listed when the agent first runs, and again after the
    server was lost)."""

    def __init__(self, target: str, config: AgentConfig = AgentConfig()) -> None:
        self.connection = MCPConnection(target)
        self.tools: dict[str, Tool] = {}
        self.config = config
        self.name = "mcp"
        self.instruction = None

    async def run(self, sample: dict, context: AgentContext) -> Trajectory:
        if not self.connection.alive or not self.tools:
            try:
                tools = await self.connection.tools()
            except ToolUnavailable as error:
                return failed("tool_unavailable", str(error))
            if not tools:
                return failed("tool_unavailable", f"the MCP server {self.connection.target!r} offers no tools")
            self.tools = {t.name: t for t in tools}
        return await super().run(sample, context)

    async def aclose(self) -> None:
        await self.connection.close()
