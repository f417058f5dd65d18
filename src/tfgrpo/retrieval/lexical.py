"""An in-memory BM25 index over numbered documents, maintained incrementally.

Postings are kept per term as growing `array`s (document row, term frequency) and turned into numpy
arrays only when a query needs a term that changed since; deleted rows are tombstones (their length is
taken out of the statistics at once) and are compacted away when they dominate a term's postings.
A query touches only the postings of its own terms, so its cost does not grow with the library size
but with how common the query's words are.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter

import numpy as np

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters and digits; punctuation and underscores split words)."""
    return _TOKEN.findall(text.lower())


class _Postings:
    __slots__ = ("rows", "tfs", "cache", "dead")

    def __init__(self) -> None:
        self.rows = array("q")
        self.tfs = array("f")
        self.cache: tuple[np.ndarray, np.ndarray] | None = None
        self.dead = 0


class BM25Index:
    """BM25 (Okapi, k1=1.2, b=0.75 by default) over documents identified by integer rows."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self._reset(k1, b)

    def _reset(self, k1: float, b: float) -> None:
        self.k1, self.b = k1, b
        # term -> postings; after `restore`, an int: the term's place in `_frozen` (the saved flat arrays),
        # turned into `_Postings` when first touched, so taking a saved index over is not O(terms).
        self._postings: dict[str, _Postings | int] = {}
        self._frozen: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # rows, tfs, starts
        self._lengths = np.zeros(0, dtype=np.float32)  # row -> document length (0 once deleted)
        self._alive = np.zeros(0, dtype=bool)
        self._n_docs = 0
        self._total_length = 0.0
        self._acc = np.zeros(0, dtype=np.float32)  # scratch accumulator, kept zeroed between queries

    def __len__(self) -> int:
        return self._n_docs

    def __contains__(self, row: int) -> bool:
        return row < len(self._alive) and bool(self._alive[row])

    def _grow(self, row: int) -> None:
        if row >= len(self._lengths):
            size = max(row + 1, 2 * len(self._lengths), 1024)
            for name, dtype in (("_lengths", np.float32), ("_alive", bool), ("_acc", np.float32)):
                old = getattr(self, name)
                new = np.zeros(size, dtype=dtype)
                new[: len(old)] = old
                setattr(self, name, new)

    def add(self, row: int, text: str) -> None:
        """Index `text` as document `row` (a row already indexed is left as it is)."""
        if row in self:
            return
        tokens = tokenize(text)
        counts = Counter(tokens)
        self._grow(row)
        for term, tf in counts.items():
            postings = self._get(term)
            if postings is None:
                postings = self._postings[term] = _Postings()
            postings.rows.append(row)
            postings.tfs.append(tf)
            postings.cache = None
        self._lengths[row] = len(tokens)
        self._alive[row] = True
        self._n_docs += 1
        self._total_length += len(tokens)

    def remove(self, row: int, text: str) -> None:
        """Delete document `row`, whose text was `text` (given again rather than kept here, to save memory)."""
        if row not in self:
            return
        terms = set(tokenize(text))
        self._alive[row] = False
        self._n_docs -= 1
        self._total_length -= float(self._lengths[row])
        for term in terms:
            postings = self._get(term)
            assert postings is not None, f"{term!r} is indexed: `text` is the text row {row} was added with"
            postings.dead += 1
            if postings.dead * 2 > len(postings.rows) + 16:
                self._compact(term, postings)

    def _compact(self, term: str, postings: _Postings) -> None:
        rows = np.frombuffer(postings.rows, dtype=np.int64)
        keep = self._alive[rows]
        if not keep.any():
            del self._postings[term]
            return
        tfs = np.frombuffer(postings.tfs, dtype=np.float32)[keep]
        new_rows = rows[keep]
        postings.rows = array("q", new_rows.tobytes())
        postings.tfs = array("f", tfs.tobytes())
        postings.dead = 0
        postings.cache = None

    def clear(self) -> None:
        self._reset(self.k1, self.b)

    def _get(self, term: str) -> _Postings | None:
        found = self._postings.get(term)
        if not isinstance(found, int):
            return found
        postings = _Postings()
        rows, tfs = self._frozen_raw(found)
        postings.rows.frombytes(rows)
        postings.tfs.frombytes(tfs)
        self._postings[term] = postings
        return postings

    def _frozen_raw(self, place: int) -> tuple[bytes, bytes]:
        """The rows and term frequencies of the term at `place` in the saved flat arrays."""
        assert self._frozen is not None, "terms are numbered only by `restore`, which sets `_frozen`"
        rows, tfs, starts = self._frozen
        a, b = starts[place], starts[place + 1]
        return rows[a:b].tobytes(), tfs[a:b].tobytes()

    def _raw(self, postings: _Postings | int) -> tuple[bytes, bytes]:
        if isinstance(postings, int):
            return self._frozen_raw(postings)
        return postings.rows.tobytes(), postings.tfs.tobytes()

    def export(self, n_rows: int) -> dict:
        """The index over rows [0, n_rows) as flat arrays (live postings only), for `snapshot.save`."""
        terms = list(self._postings)
        raw = [self._raw(p) for p in self._postings.values()]
        counts = np.fromiter((len(r) // 8 for r, _ in raw), dtype=np.int64, count=len(raw))
        rows = np.frombuffer(b"".join(r for r, _ in raw), dtype=np.int64)
        tfs = np.frombuffer(b"".join(t for _, t in raw), dtype=np.float32)
        keep = self._alive[rows]
        if not keep.all():
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            counts = np.add.reduceat(keep.astype(np.int64), starts) if len(counts) else counts
            rows, tfs = rows[keep], tfs[keep]
            terms = [t for t, c in zip(terms, counts.tolist()) if c]
            counts = counts[counts > 0]
        return {
            "k1": self.k1,
            "b": self.b,
            "n_docs": self._n_docs,
            "total_length": self._total_length,
            "terms": terms,
            "counts": counts,
            "rows": rows,
            "tfs": tfs,
            "lengths": self._lengths[:n_rows].copy(),
            "alive": self._alive[:n_rows].copy(),
        }

    def restore(self, data: dict) -> None:
        """Replace the index with one `export` produced."""
        self._reset(float(data["k1"]), float(data["b"]))
        n = len(data["lengths"])
        self._grow(max(n - 1, 0))
        self._lengths[:n] = data["lengths"]
        self._alive[:n] = data["alive"]
        self._n_docs = int(data["n_docs"])
        self._total_length = float(data["total_length"])
        starts = np.concatenate(([0], np.cumsum(data["counts"]))).astype(np.int64)
        self._frozen = (data["rows"].astype(np.int64), data["tfs"].astype(np.float32), starts)
        self._postings = dict(zip(data["terms"], range(len(data["terms"]))))

    def _arrays(self, postings: _Postings) -> tuple[np.ndarray, np.ndarray]:
        """The postings as numpy arrays sorted by row (rows are usually appended in order already)."""
        if postings.cache is None:
            rows = np.array(postings.rows, dtype=np.int64)
            tfs = np.array(postings.tfs, dtype=np.float32)
            if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):
                order = np.argsort(rows, kind="stable")
                rows, tfs = rows[order], tfs[order]
            postings.cache = (rows, tfs)
        return postings.cache

    def search(self, query: str, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the best-scoring documents that share a term with the query, best first;
        all of them when `k` is None.

        Exact top-k with MaxScore pruning: terms are scored rarest first; once the k-th best score so far
        exceeds what the remaining (common) terms could add at most, documents they alone would reach
        cannot enter the top k, so those terms are only looked up for the documents still in contention
        (a binary search in their postings) instead of being scattered over all of theirs.
        """
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if self._n_docs == 0:
            return empty
        avg_length = max(self._total_length / self._n_docs, 1e-9)
        k1, b = self.k1, self.b
        terms = []
        for term, qtf in Counter(tokenize(query)).items():
            postings = self._get(term)
            if postings is None:
                continue
            rows, tfs = self._arrays(postings)
            df = len(rows) - postings.dead
            if df > 0:
                weight = qtf * math.log(1.0 + (self._n_docs - df + 0.5) / (df + 0.5))
                terms.append((weight, rows, tfs))
        if not terms:
            return empty
        terms.sort(key=lambda t: t[0], reverse=True)  # rarest (highest idf) first
        bounds = np.cumsum([w * (k1 + 1.0) for w, _, _ in terms][::-1])[::-1]  # most the terms i.. can add
        acc = self._acc
        touched: list[np.ndarray] = []
        contenders = None
        for i, (weight, rows, tfs) in enumerate(terms):
            if contenders is None and k is not None and touched and len(rows) * 16 > len(acc):
                contenders = self._contenders(touched, k, float(bounds[i]))
            if contenders is not None:
                pos = np.searchsorted(rows, contenders)
                pos[pos == len(rows)] = 0
                hit = rows[pos] == contenders
                rows, tfs = contenders[hit], tfs[pos[hit]]
            norm = k1 * (1.0 - b + b * self._lengths[rows] / avg_length)
            acc[rows] += np.float32(weight) * tfs * (k1 + 1.0) / (tfs + norm)
            touched.append(rows)
        if len(touched) == 1:
            candidates = touched[0]
        elif sum(len(rows) for rows in touched) * 16 < len(acc):
            candidates = np.unique(np.concatenate(touched))
        else:  # many postings: a scan of the accumulator beats sorting them
            candidates = np.flatnonzero(acc)
        scores = acc[candidates]
        acc[candidates] = 0.0
        if contenders is not None:  # the others are out of the running (their scores were reset all the same)
            candidates, scores = contenders, scores[np.searchsorted(candidates, contenders)]
        live = self._alive[candidates]
        if not live.all():
            candidates, scores = candidates[live], scores[live]
        if k is not None and k < len(candidates):
            part = np.argpartition(-scores, k - 1)[:k]
            candidates, scores = candidates[part], scores[part]
        order = np.lexsort((candidates, -scores))  # best first; ties: the older row first
        return candidates[order], scores[order]

    def _contenders(self, touched: list[np.ndarray], k: int, bound: float) -> np.ndarray | None:
        """The live documents scored so far that can still reach the top k when the remaining terms add at
        most `bound`; None when a document not yet seen could still get there too."""
        seen = np.unique(np.concatenate(touched)) if len(touched) > 1 else touched[0]
        seen = seen[self._alive[seen]]
        if len(seen) < k:
            return None
        scores = self._acc[seen]
        kth = float(np.partition(scores, len(scores) - k)[len(scores) - k])
        if kth <= bound:
            return None
        return seen[scores + bound >= kth]
