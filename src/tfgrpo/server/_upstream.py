"""The OpenAI-compatible server behind `tfgrpo serve`: pooled aiohttp connections, retries with backoff,
and the upstream's failures as OpenAI-shaped 502 / 504 errors.

aiohttp rather than httpx: httpx's pool scans every pooled connection on each request (`is_idle`,
`has_expired`), which was over half of the proxy's CPU per request at 64 in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aiohttp

from ..llm.retries import Backoff, TryAgain, with_retries
from .metrics import ProxyMetrics
from .openai_api import OpenAIError

T = TypeVar("T")
BACKOFF = Backoff(first=0.1, cap=2.0, jitter=(0.5, 1.5))


class UpstreamResponse:
    """An upstream answer whose status is known and whose body is still to be read (close it)."""

    def __init__(self, response: aiohttp.ClientResponse, max_bytes: int) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = response.headers
        self.max_bytes = max_bytes

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a 502 once it passes `max_bytes`."""
        size = 0
        async for chunk in self._response.content.iter_any():
            size += len(chunk)
            if size > self.max_bytes:
                raise OpenAIError(
                    502,
                    f"the upstream's answer is over {self.max_bytes} bytes (--max-output-bytes)",
                    code="upstream_too_large",
                )
            yield chunk

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines (server-sent events), without their line ends, however long they are. A body
        that breaks off or stalls for the read timeout is a 502 `upstream_error` or a 504
        `upstream_timeout`, as a whole answer's failure is."""
        rest = b""
        try:
            async for chunk in self.aiter_bytes():
                rest += chunk
                *lines, rest = rest.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode("utf-8", "replace")
        except asyncio.TimeoutError:
            raise OpenAIError(
                504, "the upstream stopped sending mid-answer (read timeout)", code="upstream_timeout"
            ) from None
        except aiohttp.ClientError as exc:
            message = f"the upstream's answer broke off: {exc or type(exc).__name__}"
            raise OpenAIError(502, message, code="upstream_error") from None
        if rest:
            yield rest.rstrip(b"\r").decode("utf-8", "replace")

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # half-read: the connection cannot be reused


class Upstream:
    """The upstream server: `open` for a response to stream, `call` for a whole answer."""

    def __init__(
        self,
        base_url: str,
        metrics: ProxyMetrics,
        *,
        retries: int = 2,
        timeout: float = 120.0,
        max_output_bytes: int = 16 * 1024 * 1024,
        api_key: str | None = None,
        model: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model or None
        self.retries = retries
        self.timeout = timeout
        self.max_output_bytes = max_output_bytes
        self.metrics = metrics
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        # connect and each read wait at most `timeout` (a stream may take longer in all, as long as it flows)
        self.session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, connect=min(timeout, 10.0), sock_read=timeout),
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=True,
        )

    async def open(self, method: str, path: str, body: dict | None = None) -> UpstreamResponse:
        """An upstream response whose status is below 500, its body not yet read (close it). 5xx,
        timeouts and connection failures are tried again with backoff, then a 502 or 504."""
        return await self._with_retries(lambda: self._send(method, path, body))

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, str]:
        """(status, body, content type) of a whole upstream answer, at most `max_output_bytes`; an answer
        that stalls mid-way is tried again as one that does not start."""

        async def attempt() -> tuple[int, bytes, str]:
            response = await self._send(method, path, body)
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            return response.status_code, raw, response.headers.get("content-type", "application/json")

        return await self._with_retries(attempt)

    async def _send(self, method: str, path: str, body: dict | None) -> UpstreamResponse:
        """One try: the response, or `TryAgain` for a 5xx."""
        started = time.perf_counter()
        raw = await self.session.request(method, f"{self.base_url}/{path}", json=body, allow_redirects=False)
        self.metrics.upstream_latency.labels(path.rsplit("/", 1)[-1]).observe(time.perf_counter() - started)
        if 300 <= raw.status < 400:  # not followed: the proxy calls the upstream it was given, and no other
            raw.close()
            where = raw.headers.get("location", "")[:200]
            message = f"the upstream answered {raw.status} (to {where!r}); start the proxy with the URL it names"
            raise OpenAIError(502, message, code="upstream_error")
        if raw.status < 500:
            return UpstreamResponse(raw, self.max_output_bytes)
        try:
            text = (await raw.content.read(500)).decode("utf-8", "replace")
        except (aiohttp.ClientError, asyncio.TimeoutError):
            text = ""
        raw.close()
        raise TryAgain(raw.status, text)

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(attempt, self.retries, BACKOFF, self._failure, self.metrics.upstream_retries.inc)

    def _failure(self, last: Exception, tries: int) -> OpenAIError:
        """The error for the client once the tries run out: 504 for a timeout, else 502."""
        if isinstance(last, TryAgain):
            message = f"the upstream answered {last.status} ({tries} tries): {last.message}"
            return OpenAIError(502, message, code="upstream_error")
        if isinstance(last, asyncio.TimeoutError):
            message = f"the upstream did not answer within {self.timeout} s ({tries} tries)"
            return OpenAIError(504, message, code="upstream_timeout")
        message = f"cannot reach the upstream at {self.base_url}: {last or type(last).__name__} ({tries} tries)"
        return OpenAIError(502, message, code="upstream_unreachable")

    async def close(self) -> None:
        await self.session.close()
