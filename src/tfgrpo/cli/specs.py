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
