"""An in-memory BM25 index over numbered documents, maintained incrementally.

Postings are kept per term as numpy arrays with spare capacity (document row, term frequency), so an
add appends in place and a query reads them without conversion; deleted rows are tombstones (their
length is taken out of the statistics at once) and are compacted away when they dominate a term's
postings. A query touches only the postings of its own terms, and of those, with pruning (see
`BM25Index.search`), mostly the rare ones.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)

# A term's impacts (see `_Postings`) are recomputed when the average document length moved further than
# this from the one they were computed for; the gap only loosens the bounds derived from them.
_IMPACT_DRIFT = 0.01
# Bounds are widened by this much so that float32 rounding of the scores can never exceed them.
_SLACK = 1.0 + 1e-4
# Documents whose exact scores set the pruning threshold: the best so far, this many per k.
_PROBES_PER_K = 4
# Postings of the rarest terms scanned before that threshold is first set (at least the rarest term's).
_PROBE_POSTINGS = 16384
# Terms after the scanned ones whose exact scores count in the threshold estimate.
_THRESHOLD_TERMS = 4
# A term in at least one row in this many gets a dense row -> term frequency array (one byte a row while
# the frequencies fit, so at most twice its postings' memory): looking documents up in the common terms
# is then a gather instead of a binary search per document.
_DENSE_SHARE = 16


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters and digits; punctuation and underscores split words)."""
    return _TOKEN.findall(text.lower())


class _Postings:
    """One term's postings: `data[0, :n]` the rows (increasing unless `ordered` is False), `data[1, :n]`
    their term frequencies. One int32 array for both (a term in a single document costs one small array
    object, and most terms are such); it may be wider (spare capacity) or a view of the arrays a saved
    index was read from.

    `impacts[:n]`, once a query has needed them, are the term-frequency part of each posting's score
    (the score without the idf) at the average document length `impact_avg`, for scanning a term's
    postings without the length normalisation: with the average length A now, the exact part lies
    within a factor A / impact_avg (or its inverse) of the impact, and `peak` is the largest impact.

    `dense`, for common terms (see `_DENSE_SHARE`): row -> term frequency (0: not in that row), as long as
    the index's row capacity (searches look up live rows only: a deleted row may keep its frequency)."""

    __slots__ = ("data", "n", "last", "dead", "ordered", "impacts", "impact_avg", "peak", "dense")

    def __init__(self, data: np.ndarray | None = None) -> None:
        self.data = np.zeros((2, 1), dtype=np.int32) if data is None else data
        self.n = 0 if data is None else data.shape[1]
        self.last = int(self.data[0, : self.n].max()) if self.n else -1  # the highest row
        self.dead = 0
        self.ordered = True
        self.impacts: np.ndarray | None = None
        self.impact_avg = 0.0
        self.peak = 0.0
        self.dense: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:
        return self.data[0, : self.n]

    @property
    def tfs(self) -> np.ndarray:
        return self.data[1, : self.n]

    def append(self, row: int, tf: int, impact: float | None) -> None:
        n = self.n
        if n == self.data.shape[1]:
            data = np.empty((2, max(4, 2 * n)), dtype=np.int32)
            data[:, :n] = self.data[:, :n]
            self.data = data
            if self.impacts is not None:
                impacts = np.empty(data.shape[1], dtype=np.float32)
                impacts[:n] = self.impacts[:n]
                self.impacts = impacts
        if row < self.last:
            self.ordered = False
        else:
            self.last = row
        self.data[0, n] = row
        self.data[1, n] = tf
        if self.impacts is not None and impact is not None:
            self.impacts[n] = impact
            self.peak = max(self.peak, impact)
        self.n = n + 1

    def sort(self) -> None:
        if not self.ordered:
            order = np.argsort(self.rows, kind="stable")
            if self.impacts is not None:
                self.impacts = self.impacts[: self.n][order]
            self.data = self.data[:, : self.n][:, order]
            self.ordered = True

    def keep(self, keep: np.ndarray) -> None:
        """Only the postings where `keep` (over the sorted postings) is True."""
        if self.impacts is not None:
            self.impacts = self.impacts[: self.n][keep]
        self.data = self.data[:, : self.n][:, keep]
        self.n = self.data.shape[1]
        self.dead = 0


