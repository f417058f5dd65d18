"""`--executor ray://HOST:PORT`: a cluster of two nodes, each its own `ray start` process (1 CPU each),
started and stopped here; the driver (this process) joins it through Ray Client. The last test takes the
cluster away in the middle of a step."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tfgrpo.core.library import TrainingFreeGRPO
from tfgrpo.errors import ExecutorError
from tfgrpo.executors import ExecutorConfig, open_executor
from tfgrpo.learn import ExampleUpdate
from tfgrpo.loop import TrainConfig
from tfgrpo.loop.training import train
from tfgrpo.rewards import NumericMatchReward

from .support import SAMPLES, DigitModel, library_state, metrics_lines

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

CONFIG = TrainConfig(batch_size=3, group_size=4, epochs=1, seed=2, max_tokens=4)
RAY_BIN = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.2", port)) == 0


class Cluster:
    """A head node and a second node, each a `ray start --block` process group of its own."""

    def __init__(self, log_dir: Path) -> None:
        self.temp = tempfile.mkdtemp(prefix="tfgrpo-ray-")  # short: Ray's socket paths must fit 107 bytes
        self.gcs, self.client = free_port(), free_port()
        tests = str(Path(__file__).parents[1])  # the workers import this folder's stand-in model
        path = os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])
        # Two nodes on one machine: multi-node allowed, each on a loopback address of its own (Ray would
        # bind the machine's network address for 127.0.0.1 itself).
        # What earlier Ray sessions of this process left in its environment is not the cluster's.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(PYTHONPATH=path, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1", RAY_USAGE_STATS_ENABLED="0",
                        RAY_AUTH_MODE="disabled")  # fmt: skip
        # The head's client proxy forks a server per client while its gRPC threads run; on a busy machine
        # that child died of SIGSEGV before exec (rc -11; 3 of 13 starts with 4 to 6 busy loops on this
        # 2-core machine). Without gRPC's fork handlers: 0 of 34 (docs/scaling.md, Faults).
        self.env["GRPC_ENABLE_FORK_SUPPORT"] = "0"
        common = ["--block", "--num-cpus", "1", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"]
        head = ["--head", "--node-ip-address", "127.0.0.2", "--port", str(self.gcs), "--temp-dir", self.temp]
        head += ["--ray-client-server-port", str(self.client), "--include-dashboard=false"]
        self.head = self._start(log_dir / "head.log", *head, *common)
        self.node = self._start(log_dir / "node.log", "--address", f"127.0.0.2:{self.gcs}", "--node-ip-address",
                                "127.0.0.3", *common)  # fmt: skip
        self.address = f"ray://127.0.0.2:{self.client}"

    def _start(self, log: Path, *args: str) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen(
                [RAY_BIN, "start", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self) -> None:
        import ray

        while not accepts(self.client):
            assert self.head.poll() is None, "ray start --head ended"
            time.sleep(0.1)
        with open_executor(ExecutorConfig(executor=self.address)):  # joins as a run does, its retries included
            while sum(n["Alive"] for n in ray.nodes()) < 2:
                assert self.node.poll() is None, "ray start --address ended"
                time.sleep(0.1)

    def stop(self) -> None:
        for process in (self.node, self.head):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # the group this test started, and only it
            process.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("ray-logs"))
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def run_training(config: ExecutorConfig, library: Path, control: Path | None = None) -> None:
    with open_executor(config) as executor, TrainingFreeGRPO.open(library, seed=CONFIG.seed) as grpo:
        policy = executor.backend(functools.partial(DigitModel, str(control) if control else None))
        train(policy, SAMPLES, executor.reward(NumericMatchReward()), [ExampleUpdate(grpo)], CONFIG,
              metrics_path=f"{library}.metrics.jsonl")  # fmt: skip


def test_a_two_node_cluster_gives_the_library_of_a_local_run(cluster, tmp_path):
    run_training(ExecutorConfig(), tmp_path / "local.db")
    config = ExecutorConfig(executor=cluster.address, replicas=2, replica_cpus=0.5, reward_cpus=0.5)
    run_training(config, tmp_path / "cluster.db")
    assert library_state(tmp_path / "cluster.db") == library_state(tmp_path / "local.db")
    assert metrics_lines(tmp_path / "cluster.db.metrics.jsonl") == metrics_lines(tmp_path / "local.db.metrics.jsonl")


def test_a_cluster_that_goes_away_mid_step_is_a_clear_error_and_nothing_is_committed(cluster, tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    (control / "block-0-0").touch()  # question 0 stops in its first generation; then the cluster goes

    def take_the_cluster_away() -> None:
        while not list(control.glob("started-*")):
            time.sleep(0.01)
        cluster.stop()

    thread = threading.Thread(target=take_the_cluster_away, daemon=True)
    thread.start()
    config = ExecutorConfig(executor=cluster.address, replicas=2, replica_cpus=0.5, reward_cpus=0.5)
    with pytest.raises(ExecutorError, match="lost the Ray cluster"):
        run_training(config, tmp_path / "library.db", control)
    thread.join(timeout=300)
    assert library_state(tmp_path / "library.db")["position"] == {}  # the step was not committed
