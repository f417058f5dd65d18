"""Request limits for tfgrpo's HTTP services: one dataclass of knobs (defaults, help, CLI flags derived
from it) and one check of a parsed request body that answers a 400 naming the limit it broke. Importing
this module needs no web framework (the CLI builds its flags from it)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from ..errors import ConfigError

if TYPE_CHECKING:
    from .openai_api import OpenAIError

MAX_SEED = 2**63 - 1
"""Seeds are 64-bit signed integers, as OpenAI documents them; larger ones are a 400, not a 500."""


def _limit(default: int, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for. Every field is a whole number >= 1 and is a CLI flag
    (`max_n` -> `--max-n`). Requests over a limit get a 400 (413 for the body) that names it."""

    max_body_bytes: int = _limit(4 * 1024 * 1024, "most bytes in a request body; refused before it is read")
    max_n: int = _limit(16, "most completions per prompt (n)")
    max_tokens: int = _limit(4096, "most tokens per completion (max_tokens, max_completion_tokens)")
    max_prompts: int = _limit(64, "most prompts in one /v1/completions request")
    max_messages: int = _limit(256, "most messages in one chat request")
    max_text_chars: int = _limit(500_000, "most characters in one message or one prompt")
    max_stop: int = _limit(16, "most stop strings")
    max_stop_chars: int = _limit(256, "most characters in one stop string")
    max_logit_bias: int = _limit(300, "most token ids in logit_bias")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ServerLimits.{f.name} must be a whole number >= 1, got {value!r}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--max-...` flag per `ServerLimits` field, with its default and help."""
    group = parser.add_argument_group("request limits (over a limit: HTTP 400, or 413 for the body)")
    for f in dataclasses.fields(ServerLimits):
        group.add_argument(flag(f.name), type=int, default=f.default, help=f.metadata["help"])


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServerLimits)})


def _over(param: str, got: Any, limit: int, knob: str, what: str = "") -> OpenAIError:
    from .openai_api import bad_request

    return bad_request(
        f"{param}: {what or got} is over this server's limit of {limit} (ServerLimits.{knob}, {flag(knob)})",
        param=param,
        code="limit_exceeded",
    )


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def check_limits(body: Mapping[str, Any], limits: ServerLimits) -> None:
    """Raise a 400 `OpenAIError` for the first part of a chat or text-completion request body over a limit,
    or a seed outside [0, 2**63 - 1]. Values of the wrong type are left for the request model to refuse."""
    n = body.get("n")
    if _number(n) and n > limits.max_n:
        raise _over("n", n, limits.max_n, "max_n")
    for param in ("max_tokens", "max_completion_tokens"):
        value = body.get(param)
        if _number(value) and value > limits.max_tokens:
            raise _over(param, value, limits.max_tokens, "max_tokens")
    seed = body.get("seed")
    if _number(seed) and not 0 <= seed <= MAX_SEED:
        from .openai_api import bad_request

        raise bad_request(f"seed: {seed} is outside [0, {MAX_SEED}] (a 64-bit integer)", param="seed")

    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    if len(stops) > limits.max_stop:
        raise _over("stop", len(stops), limits.max_stop, "max_stop", f"{len(stops)} stop strings")
    for i, s in enumerate(stops):
        if isinstance(s, str) and len(s) > limits.max_stop_chars:
            raise _over(f"stop.{i}", len(s), limits.max_stop_chars, "max_stop_chars", f"{len(s)} characters")

    bias = body.get("logit_bias")
    if isinstance(bias, dict) and len(bias) > limits.max_logit_bias:
        raise _over("logit_bias", len(bias), limits.max_logit_bias, "max_logit_bias", f"{len(bias)} token ids")

    messages = body.get("messages")
    if isinstance(messages, list):
        if len(messages) > limits.max_messages:
            what = f"{len(messages)} messages"
            raise _over("messages", len(messages), limits.max_messages, "max_messages", what)
        for i, message in enumerate(messages):
            chars = _text_chars(message.get("content")) if isinstance(message, dict) else 0
            if chars > limits.max_text_chars:
                what = f"{chars} characters"
                raise _over(f"messages.{i}.content", chars, limits.max_text_chars, "max_text_chars", what)

    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else []
    if len(prompts) > limits.max_prompts:
        raise _over("prompt", len(prompts), limits.max_prompts, "max_prompts", f"{len(prompts)} prompts")
    for i, p in enumerate(prompts):
        chars = _text_chars(p)
        if chars > limits.max_text_chars:
            param = "prompt" if isinstance(prompt, str) else f"prompt.{i}"
            raise _over(param, chars, limits.max_text_chars, "max_text_chars", f"{chars} characters")
