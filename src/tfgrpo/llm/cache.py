"""A content-keyed cache of LLM calls, so a killed run resumes without paying for the same call twice.

The key is a SHA-256 of (model, prompt, sampling parameters including the seed, chat mode, namespace);
the value is the list of generations. `CachedBackend` wraps any `Backend`: hits are answered from the
table, misses go to the backend in one `generate` call and are stored as soon as they return. Its
`usage` is the wrapped backend's, so cache hits cost (and count) nothing; `hits` and `misses` say how
the cache did.

Storage: the table `lesson_llm_cache` in an SQLite file (WAL), e.g. the run's .db file, or in a
PostgreSQL database (a `postgresql://` URL), which processes on several machines may share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.experience import clean_text, json_text
from ..core.store import connect_db
from ..core.store.sql import is_postgres_url, upsert
from ..errors import StoreError
from .base import AssistantTurn, Backend, Generation, GenerationParams, Prompt, Usage, check_prompts

_SCHEMA = """CREATE TABLE IF NOT EXISTS lesson_llm_cache (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created {real} NOT NULL
)"""
_COLUMNS = "key, model, request, response, created"
_PUT = upsert("lesson_llm_cache", tuple(_COLUMNS.split(", ")), ("key",))


def _key(request: str) -> str:
    # "surrogatepass": the same key as plain UTF-8 for all text, and no error for a lone surrogate.
    return hashlib.sha256(request.encode("utf-8", "surrogatepass")).hexdigest()


def _request_json(model: str, prompt: Prompt, params: GenerationParams, chat: bool | None, namespace: str) -> str:
    return json.dumps(
        {"model": model, "prompt": prompt, "params": dataclasses.asdict(params), "chat": chat, "ns": namespace},
        sort_keys=True,
        ensure_ascii=False,
    )


class LLMCache:
    """The table of cached calls, in an SQLite file, a `postgresql://` database, or memory (`path=None`)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None or is_postgres_url(path) else Path(path)
        self.hits = 0
        """Prompts answered from the table, by every `CachedBackend` on this cache."""
        self._lock = threading.Lock()
        self._db = connect_db(path if is_postgres_url(path) else self.path)
        try:
            with self._db.creating() as tx:
                tx.execute(self._db.dialect.ddl(_SCHEMA))
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, StoreError):
                raise StoreError(f"cannot open the LLM cache in {self._db.where}: {exc}") from None
            raise

    def get(self, key: str) -> list[Generation] | None:
        with self._lock:
            rows = self._db.query("SELECT response FROM lesson_llm_cache WHERE key = ?", (key,))
        if not rows:
            return None
        try:
            return [Generation(**g) for g in json.loads(rows[0][0])]
        except (ValueError, TypeError):
            return None  # a damaged entry is a miss

    def put_many(self, items: Sequence[tuple[str, str, str, list[Generation]]]) -> None:
        """Store (key, model, request JSON, generations) rows in one transaction. Any text can be stored:
        a lone surrogate (from a backend that made its `Generation`s some other way) is kept as U+FFFD."""
        rows = [
            (
                key,
                clean_text(model),
                clean_text(request),
                json_text([dataclasses.asdict(g) for g in gens]),
                time.time(),
            )
            for key, model, request, gens in items
        ]
        with self._lock:
            try:
                with self._db.writing() as tx:
                    tx.executemany(_PUT, rows)
            except StoreError as exc:
                raise StoreError(f"cannot write the LLM cache: {exc}") from None

    def rows(self) -> list[tuple[str, str, str, str, float]]:
        """Every cached call as stored: (key, model, request JSON, generations JSON, created)."""
        with self._lock:
            return [tuple(row) for row in self._db.query(f"SELECT {_COLUMNS} FROM lesson_llm_cache ORDER BY key")]

    def put_rows(self, rows: Sequence[tuple[str, str, str, str, float]]) -> None:
        """Store rows as `rows()` gives them (a copy of another cache), in one transaction."""
        with self._lock, self._db.writing() as tx:
            tx.executemany(_PUT, [tuple(row) for row in rows])

    def __len__(self) -> int:
        with self._lock:
            return self._db.query("SELECT COUNT(*) FROM lesson_llm_cache")[0][0]

    def clear(self) -> None:
        with self._lock, self._db.writing() as tx:
            tx.execute("DELETE FROM lesson_llm_cache")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LLMCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CachedBackend(Backend):
    """`backend` with its calls cached in `cache`. `namespace` separates uses that must not share
    answers (e.g. two runs with the same seeds that should sample independently). `model` names the
    model in the key (default: the backend's `model_name`)."""

    def __init__(self, backend: Backend, cache: LLMCache, namespace: str = "", model: str | None = None) -> None:
        self.backend = backend
        # Fixed for the wrapper's life: an HTTP backend may learn its model name only on its first call,
        # and a key that changed then would miss on resume.
        self.model_label = model or backend.model_name or "(server default)"
        self.cache = cache
        self.namespace = namespace
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:  # type: ignore[override]
        return self.backend.model_name

    @property
    def structured_output(self) -> bool:  # type: ignore[override]
        return self.backend.structured_output

    @property
    def tool_calls(self) -> bool:  # type: ignore[override]
        return self.backend.tool_calls

    @property
    def usage(self) -> Usage:
        return self.backend.usage

    async def achat_tools(
        self, messages: list[dict[str, Any]], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> AssistantTurn:
        """Not cached: the wrapped backend's tool turn."""
        return await self.backend.achat_tools(messages, params, tools)

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[list[Generation]]:
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        model = self.model_label
        requests = [_request_json(model, p, params, chat, self.namespace) for p in prompts]
        keys = [_key(r) for r in requests]
        results: list[list[Generation] | None] = [self.cache.get(k) for k in keys]
        missing: dict[str, list[int]] = {}
        for i, (key, found) in enumerate(zip(keys, results)):
            if found is None or len(found) < params.n:
                missing.setdefault(key, []).append(i)
                results[i] = None
        with self._lock:
            self.misses += len(missing)  # prompts sent (a prompt repeated in one call is sent once)
            self.hits += len(prompts) - len(missing)
        with self.cache._lock:
            self.cache.hits += len(prompts) - len(missing)
        if missing:
            first = [indices[0] for indices in missing.values()]
            fresh = self.backend.generate([prompts[i] for i in first], params, chat=chat)
            self.cache.put_many([(keys[i], model, requests[i], gens) for i, gens in zip(first, fresh)])
            for indices, gens in zip(missing.values(), fresh):
                for i in indices:
                    results[i] = gens
        return [list(r) for r in results]  # type: ignore[arg-type]

    def close(self) -> None:
        """Closes nothing: the wrapped backend and the cache belong to the caller."""
