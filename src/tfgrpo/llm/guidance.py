"""Experience-guided decoding: the spec's "logit biasing" and "constrained decoding".

- `LogitBias`: boost the tokens that are frequent in the successful responses retrieved for a prompt.
  A transformers logits processor for `TransformersBackend.generate(..., logits_processors=[...])`, and
  an OpenAI `logit_bias` map (`to_openai()`, or `GenerationParams(logit_bias=...)`) for servers.
- `LibraryConstraint`: keep generation on patterns seen in the library: "strict" (only prefixes of a
  library response, EOS only once a whole one is produced), "ngram" (only tokens that continue a library
  n-gram) or "soft" (a penalty, in logits, on tokens that leave the library's n-grams).

Both are plain callables `(input_ids, scores) -> scores`, so they compose in a list, and are built from
`Experience` lists or straight from a library with `processors_for_prompts(grpo, prompts, tokenizer)`.
A processor applies to every row of the batch: for a batch of different prompts, build it from the
union of their experiences (`retrieve_experiences` does that).

    processors = processors_for_prompts(grpo, [prompt], backend.tokenizer, constraint="strict")
    backend.generate([prompt], params, logits_processors=processors)

`GuidanceConfig` (`--guidance bias|constrain` of train, eval and serve-model) and `guided_generate` do it per
prompt from the successes retrieved for it: a bias goes as `GenerationParams.logit_bias` (so an HTTP backend
sends it as OpenAI's `logit_bias` map), a constraint as a logits processor of a local model.
`GuidedBackend` is a backend that guides every call itself, from a library (what `serve-model` serves).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncGenerator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from ..core.experience import Experience
from ..core.knobs import check_knobs, knob
from ..errors import ConfigError
from .base import Backend, Delta, Generation, GenerationParams, Prompt, Usage, to_messages
from .logit_bias import LogitBias, Tokenizer, token_encoder

ConstraintMode = Literal["strict", "ngram", "soft"]

_END = -1  # end of a library response (stands for the EOS ids) in the trie and n-gram tables
_START = -2  # padding before the first token of a response, so n-grams know where a response begins


def _eos_ids(tokenizer: Tokenizer, eos_token_id: int | Sequence[int] | None) -> list[int]:
    if eos_token_id is None:
        eos_token_id = getattr(tokenizer, "eos_token_id", None)
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    if not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise ConfigError(
            "the end-of-sequence token id is unknown: pass eos_token_id= (for a local model, the ids in "
            f"model.generation_config.eos_token_id), got {eos_token_id!r}"
        )
    return ids


class LibraryConstraint:
    """Keeps decoding on token sequences seen in the library responses.

    mode:
        "strict": only continuations that keep the output a prefix of some library response (a token
            trie); EOS is allowed exactly where a whole library response has been produced.
        "ngram": only tokens that follow the last `order - 1` generated tokens somewhere in a library
            response (backing off to shorter contexts when that context was never seen); EOS where such
            a context ends a response.
        "soft": as "ngram", but tokens outside get `penalty` subtracted from their logits instead of
            being forbidden.

    A row is never left without an allowed token: a row that has left the library (e.g. a token forced
    by another processor) is passed through unconstrained. The processor keeps per-row state across the
    steps of one `generate` call and notices a new call by itself; use one processor per call at a time.
    """

    def __init__(
        self,
        sequences: Iterable[Sequence[int]],
        eos_token_id: int | Sequence[int],
        mode: ConstraintMode = "strict",
        *,
        order: int = 3,
        penalty: float = 5.0,
    ) -> None:
        if mode not in ("strict", "ngram", "soft"):
            raise ConfigError(f"LibraryConstraint mode must be 'strict', 'ngram' or 'soft', got {mode!r}")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ConfigError(f"LibraryConstraint order must be a whole number >= 1, got {order!r}")
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
            raise ConfigError(f"LibraryConstraint penalty must be a number > 0, got {penalty!r}")
        self.mode = mode
        self.order = order
        self.penalty = float(penalty)
        self.eos_ids = _eos_ids(None, eos_token_id)
        self.sequences = [list(s) for s in sequences]
        self._trie: dict = {}
        self._tables: list[dict[tuple, set[int]]] = [{} for _ in range(order)]  # context length -> table
        for seq in self.sequences:
            node = self._trie
            for token in [*seq, _END]:
                node = node.setdefault(token, {})
            padded = [_START] * (order - 1) + seq + [_END]
            for i in range(order - 1, len(padded)):
                for k in range(order):
                    self._tables[k].setdefault(tuple(padded[i - k : i]), set()).add(padded[i])
        self._allowed_cache: dict[int, list[int]] = {}
        self._prev = None  # input_ids of the last call, to tell the next step from a new generate call
        self._prompt_len = 0
        self._states: list = []

    @classmethod
    def from_experiences(
        cls,
        experiences: Iterable[Experience],
        tokenizer: Tokenizer,
        mode: ConstraintMode = "strict",
        *,
        order: int = 3,
        penalty: float = 5.0,
        eos_token_id: int | Sequence[int] | None = None,
    ) -> LibraryConstraint:
        """Built from the experiences' responses. `eos_token_id`: default the tokenizer's; pass the
        model's (`model.generation_config.eos_token_id`) when they differ."""
        encode = token_encoder(tokenizer)
        sequences = [encode(e.response) for e in experiences]
        return cls(sequences, _eos_ids(tokenizer, eos_token_id), mode, order=order, penalty=penalty)

    def allowed(self, generated: Sequence[int]) -> list[int] | None:
        """Token ids allowed after `generated` (the tokens produced so far), sorted; None when the row
        has left the library and is not constrained."""
        return self._allowed(self._replay(generated))

    def _replay(self, generated: Sequence[int]):
        state = self._start()
        for token in generated:
            state = self._step(state, token)
        return state

    # States: "strict" a trie node (None once off the trie); n-gram modes the last order-1 tokens.

    def _start(self):
        return self._trie if self.mode == "strict" else (_START,) * (self.order - 1)

    def _step(self, state, token: int):
        if self.mode == "strict":
            return None if state is None or token in self.eos_ids else state.get(token)
        return (*state, token)[1:] if self.order > 1 else ()

    def _allowed(self, state) -> list[int] | None:
        if state is None or not self.sequences:
            return None
        if self.mode == "strict":
            nexts = state
        else:  # back off to shorter contexts: the longest one seen in the library decides
            nexts = next((t[state[k:]] for k, t in enumerate(reversed(self._tables)) if state[k:] in t), None)
            if nexts is None:
                return None
        key = id(nexts)
        if key not in self._allowed_cache:
            ids = {t for t in nexts if t >= 0} | (set(self.eos_ids) if _END in nexts else set())
            self._allowed_cache[key] = sorted(ids)
        return self._allowed_cache[key] or None

    def __call__(self, input_ids, scores):
        import torch

        prev, start = self._prev, self._prompt_len
        same_call = (
            prev is not None
            and input_ids.shape[0] == prev.shape[0]
            and input_ids.shape[1] == prev.shape[1] + 1
            and torch.equal(input_ids[:, :start], prev[:, :start])
        )
        if prev is None or not same_call:  # first step of a generate call: nothing generated yet
            self._prompt_len = input_ids.shape[1]
            self._states = [self._start()] * input_ids.shape[0]
        elif torch.equal(input_ids[:, :-1], prev):
            self._states = [self._step(s, t) for s, t in zip(self._states, input_ids[:, -1].tolist())]
        else:  # rows were reordered (beam search): replay each row's generated tokens
            self._states = [self._replay(row) for row in input_ids[:, start:].tolist()]
        self._prev = input_ids.clone()

        vocab = scores.shape[-1]
        rows, cols, free = [], [], []
        for row, state in enumerate(self._states):
            ids = self._allowed(state)
            if ids is None:
                free.append(row)
            else:
                rows.extend([row] * len(ids))
                cols.extend(ids)
        inside = torch.zeros_like(scores, dtype=torch.bool)
        if cols:
            rows_t = torch.tensor(rows, device=scores.device)
            cols_t = torch.tensor(cols, device=scores.device)
            keep = cols_t < vocab
            inside[rows_t[keep], cols_t[keep]] = True
        inside[free] = True
        inside |= ~inside.any(dim=1, keepdim=True)  # never leave a row with nothing allowed
        if self.mode == "soft":
            return scores - self.penalty * (~inside).to(scores.dtype)
        return scores.masked_fill(~inside, -math.inf)