class BM25Index:
    """BM25 (Okapi, k1=1.2, b=0.75 by default) over documents identified by integer rows."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self._reset(k1, b)

    def _reset(self, k1: float, b: float) -> None:
        self.k1, self.b = k1, b
        # term -> postings; after `restore`, an int: the term's place in `_frozen` (the saved flat arrays),
        # turned into `_Postings` (views of those arrays) when first touched, so taking a saved index over
        # is not O(terms).
        self._postings: dict[str, _Postings | int] = {}
        self._frozen: tuple[np.ndarray, np.ndarray] | None = None  # (rows and tfs as in `_Postings`, starts)
        self._lengths = np.zeros(0, dtype=np.float32)  # row -> document length (0 once deleted)
        self._alive = np.zeros(0, dtype=bool)
        self._n_docs = 0
        self._total_length = 0.0
        self._acc = np.zeros(0, dtype=np.float32)  # scratch accumulator, kept zeroed between queries
        self._dense: dict[str, _Postings] = {}  # the terms with a dense array

    def __len__(self) -> int:
        return self._n_docs

    def __contains__(self, row: int) -> bool:
        return row < len(self._alive) and bool(self._alive[row])

    def _grow(self, row: int) -> None:
        if row >= len(self._lengths):
            if row >= 2**31 - 1:
                raise OverflowError("BM25Index rows must be below 2**31")
            size = max(row + 1, 2 * len(self._lengths), 1024)
            for name, dtype in (("_lengths", np.float32), ("_alive", bool), ("_acc", np.float32)):
                old = getattr(self, name)
                new = np.zeros(size, dtype=dtype)
                new[: len(old)] = old
                setattr(self, name, new)
            for postings in self._dense.values():
                postings.dense = _widened(postings.dense, size)

    def add(self, row: int, text: str) -> None:
        """Index `text` as document `row` (a row already indexed is left as it is)."""
        if row in self:
            return
        tokens = tokenize(text)
        counts = Counter(tokens)
        self._grow(row)
        length = len(tokens)
        for term, tf in counts.items():
            postings = self._get(term)
            if postings is None:
                postings = self._postings[term] = _Postings()
            impact = None if postings.impacts is None else self._tf_part(tf, length, postings.impact_avg)
            postings.append(row, tf, impact)
            if postings.dense is not None:
                if tf > np.iinfo(postings.dense.dtype).max:
                    postings.dense = postings.dense.astype(np.int32)
                postings.dense[row] = tf
        self._lengths[row] = length
        self._alive[row] = True
        self._n_docs += 1
        self._total_length += length

    def coverage(self, query: str, texts: list[str]) -> np.ndarray:
        """Per text, the share of the query's weight it contains: the sum of the idf of the query's terms
        (with their counts) found in the text, over that of all of them (a term no document has weighs
        as the rarest). In [0, 1], whatever the library's size; 0 for a query without words."""
        n = self._n_docs
        weights = {}
        for term, qtf in Counter(tokenize(query)).items():
            postings = self._get(term)
            df = 0 if postings is None else postings.n - postings.dead
            weights[term] = qtf * math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        total = sum(weights.values())
        if total <= 0:
            return np.zeros(len(texts))
        return np.array([sum(weights[t] for t in set(tokenize(text)) if t in weights) / total for text in texts])

    def _tf_part(self, tf: float, length: float, avg_length: float) -> float:
        return tf * (self.k1 + 1.0) / (tf + self.k1 * (1.0 - self.b + self.b * length / avg_length))

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
            if postings.dead * 2 > postings.n + 16:
                self._compact(term, postings)

    def _compact(self, term: str, postings: _Postings) -> None:
        postings.sort()
        keep = self._alive[postings.rows]
        if not keep.any():
            del self._postings[term]
            self._dense.pop(term, None)
            return
        postings.keep(keep)

    def clear(self) -> None:
        self._reset(self.k1, self.b)

    def _get(self, term: str) -> _Postings | None:
        found = self._postings.get(term)
        if not isinstance(found, int):
            return found
        assert self._frozen is not None, "terms are numbered only by `restore`, which sets `_frozen`"
        data, starts = self._frozen
        postings = self._postings[term] = _Postings(data[:, starts[found] : starts[found + 1]])
        postings.ordered = bool(np.all(postings.rows[1:] > postings.rows[:-1]))
        postings.sort()
        return postings

    def _arrays_of(self, postings: _Postings | int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(postings, int):
            assert self._frozen is not None, "terms are numbered only by `restore`, which sets `_frozen`"
            data, starts = self._frozen
            return data[0, starts[postings] : starts[postings + 1]], data[1, starts[postings] : starts[postings + 1]]
        postings.sort()
        return postings.rows, postings.tfs

    def export(self, n_rows: int) -> dict:
        """The index over rows [0, n_rows) as flat arrays (live postings only), for `snapshot.save`."""
        terms = list(self._postings)
        parts = [self._arrays_of(p) for p in self._postings.values()]
        counts = np.fromiter((len(r) for r, _ in parts), dtype=np.int64, count=len(parts))
        rows = np.concatenate([r for r, _ in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
        tfs = np.concatenate([t for _, t in parts]).astype(np.float32) if parts else np.zeros(0, np.float32)
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
        self._frozen = (np.stack((data["rows"].astype(np.int32), data["tfs"].astype(np.int32))), starts)
        self._postings = dict(zip(data["terms"], range(len(data["terms"]))))

    # -- search -------------------------------------------------------------------------------------------

    def _scores(self, weight: float, rows: np.ndarray, tfs: np.ndarray, avg_length: float) -> np.ndarray:
        """A term's exact score in the documents `rows` (float32; the one formula both the pruned and the
        exhaustive search use, adding the very same numbers in the same order)."""
        k1 = self.k1
        norm = k1 * (1.0 - self.b + self.b * self._lengths[rows] / avg_length)
        tfs = tfs.astype(np.float32)
        return np.float32(weight) * tfs * (k1 + 1.0) / (tfs + norm)

    def _impacts(self, postings: _Postings, avg_length: float) -> tuple[np.ndarray, float]:
        """The term's impacts and the factor by which its exact term-frequency parts may differ from them
        (either way)."""
        drift = avg_length / postings.impact_avg if postings.impacts is not None else 0.0
        if postings.impacts is None or abs(drift - 1.0) > _IMPACT_DRIFT:
            n = postings.n
            impacts = np.empty(postings.data.shape[1], dtype=np.float32)
            impacts[:n] = self._scores(1.0, postings.rows, postings.tfs, avg_length)
            postings.impacts, postings.impact_avg = impacts, avg_length
            postings.peak = float(impacts[:n].max()) if n else 0.0
            drift = 1.0
        return postings.impacts[: postings.n], max(drift, 1.0 / drift)

    def _densify(self, term: str, postings: _Postings) -> None:
        tfs = postings.tfs
        dense = np.zeros(len(self._lengths), dtype=np.uint8 if tfs.max() <= 255 else np.int32)
        alive = self._alive[postings.rows]
        dense[postings.rows[alive]] = tfs[alive]
        postings.dense = dense
        self._dense[term] = postings

    def search(self, query: str, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the best-scoring documents that share a term with the query, best first
        (ties: the older row first); all of them when `k` is None.

        Exact top-k with MaxScore pruning. Every term has an upper bound, its idf times its largest
        impact. Terms are taken highest bound (rarest) first; their postings are scanned with the
        impacts (a multiply-add per posting), and after each term the exact scores of the best documents
        so far give a threshold that the k-th best score cannot be below. Once the bounds of the
        remaining terms add up to less than it, no document they alone reach can get into the top k, so
        their postings are not scanned: the few documents that still can are scored exactly (a binary
        search in each term's postings) and dropped as soon as they cannot make it.
        """
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if self._n_docs == 0:
            return empty
        avg_length = max(self._total_length / self._n_docs, 1e-9)
        terms = []  # [bound, weight, rows, tfs, postings]
        for term, qtf in Counter(tokenize(query)).items():
            postings = self._get(term)
            if postings is None or postings.n == postings.dead:
                continue
            postings.sort()
            df = postings.n - postings.dead
            if postings.dense is None and df * _DENSE_SHARE >= len(self._lengths):
                self._densify(term, postings)
            weight = qtf * math.log(1.0 + (self._n_docs - df + 0.5) / (df + 0.5))
            terms.append((weight, postings.rows, postings.tfs, postings))
        if not terms:
            return empty
        # Rarest (highest idf) first, in every search: float32 sums depend on the order of the terms.
        terms.sort(key=lambda t: t[0], reverse=True)
        if k is None:
            return self._search_all(terms, avg_length)
        scans = []  # per term: (bound, weight * impacts, drift)
        for weight, _, _, postings in terms:
            impacts, drift = self._impacts(postings, avg_length)
            scans.append((weight * postings.peak * drift * _SLACK, impacts, np.float32(weight), drift))
        rest = np.cumsum([s[0] for s in scans][::-1])[::-1].tolist() + [0.0]  # most terms i.. can add
        acc = self._acc
        touched: list[np.ndarray] = []
        drift = 1.0  # most the exact partial scores may exceed the scanned ones by (a factor)
        probes = np.zeros(0, dtype=np.int32)
        threshold = -math.inf
        i = 0
        while i < len(terms):
            rows = terms[i][1]
            _, impacts, weight, term_drift = scans[i]
            acc[rows] += weight * impacts
            touched.append(rows)
            drift = max(drift, term_drift)
            i += 1
            if i < len(terms) and sum(len(t) for t in touched) + len(terms[i][1]) <= _PROBE_POSTINGS:
                continue  # the rarest terms' postings are few: scan them before setting a threshold
            # The best documents so far are among the previous best and the rows just scanned (at most
            # len(touched) entries per row in the first concatenation, hence the wider cut).
            fresh = np.concatenate(touched) if len(probes) == 0 else rows
            probes = _top(
                np.concatenate((probes, _top(fresh, acc, _PROBES_PER_K * k * len(touched)))), acc, _PROBES_PER_K * k
            )
            threshold = max(threshold, self._threshold(terms, i, probes, acc, k, drift, avg_length))
            if rest[i] < threshold:
                break  # no document the remaining terms alone reach can make it
        seen = np.concatenate(touched) if len(touched) > 1 else touched[0]
        contenders = seen[acc[seen] * np.float32(drift * _SLACK) + np.float32(rest[i]) >= threshold]
        contenders = _distinct(contenders)
        contenders = contenders[self._alive[contenders]]
        partial = acc[contenders]
        acc[seen] = 0.0
        for j in range(i, len(terms)):  # the common tail: looked up for the contenders, dropping the hopeless
            if not len(contenders):
                break
            _, impacts, weight, term_drift = scans[j]
            postings = terms[j][3]
            if postings.dense is not None:  # the impacts of the contenders' postings, computed for them
                tfs = postings.dense[contenders]
                hit = np.flatnonzero(tfs)
                partial[hit] += weight * self._scores(1.0, contenders[hit], tfs[hit], postings.impact_avg)
            else:
                hit, pos = _lookup(terms[j][1], contenders)
                partial[hit] += weight * impacts[pos]
            drift = max(drift, term_drift)
            keep = partial * np.float32(drift * _SLACK) + np.float32(rest[j + 1]) >= threshold
            if not keep.all():
                contenders, partial = contenders[keep], partial[keep]
        scores = self._exact(terms, contenders, avg_length)
        return _best(contenders, scores, k)

    def _threshold(
        self, terms: list, i: int, probes: np.ndarray, acc: np.ndarray, k: int, drift: float, avg_length: float
    ) -> float:
        """A score that k live documents reach at least: among `probes`, whose scores over terms [0, i) the
        accumulator holds as impacts (at most `drift` times too high), the k-th best lower bound of the
        exact score (the next few terms added exactly; leaving the others out only lowers it)."""
        probes = probes[self._alive[probes]]
        if len(probes) < k:
            return -math.inf
        scores = acc[probes] * np.float32(1.0 / (drift * _SLACK))
        tail = terms[i : i + _THRESHOLD_TERMS]
        if tail:
            for row in self._exact_matrix(tail, probes, avg_length):
                scores += row
        return float(np.partition(scores, len(scores) - k)[len(scores) - k]) / _SLACK

    def _exact_matrix(self, terms: list, rows: np.ndarray, avg_length: float) -> np.ndarray:
        """The exact scores of each term (a matrix row) in the documents `rows` (0 where absent): the
        formula of `_scores`, evaluated at once."""
        tfs = np.zeros((len(terms), len(rows)), dtype=np.float32)
        for t, (_, term_rows, term_tfs, postings) in enumerate(terms):
            if postings.dense is not None:
                tfs[t] = postings.dense[rows]
            elif len(term_rows):
                pos = np.searchsorted(term_rows, rows)
                np.minimum(pos, len(term_rows) - 1, out=pos)
                tfs[t] = np.where(term_rows[pos] == rows, term_tfs[pos], np.float32(0.0))
        weights = np.array([t[0] for t in terms], dtype=np.float32)[:, None]
        k1 = self.k1
        norm = k1 * (1.0 - self.b + self.b * self._lengths[rows] / avg_length)
        return weights * tfs * (k1 + 1.0) / (tfs + norm)

    def _exact(self, terms: list, rows: np.ndarray, avg_length: float) -> np.ndarray:
        """Exact scores of the documents `rows`: the terms' scores added one term after another, in the
        order of the exhaustive search (so the float32 sums are the same)."""
        scores = np.zeros(len(rows), dtype=np.float32)
        if len(rows):
            for row in self._exact_matrix(terms, rows, avg_length):
                scores += row
        return scores

    def _search_all(self, terms: list, avg_length: float) -> tuple[np.ndarray, np.ndarray]:
        """Every matching document scored exactly (the exhaustive search the pruned one agrees with)."""
        acc = self._acc
        touched = []
        for weight, rows, tfs, _ in terms:
            acc[rows] += self._scores(weight, rows, tfs, avg_length)
            touched.append(rows)
        if len(touched) == 1:
            candidates = touched[0]
        elif sum(len(rows) for rows in touched) * 16 < len(acc):
            candidates = _distinct(np.concatenate(touched))
        else:  # many postings: a scan of the accumulator beats sorting them
            candidates = np.flatnonzero(acc).astype(np.int32)
        scores = acc[candidates]
        acc[candidates] = 0.0
        live = self._alive[candidates]
        if not live.all():
            candidates, scores = candidates[live], scores[live]
        return _best(candidates, scores, None)


def _widened(dense: np.ndarray | None, size: int) -> np.ndarray:
    assert dense is not None, "only terms with a dense array are in `_dense`"
    out = np.zeros(size, dtype=dense.dtype)
    out[: len(dense)] = dense
    return out


def _lookup(rows: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, pos): wanted[i] == rows[pos], for the `wanted` that are in the sorted `rows`."""
    pos = np.searchsorted(rows, wanted)
    np.minimum(pos, len(rows) - 1, out=pos)
    hit = np.flatnonzero(rows[pos] == wanted)
    return hit, pos[hit]


def _distinct(rows: np.ndarray) -> np.ndarray:
    """The distinct rows, sorted (a sort beats np.unique, which hashes)."""
    rows = np.sort(rows)
    return rows[np.concatenate(([True], rows[1:] != rows[:-1]))] if len(rows) > 1 else rows


def _top(rows: np.ndarray, acc: np.ndarray, n: int) -> np.ndarray:
    """The entries of `rows` with the n highest accumulator values, distinct."""
    if len(rows) > n:
        rows = rows[np.argpartition(-acc[rows], n - 1)[:n]]
    return _distinct(rows)


def _best(rows: np.ndarray, scores: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The k best (all when None), best first; ties: the older row first."""
    if k is not None and k < len(rows):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth  # every row tied with the k-th stays, so the tie rule below decides among them
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))
    if k is not None:
        order = order[:k]
    return rows[order].astype(np.int64), scores[order]
