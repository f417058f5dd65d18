"""The latency-only server for benchmarks, and `run_model_server` proxying to it in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from latency_server import create_latency_app
from support.llm import UvicornThread, free_port, wait_until
from tfgrpo.llm import GenerationParams, get_backend

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_latency_server_under_bounded_concurrency():
    # Requests are held until 32 are in flight: the bound is reached whatever the machine's speed.
    app = create_latency_app(delay_s=0, text="fixed answer", gather=32)
    with UvicornThread(app) as server:
        with get_backend(f"openai:bench@{server.url}/v1", concurrency=32) as backend:
            groups = backend.generate([f"p{i}" for i in range(64)], GenerationParams(n=2, max_tokens=4))
            completions = backend.generate(["x"], GenerationParams(n=3), chat=False)
    assert len(groups) == 64 and all([g.text for g in group] == ["fixed answer"] * 2 for group in groups)
    assert [g.text for g in completions[0]] == ["fixed answer"] * 3
    assert app.state["requests"] == 65
    assert app.state["max_in_flight"] == 32  # reached, never more than the bound
    assert backend.usage.completion_tokens == 64 * 2 * 2 + 3 * 2


def _start(command: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode())
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=60, what=f"a server on port {port}")
    return process


@pytest.fixture
def latency_process():
    port = free_port()
    code = (
        f"import sys; sys.path.insert(0, {str(BENCH)!r}); "
        f"from latency_server import main; main(['--port', '{port}', '--delay', '0', '--text', 'pong'])"
    )
    process = _start([sys.executable, "-c", code], port)
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(10)


@pytest.mark.slow  # two servers as processes of their own
def test_serve_model_command_proxies_another_backend(latency_process):
    port = free_port()
    tfgrpo = shutil.which("tfgrpo") or str(Path(sys.executable).parent / "tfgrpo")
    command = [tfgrpo, "serve-model", "--model", f"openai:@{latency_process}", "--port", str(port)]
    process = _start([*command, "--model-name", "proxy"], port)
    try:
        with get_backend(f"http://127.0.0.1:{port}/v1") as backend:
            groups = backend.generate(["ping"], GenerationParams(n=2, max_tokens=4))
            assert backend.model_name == "proxy"
        assert [g.text for g in groups[0]] == ["pong", "pong"]
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert f"serving proxy (openai:@{latency_process}) at http://127.0.0.1:{port}/v1" in output