def retrieve_experiences(
    grpo: Any, prompts: str | Sequence[str], k: int | None = 8, mode: str = "prefix", **options: Any
) -> list[Experience]:
    """The union of `grpo.get_experiences_for_prompt(prompt, k, mode, **options)` over the prompts,
    each experience once, in order of first retrieval."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    found: dict[int, Experience] = {}
    for prompt in prompts:
        for experience in grpo.get_experiences_for_prompt(prompt, k, mode=mode, **options):
            found.setdefault(id(experience), experience)
    return list(found.values())


def processors_for_prompts(
    grpo: Any,
    prompts: str | Sequence[str],
    tokenizer: Tokenizer,
    *,
    k: int | None = 8,
    retrieval: str = "prefix",
    bias: float | None = 2.0,
    constraint: ConstraintMode | None = None,
    order: int = 3,
    penalty: float = 5.0,
    eos_token_id: int | Sequence[int] | None = None,
    **options: Any,
) -> list:
    """Logits processors for a batch of prompts from the experiences retrieved for them (the union,
    `k` per prompt, retrieval mode `retrieval`, `options` to the retriever): a `LogitBias` of strength
    `bias` (None: none) then a `LibraryConstraint` of mode `constraint` (None: none). Empty when
    nothing was retrieved."""
    experiences = retrieve_experiences(grpo, prompts, k, retrieval, **options)
    if not experiences:
        return []
    processors: list = []
    if bias is not None:
        processors.append(LogitBias.from_experiences(experiences, tokenizer, bias))
    if constraint is not None:
        processors.append(
            LibraryConstraint.from_experiences(
                experiences, tokenizer, constraint, order=order, penalty=penalty, eos_token_id=eos_token_id
            )
        )
    return processors


def logit_bias_for_prompt(
    grpo: Any,
    prompt: str,
    tokenizer: Tokenizer,
    strength: float = 2.0,
    *,
    k: int | None = 8,
    retrieval: str = "prefix",
    integer: bool = True,
    **options: Any,
) -> dict[str, int | float]:
    """The OpenAI `logit_bias` map for one prompt (for `GenerationParams(logit_bias=...)`); `tokenizer`
    must be the served model's. Empty when nothing was retrieved."""
    experiences = retrieve_experiences(grpo, prompt, k, retrieval, **options)
    if not experiences:
        return {}
    return LogitBias.from_experiences(experiences, tokenizer, strength).to_openai(integer)


