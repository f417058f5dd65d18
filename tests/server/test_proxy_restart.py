"""`tfgrpo serve` as a real subprocess: SIGTERM finishes the requests in flight and exits cleanly;
SIGKILL during a stream of feedback loses nothing that was acknowledged and counts nothing twice
after the restart (every group is learned exactly once)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from support.llm import free_port, wait_until
from support.proxy import Upstream
from tfgrpo.core.library import TrainingFreeGRPO

pytestmark = pytest.mark.slow  # proxies started (and restarted) as processes of their own


class ProxyProcess:
    def __init__(self, upstream: Upstream, library: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        main = "import sys; from tfgrpo.cli import main; sys.exit(main())"
        command = [sys.executable, "-c", main, "serve", "--upstream", upstream.url, "--library", str(library),
                   "--port", str(self.port), "--lessons-every", "0", "--shots", "0"]  # fmt: skip
        self.log = open(library.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._up, timeout=120, what="the proxy to answer /healthz")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the proxy exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def chat(self, content: str, **body) -> dict:
        payload = {"model": "scripted", "messages": [{"role": "user", "content": content}], **body}
        response = httpx.post(f"{self.url}/v1/chat/completions", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    def feedback(self, body: dict) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/feedback", json=body, timeout=60)

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(60)
        self.log.close()
        return code


def test_sigterm_finishes_in_flight_requests_and_keeps_their_records(upstream, tmp_path):
    library = tmp_path / "lib.db"
    proxy = ProxyProcess(upstream, library)
    try:
        done = proxy.chat("warm up", n=2)
        assert proxy.feedback({"id": done["id"], "rewards": [1, 0]}).json()["groups"] == [1]
        upstream.release.clear()
        upstream.hanging.clear()
        upstream.script.append("wait")
        answers: list = []
        client = threading.Thread(target=lambda: answers.append(proxy.chat("in flight", n=2)))
        client.start()
        assert upstream.hanging.wait(30)
        proxy.process.send_signal(signal.SIGTERM)  # while the request is still with the upstream
        upstream.release.set()
        client.join(60)
        assert proxy.process.wait(60) == -signal.SIGTERM  # (uvicorn re-raises the signal once it has shut down)
        proxy.log.close()
        assert '"event": "stopped"' in library.with_suffix(".log").read_text()
    finally:
        if proxy.process.poll() is None:
            proxy.process.kill()
    (answer,) = answers
    assert answer["id"].startswith("chatcmpl-tfgrpo-")

    again = ProxyProcess(upstream, library)
    try:
        late = again.feedback({"id": answer["id"], "rewards": [0, 1]})
        assert late.status_code == 200 and late.json()["groups"] == [2]
        assert again.feedback({"id": done["id"], "rewards": [1, 0]}).json()["duplicates"] == 2
        assert again.feedback({"id": done["id"], "rewards": [0, 1]}).status_code == 409
    finally:
        assert again.stop(signal.SIGTERM) == -signal.SIGTERM
    with TrainingFreeGRPO.open(library) as grpo:
        assert sorted((e.prompt, e.response) for e in grpo.experience_library) == [
            ("in flight", "ok-1"),
            ("warm up", "ok-0"),
        ]


def test_sigkill_during_feedback_loses_nothing_acknowledged_and_counts_nothing_twice(upstream, tmp_path):
    library = tmp_path / "lib.db"
    proxy = ProxyProcess(upstream, library)
    ids = [proxy.chat(f"question {i}", n=2)["id"] for i in range(60)]
    acknowledged: list[str] = []
    enough = threading.Event()

    def post_all() -> None:
        for i, cid in enumerate(ids):
            try:
                response = proxy.feedback({"id": cid, "rewards": [i % 2, 1 - i % 2]})
            except httpx.HTTPError:
                return  # the server was killed
            assert response.status_code == 200
            acknowledged.append(cid)
            if len(acknowledged) == 10:
                enough.set()

    poster = threading.Thread(target=post_all)
    poster.start()
    assert enough.wait(120)
    proxy.process.send_signal(signal.SIGKILL)
    proxy.process.wait(60)
    poster.join(60)
    proxy.log.close()
    assert 10 <= len(acknowledged) < len(ids)

    again = ProxyProcess(upstream, library)
    try:
        for i, cid in enumerate(ids):
            response = again.feedback({"id": cid, "rewards": [i % 2, 1 - i % 2]})
            assert response.status_code == 200
            if cid in acknowledged:
                assert response.json()["recorded"] == 0 and response.json()["duplicates"] == 2, cid
        stats = httpx.get(f"{again.url}/v1/libraries/lib", timeout=30).json()
    finally:
        assert again.stop(signal.SIGTERM) == -signal.SIGTERM
    assert stats["records"] == {"completions": 60, "feedback": 120, "groups": 60}
    assert stats["groups_learned"] == 60
    with TrainingFreeGRPO.open(library) as grpo:
        assert grpo.total_rollouts == 120 and grpo.library_size() == 60  # each group learned once
        assert grpo.progress["serve_group"] == 60
    with sqlite3.connect(library) as db:
        members = [json.loads(m)[0] for (m,) in db.execute("SELECT members FROM proxy_groups ORDER BY seq")]
    assert sorted(members) == sorted(ids)
