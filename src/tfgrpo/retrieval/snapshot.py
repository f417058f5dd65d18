"""The retriever's indexes saved beside a library file, so a new process does not rebuild them.

One file, `<library>.index` (e.g. `lib.db.index`), written atomically: a JSON header line, then numpy
arrays (no pickles), then the faiss HNSW graph streamed as faiss writes it. It holds the retriever's
row layout (the text of every row), the BM25 postings when lexical search was on, and the HNSW graph
(with its vectors) when one was built.

Staleness is decided per text, not per file: every saved row names its text, and a text's postings
and vector depend only on the text (and on the embedder, which the header names). A process that
opens a library which changed since the save keeps the rows whose text is still there, drops the
others as it drops removed texts, and indexes the new texts as it does new arrivals. A header that
does not match (another format version, embedder, vector size or HNSW settings) or a damaged file
means that part is rebuilt as if there were no file, and the next save replaces it.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import numpy as np

if TYPE_CHECKING:
    import faiss

FORMAT = "tfgrpo-retrieval-index"
VERSION = 1


@dataclass
class Snapshot:
    texts: list[str | None]  # row -> text (None: a dead row)
    embedder: str | None = None
    hnsw: dict | None = None  # {"m": ..., "ef_construction": ..., "dim": ...} when `ann` is set
    ann: faiss.IndexHNSWFlat | None = None  # the graph over rows [0, ann.ntotal)
    bm25: dict | None = field(default=None)  # see `_bm25_arrays`


def index_path(library_path: str | os.PathLike) -> Path:
    """Where the indexes of a library file are kept."""
    return Path(f"{os.fspath(library_path)}.index")


def _encode_texts(texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [b"" if t is None else t.encode("utf-8", "surrogatepass") for t in texts]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    lengths[[i for i, t in enumerate(texts) if t is None]] = -1
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), lengths


def _decode_texts(blob: np.ndarray, lengths: np.ndarray) -> list[str | None]:
    data = blob.tobytes()
    ends = np.cumsum(np.maximum(lengths, 0)).tolist()
    out: list[str | None] = []
    start = 0
    for end, length in zip(ends, lengths.tolist()):
        out.append(None if length < 0 else data[start:end].decode("utf-8", "surrogatepass"))
        start = end
    return out


def save(path: Path, snapshot: Snapshot) -> None:
    """Write `snapshot` to `path` atomically (a temporary file, fsync, rename)."""
    arrays: dict[str, np.ndarray] = {}
    arrays["text_blob"], arrays["text_lengths"] = _encode_texts(snapshot.texts)
    header = {"format": FORMAT, "version": VERSION, "rows": len(snapshot.texts), "embedder": snapshot.embedder}
    if snapshot.bm25 is not None:
        bm25 = dict(snapshot.bm25)
        arrays["term_blob"], arrays["term_lengths"] = _encode_texts(bm25.pop("terms"))
        for name in ("counts", "rows", "tfs", "lengths", "alive"):
            arrays[f"bm25_{name}"] = bm25.pop(name)
        header["bm25"] = bm25  # the scalars: k1, b, n_docs, total_length
    if snapshot.ann is not None:
        header["hnsw"] = snapshot.hnsw
    header["arrays"] = list(arrays)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(json.dumps(header).encode() + b"\n")
            for arr in arrays.values():
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
            if snapshot.ann is not None:
                import faiss

                f.flush()
                # (PyCallbackIOWriter is in faiss's SWIG module but missing from its stubs.)
                faiss.write_index(snapshot.ann, faiss.PyCallbackIOWriter(f.write))  # type: ignore[attr-defined]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: Path) -> Snapshot | None:
    """The snapshot at `path`, or None when there is none or it cannot be used (with a warning saying
    why, for a damaged file); the caller then builds its indexes as if there were no file."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            return _read(f)
    except Exception as exc:  # a damaged or foreign file is never fatal: the indexes are rebuilt
        warnings.warn(f"ignoring the saved retrieval index {path} ({exc}); it will be rebuilt", RuntimeWarning, 2)
        return None


def _read(f: BinaryIO) -> Snapshot | None:
    header = json.loads(f.readline())
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} {FORMAT} file")
    arrays = {name: np.lib.format.read_array(f, allow_pickle=False) for name in header["arrays"]}
    texts = _decode_texts(arrays["text_blob"], arrays["text_lengths"])
    if len(texts) != header["rows"]:
        raise ValueError(f"{len(texts)} rows where the header says {header['rows']}")
    snapshot = Snapshot(texts, embedder=header.get("embedder"))
    if "bm25" in header:
        bm25 = dict(header["bm25"])
        bm25["terms"] = (arrays["term_blob"], arrays["term_lengths"])  # decoded by `terms` when taken over
        for name in ("counts", "rows", "tfs", "lengths", "alive"):
            bm25[name] = arrays[f"bm25_{name}"]
        if len(bm25["lengths"]) < len(texts) or int(bm25["counts"].sum()) != len(bm25["rows"]):
            raise ValueError("the BM25 postings do not match the rows")
        snapshot.bm25 = bm25
    if "hnsw" in header:
        import faiss

        # (PyCallbackIOReader: as PyCallbackIOWriter in `save`.) faiss returns the graph's own class, as
        # `save` wrote it; the stubs type it as a plain Index.
        reader = faiss.PyCallbackIOReader(f.read)  # type: ignore[attr-defined]
        ann = snapshot.ann = cast("faiss.IndexHNSWFlat", faiss.read_index(reader))
        snapshot.hnsw = header["hnsw"]
        if ann.ntotal > len(texts) or ann.d != header["hnsw"]["dim"]:
            raise ValueError("the HNSW graph does not match the rows")
    return snapshot


def terms(encoded: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """The BM25 terms of a loaded snapshot (decoded only when the postings are taken over)."""
    return _decode_texts(*encoded)  # type: ignore[return-value]
