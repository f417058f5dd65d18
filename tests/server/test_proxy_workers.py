"""`tfgrpo serve --workers 2`: two processes on one port and one library. A completion served by one worker
takes its feedback through the other; every group is formed and learned once, whichever workers its
requests and rewards went through; /metrics and /lift answer for the deployment; a worker SIGKILLed
mid-load loses nothing acknowledged, the other keeps serving and a new one takes its place; SIGTERM to the
supervisor drains every worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from support.llm import wait_until
from support.proxy import Deployment
from tfgrpo.core.library import TrainingFreeGRPO

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # a supervisor and its worker processes, started for each test


def stored(library: Path) -> tuple[list[tuple[str, str]], int, dict]:
    """(prompt, response) of every experience, the groups recorded, and the library's progress."""
    with TrainingFreeGRPO.open(library) as grpo:
        experiences = sorted((e.prompt, e.response) for e in grpo.experience_library)
        progress = dict(grpo.progress or {})
    with sqlite3.connect(library) as db:
        groups = db.execute("SELECT COUNT(*) FROM proxy_groups").fetchone()[0]
    return experiences, groups, progress


def test_completions_and_feedback_through_either_worker_learn_each_group_once(upstream, tmp_path):
    library = tmp_path / "lib.db"
    deployment = Deployment(upstream, library, log=library.with_suffix(".log"))
    try:
        a, b = deployment.workers
        expected = []
        for i in range(6):
            served_by, rewarded_by = (a, b) if i % 2 == 0 else (b, a)
            # n = 2: one request, its rewards through the other worker
            answer = deployment.chat(served_by, f"What is {i} + {i}?", n=2)
            ack = deployment.feedback(rewarded_by, {"id": answer["id"], "rewards": [1, 0]})
            assert len(ack["groups"]) == 1
            expected.append((f"What is {i} + {i}?", "ok-0"))
            # n = 1: two completions of one prompt, from both workers, rewarded through both
            first = deployment.chat(a, f"Name {i}.")
            second = deployment.chat(b, f"Name {i}.")
            assert deployment.feedback(b, {"id": first["id"], "reward": 1.0})["groups"] == []
            assert len(deployment.feedback(a, {"id": second["id"], "reward": 0.0})["groups"]) == 1
            expected.append((f"Name {i}.", "ok-0"))
            with sqlite3.connect(library) as db:  # each group was in the library before its feedback's 200
                assert db.execute("SELECT COUNT(*) FROM experiences").fetchone()[0] == len(expected)
        # Any worker answers for the whole deployment.
        for worker in (a, b):
            lift = deployment.clients[worker].get("/v1/libraries/lib/lift").json()
            assert lift["with_library"]["n"] == 6 + 12
            stats = deployment.clients[worker].get("/v1/libraries/lib").json()
            assert stats["records"] == {"completions": 18, "feedback": 24, "groups": 12}  # (rewarded choices)
            metrics = deployment.clients[worker].get("/metrics").text
            assert 'tfgrpo_feedback_total{library="lib",status="200"} 18.0' in metrics
        assert deployment.stop() in (0, -signal.SIGTERM)
    finally:
        if deployment.process.poll() is None:
            deployment.process.kill()
    experiences, groups, progress = stored(library)
    assert experiences == sorted(expected)  # every group learned once
    assert groups == 12 and progress["serve_group"] == 12


def test_a_worker_killed_mid_load_loses_nothing_acknowledged(upstream, tmp_path):
    library = tmp_path / "lib.db"
    deployment = Deployment(upstream, library, log=library.with_suffix(".log"))
    acknowledged: list[str] = []
    try:
        a, b = deployment.workers
        stop = threading.Event()
        errors: list[str] = []

        def load(worker: int) -> None:
            """Requests and feedback through one worker's connection until told to stop (or it dies)."""
            client = httpx.Client(base_url=deployment.url, timeout=60)
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    body = {"model": "m", "messages": [{"role": "user", "content": f"{worker}-{i}?"}], "n": 2}
                    answer = client.post("/v1/chat/completions", json=body).json()
                    ack = client.post("/v1/feedback", json={"id": answer["id"], "rewards": [1, 0]})
                    if ack.status_code == 200:
                        acknowledged.append(answer["id"])
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    errors.append(repr(exc))
                    client.close()
                    client = httpx.Client(base_url=deployment.url, timeout=60)
            client.close()

        loaders = [threading.Thread(target=load, args=(w,)) for w in (a, b)]
        for thread in loaders:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 10, timeout=120, what="some feedback acknowledged")
        with sqlite3.connect(library) as db:  # the worker that learns: the harder one to lose
            (holder,) = db.execute("SELECT holder FROM proxy_leases").fetchone()
        a = int(holder.split(":")[1])
        assert a in deployment.workers
        os.kill(a, signal.SIGKILL)
        seen = len(acknowledged)
        wait_until(lambda: len(acknowledged) >= seen + 10, timeout=120, what="serving after the kill")
        # The supervisor starts a new worker in the killed one's place.
        wait_until(lambda: deployment.connect(2) and a not in deployment.clients or len(deployment.clients) > 2,
                   timeout=120, what="a new worker")  # fmt: skip
        stop.set()
        for thread in loaders:
            thread.join(120)
        assert deployment.stop() in (0, -signal.SIGTERM)
    finally:
        if deployment.process.poll() is None:
            deployment.process.kill()
    experiences, groups, progress = stored(library)
    with sqlite3.connect(library) as db:
        rewarded = {row[0] for row in db.execute("SELECT DISTINCT completion_id FROM proxy_feedback")}
        members = [json.loads(m) for (m,) in db.execute("SELECT members FROM proxy_groups")]
    assert set(acknowledged) <= rewarded  # nothing acknowledged is lost
    assert sorted(m for group in members for m in group) == sorted({m for group in members for m in group})
    assert progress["serve_group"] == groups  # every group formed is learned (at shutdown at the latest)
    assert len(experiences) == groups  # once each: one better-than-average choice per group


def test_sigterm_to_the_supervisor_drains_every_worker(upstream, tmp_path):
    library = tmp_path / "lib.db"
    deployment = Deployment(upstream, library, log=library.with_suffix(".log"))
    try:
        a, _ = deployment.workers
        upstream.release.clear()
        upstream.hanging.clear()
        upstream.script.append("wait")
        answers: list = []
        client = threading.Thread(target=lambda: answers.append(deployment.chat(a, "in flight", n=2)))
        client.start()
        assert upstream.hanging.wait(60)
        deployment.process.send_signal(signal.SIGTERM)  # while the request is still with the upstream
        upstream.release.set()
        client.join(120)
        assert answers and answers[0]["choices"]
        deployment.process.wait(120)
        deployment.log.close()
    finally:
        if deployment.process.poll() is None:
            deployment.process.kill()
    with sqlite3.connect(library) as db:
        assert db.execute("SELECT COUNT(*) FROM proxy_completions").fetchone()[0] == 1
