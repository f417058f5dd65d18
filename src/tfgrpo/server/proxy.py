"""`tfgrpo serve` on HTTP: the routes of `service.ProxyService` (an OpenAI-compatible proxy that puts
what a library has learned into every request and keeps learning from the rewards it is told about) and
`serve`, what the command runs.

A restart loses nothing acknowledged: completions are recorded before their answer is sent, feedback is
committed before its 200, and the groups formed but not yet in the library (the library stores the last
group it learned, in the same transaction as the experiences) are learned when the proxy starts again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import pickle
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ..core.store import shown_target
from ..errors import ConfigError
from ..learn import LessonUpdate, PromptingConfig, RolloutConfig, Rollouts
from ..rewards.base import Reward
from ..tracking import Tracker
from ._state import Passthrough
from ._streaming import ClientDisconnected, EventStream
from .config import ProxyConfig, is_loopback, library_name, parse_upstream
from .guards import BodyLimit
from .limits import ServerLimits
from .metrics import Observe
from .openai_api import error_of, install_error_handlers, read_json
from .served import OnlineLessons
from .service import ProxyService
from .tenants import Keys

log = logging.getLogger("tfgrpo.serve")


AS_SENT = {"x-content-type-options": "nosniff"}
"""On an upstream's body passed through as it came: a browser takes it for the type it says, and no other
(an upstream's error page as HTML is not run as this origin's script on a guess)."""


def create_proxy_app(
    upstream_url: str,
    libraries: dict[str, str | Path],
    config: ProxyConfig = ProxyConfig(),
    **options: Any,
) -> ProxyApp:
    """The proxy as an ASGI app: `ProxyService(upstream_url, libraries, config, **options)` behind its
    routes (`keys`, `limits`, `reward`, `upstream_api_key`, `upstream_model`, `lessons`, `tracker`)."""
    service = ProxyService(upstream_url, libraries, config, **options)
    limits: ServerLimits = service.limits

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await service.start()
            yield
        finally:  # uvicorn has finished the requests in flight
            await service.close()

    app = FastAPI(title="tfgrpo serve", version="1", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(Observe, metrics=service.metrics)

    def key(request: Request) -> bytes | None:
        value = request.headers.get("authorization")
        return value.encode("latin-1") if value is not None else None

    async def complete(request: Request, chat: bool) -> Response:
        lib = service.own_library(key(request))  # (the key first: no body is read for a stranger)
        answer = await service.complete(lib, await read_json(request), chat, request.receive)
        if isinstance(answer, dict):
            return JSONResponse(answer)
        if isinstance(answer, Passthrough):
            return Response(answer.body, answer.status, media_type=answer.content_type, headers=AS_SENT)
        return EventStream(answer)

    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    async def feedback(request: Request) -> Response:
        lib = service.own_library(key(request))
        return JSONResponse(await service.feedback(lib, await read_json(request)))

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        service.tenant(key(request))
        status, raw, ctype = await service.upstream.call("GET", "models")
        return Response(raw, status, media_type=ctype, headers=AS_SENT)

    @app.get("/healthz")
    @app.get("/health")
    async def health() -> JSONResponse:
        said = service.health()
        return JSONResponse(said, 200 if said["status"] == "ok" else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        service.require_operator(key(request))
        data, ctype = service.prometheus()
        return Response(data, media_type=ctype)

    @app.get("/v1/libraries/{name}")
    async def library_stats(request: Request, name: str) -> dict[str, Any]:
        return await service.stats(service.library_for(key(request), name, admin=True))

    @app.get("/v1/libraries/{name}/lift")
    async def library_lift(request: Request, name: str) -> dict[str, Any]:
        return service.lift(service.library_for(key(request), name, admin=False))

    @app.get("/v1/libraries/{name}/lessons")
    async def lessons_list(request: Request, name: str) -> dict[str, Any]:
        return service.lessons(service.library_for(key(request), name, admin=True))

    @app.get("/v1/libraries/{name}/lessons/history")
    async def lessons_history(request: Request, name: str) -> dict[str, Any]:
        return service.lessons_history(service.library_for(key(request), name, admin=True))

    @app.post("/v1/libraries/{name}/lessons/rollback")
    async def lessons_rollback(request: Request, name: str) -> dict[str, Any]:
        lib = service.library_for(key(request), name, admin=True)
        return service.lessons_rollback(lib, await read_json(request))

    @app.get("/v1/libraries/{name}/export")
    async def export(request: Request, name: str) -> dict[str, Any]:
        return await service.export(service.library_for(key(request), name, admin=True))

    hot = {
        ("POST", "/v1/chat/completions"): chat_completions,
        ("POST", "/v1/completions"): completions,
        ("POST", "/v1/feedback"): feedback,
    }
    return ProxyApp(app, service, hot, limits.max_body_bytes)


class ProxyApp:
    """The proxy as uvicorn runs it: the per-request endpoints (completions, feedback) are called
    straight from here, with the same body limit, metrics and OpenAI-shaped errors (`error_of`), and
    everything else (the lifespan, admin and stats endpoints, wrong methods) goes to the FastAPI app.
    FastAPI's routing, dependency solving and middleware stack were a quarter of the proxy's CPU per
    request."""

    def __init__(
        self,
        app: FastAPI,
        service: ProxyService,
        hot: Mapping[tuple[str, str], Callable[[Request], Awaitable[Response]]],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.service = service
        self.hot = hot
        self._hot_app = Observe(BodyLimit(self._call, max_bytes=max_body_bytes), metrics=service.metrics)
        # Every answer says which process gave it (with --workers, or proxies sharing a library).
        self._worker = [(b"x-tfgrpo-worker", str(os.getpid()).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = self._signed(send)
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.hot:
            await self._hot_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _signed(self, send: Send) -> Send:
        worker = self._worker

        async def signed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *worker]}
            await send(message)

        return signed

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.hot[scope["method"], scope["path"]](Request(scope, receive))
        except ClientDisconnected:
            response = Response(status_code=499)
        except Exception as exc:
            response = error_of(exc).response()
        await response(scope, receive, send)


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


WORKER_SPEC_ENV = "TFGRPO_SERVE_WORKER"
"""Where `serve` leaves the `WorkerSpec` for the processes of `--workers` (a pickle, base64)."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a process needs to build the proxy app: `serve` builds it once for one process, and hands it
    to each of `--workers` through its environment (`worker_app`)."""

    upstream_url: str
    upstream_model: str | None
    upstream_api_key: str | None
    libraries: dict[str, str | Path]
    config: ProxyConfig
    keys_path: str | None = None
    limits: ServerLimits = ServerLimits()
    reward: Reward | str | None = None
    """A reward, or its `--reward` spec (what the worker processes are given)."""
    critic: str | None = None
    validate_margin: float | None = None

    def app(self, tracker: Tracker | None = None) -> ProxyApp:
        from ..rewards import get_reward

        reward = get_reward(self.reward) if isinstance(self.reward, str) else self.reward
        lessons = None
        if self.config.lessons_every > 0:
            lessons = online_lessons(
                self.upstream_url,
                self.upstream_model,
                self.upstream_api_key,
                self.critic,
                self.validate_margin,
                reward,
                self.config,
            )
        return create_proxy_app(
            self.upstream_url,
            self.libraries,
            self.config,
            keys=Keys.load(self.keys_path) if self.keys_path else None,
            limits=self.limits,
            reward=reward,
            upstream_api_key=self.upstream_api_key,
            upstream_model=self.upstream_model,
            lessons=lessons,
            tracker=tracker,
        )

    def encoded(self) -> str:
        try:
            return base64.b64encode(pickle.dumps(self)).decode()
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise ConfigError(
                f"with --workers above 1 each process builds its own proxy, and this one cannot be handed over "
                f"({exc}); give the reward as a --reward spec (module:name) rather than an object"
            ) from None


def worker_app() -> ProxyApp:
    """The app of one process of `--workers` (uvicorn calls it in each)."""
    from .metrics import setup_json_logs

    setup_json_logs()
    spec: WorkerSpec = pickle.loads(base64.b64decode(os.environ[WORKER_SPEC_ENV]))
    return spec.app()


def serve(
    upstream: str,
    library: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ProxyConfig = ProxyConfig(),
    *,
    keys_path: str | None = None,
    limits: ServerLimits = ServerLimits(),
    reward: Reward | str | None = None,
    critic: str | None = None,
    validate_margin: float | None = None,
    graceful_s: int = 30,
    tracker: Tracker | None = None,
) -> None:
    """What `tfgrpo serve` runs, until SIGINT/SIGTERM (then in-flight requests finish, what they queued is
    committed, and the groups it formed are learned). `reward`: a `Reward` or a `--reward` spec (with
    `config.workers` above 1, a spec or a reward that pickles). With `config.workers` above 1, that many
    processes serve on the one port, each with its own event loop, sampler and indexes, all on the same
    library files; uvicorn's supervisor restarts one that dies and drains them all on SIGTERM."""
    import uvicorn

    from .metrics import setup_json_logs

    if keys_path is None and not is_loopback(host):
        raise ConfigError(
            f"without --keys tfgrpo serve answers anyone who can reach it, so it binds only a loopback address "
            f"(127.0.0.1, ::1, localhost), not {host!r}; give --keys keys.toml to serve other hosts"
        )
    keys = Keys.load(keys_path) if keys_path else None
    if keys is not None:
        libraries: dict[str, str | Path] = dict(keys.libraries)
    elif library:
        libraries = {library_name(library): library}
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
    spec = WorkerSpec(
        url,
        model,
        os.environ.get("OPENAI_API_KEY") if local is None else None,
        libraries,
        config,
        keys_path=keys_path,
        limits=limits,
        reward=reward,
        critic=critic,
        validate_margin=validate_margin,
    )
    # proxy_headers off: nothing here reads the client address, and the header scan costs per request
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "backlog": 4096,
        "timeout_graceful_shutdown": graceful_s,
        "proxy_headers": False,
    }
    try:
        print(
            f"tfgrpo serve: {', '.join(map(shown_target, libraries.values()))} in front of {upstream} at "
            f"http://{host}:{port}/v1" + (f" ({config.workers} workers)" if config.workers > 1 else ""),
            flush=True,
        )
        if config.workers == 1:
            uvicorn.run(spec.app(tracker), **options)
            return
        os.environ[WORKER_SPEC_ENV] = spec.encoded()
        with tempfile.TemporaryDirectory(prefix="tfgrpo-metrics-") as metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # /metrics sums every worker's figures
            uvicorn.run(f"{__name__}:worker_app", factory=True, workers=config.workers, **options)
            if tracker is not None:  # the deployment's figures, from what every worker committed
                asyncio.run(_track_deployment(spec, tracker))
    finally:
        if local is not None:
            local.close()


