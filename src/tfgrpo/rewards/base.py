"""The one reward interface: `reward(prompt, response, sample) -> float`, with a reason, in batches,
or awaited.

Policy on failures: `score()` and `__call__` raise (`RewardError` for a non-finite value or a sample
that lacks what the reward needs; whatever the reward function raised otherwise). `score_batch()` and
`ascore_batch()` never raise for one bad item: that item scores 0.0 and its `reason` says what
happened, so a training loop goes on.
"""

from __future__ import annotations

import asyncio
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


def failed_score(error: BaseException) -> Score:
    """The 0.0 score that stands in for a reward that raised."""
    return Score(0.0, reason=f"reward raised {type(error).__name__}: {error}", details={"error": type(error).__name__})


class Reward(ABC):
    """Scores a response to a prompt; `sample` is the dataset row (reference answer, tests, ...)."""

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
                return failed_score(error)

        return list(await asyncio.gather(*(one(item) for item in items)))

    def _safe_score(self, item: Item) -> Score:
        try:
            return self.score(*item)
        except Exception as error:
            return failed_score(error)


RewardFunction = Callable[[str, str, dict], "float | Score | Awaitable[float | Score]"]


class FunctionReward(Reward):
    """A reward from any callable `(prompt, response, sample) -> float | Score`, sync or async."""

    def __init__(self, fn: RewardFunction, name: str | None = None) -> None:
        if not callable(fn):
            raise RewardError(f"FunctionReward needs a callable, got {fn!r}")
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
            return to_score(await self.fn(prompt, response, sample))
        return await super().ascore(prompt, response, sample)


async def _wait_for(awaitable: Awaitable[float | Score]) -> float | Score:
    return await awaitable
