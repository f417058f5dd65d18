"""A reward by name, as `--reward` takes it: a bundled one (`numeric`, `exact`, `math`, `regex:PATTERN`,
`unittest`, `compiler`) or your own by `module:name` / `path/to/file.py:name`."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from ..specs import load_object
from .base import FunctionReward, Reward

BUILTIN_REWARDS = ("numeric", "exact", "math", "regex:PATTERN", "unittest", "compiler")
REWARD_SHAPES = (
    "a Reward instance or subclass (built with no arguments), or a function (prompt, response, sample) -> float"
)


def get_reward(spec: str, allow_unsandboxed: bool = False) -> Reward:
    """A bundled reward by name, or your own by `module:name` / `file.py:name`. `allow_unsandboxed`:
    the unit-test reward runs code even where the sandbox cannot isolate it (`--allow-unsandboxed`)."""
    from . import CompilerReward, ExactMatchReward, MathReward, NumericMatchReward, RegexReward, UnitTestReward
    from .sandbox import SandboxConfig

    kind, _, arg = spec.partition(":")
    simple = {
        "numeric": NumericMatchReward,
        "exact": ExactMatchReward,
        "math": MathReward,
        "unittest": UnitTestReward,
        "compiler": CompilerReward,
    }
    if kind == "regex" and arg:
        return RegexReward(arg)
    if kind == "unittest" and not arg:
        return UnitTestReward(sandbox=SandboxConfig(allow_unsandboxed=allow_unsandboxed))
    if kind in simple and not arg:
        return simple[kind]()
    if ":" not in spec:
        raise ConfigError(
            f"unknown reward {spec!r}; use one of {', '.join(BUILTIN_REWARDS)}, or your own as "
            f"module:name or path/to/file.py:name ({REWARD_SHAPES})"
        )
    return as_reward(load_object(spec, "--reward", REWARD_SHAPES), spec)


def as_reward(obj: Any, spec: str) -> Reward:
    """`obj` as a `Reward`: an instance as it is, a subclass built with no arguments, a callable wrapped."""
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
