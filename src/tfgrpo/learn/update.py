"""The interface of an update strategy: how one step's scored groups change a library. A training step,
`tfgrpo serve`'s online learning and every later way in call `commit`; adding a strategy means writing one
more class with this interface (`ExampleUpdate` and `LessonUpdate` are the two to follow)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..llm.base import Backend
from ..llm.cache import LLMCache
from .group import Group
from .rollouts import Rollouts


@dataclass(frozen=True)
class StepContext:
    """What an update strategy is told about the step it commits."""

    seed: int
    """The step's seed (everything a strategy draws at random draws from it)."""
    global_step: int
    position: dict[str, Any]
    """Saved with the change, so a resumed run knows where it stopped."""
    rollouts: Rollouts | None = None
    """How the step's groups were rolled out, for strategies that roll out again (validation); None when
    the groups came from elsewhere (a client's feedback)."""
    cache: LLMCache | None = None
    """The run's LLM cache, for the models a strategy calls itself."""
    expect: Callable[[dict | None], bool] | None = None
    """A test the library's stored progress must pass when the change commits, else nothing is changed and
    `ConflictError` is raised (several processes learning one library's groups: each is learned once)."""


class Update:
    """The interface of an update strategy."""

    name = ""

    def check(self, group_size: int) -> None:
        """Refuse a run this strategy cannot learn from (ConfigError)."""

    def prompt_condition(self) -> dict[str, Any]:
        """What this strategy's library puts into the policy's prompt (`rollout_batch` keywords)."""
        return {}

    def backends(self) -> list[Backend]:
        """Models this strategy calls itself (their usage counts in the step's)."""
        return []

    def done(self) -> int:
        """The last global step this strategy committed (0: none)."""
        return 0

    def stored_run(self) -> dict | None:
        """The run identity saved with the last commit (see `train`'s resume check)."""
        return None

    def progress(self) -> dict | None:
        """The position saved with its library's last commit (what `done` and `stored_run` read; other ways
        in, such as `learn-from-log`, keep theirs beside it)."""
        return None

    def commit(self, groups: list[Group], ctx: StepContext) -> dict[str, Any]:
        """Change the library from the step's groups; return the figures for the step's metrics."""
        raise NotImplementedError
