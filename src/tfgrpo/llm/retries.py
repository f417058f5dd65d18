"""The retry loop of our aiohttp clients: the `OpenAIBackend` of training and the upstream of `tfgrpo serve`.

An attempt returns its result, raises `TryAgain` for an answer worth another try, or raises anything
else to stop at once. Timeouts and connection failures are tried again too; each caller decides which
statuses are worth another try and what error to raise once the tries run out.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class TryAgain(Exception):
    """An answer worth another try (a 5xx, a 429): its status, its message, and the wait the server asked
    for (`Retry-After`), if any."""

    def __init__(self, status: int, message: str, wait: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.wait = status, message, wait


@dataclass(frozen=True)
class Backoff:
    """The wait before retry k (from 0): `first * 2**k` seconds up to `cap`, times a random factor in
    `jitter`; or the server's own wait when it asked for one. Never more than `max_wait`."""

    first: float
    cap: float
    jitter: tuple[float, float] = (0.5, 1.0)
    max_wait: float = math.inf

    def delay(self, retry: int, asked: float | None = None) -> float:
        if asked is None:
            asked = min(self.cap, self.first * 2**retry) * random.uniform(*self.jitter)
        return min(asked, self.max_wait)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    retries: int,
    backoff: Backoff,
    give_up: Callable[[Exception, int], Exception],
    on_retry: Callable[[], object] = lambda: None,
) -> T:
    """`attempt()`'s result, tried up to `retries` more times after a `TryAgain`, a timeout or a connection
    failure, with `on_retry()` and a `backoff` wait before each retry. When the tries run out,
    `give_up(last failure, tries)` is raised from that failure. Cancellation goes straight through."""
    import aiohttp  # an optional extra: its callers have it

    for retry in range(retries + 1):
        try:
            return await attempt()
        except (TryAgain, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if retry == retries:
                raise give_up(exc, retry + 1) from exc
            on_retry()
            await asyncio.sleep(backoff.delay(retry, exc.wait if isinstance(exc, TryAgain) else None))
    raise AssertionError("unreachable: the last try returns or raises")
