"""Tools an agent calls: one interface (`Tool`: a name, a description, a JSON schema of its arguments, and
a session per trajectory whose `call` answers), your Python functions as tools (`FunctionTool`: the schema
from the signature and the docstring), and the `Toolbox` one trajectory calls them through, where every
fault (an unknown tool, arguments that do not fit, a tool that raises, hangs or answers megabytes) becomes
an error result the model is shown, and a tool that is gone for good ends the trajectory."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.experience import clean_text
from ..errors import ConfigError, TFGRPOError
from .trajectory import cut


@dataclass(frozen=True)
class ToolOutput:
    """What a tool answered: its text (lone surrogates made U+FFFD, as model output is: a tool's text goes
    back into the model's next prompt), and whether that is an error."""

    content: str
    error: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.content, str):
            object.__setattr__(self, "content", clean_text(self.content))


class ToolUnavailable(TFGRPOError):
    """A tool that cannot answer any more (its server died, its sandbox cannot start): the trajectory
    ends with the reason ("tool_unavailable")."""


class ToolSession:
    """A tool's state for one trajectory (the Python interpreter's variables). Stateless tools are their
    own session. `bounded`: the session stops a call itself once its timeout has passed (the interpreter
    kills its program), so the toolbox does not cut it short (a call cut short from outside would leave
    its worker thread running into the next one)."""

    bounded = False

    async def call(self, arguments: dict[str, Any], timeout: float) -> ToolOutput:
        raise NotImplementedError

    async def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release the session's state."""


class Tool(ToolSession):
    """A tool: `name`, `description`, `parameters` (JSON schema of an object). `open()` gives a
    trajectory its session (by default the tool itself: no state between calls)."""

    name: str = "tool"
    description: str = ""
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    async def open(self) -> ToolSession:
        return self

    def spec(self) -> dict[str, Any]:
        """The OpenAI function definition (native tool calls)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def signature(self) -> str:
        """One line for the text protocol's list of tools: name(arguments): description."""
        properties = self.parameters.get("properties") or {}
        required = set(self.parameters.get("required") or ())
        args = ", ".join(
            f"{name}: {(schema or {}).get('type', 'any')}" + ("" if name in required else " (optional)")
            for name, schema in properties.items()
        )
        return f"{self.name}({args}): {self.description}".strip()


