"""The index structures underneath: BM25 against a direct implementation of the formula, and the
vector index (exact and HNSW) against exact search."""

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.properties import examples
from tfgrpo.errors import TFGRPOError
from tfgrpo.retrieval import BM25Index, VectorIndex, lexical, tokenize


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


@settings(max_examples=examples(60))
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


def _exhaustive_top(index: BM25Index, query: str, k: int) -> tuple[list[int], list[float]]:
    rows, scores = index.search(query)  # every match scored (no pruning)
    return rows[:k].tolist(), scores[:k].tolist()


ZIPF_WORDS = [f"w{i}" for i in range(40)]
# Zipf-like: a few words are in most documents, most in few (the case the pruning is for); weights as repeats
ZIPF = st.sampled_from([w for i, w in enumerate(ZIPF_WORDS) for _ in range(max(1, 40 // (i + 1)))])
ADDS_REMOVES_AND_QUERIES = given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.lists(ZIPF, min_size=1, max_size=10).map(" ".join)),
            st.tuples(st.just("remove"), st.integers(0, 200)),
        ),
        min_size=1,
        max_size=120,
    ),
    queries=st.lists(st.lists(ZIPF, min_size=1, max_size=8).map(" ".join), min_size=1, max_size=4),
    k=st.integers(1, 12),
    save_at=st.integers(0, 120),
)


@settings(max_examples=examples(80))
@ADDS_REMOVES_AND_QUERIES
def test_bm25_pruned_top_k_is_the_exhaustive_top_k(steps, queries, k, save_at):
    """After any sequence of adds and removes (and a save and restore on the way), the pruned top k has
    exactly the rows and the float32 scores of scoring every match, ties going to the older row. The
    threshold is set after the rarest term (no postings scanned up front), so that these small corpora
    go through every phase of the pruning."""
    budget = lexical._PROBE_POSTINGS
    lexical._PROBE_POSTINGS = 0
    try:
        _check_adds_and_removes(steps, queries, k, save_at)
    finally:
        lexical._PROBE_POSTINGS = budget


@settings(max_examples=examples(40))
@ADDS_REMOVES_AND_QUERIES
def test_bm25_dense_terms_give_the_exhaustive_top_k(steps, queries, k, save_at):
    """The same with every queried term given a dense row -> frequency array (kept up to date by the adds
    and removes after it was made)."""
    budget, share = lexical._PROBE_POSTINGS, lexical._DENSE_SHARE
    lexical._PROBE_POSTINGS, lexical._DENSE_SHARE = 0, 2**30
    try:
        _check_adds_and_removes(steps, queries, k, save_at)
    finally:
        lexical._PROBE_POSTINGS, lexical._DENSE_SHARE = budget, share


def test_bm25_dense_arrays_follow_adds_past_capacity_and_large_frequencies(prune_early):
    """A common term's dense array grows with the index and widens for a frequency above 255; with
    removals on the way, results stay those of scoring every match."""
    index = BM25Index()
    texts = {row: f"common w{row % 7} rare{row % 50}" for row in range(200)}
    for row, text in texts.items():
        index.add(row, text)
    index.search("common w3", 5)
    assert index._get("common").dense is not None and index._get("rare1").dense is None
    for row in range(200, 3000):  # past the first capacity (1024 rows)
        texts[row] = ("common " * 300 if row == 2500 else "common ") + f"w{row % 7} rare{row % 50}"
        index.add(row, texts[row])
    for row in range(0, 3000, 3):
        index.remove(row, texts.pop(row))
    assert index._get("common").dense.dtype == np.int32
    for query in ("common w3", "rare7 common w1", "w2 w5 common rare49"):
        for k in (1, 5, 40):
            assert index.search(query, k)[0].tolist() == index.search(query)[0][:k].tolist()
            assert index.search(query, k)[1].tolist() == index.search(query)[1][:k].tolist()


def _check_adds_and_removes(steps, queries, k, save_at):
    index = BM25Index()
    texts: dict[int, str] = {}
    next_row = 0
    for step, (kind, value) in enumerate(steps):
        if step == save_at:
            restored = BM25Index()
            restored.restore(index.export(next_row))
            index = restored
        if kind == "add":
            index.add(next_row, value)
            texts[next_row] = value
            next_row += 1
        elif texts:
            row = sorted(texts)[value % len(texts)]
            index.remove(row, texts.pop(row))
        for query in queries:
            rows, scores = index.search(query, k)
            expected_rows, expected_scores = _exhaustive_top(index, query, k)
            assert rows.tolist() == expected_rows and scores.tolist() == expected_scores
    for query in queries:
        expected = reference_bm25(texts, query) if texts else {}
        best = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:k]
        rows, scores = index.search(query, k)
        assert len(rows) == len(best)
        assert scores.tolist() == pytest.approx([s for _, s in best], rel=1e-4)


@pytest.fixture
def prune_early(monkeypatch):
    monkeypatch.setattr(lexical, "_PROBE_POSTINGS", 0)


def test_bm25_ties_go_to_the_older_row(prune_early):
    index = BM25Index()
    for row in range(200):
        index.add(row, "same words here" if row % 3 == 0 else f"other{row} words")
    rows, _ = index.search("same here", 5)
    assert rows.tolist() == [0, 3, 6, 9, 12]
    index.remove(3, "same words here")
    assert index.search("same here", 2)[0].tolist() == [0, 6]


def test_bm25_bounds_follow_the_average_length(prune_early):
    """Impacts computed for one average length stay valid bounds after it changes a lot (long documents
    added later), and the scores stay exact."""
    index = BM25Index()
    for row in range(300):
        index.add(row, f"common rare{row % 30} x")
    index.search("common rare3", 5)  # impacts computed now
    for row in range(300, 600):
        index.add(row, "common " + " ".join(f"filler{i}" for i in range(40)) + f" rare{row % 30}")
    for query in ("common rare3", "rare7 common filler1", "filler2"):
        for k in (1, 5, 40):
            assert index.search(query, k)[0].tolist() == index.search(query)[0][:k].tolist()
