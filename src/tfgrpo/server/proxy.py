"""`tfgrpo serve`: an OpenAI-compatible proxy that puts what a library has learned into every request and
keeps learning from the rewards it is told about.

For each chat or text completion the caller's library gives its lessons and up to `shots` experiences
for the request's prompt (`select_examples`, `with_lessons`, `build_prompt` / `inject_messages`: the
functions training and evaluation use), within the token budget; the request goes upstream with every
other field untouched; the answer comes back with the proxy's completion id and a `tfgrpo` field saying
what was injected. Rewards arrive by `POST /v1/feedback` (or from `--reward`, best-of-G); groups form as
`records.py` describes and go into the library through the training loop's own update strategies:
`ExampleUpdate` as soon as a group is complete, `LessonUpdate` in the background every
`lessons_every` groups with signal.

A restart loses nothing acknowledged: completions are recorded before their answer is sent, feedback is
committed before its 200, and the groups formed but not yet in the library (the library stores the last
group it learned, in the same transaction as the experiences) are learned when the proxy starts again.

Beside this module: `upstream.py` (the aiohttp client of the upstream, retries, 502/504), `served.py`
(one served library, its retrieval and its learner on a worker thread), `records.py` (the durable
completion records, feedback and groups).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..core.formats import is_sqlite_path
from ..core.knobs import knob
from ..errors import BackendError, ConfigError
from ..loop.rollouts import RETRIEVAL_MODES, SELECT_MODES, PromptingConfig
from ..loop.tracking import Tracker
from ..loop.updates import LessonUpdate
from ..prompting import build_prompt, inject_messages
from ..rewards.base import Reward
from . import records
from .guards import BodyLimit, bearer_token
from .limits import ServerLimits, check_limits
from .metrics import Observe, ProxyMetrics, log_fields
from .openai_api import OpenAIError, bad_request, install_error_handlers, read_json
from .served import ServedLibrary
from .streaming import ClientDisconnected, EventStream, until_disconnected
from .tenants import Keys, Tenant
from .upstream import Upstream

log = logging.getLogger("tfgrpo.serve")


@dataclass(frozen=True)
class ProxyConfig(PromptingConfig):
    """Every knob of `tfgrpo serve` (each is a CLI flag: `shots` -> `--shots`)."""

    select: str = knob(
        "retrieve", "how examples are chosen: by relevance (retrieve) or by advantage (sample)", choices=SELECT_MODES
    )
    retrieval_mode: str = knob(
        "lexical", "with --select retrieve: lexical (BM25), semantic or hybrid", choices=RETRIEVAL_MODES
    )
    placement: str = knob(
        "system", "where lessons go: the system message or before the user's text", choices=("system", "user")
    )
    group_size: int = knob(
        4,
        "G: with --reward, choices sampled per request; without, n=1 completions of one prompt whose "
        "feedback forms a group",
        minimum=2,
        maximum=64,
    )
    group_window: float = knob(86400.0, "seconds an n=1 completion may wait for the rest of its group", minimum=1)
    holdout: float = knob(
        0.0, "share of requests served without the library (online A/B: GET .../lift)", minimum=0.0, maximum=1.0
    )
    return_choice: str = knob(
        "best",
        "with --reward: return the best-scored choice or the first sampled",
        choices=("best", "first"),
        flag="--return",
    )
    lessons_every: int = knob(8, "run the lessons update after this many new groups with signal (0: never)", minimum=0)
    retries: int = knob(
        2, "times an upstream 5xx or timeout is tried again (with backoff) before a 502/504", minimum=0, maximum=10
    )
    timeout: float = knob(120.0, "seconds to wait for the upstream (connect and each read)", minimum=0.1)
    max_output_bytes: int = knob(16 * 1024 * 1024, "most bytes of one upstream answer", minimum=1024)
    seed: int | None = knob(None, "seed of the holdout draws and of example sampling")


# ---------------------------------------------------------------------------------------------- requests


def _prompt_text(body: dict, chat: bool) -> str | None:
    """The caller's text the library is asked about: the last user message (chat; its text parts
    joined) or the prompt (text completions). None when there is none to inject into."""
    if not chat:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        return prompt if isinstance(prompt, str) else None
    messages = body["messages"]
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last is None:
        return None
    content = last.get("content")
    if (
        isinstance(content, list)
        and content
        and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content)
    ):
        return "".join(p["text"] for p in content)
    return content if isinstance(content, str) else None


def _check_body(body: dict, chat: bool) -> int:
    """The request's n, after checking the fields the proxy itself reads (the rest is the upstream's)."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("messages: must be a non-empty list of messages", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise bad_request(f"messages.{i}: must be an object with a string role", param=f"messages.{i}")
    elif "prompt" not in body:
        raise bad_request("prompt: required", param="prompt")
    elif isinstance(body["prompt"], list) and len(body["prompt"]) > 1:
        raise bad_request(
            "prompt: tfgrpo serve takes one prompt per request (send one request per prompt)", param="prompt"
        )
    n = body.get("n", 1)
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise bad_request(f"n: must be a whole number >= 1, got {json.dumps(n)[:50]}", param="n")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise bad_request("stream: must be true or false", param="stream")
    extra = body.get("tfgrpo")
    if extra is not None and (not isinstance(extra, dict) or not isinstance(extra.get("sample", {}), dict)):
        raise bad_request('tfgrpo: must be an object such as {"sample": {"answer": "42"}}', param="tfgrpo")
    return n


