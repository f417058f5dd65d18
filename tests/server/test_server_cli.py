"""`tfgrpo serve-model --api-key ... --max-n ...` as a real subprocess, in front of a stand-in upstream
(an `openai:` backend spec, so no model has to load): the flags reach the server."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from support.llm import StandIn, chat_reply, free_port, wait_until


async def answer(index: int, path: str, body: dict):
    return chat_reply(["from upstream"] * (body.get("n") or 1))


@pytest.mark.slow  # serve-model as a process of its own
def test_serve_model_flags_reach_the_server(tmp_path):
    port = free_port()
    with StandIn(answer) as upstream:
        main = "import sys; from tfgrpo.cli import main; sys.exit(main())"
        command = [sys.executable, "-c", main, "serve-model", "--model", f"openai:stand@{upstream.url}"]
        command += ["--port", str(port), "--max-n", "2"]
        env = {**os.environ, "TFGRPO_API_KEY": "k3y"}
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            try:
                url = f"http://127.0.0.1:{port}"

                def up() -> bool:
                    assert proc.poll() is None, proc.stdout.read()
                    try:
                        return httpx.get(f"{url}/health", timeout=5).status_code == 200
                    except httpx.TransportError:
                        return False

                wait_until(up, timeout=120, what="serve-model to start")
                chat = {"messages": [{"role": "user", "content": "hi"}]}
                assert httpx.post(f"{url}/v1/chat/completions", json=chat).status_code == 401
                key = {"authorization": "Bearer k3y"}
                over = httpx.post(f"{url}/v1/chat/completions", json={**chat, "n": 3}, headers=key)
                assert over.status_code == 400 and "--max-n" in over.json()["error"]["message"]
                ok = httpx.post(f"{url}/v1/chat/completions", json={**chat, "n": 2}, headers=key, timeout=60)
                assert ok.status_code == 200, ok.text
                assert [c["message"]["content"] for c in ok.json()["choices"]] == ["from upstream"] * 2
            finally:
                proc.terminate()
                proc.wait(30)