GUIDANCE_MODES = ("none", "bias", "constrain")


@dataclass(frozen=True)
class GuidanceConfig:
    """How a library steers decoding beyond the prompt (the guide's logit biasing and constrained decoding),
    from the successes retrieved for each prompt."""

    guidance: str = knob(
        "none",
        "steer decoding by the library's successes retrieved for each prompt: bias (a logit bias towards their "
        "tokens; over HTTP sent as OpenAI's logit_bias map) or constrain (decoding kept on their token n-grams; "
        "local models only); none: the prompt alone",
        choices=GUIDANCE_MODES,
    )
    guidance_k: int = knob(4, "with --guidance: successes retrieved per prompt", minimum=1, needs="guidance")
    guidance_retrieval: str = knob(
        "lexical",
        "with --guidance: how they are retrieved (as --retrieval-mode)",
        choices=("lexical", "semantic", "hybrid"),
        needs="guidance",
    )
    guidance_strength: float = knob(
        2.0,
        "with --guidance bias: the bias, in logits, of a token that every retrieved success holds (a token in "
        "half of them gets half)",
        minimum=-100.0,
        maximum=100.0,
        needs="guidance",
    )
    guidance_constraint: str = knob(
        "ngram",
        "with --guidance constrain: strict (only prefixes of a success), ngram (only tokens that continue one of "
        "their 3-grams) or soft (tokens outside them penalised by 5 logits)",
        choices=("strict", "ngram", "soft"),
        needs="guidance",
    )
    guidance_tokenizer: str = knob(
        "local",
        "with --guidance bias over HTTP: the served model's tokenizer (local: the bundled model's; else a model "
        "directory, .gguf file or hub id); a local model uses its own",
        needs="guidance",
    )

    def __post_init__(self) -> None:
        check_knobs(self)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(spec: str) -> Any:
    from .local import load_tokenizer

    return load_tokenizer(None if spec == "local" else spec)


