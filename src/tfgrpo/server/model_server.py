"""`tfgrpo serve-model`: any backend behind an OpenAI-compatible HTTP API (chat and text completions,
streamed or not), so that every OpenAI client, and `OpenAIBackend` itself, can use a local model.

It is built to stay up: request limits (`ServerLimits`), features it does not implement refused by name,
work cancelled when the client disconnects, and an optional API key. docs/reliability.md lists them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..errors import ConfigError
from ..llm.base import Backend, Generation, GenerationParams, Prompt
from ..llm.guidance import GuidanceConfig, GuidedBackend
from ._streaming import ClientDisconnected, EventStream, until_disconnected
from .guards import ApiKey, BodyLimit
from .limits import ServerLimits, check_limits
from .openai_api import (
    UNSUPPORTED,
    UNSUPPORTED_WITH_STRUCTURED_OUTPUT,
    bad_request,
    install_error_handlers,
    parse,
    read_json,
    refuse_unsupported,
)


def _json_number(value: Any) -> Any:
    # pydantic's lax mode reads true as 1 and "2" as 2; JSON has numbers for these fields, and anything
    # else is a wrong type (a 400, as OpenAI answers it), not a value to guess.
    if isinstance(value, (bool, str)):
        raise ValueError(f"must be a number, not {'a boolean' if isinstance(value, bool) else 'a string'}")
    return value


def _json_bool(value: Any) -> Any:
    if not isinstance(value, bool) and value is not None:
        raise ValueError(f"must be true or false, not {value!r:.40}")
    return value


Int = Annotated[int, BeforeValidator(_json_number)]
Float = Annotated[float, BeforeValidator(_json_number)]
Bool = Annotated[bool, BeforeValidator(_json_bool)]


class _Request(BaseModel):
    """Fields shared by both endpoints. Fields this server does not implement are refused before this
    model sees them (`refuse_unsupported`); fields nobody documents are ignored."""

    model_config = ConfigDict(extra="ignore")

    # None (or left out) means the default: OpenAI's for n, temperature and top_p, 256 for max_tokens.
    model: str | None = None
    n: Int | None = None
    temperature: Float | None = None
    top_p: Float | None = None
    max_tokens: Int | None = None
    stop: str | list[str] | None = None
    seed: Int | None = None
    logit_bias: dict[str, Float] | None = None
    response_format: dict[str, Any] | None = None  # a JSON schema, when the backend honours one
    stream: Bool | None = None
    stream_options: dict[str, Any] | None = None

    def params(self, max_tokens: int | None = None) -> GenerationParams:
        """Validated sampling parameters (ConfigError, hence a 400, when a value cannot work)."""
        return GenerationParams(
            n=1 if self.n is None else self.n,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            max_tokens=next((m for m in (max_tokens, self.max_tokens) if m is not None), 256),
            stop=[self.stop] if isinstance(self.stop, str) else self.stop,
            seed=self.seed,
            logit_bias=_token_ids(self.logit_bias),
            response_format=self.response_format if (self.response_format or {}).get("type") == "json_schema" else None,
        )


def _token_ids(bias: dict[str, float] | None) -> dict[int, float] | None:
    """OpenAI's `logit_bias` (JSON object keys are strings) keyed by token id; a 400 for a key that is not one."""
    if bias is None:
        return None
    ids: dict[int, float] = {}
    for key, value in bias.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 10):  # ids are below 2**31
            raise bad_request(
                f'logit_bias: the key {key!r:.40} is not a token id; use whole numbers >= 0 such as "50256"',
                param="logit_bias",
            )
        ids[int(key)] = value
    return ids


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
    max_completion_tokens: Int | None = None


class CompletionRequest(_Request):
    prompt: str | list[str]


def _usage(groups: list[list[Generation]]) -> dict[str, int]:
    prompt = sum(group[0].prompt_tokens or 0 for group in groups if group)
    completion = sum(g.completion_tokens or 0 for group in groups for g in group)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _include_usage(request: _Request) -> bool:
    return bool((request.stream_options or {}).get("include_usage"))


