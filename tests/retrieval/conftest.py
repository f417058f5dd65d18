import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class CountingEmbedder:
    """The real MiniLM embedder, counting the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return self.inner.embed(texts)

    @property
    def embedded(self) -> int:
        return sum(len(c) for c in self.calls)


@pytest.fixture(scope="session")
def minilm():
    pytest.importorskip("sentence_transformers")
    from tfgrpo.retrieval import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    vectors = embedder.embed(["warm up"])
    assert vectors.shape == (1, 384)
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-4)
    return embedder


@pytest.fixture
def counting(minilm):
    return CountingEmbedder(minilm)
