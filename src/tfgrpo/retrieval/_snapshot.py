"""The retriever's indexes saved beside a library file, so a new process does not rebuild them.

One file, `<library>.index` (e.g. `lib.db.index`), written atomically: raw numpy arrays (no pickles), then
the faiss HNSW graph as faiss writes it, then a JSON header naming where each part lies, then a trailer
(a magic number, the header's place). It holds the retriever's row layout (the text of every row), the
BM25 postings when lexical search was on, and the HNSW graph (with its vectors) when one was built.

It is read memory-mapped (copy on write): the arrays and the graph are views of the file, so opening a
1M index does not read its 3 GB; the pages a query touches are read when it touches them. The graph is
faiss's zero-copy view of the file (`ZeroCopyIOReader`); faiss cannot grow such a graph, so the vector
index copies it into memory before adding to it (`VectorIndex`). A save writes a new file and renames it
over the old one, so a file in use is never changed under its readers.

Staleness is decided per text, not per file: every saved row names its text, and a text's postings
and vector depend only on the text (and on the embedder, which the header names). A process that
opens a library which changed since the save keeps the rows whose text is still there, drops the
others as it drops removed texts, and indexes the new texts as it does new arrivals. A header that
does not match (another format version, embedder, vector size or HNSW settings) or a damaged file
(a trailer or a part missing, as a truncated file has) means that part is rebuilt as if there were no
file, and the next save replaces it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import numpy as np

if TYPE_CHECKING:
    import faiss

FORMAT = "tfgrpo-retrieval-index"
VERSION = 2
MAGIC = b"TFGRPOIX"  # the trailer: MAGIC, then the header's offset and length (two little-endian uint64)
_ALIGN = 64


@dataclass
class Snapshot:
    texts: list[str | None] | None  # row -> text (None: a dead row); None: still `encoded` (see `row_texts`)
    embedder: str | None = None
    hnsw: dict | None = None  # {"m": ..., "ef_construction": ..., "dim": ...} when `ann` is set
    ann: faiss.IndexHNSWFlat | None = None  # the graph over rows [0, ann.ntotal)
    bm25: dict | None = field(default=None)  # see `_bm25_arrays`
    graph_bytes: np.ndarray | None = None  # the file's bytes that `ann` views (kept alive with it)
    encoded: tuple[np.ndarray, np.ndarray] | None = None  # the texts as read: UTF-8 bytes, lengths (-1: dead)

    def row_texts(self) -> list[str | None]:
        """The text of every row (decoded on first use)."""
        if self.texts is None:
            assert self.encoded is not None, "a loaded snapshot keeps its texts encoded"
            self.texts = _decode_texts(*self.encoded)
        return self.texts

    def live_rows(self) -> int:
        """How many rows are live."""
        if self.texts is not None:
            return len(self.texts) - self.texts.count(None)
        assert self.encoded is not None, "a loaded snapshot keeps its texts encoded"
        return int((self.encoded[1] >= 0).sum())

    def is_prefix_of(self, texts: list[str]) -> bool:
        """Whether the rows are exactly the first len(rows) of `texts`, in order, none dead (a library
        unchanged since the save, or one that only grew): then they need not be decoded."""
        if self.encoded is None:
            return self.texts == texts[: len(self.texts or ())]
        blob, lengths = self.encoded
        n = len(lengths)
        if n > len(texts):
            return False
        head = texts[:n]
        if not np.array_equal(np.fromiter(map(len, head), dtype=np.int64, count=n), lengths):
            return False  # (character counts: equal to the byte counts only for ASCII, checked next)
        joined = "".join(head)
        return joined.isascii() and joined.encode("ascii") == blob.tobytes()


def index_path(library_path: str | os.PathLike) -> Path:
    """Where the indexes of a library file are kept."""
    return Path(f"{os.fspath(library_path)}.index")


def _encode_texts(texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [b"" if t is None else t.encode("utf-8", "surrogatepass") for t in texts]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    lengths[[i for i, t in enumerate(texts) if t is None]] = -1
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), lengths


def _decode_texts(blob: np.ndarray, lengths: np.ndarray) -> list[str | None]:
    ends = np.cumsum(np.maximum(lengths, 0))
    if len(ends) and ends[-1] != len(blob):
        raise ValueError(f"the texts take {len(blob)} bytes where their lengths add up to {ends[-1]}")
    starts = (ends - np.maximum(lengths, 0)).tolist()
    ends_list = ends.tolist()
    if not len(blob) or int(blob.max()) < 128:  # ASCII (the usual prompt): one string, cut by byte offsets
        whole: str | bytes = blob.tobytes().decode("ascii")
        out: list[str | None] = [whole[a:b] for a, b in zip(starts, ends_list)]  # type: ignore[misc]
    else:
        data = blob.tobytes()
        out = [data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends_list)]
    if (lengths < 0).any():
        for row in np.flatnonzero(lengths < 0).tolist():
            out[row] = None
    return out


def save(path: Path, snapshot: Snapshot) -> None:
    """Write `snapshot` to `path` atomically (a temporary file, fsync, rename)."""
    arrays: dict[str, np.ndarray] = {}
    arrays["text_blob"], arrays["text_lengths"] = _encode_texts(snapshot.row_texts())
    header: dict = {"format": FORMAT, "version": VERSION, "rows": len(arrays["text_lengths"])}
    header["embedder"] = snapshot.embedder
    if snapshot.bm25 is not None:
        bm25 = dict(snapshot.bm25)
        arrays["term_blob"], arrays["term_lengths"] = _encode_texts(bm25.pop("terms"))
        for name in ("counts", "rows", "tfs", "lengths", "alive"):
            arrays[f"bm25_{name}"] = bm25.pop(name)
        header["bm25"] = bm25  # the scalars: k1, b, n_docs, total_length
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            header["arrays"] = {}
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                offset = _pad(f)
                f.write(arr.data)
                header["arrays"][name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset}
            if snapshot.ann is not None:
                import faiss

                offset = _pad(f)
                # (PyCallbackIOWriter is in faiss's SWIG module but missing from its stubs.)
                faiss.write_index(snapshot.ann, faiss.PyCallbackIOWriter(f.write))  # type: ignore[attr-defined]
                header["hnsw"] = snapshot.hnsw
                header["graph"] = {"offset": offset, "length": f.tell() - offset}
            place = f.tell()
            encoded = json.dumps(header).encode()
            f.write(encoded)
            f.write(MAGIC + np.array([place, len(encoded)], dtype="<u8").tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pad(f: BinaryIO) -> int:
    """Pad the file to the next multiple of _ALIGN bytes; returns that offset."""
    at = f.tell()
    f.write(b"\0" * (-at % _ALIGN))
    return at + (-at % _ALIGN)


def load(path: Path) -> Snapshot | None:
    """The snapshot at `path`, or None when there is none or it cannot be used (with a warning saying
    why, for a damaged file); the caller then builds its indexes as if there were no file."""
    if not path.exists():
        return None
    try:
        return _read(path)
    except Exception as exc:  # a damaged or foreign file is never fatal: the indexes are rebuilt
        warnings.warn(f"ignoring the saved retrieval index {path} ({exc}); it will be rebuilt", RuntimeWarning, 2)
        return None


def _read(path: Path) -> Snapshot | None:
    data = np.memmap(path, dtype=np.uint8, mode="c")  # (copy on write: nothing written reaches the file)
    trailer = data[-len(MAGIC) - 16 :].tobytes() if len(data) >= len(MAGIC) + 16 else b""
    if trailer[: len(MAGIC)] != MAGIC:
        raise ValueError(f"not a version {VERSION} {FORMAT} file, or a truncated one (no trailer)")
    place, length = np.frombuffer(trailer[len(MAGIC) :], dtype="<u8").tolist()
    end = len(data) - len(MAGIC) - 16
    if place + length != end:
        raise ValueError("the trailer does not point at the header")
    header = json.loads(data[place:end].tobytes())
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} {FORMAT} file")
    arrays = {name: _array(data, spec, place) for name, spec in header["arrays"].items()}
    blob, lengths = arrays["text_blob"], arrays["text_lengths"]
    if len(lengths) != header["rows"] or int(np.maximum(lengths, 0).sum()) != len(blob):
        raise ValueError(f"{len(lengths)} rows of {len(blob)} bytes do not match the header's {header['rows']}")
    snapshot = Snapshot(None, embedder=header.get("embedder"), encoded=(blob, lengths))
    if "bm25" in header:
        bm25 = dict(header["bm25"])
        bm25["terms"] = (arrays["term_blob"], arrays["term_lengths"])  # decoded by `terms` when taken over
        for name in ("counts", "rows", "tfs", "lengths", "alive"):
            bm25[name] = arrays[f"bm25_{name}"]
        if len(bm25["lengths"]) < len(lengths) or int(bm25["counts"].sum()) != len(bm25["rows"]):
            raise ValueError("the BM25 postings do not match the rows")
        snapshot.bm25 = bm25
    if "hnsw" in header:
        import faiss

        graph = header["graph"]
        if not 0 <= graph["offset"] <= graph["offset"] + graph["length"] <= place:
            raise ValueError("the HNSW graph lies outside the file")
        graph_bytes = snapshot.graph_bytes = data[graph["offset"] : graph["offset"] + graph["length"]]
        # A view of the file's bytes, not a copy (3 GB at 1M). faiss returns the graph's own class, as `save`
        # wrote it; the stubs type it as a plain Index (and lack ZeroCopyIOReader and swig_ptr).
        reader = faiss.ZeroCopyIOReader(faiss.swig_ptr(graph_bytes), len(graph_bytes))  # type: ignore[attr-defined]
        ann = snapshot.ann = cast("faiss.IndexHNSWFlat", faiss.read_index(reader))
        snapshot.hnsw = header["hnsw"]
        if ann.ntotal > len(lengths) or ann.d != header["hnsw"]["dim"]:
            raise ValueError("the HNSW graph does not match the rows")
    return snapshot


def _array(data: np.ndarray, spec: dict, end: int) -> np.ndarray:
    """One array of the file, as a view of it."""
    dtype, shape, offset = np.dtype(spec["dtype"]), tuple(spec["shape"]), int(spec["offset"])
    if dtype.hasobject:
        raise ValueError("an array of Python objects")
    size = dtype.itemsize * math.prod(shape)
    if not 0 <= offset <= offset + size <= end:
        raise ValueError("an array lies outside the file")
    return data[offset : offset + size].view(dtype).reshape(shape)


def terms(encoded: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """The BM25 terms of a loaded snapshot (decoded only when the postings are taken over)."""
    return _decode_texts(*encoded)  # type: ignore[return-value]
