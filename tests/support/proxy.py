"""`tfgrpo serve` in a test: a scripted OpenAI-compatible upstream (a bare ASGI app, run in a real uvicorn
server by the `upstream` fixture of tests/server/conftest.py) and the real proxy in front of it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from latency_server import read_body, serve_lifespan
from support.llm import UvicornThread, free_port, wait_until
from tfgrpo.core.library import TrainingFreeGRPO
from tfgrpo.semantic.lessons import LessonLibrary
from tfgrpo.semantic.operations import Operation
from tfgrpo.server.config import ProxyConfig
from tfgrpo.server.proxy import create_proxy_app

if TYPE_CHECKING:
    import openai

Q = "What is 17 + 25?"


class Upstream:
    """A scripted OpenAI-compatible server (bare ASGI). `script` is a list of actions consumed one per
    completion request: "ok" (texts "ok-0".."ok-{n-1}"), ("status", code), "hang" (waits until the
    client disconnects, then sets `cancelled`), "stall" (the same, after the status and part of the body),
    "wait" (answers once `release` is set), ("tools", calls),
    ("texts", [...]), ("raw", bytes) (a 200 with that body, as hostile as a test needs), ("redirect",) (a 307
    to the same URL), ("events", [data...],
    end) (a stream of those `data:` lines, then `end`: "done", "break" (the connection drops mid-answer) or
    "stall"). Empty script: "ok". Every completion request's JSON body is kept in `bodies`."""

    def __init__(self) -> None:
        self.script: list = []
        self.bodies: list[dict] = []
        self.cancelled = threading.Event()
        self.hanging = threading.Event()
        self.release = threading.Event()

    def choice(self, chat: bool, i: int, text: str, tools=None) -> dict:
        if not chat:
            return {"index": i, "text": text, "finish_reason": "stop", "logprobs": None}
        message = {"role": "assistant", "content": None if tools else text}
        if tools:
            message["tool_calls"] = tools
        return {"index": i, "message": message, "finish_reason": "tool_calls" if tools else "stop", "logprobs": None}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = await read_body(receive)

        async def answer(status: int, payload) -> None:
            raw = json.dumps(payload).encode()
            await send(
                {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": raw})

        path = scope["path"]
        if path == "/v1/models":
            await answer(200, {"object": "list", "data": [{"id": "scripted", "object": "model", "owned_by": "x"}]})
            return
        request = json.loads(body)
        self.bodies.append(request)
        action = self.script.pop(0) if self.script else "ok"
        chat = path.endswith("/chat/completions")
        n = request.get("n") or 1
        if action == "wait":  # answers "ok" once the test sets `release`
            self.hanging.set()
            while not self.release.is_set():
                await asyncio.sleep(0.005)
            action = "ok"
        if action == "stall":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": b'{"id": "upstream-id", ', "more_body": True})
            action = "hang"
        if action == "hang":
            self.hanging.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            self.cancelled.set()
            return
        if isinstance(action, tuple) and action[0] == "raw":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": action[1]})
            return
        if isinstance(action, tuple) and action[0] == "events":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            for data in action[1]:
                await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
            if action[2] == "break":
                raise ConnectionAbortedError("scripted: the upstream drops the connection mid-answer")
            if action[2] == "stall":
                self.hanging.set()
                while (await receive())["type"] != "http.disconnect":
                    pass
                return
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        if isinstance(action, tuple) and action[0] == "redirect":  # to the same path: answered if followed
            location = f"http://127.0.0.1:{scope['server'][1]}{path}".encode()
            await send({"type": "http.response.start", "status": 307, "headers": [(b"location", location)]})
            await send({"type": "http.response.body", "body": b""})
            return
        if isinstance(action, tuple) and action[0] == "status":
            await answer(action[1], {"error": {"message": f"scripted {action[1]}", "type": "scripted", "code": None}})
            return
        tools = action[1] if isinstance(action, tuple) and action[0] == "tools" else None
        texts = action[1] if isinstance(action, tuple) and action[0] == "texts" else [f"ok-{i}" for i in range(n)]
        choices = [self.choice(chat, i, t, tools) for i, t in enumerate(texts)]
        if request.get("stream"):
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            for i, t in enumerate(texts):
                for piece, finish in ((t[:2], None), (t[2:], None), ("", "stop")):
                    if chat:
                        delta = {"content": piece} if finish is None else {}
                        part = {"index": i, "delta": delta, "finish_reason": finish}
                    else:
                        part = {"index": i, "text": piece, "finish_reason": finish}
                    kind = "chat.completion.chunk" if chat else "text_completion"
                    chunk = {"id": "up", "object": kind, "created": 0, "model": "scripted", "choices": [part]}
                    event = f"data: {json.dumps(chunk)}\n\n".encode()
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        await answer(
            200,
            {
                "id": "upstream-id",
                "object": "chat.completion" if chat else "text_completion",
                "created": 0,
                "model": request.get("model", "scripted"),
                "choices": choices,
                "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n, "total_tokens": 3 + 2 * n},
                "system_fingerprint": "fp-scripted",
            },
        )


class Proxy:
    def __init__(self, upstream: Upstream, path: Path, config: ProxyConfig = ProxyConfig(), **kwargs) -> None:
        self.path = path
        self.app = create_proxy_app(upstream.url, kwargs.pop("libraries", {"lib": path}), config, **kwargs)
        self.thread = UvicornThread(self.app)

    def __enter__(self) -> Proxy:
        self.thread.__enter__()
        self.url = self.thread.url
        return self

    def __exit__(self, *exc) -> None:
        self.thread.__exit__(*exc)

    def client(self, key: str = "none", **kwargs) -> openai.OpenAI:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)

    def post(self, path: str, body, key: str | None = None, **kwargs) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body).encode()  # ASCII-escaped, so a lone surrogate gets through as \ud800
        if isinstance(body, (bytes, str)):
            return httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=30, **kwargs)
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30)

    @property
    def library(self):
        return self.app.service.libraries["lib"]


