"""The one store interface every persistence backend implements.

A store may be shared by many processes. The store, not the process, decides: every change is one
write transaction that first hands the writer what the others committed since it last looked (read
under the write lock, so what the writer decides next, ids, counters, what to prune, is decided on
exactly the stored library), and each committed change gets the next number of the store's change
sequence, so that readers can follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from ..experience import Experience


@dataclass
class LibraryState:
    """What a store holds: the config (None when never saved), counters, the experiences (with their
    ids, in id order), the progress marker, and where the change sequence stands."""

    config: dict | None = None
    counters: dict[str, int] = field(default_factory=dict)
    experiences: list[Experience] = field(default_factory=list)
    progress: dict | None = None
    seq: int = 0
    """The number of the last change this state includes."""
    next_id: int = 1
    """The id the next stored experience gets."""


@dataclass
class Changes:
    """What other processes committed after a given change number, up to `seq`."""

    seq: int
    counters: dict[str, int]
    progress: dict | None
    next_id: int
    ops: list[tuple[str, int | None]] = field(default_factory=list)
    """("add" | "remove" | "metadata", experience id), ("config" | "counters", None), in commit order."""
    rows: dict[int, Experience] = field(default_factory=dict)
    """The stored rows of experiences added or re-tagged (those still there), by id."""
    config: dict | None = None
    """The stored config, when it changed."""
    reload: LibraryState | None = None
    """Everything, when the change feed cannot say what changed (the library was replaced, or the
    reader is further behind than the feed keeps): the reader starts over from it."""


class StoreTransaction(Protocol):
    """One write transaction of a store, open while the library decides what it writes."""

    changes: Changes | None
    """What other processes committed since the writer last looked (None: nothing)."""
    next_id: int
    """The first free experience id."""
    seq: int
    """After the transaction committed: the number of its last change."""

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


class Store(Protocol):
    """Write-through persistence. `write` is one atomic transaction: it commits entirely or raises
    `StoreError` having changed nothing."""

    def load(self) -> LibraryState: ...

    def changes_since(self, seq: int) -> Changes | None:
        """What was committed after change `seq` (None: nothing; costs one indexed read then)."""

    def write(self, seq: int) -> AbstractContextManager[StoreTransaction]:
        """A write transaction for a writer that has seen every change up to `seq`."""

    def close(self) -> None: ...
