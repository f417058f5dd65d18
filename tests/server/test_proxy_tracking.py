"""`tfgrpo serve --track`: each library's figures (experiences, lessons, groups, feedback, lift) as it learns
and the library file at shutdown, read back with the tracking tool's own reader; a failing tracker never
stops serving."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

import httpx
import pytest

from support.llm import free_port, wait_until
from support.proxy import Proxy, chat
from tfgrpo.server.config import ProxyConfig
from tfgrpo.tracking import open_tracker

CONFIG = ProxyConfig(shots=0, lessons_every=0)


def test_serve_figures_and_library_read_back_with_tensorboard(fresh, tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'tfgrpo[track]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = open_tracker("tensorboard", "serve-test", tmp_path / "runs")
    with tracker:
        with Proxy(fresh, tmp_path / "lib.db", CONFIG, tracker=tracker) as proxy, proxy.client() as client:
            for rewards in ([1.0, 0.0], [0.0, 1.0], [0.5, 0.5]):
                cid = chat(client, n=2).id
                assert proxy.post("/v1/feedback", {"id": cid, "rewards": rewards}).status_code == 200
    events = EventAccumulator(str(tracker.logdir))
    events.Reload()
    last = {tag: events.Scalars(tag)[-1] for tag in events.Tags()["scalars"]}
    assert last["lib/experiences"].value == 2  # the two groups with signal, one success each
    assert last["lib/groups_learned"].value == 3 and last["lib/groups_learned"].step == 3
    assert last["lib/records/feedback"].value == 6 and last["lib/records/completions"].value == 3
    assert last["lib/reward_with_library"].value == pytest.approx(0.5)
    assert (tracker.logdir / "lib.db").exists()  # the library as it was at shutdown


def test_a_failing_tracker_warns_and_serving_goes_on(fresh, tmp_path, caplog):
    class Broken:
        def log_metrics(self, *_):
            raise OSError("disk full")

    tracker = open_tracker(None, "serve-test", tmp_path)
    tracker._metrics = Broken().log_metrics  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="tfgrpo.tracking"):
        with Proxy(fresh, tmp_path / "lib.db", CONFIG, tracker=tracker) as proxy, proxy.client() as client:
            for _ in range(2):
                cid = chat(client, n=2).id
                assert proxy.post("/v1/feedback", {"id": cid, "rewards": [1.0, 0.0]}).status_code == 200
            assert len(proxy.library.experiences.experience_library) == 2
    assert tracker.active is False
    assert [r for r in caplog.records if "tracking stopped" in r.getMessage() and "disk full" in r.getMessage()]


@pytest.mark.slow  # `tfgrpo serve` in a process of its own, and mlflow
def test_serve_track_mlflow_from_the_command_line(fresh, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="pip install 'tfgrpo[track]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the tracker sets for itself, for this reader
    port = free_port()
    main = "import sys; from tfgrpo.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", main, "serve", "--upstream", fresh.url, "--library", str(tmp_path / "lib.db"),
               "--port", str(port), "--lessons-every", "0", "--shots", "0",
               "--track", "mlflow", "--track-dir", str(tmp_path / "runs")]  # fmt: skip
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=120, what="tfgrpo serve to answer /healthz")
        body = {"model": "scripted", "n": 2, "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
        cid = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30).json()["id"]
        feedback = {"id": cid, "rewards": [1.0, 0.0]}
        assert httpx.post(f"http://127.0.0.1:{port}/v1/feedback", json=feedback, timeout=30).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down
        assert process.wait(timeout=120) == -signal.SIGTERM, (tmp_path / "serve.log").read_text()
        log.close()
    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tfgrpo").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["command"] == "serve"
    assert run.data.metrics["lib/experiences"] == 1 and run.data.metrics["lib/records/feedback"] == 2
    assert "lib.db" in {a.path for a in client.list_artifacts(run.info.run_id)}