def chat(client, content: str = Q, **kwargs):
    return client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": content}], **kwargs)


def seeded_library(path: Path, lessons: bool = True) -> TrainingFreeGRPO:
    """A library with experiences about additions and (optionally) two lessons."""
    grpo = TrainingFreeGRPO.open(path)
    grpo.add_rollout_group([("What is 2 + 3?", "2 + 3 = 5. The answer is 5."), ("What is 2 + 3?", "6")], [1.0, 0.0])
    grpo.add_rollout_group([("Name a colour.", "Blue."), ("Name a colour.", "42")], [1.0, 0.0])
    grpo.close()
    if lessons:
        with LessonLibrary(path) as lib:
            lib.apply(
                [
                    Operation("add", text="Add the tens first, then the ones."),
                    Operation("add", text="End with 'The answer is N.'"),
                ]
            )
    return grpo


class Deployment:
    """`tfgrpo serve --workers N` as a process of its own, and a client connection pinned to each worker."""

    def __init__(self, upstream: Upstream, library: Path | str, workers: int = 2, *extra: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        main = "import sys; from tfgrpo.cli import main; sys.exit(main())"
        command = [sys.executable, "-c", main, "serve", "--upstream", upstream.url, "--library", str(library),
                   "--port", str(self.port), "--lessons-every", "0", "--shots", "0", "--workers", str(workers),
                   "--group-size", "2", *extra]  # fmt: skip
        self.log = open(log, "ab")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.clients: dict[int, httpx.Client] = {}
        wait_until(lambda: self.connect(workers), timeout=180, what=f"a connection to each of {workers} workers")

    def connect(self, workers: int) -> bool:
        """Open connections until one is held by each worker (the kernel hands each to one of them)."""
        if self.process.poll() is not None:
            raise AssertionError(f"tfgrpo serve exited with {self.process.returncode}")
        client = httpx.Client(base_url=self.url, timeout=60)
        try:
            pid = int(client.get("/healthz").headers["x-tfgrpo-worker"])
        except httpx.HTTPError:
            client.close()
            return False
        if pid in self.clients:
            client.close()
        else:
            self.clients[pid] = client
        return len(self.clients) >= workers

    @property
    def workers(self) -> list[int]:
        return sorted(self.clients)

    def chat(self, worker: int, content: str, **body) -> dict:
        payload = {"model": "scripted", "messages": [{"role": "user", "content": content}], **body}
        response = self.clients[worker].post("/v1/chat/completions", json=payload)
        assert response.status_code == 200, response.text
        assert int(response.headers["x-tfgrpo-worker"]) == worker
        return response.json()

    def feedback(self, worker: int, body: dict) -> dict:
        response = self.clients[worker].post("/v1/feedback", json=body)
        assert response.status_code == 200, response.text
        assert int(response.headers["x-tfgrpo-worker"]) == worker
        return response.json()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        for client in self.clients.values():
            client.close()
        self.process.send_signal(sig)
        code = self.process.wait(120)
        self.log.close()
        return code
