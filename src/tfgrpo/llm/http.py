"""Any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp server, OpenAI, DeepSeek, `tfgrpo
serve-model`), with bounded concurrency and our own retries.

Requests go out as plain JSON over one aiohttp session, with the headers the official `openai` client
would send (its auth, organization, project and user agent, from the same arguments and environment).
With one request per rollout (fan-out) the client's CPU time per request caps the rollouts per second,
and the `openai` client's own stack (request building, httpx, httpcore, h11) costs about 3-4 ms per
request on a 2-core machine against about 0.6 ms for aiohttp (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import os
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Coroutine, Sequence
from typing import Any, Literal

from ..errors import BackendError, ConfigError
from .base import (
    AssistantTurn,
    Backend,
    Generation,
    GenerationParams,
    PriceTable,
    Prompt,
    Usage,
    check_price_table,
    check_prompts,
    to_messages,
    token_count,
)
from .retries import Backoff, TryAgain, with_retries

NStrategy = Literal["auto", "native", "fanout"]
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx
KEEPALIVE_S = 3.0
"""Longest a pooled connection is kept idle: below the 5 s after which uvicorn (vLLM, SGLang, `tfgrpo
serve-model`), llama.cpp's server and Node close idle connections, so a request is not sent on a
connection the server is just closing (a "server disconnected" error, retried after a backoff)."""


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
        tool_calls: declare that the server does OpenAI tool calls (chat mode), so agents call tools
            natively (`achat_tools`) unless told to use the text protocol.
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
        tool_calls: bool = False,
    ) -> None:
        try:
            import aiohttp
            import openai
        except ImportError as exc:
            raise BackendError(
                f"the HTTP backend needs the openai client and aiohttp ({exc}): pip install 'tfgrpo[http]'"
            ) from exc
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
        self.tool_calls = bool(tool_calls)
        self._openai = openai
        self._aiohttp = aiohttp
        self._usage = Usage()
        self._fanout = n_strategy == "fanout"
        self.response_format_refused = False
        """Set when the server refused a `response_format` (400): later calls go without one."""
        self._runner = _LoopThread()
        # Built on the loop thread on first use (asyncio objects belong to the loop that uses them).
        self._session: Any = None  # aiohttp.ClientSession
        self._proxy: str | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._model_lock: asyncio.Lock | None = None
        self._api_key = api_key

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
        if self._session is not None and not self._runner.loop.is_closed():
            self._runner.submit(self._session.close()).result(timeout=10)
            self._session = None
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
        if self._session is None:
            # The openai client only lends its headers (it sends nothing): auth, OPENAI_ORG_ID,
            # OPENAI_PROJECT_ID and user agent as it would send them; values it omits are not strings.
            client = self._openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0)
            headers = {k: v for k, v in {**client.auth_headers, **client.default_headers}.items() if isinstance(v, str)}
            await client.close()
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                headers=headers,
                connector=aiohttp.TCPConnector(limit=self.concurrency, keepalive_timeout=KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=self.timeout),  # per attempt, body included
            )
            self._proxy = _env_proxy(self.base_url)
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._model_lock = asyncio.Lock()
        if not self.model_name:
            lock = self._model_lock
            assert lock is not None, "made with the session above"
            async with lock:
                if not self.model_name:
                    models = await self._with_retries("GET", "/models", None, "GET /models")
                    data = models.get("data") if isinstance(models, dict) else None
                    if not data or not isinstance(data[0], dict) or not data[0].get("id"):
                        raise BackendError(f"{self.base_url} lists no models; pass model= or set TFGRPO_MODEL")
                    self.model_name = str(data[0]["id"])

    async def achat_tools(
        self, messages: list[dict[str, Any]], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> AssistantTurn:
        return await asyncio.wrap_future(self._runner.submit(self._tool_turn(messages, params, tools)))

    async def _tool_turn(
        self, messages: list[dict[str, Any]], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> AssistantTurn:
        await self._setup()
        body = {**self._body(params, 1, params.seed), "messages": messages, "tools": tools}
        response = await self._with_retries("POST", "/chat/completions", body, "chat completion with tools")
        return _assistant_turn(response, self.base_url, self._usage, self.price_table)

    def _body(self, params: GenerationParams, n: int, seed: int | None) -> dict[str, Any]:
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
        if params.response_format and not self.response_format_refused:
            body["response_format"] = params.response_format
        if self.extra_body:
            body.update(self.extra_body)
        return body

    async def _request(
        self, prompt: Prompt, params: GenerationParams, chat: bool, n: int, seed: int | None
    ) -> list[Generation]:
        await self._setup()
        body = self._body(params, n, seed)
        if chat:
            body["messages"] = to_messages(prompt)
        else:
            body["prompt"] = prompt
        path, what = ("/chat/completions", "chat completion") if chat else ("/completions", "completion")
        try:
            response = await self._with_retries("POST", path, body, what)
        except BackendError as exc:
            if "response_format" not in body or not _refuses_response_format(exc.__cause__):
                raise
            if not self.response_format_refused:
                self.response_format_refused = True
                warnings.warn(f"{self.base_url} refused response_format ({exc}); asking without it", stacklevel=1)
            del body["response_format"]
            response = await self._with_retries("POST", path, body, what)

        try:
            choices = sorted(response.get("choices") or [], key=lambda c: c.get("index") or 0)
            texts = [((c.get("message") or {}).get("content") if chat else c.get("text")) or "" for c in choices]
            if not all(isinstance(text, str) for text in texts):
                raise TypeError("a choice's text is not text")
        except (AttributeError, TypeError):  # not the JSON object an OpenAI-compatible server sends
            raise BackendError(f"{self.base_url} sent a malformed {what} response: {response!r:.200}") from None
        usage = response.get("usage")
        usage = usage if isinstance(usage, dict) else {}  # the server's word on its tokens: unknown if odd
        prompt_tokens = token_count(usage.get("prompt_tokens"))
        completion_tokens = token_count(usage.get("completion_tokens"))
        self._usage.record(prompt_tokens or 0, completion_tokens or 0, self.price_table)
        generations = []
        for choice, text in zip(choices, texts):
            for stop in params.stop or []:  # for servers that do not cut at stop strings themselves
                if stop in text:
                    text = text[: text.index(stop)]
            per_choice = completion_tokens if len(choices) == 1 else None
            generations.append(Generation(text, choice.get("finish_reason"), prompt_tokens, per_choice))
        return generations

    async def _send(self, method: str, path: str, body: dict | None, what: str) -> Any:
        """One try: the decoded JSON answer; `TryAgain` for a status worth another try, else a
        `BackendError` from the server's `_StatusError`."""
        data = None if body is None else json.dumps(body).encode()
        async with self._session.request(method, self.base_url + path, data=data, proxy=self._proxy) as response:
            raw = await response.read()
        status = response.status
        if status in RETRYABLE_STATUS or status >= 500:
            raise TryAgain(status, _message(raw), retry_after_seconds(response.headers))
        if status >= 400:
            refused = _StatusError(status, _message(raw))
            raise BackendError(f"{self.base_url} refused the {what} ({status}): {refused.message}") from refused
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise BackendError(f"{self.base_url} sent a {what} response that is not JSON: {raw!r:.200}") from None

    async def _with_retries(self, method: str, path: str, body: dict | None, what: str) -> Any:
        """`_send` with our retries, each try holding a place under `concurrency`."""
        semaphore = self._semaphore
        assert semaphore is not None, "_setup runs before any request"

        async def attempt() -> Any:
            async with semaphore:
                return await self._send(method, path, body, what)

        def give_up(last: Exception, tries: int) -> BackendError:
            if isinstance(last, TryAgain):
                error = str(last)
            elif isinstance(last, asyncio.TimeoutError):
                error = f"timed out after {self.timeout:g} s"
            else:
                error = f"connection failed ({last})"
            return BackendError(
                f"{self.base_url} failed the {what} {tries} times; last: {error}. "
                "Check that the server is up and not overloaded, or raise max_retries / timeout."
            )

        backoff = Backoff(self.backoff_base, self.backoff_cap, max_wait=self.retry_after_cap)
        return await with_retries(attempt, self.max_retries, backoff, give_up, self._usage.record_retry)


