"""Work that stops when the client goes away, and OpenAI server-sent events: a `data: {json}` event per
chunk, then `data: [DONE]`. A client that disconnects cancels the work, streamed or not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, TypeVar

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import ConfigError, TFGRPOError
from .openai_api import OpenAIError

T = TypeVar("T")
log = logging.getLogger(__name__)


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready; the work was cancelled."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the server reports that the client has gone (call after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it (and wait for it to wind down) and raise
    `ClientDisconnected`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected
    finally:
        watcher.cancel()
        task.cancel()


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


DONE = sse("[DONE]")


class EventStream(StreamingResponse):
    """A `text/event-stream` response of OpenAI chunks: one event per dict that `events` yields, then
    `data: [DONE]`. When the client disconnects, `events` is closed at once (which cancels the work
    behind it). An error after the stream has begun is sent as a last `data: {"error": ...}` event, as
    OpenAI does, since the status line has already gone."""

    def __init__(self, events: AsyncGenerator[dict[str, Any], None]) -> None:
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        # `__call__` writes the body from `events`, so the parent's byte iterator stays empty and unused.
        super().__init__((), media_type="text/event-stream", headers=headers)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def body(data: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            try:
                async for event in self.events:
                    await body(sse(event))
                await body(DONE)
            except OpenAIError as exc:
                await body(sse(exc.body()))
            except TFGRPOError as exc:
                await body(sse(OpenAIError(400 if isinstance(exc, ConfigError) else 500, str(exc)).body()))
            except Exception as exc:  # the status line is sent: all that is left is to say so in the stream
                log.exception("streamed generation failed")
                await body(sse(OpenAIError(500, f"internal error ({type(exc).__name__})").body()))
            await body(b"", more=False)

        try:
            await until_disconnected(receive, pump())
        except (ClientDisconnected, OSError):
            pass
        finally:
            await self.events.aclose()
