"""The index structures underneath: BM25 against a direct implementation of the formula, and the
vector index (exact and HNSW) against exact search."""

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgrpo.errors import TFGRPOError
from tfgrpo.retrieval import BM25Index, VectorIndex, tokenize


def reference_bm25(docs: dict[int, str], query: str, k1=1.2, b=0.75) -> dict[int, float]:
    tokenized = {row: tokenize(text) for row, text in docs.items()}
    n = len(docs)
    avg = sum(len(t) for t in tokenized.values()) / n
    scores = {}
    for row, tokens in tokenized.items():
        tf = Counter(tokens)
        score = 0.0
        for term, qtf in Counter(tokenize(query)).items():
            df = sum(1 for t in tokenized.values() if term in t)
            if tf[term]:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += qtf * idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(tokens) / avg))
        if score > 0:
            scores[row] = score
    return scores


def test_tokenize():
    assert tokenize("Read_file(path) -> Bytes, 2 times!") == ["read", "file", "path", "bytes", "2", "times"]
    assert tokenize("Übergröße café") == ["übergröße", "café"]


WORDS = st.sampled_from(["read", "file", "write", "string", "reverse", "bytes", "lines", "sort", "list", "x"])


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.lists(WORDS, min_size=1, max_size=8).map(" ".join), min_size=1, max_size=30),
    removed=st.sets(st.integers(0, 29), max_size=15),
    query=st.lists(WORDS, min_size=1, max_size=4).map(" ".join),
)
def test_bm25_matches_the_formula_after_removals(docs, removed, query):
    index = BM25Index()
    for row, text in enumerate(docs):
        index.add(row, text)
    live = {row: text for row, text in enumerate(docs) if row not in removed}
    for row in removed:
        if row < len(docs):
            index.remove(row, docs[row])
    assert len(index) == len(live)
    rows, scores = index.search(query)
    expected = reference_bm25(live, query) if live else {}
    assert dict(zip(rows.tolist(), scores.tolist())) == pytest.approx(expected, rel=1e-4)
    assert list(scores) == sorted(scores, reverse=True)
    top_rows, _ = index.search(query, k=3)
    assert len(top_rows) == min(3, len(expected))
    assert set(top_rows.tolist()) <= set(expected)


def test_bm25_compaction_keeps_results():
    index = BM25Index()
    for row in range(500):
        index.add(row, f"common word{row % 7} extra{row}")
    for row in range(0, 500, 2):
        index.remove(row, f"common word{row % 7} extra{row}")  # half go: the postings of "common" are compacted
    rows, _ = index.search("common word3")
    assert set(rows.tolist()) == set(range(1, 500, 2))
    assert set(rows[: len([r for r in range(1, 500, 2) if r % 7 == 3])].tolist()) == {
        r for r in range(1, 500, 2) if r % 7 == 3
    }
    assert index.search("nothing")[0].size == 0


def clustered(n, d=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(n // 50, 4), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_vector_search_and_tombstones():
    x = clustered(300)
    index = VectorIndex(approximate_threshold=None)
    index.add(np.arange(300), x)
    q = x[7]
    rows, scores = index.search(q, 5)
    assert rows[0] == 7 and scores[0] == pytest.approx(1.0, abs=1e-5)
    expected = np.argsort(-(x @ q))[:5]
    assert set(rows.tolist()) == set(expected.tolist())
    index.remove(7)
    rows, _ = index.search(q, 5)
    assert 7 not in rows.tolist() and len(index) == 299
    all_rows, all_scores = index.search(q, None)
    assert len(all_rows) == 299 and list(all_scores) == sorted(all_scores, reverse=True)
    with pytest.raises(TFGRPOError, match="embedding size"):
        index.add(np.array([300]), np.ones((1, 32)))


def test_hnsw_recall_and_deletions():
    pytest.importorskip("faiss")
    x = clustered(3000)
    index = VectorIndex(approximate_threshold=1000, threads=1)
    index.add(np.arange(2000), x[:2000])
    queries = clustered(50, seed=1)
    assert index.approximate()

    def recall():
        hits = 0
        for q in queries:
            rows, _ = index.search(q, 10)
            exact, _ = index.search_exact(q, 10)
            hits += len(set(rows.tolist()) & set(exact.tolist()))
        return hits / (10 * len(queries))

    assert recall() >= 0.95
    index.add(np.arange(2000, 3000), x[2000:])  # added to the graph incrementally
    assert recall() >= 0.95
    for row in range(0, 3000, 3):
        index.remove(row)
    for q in queries:
        rows, _ = index.search(q, 10)
        assert len(rows) == 10 and all(row % 3 for row in rows.tolist())
    assert recall() >= 0.95
    for row in range(1, 3000, 3):
        index.remove(row)  # most of the graph is dead now: it is rebuilt
    rows, _ = index.search(queries[0], 10)
    assert all(row % 3 == 2 for row in rows.tolist()) and recall() >= 0.95


def test_bm25_top_k_with_pruning_equals_full_ranking():
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(300)]
    weights = 1.0 / np.arange(1, 301) ** 1.1
    weights /= weights.sum()
    index = BM25Index()
    docs = {}
    for row in range(6000):
        words = rng.choice(vocab, size=int(rng.integers(3, 12)), p=weights)
        docs[row] = " ".join(["the"] + list(words))  # "the": in every document
        index.add(row, docs[row])
    for row in range(0, 6000, 5):
        index.remove(row, docs[row])
    for _ in range(40):
        query = " ".join(rng.choice(vocab, size=3, p=weights)) + " the"
        all_rows, all_scores = index.search(query)
        for k in (1, 10, 50):
            rows, scores = index.search(query, k)
            assert np.allclose(scores, all_scores[:k], rtol=1e-5)
            by_row = dict(zip(all_rows.tolist(), all_scores.tolist()))
            assert all(by_row[r] == pytest.approx(s, rel=1e-5) for r, s in zip(rows.tolist(), scores.tolist()))