class _StatusError(Exception):
    """A refusal (a 4xx not worth another try): its status and the server's error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def _assistant_turn(response: Any, where: str, usage: Usage, price_table: PriceTable | None) -> AssistantTurn:
    """A chat answer that may call tools, its shape checked where it enters: one choice whose message has
    text (or none) and tool calls `{"id", "function": {"name", "arguments"}}`; anything else is a
    `BackendError` naming what was wrong."""
    try:
        choice = response["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        raw_calls = message.get("tool_calls") or []
        if not isinstance(text, str) or not isinstance(raw_calls, list):
            raise TypeError("content or tool_calls of the wrong type")
        calls = []
        for i, call in enumerate(raw_calls):
            function = call["function"]
            name, arguments = function["name"], function.get("arguments", "")
            if not isinstance(name, str) or not name:
                raise TypeError(f"tool call {i} has no name")
            if not isinstance(arguments, str):  # some servers send the object itself
                arguments = json.dumps(arguments)
            call_id = call.get("id")
            call_id = call_id if isinstance(call_id, str) and call_id else f"call_{i}"
            calls.append({"id": call_id, "name": name, "arguments": arguments})
        counts = response.get("usage") or {}
        prompt_tokens, completion_tokens = counts.get("prompt_tokens"), counts.get("completion_tokens")
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        what = f"{where} sent a malformed chat completion with tools ({error})"
        raise BackendError(f"{what}: {response!r:.200}") from None
    usage.record(prompt_tokens or 0, completion_tokens or 0, price_table)
    return AssistantTurn(
        text, tuple(calls), finish if isinstance(finish, str) else None, prompt_tokens, completion_tokens
    )


def _env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY and NO_PROXY give for `url`, as the openai client's httpx honours
    them. Looked up once: aiohttp's `trust_env` would look it up (and read ~/.netrc) in a worker thread
    for every request."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _message(raw: bytes) -> str:
    """The error message of an error answer: OpenAI's `{"error": {"message": ...}}`, else its text."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace").strip()[:500] or "no message"
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    return json.dumps(body)[:500]


def _refuses_response_format(cause: BaseException | None) -> bool:
    """A 400 or 422 that names response_format (or its json_schema): the server does not know it."""
    if not isinstance(cause, _StatusError) or cause.status not in (400, 422):
        return False
    message = cause.message.lower()
    return "response_format" in message or "json_schema" in message
