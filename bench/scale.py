"""Many processes on one library: groups committed per second with 1, 2, 4 and 16 writer processes, on
SQLite and on PostgreSQL, and how stale one process's view is of another's commits.

    python bench/scale.py                                  # both engines (a PostgreSQL server is started)
    python bench/scale.py --engines sqlite --writers 1 4   # quicker
    python bench/scale.py --postgres postgresql://user@host/db   # a server of your own (a new schema is used)

Throughput: the library is filled to its capacity (--size) first, so every group (G=8, about half of it
stored) also prunes; N writer processes, each with the library open, start at once and add groups for
--seconds; the row gives the groups committed per second (all writers), the ratio to one writer on the
same engine, each add's latency (p50 / p99, as the writers saw it) and the slowest and fastest writer's
share. Staleness: one process commits a group every 20 ms while another samples in a tight loop (as a
server injecting examples does, with the default `refresh_interval`); for each group, the time from its
commit to the first `sample_experience()` after which the reader's library holds it.

Prints a Markdown table (paste it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from library import WORDS, G  # noqa: E402  (the groups bench/library.py times, written by many processes)


def groups(seed: int):
    """Endless groups of 8 rollouts (~150-character prompts, ~300-character responses, 0/1 rewards)."""
    rng = random.Random(seed)
    i = 0
    while True:
        prompt = f"Task {seed}-{i}: " + " ".join(rng.choices(WORDS, k=25))
        responses = [" ".join(rng.choices(WORDS, k=50)) for _ in range(G)]
        rewards = [float(rng.random() < 0.5) for _ in range(G)]
        if min(rewards) == max(rewards):
            rewards[0] = 1.0 - rewards[0]
        yield list(zip([prompt] * G, responses)), rewards
        i += 1


def config(size: int):
    from tfgrpo import GRPOConfig

    return GRPOConfig(max_library_size=size, max_experience_age=2_592_000)


# -- child processes ----------------------------------------------------------------------------------------


def writer(target: str, seed: int, seconds: float) -> None:
    from tfgrpo import TrainingFreeGRPO

    lib = TrainingFreeGRPO.open(target)
    source = groups(seed)
    batch = [next(source) for _ in range(500)]  # made before the clock starts, used again and again
    print("ready", flush=True)
    start = float(sys.stdin.readline())  # the same moment for every writer
    time.sleep(max(0.0, start - time.time()))
    end, times = start + seconds, []
    for rollouts, rewards in itertools.cycle(batch):
        t = time.perf_counter()
        lib.add_rollout_group(rollouts, rewards)
        times.append(time.perf_counter() - t)
        if time.time() >= end:
            break
    lib.close()
    print(json.dumps({"groups": len(times), "latencies": times}), flush=True)


def stale_writer(target: str, n: int, every: float) -> None:
    from tfgrpo import TrainingFreeGRPO

    lib = TrainingFreeGRPO.open(target)
    print("ready", flush=True)
    sys.stdin.readline()
    committed = {}
    for k in range(n):
        # An advantage above every filled one (< 1): never the one evicted.
        (exp,) = lib.add_rollout_group([(f"stale {k}", "good"), (f"stale {k}", "bad")], [3.0, 0.0])
        committed[exp.id] = time.time()
        time.sleep(every)
    lib.close()
    print(json.dumps(committed), flush=True)


def stale_reader(target: str, seconds: float) -> None:
    from tfgrpo import TrainingFreeGRPO

    lib = TrainingFreeGRPO.open(target)
    next_id = lib._next_id  # what the writer's first group will get (nothing else writes meanwhile)
    print("ready", flush=True)
    sys.stdin.readline()
    seen, end = {}, time.time() + seconds
    while time.time() < end:
        lib.sample_experience()
        now = time.time()
        while lib._by_id.get(next_id) is not None:  # (no further catching up: what the draw saw)
            seen[next_id] = now
            next_id += 1
    lib.close()
    print(json.dumps(seen), flush=True)


# -- the parent -------------------------------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def fill(target: str, size: int) -> None:
    from tfgrpo import TrainingFreeGRPO

    with TrainingFreeGRPO.open(target, config(size)) as lib:
        source = groups(10**6)
        while lib.library_size() < size:
            lib.add_rollout_groups([next(source) for _ in range(200)])


def throughput(target: str, n: int, seconds: float) -> dict:
    children = [spawn("--writer", target, str(1000 + i), str(seconds)) for i in range(n)]
    for child in children:
        assert child.stdout.readline() == "ready\n"
    start = time.time() + 0.5
    for child in children:
        child.stdin.write(f"{start}\n")
        child.stdin.flush()
    results = [json.loads(child.stdout.readline()) for child in children]
    for child in children:
        child.wait()
    latencies = sorted(t for r in results for t in r["latencies"])
    counts = [r["groups"] for r in results]
    return {
        "per_s": sum(counts) / seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "fairness": min(counts) / max(counts),
    }


def staleness(target: str, n: int = 250, every: float = 0.02) -> list[float]:
    reader = spawn("--stale-reader", target, str(n * every + 2.0))
    writer_ = spawn("--stale-writer", target, str(n), str(every))
    for child in (reader, writer_):
        assert child.stdout.readline() == "ready\n"
    for child in (reader, writer_):
        child.stdin.write("go\n")
        child.stdin.flush()
    committed = json.loads(writer_.stdout.readline())
    seen = json.loads(reader.stdout.readline())
    for child in (reader, writer_):
        child.wait()
    return sorted((seen[i] - t) * 1e3 for i, t in committed.items() if i in seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4, 16])
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput row's duration")
    parser.add_argument("--size", type=int, default=10_000, help="the library's capacity, filled first")
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL to use instead of starting a server")
    parser.add_argument("--writer", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--stale-writer", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--stale-reader", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        return writer(args.writer[0], int(args.writer[1]), float(args.writer[2]))
    if args.stale_writer:
        return stale_writer(args.stale_writer[0], int(args.stale_writer[1]), float(args.stale_writer[2]))
    if args.stale_reader:
        return stale_reader(args.stale_reader[0], float(args.stale_reader[1]))

    import warnings

    from tfgrpo import TFGRPOWarning

    warnings.simplefilter("ignore", TFGRPOWarning)
    server = None
    tmp = tempfile.TemporaryDirectory()
    try:
        targets = {}
        if "sqlite" in args.engines:
            targets["SQLite"] = lambda name: os.path.join(tmp.name, f"{name}.db")
        if "postgresql" in args.engines:
            if args.postgres:
                base = args.postgres.split("?")[0]
            else:
                from pg_server import PostgresServer

                server = PostgresServer()
                base = server.url()
            run = os.getpid()
            targets["PostgreSQL"] = lambda name: f"{base}?schema=bench_{run}_{name}"
            # The same without waiting for each commit's WAL flush (libpq's `options`): a crash of the server
            # or machine may lose the last commits (never corrupting), like SQLite's synchronous=NORMAL.
            targets["PostgreSQL, synchronous_commit=off"] = lambda name: (
                f"{base}?schema=bench_{run}_{name}_async&options=-c%20synchronous_commit%3Doff"
            )
        print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores\n")
        print("| engine | writers | groups/s | vs 1 writer | add p50 / p99 [ms] | slowest / fastest writer |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for engine, make in targets.items():
            target = make("throughput")
            fill(target, args.size)
            one = None
            for n in args.writers:
                r = throughput(target, n, args.seconds)
                one = one or (r["per_s"] if n == 1 else None)
                ratio = f"{r['per_s'] / one:.2f}" if one else "-"
                print(
                    f"| {engine} | {n} | {r['per_s']:,.0f} | {ratio} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} "
                    f"| {r['fairness']:.2f} |",
                    flush=True,
                )
        print("\n| engine | staleness p50 [ms] | p99 [ms] | max [ms] | groups |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for engine, make in targets.items():
            target = make("staleness")
            fill(target, args.size)
            s = staleness(target)
            p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
            print(f"| {engine} | {statistics.median(s):.1f} | {p99:.1f} | {s[-1]:.1f} | {len(s)} |", flush=True)
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