async def _stream_chunks(
    backend: Backend, prompts: list[Prompt], params: GenerationParams, chat: bool, envelope: dict[str, Any], usage: bool
) -> AsyncGenerator[dict[str, Any], None]:
    """OpenAI chunks for `prompts` (choice index = prompt * n + choice), generated one prompt after the
    other: a role chunk per chat choice, content deltas, a finish chunk per choice, and with `usage` a
    last chunk with no choices and the token counts."""

    def chunk(index: int, text: str | None = None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
            choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        return {**envelope, "choices": [choice]}

    groups: list[list[Generation]] = []
    for p, prompt in enumerate(prompts):
        offset = p * params.n
        if chat:
            for i in range(params.n):
                yield chunk(offset + i, role=True)
        finals: dict[int, Generation] = {}
        stream = backend.astream(prompt, params, chat=chat)
        try:
            async for delta in stream:
                if delta.text:
                    yield chunk(offset + delta.index, delta.text)
                if delta.final is not None:
                    finals[delta.index] = delta.final
                    yield chunk(offset + delta.index, finish=delta.final.finish_reason or "stop")
        finally:
            await stream.aclose()
        groups.append([finals[i] for i in sorted(finals)])
    if usage:
        yield {**envelope, "choices": [], "usage": _usage(groups)}


def create_app(
    backend: Backend,
    model_name: str | None = None,
    *,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """The OpenAI-compatible app. A blocking (local) backend generates in a worker thread, one request
    at a time (the backend holds a lock), so the event loop keeps answering /health (and /healthz) and queued clients.
    Every request body is checked against `limits` (defaults: `ServerLimits()`); with `api_key`, every
    route but the health checks needs `Authorization: Bearer <api_key>`."""
    name = model_name or backend.model_name
    limits = limits or ServerLimits()
    app = FastAPI(title="tfgrpo serve-model", version="1")
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if api_key:
        app.add_middleware(ApiKey, api_key=api_key)  # outermost: no body is read for a wrong key

    async def checked(request: Request, model: type[_Request]) -> Any:
        body = await read_json(request)
        refuse_unsupported(body, UNSUPPORTED_WITH_STRUCTURED_OUTPUT if backend.structured_output else UNSUPPORTED)
        check_limits(body, limits)
        return parse(model, body)

    def envelope(kind: str, prefix: str) -> dict[str, Any]:
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": name}

    async def answer(request: Request, work) -> Any:
        try:
            return await until_disconnected(request.receive, work)
        except ClientDisconnected:
            return Response(status_code=499)  # nobody is listening; the backend work was cancelled

    @app.get("/health")
    @app.get("/healthz")  # the name `tfgrpo serve` answers to, so one probe fits both servers
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tfgrpo"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        chat = await checked(request, ChatRequest)
        params = chat.params(chat.max_completion_tokens)
        messages = [m.as_dict() for m in chat.messages]
        if chat.stream:
            head = envelope("chat.completion.chunk", "chatcmpl")
            return EventStream(_stream_chunks(backend, [messages], params, True, head, _include_usage(chat)))

        async def work() -> dict[str, Any]:
            group = await backend.agenerate(messages, params, chat=True)
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": g.text},
                    "finish_reason": g.finish_reason,
                    "logprobs": None,
                }
                for i, g in enumerate(group)
            ]
            return {**envelope("chat.completion", "chatcmpl"), "choices": choices, "usage": _usage([group])}

        return await answer(request, work())

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        completion = await checked(request, CompletionRequest)
        params = completion.params()
        prompts = [completion.prompt] if isinstance(completion.prompt, str) else completion.prompt
        if not prompts:
            raise ConfigError("prompt must be a string or a non-empty list of strings")
        if completion.stream:
            head = envelope("text_completion", "cmpl")
            return EventStream(_stream_chunks(backend, prompts, params, False, head, _include_usage(completion)))

        async def work() -> dict[str, Any]:
            groups = await asyncio.gather(*(backend.agenerate(p, params, chat=False) for p in prompts))
            choices = [
                {"index": i * params.n + j, "text": g.text, "finish_reason": g.finish_reason, "logprobs": None}
                for i, group in enumerate(groups)
                for j, g in enumerate(group)
            ]
            return {**envelope("text_completion", "cmpl"), "choices": choices, "usage": _usage(groups)}

        return await answer(request, work())

    return app


def serve(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str | None = None,
    log_level: str = "info",
    *,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
) -> None:
    """Serve `backend` until interrupted (Ctrl-C)."""
    import uvicorn

    app = create_app(backend, model_name, limits=limits, api_key=api_key)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def run_model_server(
    backend_spec: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str | None = None,
    *,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    guidance: GuidanceConfig | None = None,
    library: Any = None,
) -> None:
    """What `tfgrpo serve-model` runs: make the backend from its spec (see `tfgrpo.llm.get_backend`),
    serve it (with `guidance` and `library`: every answer guided by the library's successes for its
    request, `GuidedBackend`), and release it on exit."""
    from ..llm import get_backend

    backend = get_backend(backend_spec)
    try:
        served = GuidedBackend(backend, library, guidance) if guidance is not None else backend
        where = f"http://{host}:{port}/v1" + (" (API key required)" if api_key else "")
        guided = f", guided by {len(library)} experiences ({guidance.guidance})" if guidance is not None else ""
        print(f"serving {model_name or backend.model_name} ({backend_spec}){guided} at {where}", flush=True)
        serve(served, host, port, model_name, limits=limits, api_key=api_key)
    finally:
        backend.close()
