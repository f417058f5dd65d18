"""`GRPOConfig`: every knob of the experience library, with the spec's defaults and ranges."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError, TFGRPOWarning

EvictionPolicy = Literal["lowest_advantage", "oldest", "balanced"]


@dataclass(frozen=True)
class GRPOConfig:
    """Configuration of a `TrainingFreeGRPO` library.

    Values that cannot work raise `ConfigError`; values that work but lie outside the recommended
    range (shown in brackets) emit a `TFGRPOWarning`.
    """

    group_size: int = 8
    """Rollouts generated per prompt by the training loop [4, 32]. Larger groups give better
    advantage estimates at proportionally higher generation cost."""
    max_library_size: int = 10_000
    """Most experiences kept [1000, 1000000]; when full, `eviction_policy` picks what goes."""
    max_experience_age: int = 604_800
    """Seconds an experience stays before it is pruned as stale [3600, 2592000] (one week)."""
    min_advantage_threshold: float = 0.0
    """A rollout is stored only when its advantage is strictly above this [-1.0, 1.0]."""
    sampling_temperature: float = 1.0
    """T in P(exp) proportional to exp(advantage / T) [0.1, 2.0]; lower favours the best."""
    use_advantage_weighting: bool = True
    """Weight sampling by advantage; when False every experience is equally likely."""
    scale_advantages_by_std: bool = False
    """Also divide advantages by the group's standard deviation, as gradient GRPO does."""
    eviction_policy: EvictionPolicy = "lowest_advantage"
    """Which experiences go when the library is over capacity: the lowest advantages (ties: the
    oldest first), the oldest ones, or "balanced": the lowest advantage among the experiences of the
    `eviction_key` value that holds the most (so every domain keeps its share)."""
    eviction_key: str = "domain"
    """With `eviction_policy="balanced"`: the metadata key whose values share the library (experiences
    without it count as one more value)."""

    @classmethod
    def default(cls) -> GRPOConfig:
        return cls()

    def __post_init__(self) -> None:
        _check_int(self, "group_size", minimum=1, recommended=(4, 32))
        _check_int(self, "max_library_size", minimum=1, recommended=(1000, 1_000_000))
        _check_int(self, "max_experience_age", minimum=1, recommended=(3600, 2_592_000))
        _check_float(self, "min_advantage_threshold", recommended=(-1.0, 1.0))
        _check_float(self, "sampling_temperature", recommended=(0.1, 2.0), positive=True)
        for name in ("use_advantage_weighting", "scale_advantages_by_std"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"GRPOConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.eviction_policy not in ("lowest_advantage", "oldest", "balanced"):
            raise ConfigError(
                "GRPOConfig.eviction_policy must be 'lowest_advantage', 'oldest' or 'balanced', "
                f"got {self.eviction_policy!r}"
            )
        if not isinstance(self.eviction_key, str) or not self.eviction_key:
            raise ConfigError(
                f"GRPOConfig.eviction_key must be a metadata key (non-empty text), got {self.eviction_key!r}"
            )

    def replace(self, **changes) -> GRPOConfig:
        """A copy with some fields changed (validated like a new config)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"GRPOConfig has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> GRPOConfig:
        """Build from a dict, ignoring keys this version does not know (files from newer versions)."""
        if not isinstance(data, dict):
            raise ConfigError(f"GRPOConfig.from_dict needs a dict of field values, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _warn_outside(name: str, value: float, recommended: tuple[float, float]) -> None:
    low, high = recommended
    if not low <= value <= high:
        warnings.warn(
            f"GRPOConfig.{name}={value} is outside the recommended range [{low}, {high}]",
            TFGRPOWarning,
            stacklevel=4,
        )


def _check_int(cfg: GRPOConfig, name: str, minimum: int, recommended: tuple[int, int]) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"GRPOConfig.{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"GRPOConfig.{name} must be >= {minimum}, got {value}")
    _warn_outside(name, value, recommended)


def _check_float(cfg: GRPOConfig, name: str, recommended: tuple[float, float], positive: bool = False) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"GRPOConfig.{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"GRPOConfig.{name} must be > 0, got {value}")
    object.__setattr__(cfg, name, float(value))
    _warn_outside(name, value, recommended)
