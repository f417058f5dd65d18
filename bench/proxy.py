"""What `tfgrpo serve` adds to a request: direct to a latency-only upstream vs through each server under
test, in the same run, with a library of --size experiences (lexical retrieval by default).

    python bench/proxy.py --size 1000000                 # 1 and 2 workers, 3 lexical shots over 1M experiences
    python bench/proxy.py --size 10000 --targets tfgrpo:1 tfgrpo:2 litellm      # beside LiteLLM's proxy
    python bench/proxy.py --size 1000000 --targets tfgrpo:1:0 tfgrpo:1:3        # what retrieval adds
    python bench/proxy.py --size 10000 --mode semantic   # semantic retrieval, query embedding included

Every server runs in its own process: the upstream (this file with --serve-upstream: a fixed answer
after --delay seconds, streamed as --pieces chunks when asked) and, one after the other, each target:
`tfgrpo serve` with WORKERS processes and SHOTS experiences per request, or LiteLLM's proxy (`litellm
--config`, one worker, no database, no auth) in front of the same upstream. Rows:
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
    """Seconds per request, direct and proxied, and ("cpu") the proxy's CPU seconds per proxied request (its
    processes' together)."""
    out: dict[str, list[float]] = {"direct": [], "proxy": []}
    async with session(4) as client:
        for url in (direct, proxy):  # warm up the connections (and the proxy's first retrieval)
            for _ in range(10):
                await one(client, url, prompt_of(rng.randrange(10**6), rng), stream)
        cpu = process_tree_cpu(proxy_pid)  # the direct requests in between cost the proxy nothing
        for _ in range(n):
            prompt = prompt_of(rng.randrange(10**6), rng)
            for name, url in (("direct", direct), ("proxy", proxy)):
                out[name].append((await one(client, url, prompt, stream))[0])
        out["cpu"] = [(process_tree_cpu(proxy_pid) - cpu) / n]
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


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every process under it (a supervisor and its workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        total = sum(root.cpu_times()[:2])
        for child in root.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def start_target(spec: str, args, direct: str, served: Path, work: Path) -> tuple[subprocess.Popen, str]:
    """A server under test in front of the upstream: `tfgrpo[:WORKERS[:SHOTS]]` or `litellm`."""
    port = free_port()
    log = open(work / f"{spec.replace(':', '-')}.log", "w")
    if spec == "litellm":
        config = work / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: latency\n    litellm_params:\n      model: openai/latency\n"
            f"      api_base: {direct}\n      api_key: none\n"
        )
        # (no database, no auth: the lightest LiteLLM there is)
        env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        }
        command = [args.litellm, "--config", str(config), "--port", str(port), "--num_workers", "1"]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_up(f"http://127.0.0.1:{port}/health/liveliness", process)
        return process, f"http://127.0.0.1:{port}/v1"
    _, *rest = spec.split(":")
    workers = rest[0] if rest else "1"
    shots = rest[1] if len(rest) > 1 else str(args.shots)
    options = ["--no-rollout-log"] if "nolog" in rest[2:] else []  # tfgrpo:W:S:nolog: without the rollout log
    tfgrpo = Path(sys.executable).with_name("tfgrpo")
    library = work / f"served-{spec.replace(':', '-')}.db"
    shutil.copy(served, library)
    if Path(f"{served}.index").exists():  # the saved retrieval index: the proxy starts without rebuilding it
        shutil.copy(f"{served}.index", f"{library}.index")
    process = subprocess.Popen(
        [str(tfgrpo), "-q", "serve", "--upstream", direct, "--library", str(library), "--port", str(port),
         "--lessons-every", "0", "--retrieval-mode", args.mode, "--shots", shots, "--workers", workers,
         "--min-relevance", str(args.min_relevance), *options],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_up(f"http://127.0.0.1:{port}/healthz", process)
    return process, f"http://127.0.0.1:{port}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="experiences in the library")
    parser.add_argument("--mode", default="lexical", choices=["lexical", "semantic", "hybrid"])
    parser.add_argument("--shots", type=int, default=3, help="experiences per request (0: the proxy without retrieval)")
    parser.add_argument("--min-relevance", type=float, default=0.0,
                        help="the proxy's --min-relevance (0: every request gets --shots experiences)")  # fmt: skip
    parser.add_argument("--targets", nargs="+", default=["tfgrpo:1", "tfgrpo:2"],
                        help="servers beside direct: tfgrpo[:WORKERS[:SHOTS[:nolog]]] or litellm")  # fmt: skip
    parser.add_argument("--litellm", default=shutil.which("litellm"), help="the litellm executable (litellm[proxy])")
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
    if "litellm" in args.targets and not args.litellm:
        raise SystemExit("the litellm target needs LiteLLM's proxy: pip install 'litellm[proxy]', or --litellm PATH")

    rng = random.Random(0)
    library = Path(args.library or Path(tempfile.gettempdir()) / f"tfgrpo-bench-proxy-{args.size}.db")
    if not library.exists():
        print(f"building a library of {args.size:,} experiences at {library} ...", flush=True)
        print(f"  built in {build_library(library, args.size):.1f} s", flush=True)
    if args.mode == "lexical" and args.shots > 0:
        save_lexical_index(library)
    work = Path(tempfile.mkdtemp(prefix="tfgrpo-bench-proxy-"))
    loads = [os.getloadavg()]
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream", str(up_port), "--delay", str(args.delay)]
    )  # fmt: skip
    direct = f"http://127.0.0.1:{up_port}/v1"
    rows: dict[tuple[str, str], float] = {}  # (measure, server) -> value; server "direct" or a target
    measures: list[str] = []

    def put(measure: str, server: str, value: float) -> None:
        if measure not in measures:
            measures.append(measure)
        rows[measure, server] = value

    try:
        wait_up(f"{direct}/models", upstream)
        for target in args.targets:
            process, url = start_target(target, args, direct, library, work)
            print(f"{target} up (library {args.size:,}, {args.mode} retrieval)", flush=True)
            tfgrpo = target != "litellm"
            try:
                if args.requests:
                    lat = run(latency(direct, url, args.requests, False, rng, process.pid))
                    for q, name in ((0.5, "latency p50 [ms]"), (0.99, "latency p99 [ms]")):
                        put(name, "direct", 1e3 * pct(lat["direct"], q))
                        put(name, target, 1e3 * pct(lat["proxy"], q))
                    added = [p - d for p, d in zip(lat["proxy"], lat["direct"])]
                    put("added per request p50 [ms]", target, 1e3 * statistics.median(added))
                    put("added per request p99 [ms]", target, 1e3 * pct(added, 0.99))
                    put("CPU per request, one at a time [ms]", target, 1e3 * lat["cpu"][0])
                    ttft = run(latency(direct, url, args.requests // 2, True, rng, process.pid))
                    put("first streamed token p50 [ms]", "direct", 1e3 * pct(ttft["direct"], 0.5))
                    put("first streamed token p50 [ms]", target, 1e3 * pct(ttft["proxy"], 0.5))
                    added = [p - d for p, d in zip(ttft["proxy"], ttft["direct"])]
                    put("first streamed token added p50 [ms]", target, 1e3 * statistics.median(added))
                # warm up: the retrieval index's postings are loaded as their terms are first searched
                ids: list[str] = run(throughput(url, 64, 256, rng))[1]
                for c in (int(x) for x in args.concurrency.split(",") if x):
                    total = max(4 * c, 512)
                    load_cpu = cpu_seconds(os.getpid()) + cpu_seconds(upstream.pid)  # the client's and the upstream's
                    direct_rps, _ = run(throughput(direct, c, total, rng))
                    load_cpu = (cpu_seconds(os.getpid()) + cpu_seconds(upstream.pid) - load_cpu) / total
                    cpu = process_tree_cpu(process.pid)
                    target_rps, new_ids = run(throughput(url, c, total, rng))
                    cpu = (process_tree_cpu(process.pid) - cpu) / len(new_ids)
                    ids += new_ids
                    put(f"throughput at {c} in flight [req/s]", "direct", direct_rps)
                    put(f"throughput at {c} in flight [req/s]", target, target_rps)
                    put(f"CPU per request at {c} in flight [ms]", target, 1e3 * cpu)
                    # What the cores allow whatever the server does: the client and the upstream spend `load_cpu`
                    # on every request either way, so a server costing `cpu` cannot pass cores / (load_cpu + cpu).
                    put(f"client + upstream CPU per direct request at {c} in flight [ms]", "direct", 1e3 * load_cpu)
                    put(f"most this CPU allows at {c} in flight on these cores [req/s]", target,
                        (os.cpu_count() or 1) / (load_cpu + cpu))  # fmt: skip
                if args.feedback and tfgrpo:
                    if len(ids) < args.feedback:  # completions to give feedback on
                        ids += run(throughput(url, 64, args.feedback - len(ids), rng))[1]
                    ids = ids[: args.feedback]
                    cpu = process_tree_cpu(process.pid)
                    rate = run(feedback_rate(url, ids))
                    put(f"feedback over HTTP, 64 in flight [per s] ({len(ids)})", target, rate)
                    put("CPU per feedback [ms]", target, 1e3 * (process_tree_cpu(process.pid) - cpu) / len(ids))
            finally:
                process.terminate()
                process.wait(120)
            loads.append(os.getloadavg())
            print({m: v for (m, server), v in rows.items() if server == target}, flush=True)
        if args.feedback:
            put(
                f"feedback, CompletionRecords in-process [per s] ({args.feedback})",
                "records",
                records_rate(args.feedback),
            )
    finally:
        upstream.terminate()
        upstream.wait(60)
    shutil.rmtree(work)  # kept when a row failed, for the servers' logs

    if ERRORS:
        print(f"requests sent again after a dropped connection: {ERRORS}")
    load = ", ".join(" / ".join(f"{x:.2f}" for x in la) for la in loads)
    print(f"\n{args.size:,} experiences, {args.mode} retrieval, {args.shots} shots (min relevance "
          f"{args.min_relevance}), upstream delay {args.delay * 1e3:.0f} ms, {os.cpu_count()} CPUs, load average "
          f"(1/5/15 min) at the start and after each server: {load}\n")  # fmt: skip
    servers = ["direct", *args.targets, *(["records"] if args.feedback else [])]
    print("| measure | " + " | ".join(servers) + " |")
    print("| --- |" + " --- |" * len(servers))
    for measure in measures:
        cells = []
        for server in servers:
            value = rows.get((measure, server))
            base = rows.get((measure, "direct"))
            ratio = f" ({value / base:.2f}x)" if value is not None and base and server != "direct" else ""
            cells.append("-" if value is None else f"{value:,.2f}{ratio}")
        print(f"| {measure} | " + " | ".join(cells) + " |")


def run(coroutine: typing.Coroutine[typing.Any, typing.Any, T]) -> T:
    """`coroutine`'s result, on uvloop when it is installed."""
    out: list[T] = []

    async def keep() -> None:
        out.append(await coroutine)

    event_loop(keep())
    return out[0]


if __name__ == "__main__":
    main()
