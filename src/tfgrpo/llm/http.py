"""Any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp server, OpenAI, DeepSeek, `tfgrpo
serve-model`) through the official `openai` async client, with bounded concurrency and our own retries.

The hot path is lean, because with one request per rollout (fan-out) the client's CPU time per request
caps the rollouts per second: completions are posted as plain JSON (`client.post(..., cast_to=object)`,
which skips the client's parameter transformation and response models, about 2 ms per request) and
the connections are spread over several small pools (httpx's pool scans all its connections for every
request, so one pool of 256 costs O(256) per request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import math
import os
import random
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Literal

from ..errors import BackendError, ConfigError
from .base import (
    Backend,
    Generation,
    GenerationParams,
    PriceTable,
    Prompt,
    Usage,
    check_price_table,
    check_prompts,
    to_messages,
)

NStrategy = Literal["auto", "native", "fanout"]
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx
CONNECTIONS_PER_POOL = 8


class _LoopThread:
    """A private event loop in a daemon thread. All HTTP work runs here, so the sync API works with or
    without a running loop in the caller, and one client and one semaphore serve every caller."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tfgrpo-openai", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        if self.loop.is_closed():
            coro.close()
            raise BackendError("this OpenAIBackend is closed; make a new one")
        if threading.current_thread() is self.thread:
            coro.close()
            raise BackendError("OpenAIBackend.generate() was called from inside its own event loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` (or `retry-after-ms`) header asks us to wait: a number or an HTTP date."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OpenAIBackend(Backend):
    """An OpenAI-compatible HTTP endpoint.

    Args:
        base_url: e.g. "http://localhost:8000/v1"; default $OPENAI_BASE_URL, else OpenAI's.
        api_key: default $OPENAI_API_KEY; local servers get a placeholder when neither is set.
        model: default $TFGRPO_MODEL, else the first model the server lists.
        concurrency: most requests in flight at once (over all callers of this backend).
        timeout: seconds one request may take before it is retried.
        max_retries: retries after the first attempt, on 408/409/429/5xx, timeouts and connection
            errors; waits `Retry-After` when the server sends it, else exponential backoff with jitter.
        price_table: US dollars per 1M tokens, `{"prompt": ..., "completion": ...}`, for `usage.cost`.
        mode: "chat" (/chat/completions) or "completions" (/completions, plain-text prompts).
        n_strategy: how to get n > 1 completions: "native" (the API's `n`), "fanout" (n requests, seeds
            seed, seed+1, ...), or "auto" (ask for `n`, and switch to fan-out for good when the server
            returns fewer, as llama.cpp's server does).
        extra_body: extra JSON fields sent with every request (e.g. vLLM's `top_k`).
    """

    backoff_base = 0.5
    """First backoff in seconds; doubles each retry (times a random factor in [0.5, 1])."""
    backoff_cap = 30.0
    retry_after_cap = 120.0
    """Longest `Retry-After` wait honoured."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        *,
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 5,
        price_table: PriceTable | None = None,
        mode: Literal["chat", "completions"] = "chat",
        n_strategy: NStrategy = "auto",
        extra_body: dict | None = None,
    ) -> None:
        try:
            import openai
        except ImportError as exc:
            raise BackendError("the HTTP backend needs the openai client: pip install 'tfgrpo[http]'") from exc
        for name, value, minimum in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"OpenAIBackend {name} must be a whole number >= {minimum}, got {value!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"OpenAIBackend timeout must be a number of seconds > 0, got {timeout!r}")
        if mode not in ("chat", "completions"):
            raise ConfigError(f"OpenAIBackend mode must be 'chat' or 'completions', got {mode!r}")
        if n_strategy not in ("auto", "native", "fanout"):
            raise ConfigError(f"OpenAIBackend n_strategy must be 'auto', 'native' or 'fanout', got {n_strategy!r}")

        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if "api.openai.com" in self.base_url:
                raise ConfigError("no API key for api.openai.com: pass api_key= or set OPENAI_API_KEY")
            api_key = "EMPTY"  # local servers ignore it, but the client insists on one
        self.model_name = model or os.environ.get("TFGRPO_MODEL") or ""
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.price_table = check_price_table(price_table)
        self.chat = mode == "chat"
        self.n_strategy: NStrategy = n_strategy
        self.extra_body = dict(extra_body or {})
        self._openai = openai
        self._usage = Usage()
        self._fanout = n_strategy == "fanout"
        self._runner = _LoopThread()
        # Built on the loop thread on first use (asyncio objects belong to the loop that uses them).
        self._clients: list[Any] = []  # one per pool of at most CONNECTIONS_PER_POOL connections
        self._in_flight: list[int] = []  # requests in flight on each
        self._semaphore: asyncio.Semaphore | None = None
        self._model_lock: asyncio.Lock | None = None
        self._client_kwargs = {"base_url": self.base_url, "api_key": api_key, "timeout": self.timeout}

    @property
    def usage(self) -> Usage:
        return self._usage

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[list[Generation]]:
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        chat = self._check_mode(prompts, chat)

        async def run_all() -> list[list[Generation]]:
            tasks = [asyncio.ensure_future(self._complete(p, params, chat)) for p in prompts]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:  # one prompt failed for good: do not leave the others retrying
                    task.cancel()
                raise

        future = self._runner.submit(run_all())
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: stop the requests still in flight
            raise

    async def agenerate(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[Generation]:
        params = params or GenerationParams()
        chat = self._check_mode(check_prompts([prompt]), chat)
        return await asyncio.wrap_future(self._runner.submit(self._complete(prompt, params, chat)))

    def close(self) -> None:
        if self._clients and not self._runner.loop.is_closed():
            for client in self._clients:
                self._runner.submit(client.close()).result(timeout=10)
            self._clients = []
        self._runner.stop()

    def _check_mode(self, prompts: list[Prompt], chat: bool | None) -> bool:
        chat = self.chat if chat is None else chat
        if not chat and not all(isinstance(p, str) for p in prompts):
            raise ConfigError("completions mode (chat=False) needs string prompts, not chat messages")
        return chat

    # Everything below runs on the private loop.

    async def _complete(self, prompt: Prompt, params: GenerationParams, chat: bool) -> list[Generation]:
        """params.n completions for one prompt, natively or fanned out."""
        n = params.n
        if n == 1 or not self._fanout:
            generations = await self._request(prompt, params, chat, n, params.seed)
            if len(generations) >= n:
                return generations[:n]
            if self.n_strategy == "native":
                raise BackendError(
                    f"{self.base_url} returned {len(generations)} completions for n={n}; "
                    "it does not support n, use n_strategy='fanout' or 'auto'"
                )
            self._fanout = True  # the server ignores n (llama.cpp does): fan out from now on
        else:
            generations = []
        seeds = [None if params.seed is None else params.seed + i for i in range(len(generations), n)]
        rest = await asyncio.gather(*(self._request(prompt, params, chat, 1, seed) for seed in seeds))
        return generations + [group[0] for group in rest]

    async def _setup(self) -> None:
        if not self._clients:
            openai = self._openai
            pools = math.ceil(self.concurrency / CONNECTIONS_PER_POOL)
            size = math.ceil(self.concurrency / pools)
            limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=size, max_keepalive_connections=size)
            self._clients = [
                openai.AsyncOpenAI(  # retries are ours
                    max_retries=0, http_client=openai.DefaultAsyncHttpxClient(limits=limits), **self._client_kwargs
                )
                for _ in range(pools)
            ]
            self._in_flight = [0] * pools
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._model_lock = asyncio.Lock()
        if not self.model_name:
            lock = self._model_lock
            assert lock is not None, "made with the clients above"
            async with lock:
                if not self.model_name:
                    models = await self._with_retries(lambda client: client.models.list(), "GET /models")
                    if not models.data:
                        raise BackendError(f"{self.base_url} lists no models; pass model= or set TFGRPO_MODEL")
                    self.model_name = models.data[0].id

    async def _request(
        self, prompt: Prompt, params: GenerationParams, chat: bool, n: int, seed: int | None
    ) -> list[Generation]:
        await self._setup()
        body: dict[str, Any] = {
            "model": self.model_name,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if n > 1:
            body["n"] = n
        if params.stop:
            body["stop"] = params.stop
        if seed is not None:
            body["seed"] = seed
        if params.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
        if self.extra_body:
            body.update(self.extra_body)
        if chat:
            body["messages"] = to_messages(prompt)
        else:
            body["prompt"] = prompt
        path, what = ("/chat/completions", "chat completion") if chat else ("/completions", "completion")
        response = await self._with_retries(lambda client: client.post(path, body=body, cast_to=object), what)

        try:
            choices = sorted(response.get("choices") or [], key=lambda c: c.get("index") or 0)
            usage = response.get("usage") or {}
            texts = [((c.get("message") or {}).get("content") if chat else c.get("text")) or "" for c in choices]
        except (AttributeError, TypeError):  # not the JSON object an OpenAI-compatible server sends
            raise BackendError(f"{self.base_url} sent a malformed {what} response: {response!r:.200}") from None
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        self._usage.record(prompt_tokens or 0, completion_tokens or 0, self.price_table)
        generations = []
        for choice, text in zip(choices, texts):
            for stop in params.stop or []:  # for servers that do not cut at stop strings themselves
                if stop in text:
                    text = text[: text.index(stop)]
            per_choice = completion_tokens if len(choices) == 1 else None
            generations.append(Generation(text, choice.get("finish_reason"), prompt_tokens, per_choice))
        return generations

    async def _with_retries(self, call, what: str):
        """`call(client)` with our retries, on the least busy connection pool."""
        openai = self._openai
        in_flight = self._in_flight
        semaphore = self._semaphore
        assert semaphore is not None, "_setup runs before any request"
        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                async with semaphore:
                    pool = in_flight.index(min(in_flight))
                    in_flight[pool] += 1
                    try:
                        return await asyncio.wait_for(call(self._clients[pool]), self.timeout)
                    finally:
                        in_flight[pool] -= 1
            except openai.APIStatusError as exc:
                last = exc
                status = exc.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    raise BackendError(f"{self.base_url} refused the {what} ({status}): {_message(exc)}") from exc
                error = f"HTTP {status}: {_message(exc)}"
                wait = retry_after_seconds(exc.response.headers)
            except (openai.APIConnectionError, asyncio.TimeoutError) as exc:
                last = exc
                error = f"timed out after {self.timeout:g} s" if _is_timeout(exc) else f"connection failed ({exc})"
            if attempt == self.max_retries:
                raise BackendError(
                    f"{self.base_url} failed the {what} {attempt + 1} times; last: {error}. "
                    "Check that the server is up and not overloaded, or raise max_retries / timeout."
                ) from last
            if wait is None:
                wait = min(self.backoff_cap, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            self._usage.record_retry()
            await asyncio.sleep(min(wait, self.retry_after_cap))


def _is_timeout(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, (asyncio.TimeoutError, openai.APITimeoutError))


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", exc))
