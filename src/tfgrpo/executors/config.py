"""`ExecutorConfig`: where the work tfgrpo runs itself goes (local model replicas, rewards)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.knobs import check_knobs, knob
from ..errors import ConfigError

_HOST_PORT = re.compile(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where local model rollouts and rewards run: in this process (`local`) or on Ray."""

    executor: str = knob(
        "local",
        "where local model rollouts and rewards run: local (in this process), ray (a Ray started for the run), "
        "ray:auto (the Ray cluster this machine belongs to), ray:HOST:PORT (a cluster's GCS address, from a "
        "node of it) or ray://HOST:PORT (Ray Client, from anywhere)",
    )
    replicas: int = knob(
        1, "with Ray: copies of a local model, each a Ray actor; a prompt's group goes to one", minimum=1
    )
    replica_cpus: float = knob(1.0, "with Ray: CPUs each model replica holds (and its torch threads)", minimum=0.0)
    replica_gpus: float = knob(0.0, "with Ray: GPUs each model replica holds (fractions share one GPU)", minimum=0.0)
    reward_cpus: float = knob(1.0, "with Ray: CPUs each reward task holds (one task per scored rollout)", minimum=0.0)
    worker_retries: int = knob(
        2,
        "with Ray: times work lost with a dead worker is sent to another worker; past it the step fails and "
        "nothing of it is committed (rerun to resume)",
        minimum=0,
        maximum=100,
    )
    ray_cpus: int | None = knob(
        None, "with --executor ray: CPUs of the Ray started for the run (default: all)", minimum=1
    )

    def __post_init__(self) -> None:
        check_knobs(self)
        self.ray_address()  # refuses a spec it cannot read

    def ray_address(self) -> str | None:
        """What `ray.init(address=...)` is given: None for `local`, "local" for a Ray started for the run,
        else the existing cluster's address."""
        spec = self.executor
        if spec == "local":
            return None
        if spec == "ray":
            return "local"
        if spec.startswith("ray://") and _HOST_PORT.fullmatch(spec[len("ray://") :]):
            return spec
        if spec.startswith("ray:") and (spec == "ray:auto" or _HOST_PORT.fullmatch(spec[len("ray:") :])):
            return spec[len("ray:") :]
        raise ConfigError(
            f"ExecutorConfig.executor: unknown executor {spec!r}; use local, ray, ray:auto, ray:HOST:PORT or "
            "ray://HOST:PORT"
        )
