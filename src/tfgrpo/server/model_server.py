"""`tfgrpo serve-model`: any backend behind an OpenAI-compatible HTTP API (chat and text completions),
so that every OpenAI client, and `OpenAIBackend` itself, can use a local model."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..errors import BackendError, ConfigError
from ..llm.base import Backend, Generation, GenerationParams


class _Request(BaseModel):
    """Fields shared by both endpoints; unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    # None (or left out) means the default: OpenAI's for n, temperature and top_p, 256 for max_tokens.
    model: str | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool | None = None

    def params(self, max_tokens: int | None = None) -> GenerationParams:
        """Validated sampling parameters (ConfigError, hence a 400, when a value cannot work)."""
        if self.stream:
            raise ConfigError("stream=true is not supported by this server; send stream=false")
        return GenerationParams(
            n=1 if self.n is None else self.n,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            max_tokens=next((m for m in (max_tokens, self.max_tokens) if m is not None), 256),
            stop=[self.stop] if isinstance(self.stop, str) else self.stop,
            seed=self.seed,
            logit_bias=self.logit_bias,
        )


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str = ""


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[_TextPart] | None = None

    def as_dict(self) -> dict[str, str]:
        content = self.content
        if isinstance(content, list):
            if any(part.type != "text" for part in content):
                raise ConfigError("only text content parts are supported")
            content = "".join(part.text for part in content)
        return {"role": self.role, "content": content or ""}


class ChatRequest(_Request):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = None


class CompletionRequest(_Request):
    prompt: str | list[str]


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status)


def _usage(groups: list[list[Generation]]) -> dict[str, int]:
    prompt = sum(group[0].prompt_tokens or 0 for group in groups if group)
    completion = sum(g.completion_tokens or 0 for group in groups for g in group)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def create_app(backend: Backend, model_name: str | None = None) -> FastAPI:
    """The OpenAI-compatible app. A blocking (local) backend generates in a worker thread, one request
    at a time (the backend holds a lock), so the event loop keeps answering /health and queued clients."""
    name = model_name or backend.model_name
    app = FastAPI(title="tfgrpo serve-model", version="1")

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(400, f"{param or 'body'}: {first.get('msg', 'invalid request')}", param=param)

    @app.exception_handler(ConfigError)
    async def bad_params(_: Request, exc: ConfigError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(BackendError)
    async def backend_failed(_: Request, exc: BackendError) -> JSONResponse:
        return _error(500, str(exc), "server_error")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(
            exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error"
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tfgrpo"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> dict[str, Any]:
        params = request.params(request.max_completion_tokens)
        group = await backend.agenerate([m.as_dict() for m in request.messages], params, chat=True)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": g.finish_reason,
                "logprobs": None,
            }
            for i, g in enumerate(group)
        ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": _usage([group]),
        }

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> dict[str, Any]:
        params = request.params()
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if not prompts:
            raise ConfigError("prompt must be a string or a non-empty list of strings")
        groups = await asyncio.gather(*(backend.agenerate(p, params, chat=False) for p in prompts))
        choices = [
            {"index": i * params.n + j, "text": g.text, "finish_reason": g.finish_reason, "logprobs": None}
            for i, group in enumerate(groups)
            for j, g in enumerate(group)
        ]
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": _usage(groups),
        }

    return app


def serve(
    backend: Backend, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None, log_level: str = "info"
) -> None:
    """Serve `backend` until interrupted (Ctrl-C)."""
    import uvicorn

    uvicorn.run(create_app(backend, model_name), host=host, port=port, log_level=log_level)


def run_model_server(
    backend_spec: str, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None
) -> None:
    """What `tfgrpo serve-model` runs: make the backend from its spec (see `tfgrpo.llm.get_backend`),
    serve it, and release it on exit."""
    from ..llm import get_backend

    backend = get_backend(backend_spec)
    try:
        print(f"serving {model_name or backend.model_name} ({backend_spec}) at http://{host}:{port}/v1", flush=True)
        serve(backend, host, port, model_name)
    finally:
        backend.close()
