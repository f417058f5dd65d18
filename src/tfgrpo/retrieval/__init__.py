"""Prompt -> experiences: lexical (BM25), semantic (sentence embeddings) and hybrid retrieval.

Imports only numpy here; sentence-transformers, openai and faiss are loaded inside the code that needs
them, when it is first used (extras `retrieval`, `http` and `retrieval-ann`).
"""

from ..core.index import MODES
from .embedders import DEFAULT_MODEL, Embedder, OpenAIEmbedder, SentenceTransformerEmbedder, make_embedder
from .lexical import BM25Index, tokenize
from .retriever import Retriever
from .vectors import VectorIndex

__all__ = [
    "BM25Index",
    "DEFAULT_MODEL",
    "Embedder",
    "MODES",
    "OpenAIEmbedder",
    "Retriever",
    "SentenceTransformerEmbedder",
    "VectorIndex",
    "make_embedder",
    "tokenize",
]
