"""Throughput of the training loop against an OpenAI-compatible server that answers after a fixed delay
(the latency-only server, in its own process): rollouts per second against the ideal
concurrency / latency, and the loop's own CPU time per rollout.

    python bench/loop.py                       # concurrency 64 and 256, 2 s latency
    python bench/loop.py --concurrency 64 --latency 0.2
    python bench/loop.py --concurrency 256 1024 --fanout-only
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tfgrpo import GRPOConfig, TrainingFreeGRPO
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import ExampleUpdate, TrainConfig, train
from tfgrpo.rewards import FunctionReward

G = 8
WAVES_PER_STEP = 4  # each step sends 4 x concurrency requests, so the pool stays full within a step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("latency_server.py")),
            "--delay",
            str(latency),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return server, url + "/v1"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the latency server did not start")


def run(url: str, concurrency: int, latency: float, steps: int, native_n: bool) -> tuple[float, float, float]:
    """(rollouts per second, ideal rollouts per second, CPU milliseconds per rollout). `concurrency`
    counts rollouts in flight: requests of one rollout each, or with `native_n` requests of n=G."""
    batch = WAVES_PER_STEP * concurrency // G
    samples = [{"id": str(i), "prompt": f"What is {i} + {i + 1}?", "answer": 2 * i + 1} for i in range(batch * steps)]
    rng = random.Random(0)
    reward = FunctionReward(lambda prompt, response, sample: float(rng.random() < 0.5), name="coin")
    config = TrainConfig(batch_size=batch, group_size=G, shots=2, chat=False, max_tokens=16, seed=0, concurrency=batch)
    backend = OpenAIBackend(
        url,
        model="latency",
        concurrency=concurrency // G if native_n else concurrency,
        mode="completions",
        n_strategy="native" if native_n else "fanout",
    )
    backend.generate(["warm-up"])  # connect once, outside the measurement
    with tempfile.TemporaryDirectory() as tmp:
        grpo = TrainingFreeGRPO.open(os.path.join(tmp, "lib.db"), GRPOConfig(group_size=G), seed=0)
        cpu, wall = time.process_time(), time.perf_counter()
        history = train(backend, samples, reward, [ExampleUpdate(grpo)], config)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        grpo.close()
    backend.close()
    rollouts = sum(m.groups for m in history) * G
    return rollouts / wall, concurrency / latency, cpu / rollouts * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--latency", type=float, default=2.0, help="seconds the server waits per request (a typical rollout)"
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--fanout-only", action="store_true", help="only one request per rollout")
    args = parser.parse_args()
    server, url = start_server(args.latency)
    try:
        print(
            f"latency {args.latency} s per request, G={G}, {WAVES_PER_STEP} x the rollouts in flight per step, "
            f"SQLite library, {os.cpu_count()} cores\n"
        )
        print(
            "| rollouts in flight | requests | rollouts/s | ideal (in flight / latency) | share of ideal "
            "| loop CPU per rollout [ms] |"
        )
        print("| ---: | --- | ---: | ---: | ---: | ---: |")
        for native_n in (False,) if args.fanout_only else (False, True):
            for concurrency in args.concurrency:
                rate, ideal, cpu_ms = run(url, concurrency, args.latency, args.steps, native_n)
                kind = f"n={G} per request" if native_n else "one rollout each"
                print(
                    f"| {concurrency} | {kind} | {rate:,.1f} | {ideal:,.1f} | {rate / ideal:.1%} | {cpu_ms:.2f} |",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
