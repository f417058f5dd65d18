"""Benchmark of the experience library against the spec-style reference, measured in the same run.

    python bench/library.py                 # 10K, 100K and 1M experiences
    python bench/library.py --sizes 10000   # quicker
    python bench/library.py --sizes 1000000 --after-load-only   # every single add after a fresh load
    python bench/library.py --sizes 1000000 --previous main --repeat 3   # the hot paths beside a git revision

Prints a Markdown table (paste it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import ReferenceGRPO  # noqa: E402
from tfgrpo import GRPOConfig, TrainingFreeGRPO  # noqa: E402
from tfgrpo.core.store import SQLiteStore  # noqa: E402

WORDS = (
    "the a function list string file read write parse return value error index count sum loop "
    "python code test input output number sort dict key map filter path open close line split join"
).split()
G = 8


class Clock:
    """A clock that only moves when told, so no experience goes stale mid-benchmark."""

    def __init__(self) -> None:
        self.now = 1_700_000_000

    def __call__(self) -> float:
        return self.now


def generate_groups(seed: int) -> Iterator[tuple[list[tuple[str, str]], list[float]]]:
    """Endless groups of 8 rollouts with realistic lengths: ~150-character prompts, ~300-character
    responses, 0/1 rewards (about half the rollouts above the group mean)."""
    rng = random.Random(seed)

    def text(n_words: int) -> str:
        return " ".join(rng.choices(WORDS, k=n_words))

    for i in itertools.count():
        prompt = f"Task {i}: {text(25)}"
        responses = [text(50) for _ in range(G)]
        rewards = [float(rng.random() < 0.5) for _ in range(G)]
        if min(rewards) == max(rewards):
            rewards[0] = 1.0 - rewards[0]
        yield list(zip([prompt] * G, responses)), rewards


def make_groups(n_groups: int, seed: int) -> list[tuple[list[tuple[str, str]], list[float]]]:
    return list(itertools.islice(generate_groups(seed), n_groups))


def fill(lib, groups_iter, size: int) -> None:
    while len(lib.experience_library) < size:
        lib.add_rollout_group(*next(groups_iter))


def per_call(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def timed_adds(lib, groups: list, budget_s: float) -> float:
    """Seconds per add_rollout_group with the library full (pruning included)."""
    done, start = 0, time.perf_counter()
    for rollouts, rewards in groups:
        lib.add_rollout_group(rollouts, rewards)
        done += 1
        if time.perf_counter() - start > budget_s:
            break
    return (time.perf_counter() - start) / done


def bench_size(size: int, with_reference: bool) -> list[tuple[str, float, float | None]]:
    config = GRPOConfig(max_library_size=size, max_experience_age=2_592_000)
    groups = make_groups(size // 3 + 5_000, seed=size)
    rows = []

    ours = TrainingFreeGRPO(config, seed=1, clock=Clock())
    fill(ours, iter(groups), size)
    ref = None
    if with_reference:
        # Filled directly: the reference's own add scans the whole library on every call, so building a
        # million-experience library through it would take hours.
        ref = ReferenceGRPO(config, seed=1, clock=Clock())
        ref.experience_library = list(ours.experience_library)

    extra = groups[-5_000:]
    budget = 3.0
    ours_add = timed_adds(ours, extra, budget)
    ref_add = timed_adds(ref, extra, budget) if ref else None
    rows.append(("add_rollout_group (G=8, full, pruning) [us]", ours_add * 1e6, ref_add and ref_add * 1e6))

    ours_sample = per_call(ours.sample_experience, 20_000)
    ref_sample = per_call(ref.sample_experience, max(3, 200_000 // size)) if ref else None
    rows.append(("sample_experience [us]", ours_sample * 1e6, ref_sample and ref_sample * 1e6))

    # Interleaved, as in a training loop: the library changed since the last draw.
    sampling = 0.0
    for rollouts, rewards in extra[:2_000]:
        ours.add_rollout_group(rollouts, rewards)
        start = time.perf_counter()
        ours.sample_experience()
        sampling += time.perf_counter() - start
    rows.append(("sample_experience right after an add [us]", sampling / 2_000 * 1e6, None))

    ours_multi = per_call(lambda: ours.sample_multiple(1000), 50)
    ref_multi = per_call(lambda: ref.sample_multiple(1000), 1) if ref and size <= 10_000 else None
    rows.append(("sample_multiple(1000) [ms]", ours_multi * 1e3, ref_multi and ref_multi * 1e3))
    return rows


def bench_memory(size: int) -> tuple[float, float, float]:
    """(bytes per experience, raw text bytes per experience, budget: 2 x raw + 200). Groups are
    generated inside the trace and dropped once added, so what stays traced is what the library keeps."""
    config = GRPOConfig(max_library_size=size, max_experience_age=2_592_000)
    gc.collect()
    tracemalloc.start()
    lib = TrainingFreeGRPO(config, seed=1, clock=Clock())
    fill(lib, generate_groups(size + 1), size)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    raw = sum(len(e.prompt.encode()) + len(e.response.encode()) for e in lib.experience_library)
    n = lib.library_size()
    return traced / n, raw / n, 2 * raw / n + 200


def bench_files(size: int) -> list[tuple[str, float, float | None]]:
    config = GRPOConfig(max_library_size=size, max_experience_age=2_592_000)
    lib = TrainingFreeGRPO(config, seed=1, clock=Clock())
    fill(lib, iter(make_groups(size // 3 + 5_000, seed=7)), size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lib.json")
        start = time.perf_counter()
        lib.save_to_file(path)
        rows.append((f"JSON save of {size:,} [s]", time.perf_counter() - start, None))
        other = TrainingFreeGRPO(config, clock=Clock())
        start = time.perf_counter()
        other.load_from_file(path)
        rows.append((f"JSON load of {size:,} [s]", time.perf_counter() - start, None))
        assert other.library_size() == lib.library_size()
    return rows


def bench_sqlite(size: int, durability: str) -> tuple[float, float]:
    """Seconds per group written through to SQLite, with the library full, and per sample_experience
    of that library (which checks the store for other processes' commits every refresh_interval)."""
    config = GRPOConfig(max_library_size=size, max_experience_age=2_592_000)
    groups = make_groups(size // 3 + 600, seed=11)
    with tempfile.TemporaryDirectory() as tmp:
        lib = TrainingFreeGRPO(config, clock=Clock())
        fill(lib, iter(groups), size)
        path = os.path.join(tmp, "lib.db")
        lib.save_to_file(path)
        lib = TrainingFreeGRPO(config, store=SQLiteStore(path, durability=durability), clock=Clock())
        seconds = timed_adds(lib, groups[-500:], budget_s=5.0)
        sample = per_call(lib.sample_experience, 200_000)
        lib.close()
    return seconds, sample


def after_load_child(path: str, size: int, n_adds: int, as_before: bool) -> None:
    """In a fresh process: load the file, then time every single add (the library full, pruning).
    `as_before`: as the library did before issue 11 (no collect and freeze after the load, the eviction
    heap built at the first eviction), the baseline of the same run."""
    if as_before:
        import tfgrpo.core.library

        tfgrpo.core.library._FREEZE_AT = sys.maxsize
    config = GRPOConfig(max_library_size=size, max_experience_age=2_592_000)
    lib = TrainingFreeGRPO(config, seed=1, clock=Clock())
    start = time.perf_counter()
    lib.load_from_file(path)
    load_s = time.perf_counter() - start
    if as_before:
        lib._heap = None
    groups = make_groups(n_adds, seed=size + 99)
    times = []
    for rollouts, rewards in groups:
        start = time.perf_counter()
        lib.add_rollout_group(rollouts, rewards)
        times.append(time.perf_counter() - start)
    assert lib.library_size() == size
    times.sort()
    print(
        json.dumps(
            {
                "load_s": load_s,
                "mean_us": sum(times) / len(times) * 1e6,
                "p99_us": times[int(len(times) * 0.99)] * 1e6,
                "max_ms": times[-1] * 1e3,
                "over_5ms": sum(t > 0.005 for t in times),
                "n": len(times),
            }
        )
    )


def bench_after_load(size: int, n_adds: int) -> list[tuple[str, str]]:
    """Every single add_rollout_group right after a fresh process loads a full library from a JSON file:
    the stalls a server would see, which the averages above hide; beside the same as the library was before."""
    config = GRPOConfig(max_library_size=size, max_experience_age=2_592_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lib.json")
        lib = TrainingFreeGRPO(config, seed=1, clock=Clock())
        fill(lib, generate_groups(size + 3), size)
        lib.save_to_file(path)
        del lib
        gc.collect()
        rows = []
        for as_before in (False, True):
            command = [sys.executable, __file__, "--after-load-child", path, str(size), str(n_adds)]
            result = subprocess.run(command + (["--as-before"] if as_before else []), capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(result.stderr)
            r = json.loads(result.stdout)
            what = "as before (no gc.freeze, heap at first eviction)" if as_before else "now"
            rows.append(
                (
                    f"{n_adds:,} adds after a fresh load, {what}: mean [us] / p99 [us] / max [ms] / adds over 5 ms",
                    f"{r['mean_us']:,.1f} / {r['p99_us']:,.1f} / {r['max_ms']:,.2f} / {r['over_5ms']}",
                )
            )
            if not as_before:
                rows.append(
                    (f"JSON load of {size:,} in that process (heap built, gc.freeze) [s]", f"{r['load_s']:.2f}")
                )
    return rows


def hot_paths_child(size: int) -> None:
    """In a fresh process (whichever tfgrpo is on the path): the hot paths, as JSON."""
    config = GRPOConfig(max_library_size=size, max_experience_age=2_592_000)
    groups = make_groups(size // 3 + 5_000, seed=size)
    lib = TrainingFreeGRPO(config, seed=1, clock=Clock())
    fill(lib, iter(groups), size)
    add = timed_adds(lib, groups[-5_000:], 3.0)
    sample = per_call(lib.sample_experience, 50_000)
    del lib
    sqlite_add, sqlite_sample = bench_sqlite(min(size, 100_000), "normal")
    print(json.dumps({"add": add, "sample": sample, "sqlite_add": sqlite_add, "sqlite_sample": sqlite_sample}))


def bench_previous(size: int, rev: str, repeat: int) -> list[tuple[str, float, float]]:
    """The hot paths of this tree and of git revision `rev`, each in fresh processes, alternating
    (`repeat` times each; the median): what a change costs, measured in one run on one machine."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", rev, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        runs: dict[str, list[dict]] = {"now": [], rev: []}
        for _ in range(repeat):
            for name, src in (("now", root / "src"), (rev, Path(tmp) / "src")):
                env = {**os.environ, "PYTHONPATH": str(src)}
                out = subprocess.run(
                    [sys.executable, __file__, "--hot-paths-child", str(size)], env=env, capture_output=True, text=True
                )
                if out.returncode != 0:
                    raise RuntimeError(out.stderr)
                runs[name].append(json.loads(out.stdout))

    def median(name: str, key: str) -> float:
        return sorted(r[key] for r in runs[name])[len(runs[name]) // 2]

    sqlite_size = min(size, 100_000)
    return [
        (
            f"{size:,} | add_rollout_group (G=8, full, pruning) [us]",
            median("now", "add") * 1e6,
            median(rev, "add") * 1e6,
        ),
        (f"{size:,} | sample_experience [us]", median("now", "sample") * 1e6, median(rev, "sample") * 1e6),
        (
            f"{sqlite_size:,} | SQLite add, synchronous=normal [ms per group]",
            median("now", "sqlite_add") * 1e3,
            median(rev, "sqlite_add") * 1e3,
        ),
        (
            f"{sqlite_size:,} | sample_experience, written through to SQLite [us]",
            median("now", "sqlite_sample") * 1e6,
            median(rev, "sqlite_sample") * 1e6,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--no-reference-above", type=int, default=1_000_000)
    parser.add_argument("--files-only", action="store_true", help="only the JSON save/load rows")
    parser.add_argument("--after-load-only", action="store_true", help="only the adds after a fresh load")
    parser.add_argument("--adds", type=int, default=5_000, help="adds timed one by one after the fresh load")
    parser.add_argument("--after-load-child", nargs=3, metavar=("PATH", "SIZE", "ADDS"), help=argparse.SUPPRESS)
    parser.add_argument("--as-before", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--previous", metavar="REV", help="only the hot paths, beside those of git revision REV")
    parser.add_argument("--repeat", type=int, default=3, help="--previous: fresh processes per side (median)")
    parser.add_argument("--hot-paths-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hot_paths_child:
        hot_paths_child(args.hot_paths_child)
        return
    if args.previous:
        print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores\n")
        print(f"| size | measure | now | {args.previous} | now / {args.previous} |")
        print("| ---: | --- | ---: | ---: | ---: |")
        for size in args.sizes:
            for name, now, before in bench_previous(size, args.previous, args.repeat):
                print(f"| {name} | {now:,.2f} | {before:,.2f} | {now / before:.2f} |", flush=True)
        return
    if args.after_load_child:
        path, size, n_adds = args.after_load_child
        after_load_child(path, int(size), int(n_adds), args.as_before)
        return

    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores\n")
    print("| size | measure | tfgrpo | reference | reference / tfgrpo |")
    print("| ---: | --- | ---: | ---: | ---: |")
    if args.after_load_only:
        for size in args.sizes:
            for name, value in bench_after_load(size, args.adds):
                print(f"| {size:,} | {name} | {value} | - | - |", flush=True)
        return
    for size in [] if args.files_only else args.sizes:
        for name, ours, ref in bench_size(size, with_reference=size <= args.no_reference_above):
            ratio = f"{ref / ours:,.0f}x" if ref else "-"
            ref_text = f"{ref:,.1f}" if ref else "-"
            print(f"| {size:,} | {name} | {ours:,.2f} | {ref_text} | {ratio} |", flush=True)
        per_exp, raw, budget = bench_memory(size)
        print(
            f"| {size:,} | memory per experience [B] (raw text {raw:,.0f} B; target 2 x raw + 200 = {budget:,.0f} B)"
            f" | {per_exp:,.0f} | - | - |",
            flush=True,
        )
    largest = max(args.sizes)
    for name, value, _ in bench_files(largest):
        print(f"| {largest:,} | {name} | {value:,.2f} | - | - |", flush=True)
    sqlite_size = min(largest, 100_000)
    for durability in () if args.files_only else ("full", "normal"):
        add_s, sample_s = bench_sqlite(sqlite_size, durability)
        print(
            f"| {sqlite_size:,} | SQLite add, synchronous={durability} [ms per group] | {add_s * 1e3:,.2f} | - | - |",
            flush=True,
        )
    if not args.files_only:
        name = "sample_experience, written through to SQLite [us]"
        print(f"| {sqlite_size:,} | {name} | {sample_s * 1e6:,.2f} | - | - |")


if __name__ == "__main__":
    main()
