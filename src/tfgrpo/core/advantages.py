"""Group-relative advantages: how much better each rollout did than its group."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from ..errors import InvalidRolloutsError

MAX_REWARD_MAGNITUDE = 1e150
"""The largest reward magnitude a service takes from a client: a group of such rewards always adds up
and subtracts without overflow (a finite 1e308 does not), so what it accepts it can learn."""


def check_rewards(rewards: Sequence[float]) -> list[float]:
    """Rewards as floats, or `InvalidRolloutsError` naming the first bad one."""
    if all(type(r) is float and -math.inf < r < math.inf for r in rewards):
        return list(rewards)  # the common case, checked cheaply (NaN fails every comparison)
    values = []
    for i, reward in enumerate(rewards):
        # numbers.Real admits numpy scalars (np.int64, np.float32); an int too large for a float is refused.
        try:
            ok = not isinstance(reward, bool) and isinstance(reward, numbers.Real) and math.isfinite(reward)
        except OverflowError:
            ok = False
        if not ok:
            raise InvalidRolloutsError(f"reward {i} is {reward!r:.80}: every reward must be a finite number")
        values.append(float(reward))
    return values


def compute_advantages(rewards: Sequence[float], scale_by_std: bool = False) -> list[float]:
    """advantage_i = reward_i - mean(rewards), optionally divided by the group's standard deviation.

    A group whose rewards are all equal carries no signal: every advantage is 0.
    """
    values = check_rewards(rewards)
    if len(values) < 2:
        raise InvalidRolloutsError(f"a group needs at least 2 rollouts to compare, got {len(values)}")
    if min(values) == max(values):
        return [0.0] * len(values)  # exactly: a rounded mean could leave a spurious tiny advantage
    try:
        mean = math.fsum(values) / len(values)
    except OverflowError:
        raise InvalidRolloutsError("rewards are too large to add up (their sum overflowed); rescale them") from None
    advantages = [r - mean for r in values]
    if scale_by_std:
        # Sample standard deviation plus a small epsilon, as gradient GRPO implementations do.
        std = math.sqrt(math.fsum(a * a for a in advantages) / (len(values) - 1))
        advantages = [a / (std + 1e-4) if std > 0 else 0.0 for a in advantages]
    if not all(math.isfinite(a) for a in advantages):
        raise InvalidRolloutsError("rewards are too large to subtract (advantage overflowed); rescale them")
    return advantages
