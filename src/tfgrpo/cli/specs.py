"""Your own task from the command line: `module:name` or `path/to/file.py:name`."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from ..specs import load_object


def load_task_spec(spec: str, options: dict[str, Any], allow_unsandboxed: bool = False):
    """A bundled task by name, or your own factory by `module:name` / `file.py:name`, called with
    the --task-option values; it must return a `tfgrpo.tasks.Task`. `allow_unsandboxed` reaches a
    bundled task that runs generated code (humaneval) as its sandbox's setting."""
    from ..rewards import SandboxConfig
    from ..tasks import Task, get_task

    if ":" not in spec:
        if allow_unsandboxed and spec == "humaneval":
            options = {**options, "sandbox": SandboxConfig(allow_unsandboxed=True)}
        return get_task(spec, **options)
    shape = "a function returning a tfgrpo.tasks.Task (called with the --task-option values), or a Task"
    obj = load_object(spec, "--task", shape)
    if isinstance(obj, Task):
        if options:
            raise ConfigError(f"--task {spec!r} is a Task, which takes no --task-option; name a factory instead")
        return obj
    if not callable(obj):
        raise ConfigError(f"--task {spec!r} is a {type(obj).__name__}; expected {shape}")
    try:
        inspect.signature(obj).bind(**options)
    except TypeError as exc:
        raise ConfigError(f"--task {spec!r} cannot take {options or 'no options'} ({exc}); expected {shape}") from None
    except ValueError:  # no signature: let the call tell
        pass
    task = obj(**options)
    if not isinstance(task, Task):
        raise ConfigError(f"--task {spec!r} returned a {type(task).__name__}; expected {shape}")
    return task


AGENT_SPECS = "react-python, tools:module:function,..., mcp:COMMAND ARGS, mcp:URL, or module:factory"


def make_agent(spec: str, config, allow_unsandboxed: bool = False):
    """The agent `--agent SPEC` names: `react-python` (ReAct with a sandboxed Python interpreter),
    `tools:module:f,g` or `tools:path.py:f,g` (your functions as tools), `mcp:COMMAND ARGS` or
    `mcp:http://host:port/mcp` (an MCP server's tools), or `module:factory` / `path.py:factory` (your own
    agent object: the factory is called with `config=` when it takes it, else with nothing)."""
    from ..agents import FunctionTool, MCPAgent, ToolAgent, as_agent, react_python

    if spec == "react-python":
        return react_python(config, allow_unsandboxed=allow_unsandboxed)
    kind, _, rest = spec.partition(":")
    if kind == "mcp":
        return MCPAgent(rest, config)
    if kind == "tools":
        target, sep, names = rest.rpartition(":")
        if not sep or not target or not names:
            raise ConfigError(f"--agent {spec!r}: expected tools:module:function,... (or tools:file.py:function,...)")
        tools = [
            FunctionTool(load_object(f"{target}:{name.strip()}", "--agent", "a function to use as a tool"))
            for name in names.split(",")
            if name.strip()
        ]
        return ToolAgent(tools, config, name="tools")
    factory = load_object(spec, "--agent", f"an agent factory; --agent takes {AGENT_SPECS}")
    if not callable(factory):
        raise ConfigError(f"--agent {spec!r}: {factory!r:.80} is not callable; name a factory that returns an agent")
    takes_config = "config" in inspect.signature(factory).parameters
    agent = factory(config=config) if takes_config else factory()
    return as_agent(agent, config)
