"""`Retriever`: prompt -> experiences by meaning (embeddings), by words (BM25), or both (hybrid).

Attached to a library (`grpo.enable_retrieval(...)` or `TrainingFreeGRPO(retriever=...)`), it is told of
every insertion and removal and keeps its indexes in step. It indexes *distinct texts* (by default the
prompt), not experiences: the members of a group share one prompt, so each prompt is tokenised and
embedded once, and a hit on a prompt yields all of its experiences.

Indexes are built lazily: nothing is tokenised before the first lexical query and nothing is embedded
before the first semantic one; afterwards new texts are indexed as they arrive (BM25) or embedded in one
batch at the next semantic query. Embeddings are written to the library's SQLite store (table
`embeddings`, keyed by model and text), so reopening a library does not embed it again, and the rows of
texts that left the library are deleted there. The indexes themselves (BM25 postings, the HNSW graph)
are saved beside the library file (`<library>.index`, see `snapshot.py`) after a build from scratch and
by `save_indexes()`, and taken over by the next retriever attached to that library, so a new process
neither re-tokenises the library nor rebuilds the graph; what changed since the save is brought up to
date text by text.
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..core.experience import Experience, approx_tokens
from ..core.index import MODES, IndexedLibrary
from ..errors import TFGRPOError
from . import _snapshot as snapshot
from .embedders import Embedder, make_embedder
from .lexical import BM25Index, tokenize
from .vectors import VectorIndex

SAVE_LEXICAL_AT = 20_000  # a BM25 build over at least this many texts is saved (smaller ones are quick to redo)


def example_text(exp: Experience) -> str:
    """How an experience is counted against a token budget: the default few-shot form."""
    return f"Q: {exp.prompt}\nA: {exp.response}\n\n"


class Retriever:
    """Lexical (BM25), semantic (embeddings) and hybrid (reciprocal rank fusion) search over a library.

    embedder: None (all-MiniLM-L6-v2, loaded on first semantic query), a sentence-transformers model
        name or path, "openai:MODEL[@BASE_URL]", or any object with `name` and `embed(texts)`.
    text: what is indexed for each experience (default: its prompt).
    approximate_threshold: above this many distinct texts, semantic search uses an HNSW graph (faiss)
        instead of exact numpy search; None: always exact.
    rrf_k: the constant of reciprocal rank fusion in hybrid mode (score = sum of 1 / (rrf_k + rank)).
    persist_embeddings: write embeddings to the library's store (when it supports it).
    persist_indexes: save the BM25 and HNSW indexes to `index_path` after a build from scratch, and take
        over the ones saved there when attached.
    index_path: where (default: `<library file>.index` for a library with a file store, else nowhere).
    """

    def __init__(
        self,
        embedder: Embedder | str | None = None,
        *,
        text: Callable[[Experience], str] | None = None,
        approximate_threshold: int | None = 20_000,
        rrf_k: int = 60,
        persist_embeddings: bool = True,
        embed_batch_size: int = 256,
        vector_index: VectorIndex | None = None,
        persist_indexes: bool = True,
        index_path: str | os.PathLike | None = None,
    ) -> None:
        self._embedder_spec = embedder
        self._embedder: Embedder | None = None
        self._text = text or operator.attrgetter("prompt")
        self.rrf_k = rrf_k
        self.persist_embeddings = persist_embeddings
        self.embed_batch_size = embed_batch_size
        self.persist_indexes = persist_indexes
        self._index_path = Path(index_path) if index_path is not None else None
        self.restored_rows = 0  # rows taken over from a saved index when attached
        self._saved_builds = 0
        self._library: IndexedLibrary | None = None
        self._bm25 = BM25Index()
        # (`is None`, not `or`: an empty VectorIndex is falsy, and one passed in must be used)
        self._vectors = vector_index if vector_index is not None else VectorIndex(approximate_threshold)
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._reset()

    def _reset(self) -> None:
        self._row_of: dict[str, int] = {}  # live text -> row
        self._texts: list[str | None] = []  # row -> text (None once the row is dead)
        self._members: list[dict[int, Experience] | None] = []  # row -> {id(experience): experience}
        self._n_dead = 0
        self._lexical_on = False
        self._semantic_on = False
        self._pending: list[int] = []  # rows still to embed
        self._dead_vectors: dict[str, np.ndarray] = {}  # texts that left, in case they come back
        self._to_delete: set[str] = set()  # texts whose stored embeddings are to be deleted
        # Saved BM25 postings, taken over at the first lexical query (a semantic one need not wait for
        # them), and the saved rows that left before then.
        self._saved_bm25: dict | None = None
        self._saved_bm25_dropped: dict[int, str] = {}
        self._bm25.clear()
        self._vectors.clear()

    # -- wiring to the library ----------------------------------------------------------------------------

    def attach(self, library: IndexedLibrary) -> None:
        """Index a library's current contents; the library then reports every change (called by
        `TrainingFreeGRPO.enable_retrieval`)."""
        if self._library is not None and self._library is not library:
            raise TFGRPOError("this retriever is already attached to another library; create one per library")
        self._library = library
        self._reset()
        path = self.index_path
        saved = snapshot.load(path) if path is not None else None
        experiences = list(library.experience_library)
        if saved is not None and self._take_over(saved, experiences):
            return
        if saved is not None:
            self._restore(saved, saved.row_texts())
        self.add_many(experiences)
        if saved is not None:  # saved texts that left the library since: dropped like removed ones
            texts = self._texts
            for row in [row for row, members in enumerate(self._members) if members is not None and not members]:
                self._drop(texts[row], row)  # type: ignore[arg-type]  # (a live row has its text)

    @property
    def index_path(self) -> Path | None:
        """Where the indexes are saved (None: nowhere)."""
        if not self.persist_indexes:
            return None
        if self._index_path is not None:
            return self._index_path
        store = self._library.store if self._library is not None else None
        library_file = getattr(store, "path", None)
        return snapshot.index_path(library_file) if library_file is not None else None

    def _take_over(self, saved: snapshot.Snapshot, experiences: list[Experience]) -> bool:
        """The usual case, in one pass: the saved rows are the library's first distinct texts, in order
        (unchanged since the save, or only grown), so the saved texts are compared, not decoded, and the
        rows are numbered by the library's own strings. False (nothing done) in any other case."""
        texts = [self._text(e) for e in experiences]
        row_of = dict(zip(texts, range(len(texts))))
        if len(row_of) == len(texts):  # one experience per text (the texts beyond the saved ones: new rows)
            if not saved.is_prefix_of(texts):
                return False
            self._restore(saved, texts, [{id(e): e} for e in experiences], row_of)
        else:
            distinct = list(dict.fromkeys(texts))  # in order of first appearance, as `add` numbers rows
            if not saved.is_prefix_of(distinct):
                return False
            self._restore(saved, distinct)
            row_of, members = self._row_of, self._members
            for exp, text in zip(experiences, texts):
                members[row_of[text]][id(exp)] = exp  # type: ignore[index]  # (live rows have a dict)
        return True

    def _restore(
        self,
        saved: snapshot.Snapshot,
        texts: list[str | None],
        members: list[dict[int, Experience] | None] | None = None,
        row_of: dict[str, int] | None = None,
    ) -> None:
        """Take over the row layout (the text of each row: the saved ones, and after them any new ones)
        and the indexes of a saved snapshot; `members` (default: none yet, filled in after) and `row_of`
        (text -> row) when the caller has them."""
        self._texts = texts
        if row_of is None:
            row_of = dict(zip(texts, range(len(texts))))  # type: ignore[arg-type]  # (None: dead rows, popped)
            row_of.pop(None, None)  # type: ignore[call-overload]
        self._row_of = row_of
        self._n_dead = texts.count(None)
        if len(self._row_of) + self._n_dead != len(texts):
            warnings.warn(
                "ignoring a saved retrieval index that lists a text twice; it will be rebuilt", RuntimeWarning, 3
            )
            self._reset()
            return
        if members is None:
            members = [{} for _ in texts] if not self._n_dead else [None if t is None else {} for t in texts]
        self._members = members
        self.restored_rows = saved.live_rows()
        self._saved_bm25 = saved.bm25
        ann = saved.ann
        if ann is not None and saved.embedder == self.embedder.name:
            settings = {**self._vectors.hnsw_settings(), "dim": ann.d}
            if saved.hnsw == settings:
                alive = np.fromiter((t is not None for t in texts[: ann.ntotal]), dtype=bool, count=ann.ntotal)
                self._vectors.restore(ann, alive, saved.graph_bytes)
                self._semantic_on = True
                self._pending = [row for row in range(ann.ntotal, len(texts)) if texts[row] is not None]
        self._saved_builds = self._vectors.builds

    def save_indexes(self, path: str | os.PathLike | None = None) -> Path:
        """Save the indexes built so far (to `path`, default `index_path`), so that the next retriever
        attached to this library takes them over instead of rebuilding them. Returns the path."""
        target = Path(path) if path is not None else self.index_path
        if target is None:
            raise TFGRPOError(
                "this library has no file to save the retrieval index beside; pass a path "
                "(or Retriever(index_path=...)), or open the library from an SQLite file"
            )
        saved = snapshot.Snapshot(list(self._texts))
        if self._saved_bm25 is not None:
            self._enable_lexical()
        if self._lexical_on:
            saved.bm25 = self._bm25.export(len(self._texts))
        ann = self._vectors.export()
        if ann is not None:
            saved.embedder, saved.ann, saved.hnsw = self.embedder.name, ann, self._vectors.hnsw_settings()
        snapshot.save(target, saved)
        self._saved_builds = self._vectors.builds
        return target

    def _autosave(self) -> None:
        """Save after a build from scratch (never fails a query: a failed save is a warning)."""
        if self.index_path is None:
            return
        try:
            self.save_indexes()
        except (OSError, TFGRPOError) as exc:
            warnings.warn(f"could not save the retrieval index to {self.index_path}: {exc}", RuntimeWarning, 3)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self._embedder_spec)
        return self._embedder

    def __len__(self) -> int:
        """How many distinct texts are indexed."""
        return len(self._row_of)

    def add(self, exp: Experience) -> None:
        text = self._text(exp)
        row = self._row_of.get(text)
        if row is None:
            row = self._new_row(text)
        members = self._members[row]
        assert members is not None, "a live text's row has a members dict"
        members[id(exp)] = exp

    def add_many(self, experiences: Iterable[Experience]) -> None:
        """`add` each (inlined: a million of them when a library is attached)."""
        row_of, members, text_of = self._row_of, self._members, self._text
        for exp in experiences:
            text = text_of(exp)
            row = row_of.get(text)
            if row is None:
                row = self._new_row(text)  # (appends to `members`, the same list)
            members[row][id(exp)] = exp  # type: ignore[index]  # (a live row has a members dict)

    def _new_row(self, text: str) -> int:
        row = len(self._texts)
        self._row_of[text] = row
        self._texts.append(text)
        self._members.append({})
        if self._lexical_on:
            self._bm25.add(row, text)
        if self._semantic_on:
            vector = self._dead_vectors.pop(text, None)
            if vector is not None:
                self._vectors.add(np.array([row]), vector[None, :])
            else:
                self._pending.append(row)
        return row

    def remove(self, exp: Experience) -> None:
        text = self._text(exp)
        row = self._row_of.get(text)
        if row is None:
            return
        members = self._members[row]
        assert members is not None, "a live text's row has a members dict"
        members.pop(id(exp), None)
        if not members:
            self._drop(text, row)

    def _drop(self, text: str, row: int) -> None:
        """A text left the library: its row becomes a tombstone in both indexes."""
        del self._row_of[text]
        self._texts[row] = None
        self._members[row] = None
        self._n_dead += 1
        self._bm25.remove(row, text)
        if self._saved_bm25 is not None:
            self._saved_bm25_dropped[row] = text
        if self._vectors.has(row):
            if len(self._dead_vectors) < 4096:
                self._dead_vectors[text] = self._vectors.vectors(row).copy()
            self._vectors.remove(row)
        if self._semantic_on:  # (before that, stale stored vectors are found when semantic search starts)
            self._to_delete.add(text)
        if self._n_dead > max(4096, 2 * len(self._row_of)):
            self._compact()

    def clear(self) -> None:
        """Forget everything (the library was cleared or replaced); the indexes that were in use stay on."""
        lexical, semantic = self._lexical_on, self._semantic_on
        to_delete = self._to_delete | set(self._row_of) if semantic else set()
        kept = {}  # vectors of the texts, in case they come back (load_from_file refills at once)
        if semantic:
            rows = [(text, row) for text, row in self._row_of.items() if self._vectors.has(row)]
            if rows:
                vectors = self._vectors.vectors(np.array([row for _, row in rows], dtype=np.int64))
                kept = {text: vectors[i] for i, (text, _) in enumerate(rows)}
        self._reset()
        self._to_delete, self._dead_vectors = to_delete, kept
        self._lexical_on, self._semantic_on = lexical, semantic

    def _compact(self) -> None:
        """Renumber the live texts densely, dropping the tombstones of dead ones."""
        live = [(row, text) for text, row in self._row_of.items()]
        live.sort()
        members = [self._members[row] for row, _ in live]
        has_vector = [self._vectors.has(row) for row, _ in live]
        old_rows = np.array([row for (row, _), ok in zip(live, has_vector) if ok], dtype=np.int64)
        vectors = self._vectors.vectors(old_rows) if len(old_rows) else None
        lexical, semantic, to_delete = self._lexical_on, self._semantic_on, self._to_delete
        dead_vectors = self._dead_vectors
        self._reset()
        self._lexical_on, self._to_delete, self._dead_vectors = lexical, to_delete, dead_vectors
        for (_, text), group in zip(live, members):
            row = self._new_row(text)
            self._members[row] = group
        if semantic:
            self._semantic_on = True
            new_rows = np.array([i for i, ok in enumerate(has_vector) if ok], dtype=np.int64)
            if vectors is not None:
                self._vectors.add(new_rows, vectors)
            self._pending = [i for i, ok in enumerate(has_vector) if not ok]

    # -- indexes ------------------------------------------------------------------------------------------

    def _enable_lexical(self) -> None:
        if self._saved_bm25 is not None:
            self._bm25.restore({**self._saved_bm25, "terms": snapshot.terms(self._saved_bm25["terms"])})
            for row, text in self._saved_bm25_dropped.items():
                self._bm25.remove(row, text)
            self._saved_bm25, self._saved_bm25_dropped = None, {}
            self._lexical_on = True
            for text, row in self._row_of.items():  # the texts that came since the save
                if row not in self._bm25:
                    self._bm25.add(row, text)
        if not self._lexical_on:
            self._lexical_on = True
            for text, row in self._row_of.items():
                self._bm25.add(row, text)
            if len(self._row_of) >= SAVE_LEXICAL_AT:
                self._autosave()

    def _enable_semantic(self) -> None:
        if not self._semantic_on:
            self._semantic_on = True
            self._pending = sorted(self._row_of.values())
            store = self._store()
            if store is not None:  # vectors of texts that left while semantic search was off
                self._to_delete |= {t for t in store.embedded_texts(self.embedder.name) if t not in self._row_of}
        self.embed_pending()

    def _store(self):
        store = self._library.store if self._library is not None else None
        if self.persist_embeddings and store is not None and hasattr(store, "save_embeddings"):
            return store
        return None

    def embed_pending(self) -> int:
        """Embed every indexed text that has no vector yet (in batches), reusing vectors saved in the
        store; save the new ones and delete those of texts that left. Returns how many were embedded."""
        store = self._store()
        # (`_pending` is emptied only at the end: if embedding fails, the next query tries again.)
        rows = [row for row in self._pending if self._texts[row] is not None and not self._vectors.has(row)]
        embedded = 0
        if rows:
            texts = [self._live_text(row) for row in rows]
            stored = store.load_embeddings(self.embedder.name, texts) if store is not None else {}
            if stored:
                known = [(row, stored[t]) for row, t in zip(rows, texts) if t in stored]
                self._vectors.add(
                    np.array([r for r, _ in known]), np.stack([np.frombuffer(v, np.float32) for _, v in known])
                )
                rows = [row for row, t in zip(rows, texts) if t not in stored]
            for start in range(0, len(rows), self.embed_batch_size):
                batch = rows[start : start + self.embed_batch_size]
                texts = [self._live_text(row) for row in batch]
                vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)
                self._vectors.add(np.array(batch), vectors)
                embedded += len(batch)
                if store is not None:
                    store.save_embeddings(self.embedder.name, [(t, v.tobytes()) for t, v in zip(texts, vectors)])
        self._pending = []
        if self._to_delete:
            gone = [t for t in self._to_delete if t not in self._row_of]
            if store is not None and gone:
                store.delete_embeddings(self.embedder.name, gone)
            self._to_delete = set()
            self._dead_vectors.clear()
        return embedded

    def _live_text(self, row: int) -> str:
        text = self._texts[row]
        assert text is not None, f"row {row} is dead"
        return text

    def _query_vector(self, prompt: str) -> np.ndarray:
        vector = self._query_cache.get(prompt)
        if vector is None:
            row = self._row_of.get(prompt)
            if row is not None and self._vectors.has(row):
                vector = self._vectors.vectors(row).copy()
            else:
                vector = np.asarray(self.embedder.embed([prompt]), dtype=np.float32)[0]
            self._query_cache[prompt] = vector
            if len(self._query_cache) > 256:
                self._query_cache.popitem(last=False)
        else:
            self._query_cache.move_to_end(prompt)
        return vector

    # -- search -------------------------------------------------------------------------------------------

    def _rank_rows(
        self, prompt: str, mode: str, fetch: int | None, query: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
        """(rows, relevance, cosine or None, exhausted): the best `fetch` rows (all when None)."""
        if mode == "lexical":
            rows, scores = self._bm25.search(prompt, fetch)
            return rows, scores, None, fetch is None or len(rows) < fetch
        assert query is not None, "semantic and hybrid searches embed the query"
        if mode == "semantic":
            rows, scores = self._vectors.search(query, fetch)
            return rows, scores, scores, fetch is None or len(rows) < fetch
        lex_rows, _ = self._bm25.search(prompt, fetch)
        sem_rows, _ = self._vectors.search(query, fetch)
        fused: dict[int, float] = {}
        for ranked in (lex_rows, sem_rows):
            for rank, row in enumerate(ranked.tolist()):
                fused[row] = fused.get(row, 0.0) + 1.0 / (self.rrf_k + rank + 1)
        rows = np.fromiter(fused, dtype=np.int64, count=len(fused))
        scores = np.fromiter(fused.values(), dtype=np.float64, count=len(fused))
        order = np.lexsort((rows, -scores))
        rows, scores = rows[order], scores[order]
        cosine = self._vectors.vectors(rows) @ query if len(rows) else np.zeros(0, np.float32)
        exhausted = fetch is None or (len(lex_rows) < fetch and len(sem_rows) < fetch)
        return rows, scores, cosine, exhausted

    def search(
        self,
        prompt: str,
        k: int | None = 10,
        *,
        mode: str = "semantic",
        where: dict[str, str] | None = None,
        min_similarity: float | None = None,
        mmr: bool = False,
        mmr_lambda: float = 0.5,
        advantage_weight: float = 0.0,
        token_budget: int | None = None,
        count_tokens: Callable[[str], int] = approx_tokens,
        with_scores: bool = False,
    ) -> list[Experience] | list[tuple[Experience, float]]:
        """Experiences for `prompt`, most relevant first (ties: higher advantage, then newer).

        mode: "lexical" (BM25 over the words), "semantic" (cosine similarity of embeddings) or "hybrid"
            (reciprocal rank fusion of the two rankings).
        k: how many (None: every match; in lexical mode a match shares at least one word).
        where: keep only experiences whose metadata has all these key/value pairs.
        min_similarity: drop matches below it, a relevance in [0, 1] whatever the library's size: cosine
            similarity in semantic and hybrid modes; in lexical mode the share of the query's words, weighed
            by their idf, that the match's prompt contains (`BM25Index.coverage`), among the best BM25
            candidates.
        mmr, mmr_lambda: order by maximal marginal relevance, lambda * relevance - (1 - lambda) *
            (greatest similarity to one already chosen), so that near-duplicates give way to other
            prompts; similarity is cosine of embeddings (word-set Jaccard in lexical mode).
        advantage_weight: in [0, 1]; rank by (1 - w) * relevance + w * advantage, both scaled to [0, 1]
            over the candidates.
        token_budget: take experiences in rank order while they fit, counted by `count_tokens` on their
            few-shot form "Q: prompt / A: response" (one that does not fit is skipped, a shorter one
            after it may still fit).
        with_scores: return (experience, score) pairs, the score being the mode's relevance.
        """
        self._check(prompt, k, mode, where, min_similarity, mmr_lambda, advantage_weight, token_budget)
        if k == 0 or not self._row_of:
            return []
        if mode != "semantic":
            self._enable_lexical()
        query = None
        if mode != "lexical":
            self._enable_semantic()
            query = self._query_vector(prompt)
        rerank = mmr or advantage_weight > 0 or token_budget is not None
        if k is None:
            want = None
        elif rerank:
            want = max(4 * k, k + 16)
        else:
            want = k
        fetch = want
        while True:
            rows, relevance, cosine, exhausted = self._rank_rows(prompt, mode, fetch, query)
            if self._vectors.builds != self._saved_builds:  # the HNSW graph was (re)built: minutes at 1M
                self._autosave()
                self._saved_builds = self._vectors.builds
            found = self._expand(prompt, rows, relevance, cosine, where, min_similarity, mode)
            if exhausted or fetch is None or fetch >= len(self._row_of):
                break
            assert want is not None, "fetch is None exactly when want is"
            if len(found) >= want or self._cut_by_similarity(relevance, min_similarity, mode):
                break
            fetch = min(fetch * 4, len(self._row_of))
        if advantage_weight > 0 and found:
            found = _mix_advantage(found, advantage_weight)
        if mmr and found:
            found = self._mmr(found, mmr_lambda, k if token_budget is None else None, mode)
        if token_budget is not None:
            chosen, used = [], 0
            for item in found:
                cost = count_tokens(example_text(item[0]))
                if used + cost <= token_budget:
                    chosen.append(item)
                    used += cost
                    if k is not None and len(chosen) == k:
                        break
            found = chosen
        if k is not None:
            found = found[:k]
        return [(e, float(s)) for e, s, _ in found] if with_scores else [e for e, _, _ in found]

    @staticmethod
    def _cut_by_similarity(relevance, min_similarity, mode) -> bool:
        """Whether to stop fetching: the ranking went below `min_similarity` (semantic), or (lexical) the
        first BM25 candidates were gated by their coverage, which lower-ranked rows are unlikely to beat
        and which a search must not scan the whole library to find."""
        if min_similarity is None or mode == "hybrid" or not len(relevance):
            return False
        return mode == "lexical" or float(relevance[-1]) < min_similarity

    def _expand(
        self, prompt, rows, relevance, cosine, where, min_similarity, mode
    ) -> list[tuple[Experience, float, int]]:
        """Rows -> [(experience, relevance, row)], members of one row by advantage then newest first."""
        found: list[tuple[Experience, float, int]] = []
        gate = cosine
        if mode == "lexical" and min_similarity is not None:
            gate = self._bm25.coverage(prompt, [self._texts[row] or "" for row in rows.tolist()])
        for i, row in enumerate(rows.tolist()):
            if min_similarity is not None and gate[i] < min_similarity:
                continue
            members = self._members[row]
            if not members:
                continue
            group = [e for e in members.values() if where is None or _matches(e, where)]
            group.sort(key=lambda e: (e.advantage, e.id or 0), reverse=True)
            score = float(relevance[i])
            found.extend((e, score, row) for e in group)
        return found

    def _mmr(self, found, lam: float, k: int | None, mode: str) -> list[tuple[Experience, float, int]]:
        rows = np.array([row for _, _, row in found], dtype=np.int64)
        if mode != "lexical" and all(self._vectors.has(r) for r in set(rows.tolist())):
            vectors = self._vectors.vectors(rows)
            sim = vectors @ vectors.T
        else:
            sets = [set(tokenize(self._texts[r] or "")) for r in rows.tolist()]
            sim = np.array([[_jaccard(a, b) for b in sets] for a in sets], dtype=np.float32)
        rel = np.array([s for _, s, _ in found], dtype=np.float64)
        if mode != "semantic":  # BM25 and fused scores: relative to the best; cosine is used as it is
            rel = rel / max(float(rel.max()), 1e-12)
        n = len(found) if k is None else min(k, len(found))
        chosen: list[int] = []
        best_sim = np.full(len(found), -np.inf)
        available = np.ones(len(found), dtype=bool)
        for _ in range(n):
            penalty = np.where(np.isfinite(best_sim), best_sim, 0.0)
            value = np.where(available, lam * rel - (1.0 - lam) * penalty, -np.inf)
            i = int(np.argmax(value))
            chosen.append(i)
            available[i] = False
            best_sim = np.maximum(best_sim, sim[i])
        return [found[i] for i in chosen]

    @staticmethod
    def _check(prompt, k, mode, where, min_similarity, mmr_lambda, advantage_weight, token_budget) -> None:
        if not isinstance(prompt, str):
            raise TFGRPOError(f"prompt must be a string, got {type(prompt).__name__}")
        if mode not in MODES:
            raise TFGRPOError(f"unknown retrieval mode {mode!r}; available: 'prefix', {', '.join(map(repr, MODES))}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise TFGRPOError(f"k must be a whole number >= 0 or None, got {k!r}")
        if where is not None and not isinstance(where, dict):
            raise TFGRPOError(f"where must be a dict of metadata key/value pairs, got {type(where).__name__}")
        if min_similarity is not None and not (
            isinstance(min_similarity, (int, float)) and math.isfinite(min_similarity)
        ):
            raise TFGRPOError(f"min_similarity must be a finite number, got {min_similarity!r}")
        if not 0.0 <= mmr_lambda <= 1.0:
            raise TFGRPOError(f"mmr_lambda must be in [0, 1], got {mmr_lambda!r}")
        if not 0.0 <= advantage_weight <= 1.0:
            raise TFGRPOError(f"advantage_weight must be in [0, 1], got {advantage_weight!r}")
        if token_budget is not None and (
            isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 0
        ):
            raise TFGRPOError(f"token_budget must be a whole number >= 0 or None, got {token_budget!r}")

    def __repr__(self) -> str:
        on = [m for m, flag in (("lexical", self._lexical_on), ("semantic", self._semantic_on)) if flag]
        return f"<Retriever {len(self)} texts, indexes: {', '.join(on) or 'none yet'}>"


def _matches(exp: Experience, where: dict[str, str]) -> bool:
    metadata = exp._metadata or {}
    return all(metadata.get(key) == value for key, value in where.items())


def _scale(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12:
        return np.ones_like(values)
    return (values - low) / (high - low)


def _mix_advantage(found, weight: float):
    rel = _scale(np.array([s for _, s, _ in found], dtype=np.float64))
    adv = _scale(np.array([e.advantage for e, _, _ in found], dtype=np.float64))
    mixed = (1.0 - weight) * rel + weight * adv
    order = sorted(range(len(found)), key=lambda i: (-mixed[i], -found[i][0].advantage, -(found[i][0].id or 0)))
    return [found[i] for i in order]


def _jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


__all__ = ["Retriever", "example_text"]
