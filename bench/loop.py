"""Throughput of the training loop against an OpenAI-compatible server that answers after a fixed delay
(the latency-only server, in its own process): rollouts per second against the ideal
concurrency / latency, the loop's own CPU time per rollout, the server's, and how many requests the
server held on average (sampled every 0.1 s; the ideal holds all of them all the time).

    python bench/loop.py                       # concurrency 64 and 256, 2 s latency
    python bench/loop.py --concurrency 64 --latency 0.2
    python bench/loop.py --concurrency 256 1024 --fanout-only
    python bench/loop.py --concurrency 256 --fanout-only --profile loop.prof   # cProfile of the client's event loop
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tfgrpo import GRPOConfig, TrainingFreeGRPO
from tfgrpo.learn import ExampleUpdate
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import TrainConfig, train
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


class ServerSampler:
    """The latency server's requests in flight every `every` seconds (GET /stats), in a thread."""

    def __init__(self, url: str, every: float = 0.1) -> None:
        self.stats_url = url.removesuffix("/v1") + "/stats"
        self.every = every
        self.in_flight: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def stats(self) -> dict:
        with urllib.request.urlopen(self.stats_url, timeout=10) as response:
            return json.loads(response.read())

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.in_flight.append(self.stats()["in_flight"])

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(
    url: str, concurrency: int, latency: float, steps: int, native_n: bool, profile: str | None = None
) -> dict[str, float]:
    """Rollouts per second, the ideal, CPU milliseconds per rollout of this process and of the server,
    and the server's mean requests in flight. `concurrency` counts rollouts in flight: requests of one
    rollout each, or with `native_n` requests of n=G. `profile`: a cProfile of the backend's event loop
    (where the HTTP client runs) is written there."""
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
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        # Bench only: the profiler runs in the backend's private event-loop thread, where it is enabled.
        backend._runner.submit(_call(profiler.enable)).result()
    sampler = ServerSampler(url)
    with tempfile.TemporaryDirectory() as tmp:
        grpo = TrainingFreeGRPO.open(os.path.join(tmp, "lib.db"), GRPOConfig(group_size=G), seed=0)
        server_cpu = sampler.stats()["cpu_seconds"]
        cpu, wall = time.process_time(), time.perf_counter()
        with sampler:
            history = train(backend, samples, reward, [ExampleUpdate(grpo)], config)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        server_cpu = sampler.stats()["cpu_seconds"] - server_cpu
        grpo.close()
    if profiler is not None and profile:
        backend._runner.submit(_call(profiler.disable)).result()
        profiler.dump_stats(profile)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    backend.close()
    rollouts = sum(m.groups for m in history) * G
    in_flight = sampler.in_flight
    return {
        "rate": rollouts / wall,
        "ideal": concurrency / latency,
        "cpu_ms": cpu / rollouts * 1e3,
        "server_cpu_ms": server_cpu / rollouts * 1e3,
        "server_in_flight": (sum(in_flight) / len(in_flight) if in_flight else 0.0) * (G if native_n else 1),
    }


async def _call(function) -> None:
    function()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--latency", type=float, default=2.0, help="seconds the server waits per request (a typical rollout)"
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--fanout-only", action="store_true", help="only one request per rollout")
    parser.add_argument("--profile", help="write a cProfile of the client's event loop here (one run: one size)")
    args = parser.parse_args()
    server, url = start_server(args.latency)
    try:
        print(
            f"latency {args.latency} s per request, G={G}, {WAVES_PER_STEP} x the rollouts in flight per step, "
            f"SQLite library, {os.cpu_count()} cores\n"
        )
        print(
            "| rollouts in flight | requests | rollouts/s | ideal (in flight / latency) | share of ideal "
            "| loop CPU per rollout [ms] | server CPU per rollout [ms] | mean in flight at the server "
            "| load average (1 min, before / after) |"
        )
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for native_n in (False,) if args.fanout_only else (False, True):
            for concurrency in args.concurrency:
                load = os.getloadavg()[0]
                r = run(url, concurrency, args.latency, args.steps, native_n, args.profile)
                kind = f"n={G} per request" if native_n else "one rollout each"
                print(
                    f"| {concurrency:,} | {kind} | {r['rate']:,.1f} | {r['ideal']:,.1f} | {r['rate'] / r['ideal']:.1%} "
                    f"| {r['cpu_ms']:.2f} | {r['server_cpu_ms']:.2f} | {r['server_in_flight']:,.0f} "
                    f"| {load:.2f} / {os.getloadavg()[0]:.2f} |",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
