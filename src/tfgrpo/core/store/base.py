"""The one store interface every persistence backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..experience import Experience


@dataclass
class LibraryState:
    """What a store holds: the config (None when never saved), counters, and the experiences."""

    config: dict | None = None
    counters: dict[str, int] = field(default_factory=dict)
    experiences: list[Experience] = field(default_factory=list)
    progress: dict | None = None


class Store(Protocol):
    """Write-through persistence. Every method is one atomic transaction: it happens entirely or
    raises `StoreError` having changed nothing."""

    def load(self) -> LibraryState: ...

    def commit(
        self,
        added: Sequence[Experience],
        removed: Sequence[Experience],
        counters: dict[str, int],
        progress: dict | None = None,
    ) -> None:
        """Record one library update: experiences added (with their ids) and removed, new counters,
        and the caller's progress marker (None: leave it as it is)."""

    def replace(self, experiences: Sequence[Experience], counters: dict[str, int]) -> None:
        """Replace everything stored by these experiences and counters."""

    def save_config(self, config: dict) -> None: ...

    def update_metadata(self, experience: Experience) -> None: ...

    def close(self) -> None: ...