def _raw(backend: Backend) -> Backend:
    """The backend under a `CachedBackend` (guided calls that cannot be keyed go to it directly)."""
    return getattr(backend, "backend", backend) if type(backend).__name__ == "CachedBackend" else backend


def local_model(backend: Backend) -> Backend:
    """The local model (under any cache) a constraint is handed to; a clear error for any other backend."""
    model = _raw(backend)
    if getattr(model, "tokenizer", None) is None or getattr(model, "eos_token_ids", None) is None:
        raise ConfigError(
            f"--guidance constrain needs a local model (its decoding is constrained token by token); "
            f"{model.model_name} is not one. Use --guidance bias over HTTP, or serve the model with "
            "`tfgrpo serve-model --guidance constrain -l LIBRARY`"
        )
    return model


def tokenizer_of(backend: Backend, config: GuidanceConfig) -> Any:
    """The tokenizer whose ids a guide of `backend` uses: a local model's own, else `config.guidance_tokenizer`."""
    own = getattr(_raw(backend), "tokenizer", None)
    return own if own is not None else _load_tokenizer(config.guidance_tokenizer)


def check_guidance(backend: Backend, config: GuidanceConfig) -> None:
    """Refuse guidance `backend` cannot take before any call: constrained decoding of a model that is not
    local, or a bias whose tokenizer cannot be loaded."""
    if config.guidance == "constrain":
        local_model(backend)
    elif config.guidance == "bias":
        tokenizer_of(backend, config)


def guided_generate(
    backend: Backend,
    prompts: Sequence[Prompt],
    successes: Sequence[Sequence[Experience]],
    params: GenerationParams,
    config: GuidanceConfig,
    *,
    chat: bool | None = None,
    concurrency: int = 16,
) -> list[list[Generation]]:
    """`backend.generate` with each prompt guided by its `successes` (the experiences retrieved for it; none:
    unguided), one call per prompt. "bias": a `LogitBias` as `params.logit_bias` (cached like any call, sent
    over HTTP); "constrain": a `LibraryConstraint` handed to the local model under any cache (not cached: a
    constraint is no sampling parameter)."""
    if config.guidance == "none":
        return backend.generate(prompts, params, chat=chat)
    if len(prompts) != len(successes):
        raise ConfigError(
            f"guided_generate needs one list of successes per prompt, got {len(successes)} for {len(prompts)}"
        )
    if config.guidance == "bias":
        tokenizer = tokenizer_of(backend, config)

        def one(i: int) -> list[Generation]:
            found = successes[i]
            bias = LogitBias.from_experiences(found, tokenizer, config.guidance_strength).bias if found else None
            return backend.generate([prompts[i]], params.replace(logit_bias=bias or None), chat=chat)[0]

    else:
        model = local_model(backend)

        def one(i: int) -> list[Generation]:
            found = successes[i]
            processors = None
            if found:
                mode: ConstraintMode = config.guidance_constraint  # type: ignore[assignment]
                eos = model.eos_token_ids  # type: ignore[attr-defined]
                processors = [LibraryConstraint.from_experiences(found, model.tokenizer, mode, eos_token_id=eos)]  # type: ignore[attr-defined]
            return model.generate([prompts[i]], params, chat=chat, logits_processors=processors)[0]  # type: ignore[call-arg]

    if len(prompts) <= 1 or config.guidance == "constrain":  # a constraint holds per-call state: one at a time
        return [one(i) for i in range(len(prompts))]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(prompts)), thread_name_prefix="tfgrpo-guided") as pool:
        return list(pool.map(one, range(len(prompts))))


