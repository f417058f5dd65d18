"""Model backends: one call shape (`Backend.generate(prompts, params)`) for a local model and for any
OpenAI-compatible server. Heavy imports (torch, transformers, openai) happen only when a backend is made.

    from tfgrpo.llm import GenerationParams, get_backend

    with get_backend("local") as model:
        groups = model.generate(["What is 2+2?"], GenerationParams(n=4, max_tokens=32, seed=0))
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError
from .base import Backend, Generation, GenerationParams, Message, Prompt, Usage
from .cache import CachedBackend, LLMCache

__all__ = [
    "Backend",
    "CachedBackend",
    "Generation",
    "GenerationParams",
    "LLMCache",
    "Message",
    "Prompt",
    "Usage",
    "get_backend",
]

_URL_AT = re.compile(r"@(https?://.*)$")


def get_backend(spec: str | Backend, **kwargs: Any) -> Backend:
    """Make a backend from a short spec; `kwargs` go to its constructor.

    - "local": the bundled SmolLM2-135M-Instruct (transformers, CPU or CUDA)
    - "local:PATH": a model directory, a `.gguf` file or a Hugging Face hub id
    - "openai": an OpenAI-compatible server from $OPENAI_BASE_URL, $OPENAI_API_KEY, $TFGRPO_MODEL
    - "openai:MODEL", "openai:MODEL@http://host:port/v1", "openai:@http://host:port/v1" (first model
      the server lists); a bare "http://host:port/v1" is the same as "openai:@http://host:port/v1"

    A `Backend` instance is returned unchanged.
    """
    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a backend spec must be a string such as 'local' or 'openai:MODEL@URL', got {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind in ("http", "https"):
        kind, rest = "openai", "@" + spec
    if kind == "local":
        from .local import TransformersBackend

        return TransformersBackend(model=rest or kwargs.pop("model", None), **kwargs)
    if kind == "openai":
        from .http import OpenAIBackend

        model, url = rest, None
        match = _URL_AT.search(rest)
        if match:
            model, url = rest[: match.start()], match.group(1)
        if model:
            kwargs["model"] = model
        if url:
            kwargs["base_url"] = url
        return OpenAIBackend(**kwargs)
    raise ConfigError(
        f"unknown backend spec {spec!r}: use 'local', 'local:PATH', 'openai', 'openai:MODEL' "
        "or 'openai:MODEL@http://host:port/v1'"
    )
