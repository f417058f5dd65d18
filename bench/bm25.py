"""Lexical retrieval (`BM25Index`) at up to 1M documents: build time, memory, and p50/p99 per query of the
pruned top-k beside the same index scoring every match (the exhaustive baseline), in the same run.

    python bench/bm25.py                                # the figures in docs/benchmarks.md
    python bench/bm25.py --corpora proxy:250000 --queries 100 --previous HEAD~1   # quicker; an older BM25 too
    python bench/bm25.py --corpora proxy:250000 proxy:1000000 --bm25s   # bm25s (pip install bm25s) beside it

Corpora:
- proxy:N — N prompts as `bench/proxy.py` builds its library ("Task i: " and 12 words drawn by a Zipf law
  from 3,375 made-up words); its 1M-experience library has 250,000 distinct prompts (groups of 8, half
  stored), and the retriever indexes distinct prompts, so proxy:250000 is that library's index and
  proxy:1000000 the worst case of 1M distinct prompts. Queries: fresh prompts of the same kind, with k =
  12 (`select_examples` asks for 4 x the proxy's 3 shots) and k = 10.
- tasks:N — the synthetic task prompts of `bench/retrieval.py`, with its four-word queries, k = 10.

Times are per query, one query at a time, in CPU seconds of this process (`time.process_time`), so that
other work on a shared machine inflates them less than wall time would; the load average is printed
beside them. `--previous REV` also builds the `BM25Index` of that git revision on the same documents
and times it on the same queries, interleaved. `--bm25s` does the same with the bm25s package (sparse
matrices, the same BM25 formula: Lucene's idf, k1 = 1.2, b = 0.75, the same tokens), and prints how many of
its top-k rows are `BM25Index`'s (its recall against the exact top k; ties at the k-th score count as
found).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from proxy import prompt_of  # noqa: E402
from retrieval import prompts as task_prompts  # noqa: E402
from retrieval import queries as task_queries  # noqa: E402
from retrieval import rss_mb  # noqa: E402
from tfgrpo.retrieval import BM25Index  # noqa: E402


def corpus(kind: str, n: int, n_queries: int) -> tuple[list[str], list[str], tuple[int, ...]]:
    if kind == "proxy":
        rng = random.Random(0)
        docs = [prompt_of(i, rng) for i in range(n)]
        rng = random.Random(1)
        return docs, [prompt_of(rng.randrange(10**6), rng) for _ in range(n_queries)], (12, 10)
    return task_prompts(n, seed=n), task_queries(n_queries, seed=1), (10,)


def previous_index(rev: str):
    """`BM25Index` as it was at git revision `rev`."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/tfgrpo/retrieval/lexical.py"], cwd=HERE.parent, capture_output=True, check=True
    ).stdout
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("previous_lexical", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BM25Index


class Bm25sIndex:
    """bm25s behind `BM25Index`'s `search(query, k)`, on `tokenize`'s tokens (built at once: bm25s has no
    incremental add)."""

    def __init__(self, docs: list[str]) -> None:
        import bm25s

        from tfgrpo.retrieval import tokenize

        self.tokenize = tokenize
        self.index = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
        self.index.index([tokenize(d) for d in docs], show_progress=False)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows, scores = self.index.retrieve([self.tokenize(query)], k=k, show_progress=False, n_threads=1)
        return rows[0], scores[0]


def recall(exact, other, query: str, k: int) -> float:
    """Share of `exact`'s top-k rows that `other` returns, counting rows tied with its k-th score as found."""
    rows, scores = exact.search(query, k)
    got = set(np.asarray(other.search(query, k)[0]).tolist())
    if not len(rows):
        return 1.0
    kth = float(scores[-1])
    found = sum(1 for r, s in zip(rows.tolist(), scores.tolist()) if r in got or abs(s - kth) < 1e-4 * max(1.0, kth))
    return found / len(rows)


def build_bm25s(docs: list[str]) -> tuple[object, float, float]:
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    index = Bm25sIndex(docs)
    seconds = time.perf_counter() - start
    gc.collect()
    return index, seconds, rss_mb() - before


def build(cls, docs: list[str]) -> tuple[object, float, float]:
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    index = cls()
    for row, text in enumerate(docs):
        index.add(row, text)
    seconds = time.perf_counter() - start
    gc.collect()
    return index, seconds, rss_mb() - before


def cpu_ms(fn, *args) -> float:
    start = time.process_time()
    fn(*args)
    return (time.process_time() - start) * 1e3


def row(*cells) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=["proxy:250000", "proxy:1000000", "tasks:1000000"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exhaustive", type=int, default=50, help="queries also run exhaustively")
    parser.add_argument("--previous", help="git revision whose BM25Index is also measured")
    parser.add_argument("--bm25s", action="store_true", help="also measure the bm25s package on the same queries")
    args = parser.parse_args()
    previous = previous_index(args.previous) if args.previous else None
    row("corpus", "documents", "index", "build [s]", "memory [MB]", "k", "p50 [ms]", "p99 [ms]", "load avg")
    row(*["---"] * 9)
    for spec in args.corpora:
        kind, n = spec.split(":")
        docs, queries, ks = corpus(kind, int(n), args.queries)
        indexes = [("pruned", *build(BM25Index, docs))]
        if previous is not None:
            indexes.append((f"previous ({args.previous})", *build(previous, docs)))
        if args.bm25s:
            indexes.append(("bm25s", *build_bm25s(docs)))
        del docs
        pruned = indexes[0][1]
        for k in ks:
            for q in queries[:3]:  # first use of each term out of the timing (impacts, conversions)
                for _, index, _, _ in indexes:
                    index.search(q, k)
            times: dict[str, list[float]] = {name: [] for name, *_ in indexes}
            times["exhaustive"] = []
            for i, q in enumerate(queries):
                for name, index, _, _ in indexes:
                    times[name].append(cpu_ms(index.search, q, k))
                if i < args.exhaustive:
                    times["exhaustive"].append(cpu_ms(pruned.search, q))  # every match, sorted
                    if i < 20:  # the same rows and scores as scoring every match
                        rows, scores = pruned.search(q, k)
                        all_rows, all_scores = pruned.search(q)
                        assert rows.tolist() == all_rows[:k].tolist() and scores.tolist() == all_scores[:k].tolist()
            if args.bm25s:
                other = next(index for name, index, _, _ in indexes if name == "bm25s")
                share = np.mean([recall(pruned, other, q, k) for q in queries])
                print(f"bm25s recall of BM25Index's top {k} over {len(queries)} queries: {share:.4f}", flush=True)
            load = f"{os.getloadavg()[0]:.1f}"
            for name, values in times.items():
                built = next(((b, m) for nm, _, b, m in indexes if nm == name), None)
                build_s, memory = (f"{built[0]:.1f}", f"{built[1]:.0f}") if built and k == ks[0] else ("", "")
                p50, p99 = np.percentile(values, 50), np.percentile(values, 99)
                what = name if name != "exhaustive" else "pruned index, scoring every match"
                row(kind, f"{int(n):,}", what, build_s, memory, k, f"{p50:.2f}", f"{p99:.2f}", load)
        del indexes, pruned, index
        gc.collect()


if __name__ == "__main__":
    main()