async def _track_deployment(spec: WorkerSpec, tracker: Tracker) -> None:
    """Each library's final figures, and its file, as one process would have logged them at shutdown."""
    service = ProxyService(spec.upstream_url, spec.libraries, replace(spec.config, workers=1), tracker=tracker)
    await service.start()
    await service.close()


def online_lessons(
    url: str,
    model: str | None,
    api_key: str | None,
    critic: str | None,
    validate_margin: float | None,
    reward: Reward | None,
    config: ProxyConfig,
) -> OnlineLessons:
    """The background lessons update of `tfgrpo serve`: the critic (default: the upstream model) and, with a
    reward, the rollouts that validate a candidate, prompted exactly as serving prompts."""
    from ..llm import get_backend
    from ..llm.http import OpenAIBackend
    from ..semantic.critic import LessonConfig

    policy = OpenAIBackend(model=model, base_url=url, api_key=api_key or "none")
    critic_backend = get_backend(critic) if critic else policy
    lesson_config = LessonConfig(validate_margin=validate_margin, placement=config.placement)
    prompting = {f.name: getattr(config, f.name) for f in fields(PromptingConfig)}
    rollouts = Rollouts(policy, reward, RolloutConfig(**prompting), config.group_size) if reward is not None else None
    return OnlineLessons(
        update=lambda lessons: LessonUpdate(lessons, lesson_config, critic=critic_backend),
        rollouts=rollouts,
        backends=tuple({id(b): b for b in (policy, critic_backend)}.values()),
    )