class Toolbox:
    """The tools of one trajectory: each tool's session opened at its first call, all closed at the end."""

    def __init__(self, tools: dict[str, Tool], timeout: float, max_output: int) -> None:
        self.tools = tools
        self.timeout = timeout
        self.max_output = max_output
        self._sessions: dict[str, ToolSession] = {}

    async def call(self, name: str, arguments: dict[str, Any] | str) -> ToolOutput:
        """The tool's answer, cut to `max_output` characters with a marker; an error result for an unknown
        tool, arguments that are no JSON object or break the schema, a tool that raised or timed out.
        Raises `ToolUnavailable` for a tool that cannot answer any more."""
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return ToolOutput(f"there is no tool named {name[:100]!r}; the tools are: {known}", True)
        if not isinstance(arguments, dict):
            return ToolOutput(f"the arguments of {name} must be a JSON object, got: {str(arguments)[:300]}", True)
        problem = check_arguments(arguments, tool.parameters)
        if problem:
            return ToolOutput(f"bad arguments for {name}: {problem}", True)
        try:
            session = self._sessions.get(name)
            if session is None:
                session = self._sessions[name] = await tool.open()
            if session.bounded:
                output = await session.call(arguments, self.timeout)
            else:
                output = await asyncio.wait_for(session.call(arguments, self.timeout), self.timeout)
        except ToolUnavailable:
            raise
        except asyncio.TimeoutError:
            return ToolOutput(f"{name} did not answer within {self.timeout:g} s", True)
        except Exception as error:  # the tool's own fault: the model is told, the trajectory goes on
            return ToolOutput(f"{name} raised {type(error).__name__}: {str(error)[:1000]}", True)
        if not isinstance(output, ToolOutput):
            output = ToolOutput(as_text(output))
        return ToolOutput(cut(output.content, self.max_output), output.error)

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            if session not in self.tools.values():
                try:
                    await session.close()
                except Exception:  # a session that fails to close must not lose the trajectory
                    pass

    async def __aenter__(self) -> Toolbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def as_text(value: Any) -> str:
    """A tool's result as the text the model reads."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


_JSON_TYPES: dict[str, Any] = {
    "integer": int,
    "number": (int, float),
    "string": str,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def check_arguments(arguments: dict[str, Any], schema: dict[str, Any]) -> str:
    """What is wrong with `arguments` for an object `schema` (its required names, its properties' types,
    no unknown names unless `additionalProperties` allows them); "" when nothing is."""
    properties = schema.get("properties") or {}
    missing = [name for name in schema.get("required") or () if name not in arguments]
    if missing:
        return f"missing {', '.join(missing)}"
    if schema.get("additionalProperties", False) is False and properties:
        unknown = [name for name in arguments if name not in properties]
        if unknown:
            return f"unknown argument {', '.join(repr(u[:50]) for u in unknown)} (known: {', '.join(properties)})"
    for name, value in arguments.items():
        kind = (properties.get(name) or {}).get("type")
        expected = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
        if expected is None:
            continue
        if isinstance(value, bool) and kind in ("integer", "number") or not isinstance(value, expected):
            return f"{name} must be {kind}, got {json.dumps(value, default=str)[:100]}"
    return ""


class FunctionTool(Tool):
    """A Python function (sync or async) as a tool. Its schema comes from the signature (annotations:
    int, float, str, bool, list, dict and their Optional forms) and its docstring (the first paragraph
    describes the tool; a Google-style `Args:` section describes each argument). A sync function runs in
    a worker thread: one that hangs is abandoned after the timeout, not stopped."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"a tool must be a function, got {fn!r:.100}")
        self.fn = fn
        self.name = str(name or getattr(fn, "__name__", "tool"))
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name):
            raise ConfigError(f"a tool's name must be 1-64 letters, digits, _ or -; got {self.name!r}")
        self.description, self.parameters = schema_of(fn)
        self.is_async = inspect.iscoroutinefunction(fn)

    async def call(self, arguments: dict[str, Any], timeout: float) -> ToolOutput:
        if self.is_async:
            result = await self.fn(**arguments)
        else:
            result = await asyncio.to_thread(self.fn, **arguments)
        return ToolOutput(as_text(result))


def schema_of(fn: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """(description, JSON schema of the arguments) of a function, from its signature and docstring."""
    doc = inspect.getdoc(fn) or ""
    description = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    described = _documented_args(doc)
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError) as error:
        raise ConfigError(f"cannot read the signature of {fn!r:.100}: {error}") from None
    properties: dict[str, Any] = {}
    required = []
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ConfigError(f"{fn.__name__}: positional-only argument {name} cannot be passed by name")
        prop: dict[str, Any] = {}
        kind = _json_type(hints.get(name))
        if kind:
            prop["type"] = kind
        if name in described:
            prop["description"] = described[name]
        properties[name] = prop
        if parameter.default is parameter.empty:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        schema["additionalProperties"] = True
    return description, schema


def _json_type(annotation: Any) -> str | None:
    if annotation is None:
        return None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation) or annotation
    return {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object"}.get(origin)


def _documented_args(doc: str) -> dict[str, str]:
    """name -> description from a Google-style `Args:` section."""
    found: dict[str, str] = {}
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n((?:[ \t]+.*\n?)+)", doc, re.MULTILINE)
    if not section:
        return found
    current = None
    for line in section.group(1).splitlines():
        match = re.match(r"\s+(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if match and (current is None or len(line) - len(line.lstrip()) <= _indent_of(section.group(1))):
            current = match.group(1).lstrip("*")
            found[current] = match.group(2).strip()
        elif current is not None and line.strip():
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found


def _indent_of(block: str) -> int:
    first = next((line for line in block.splitlines() if line.strip()), "")
    return len(first) - len(first.lstrip())
