"""The one reward interface: `reward(prompt, response, sample) -> float`, with a reason, in batches,
or awaited.

Every reward has a documented range, `value_range` ([0, 1] unless a reward says otherwise; None for
any finite number). One rule for values that do not fit: a score that is not a real number, is NaN or
infinite, or lies outside the range is an error (`RewardError`), never clamped or passed on. It is
checked on every `score` and `ascore` of every reward, built-in or not, so a reward function that
returns 501 cannot be learned from.

Policy on failures: `score()` and `__call__` raise (`RewardError` for a value that breaks the rule
above or a sample that lacks what the reward needs; whatever the reward function raised otherwise).
`score_batch()` and `ascore_batch()` never raise for one bad item: that item scores the bottom of the
range (0.0 by default) and its `reason` says what happened, so a training loop goes on.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import RewardError

Item = tuple[str, str, dict]
"""(prompt, response, sample): what a reward looks at."""


@dataclass(frozen=True)
class Score:
    """A reward value (a finite float) and why it is what it is."""

    value: float
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RewardError(f"a reward must be a real number, got {value!r} ({type(value).__name__})")
        if not math.isfinite(value):
            raise RewardError(f"a reward must be finite, got {value!r}; return 0.0 with a reason instead")
        object.__setattr__(self, "value", float(value))


def to_score(result: float | Score) -> Score:
    """A reward function's result (a number or a `Score`) as a validated `Score`."""
    return result if isinstance(result, Score) else Score(result)


def failed_score(error: BaseException, value: float = 0.0) -> Score:
    """The score (0.0, or the bottom of the reward's range) that stands in for a reward that raised."""
    return Score(
        value, reason=f"reward raised {type(error).__name__}: {error}", details={"error": type(error).__name__}
    )


ValueRange = tuple[float, float] | None


def in_range(result: float | Score, value_range: ValueRange, name: str) -> Score:
    """`result` as a validated `Score`, or a `RewardError` when it is outside `value_range`."""
    score = to_score(result)
    if value_range is not None and not value_range[0] <= score.value <= value_range[1]:
        low, high = value_range
        raise RewardError(
            f"{name} gave {score.value!r}, outside its range [{low:g}, {high:g}]; a reward must stay in its "
            "documented range (give the bottom of it, with a reason, for a failure)"
        )
    return score


def _name(reward: Reward) -> str:
    return repr(reward) if type(reward).__repr__ is not object.__repr__ else type(reward).__name__


def _checked(score: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(score)
    def checked(self: Reward, prompt: str, response: str, sample: dict) -> Score:
        return in_range(score(self, prompt, response, sample), self.value_range, _name(self))

    return checked


def _checked_async(ascore: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(ascore)
    async def checked(self: Reward, prompt: str, response: str, sample: dict) -> Score:
        return in_range(await ascore(self, prompt, response, sample), self.value_range, _name(self))

    return checked


class Reward(ABC):
    """Scores a response to a prompt; `sample` is the dataset row (reference answer, tests, ...)."""

    value_range: ValueRange = (0.0, 1.0)
    """The lowest and highest value this reward gives (None: any finite number). `score` and `ascore`
    raise `RewardError` for a value outside it, in every subclass."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, wrap in (("score", _checked), ("ascore", _checked_async)):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "__isabstractmethod__", False):
                setattr(cls, name, wrap(method))

    max_workers: int | None = None
    """Default thread count of `score_batch` (None: the thread pool's default; 1: run in the calling
    thread, one item after another)."""

    @abstractmethod
    def score(self, prompt: str, response: str, sample: dict) -> Score:
        """The score of one response, with a reason."""

    def __call__(self, prompt: str, response: str, sample: dict) -> float:
        return self.score(prompt, response, sample).value

    def score_batch(self, items: Sequence[Item], max_workers: int | None = None) -> list[Score]:
        """Scores of many items, in order; an item whose reward raises scores 0.0 with the reason."""
        workers = max_workers if max_workers is not None else self.max_workers
        if workers == 1 or len(items) <= 1:
            return [self._safe_score(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfgrpo-reward") as pool:
            return list(pool.map(self._safe_score, items))

    async def ascore(self, prompt: str, response: str, sample: dict) -> Score:
        """`score` without blocking the event loop (runs in a worker thread unless overridden)."""
        return await asyncio.to_thread(self.score, prompt, response, sample)

    async def ascore_batch(self, items: Sequence[Item]) -> list[Score]:
        """`score_batch` for async code: items scored concurrently, failures scored 0.0."""

        async def one(item: Item) -> Score:
            try:
                return await self.ascore(*item)
            except Exception as error:
                return failed_score(error, self._floor())

        return list(await asyncio.gather(*(one(item) for item in items)))

    def _safe_score(self, item: Item) -> Score:
        try:
            return self.score(*item)
        except Exception as error:
            return failed_score(error, self._floor())

    def _floor(self) -> float:
        return 0.0 if self.value_range is None else self.value_range[0]


RewardFunction = Callable[[str, str, dict], "float | Score | Awaitable[float | Score]"]


class FunctionReward(Reward):
    """A reward from any callable `(prompt, response, sample) -> float | Score`, sync or async. Its
    values must lie in `value_range` ([0, 1] unless given; None for any finite number)."""

    def __init__(self, fn: RewardFunction, name: str | None = None, value_range: ValueRange = (0.0, 1.0)) -> None:
        if not callable(fn):
            raise RewardError(f"FunctionReward needs a callable, got {fn!r}")
        numbers_ok = (
            isinstance(value_range, tuple | list)
            and len(value_range) == 2
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value_range)
        )
        if value_range is not None and not (numbers_ok and value_range[0] <= value_range[1]):
            raise RewardError(f"value_range must be (low, high) with finite low <= high, or None; got {value_range!r}")
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)

    def __repr__(self) -> str:
        return f"FunctionReward({self.name})"

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        result = self.fn(prompt, response, sample)
        if inspect.isawaitable(result):
            result = asyncio.run(_wait_for(result))
        return to_score(result)

    async def ascore(self, prompt: str, response: str, sample: dict) -> Score:
        if self.is_async:
            result = self.fn(prompt, response, sample)
            if inspect.isawaitable(result):
                result = await result
            return to_score(result)
        return await super().ascore(prompt, response, sample)


async def _wait_for(awaitable: Awaitable[float | Score]) -> float | Score:
    return await awaitable
