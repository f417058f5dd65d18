"""The one executor interface: it hands out a `Backend` and a `Reward` that the rollouts use as they are
(`learn.rollouts.rollout_batch` does not know where they run). `LocalExecutor` runs both in this
process; `RayExecutor` (`ray_executor.py`) runs local model replicas as Ray actors and rewards as Ray
tasks. Only the driver (this process) ever writes a library: a worker gets prompts and rollouts, and
gives back generations and scores."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..llm.base import Backend
from ..rewards.base import Reward
from .config import ExecutorConfig

BackendSpec = str | Callable[[], Backend]
"""A backend spec of `tfgrpo.llm.get_backend` ("local", "local:PATH", "openai:MODEL@URL"), or a function
that makes a `Backend` (picklable, to make one in each replica)."""


def is_local_model(spec: BackendSpec) -> bool:
    """Whether `spec` makes a model in the process that holds it (what replicas are for); an HTTP
    backend's server scales by itself."""
    return callable(spec) or spec == "local" or spec.startswith("local:")


def make_backend(spec: BackendSpec, **kwargs: Any) -> Backend:
    """The backend of a spec, made here."""
    from ..llm import get_backend

    return spec() if callable(spec) else get_backend(spec, **kwargs)


class Executor(ABC):
    """Where work runs. Use as a context manager: closing it releases what it started (replicas, a Ray
    started for the run)."""

    config: ExecutorConfig

    @abstractmethod
    def backend(self, spec: BackendSpec, *, concurrency: int | None = None) -> Backend:
        """The policy for `spec`; `concurrency` bounds an HTTP backend's requests in flight."""

    @abstractmethod
    def reward(self, reward: Reward) -> Reward:
        """`reward`, scored where this executor runs work; the same scores, in the same order."""

    def in_flight(self) -> dict[str, int]:
        """Work running or queued now, per worker ("replica 0", "rewards", ...)."""
        return {}

    def close(self) -> None:  # noqa: B027 (an optional hook: nothing to release by default)
        """Release what the executor started. Safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Everything in this process, as without an executor."""

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()

    def backend(self, spec: BackendSpec, *, concurrency: int | None = None) -> Backend:
        kwargs = {"concurrency": concurrency} if concurrency and not is_local_model(spec) else {}
        return make_backend(spec, **kwargs)

    def reward(self, reward: Reward) -> Reward:
        return reward
