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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing
import urllib.request
from pathlib import Path
from typing import TypeVar

import aiohttp

T = TypeVar("T")

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


def _answer(n: int) -> bytes:
    choices = [{"index": i, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
               for i in range(n)]  # fmt: skip
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "latency", "choices": choices,
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()  # fmt: skip


_CHUNK = json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "latency",
                     "choices": [{"index": 0, "delta": {"content": "ok "}, "finish_reason": None}]})  # fmt: skip
_MODELS = json.dumps({"object": "list", "data": [{"id": "latency", "object": "model"}]}).encode()


class UpstreamProtocol(asyncio.Protocol):
    """A bare HTTP/1.1 OpenAI stand-in on asyncio's transport (no framework, no ASGI server), so that it
    costs next to nothing per request: "ok" after `delay`, or `pieces` streamed chunks `delay / pieces`
    apart (chunked transfer encoding). Keep-alive; requests on one connection are answered in order."""

    def __init__(self, delay: float, pieces: int) -> None:
        self.delay, self.pieces = delay, pieces
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
            self.handle(head.split(" ", 2)[1], body)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def respond(self, ctype: bytes, body: bytes) -> None:
        self.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype + b"\r\ncontent-length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip

    def handle(self, path: str, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        if path.endswith("/models"):
            self.respond(b"application/json", _MODELS)
            return
        request = json.loads(body or b"{}")
        if not request.get("stream"):
            loop.call_later(self.delay, self.respond, b"application/json", _answer(request.get("n") or 1))
            return
        self.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

        def piece(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        # the first chunk after `delay` (the time to first token), the others `delay / pieces` apart
        step = self.delay / self.pieces
        for i in range(self.pieces):
            loop.call_later(self.delay + step * i, self.write, piece(f"data: {_CHUNK}\n\n".encode()))
        loop.call_later(2 * self.delay, self.write, piece(b"data: [DONE]\n\n") + b"0\r\n\r\n")


def serve_upstream(port: int, delay: float, pieces: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: UpstreamProtocol(delay, pieces), "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    event_loop(main())


def event_loop(main) -> None:
    """Run `main` on uvloop when it is installed (uvicorn[standard] brings it), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# ---------------------------------------------------------------------------------------------- setup


def cpu_seconds(pid: int, main_thread: bool = False) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc), all its threads or its main
    thread's (the proxy's event loop) alone."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def save_lexical_index(library: Path) -> None:
    """The library's saved retrieval index beside it, with BM25 (what the proxy takes over at its first
    search instead of indexing every prompt again), unless a readable one is there already."""
    import warnings

    from tfgrpo import TrainingFreeGRPO
    from tfgrpo.retrieval import _snapshot as snapshot

    index = Path(f"{library}.index")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (an index of an older format is only rebuilt here)
        saved = snapshot.load(index)
    if saved is not None and saved.bm25 is not None:
        return
    started = time.perf_counter()
    lib = TrainingFreeGRPO.open(library)
    lib.enable_retrieval()
    lib.get_experiences_for_prompt("Task 0: warm up", k=1, mode="lexical")  # builds BM25 and saves it
    lib.close()
    print(f"  saved the lexical index at {index} in {time.perf_counter() - started:.1f} s", flush=True)


def wait_up(url: str, process: subprocess.Popen, timeout: float = 1800) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


# ---------------------------------------------------------------------------------------------- measuring
# The client is aiohttp on uvloop: at 256 in flight an httpx client cost more CPU than the proxy it measured.


def body(prompt: str, stream: bool = False) -> dict:
    return {"model": "latency", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16, "stream": stream}


def session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), timeout=aiohttp.ClientTimeout(total=600)
    )


async def one(client: aiohttp.ClientSession, url: str, prompt: str, stream: bool = False) -> tuple[float, str | None]:
    """Seconds to the whole answer (or to the first streamed content), and the completion id."""
    started = time.perf_counter()
    for attempt in range(3):
        try:
            async with client.post(f"{url}/chat/completions", json=body(prompt, stream)) as response:
                response.raise_for_status()
                if not stream:
                    return time.perf_counter() - started, (await response.json())["id"]
                first = None
                async for line in response.content:
                    if first is None and line.startswith(b"data:") and b'"content"' in line:
                        first = time.perf_counter() - started
                return typing.cast(float, first), None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):  # a kept-alive connection it closed
            ERRORS[url] = ERRORS.get(url, 0) + 1
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


ERRORS: dict[str, int] = {}
"""Per server, requests sent again after the connection dropped (reported with the table)."""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latency(
    direct: str, proxy: str, n: int, stream: bool, rng: random.Random, proxy_pid: int
) -> dict[str, list[float]]:
    """Seconds per request, direct and proxied, and ("cpu") the proxy's CPU seconds per proxied request."""
    out: dict[str, list[float]] = {"direct": [], "proxy": []}
    async with session(4) as client:
        for url in (direct, proxy):  # warm up the connections (and the proxy's first retrieval)
            for _ in range(10):
                await one(client, url, prompt_of(rng.randrange(10**6), rng), stream)
        cpu = cpu_seconds(proxy_pid)  # the direct requests in between cost the proxy nothing
        for _ in range(n):
            prompt = prompt_of(rng.randrange(10**6), rng)
            for name, url in (("direct", direct), ("proxy", proxy)):
                out[name].append((await one(client, url, prompt, stream))[0])
        out["cpu"] = [(cpu_seconds(proxy_pid) - cpu) / n]
    return out


async def throughput(url: str, concurrency: int, total: int, rng: random.Random) -> tuple[float, list[str]]:
    prompts = [prompt_of(rng.randrange(10**6), rng) for _ in range(total)]
    ids: list[str] = []
    async with session(concurrency) as client:
        queue = iter(prompts[: min(concurrency, 64)])

        async def worker() -> None:
            for prompt in queue:
                ids.append(typing.cast(str, (await one(client, url, prompt))[1]))

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm up: open connections
        queue = iter(prompts)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started), ids


async def feedback_rate(proxy: str, ids: list[str], concurrency: int = 64) -> float:
    async with session(concurrency) as client:
        queue = iter(ids)

        async def worker() -> None:
            for cid in queue:
                async with client.post(f"{proxy}/feedback", json={"id": cid, "reward": random.random()}) as response:
                    response.raise_for_status()
                    await response.read()

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
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for the latency rows (0: none)")
    parser.add_argument("--concurrency", default="64,256", help="in flight for the throughput rows ('': none)")
    parser.add_argument("--delay", type=float, default=0.05, help="upstream seconds per answer")
    parser.add_argument("--feedback", type=int, default=4000, help="feedback posts for the ingestion rows (0: none)")
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
    if args.mode == "lexical" and args.shots > 0:
        save_lexical_index(library)
    work = Path(tempfile.mkdtemp(prefix="tfgrpo-bench-proxy-"))
    served = work / "served.db"
    subprocess.run(["cp", str(library), str(served)], check=True)
    if Path(f"{library}.index").exists():  # the saved retrieval index: the proxy starts without rebuilding it
        subprocess.run(["cp", f"{library}.index", f"{served}.index"], check=True)

    loads = [os.getloadavg()]
    up_port, proxy_port = free_port(), free_port()
    processes = []
    try:
        processes.append(subprocess.Popen(
            [sys.executable, __file__, "--serve-upstream", str(up_port), "--delay", str(args.delay)]
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
        if args.requests:
            lat = run(latency(direct, proxy, args.requests, False, rng, processes[1].pid))
            rows += [("latency p50 [ms]", 1e3 * pct(lat["direct"], 0.5), 1e3 * pct(lat["proxy"], 0.5)),
                     ("latency p99 [ms]", 1e3 * pct(lat["direct"], 0.99), 1e3 * pct(lat["proxy"], 0.99))]  # fmt: skip
            added = [p - d for p, d in zip(lat["proxy"], lat["direct"])]
            rows.append(("added per request p50 [ms]", None, 1e3 * statistics.median(added)))
            rows.append(("added per request p99 [ms]", None, 1e3 * pct(added, 0.99)))
            rows.append(("proxy CPU per request, one at a time [ms]", None, 1e3 * lat["cpu"][0]))
            ttft = run(latency(direct, proxy, args.requests // 2, True, rng, processes[1].pid))
            added = [p - d for p, d in zip(ttft["proxy"], ttft["direct"])]
            rows.append(
                ("first streamed token p50 [ms]", 1e3 * pct(ttft["direct"], 0.5), 1e3 * pct(ttft["proxy"], 0.5))
            )
            rows.append(("first streamed token added p50 [ms]", None, 1e3 * statistics.median(added)))
            print(rows, flush=True)
        # warm up: the retrieval index's postings are loaded as their terms are first searched
        ids: list[str] = run(throughput(proxy, 64, 256, rng))[1]
        for c in (int(x) for x in args.concurrency.split(",") if x):
            total = max(4 * c, 512)
            load_cpu = cpu_seconds(os.getpid()) + cpu_seconds(processes[0].pid)  # the client's and the upstream's
            direct_rps, _ = run(throughput(direct, c, total, rng))
            load_cpu = (cpu_seconds(os.getpid()) + cpu_seconds(processes[0].pid) - load_cpu) / total
            cpu = cpu_seconds(processes[1].pid)
            proxy_rps, new_ids = run(throughput(proxy, c, total, rng))
            cpu = (cpu_seconds(processes[1].pid) - cpu) / len(new_ids)
            ids += new_ids
            rows.append((f"throughput at {c} in flight [req/s]", direct_rps, proxy_rps))
            rows.append((f"proxy CPU per request at {c} in flight [ms]", None, 1e3 * cpu))
            # What the cores allow whatever the proxy does: the client and the upstream spend `load_cpu` on
            # every request either way, so a proxy costing `cpu` cannot pass os.cpu_count() / (load_cpu + cpu).
            rows.append((f"client + upstream CPU per direct request at {c} in flight [ms]", None, 1e3 * load_cpu))
            rows.append((f"most any proxy of this CPU could reach at {c} in flight [req/s]", None,
                         (os.cpu_count() or 1) / (load_cpu + cpu)))  # fmt: skip
            print(rows[-4:], flush=True)
        if args.feedback:
            if len(ids) < args.feedback:  # completions to give feedback on
                ids += run(throughput(proxy, 64, args.feedback - len(ids), rng))[1]
            ids = ids[: args.feedback]
            cpu, loop_cpu = cpu_seconds(processes[1].pid), cpu_seconds(processes[1].pid, main_thread=True)
            rate = run(feedback_rate(proxy, ids))
            cpu, loop_cpu = (cpu_seconds(processes[1].pid) - cpu,
                             cpu_seconds(processes[1].pid, main_thread=True) - loop_cpu)  # fmt: skip
            rows.append((f"feedback over HTTP, 64 in flight [per s] ({len(ids)})", None, rate))
            rows.append(("proxy CPU per feedback [ms]", None, 1e3 * cpu / len(ids)))
            rows.append(("... of it on the event loop [ms]", None, 1e3 * loop_cpu / len(ids)))
            rows.append((f"feedback, CompletionRecords in-process [per s] ({args.feedback})", None,
                         records_rate(args.feedback)))  # fmt: skip
        loads.append(os.getloadavg())
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
    shutil.rmtree(work)  # kept when a row failed, for its proxy.log

    if ERRORS:
        print(f"requests sent again after a dropped connection: {ERRORS}")
    load = ", ".join(" / ".join(f"{x:.2f}" for x in la) for la in loads)
    print(f"\n{args.size:,} experiences, {args.mode} retrieval, {args.shots} shots, upstream delay "
          f"{args.delay * 1e3:.0f} ms, {os.cpu_count()} CPUs, load average (1/5/15 min) at start, end: "
          f"{load}\n")  # fmt: skip
    print("| measure | direct | through the proxy | proxy / direct |")
    print("| --- | --- | --- | --- |")
    for name, d, p in rows:
        ratio = f"{p / d:.2f}" if d else "-"
        print(f"| {name} | {'-' if d is None else f'{d:,.2f}'} | {p:,.2f} | {ratio} |")


def run(coroutine: typing.Coroutine[typing.Any, typing.Any, T]) -> T:
    """`coroutine`'s result, on uvloop when it is installed."""
    out: list[T] = []

    async def keep() -> None:
        out.append(await coroutine)

    event_loop(keep())
    return out[0]


if __name__ == "__main__":
    main()
