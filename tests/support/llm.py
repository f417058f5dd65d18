"""Shared helpers for the backend and server tests: the bundled model (loaded once per session), a real
uvicorn server in a thread, and scriptable stand-in HTTP servers for failures the real thing cannot
produce on demand (429 with Retry-After, 5xx, hangs, dropped connections)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from a model hub during the tests
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@functools.lru_cache(maxsize=1)
def _load_bundled():
    from tfgrpo.errors import BackendError
    from tfgrpo.llm.local import TransformersBackend, bundled_model_path

    try:
        bundled_model_path()
    except BackendError as exc:
        return exc
    # One thread: on a 2-core machine shared with other busy processes, two torch threads that wait on
    # each other run many times slower than one.
    return TransformersBackend(device="cpu", num_threads=1)


def bundled_backend():
    """The bundled SmolLM2 backend, one per test session (loading takes ~20 s on CPU)."""
    backend = _load_bundled()
    if isinstance(backend, Exception):
        if os.environ.get("CI"):  # `make test` installs the model: its absence in CI is a failure
            pytest.fail(str(backend))
        pytest.skip(str(backend))
    return backend


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class UvicornThread:
    """A real uvicorn server for an ASGI app on 127.0.0.1, on a port the OS picks, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", backlog=1024))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@dataclass
class Reply:
    """What a stand-in does with one request: answer (status, JSON body, headers) or drop the connection."""

    status: int = 200
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    raw: bytes | None = None
    """The body's bytes as sent, instead of `body` as JSON (for answers no JSON encoder writes)."""


def chat_reply(texts: list[str], prompt_tokens: int = 10, completion_tokens: int = 5, chat: bool = True) -> Reply:
    """A successful (chat) completion with one choice per text."""
    if chat:
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ]
    else:
        choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)]
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    usage["total_tokens"] = prompt_tokens + completion_tokens
    body = {
        "id": "x",
        "object": "chat.completion" if chat else "text_completion",
        "created": 0,
        "model": "stand-in",
        "choices": choices,
        "usage": usage,
    }
    return Reply(body=body)


def error_reply(status: int, message: str = "stand-in error", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "stand_in", "code": None}}, headers or {})


Behaviour = Callable[[int, str, dict], Awaitable[Reply]]
"""async (request index, path, JSON body) -> Reply; it may sleep to be slow or hang."""


def gathering(n: int, answer: Callable[[dict], Reply], timeout: float = 60.0) -> Behaviour:
    """A behaviour that holds the first requests until `n` of them are in flight at once (a barrier),
    then answers every request with `answer(body)`. A client that never has `n` in flight is answered
    after `timeout`, so a test fails on its count instead of hanging; no test waits on the clock."""
    state: dict = {"arrived": 0, "full": None}

    async def behaviour(index: int, path: str, body: dict) -> Reply:
        if state["full"] is None:
            state["full"] = asyncio.Event()
        state["arrived"] += 1
        if state["arrived"] >= n:
            state["full"].set()
        try:
            await asyncio.wait_for(state["full"].wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return answer(body)

    return behaviour


class StandIn:
    """A real HTTP/1.1 server on 127.0.0.1 (asyncio, in a thread) that answers as a test scripts it.

    It records every request (path, JSON body, headers, arrival time) and the most requests in flight at once.
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[tuple[str, dict]] = []
        self.headers: list[dict[str, str]] = []  # lower-case names
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def bodies(self) -> list[dict]:
        return [body for _, body in self.requests]

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: several requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                body = json.loads(raw) if raw else {}
                index = len(self.requests)
                self.requests.append((f"{method} {path}", body))
                self.headers.append(headers)
                self.arrivals.append(time.monotonic())
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    reply = await self.behaviour(index, path, body)
                finally:
                    self.in_flight -= 1
                if reply.drop:
                    writer.transport.abort()  # no answer at all: the connection just goes away
                    return
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body or {}).encode()
                status_line = f"HTTP/1.1 {reply.status} X\r\n"
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(
                    (
                        f"{status_line}content-type: application/json\r\ncontent-length: {len(payload)}\r\n{extra}\r\n"
                    ).encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> StandIn:
        self.thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