def _choice_text(choice: dict, chat: bool) -> str:
    if not chat:
        return choice.get("text") or ""
    message = choice.get("message") or {}
    content = message.get("content")
    if isinstance(content, str) and content:
        return content
    calls = message.get("tool_calls")
    return json.dumps(calls, ensure_ascii=False) if calls else ""


async def _as_chunks(data: dict, chat: bool) -> AsyncGenerator[dict[str, Any], None]:
    """A whole completion as the stream chunks that would have carried it."""
    head = {k: data[k] for k in ("id", "created", "model") if k in data}
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    for i, choice in enumerate(data["choices"]):
        if chat:
            delta = {k: v for k, v in (choice.get("message") or {}).items() if v is not None}
            piece = {"index": i, "delta": delta, "finish_reason": choice.get("finish_reason"), "logprobs": None}
        else:
            piece = {**choice, "index": i}
        yield {**head, "choices": [piece], **({"tfgrpo": data["tfgrpo"]} if i == 0 else {})}


def _finite(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{param}: must be a finite number, got {json.dumps(value)[:50]}", param=param)
    return float(value)


def create_proxy_app(
    upstream_url: str,
    libraries: dict[str, str | Path],
    config: ProxyConfig = ProxyConfig(),
    *,
    keys: Keys | None = None,
    limits: ServerLimits = ServerLimits(),
    reward: Reward | None = None,
    upstream_api_key: str | None = None,
    upstream_model: str | None = None,
    lessons: dict[str, Any] | None = None,
    tracker: Tracker | None = None,
) -> ProxyApp:
    """The proxy app. `libraries`: name -> SQLite file (with `keys`, the keys file's; without, one).
    `reward`: best-of-G with `config.group_size` choices. `lessons`: the lessons update in the
    background: {"update": factory(LessonLibrary) -> LessonUpdate, "policy": Backend, "config": TrainConfig}.
    `tracker`: each library's figures (size, lessons, groups, feedback, lift) as it learns, and its file at
    shutdown, when the tracker is closed."""
    if keys is None and len(libraries) != 1:
        raise ConfigError("without --keys tfgrpo serve serves exactly one library")
    for path in libraries.values():
        if not is_sqlite_path(path):
            raise ConfigError(f"tfgrpo serve keeps its records in the library file, which must be SQLite (.db): {path}")
    metrics = ProxyMetrics()
    state: dict[str, Any] = {}
    rng = random.Random(config.seed)
    default_library = next(iter(libraries))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        served: dict[str, ServedLibrary] = {}
        try:
            for name, path in libraries.items():
                served[name] = ServedLibrary(name, path, config, metrics, tracker)
                if lessons is not None:
                    served[name].lesson_update = lessons["update"](served[name].lessons)
                    served[name].lesson_context = {**lessons, "reward": reward}
                await served[name].start()
            state["libraries"] = served
            state["upstream"] = Upstream(
                upstream_url,
                metrics,
                retries=config.retries,
                timeout=config.timeout,
                max_output_bytes=config.max_output_bytes,
                api_key=upstream_api_key,
                model=upstream_model,
            )
            log.info("serving", extra=log_fields(upstream=upstream_url, libraries=sorted(served)))
            yield
        finally:
            # uvicorn has finished the requests in flight: commit what they queued, learn what it formed.
            if "upstream" in state:
                await state["upstream"].close()
            for lib in served.values():
                await lib.close()
            if tracker is not None:  # here: after a signal uvicorn re-raises it, and nothing after run() runs
                tracker.close()
            log.info("stopped", extra=log_fields(libraries=sorted(served)))

    app = FastAPI(title="tfgrpo serve", version="1", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics)

    def tenant_of(request: Request, admin: bool = False) -> Tenant:
        if keys is None:
            return Tenant(default_library, "admin")
        token = bearer_token(request.headers.get("authorization", "").encode("latin-1"))
        tenant = keys.lookup(token)
        if tenant is None:
            raise OpenAIError(
                401,
                "Incorrect API key provided" if token else "Missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )
        if admin and not tenant.admin:
            raise OpenAIError(403, "this endpoint needs an admin key of the library", code="forbidden")
        return tenant

    def library_for(request: Request, name: str, admin: bool) -> ServedLibrary:
        tenant = tenant_of(request, admin)
        if name != tenant.library or name not in state["libraries"]:
            raise OpenAIError(404, f"no library {name!r} for this key", code="library_not_found")
        return state["libraries"][name]

    async def complete(request: Request, chat: bool) -> Response:
        started = time.perf_counter()
        tenant = tenant_of(request)
        lib: ServedLibrary = state["libraries"][tenant.library]
        body = await read_json(request)
        check_limits(body, limits)
        n = _check_body(body, chat)
        extra = body.pop("tfgrpo", None) or {}
        stream = body.get("stream") is True
        prompt = _prompt_text(body, chat)
        holdout = config.holdout > 0 and rng.random() < config.holdout
        upstream_body = dict(body)
        if upstream_model and not body.get("model"):
            upstream_body["model"] = upstream_model
        used_examples: list = []
        used_lessons: dict[str, str] = {}
        if prompt is not None and not holdout:
            used_examples, used_lessons, template = await lib.ainject(prompt)
            if used_examples or used_lessons:
                if chat:
                    messages = [dict(m) for m in body["messages"]]
                    last = max(i for i, m in enumerate(messages) if m.get("role") == "user")
                    messages[last]["content"] = prompt  # text parts, joined
                    upstream_body["messages"] = inject_messages(
                        messages,
                        used_examples,
                        template,
                        example_format=config.example_format,
                        contrast=config.contrast,
                    )
                else:
                    upstream_body["prompt"] = build_prompt(
                        prompt, used_examples, template, chat=False, contrast=config.contrast
                    )
        metrics.injected.labels(lib.name, "lessons").inc(len(used_lessons))
        metrics.injected.labels(lib.name, "experiences").inc(len(used_examples))
        cid = f"{'chatcmpl' if chat else 'cmpl'}-tfgrpo-{uuid.uuid4().hex}"
        info = {
            "library": lib.name,
            "version": lib.lessons.version,
            "lessons": list(used_lessons),
            "experiences": [e.id for e in used_examples],
            "holdout": holdout,
        }
        key = prompt if not chat else json.dumps(body["messages"], sort_keys=True, ensure_ascii=False)
        path = "chat/completions" if chat else "completions"
        sample = {**(extra.get("sample") or {}), "prompt": prompt or ""}

        def record(texts: list[str], scored: tuple[list[str], list[float]] | None = None) -> records.Completion:
            return records.Completion(
                cid, prompt or "", texts, key, holdout, prompt is not None, info, scored, extra.get("sample")
            )

        if stream and reward is None:
            return await _stream(request, lib, path, upstream_body, chat, cid, info, record, started)
        if reward is not None:
            upstream_body["n"] = max(n, config.group_size)
            upstream_body.pop("stream", None)
            upstream_body.pop("stream_options", None)
        upstream_started = time.perf_counter()
        status, raw, ctype = await until_disconnected(
            request.receive, state["upstream"].call("POST", path, upstream_body)
        )
        upstream_ms = 1000 * (time.perf_counter() - upstream_started)
        if status >= 400:  # the upstream's own refusal, as it is
            return Response(raw, status, media_type=ctype)
        try:
            data = json.loads(raw)
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OpenAIError(
                502, f"the upstream's answer is not an OpenAI completion: {raw[:200]!r}", code="upstream_error"
            ) from None
        texts = [_choice_text(c, chat) for c in choices]
        scored = None
        if reward is not None:
            scores = await reward.ascore_batch([(prompt or "", t, sample) for t in texts])
            values = [s.value for s in scores]
            order = (
                sorted(range(len(texts)), key=lambda i: -values[i])
                if config.return_choice == "best"
                else list(range(len(texts)))
            )
            if prompt is not None and len(texts) >= 2:
                scored = (texts, values)
            choices = [dict(choices[i], index=j) for j, i in enumerate(order[:n])]
            info = {**info, "rewards": [values[i] for i in order[:n]]}
            texts = [texts[i] for i in order[:n]]
        await asyncio.wrap_future(lib.records.add(record(texts, scored)))
        data["id"] = cid
        data["choices"] = choices
        data["tfgrpo"] = info
        log.info(
            "completion",
            extra=log_fields(
                id=cid,
                library=lib.name,
                endpoint=path,
                n=n,
                holdout=holdout,
                lessons=len(used_lessons),
                experiences=len(used_examples),
                upstream_ms=round(upstream_ms, 2),
                ms=round(1000 * (time.perf_counter() - started), 2),
            ),
        )
        if stream:  # best-of-G: the choice is known only once all are scored; it goes out as one chunk
            return EventStream(_as_chunks(data, chat))
        return JSONResponse(data)

    async def _stream(request, lib, path, upstream_body, chat, cid, info, record, started) -> Response:
        response = await until_disconnected(request.receive, state["upstream"].open("POST", path, upstream_body))
        if response.status_code != 200:
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            return Response(raw, response.status_code, media_type=response.headers.get("content-type"))

        async def events() -> AsyncGenerator[dict[str, Any], None]:
            texts: dict[int, list[str]] = {}
            first = True
            try:
                async for line in response.aiter_lines():  # a 502 past --max-output-bytes
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise OpenAIError(
                            502, f"the upstream sent a bad event: {data[:200]}", code="upstream_error"
                        ) from None
                    if not isinstance(chunk, dict):
                        continue
                    if "error" in chunk:  # the upstream's own error event, as it is
                        yield chunk
                        return
                    chunk["id"] = cid
                    if first:
                        chunk["tfgrpo"] = info
                        first = False
                    for choice in chunk.get("choices") or ():
                        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                        if isinstance(piece, str):
                            texts.setdefault(choice.get("index", 0), []).append(piece)
                    yield chunk
                n = max(texts, default=0) + 1
                await asyncio.wrap_future(lib.records.add(record(["".join(texts.get(i, [])) for i in range(n)])))
                log.info(
                    "completion",
                    extra=log_fields(
                        id=cid,
                        library=lib.name,
                        endpoint=path,
                        stream=True,
                        holdout=info["holdout"],
                        lessons=len(info["lessons"]),
                        experiences=len(info["experiences"]),
                        ms=round(1000 * (time.perf_counter() - started), 2),
                    ),
                )
            finally:
                await response.aclose()

        return EventStream(events())

    async def guarded(request: Request, chat: bool) -> Response:
        try:
            return await complete(request, chat)
        except ClientDisconnected:
            return Response(status_code=499)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await guarded(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await guarded(request, chat=False)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        tenant_of(request)
        status, raw, ctype = await state["upstream"].call("GET", "models")
        return Response(raw, status, media_type=ctype)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> JSONResponse:
        tenant = tenant_of(request)
        lib: ServedLibrary = state["libraries"][tenant.library]
        body = await read_json(request)
        cid = body.get("id")
        if not isinstance(cid, str) or not cid:
            raise bad_request("id: the `id` of a proxy response is required", param="id")
        if ("reward" in body) == ("rewards" in body):
            raise bad_request(
                'send "reward" (with an optional "choice") or "rewards" (one per choice), not both', param="reward"
            )
        if "rewards" in body:
            values = body["rewards"]
            if not isinstance(values, list) or not values:
                raise bad_request("rewards: must be a non-empty list of numbers, one per choice", param="rewards")
            if "choice" in body:
                raise bad_request('"choice" goes with "reward", not with "rewards"', param="choice")
            rewards = {i: _finite(v, f"rewards.{i}") for i, v in enumerate(values)}
        else:
            choice = body.get("choice", 0)
            if isinstance(choice, bool) or not isinstance(choice, int) or choice < 0:
                raise bad_request("choice: must be a whole number >= 0", param="choice")
            rewards = {choice: _finite(body["reward"], "reward")}
        result = await asyncio.wrap_future(lib.records.feedback(cid, rewards))
        metrics.feedback.labels(lib.name, str(result.status)).inc()
        log.info(
            "feedback",
            extra=log_fields(
                id=cid,
                library=lib.name,
                status=result.status,
                recorded=result.recorded,
                groups=list(result.groups) or None,
            ),
        )
        if result.status != 200:
            code = {404: "completion_not_found", 409: "conflicting_feedback", 400: "invalid_choice"}[result.status]
            raise OpenAIError(
                result.status, result.message, param="id" if result.status == 404 else "choice", code=code
            )
        for seq in result.groups:
            await lib.wait_learned(seq)
        return JSONResponse(
            {
                "id": cid,
                "object": "feedback",
                "recorded": result.recorded,
                "duplicates": result.duplicates,
                "groups": list(result.groups),
            }
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "libraries": {n: lib.grpo.library_size() for n, lib in state["libraries"].items()}}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if keys is not None:
            tenant_of(request, admin=True)
        for lib in state["libraries"].values():
            lib._update_gauges()
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)

    @app.get("/v1/libraries/{name}")
    async def library_stats(request: Request, name: str) -> dict[str, Any]:
        lib = library_for(request, name, admin=True)
        return await lib.run(lib.stats)

    @app.get("/v1/libraries/{name}/lift")
    async def library_lift(request: Request, name: str) -> dict[str, Any]:
        lib = library_for(request, name, admin=False)
        return {"library": name, "holdout": config.holdout, **records.lift(lib.records.reward_moments())}

    @app.get("/v1/libraries/{name}/lessons")
    async def lessons_list(request: Request, name: str) -> dict[str, Any]:
        lib = library_for(request, name, admin=True)
        return {"library": name, "version": lib.lessons.version, "lessons": lib.lessons.lessons}

    @app.get("/v1/libraries/{name}/lessons/history")
    async def lessons_history(request: Request, name: str) -> dict[str, Any]:
        lib = library_for(request, name, admin=True)
        return {"library": name, "versions": [v.to_dict() for v in lib.lessons.history()]}

    @app.post("/v1/libraries/{name}/lessons/rollback")
    async def lessons_rollback(request: Request, name: str) -> dict[str, Any]:
        lib = library_for(request, name, admin=True)
        body = await read_json(request)
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= lib.lessons.version:
            raise bad_request(f"version: must be a whole number in 0..{lib.lessons.version}", param="version")
        before = lib.lessons.version
        result = lib.lessons.rollback(version)
        lib._update_gauges()
        return {
            "library": name,
            "from": before,
            "to": version,
            "version": result.version,
            "lessons": lib.lessons.lessons,
        }

    @app.get("/v1/libraries/{name}/export")
    async def export(request: Request, name: str) -> dict[str, Any]:
        lib = library_for(request, name, admin=True)
        experiences = await lib.run(lambda: [{"id": e.id, **e.to_dict()} for e in lib.grpo.experience_library])
        return {
            "library": name,
            "experiences": experiences,
            "lessons": lib.lessons.lessons,
            "lesson_version": lib.lessons.version,
        }

    app.state.proxy = state
    hot = {
        ("POST", "/v1/chat/completions"): chat_completions,
        ("POST", "/v1/completions"): completions,
        ("POST", "/v1/feedback"): feedback,
    }
    return ProxyApp(app, hot, metrics, limits.max_body_bytes)


class ProxyApp:
    """The proxy as uvicorn runs it: the per-request endpoints (completions, feedback) are called
    straight from here, with the same body limit, metrics and OpenAI-shaped errors, and everything
    else (the lifespan, admin and stats endpoints, wrong methods) goes to the FastAPI app. FastAPI's
    routing, dependency solving and middleware stack were a quarter of the proxy's CPU per request."""

    def __init__(
        self,
        app: FastAPI,
        hot: Mapping[tuple[str, str], Callable[[Request], Awaitable[Response]]],
        metrics: ProxyMetrics,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.state = app.state
        self.hot = hot
        self._hot_app = Observe(BodyLimit(self._call, max_bytes=max_body_bytes), metrics=metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.hot:
            await self._hot_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.hot[scope["method"], scope["path"]](Request(scope, receive))
        except OpenAIError as exc:
            response = exc.response()
        except ConfigError as exc:
            response = bad_request(str(exc)).response()
        except BackendError as exc:
            response = OpenAIError(500, str(exc)).response()
        except Exception as exc:  # as install_error_handlers answers it: no traceback to the client
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            response = OpenAIError(
                500, f"internal error ({type(exc).__name__}); the server log has the details"
            ).response()
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------------- running


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_upstream(spec: str) -> tuple[str | None, str | None]:
    """(base URL, model) of an `--upstream` spec: "openai:MODEL@URL", "openai:@URL", a bare URL, or
    "openai[:MODEL]" with $OPENAI_BASE_URL. (None, None) for "local" / "local:PATH", which the proxy
    serves itself with `serve-model` on a loopback port."""
    import os

    if spec == "local" or spec.startswith("local:"):
        return None, None
    if spec.startswith(("http://", "https://")):
        return spec, None
    kind, _, rest = spec.partition(":")
    if kind != "openai":
        raise ConfigError(f"unknown --upstream {spec!r}: use 'openai:MODEL@http://host:port/v1', a URL, or 'local'")
    model, _, given = rest.partition("@")
    url = given or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise ConfigError(
            f"--upstream {spec!r} names no URL: write openai:MODEL@http://host:port/v1 or set $OPENAI_BASE_URL"
        )
    return url, model or None


class LocalUpstream:
    """`serve-model` over a backend spec ("local", "local:PATH") on a loopback port, in a thread."""

    def __init__(self, spec: str) -> None:
        import socket
        import threading

        import uvicorn

        from ..llm import get_backend
        from .model_server import create_app

        self.backend = get_backend(spec)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.backend), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise ConfigError(f"the local upstream ({spec}) did not start")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        self.backend.close()


def run_proxy(
    upstream: str,
    library: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ProxyConfig = ProxyConfig(),
    *,
    keys_path: str | None = None,
    limits: ServerLimits = ServerLimits(),
    reward: Reward | None = None,
    critic: str | None = None,
    validate_margin: float | None = None,
    graceful_s: int = 30,
    tracker: Tracker | None = None,
) -> None:
    """What `tfgrpo serve` runs, until SIGINT/SIGTERM (then in-flight requests finish, what they
    queued is committed, and the groups it formed are learned)."""
    import os

    import uvicorn

    from .metrics import setup_json_logs

    if keys_path is None and not _is_loopback(host):
        raise ConfigError(
            f"without --keys tfgrpo serve answers anyone who can reach it, so it binds only a loopback address "
            f"(127.0.0.1, ::1, localhost), not {host!r}; give --keys keys.toml to serve other hosts"
        )
    keys = Keys.load(keys_path) if keys_path else None
    if keys is not None:
        libraries: dict[str, str | Path] = dict(keys.libraries)
    elif library:
        libraries = {Path(library).stem: library}
    else:
        raise ConfigError("give --library PATH (or --keys keys.toml with its [libraries])")
    if validate_margin is not None and reward is None:
        raise ConfigError("--validate-margin scores candidate lessons with a reward: give --reward too")
    setup_json_logs()
    url, model = parse_upstream(upstream)
    local = LocalUpstream(upstream) if url is None else None
    if local is not None:
        url = local.url
    assert url is not None
    api_key = os.environ.get("OPENAI_API_KEY") if local is None else None
    lessons = None
    if config.lessons_every > 0:
        lessons = _lessons_update(url, model, api_key, critic, validate_margin, config)
    try:
        app = create_proxy_app(
            url,
            libraries,
            config,
            keys=keys,
            limits=limits,
            reward=reward,
            upstream_api_key=api_key,
            upstream_model=model,
            lessons=lessons,
            tracker=tracker,
        )
        print(
            f"tfgrpo serve: {', '.join(map(str, libraries.values()))} in front of {upstream} at "
            f"http://{host}:{port}/v1",
            flush=True,
        )
        # proxy_headers off: nothing here reads the client address, and the header scan costs per request
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            backlog=4096,
            timeout_graceful_shutdown=graceful_s,
            proxy_headers=False,
        )
    finally:
        if lessons is not None:
            for backend in {id(b): b for b in (lessons["policy"], lessons.get("critic"))}.values():
                if backend is not None:
                    backend.close()
        if local is not None:
            local.close()


def _lessons_update(url, model, api_key, critic, validate_margin, config: ProxyConfig) -> dict[str, Any]:
    from ..llm import get_backend
    from ..llm.http import OpenAIBackend
    from ..loop.training import TrainConfig
    from ..semantic.critic import LessonConfig

    policy = OpenAIBackend(model=model, base_url=url, api_key=api_key or "none")
    critic_backend = get_backend(critic) if critic else policy
    lesson_config = LessonConfig(validate_margin=validate_margin, placement=config.placement)
    # The lessons' validation prompts the policy exactly as serving does.
    prompting = {f.name: getattr(config, f.name) for f in fields(PromptingConfig)}
    train_config = TrainConfig(**prompting, group_size=config.group_size)
    return {
        "update": lambda lessons: LessonUpdate(lessons, lesson_config, critic=critic_backend),
        "policy": policy,
        "critic": critic_backend,
        "config": train_config,
    }
