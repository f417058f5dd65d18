"""One call shape for every model backend: prompts and `GenerationParams` in, `n` `Generation`s per
prompt out, with token usage (and cost) accounted inside the backend."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.experience import check_text, clean_text
from ..errors import ConfigError

Message = dict[str, str]
"""A chat message: `{"role": "system" | "user" | "assistant", "content": "..."}`."""
Prompt = str | list[Message]
"""A plain string (sent as one user message to chat models) or a list of chat messages."""


@dataclass(frozen=True)
class GenerationParams:
    """How to sample. Invalid values raise `ConfigError` when the object is made."""

    n: int = 1
    """Completions per prompt (the group size)."""
    temperature: float = 0.7
    """Sampling temperature >= 0; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p, in (0, 1]."""
    max_tokens: int = 256
    """Most tokens generated per completion (>= 1)."""
    stop: list[str] | None = None
    """Generation ends at the first of these strings, which is not included in the text."""
    seed: int | None = None
    """Same seed, same prompt, same params: same output (locally; servers honour it when they can). A
    prompt's group depends on that prompt and the params only, never on the other prompts of the call,
    so groups may be generated apart (in other calls, on other replicas) with the same result: the local
    backend samples each prompt's group alone, seeded by `group_seed(seed, prompt)`."""
    logit_bias: Mapping[int, float] | None = field(default=None, hash=False)
    """OpenAI-style logit bias: token id -> bias in [-100, 100], added to the logits before sampling (sent
    as `logit_bias` to servers; token ids are the served model's). `tfgrpo.llm.guidance.LogitBias` builds
    one from the experience library."""
    response_format: Mapping[str, Any] | None = field(default=None, hash=False)
    """Structured output, as OpenAI's `response_format`: `{"type": "json_schema", "json_schema": {"name":
    ..., "schema": {...}, "strict": true}}` (sent as it is to servers; the local backend constrains its
    decoding to the schema, `tfgrpo.llm.structured`). `tfgrpo.semantic.operations.response_format`
    builds the critic's."""

    def __post_init__(self) -> None:
        _check_int("n", self.n, 1)
        _check_int("max_tokens", self.max_tokens, 1)
        _check_number("temperature", self.temperature)
        if self.temperature < 0:
            raise ConfigError(f"GenerationParams.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        _check_number("top_p", self.top_p)
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"GenerationParams.top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None:
            _check_int("seed", self.seed, 0)
        if self.stop is not None:
            stop = [self.stop] if isinstance(self.stop, str) else self.stop
            if not isinstance(stop, Sequence) or not all(isinstance(s, str) and s for s in stop):
                raise ConfigError(f"GenerationParams.stop must be a list of non-empty strings, got {self.stop!r}")
            object.__setattr__(self, "stop", list(stop) or None)
        if self.logit_bias is not None:
            object.__setattr__(self, "logit_bias", _check_logit_bias(self.logit_bias) or None)
        if self.response_format is not None:
            _check_response_format(self.response_format)

    def replace(self, **changes) -> GenerationParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"GenerationParams.{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"GenerationParams.{name} must be >= {minimum}, got {value}")


def _check_logit_bias(bias: object) -> dict[int, float]:
    if not isinstance(bias, Mapping):
        raise ConfigError(f"GenerationParams.logit_bias must be a mapping token id -> bias, got {bias!r:.200}")
    checked: dict[int, float] = {}
    for key, value in bias.items():
        token = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 10 else key
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ConfigError(f"GenerationParams.logit_bias keys must be token ids (whole numbers >= 0), got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise ConfigError(f"GenerationParams.logit_bias[{key!r}] must be a number in [-100, 100], got {value!r}")
        checked[token] = value
    return checked


def _check_response_format(value: object) -> None:
    schema = value.get("json_schema") if isinstance(value, Mapping) else None
    if (
        not isinstance(value, Mapping)
        or value.get("type") != "json_schema"
        or not isinstance(schema, Mapping)
        or (not isinstance(schema.get("name"), str) or not isinstance(schema.get("schema"), Mapping))
    ):
        raise ConfigError(
            'GenerationParams.response_format must be {"type": "json_schema", "json_schema": {"name": "...", '
            f'"schema": {{...}}}}}}, got {value!r:.200}'
        )


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"GenerationParams.{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class Generation:
    """One completion."""

    text: str
    finish_reason: str | None = None
    """"stop" (end of turn or a stop string), "length" (max_tokens reached), or what the server said."""
    prompt_tokens: int | None = None
    """Tokens in the prompt; None when the server did not report usage."""
    completion_tokens: int | None = None
    """Tokens generated for this completion; None when unknown (a server that reports usage only for a
    whole request of n completions)."""

    def __post_init__(self) -> None:
        # Model output is untrusted text and enters here, whichever backend made it: a lone surrogate
        # (a server's "\ud800", a broken decoding) becomes U+FFFD, so every store, the LLM cache first,
        # can write it.
        if isinstance(self.text, str):
            object.__setattr__(self, "text", clean_text(self.text))


@dataclass(frozen=True)
class Delta:
    """A piece of one streamed completion (`Backend.astream`): new `text` for choice `index`. The last
    piece of each choice carries its whole `Generation` in `final` (finish reason, token counts)."""

    index: int
    text: str = ""
    final: Generation | None = None

    def __post_init__(self) -> None:
        if isinstance(self.text, str):
            object.__setattr__(self, "text", clean_text(self.text))  # as `Generation`'s


@dataclass(frozen=True)
class AssistantTurn:
    """One chat answer that may call tools (`Backend.achat_tools`): its text and the calls the model made,
    each `{"id": str, "name": str, "arguments": str}` (the arguments as the model wrote them: JSON text
    that may be malformed; the caller checks it)."""

    text: str
    tool_calls: tuple[dict[str, str], ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


PriceTable = Mapping[str, float]
"""US dollars per 1M tokens: `{"prompt": 0.27, "completion": 1.10}`."""


def check_price_table(price_table: PriceTable | None) -> dict[str, float] | None:
    """Validate a price table; returns a plain dict (or None)."""
    if price_table is None:
        return None
    if not isinstance(price_table, Mapping) or set(price_table) != {"prompt", "completion"}:
        raise ConfigError(
            "price_table must be a mapping with exactly the keys 'prompt' and 'completion' "
            f"(US dollars per 1M tokens), got {price_table!r}"
        )
    for key, value in price_table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"price_table[{key!r}] must be a number >= 0, got {value!r}")
    return {k: float(v) for k, v in price_table.items()}


def token_count(value: object) -> int | None:
    """A server's word on a token count: a whole number a database column holds, else None (unknown)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else None


@dataclass
class Usage:
    """What a backend has used so far. Thread-safe to update; `snapshot()` and `-` measure a span:

    >>> before = backend.usage.snapshot(); ...; spent = backend.usage.snapshot() - before
    """

    requests: int = 0
    """Requests answered (an HTTP request; for a local model, one prompt with its n completions)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    """US dollars, from the backend's price table (0 without one)."""
    retries: int = 0
    """Requests sent again after a retryable failure."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def record(
        self,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        price_table: PriceTable | None = None,
        requests: int = 1,
    ) -> None:
        """Add one answered request's tokens (and their cost, when a price table is given)."""
        cost = 0.0
        if price_table is not None:
            cost = (prompt_tokens * price_table["prompt"] + completion_tokens * price_table["completion"]) / 1e6
        with self._lock:
            self.requests += requests
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.cost += cost

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def snapshot(self) -> Usage:
        """A copy that no longer changes."""
        with self._lock:
            return Usage(self.requests, self.prompt_tokens, self.completion_tokens, self.cost, self.retries)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.requests - other.requests,
            self.prompt_tokens - other.prompt_tokens,
            self.completion_tokens - other.completion_tokens,
            self.cost - other.cost,
            self.retries - other.retries,
        )

    def to_dict(self) -> dict:
        snap = self.snapshot()
        return {
            "requests": snap.requests,
            "prompt_tokens": snap.prompt_tokens,
            "completion_tokens": snap.completion_tokens,
            "total_tokens": snap.total_tokens,
            "cost": snap.cost,
            "retries": snap.retries,
        }


def to_messages(prompt: Prompt) -> list[Message]:
    """A prompt as chat messages (a plain string becomes one user message). Checks the shape."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": check_text(prompt, "a prompt", ConfigError)}]
    if not isinstance(prompt, list) or not prompt:
        raise ConfigError(f"a prompt must be a string or a non-empty list of chat messages, got {prompt!r:.200}")
    for message in prompt:
        if (
            not isinstance(message, Mapping)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise ConfigError(f'each chat message must be a dict {{"role": str, "content": str}}, got {message!r:.200}')
        check_text(message["content"], f"a {message['role']!r:.20} message", ConfigError)
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def group_seed(seed: int, prompt: Prompt) -> int:
    """The seed one prompt's group is sampled from, given the call's `seed`: fixed by the two alone."""
    text = json.dumps([seed, prompt], ensure_ascii=False, sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1  # < 2**63


def check_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    """`generate` takes a list of prompts; a lone string is a common slip worth a clear error."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ConfigError(f"generate() takes a list of prompts, got {type(prompts).__name__}; wrap it: [prompt]")
    for prompt in prompts:
        to_messages(prompt)
    return list(prompts)


class Backend(ABC):
    """A model that completes prompts. Use as a context manager, or call `close()` when done.

    `chat=None` uses the backend's default mode; `chat=False` sends plain-text prompts verbatim (no
    chat template / the completions endpoint), `chat=True` treats every prompt as a conversation.
    """

    model_name: str = "unknown"
    structured_output: bool = False
    """Whether `GenerationParams.response_format` is honoured (the output follows the schema), so that
    `serve-model` can offer it instead of refusing it."""
    tool_calls: bool = False
    """Whether the backend declares native (OpenAI) tool calls: agents then call tools through
    `achat_tools` instead of the text protocol (unless told otherwise)."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[list[Generation]]:
        """`params.n` completions for each prompt, in prompt order."""

    async def agenerate(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[Generation]:
        """`params.n` completions for one prompt, without blocking the event loop."""
        groups = await asyncio.to_thread(self.generate, [prompt], params, chat=chat)
        return groups[0]

    async def astream(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> AsyncGenerator[Delta, None]:
        """`agenerate`, streamed as `Delta`s while the text arrives. Closing the iterator early (or
        cancelling the task that reads it) stops the work where the backend can. This default yields
        each whole completion as one piece; backends that can stream override it."""
        for index, generation in enumerate(await self.agenerate(prompt, params, chat=chat)):
            yield Delta(index, generation.text, generation)

    async def achat_tools(
        self, messages: list[dict[str, Any]], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> AssistantTurn:
        """One chat turn offered `tools` (OpenAI function definitions), with OpenAI messages (assistant
        messages with `tool_calls`, `tool` messages with results). Backends without native tool calls
        refuse it; agents use the text protocol with them."""
        raise ConfigError(
            f"the backend {self.model_name} has no native tool calls; use the text protocol (--tool-calls text)"
        )

    @property
    @abstractmethod
    def usage(self) -> Usage:
        """Tokens, requests, retries and cost so far."""

    def close(self) -> None:  # noqa: B027 (an optional hook: nothing to release by default)
        """Release connections, threads and memory. Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
