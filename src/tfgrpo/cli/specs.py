"""Your own reward and task from the command line: `module:name` or `path/to/file.py:name`."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError

BUILTIN_REWARDS = ("numeric", "exact", "math", "regex:PATTERN", "unittest", "compiler")
REWARD_SHAPES = (
    "a Reward instance or subclass (built with no arguments), or a function (prompt, response, sample) -> float"
)


def load_object(spec: str, flag: str, shape: str) -> Any:
    """The object `spec` names: `package.module:attr` (importable; the current folder is searched
    too) or `path/to/file.py:attr`. A wrong spec is a ConfigError that names what was not found."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"{flag} {spec!r}: expected module:name or path/to/file.py:name, naming {shape}")
    if target.endswith(".py"):
        module = _load_file(Path(target), flag, spec)
    else:
        module = _import(target, flag, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
            raise ConfigError(
                f"{flag} {spec!r}: {target} has no attribute {attr!r} (it has: {', '.join(public) or 'nothing'}); "
                f"expected {shape}"
            )
        obj = getattr(obj, part)
    return obj


def _load_file(path: Path, flag: str, spec: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{flag} {spec!r}: no file {path}")
    name = f"tfgrpo_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{flag} {spec!r}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"{flag} {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import(target: str, flag: str, spec: str) -> Any:
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, "")  # as `python -m` does: modules next to where the command runs
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise ConfigError(
                f"{flag} {spec!r}: no module named {exc.name!r} (is it on PYTHONPATH, or in the current folder? "
                f"a file path must end in .py)"
            ) from None
        raise ConfigError(f"{flag} {spec!r}: importing {target} failed: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"{flag} {spec!r}: importing {target} failed: {type(exc).__name__}: {exc}") from exc


def make_reward(spec: str, allow_unsandboxed: bool = False):
    """A bundled reward by name, or your own by `module:name` / `file.py:name`. `allow_unsandboxed`:
    the unit-test reward runs code even where the sandbox cannot isolate it (`--allow-unsandboxed`)."""
    from .. import rewards

    kind, _, arg = spec.partition(":")
    simple = {
        "numeric": rewards.NumericMatchReward,
        "exact": rewards.ExactMatchReward,
        "math": rewards.MathReward,
        "unittest": rewards.UnitTestReward,
        "compiler": rewards.CompilerReward,
    }
    if kind == "regex" and arg:
        return rewards.RegexReward(arg)
    if kind == "unittest" and not arg:
        return rewards.UnitTestReward(sandbox=rewards.SandboxConfig(allow_unsandboxed=allow_unsandboxed))
    if kind in simple and not arg:
        return simple[kind]()
    if ":" not in spec:
        raise ConfigError(
            f"unknown reward {spec!r}; use one of {', '.join(BUILTIN_REWARDS)}, or your own as "
            f"module:name or path/to/file.py:name ({REWARD_SHAPES})"
        )
    return as_reward(load_object(spec, "--reward", REWARD_SHAPES), spec)


def as_reward(obj: Any, spec: str):
    """`obj` as a `Reward`: an instance as it is, a subclass built with no arguments, a callable wrapped."""
    from ..rewards import FunctionReward, Reward

    if isinstance(obj, Reward):
        return obj
    if inspect.isclass(obj):
        if not issubclass(obj, Reward):
            raise ConfigError(
                f"--reward {spec!r}: class {obj.__name__} is no tfgrpo.rewards.Reward; expected {REWARD_SHAPES}"
            )
        try:
            return obj()
        except TypeError as exc:
            raise ConfigError(f"--reward {spec!r}: {obj.__name__}() failed ({exc}); give a class that needs no "
                              "arguments, or an instance") from None  # fmt: skip
    if not callable(obj):
        raise ConfigError(f"--reward {spec!r} is a {type(obj).__name__}, not callable; expected {REWARD_SHAPES}")
    _check_arity(obj, spec)
    return FunctionReward(obj, name=spec.rpartition(":")[2])


def _check_arity(fn: Any, spec: str) -> None:
    try:
        inspect.signature(fn).bind("prompt", "response", {})
    except TypeError:
        raise ConfigError(
            f"--reward {spec!r}: {getattr(fn, '__name__', fn)!r} cannot be called as (prompt, response, sample); "
            f"expected {REWARD_SHAPES}"
        ) from None
    except ValueError:  # no signature (some builtins): let the first call tell
        pass


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
