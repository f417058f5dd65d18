"""The library's retrieval hooks: an index attached to a library is told of every change and answers the
relevance modes of `get_experiences_for_prompt`. `tfgrpo.retrieval.Retriever` implements it, and the
package `tfgrpo` registers it as the default (the core never imports the retrieval layer)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..errors import ConfigError
from .experience import Experience
from .store.base import Store

MODES = ("lexical", "semantic", "hybrid")
"""The relevance modes an index answers (the library itself answers "prefix")."""


class IndexedLibrary(Protocol):
    """What an index reads of the library it is attached to."""

    @property
    def experience_library(self) -> Sequence[Experience]: ...

    @property
    def store(self) -> Store | None: ...


class ExperienceIndex(Protocol):
    """An index kept in step with one library."""

    def attach(self, library: IndexedLibrary) -> None:
        """Index the library's current contents (the library then reports every change)."""

    def add(self, exp: Experience) -> None: ...

    def add_many(self, experiences: Iterable[Experience]) -> None: ...

    def remove(self, exp: Experience) -> None: ...

    def clear(self) -> None: ...

    def search(self, *args: Any, **kwargs: Any) -> Any:
        """`search(prompt, k, *, mode, where, **options)`: the experiences most relevant to `prompt`."""


_default_index: Callable[..., ExperienceIndex] | None = None


def register_default_index(factory: Callable[..., ExperienceIndex]) -> None:
    """The index `enable_retrieval()` builds when given none (`factory(embedder, **options)`)."""
    global _default_index
    _default_index = factory


def default_index(embedder: Any = None, **options: Any) -> ExperienceIndex:
    if _default_index is None:
        raise ConfigError("no retrieval index is registered (importing tfgrpo registers tfgrpo.retrieval's)")
    return _default_index(embedder, **options)
