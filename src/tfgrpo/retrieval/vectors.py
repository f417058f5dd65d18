"""Nearest-neighbour search over unit vectors identified by integer rows.

Exact search (one matrix-vector product in numpy) below `approximate_threshold` live rows; above it,
an HNSW graph (faiss, the `retrieval-ann` extra) built on first use and extended as rows are added.
Deleted rows are tombstones: they are skipped in results and the graph is rebuilt once they make up
more than a quarter of it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import TFGRPOError

if TYPE_CHECKING:
    import faiss


class VectorIndex:
    """Cosine similarity search (vectors are stored normalised)."""

    def __init__(
        self,
        approximate_threshold: int | None = 20_000,
        hnsw_m: int = 24,
        ef_construction: int = 64,
        ef_search: int = 256,
        threads: int | None = None,
    ) -> None:
        self.approximate_threshold = approximate_threshold
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.threads = threads
        self.builds = 0  # how many times the HNSW graph was built from scratch
        self._reset()

    def _reset(self) -> None:
        """Empty the index (the settings and `builds` stay)."""
        self.dim: int | None = None
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._end = 0  # rows [0, _end) have been set (alive or dead)
        self._n_alive = 0
        self._ann: faiss.IndexHNSWFlat | None = None  # graph over rows [0, _ann_end); its internal ids are the rows
        self._ann_end = 0
        self._ann_dead = 0  # graph rows that are dead
        self._ann_blanks = 0  # of those, the ones already dead (and blanked) when the graph was built
        self._vectors_owner: faiss.IndexHNSWFlat | None = None  # the graph whose memory `_vectors` views
        self._mapped: np.ndarray | None = None  # the file bytes a restored graph views (see `restore`)
        self._warned = False

    def __len__(self) -> int:
        return self._n_alive

    @property
    def nbytes(self) -> int:
        """Memory held by the vectors (and the graph, when built), in bytes."""
        size: float = self._vectors.nbytes + self._alive.nbytes
        if self._ann is not None and self.dim is not None:
            size += self._ann_end * (self.dim * 4 + self.hnsw_m * 2 * 4 * 1.1 + 8)  # faiss's own layout
        return int(size)

    def clear(self) -> None:
        self._reset()

    def hnsw_settings(self) -> dict:
        """What a saved graph must have been built with to be taken over (`restore`)."""
        return {"m": self.hnsw_m, "ef_construction": self.ef_construction, "dim": self.dim}

    def export(self) -> faiss.IndexHNSWFlat | None:
        """The HNSW graph (over rows [0, its ntotal)), or None when none was built."""
        return self._ann

    def restore(self, ann: faiss.IndexHNSWFlat, alive: np.ndarray, mapped: np.ndarray | None = None) -> None:
        """Take over a saved HNSW graph and the vectors it holds; `alive`: which of its rows are live.
        `mapped`: the bytes the graph views when it was read without a copy (faiss's zero-copy reader), kept
        alive with it; such a graph is copied into memory before rows are added to it."""
        import faiss

        n, d = ann.ntotal, ann.d
        # A view of the graph's own copy of the vectors, not a second one (1.5 GB at 1M).
        storage = faiss.downcast_index(ann.storage)  # an IndexFlat, which the stubs type as a plain Index
        vectors = faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)  # type: ignore[attr-defined]
        self.clear()
        self.dim = d
        self._vectors, self._vectors_owner = vectors, ann
        self._alive = np.asarray(alive[:n], dtype=bool).copy()
        self._end = n
        self._n_alive = int(self._alive.sum())
        self._ann, self._ann_end, self._ann_dead = ann, n, n - self._n_alive
        self._mapped = mapped

    def vectors(self, rows: int | np.ndarray) -> np.ndarray:
        return self._vectors[rows]

    def has(self, row: int) -> bool:
        return row < self._end and bool(self._alive[row])

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Set the vectors of new rows (rows only grow; a row is set once)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(rows):
            raise TFGRPOError(f"expected {len(rows)} vectors, got an array of shape {vectors.shape}")
        if len(rows) == 0:
            return
        if self.dim is None:
            self.dim = vectors.shape[1]
            self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        elif vectors.shape[1] != self.dim:
            raise TFGRPOError(
                f"embedding size changed from {self.dim} to {vectors.shape[1]}: use one embedding model per index"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        rows = np.asarray(rows, dtype=np.int64)
        top = int(rows.max()) + 1
        if top > len(self._vectors):
            size = max(top, 2 * len(self._vectors), 1024)
            grown = np.zeros((size, self.dim), dtype=np.float32)
            grown[: self._end] = self._vectors[: self._end]
            alive = np.zeros(size, dtype=bool)
            alive[: self._end] = self._alive[: self._end]
            self._vectors, self._alive = grown, alive
        fresh = ~self._alive[rows]
        self._vectors[rows] = vectors
        self._alive[rows] = True
        self._n_alive += int(fresh.sum())
        self._end = max(self._end, top)

    def remove(self, row: int) -> None:
        if row < self._end and self._alive[row]:
            self._alive[row] = False
            self._n_alive -= 1
            if row < self._ann_end:
                self._ann_dead += 1

    # -- search -------------------------------------------------------------------------------------------

    def approximate(self) -> bool:
        """Whether searches go through the HNSW graph (False: exact)."""
        return self.approximate_threshold is not None and self._n_alive > self.approximate_threshold

    def search(self, query: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosine similarities) of the `k` nearest live rows, best first (all when k is None)."""
        if self._n_alive == 0 or self.dim is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        # A large k (a filter that rejects most hits asks for many) is cheaper exactly than through the graph.
        if k is not None and k <= self._n_alive // 8 and self.approximate() and self._ensure_ann():
            return self._search_ann(query, k)
        return self.search_exact(query, k)

    def search_exact(self, query: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
        scores = self._vectors[: self._end] @ query
        if self._n_alive < self._end:
            scores[~self._alive[: self._end]] = -np.inf
        n = self._n_alive
        if k is None or k >= n:
            rows = np.argsort(-scores, kind="stable")[:n]
        else:
            rows = np.argpartition(-scores, k - 1)[:k]
            rows = rows[np.lexsort((rows, -scores[rows]))]
        return rows.astype(np.int64), scores[rows]

    def _ensure_ann(self) -> bool:
        try:
            import faiss
        except ImportError:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{self._n_alive} vectors: approximate search needs faiss (pip install 'tfgrpo[retrieval-ann]'); "
                    "searching exactly instead",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return False
        if self.threads is not None:
            faiss.omp_set_num_threads(self.threads)
        dim = self.dim
        assert dim is not None, "search returns early while no vector was added"
        # Rebuilt when a quarter of the graph died since it was built: rows dead before that are blank
        # slots a rebuild cannot drop (graph ids are rows), so counting them would rebuild on every query.
        ann = self._ann
        if ann is None or (self._ann_dead - self._ann_blanks) * 4 > self._ann_end:
            if self._vectors_owner is not None:  # the old graph goes: keep the vectors it held
                self._vectors, self._vectors_owner = self._vectors.copy(), None
            ann = self._ann = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            ann.hnsw.efConstruction = self.ef_construction
            self._ann_end = self._ann_dead = 0
            self.builds += 1
            if self._n_alive < self._end:
                # Rebuilding: dead rows still take graph slots (internal ids must equal rows), as zeros.
                # (They are counted in _ann_dead as they are added below.)
                self._vectors[: self._end][~self._alive[: self._end]] = 0.0
            self._ann_blanks = self._end - self._n_alive
        if self._ann_end < self._end:
            if self._mapped is not None and ann is self._vectors_owner:
                # faiss cannot grow a graph that views a file (it aborts the process): copy it first. (The
                # mapping stays: `_vectors` may still view it.)
                ann = self._ann = _read_copy(self._mapped)
            ann.add(self._vectors[self._ann_end : self._end])
            self._ann_dead += int((~self._alive[self._ann_end : self._end]).sum())
            self._ann_end = self._end
        return True

    def _search_ann(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ann = self._ann
        assert ann is not None, "_ensure_ann built the graph"
        fetch = k + min(self._ann_dead, 4 * k) + 8
        while True:
            fetch = min(fetch, self._ann_end)
            ann.hnsw.efSearch = max(self.ef_search, fetch)
            scores, rows = ann.search(query[None, :], fetch)
            rows, scores = rows[0], scores[0]
            keep = rows >= 0
            rows, scores = rows[keep], scores[keep]
            keep = self._alive[rows]
            if keep.sum() >= k or fetch >= self._ann_end:
                rows, scores = rows[keep][:k], scores[keep][:k]
                return rows.astype(np.int64), scores.astype(np.float32)
            fetch *= 2


def _read_copy(data: np.ndarray) -> faiss.IndexHNSWFlat:
    """A graph that owns its memory, read from the bytes faiss wrote it as."""
    import faiss

    view, place = data.data, 0

    def read(n: int) -> bytes:
        nonlocal place
        chunk = view[place : place + n].tobytes()
        place += len(chunk)
        return chunk

    # (PyCallbackIOReader is in faiss's SWIG module but missing from its stubs.)
    return faiss.read_index(faiss.PyCallbackIOReader(read))  # type: ignore[attr-defined,return-value]