def query_of(prompt: Prompt) -> str:
    """What a served request is about, for retrieval: a text prompt, or its last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in to_messages(prompt) if m["role"] == "user"]
    return users[-1] if users else ""


class GuidedBackend(Backend):
    """`backend` with every call guided by `library` (`GuidanceConfig`): the successes retrieved for each
    prompt (its text, or its last user message) bias or constrain the decoding. A request's own
    `logit_bias` is added to the guide's (each entry kept in [-100, 100])."""

    def __init__(self, backend: Backend, library: Any, config: GuidanceConfig) -> None:
        if config.guidance == "none":
            raise ConfigError("GuidedBackend needs guidance 'bias' or 'constrain'")
        self.backend = backend
        self.library = library
        self.config = config
        self.model_name = backend.model_name
        self.structured_output = backend.structured_output
        if config.guidance == "constrain":
            local_model(backend)  # refused now, not at the first request

    @property
    def usage(self) -> Usage:
        return self.backend.usage

    def successes(self, prompt: Prompt) -> list[Experience]:
        query = query_of(prompt)
        if not query.strip() or not len(self.library):
            return []
        return self.library.get_experiences_for_prompt(
            query, self.config.guidance_k, mode=self.config.guidance_retrieval
        )

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[list[Generation]]:
        params = params or GenerationParams()
        if self.config.guidance == "bias":
            return [self.backend.generate([p], self._biased(p, params), chat=chat)[0] for p in prompts]
        return guided_generate(
            self.backend, prompts, [self.successes(p) for p in prompts], params, self.config, chat=chat
        )

    def _biased(self, prompt: Prompt, params: GenerationParams) -> GenerationParams:
        found = self.successes(prompt)
        if not found:
            return params
        bias = dict(
            LogitBias.from_experiences(
                found, tokenizer_of(self.backend, self.config), self.config.guidance_strength
            ).bias
        )
        for token, value in (params.logit_bias or {}).items():
            bias[token] = max(-100.0, min(100.0, bias.get(token, 0.0) + value))
        return params.replace(logit_bias=bias)

    async def agenerate(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[Generation]:
        if self.config.guidance == "bias":  # the backend's own call, so a client that leaves cancels it
            biased = await asyncio.to_thread(self._biased, prompt, params or GenerationParams())
            return await self.backend.agenerate(prompt, biased, chat=chat)
        return await super().agenerate(prompt, params, chat=chat)

    async def astream(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> AsyncGenerator[Delta, None]:
        """Streamed as the backend streams with a bias; with a constraint, each completion as one piece."""
        if self.config.guidance == "bias":
            biased = await asyncio.to_thread(self._biased, prompt, params or GenerationParams())
            async for delta in self.backend.astream(prompt, biased, chat=chat):
                yield delta
            return
        async for delta in super().astream(prompt, params, chat=chat):
            yield delta

    def close(self) -> None:
        """Closes nothing: the backend and the library belong to the caller."""
