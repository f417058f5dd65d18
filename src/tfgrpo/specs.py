"""Objects named on a command line or in a config: `package.module:attr` (importable; the current folder is
searched too) or `path/to/file.py:attr`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError


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
