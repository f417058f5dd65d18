"""`LogitBias`: a fixed bias on some tokens at every decoding step, built from the responses of successful
experiences (`tfgrpo.llm.guidance` retrieves them per prompt). Its own module because the local backend
applies it (`GenerationParams.logit_bias`) and the guidance, which loads local tokenizers, builds it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..core.experience import Experience
from ..errors import ConfigError

Tokenizer = Any
"""A transformers tokenizer, anything with `encode(text) -> ids` (tiktoken), or a callable text -> ids."""


def token_encoder(tokenizer: Tokenizer) -> Callable[[str], list[int]]:
    """A function text -> token ids (no special tokens added) for any supported tokenizer."""
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):
        try:
            encode("x", add_special_tokens=False)
        except TypeError:  # tiktoken and friends take no such argument and add nothing anyway
            return lambda text: list(encode(text))
        return lambda text: list(encode(text, add_special_tokens=False))
    if callable(tokenizer):
        return lambda text: list(tokenizer(text))
    raise ConfigError(
        f"tokenizer must be a transformers tokenizer, an object with encode(text), or a callable text -> token ids; "
        f"got {type(tokenizer).__name__}"
    )


class LogitBias:
    """Adds a fixed bias (in logits) to some tokens at every step. `bias`: token id -> bias."""

    def __init__(self, bias: Mapping[int, float]) -> None:
        self.bias = {int(t): float(b) for t, b in bias.items() if b}
        self._cache: dict[tuple, Any] = {}

    @classmethod
    def from_experiences(
        cls,
        experiences: Iterable[Experience],
        tokenizer: Tokenizer,
        strength: float = 2.0,
        *,
        max_entries: int | None = 300,
    ) -> LogitBias:
        """Bias each token by `strength` times the share of the responses that contain it (a token in
        every response gets `strength`, one in half of them `strength / 2`). `max_entries` keeps the most
        frequent tokens only (servers cap the size of a `logit_bias` map; OpenAI's is 300)."""
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not -100 <= strength <= 100:
            raise ConfigError(f"LogitBias strength must be a number in [-100, 100], got {strength!r}")
        encode = token_encoder(tokenizer)
        responses = [set(encode(e.response)) for e in experiences]
        counts: dict[int, int] = {}
        for ids in responses:
            for token in ids:
                counts[token] = counts.get(token, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:max_entries]
        return cls({token: strength * count / len(responses) for token, count in ranked})

    def to_openai(self, integer: bool = True) -> dict[str, int | float]:
        """The OpenAI `logit_bias` map: token id as a string -> bias clamped to [-100, 100]. `integer`:
        round to whole numbers (OpenAI's API takes integers; vLLM and llama.cpp also take floats);
        entries that round to 0 are left out."""
        out: dict[str, int | float] = {}
        for token, bias in sorted(self.bias.items()):
            value = max(-100.0, min(100.0, bias))
            value = int(round(value)) if integer else value
            if value:
                out[str(token)] = value
        return out

    def __call__(self, input_ids, scores):
        key = (scores.shape[-1], scores.device, scores.dtype)
        if key not in self._cache:
            import torch

            vector = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
            inside = {t: b for t, b in self.bias.items() if t < scores.shape[-1]}
            if inside:
                index = torch.tensor(list(inside), device=scores.device)
                vector[index] = torch.tensor(list(inside.values()), dtype=scores.dtype, device=scores.device)
            self._cache[key] = vector
        return scores + self._cache[key]
