"""Config dataclasses are the one source of every knob: each field is declared with `knob(...)`, which
records its help text and its allowed values, so validation, the CLI's flags and config files all
read the same declaration (as TRL's `HfArgumentParser` reads dataclass metadata)."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

_MISSING = dataclasses.MISSING

MAX_RUN_SEED = 2**31 - 1
"""The largest seed of a run (train, eval, continual): seeds derived from it stay within what servers take as a
request's `seed` (`server.limits.MAX_SEED`, any 64-bit integer)."""


def knob(
    default: Any = _MISSING,
    help: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[Any] | None = None,
    flag: str | None = None,
    cli: bool = True,
    needs: str | None = None,
    default_factory: Any = _MISSING,
) -> Any:
    """A dataclass field with its help and range. `flag` overrides the CLI flag name (default:
    `--field-name`); `cli=False` keeps the field out of the command line (set from Python only); `needs`:
    the field that must be set off its default for this one to matter (its flag alone is refused)."""
    metadata = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "choices": tuple(choices) if choices is not None else None,
        "flag": flag,
        "cli": cli,
        "needs": needs,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_knobs(config: Any) -> None:
    """Validate every `knob` field of a dataclass instance against its declared type and range;
    raises `ConfigError` naming the field. Whole numbers given as floats stay errors; ints given for
    floats are accepted and converted."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(config):
        if "help" not in f.metadata:
            continue
        value = getattr(config, f.name)
        name = f"{cls.__name__}.{f.name}"
        kind = hints.get(f.name)
        value = _check_type(name, value, kind)
        object.__setattr__(config, f.name, value)
        meta = f.metadata
        if value is None:
            continue
        for item in value if isinstance(value, tuple) else (value,):  # a tuple's range is its items'
            if meta["choices"] is not None and item not in meta["choices"]:
                allowed = ", ".join(repr(c) for c in meta["choices"])
                raise ConfigError(f"{name} must be one of {allowed}, got {item!r}")
            if meta["minimum"] is not None and item < meta["minimum"]:
                raise ConfigError(f"{name} must be >= {meta['minimum']}, got {item!r}")
            if meta["maximum"] is not None and item > meta["maximum"]:
                raise ConfigError(f"{name} must be <= {meta['maximum']}, got {item!r}")


def _check_type(name: str, value: Any, kind: Any) -> Any:
    args = typing.get_args(kind)
    optional = type(None) in args
    if optional and value is None:
        return None
    base = next((a for a in args if a is not type(None)), kind) if optional else kind
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    elif base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be text, got {value!r}")
    elif typing.get_args(base) == (int, Ellipsis):
        if not isinstance(value, (tuple, list)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ConfigError(f"{name} must be a list of whole numbers, e.g. (0, 1, 2), got {value!r}")
        return tuple(value)
    return value


def knob_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config class declared with `knob`, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def replace_known(config: Any, changes: dict[str, Any]) -> Any:
    """A copy of `config` with `changes`, refusing names the class does not have."""
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"{type(config).__name__} has no field {', '.join(unknown)}")
    return dataclasses.replace(config, **changes)
