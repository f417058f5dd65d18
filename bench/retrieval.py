"""Benchmark of retrieval (`tfgrpo.retrieval`) at 10K, 100K and 1M experiences, each beside its exact
baseline measured in the same run.

    nice -n 10 python bench/retrieval.py                      # 10K, 100K, 1M (the 1M HNSW build takes minutes)
    python bench/retrieval.py --sizes 10000 --queries 100     # quicker
    python bench/retrieval.py --write docs/benchmarks.md      # also replace the "## Retrieval" section there
    python bench/retrieval.py --open-only --sizes 1000000     # a new process opening a 1M library, first query

- lexical: BM25 top-10 through `Retriever.search(mode="lexical")` over synthetic task prompts (one
  distinct prompt per experience, the worst case: group members share a prompt and cost nothing extra),
  beside the library's `prefix` mode (a scan of every experience) on the same queries.
- semantic: top-10 of 384-d unit vectors through `VectorIndex` (faiss HNSW) beside exact numpy search
  (one matrix-vector product), with recall@10 of the HNSW results against the exact ones. At 10K the
  vectors are the real all-MiniLM-L6-v2 embeddings of the prompts; at 100K and 1M embedding every prompt
  on this CPU would take hours, so they are synthetic: normalised points around 2,000 random centres
  (clustered like real embeddings of task prompts), queries drawn the same way.
- embedding throughput of the real MiniLM (texts/s) on this machine's CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tfgrpo import GRPOConfig, TrainingFreeGRPO  # noqa: E402
from tfgrpo.retrieval import VectorIndex  # noqa: E402

VERBS = (
    "read write parse sort reverse count merge split validate compress decode encode filter format load save "
    "convert fetch render hash sum search replace rename delete copy compare normalise tokenize serialise "
    "deserialise stream paginate cache retry schedule index deduplicate flatten group aggregate"
).split()
OBJECTS = (
    "file lines bytes string list dictionary json csv yaml xml url html table matrix graph tree queue stack "
    "log config date timestamp number fraction polynomial image archive directory path socket request response "
    "header cookie token user record column row stream buffer message email address query"
).split()
QUALIFIERS = (
    "atomically lazily in place with a regex by key in chunks recursively concurrently safely efficiently "
    "without recursion in reverse order case insensitively with a timeout from stdin to stdout line by line"
).split(" ")
LANGS = ["in Python", "in Rust", "in Go", "in C", "in JavaScript", "in SQL", "in Bash", ""]


def prompts(n: int, seed: int) -> list[str]:
    """Distinct task prompts such as "Read the csv records in chunks in Rust (task 123, users_17)"."""
    rng = random.Random(seed)
    names = [f"{rng.choice(OBJECTS)}_{i}" for i in range(20_000)]
    out = []
    for i in range(n):
        verb, obj, obj2 = rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(OBJECTS)
        name = names[min(int(rng.paretovariate(1.2)) - 1, len(names) - 1)]
        qual = rng.choice(QUALIFIERS)
        out.append(
            f"{verb.capitalize()} the {obj} {obj2} {qual} {rng.choice(LANGS)} (task {i}, {name})".replace("  ", " ")
        )
    return out


def queries(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(OBJECTS)} {rng.choice(QUALIFIERS)}" for _ in range(n)
    ]


def clustered_vectors(n: int, d: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, d)).astype(np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def rss_mb() -> float:
    try:
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024
    except (OSError, AttributeError):
        return float("nan")


def ratio(baseline_ms: float, ms: float) -> str:
    r = baseline_ms / ms
    return f"{r:.1f}x" if r < 10 else f"{r:.0f}x"


def timed(fn, items) -> tuple[float, list]:
    """Mean milliseconds per call of fn(item), and the results."""
    results = []
    start = time.perf_counter()
    for item in items:
        results.append(fn(item))
    return (time.perf_counter() - start) / max(len(items), 1) * 1e3, results


class Rows:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, *row) -> None:
        self.rows.append(row)
        print(" | ".join(str(c) for c in row), flush=True)


def bench_lexical(n: int, n_queries: int, out: Rows) -> None:
    texts = prompts(n, seed=n)
    grpo = TrainingFreeGRPO(GRPOConfig(max_library_size=max(n, 1000)), clock=lambda: 1_700_000_000)
    grpo.add_rollout_groups(([(p, "a"), (p, "b")], [1.0, 0.0], None) for p in texts)
    del texts
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    retriever = grpo.enable_retrieval()
    retriever._enable_lexical()
    build = time.perf_counter() - start
    memory = rss_mb() - before
    qs = queries(n_queries, seed=1)
    retriever.search(qs[0], 10, mode="lexical")  # first-use conversions out of the timing
    bm25_ms, found = timed(lambda q: retriever.search(q, 10, mode="lexical"), qs)
    assert all(len(f) == 10 for f in found)
    full_ms, _ = timed(lambda q: retriever._bm25.search(q)[0][:10], qs[: max(5, n_queries // 4)])
    scan_qs = [q.split()[0].capitalize() for q in qs[: max(5, n_queries // 20)]]
    scan_ms, _ = timed(lambda q: grpo.get_experiences_for_prompt(q, k=10), scan_qs)
    out.add(
        f"{n:,}",
        "lexical (BM25)",
        f"{bm25_ms:.2f}",
        "prefix scan",
        f"{scan_ms:.1f}",
        ratio(scan_ms, bm25_ms),
        "-",
        f"{build:.1f} s",
        f"{memory:.0f} MB",
    )
    out.add(
        f"{n:,}",
        "lexical (BM25)",
        f"{bm25_ms:.2f}",
        "BM25 scoring every match",
        f"{full_ms:.1f}",
        ratio(full_ms, bm25_ms),
        "-",
        "",
        "",
    )


def bench_semantic(n: int, n_queries: int, out: Rows, embedder, centres: np.ndarray, threads: int) -> None:
    d = 384
    if n <= 10_000 and embedder is not None:
        kind = "MiniLM"
        texts = prompts(n, seed=n)
        x = embedder.embed(texts)
        q = embedder.embed(queries(n_queries, seed=1))
    else:
        kind = "synthetic"
        x = clustered_vectors(n, d, seed=n, centres=centres)
        q = clustered_vectors(n_queries, d, seed=10**9 + n, centres=centres)
    index = VectorIndex(approximate_threshold=0, threads=threads)
    index.add(np.arange(n), x)
    del x
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    index._ensure_ann()
    build = time.perf_counter() - start
    graph_mb = rss_mb() - before
    import faiss

    faiss.omp_set_num_threads(1)  # one query at a time, as a training loop asks
    ann_ms, ann = timed(lambda v: index.search(v, 10)[0], q)
    n_exact = min(len(q), 50 if n >= 1_000_000 else len(q))
    exact_ms, exact = timed(lambda v: index.search_exact(v, 10)[0], q[:n_exact])
    recall = np.mean([len(set(a.tolist()) & set(e.tolist())) / 10 for a, e in zip(ann, exact)])
    vectors_mb = n * d * 4 / 2**20
    out.add(
        f"{n:,}",
        f"semantic HNSW ({kind})",
        f"{ann_ms:.3f}",
        "exact numpy",
        f"{exact_ms:.1f}",
        ratio(exact_ms, ann_ms),
        f"{recall:.3f}",
        f"{build:.1f} s",
        f"{vectors_mb:.0f} MB vectors + {graph_mb:.0f} MB graph",
    )


class SyntheticEmbedder:
    """Deterministic stand-in for MiniLM at 100K-1M texts (embedding them for real would take hours here):
    each text's vector is a point near one of 2,000 centres, both chosen by the text's CRC, so every
    process gets the same vector for the same text."""

    name = "synthetic:clustered-384"

    def __init__(self) -> None:
        self.centres = np.random.default_rng(0).standard_normal((2000, 384)).astype(np.float32)
        self.embedded = 0

    def embed(self, texts) -> np.ndarray:
        self.embedded += len(texts)
        out = np.empty((len(texts), 384), dtype=np.float32)
        for i, text in enumerate(texts):
            crc = zlib.crc32(text.encode())
            out[i] = self.centres[crc % 2000] + 0.5 * np.random.default_rng(crc).standard_normal(384, np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def open_child(path: str, persist: bool, threads: int, semantic: bool = True) -> None:
    """A fresh process: open the library, attach a retriever, answer one semantic then one lexical query
    (only the lexical one when `semantic` is False)."""
    started, started_cpu = time.perf_counter(), time.process_time()
    grpo = TrainingFreeGRPO.open(path)
    opened = time.perf_counter()
    retriever = grpo.enable_retrieval(
        SyntheticEmbedder(), persist_indexes=persist, vector_index=VectorIndex(threads=threads)
    )
    attached = time.perf_counter()
    qs = queries(3, seed=5)
    if semantic:
        found = grpo.get_experiences_for_prompt(qs[0], k=10, mode="semantic")
        first, first_cpu = time.perf_counter(), time.process_time()
        grpo.get_experiences_for_prompt(qs[1], k=10, mode="semantic")
        second = time.perf_counter()
    else:
        found, first, second, first_cpu = [None] * 10, attached, attached, 0.0
    lexical = grpo.get_experiences_for_prompt(qs[2], k=10, mode="lexical")
    first_lexical = time.perf_counter()
    assert len(found) == 10 and len(lexical) == 10
    print(
        json.dumps(
            {
                "open_s": opened - started,
                "attach_s": attached - opened,
                "first_semantic_s": first - attached,
                "second_semantic_ms": (second - first) * 1e3,
                "first_lexical_s": first_lexical - second,
                "total_s": (first if semantic else first_lexical) - started,
                "total_cpu_s": first_cpu - started_cpu,  # (semantic only; all threads of the process)
                "restored": retriever.restored_rows,
                "builds": retriever._vectors.builds,
                "embedded": retriever.embedder.embedded,
                "rss_mb": rss_mb(),
            }
        )
    )


def bench_open(
    n: int, threads: int, baseline: bool, out: Rows, semantic: bool = True, keep: Path | None = None, runs: int = 1
) -> None:
    """A library file of `n` distinct prompts whose indexes a first process built (and so saved); then a
    fresh process opens it and answers its first query (`runs` times). Baseline (same run): a fresh process
    that does not take the saved indexes over (what every process did before issue 11). `keep`: a folder
    where the library and its index are kept, and reused when a previous run left them there (the 1M
    graph takes minutes to build)."""
    with contextlib.ExitStack() as stack:
        if keep is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=os.environ.get("TFGRPO_BENCH_TMP")))
        else:
            tmp = str(keep / f"{n}{'' if semantic else '-lexical'}")
            os.makedirs(tmp, exist_ok=True)
        path = os.path.join(tmp, "lib.db")
        if os.path.exists(f"{path}.index"):
            out.add(f"{n:,}", "first process: (reused from an earlier run)", path)
            _measure_open(n, path, threads, baseline, out, semantic, runs)
            return
        for leftover in Path(tmp).glob("lib.db*"):
            leftover.unlink()
        texts = prompts(n, seed=n)
        grpo = TrainingFreeGRPO.open(path, GRPOConfig(max_library_size=n), clock=lambda: 1_700_000_000)
        grpo.add_rollout_groups(([(p, "good"), (p, "bad")], [1.0, 0.0], None) for p in texts)
        del texts
        retriever = grpo.enable_retrieval(SyntheticEmbedder(), vector_index=VectorIndex(threads=threads))
        start = time.perf_counter()
        grpo.get_experiences_for_prompt("merge the csv rows", k=10, mode="lexical")  # BM25 built, saved
        lexical_build = time.perf_counter() - start
        start = time.perf_counter()
        if semantic:
            grpo.get_experiences_for_prompt("read the json file", k=10, mode="semantic")  # embed, HNSW, saved
        semantic_build = time.perf_counter() - start
        start = time.perf_counter()
        retriever.save_indexes()
        save_s = time.perf_counter() - start
        index_mb = retriever.index_path.stat().st_size / 2**20
        grpo.close()
        del grpo, retriever
        gc.collect()
        out.add(f"{n:,}", "first process: BM25 build + save [s]", f"{lexical_build:.1f}")
        if semantic:
            out.add(f"{n:,}", "first process: embed + HNSW build + save [s]", f"{semantic_build:.1f}")
        out.add(f"{n:,}", f"saving the indexes again [s] ({index_mb:,.0f} MB file)", f"{save_s:.1f}")
        _measure_open(n, path, threads, baseline, out, semantic, runs)


def _measure_open(n: int, path: str, threads: int, baseline: bool, out: Rows, semantic: bool, runs: int) -> None:
    for _ in range(runs):
        for persist in (True, False) if baseline else (True,):
            command = [sys.executable, __file__, "--open-child", path, "1" if persist else "0", str(threads)]
            command += [] if semantic else ["--only", "lexical"]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(result.stderr)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            what = "new process, saved indexes" if persist else "new process, no saved index (before)"
            what += f" (load {os.getloadavg()[0]:.1f})"
            out.add(
                f"{n:,}",
                f"{what}: open / attach / first semantic / total to first answer [s]",
                f"{r['open_s']:.1f} / {r['attach_s']:.1f} / {r['first_semantic_s']:.1f} / {r['total_s']:.1f}",
            )
            if semantic:
                out.add(f"{n:,}", f"{what}: CPU time to first semantic answer [s]", f"{r['total_cpu_s']:.1f}")
            out.add(
                f"{n:,}",
                f"{what}: second semantic [ms] / first lexical [s] / texts embedded / graphs built",
                f"{r['second_semantic_ms']:.1f} / {r['first_lexical_s']:.1f} / {r['embedded']:,} / {r['builds']}",
            )


def embedding_throughput(embedder, n: int = 2000) -> tuple[float, float]:
    texts = prompts(n, seed=7)
    embedder.embed(texts[:64])  # load and warm up
    start = time.perf_counter()
    embedder.embed(texts)
    batch = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for text in texts[:100]:
        embedder.embed([text])
    single = 100 / (time.perf_counter() - start)
    return batch, single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the HNSW build")
    parser.add_argument("--embed-threads", type=int, help="torch threads for MiniLM (default: torch's own)")
    parser.add_argument("--only", choices=["lexical", "semantic"], help="run one kind of search only")
    parser.add_argument("--no-model", action="store_true", help="skip MiniLM (synthetic vectors everywhere)")
    parser.add_argument("--write", type=Path, help="replace the '## Retrieval' section of this Markdown file")
    parser.add_argument(
        "--open-only", action="store_true", help="only: a new process opens a library whose indexes were saved"
    )
    parser.add_argument(
        "--baseline-up-to", type=int, default=100_000, help="largest size also opened without the saved indexes"
    )
    parser.add_argument("--keep", type=Path, help="with --open-only: keep (and reuse) the libraries and indexes here")
    parser.add_argument("--runs", type=int, default=1, help="with --open-only: new processes per size")
    parser.add_argument("--open-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open_child:
        path, persist, threads = args.open_child
        open_child(path, persist == "1", int(threads), semantic=args.only != "lexical")
        return
    if args.open_only:
        print("| size | measure | value |\n| ---: | --- | ---: |")
        out = Rows()
        out.add = lambda *row: print("| " + " | ".join(str(c) for c in row) + " |", flush=True)
        for n in args.sizes:
            semantic = args.only != "lexical"
            bench_open(n, args.threads, n <= args.baseline_up_to, out, semantic, args.keep, args.runs)
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    embedder = None
    if not args.no_model:
        from tfgrpo.retrieval import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(batch_size=64, threads=args.embed_threads)
    centres = np.random.default_rng(0).standard_normal((2000, 384)).astype(np.float32)

    header = (
        "size",
        "search",
        "top-10 ms/query",
        "baseline",
        "baseline ms/query",
        "speed-up",
        "recall@10",
        "build",
        "memory",
    )
    print(" | ".join(header))
    out = Rows()
    throughput = embedding_throughput(embedder) if embedder is not None else None
    for n in args.sizes:
        if args.only != "semantic":
            bench_lexical(n, args.queries, out)
            gc.collect()
        if args.only != "lexical":
            bench_semantic(n, args.queries, out, embedder, centres, args.threads)
            gc.collect()

    import faiss

    default_sizes = args.sizes == [10_000, 100_000, 1_000_000]
    sizes = "" if default_sizes else " --sizes " + " ".join(map(str, args.sizes))
    lines = [
        "## Retrieval",
        "",
        "Reproduce with:",
        "",
        "```",
        f"nice -n 10 python bench/retrieval.py{sizes} --queries {args.queries} --threads {args.threads}",
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other work), Python "
        f"{platform.python_version()}, numpy {np.__version__}, faiss-cpu {faiss.__version__}. Queries run one at "
        "a time on one thread; the HNSW graph (M=24, efConstruction=64, efSearch=256) is built with "
        f"{args.threads} threads.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in out.rows]
    lines += [
        "",
        "- lexical: BM25 (in-memory, incremental) over synthetic task prompts, one distinct prompt per "
        "experience (the worst case; group members share their prompt's entry), queries of four common "
        "words; top-10 is exact (MaxScore pruning skips the postings of common words once they cannot change "
        "the top 10). Baselines: the default `prefix` mode (a scan of the library, on first-word queries), "
        "and the same BM25 index scoring every matching document. Memory is the process's growth when the "
        "index was built (the per-prompt bookkeeping of the retriever included).",
        '- semantic: 384-d unit vectors. "MiniLM" rows embed the prompts and queries with the real '
        'all-MiniLM-L6-v2; "synthetic" rows use clustered random unit vectors (2,000 centres), because '
        "embedding 100K-1M texts with MiniLM on this CPU would take hours. recall@10 is against exact search "
        "over the same vectors; the baseline is exact numpy search (one matrix-vector product), which the "
        "library uses below `approximate_threshold` (20,000 distinct prompts by default).",
    ]
    if throughput is not None:
        lines.append(
            f"- embedding throughput, real all-MiniLM-L6-v2 on CPU ({args.embed_threads or 'default'} torch threads): "
            f"{throughput[0]:.0f} texts/s in batches of 64, "
            f"{throughput[1]:.0f} texts/s one at a time (a query). Each distinct prompt is embedded once and "
            "the vector is stored in the SQLite library."
        )
    section = "\n".join(lines) + "\n"
    print()
    print(section)
    if args.write:
        write_section(args.write, section)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Retrieval\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
