"""`tfgrpo learn-from-log` on large logs: rows per second and peak memory, each size in a fresh process.

    python bench/rollout_log.py                          # 100,000 and 1,000,000 lines
    python bench/rollout_log.py --sizes 10000 --window 500

Each size: a JSON-lines log is generated (seeded, so every run reads the same file) with every record shape
`learn-from-log` reads, mixed: `{"prompt", "response", "reward"}`, `{"messages", "response", "reward"}`, chat
messages ending in the assistant's answer, records with a "group" key, and the OpenAI request/response shape a
logging proxy writes (one choice with "reward", or 4 choices with "rewards"), plus one malformed line in 1,000.
Each prompt gets 4 records, spread over the lines of about 64 prompts in flight, so groups form within a
window. A fresh process then streams it through `learn_from_log` into a new SQLite library with the examples
strategy (no model is loaded: the examples strategy needs none) and the rollout log on, and reports its wall
time and its peak resident memory (`ru_maxrss`), beside the same process's memory before reading and the
baseline: the same file only read and parsed with `json.loads`, line by line, in the same run.

Prints a Markdown table (paste it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a sum of list string file read write parse return value error index count total loop "
    "order price item customer refund invoice ticket shipping account password reset delivery"
).split()
PER_PROMPT = 4
IN_FLIGHT = 64


def generate(path: Path, lines: int, seed: int) -> dict[str, int]:
    """`lines` records (see the module's docstring) into `path`; how many of each shape."""
    rng = random.Random(seed)
    shapes = {"prompt": 0, "messages": 0, "messages-last": 0, "group": 0, "openai-1": 0, "openai-4": 0, "bad": 0}
    in_flight: list[list] = []  # [prompt, shape, records left]
    made = 0
    with open(path, "w", encoding="utf-8") as f:
        while made < lines:
            while len(in_flight) < IN_FLIGHT:
                prompt = (
                    " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 24))) + f" #{made}-{rng.random():.6f}?"
                )
                shape = rng.choices(list(shapes)[:-1], weights=(4, 2, 1, 1, 2, 1))[0]
                in_flight.append([prompt, shape, 1 if shape == "openai-4" else PER_PROMPT])
            slot = rng.randrange(len(in_flight))
            prompt, shape, left = in_flight[slot]
            if left == 1:
                in_flight[slot] = in_flight[-1]
                in_flight.pop()
            else:
                in_flight[slot][2] -= 1
            made += 1
            if made % 1000 == 500:
                shapes["bad"] += 1
                f.write('{"prompt": "a line cut short", "respo\n')
                continue
            shapes[shape] += 1
            f.write(json.dumps(record(rng, prompt, shape, made)) + "\n")
    return shapes


def record(rng: random.Random, prompt: str, shape: str, line: int) -> dict:
    def answer() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))

    reward = float(rng.random() < 0.5)
    meta = {"user": f"u{rng.randrange(1000)}", "thumb": bool(reward)}
    stamp = 1_700_000_000 + line
    system = {"role": "system", "content": "You answer support questions."}
    if shape == "prompt":
        return {"prompt": prompt, "response": answer(), "reward": reward, "metadata": meta, "timestamp": stamp}
    if shape == "messages":
        return {"messages": [system, {"role": "user", "content": prompt}], "response": answer(), "reward": reward}
    if shape == "messages-last":
        messages = [system, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer()}]
        return {"messages": messages, "reward": reward, "timestamp": stamp}
    if shape == "group":
        return {"prompt": prompt, "response": answer(), "reward": reward, "group": f"g-{prompt[-16:]}"}
    request = {"model": "gpt-4o-mini", "messages": [system, {"role": "user", "content": prompt}]}
    n = 1 if shape == "openai-1" else 4
    choices = [
        {"index": i, "message": {"role": "assistant", "content": answer()}, "finish_reason": "stop"} for i in range(n)
    ]
    response = {
        "id": f"chatcmpl-{line}",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": choices,
        "usage": {"prompt_tokens": 40, "completion_tokens": 50 * n, "total_tokens": 40 + 50 * n},
    }
    if n == 1:
        return {"request": request, "response": response, "reward": reward}
    return {"request": request, "response": response, "rewards": [float(rng.random() < 0.5) for _ in range(n)]}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (KiB on Linux)


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    if args.child == "parse":
        before = peak_rss_mb()
        started = time.perf_counter()
        count = 0
        with open(args.log, "rb") as f:
            for line in f:
                try:
                    json.loads(line)
                except ValueError:
                    pass
                count += 1
        seconds = time.perf_counter() - started
        print(json.dumps({"lines": count, "seconds": seconds, "before_mb": before, "peak_mb": peak_rss_mb()}))
        return
    from tfgrpo import TrainingFreeGRPO
    from tfgrpo.learn import ExampleUpdate
    from tfgrpo.learn.rollout_log import RolloutLog
    from tfgrpo.loop.from_log import FromLogConfig, learn_from_log

    with TrainingFreeGRPO.open(args.library, seed=0) as grpo, RolloutLog(args.library) as log:
        before = peak_rss_mb()
        started = time.perf_counter()
        report = learn_from_log(
            args.log,
            [ExampleUpdate(grpo, "log")],
            FromLogConfig(window=args.window),
            rollout_log=log,
            show_progress=False,
        )
        seconds = time.perf_counter() - started
        figures = {
            "lines": report.lines,
            "rollouts": report.rollouts,
            "groups": report.groups,
            "bad": report.bad_count,
            "windows": report.windows,
            "seconds": seconds,
            "before_mb": before,
            "peak_mb": peak_rss_mb(),
            "library_size": grpo.library_size(),
            "capacity": grpo.config.max_library_size,
            "logged": len(log),
        }
    figures["db_mb"] = (
        sum(os.path.getsize(p) for p in Path(args.library).parent.glob(Path(args.library).name + "*")) / 2**20
    )
    print(json.dumps(figures))


