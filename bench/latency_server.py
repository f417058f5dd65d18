"""A model-free OpenAI-compatible server for benchmarks: every completion is a fixed text after a fixed
delay, so a loop benchmark measures its own overhead (rollouts/s at high concurrency), not a model's.

    python bench/latency_server.py --delay 0.05 --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

Scope = dict[str, Any]


async def serve_lifespan(receive, send) -> None:
    """Answer an ASGI lifespan scope: startup and shutdown complete at once."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def create_latency_app(delay_s: float = 0.05, text: str = "ok", gather: int = 0, gather_timeout_s: float = 60.0):
    """A bare ASGI app (no framework, so the server is never the bottleneck). It answers
    /v1/chat/completions and /v1/completions with `n` copies of `text` after `delay_s` seconds, and
    /v1/models and /health at once. `app.state["requests"]` and `app.state["max_in_flight"]` count;
    GET /stats answers them with the requests in flight now and this process's CPU seconds.
    `gather`: the first completions wait until that many are in flight at once (a barrier for tests,
    released after `gather_timeout_s` if they never are)."""
    state = {"requests": 0, "in_flight": 0, "max_in_flight": 0}
    gathered: list[asyncio.Event] = []
    words = max(1, len(text.split()))

    async def send_json(send, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def completion(path: str, request: dict) -> dict:
        n = request.get("n") or 1
        chat = path.endswith("/chat/completions")
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            if gather:
                if not gathered:
                    gathered.append(asyncio.Event())
                if state["in_flight"] >= gather:
                    gathered[0].set()
                try:
                    await asyncio.wait_for(gathered[0].wait(), gather_timeout_s)
                except asyncio.TimeoutError:
                    pass
            await asyncio.sleep(delay_s)
        finally:
            state["in_flight"] -= 1
        if chat:
            choices = [
                {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                for i in range(n)
            ]
        else:
            choices = [{"index": i, "text": text, "finish_reason": "stop", "logprobs": None} for i in range(n)]
        return {
            "id": f"latency-{state['requests']}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": request.get("model") or "latency",
            "choices": choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": words * n, "total_tokens": 1 + words * n},
        }

    async def app(scope: Scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/stats":  # for the benchmark's own sampling: not counted as a request
            await send_json(send, 200, {**state, "cpu_seconds": time.process_time()})
            return
        state["requests"] += 1
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                await send_json(send, 400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
                return
            await send_json(send, 200, await completion(path, request))
        elif method == "GET" and path == "/v1/models":
            await send_json(send, 200, {"object": "list", "data": [{"id": "latency", "object": "model"}]})
        elif method == "GET" and path == "/health":
            await send_json(send, 200, {"status": "ok"})
        else:
            await send_json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})

    app.state = state
    return app


def serve_latency(delay_s: float = 0.05, text: str = "ok", host: str = "127.0.0.1", port: int = 8001) -> None:
    import uvicorn

    # backlog: accept bursts of hundreds of concurrent connections without refusals.
    uvicorn.run(create_latency_app(delay_s, text), host=host, port=port, log_level="warning", backlog=4096)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before each answer (default 0.05)")
    parser.add_argument("--text", default="ok", help="the completion text (default 'ok')")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    serve_latency(args.delay, args.text, args.host, args.port)


if __name__ == "__main__":
    main()
