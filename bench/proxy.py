"""What `tfgrpo serve` adds to a request: direct to a latency-only upstream vs through the proxy, in the
same run, with a library of --size experiences (lexical retrieval by default).

    python bench/proxy.py --size 1000000                 # the issue's figures (builds the library once)
    python bench/proxy.py --size 10000 --mode semantic   # semantic retrieval, query embedding included

Every server runs in its own process: the upstream (this file with --serve-upstream: a fixed answer
after --delay seconds, streamed as --pieces chunks when asked) and the proxy (`tfgrpo serve`). Rows:
- latency: one request at a time, alternating direct and proxied, p50 and p99, and what the proxy adds;
- time to first streamed token, the same way;
- throughput at each --concurrency (requests per second, proxy / direct);
- durable feedback ingestion: POST /v1/feedback at 64 in flight (each one committed before its 200),
  and the records' own write path in this process (`CompletionRecords.feedback`, group commit).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from latency_server import read_body, serve_lifespan  # beside this file

_SYLLABLES = "ka lo mi ne ru ta vo si pe da gu fi ho ze ba".split()
VOCABULARY = sorted({a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES})
"""3,375 made-up words, drawn by a Zipf law (the k-th most common word has weight 1/k), as in real text:
a few words are in most prompts, most words in few."""
_CUMULATIVE = list(itertools.accumulate(1 / (k + 1) for k in range(len(VOCABULARY))))


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(VOCABULARY, cum_weights=_CUMULATIVE, k=n))


def prompt_of(i: int, rng: random.Random) -> str:
    return f"Task {i}: {text(rng, 12)}"


# ---------------------------------------------------------------------------------------------- the upstream


def upstream_app(delay: float, pieces: int):
    """A bare ASGI OpenAI stand-in: answers "ok" after `delay` (streamed: `pieces` chunks)."""

    async def send_json(send, payload: dict) -> None:
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = await read_body(receive)
        if scope["path"] == "/v1/models":
            await send_json(send, {"object": "list", "data": [{"id": "latency", "object": "model"}]})
            return
        request = json.loads(body or b"{}")
        n = request.get("n") or 1
        await asyncio.sleep(delay)
        if not request.get("stream"):
            choices = [{"index": i, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                       for i in range(n)]  # fmt: skip
            await send_json(send, {"id": "x", "object": "chat.completion", "created": 0, "model": "latency",
                                   "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                                 "total_tokens": 2}})  # fmt: skip
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for _ in range(pieces):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "latency",
                     "choices": [{"index": 0, "delta": {"content": "ok "}, "finish_reason": None}]}  # fmt: skip
            await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                        "more_body": True})  # fmt: skip
            await asyncio.sleep(delay / pieces)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    return app


def serve_upstream(port: int, delay: float, pieces: int) -> None:
    import uvicorn

    uvicorn.run(upstream_app(delay, pieces), host="127.0.0.1", port=port, log_level="warning", backlog=4096)


# ---------------------------------------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_library(path: Path, size: int, seed: int = 0) -> float:
    """A library of `size` experiences (groups of 8, half above the mean) through the bulk update
    `add_rollout_groups`, written once with `save_to_file`. Returns the seconds it took."""
    from tfgrpo import GRPOConfig, TrainingFreeGRPO

    started = time.perf_counter()
    rng = random.Random(seed)
    lib = TrainingFreeGRPO(GRPOConfig(max_library_size=max(size, 1000), max_experience_age=10**9))
    i = 0
    while lib.library_size() < size:
        batch = []
        for _ in range(1000):
            prompt = prompt_of(i, rng)
            rewards = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
            batch.append(([(prompt, text(rng, 20)) for _ in range(8)], rewards, None))
            i += 1
        lib.add_rollout_groups(batch)
    lib.save_to_file(path)
    return time.perf_counter() - started


def wait_up(url: str, process: subprocess.Popen, timeout: float = 1800) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


# ---------------------------------------------------------------------------------------------- measuring


def body(prompt: str, stream: bool = False) -> dict:
    return {"model": "latency", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16, "stream": stream}


async def one(client: httpx.AsyncClient, url: str, prompt: str, stream: bool = False) -> tuple[float, str | None]:
    """Seconds to the whole answer (or to the first streamed content), and the completion id."""
    started = time.perf_counter()
    if not stream:
        for attempt in range(3):
            try:
                response = await client.post(f"{url}/chat/completions", json=body(prompt))
                break
            except (httpx.ReadError, httpx.RemoteProtocolError):  # a kept-alive connection the server closed
                ERRORS[url] = ERRORS.get(url, 0) + 1
                if attempt == 2:
                    raise
        response.raise_for_status()
        return time.perf_counter() - started, response.json()["id"]
    first = None
    async with client.stream("POST", f"{url}/chat/completions", json=body(prompt, True)) as response:
        async for line in response.aiter_lines():
            if first is None and line.startswith("data:") and '"content"' in line:
                first = time.perf_counter() - started
    return first, None


ERRORS: dict[str, int] = {}
"""Per server, requests sent again after the connection dropped (reported with the table)."""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latency(direct: str, proxy: str, n: int, stream: bool, rng: random.Random) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"direct": [], "proxy": []}
    async with httpx.AsyncClient(timeout=120) as client:
        for url in (direct, proxy):  # warm up the connections (and the proxy's first retrieval)
            for _ in range(10):
                await one(client, url, prompt_of(rng.randrange(10**6), rng), stream)
        for _ in range(n):
            prompt = prompt_of(rng.randrange(10**6), rng)
            for name, url in (("direct", direct), ("proxy", proxy)):
                out[name].append((await one(client, url, prompt, stream))[0])
    return out


async def throughput(url: str, concurrency: int, total: int, rng: random.Random) -> tuple[float, list[str]]:
    prompts = [prompt_of(rng.randrange(10**6), rng) for _ in range(total)]
    ids: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        queue = iter(prompts)

        async def worker() -> None:
            for prompt in queue:
                ids.append((await one(client, url, prompt))[1])

        await asyncio.gather(*(worker() for _ in range(min(concurrency, 8))))  # warm up
        queue = iter(prompts)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started), ids


async def feedback_rate(proxy: str, ids: list[str], concurrency: int = 64) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        queue = iter(ids)

        async def worker() -> None:
            for cid in queue:
                response = await client.post(f"{proxy}/feedback", json={"id": cid, "reward": random.random()})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(ids) / (time.perf_counter() - started)


def records_rate(n: int) -> float:
    """Feedback through `CompletionRecords` directly: 64 threads, each waiting for its commit."""
    from concurrent.futures import ThreadPoolExecutor

    from tfgrpo.server.records import Completion, CompletionRecords

    with tempfile.TemporaryDirectory() as tmp:
        records = CompletionRecords(Path(tmp) / "r.db")
        ids = [f"c{i}" for i in range(n)]
        for start in range(0, n, 1000):
            futures = [records.add(Completion(c, f"prompt {c}", ["ok"])) for c in ids[start : start + 1000]]
            [f.result() for f in futures]
        started = time.perf_counter()
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(lambda c: records.feedback(c, {0: 1.0}).result(), ids))
        rate = n / (time.perf_counter() - started)
        records.close()
    return rate


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="experiences in the library")
    parser.add_argument("--mode", default="lexical", choices=["lexical", "semantic", "hybrid"])
    parser.add_argument("--shots", type=int, default=3, help="experiences per request (0: the proxy without retrieval)")
    parser.add_argument("--library", default=None, help="library file (default: a cached one in the temp dir)")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for the latency rows")
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--delay", type=float, default=0.05, help="upstream seconds per answer (throughput rows)")
    parser.add_argument("--feedback", type=int, default=4000, help="feedback posts for the ingestion row")
    parser.add_argument("--serve-upstream", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pieces", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream is not None:
        serve_upstream(args.serve_upstream, args.delay, args.pieces)
        return

    rng = random.Random(0)
    library = Path(args.library or Path(tempfile.gettempdir()) / f"tfgrpo-bench-proxy-{args.size}.db")
    if not library.exists():
        print(f"building a library of {args.size:,} experiences at {library} ...", flush=True)
        print(f"  built in {build_library(library, args.size):.1f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="tfgrpo-bench-proxy-"))
    served = work / "served.db"
    subprocess.run(["cp", str(library), str(served)], check=True)

    up_port, proxy_port = free_port(), free_port()
    processes = []
    try:
        for delay, port in ((args.delay, up_port),):
            processes.append(subprocess.Popen(
                [sys.executable, __file__, "--serve-upstream", str(port), "--delay", str(delay)]
            ))  # fmt: skip
        direct = f"http://127.0.0.1:{up_port}/v1"
        wait_up(f"{direct}/models", processes[0])
        tfgrpo = Path(sys.executable).with_name("tfgrpo")
        processes.append(subprocess.Popen(
            [str(tfgrpo), "-q", "serve", "--upstream", direct, "--library", str(served), "--port", str(proxy_port),
             "--lessons-every", "0", "--retrieval-mode", args.mode, "--shots", str(args.shots)],
            stderr=open(work / "proxy.log", "w"),
        ))  # fmt: skip
        proxy = f"http://127.0.0.1:{proxy_port}/v1"
        startup = wait_up(f"http://127.0.0.1:{proxy_port}/healthz", processes[1])
        print(f"proxy up in {startup:.1f} s (library {args.size:,}, {args.mode} retrieval)", flush=True)

        rows = []
        lat = asyncio.run(latency(direct, proxy, args.requests, False, rng))
        rows += [("latency p50 [ms]", 1e3 * pct(lat["direct"], 0.5), 1e3 * pct(lat["proxy"], 0.5)),
                 ("latency p99 [ms]", 1e3 * pct(lat["direct"], 0.99), 1e3 * pct(lat["proxy"], 0.99))]  # fmt: skip
        added = [p - d for p, d in zip(lat["proxy"], lat["direct"])]
        rows.append(("added per request p50 / p99 [ms]", 1e3 * statistics.median(added), 1e3 * pct(added, 0.99)))
        ttft = asyncio.run(latency(direct, proxy, args.requests // 2, True, rng))
        rows.append(("first streamed token p50 [ms]", 1e3 * pct(ttft["direct"], 0.5), 1e3 * pct(ttft["proxy"], 0.5)))
        print(rows, flush=True)
        ids: list[str] = []
        for c in (int(x) for x in args.concurrency.split(",")):
            total = max(4 * c, 512)
            direct_rps, _ = asyncio.run(throughput(direct, c, total, rng))
            proxy_rps, new_ids = asyncio.run(throughput(proxy, c, total, rng))
            ids += new_ids
            rows.append((f"throughput at {c} in flight [req/s]", direct_rps, proxy_rps))
            print(rows[-1], flush=True)
        ids = ids[: args.feedback]
        rate = asyncio.run(feedback_rate(proxy, ids))
        rows.append((f"feedback over HTTP, 64 in flight [per s] ({len(ids)})", None, rate))
        rows.append((f"feedback, CompletionRecords in-process [per s] ({args.feedback})", None,
                     records_rate(args.feedback)))  # fmt: skip
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)

    if ERRORS:
        print(f"requests sent again after a dropped connection: {ERRORS}")
    print(f"\n{args.size:,} experiences, {args.mode} retrieval, {args.shots} shots, upstream delay "
          f"{args.delay * 1e3:.0f} ms (latency rows: the same), {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| measure | direct | through the proxy | proxy / direct |")
    print("| --- | --- | --- | --- |")
    for name, d, p in rows:
        ratio = f"{p / d:.2f}" if d else "-"
        print(f"| {name} | {'-' if d is None else f'{d:,.2f}'} | {p:,.2f} | {ratio} |")


if __name__ == "__main__":
    main()