def measure(kind: str, log: Path, library: Path | None, window: int) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--log", str(log), "--window", str(window)]
    if library is not None:
        command += ["--library", str(library)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        sys.exit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="lines of each log")
    p.add_argument("--window", type=int, default=1000, help="FromLogConfig.window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None, help="where the logs and libraries go (default: a temporary folder)")
    p.add_argument("--child", choices=["parse", "learn"], help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--library", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = []
        for size in args.sizes:
            log = Path(tmp) / f"log-{size}.jsonl"
            started = time.perf_counter()
            shapes = generate(log, size, args.seed)
            made = time.perf_counter() - started
            print(
                f"{size:,} lines ({log.stat().st_size / 2**20:,.0f} MiB) generated in {made:.0f} s: {shapes}",
                flush=True,
            )
            parse = measure("parse", log, None, args.window)
            learn = measure("learn", log, Path(tmp) / f"lib-{size}.db", args.window)
            print(json.dumps({"size": size, "parse": parse, "learn": learn}), flush=True)
            rows.append((size, log.stat().st_size, parse, learn))
            log.unlink()
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, window {args.window}; "
        f"load average at the end {os.getloadavg()[0]:.1f}\n"
    )
    print("| lines (MiB) | what | lines/s | vs parse only | peak RSS [MiB] | RSS before reading [MiB] | notes |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for size, nbytes, parse, learn in rows:
        base = parse["lines"] / parse["seconds"]
        rate = learn["lines"] / learn["seconds"]
        print(
            f"| {size:,} ({nbytes / 2**20:,.0f}) | json.loads of every line (baseline) | {base:,.0f} | 1.00x | "
            f"{parse['peak_mb']:,.0f} | {parse['before_mb']:,.0f} | |"
        )
        print(
            f"| {size:,} ({nbytes / 2**20:,.0f}) | learn-from-log, examples, rollout log on | {rate:,.0f} | "
            f"{rate / base:.2f}x | {learn['peak_mb']:,.0f} | {learn['before_mb']:,.0f} | "
            f"{learn['rollouts']:,} rollouts in {learn['groups']:,} groups, {learn['bad']:,} malformed lines skipped; "
            f"library {learn['library_size']:,} (capacity {learn['capacity']:,}); {learn['logged']:,} rows logged; "
            f"database {learn['db_mb']:,.0f} MiB; {learn['seconds']:,.0f} s |"
        )


if __name__ == "__main__":
    main()
