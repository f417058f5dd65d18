"""The OpenAI wire format that every tfgrpo HTTP service shares: error bodies, reading a JSON request
body (invalid JSON, non-objects and lone surrogates are 400s), and refusing features a server does not
implement instead of ignoring them."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..core.experience import clean_text
from ..errors import BackendError, ConfigError

log = logging.getLogger("tfgrpo.serve")


class OpenAIError(Exception):
    """An HTTP error answered with an OpenAI-shaped body:
    `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        message = clean_text(message)  # (it may quote what it refuses, and must still encode)
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def error_of(exc: BaseException) -> OpenAIError:
    """The one table from an exception to what the client is told: OpenAIError as raised, request
    validation and ConfigError 400, a client that hung up mid-body 499, HTTP errors as they are, BackendError
    500, and anything unexpected 500 with no traceback sent (it goes to the log)."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors())
    if isinstance(exc, ConfigError):
        return bad_request(str(exc))
    if isinstance(exc, ClientDisconnect):
        return OpenAIError(499, "the client closed the connection before its request was read")
    if isinstance(exc, HTTPException):
        return OpenAIError(exc.status_code, str(exc.detail), headers=exc.headers)
    if isinstance(exc, BackendError):
        return OpenAIError(500, str(exc))
    log.error("unexpected error (%s)", type(exc).__name__, exc_info=exc)
    return OpenAIError(500, f"internal error ({type(exc).__name__}); the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Every error `app` answers gets an OpenAI-shaped body, by `error_of`."""

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return error_of(exc).response()

    # BackendError has a handler of its own: Starlette's handler of Exception answers and then raises again
    # (a traceback in the log, the kept-alive connection dropped), which is for what nobody foresaw.
    kinds = (OpenAIError, RequestValidationError, ConfigError, BackendError, ClientDisconnect, HTTPException, Exception)
    for kind in kinds:
        app.add_exception_handler(kind, handle)


def validation_error(errors: Sequence[Any]) -> OpenAIError:
    """A 400 for pydantic's errors, naming the first field that is wrong."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    return bad_request(f"{param or 'body'}: {first.get('msg', 'invalid request')}", param=param)


def parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """`model.model_validate(body)`, a 400 naming the field when it does not fit."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def find_lone_surrogate(value: Any, path: str = "") -> str | None:
    """Where (`messages.0.content`) a string in a parsed JSON value holds a lone UTF-16 surrogate
    (`"\\ud800"` without its pair), which no tokenizer and no UTF-8 encoder accepts; None when none does."""
    if isinstance(value, str):
        return (path or "body") if _SURROGATE.search(value) else None
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        name = json.dumps(key)[1:-1] if isinstance(key, str) else str(key)  # (escaped: the key may be the culprit)
        where = f"{path}.{name}" if path else name
        if isinstance(key, str) and _SURROGATE.search(key):
            return where
        found = find_lone_surrogate(item, where)
        if found:
            return found
    return None


def _not_a_number(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number (numbers must be finite)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a finite number")
    return value


def loads_json(raw: bytes | str) -> Any:
    """JSON as RFC 8259 has it: NaN, Infinity and numbers beyond a float's range (which Python's parser
    takes, and no JSON encoder writes back) are a ValueError, as is invalid JSON."""
    return json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object. Invalid JSON, nesting too deep to parse, anything but an
    object, and lone surrogates anywhere in it are 400s. (Its size is bounded by `BodyLimit`.)"""
    raw = await request.body()
    try:
        body = loads_json(raw)
    except UnicodeDecodeError:
        raise bad_request("the request body is not UTF-8 text; send JSON encoded as UTF-8") from None
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got a JSON {type(body).__name__}")
    where = find_lone_surrogate(body)
    if where:
        raise bad_request(
            f"{where}: contains a lone UTF-16 surrogate (such as \\ud800 without its pair), which is not text; "
            "send valid Unicode",
            param=where,
            code="invalid_unicode",
        )
    return body


def _absent(value: Any) -> bool:
    return value is None or value is False or value == [] or value == {}


def _one_of(*harmless: Any) -> Callable[[Any], bool]:
    return lambda value: _absent(value) or any(value == h and type(value) is type(h) for h in harmless)


UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": _absent,
    "tool_choice": _one_of("none"),
    "parallel_tool_calls": lambda value: isinstance(value, bool) or value is None,
    "functions": _absent,
    "function_call": _one_of("none"),
    "response_format": _one_of({"type": "text"}),
    "logprobs": _absent,
    "top_logprobs": _one_of(0),
    "echo": _absent,
    "suffix": _one_of(""),
    "best_of": _one_of(1),
    "presence_penalty": _one_of(0, 0.0),
    "frequency_penalty": _one_of(0, 0.0),
    "audio": _absent,
    "modalities": _one_of(["text"]),
    "prediction": _absent,
    "web_search_options": _absent,
    "reasoning_effort": _absent,
    "top_k": _one_of(0, -1),
    "min_p": _one_of(0, 0.0),
    "repetition_penalty": _one_of(1, 1.0),
}
"""Request fields (OpenAI's, and common vLLM extensions) a plain model server does not implement, each
with a test for values that ask for nothing (null, false, empty, the documented no-op default)."""

UNSUPPORTED_WITH_STRUCTURED_OUTPUT = {
    **UNSUPPORTED,
    "response_format": lambda value: (
        _absent(value)
        or value in ({"type": "text"},)
        or (isinstance(value, dict) and value.get("type") == "json_schema")
    ),
}
"""The same, for a backend that honours a JSON-schema `response_format` (`Backend.structured_output`)."""


def refuse_unsupported(body: Mapping[str, Any], unsupported: Mapping[str, Callable[[Any], bool]] = UNSUPPORTED) -> None:
    """A 400 naming the first field that asks for something this server does not do, rather than a 200
    that silently ignores it. Chat messages carrying tool calls, tool / function roles and content parts
    other than text (images, audio, files) count too."""
    for name, harmless in unsupported.items():
        if name in body and not harmless(body[name]):
            raise bad_request(
                f"{name}: not supported by this server (got {json.dumps(body[name])[:200]}); leave it out",
                param=name,
                code="unsupported_parameter",
            )
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict):
            continue
        for name in ("tool_calls", "function_call"):
            if not _absent(message.get(name)):
                raise bad_request(
                    f"messages.{i}.{name}: tool calls are not supported by this server",
                    param=f"messages.{i}.{name}",
                    code="unsupported_parameter",
                )
        parts = message.get("content")
        for k, part in enumerate(parts if isinstance(parts, list) else []):
            if isinstance(part, dict) and part.get("type") != "text":
                raise bad_request(
                    f"messages.{i}.content.{k}.type: {part.get('type')!r} parts are not supported by this server; "
                    "send text",
                    param=f"messages.{i}.content.{k}.type",
                    code="unsupported_parameter",
                )
        if message.get("role") in ("tool", "function"):
            raise bad_request(
                f"messages.{i}.role: {message['role']!r} messages (tool results) are not supported by this server",
                param=f"messages.{i}.role",
                code="unsupported_parameter",
            )
