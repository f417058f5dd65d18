"""ASGI middleware that guards a service before any endpoint runs: an optional API key (Bearer auth,
compared in constant time) and a request-body size limit enforced before the body is read."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .openai_api import OpenAIError


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def key_matches(presented: str | bytes | None, expected: str) -> bool:
    """Whether `presented` is `expected`, in time that depends on neither (both are hashed first, so
    even their lengths are compared in constant time)."""
    if presented is None:
        return False
    if isinstance(presented, str):
        presented = presented.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(hashlib.sha256(presented).digest(), hashlib.sha256(expected.encode()).digest())


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header, None without one."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


class ApiKey:
    """Refuse HTTP requests without `Authorization: Bearer <api_key>` with a 401 OpenAI-shaped body,
    except on `open_paths` (health checks)."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: Iterable[str] = ("/health", "/healthz")) -> None:
        if not api_key:
            raise ValueError("ApiKey needs a non-empty key")
        self.app = app
        self.api_key = api_key
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            token = bearer_token(_header(scope, b"authorization"))
            if not key_matches(token, self.api_key):
                message = (
                    "Incorrect API key provided" if token else "Missing API key: send 'Authorization: Bearer <key>'"
                )
                error = OpenAIError(401, message, code="invalid_api_key", headers={"www-authenticate": "Bearer"})
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse a request body over `max_bytes` with a 413 before reading it: at once when its
    Content-Length says so, else (chunked) as soon as the bytes received pass the limit. Either way the
    connection is closed, and the endpoint never runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> OpenAIError:
        return OpenAIError(
            413,
            f"the request body is {size} bytes, over this server's limit of {self.max_bytes} "
            "(ServerLimits.max_body_bytes, --max-body-bytes)",
            param=None,
            code="request_too_large",
            headers={"connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        # (No int() of a length longer than any body could be: Python refuses over 4,300 digits.)
        if length is not None and (not length.isdigit() or len(length) > 18 or int(length) > self.max_bytes):
            await self._too_large(length.decode("latin-1")[:40]).response()(scope, receive, send)
            return
        # Read the body here (at most max_bytes of it), then hand it to the app in one piece; later
        # receive() calls go to the server, so the app still hears about a client that disconnects.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending it all
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._too_large(f"at least {size}" if more else str(size)).response()(scope, receive, send)
                return
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()

    return replayed
