"""The OpenAI-compatible server behind `tfgrpo serve`: pooled aiohttp connections, retries with backoff,
and the upstream's failures as OpenAI-shaped 502 / 504 errors.

aiohttp rather than httpx: httpx's pool scans every pooled connection on each request (`is_idle`,
`has_expired`), which was over half of the proxy's CPU per request at 64 in flight."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import aiohttp

from .metrics import ProxyMetrics
from .openai_api import OpenAIError


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
        """The body's lines (server-sent events), without their line ends, however long they are."""
        rest = b""
        async for chunk in self.aiter_bytes():
            rest += chunk
            *lines, rest = rest.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
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
        endpoint = path.rsplit("/", 1)[-1]
        attempts = self.retries + 1
        url = f"{self.base_url}/{path}"
        for attempt in range(attempts):
            started = time.perf_counter()
            failure: OpenAIError
            try:
                raw = await self.session.request(method, url, json=body)
            except asyncio.TimeoutError:
                failure = OpenAIError(
                    504,
                    f"the upstream did not answer within {self.timeout} s ({attempts} tries)",
                    code="upstream_timeout",
                )
            except aiohttp.ClientError as exc:
                failure = OpenAIError(
                    502,
                    f"cannot reach the upstream at {self.base_url}: {exc or type(exc).__name__} ({attempts} tries)",
                    code="upstream_unreachable",
                )
            else:
                self.metrics.upstream_latency.labels(endpoint).observe(time.perf_counter() - started)
                response = UpstreamResponse(raw, self.max_output_bytes)
                if response.status_code < 500:
                    return response
                try:
                    text = (await raw.content.read(500)).decode("utf-8", "replace")
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    text = ""
                raw.close()
                failure = OpenAIError(
                    502,
                    f"the upstream answered {response.status_code} ({attempts} tries): {text}",
                    code="upstream_error",
                )
            if attempt + 1 < attempts:
                self.metrics.upstream_retries.inc()
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
        raise failure

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, str]:
        """(status, body, content type) of a whole upstream answer, at most `max_output_bytes`."""
        for attempt in range(self.retries + 1):
            response = await self.open(method, path, body)
            try:
                raw = await response.aread()
                return response.status_code, raw, response.headers.get("content-type", "application/json")
            except asyncio.TimeoutError:  # the answer started but stalled: the same as no answer
                if attempt == self.retries:
                    raise OpenAIError(
                        504, f"the upstream stalled for {self.timeout} s mid-answer", code="upstream_timeout"
                    ) from None
            finally:
                await response.aclose()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.session.close()
