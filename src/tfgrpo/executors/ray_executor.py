"""Rollouts of local models and rewards on a Ray cluster, behind the one backend and reward interface.

- `RayBackend`: N replicas of a local model, each a Ray actor. A prompt's group goes to one replica as
  one `generate` call (its n rollouts stay one batched `model.generate`), and the groups of a call are
  spread over the replicas, at most `DEPTH` at a time on each. A seeded group depends only on its
  prompt and params (`GenerationParams.seed`), so the groups come back as the local backend makes them,
  whichever replica made them. A call lost with its replica (the process died) is sent to another one,
  up to `ExecutorConfig.worker_retries` times per group; past that, `ExecutorError`.
- `RayReward`: one Ray task per scored rollout, with its own CPUs, retried by Ray on another worker when
  its worker dies; the task runs the reward exactly as `score_batch` runs it inline (the sandbox, its
  limits and its defences are the reward's own), and the scores come back in order.

Nothing here touches a library: workers get prompts and rollouts and give back generations and scores.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import ray
from ray import exceptions as ray_errors

from ..errors import ConfigError, ExecutorError
from ..llm.base import Backend, Generation, GenerationParams, Prompt, Usage, check_prompts
from ..rewards.base import FunctionReward, Item, Reward, Score
from .base import BackendSpec, Executor, is_local_model, make_backend
from .config import ExecutorConfig

logger = logging.getLogger("tfgrpo.executors")

DEPTH = 2
"""Groups sent to one replica at a time: one generating, one waiting, so a replica never idles between two."""
PROGRESS_EVERY_S = 10.0
"""While work is in flight, a log line with what each worker holds, this often."""
OBJECT_STORE_BYTES = 200 * 1024 * 1024
"""The object store of a Ray started for the run: prompts, generations and scores are small."""
JOIN_ATTEMPTS = 3
"""Tries at joining a cluster that answers but fails to start this client's server (see `RayExecutor`)."""
LOST = (
    ray_errors.RayActorError,
    ray_errors.WorkerCrashedError,
    ray_errors.NodeDiedError,
    ray_errors.ObjectLostError,
)
"""What a ray.get raises when the worker that held the work is gone (not when the work itself raised)."""


class Replica:
    """One copy of the model, in a Ray actor."""

    def __init__(self, spec: BackendSpec, kwargs: dict[str, Any]) -> None:
        self.backend = make_backend(spec, **kwargs)

    def info(self) -> dict[str, Any]:
        return {
            "model_name": self.backend.model_name,
            "structured_output": self.backend.structured_output,
            "pid": os.getpid(),
        }

    def generate(self, prompt: Prompt, params: GenerationParams, chat: bool | None) -> list[Generation]:
        return self.backend.generate([prompt], params, chat=chat)[0]


def _score(reward: Reward, item: Item, safe: bool) -> Score:
    """One rollout scored in a Ray worker, as inline: `score_batch`'s rule (a failure scores the bottom of
    the range, with the reason) when `safe`, else `score` (which raises)."""
    return reward.score_batch([item], max_workers=1)[0] if safe else reward.score(*item)


class RayExecutor(Executor):
    """Joins (or starts) Ray; closing it kills the replicas it made and stops a Ray it started."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self._started = False
        self._backends: list[RayBackend] = []
        self._rewards: list[RayReward] = []
        self._last_report = time.monotonic()
        address = config.ray_address()
        if ray.is_initialized():  # e.g. `tfgrpo repeat`, whose train and eval runs share its Ray
            return
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address == "local":
            # The workers import what the driver imports (your reward's module, next to you).
            path = os.pathsep.join(p for p in sys.path if p)
            kwargs.update(
                num_cpus=config.ray_cpus,
                object_store_memory=OBJECT_STORE_BYTES,
                include_dashboard=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )
        elif config.ray_cpus is not None:
            raise ConfigError("--ray-cpus sizes a Ray started for the run (--executor ray), not an existing cluster")
        for attempt in range(JOIN_ATTEMPTS):
            try:
                ray.init(address=address, **kwargs)
                break
            except (ConnectionError, RuntimeError, ValueError) as exc:
                ray.shutdown()  # a half-made connection (a Ray Client's) would stay behind
                # The cluster answered but could not start this client's server process (Ray's proxy
                # forks it under running gRPC threads; on a busy head the child can crash before exec,
                # see docs/scaling.md): worth another try, unlike no answer.
                if isinstance(exc, ConnectionAbortedError) and attempt + 1 < JOIN_ATTEMPTS:
                    logger.warning("the Ray cluster at %s failed to start a client server (%s); again", address, exc)
                    continue
                raise ExecutorError(f"cannot join the Ray cluster at {address}: {exc}") from None
        self._started = True

    def backend(self, spec: BackendSpec, *, concurrency: int | None = None) -> Backend:
        if not is_local_model(spec):
            if self.config.replicas != 1:
                raise ConfigError(
                    f"--replicas {self.config.replicas} copies a local model; {spec} is a server, which scales by "
                    "itself (raise --concurrency instead)"
                )
            return make_backend(spec, **({"concurrency": concurrency} if concurrency else {}))
        self._check_resources()
        backend = RayBackend(spec, self.config, self._progress)
        self._backends.append(backend)
        return backend

    def reward(self, reward: Reward) -> Reward:
        wrapped = RayReward(reward, self.config, self._progress)
        self._rewards.append(wrapped)
        return wrapped

    def in_flight(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for number, backend in enumerate(self._backends):
            prefix = f"model {number} " if len(self._backends) > 1 else ""
            for label, busy in backend.in_flight().items():
                counts[prefix + label] = busy
        counts["rewards"] = sum(r.pending for r in self._rewards)
        return counts

    def _progress(self) -> None:
        """Log what each worker holds, at most every PROGRESS_EVERY_S (called while waiting on work)."""
        now = time.monotonic()
        if now - self._last_report < PROGRESS_EVERY_S:
            return
        self._last_report = now
        logger.info("ray: in flight: %s", ", ".join(f"{k} {v}" for k, v in self.in_flight().items()))

    def _check_resources(self) -> None:
        """Replicas hold their CPUs and GPUs for as long as they live: refuse a size that leaves no room for
        a reward task (which would wait forever) or that the cluster cannot hold."""
        config = self.config
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
        need_cpus = config.replicas * config.replica_cpus + config.reward_cpus
        if need_cpus > cpus:
            raise ConfigError(
                f"{config.replicas} replicas x {config.replica_cpus:g} CPUs + {config.reward_cpus:g} for a reward "
                f"task need {need_cpus:g} CPUs; the Ray cluster has {cpus:g}. Lower --replicas, --replica-cpus or "
                "--reward-cpus (fractions share a CPU)"
            )
        if config.replicas * config.replica_gpus > gpus:
            raise ConfigError(
                f"{config.replicas} replicas x {config.replica_gpus:g} GPUs need more than the cluster's {gpus:g}"
            )

    def close(self) -> None:
        for backend in self._backends:
            backend.close()
        self._backends.clear()
        self._rewards.clear()
        if self._started:  # also after the cluster went away: a lost Ray Client is left in client mode
            ray.shutdown()
        self._started = False


class RayBackend(Backend):
    """A local model as `config.replicas` Ray actors (see the module's doc)."""

    def __init__(self, spec: BackendSpec, config: ExecutorConfig, progress: Any = None) -> None:
        kwargs: dict[str, Any] = {}
        if not callable(spec) and config.replica_gpus == 0:
            kwargs = {"device": "cpu", "num_threads": max(1, round(config.replica_cpus))}
        actor = ray.remote(Replica).options(
            num_cpus=config.replica_cpus,
            num_gpus=config.replica_gpus,
            max_restarts=config.worker_retries,  # a replica whose process died comes back, this often
            max_task_retries=0,  # its lost calls are ours to send elsewhere
        )
        self.retries = config.worker_retries
        self._progress = progress or (lambda: None)
        self._usage = Usage()
        self._lost = False
        self._actors: list[Any] = [actor.remote(spec, kwargs) for _ in range(config.replicas)]
        self._busy = [0] * len(self._actors)
        self._down: set[int] = set()  # lost a call; back once it answers `info` again
        self._dead: set[int] = set()  # restarted too often: never used again
        self._pids = [0] * len(self._actors)
        infos = self._wait_ready()
        self.model_name = infos[0]["model_name"]
        self.structured_output = infos[0]["structured_output"]

    def _wait_ready(self) -> list[dict[str, Any]]:
        refs = [a.info.remote() for a in self._actors]
        try:
            while ray.wait(refs, num_returns=len(refs), timeout=PROGRESS_EVERY_S)[1]:
                logger.info("ray: waiting for %d model replicas to load", len(refs))
            infos = ray.get(refs)
        except ray_errors.RayActorError as exc:
            self.close()
            raise ExecutorError(f"a model replica could not start: {exc}") from None
        except ConnectionError as exc:
            self._lost = True
            raise _cluster_lost(exc) from None
        self._pids = [info["pid"] for info in infos]
        return infos

    @property
    def usage(self) -> Usage:
        return self._usage

    def in_flight(self) -> dict[str, int]:
        return {f"replica {i} (pid {self._pids[i]})": busy for i, busy in enumerate(self._busy)}

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None, *, chat: bool | None = None
    ) -> list[list[Generation]]:
        params = params or GenerationParams()
        prompts = check_prompts(prompts)
        try:
            return self._run(prompts, params, chat)
        except ConnectionError as exc:
            self._lost = True
            raise _cluster_lost(exc) from None

    def _run(self, prompts: list[Prompt], params: GenerationParams, chat: bool | None) -> list[list[Generation]]:
        results: list[list[Generation] | None] = [None] * len(prompts)
        attempts = [0] * len(prompts)
        failed_on: dict[int, int] = {}
        queue = deque(range(len(prompts)))
        running: dict[Any, tuple[int, int]] = {}  # ref -> (group, replica); group -1: a probe of a down replica
        while queue or running:
            while queue and (replica := self._pick(failed_on.get(queue[0]))) is not None:
                group = queue.popleft()
                running[self._actors[replica].generate.remote(prompts[group], params, chat)] = (group, replica)
                self._busy[replica] += 1
            if not running:
                raise ExecutorError(
                    f"every model replica died more than {self.retries} times; nothing of this step is committed. "
                    "Rerun the same command to resume"
                )
            done, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_EVERY_S)
            if not done:
                self._progress()
                continue
            group, replica = running.pop(done[0])
            if group >= 0:
                self._busy[replica] -= 1
            try:
                answer = ray.get(done[0])
            except LOST as exc:
                if group < 0:  # the probe: restarted too often, gone for good
                    self._dead.add(replica)
                    continue
                attempts[group] += 1
                if attempts[group] > self.retries:
                    raise ExecutorError(
                        f"a group was lost with its model replica {attempts[group]} times (--worker-retries "
                        f"{self.retries}): {type(exc).__name__}; nothing of this step is committed. Rerun the same "
                        "command to resume"
                    ) from None
                logger.warning(
                    "ray: model replica %d died (%s); its group goes to another", replica, type(exc).__name__
                )
                failed_on[group] = replica
                queue.appendleft(group)
                if replica not in self._down:
                    self._down.add(replica)
                    running[self._actors[replica].info.remote()] = (-1, replica)
                continue
            except ray_errors.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None  # the backend's own error (a prompt too long, ...)
            if group < 0:
                self._down.discard(replica)
                self._pids[replica] = answer["pid"]
                continue
            results[group] = answer
            if answer:
                self._usage.record(answer[0].prompt_tokens or 0, sum(g.completion_tokens or 0 for g in answer))
        return [r for r in results if r is not None]

    def _pick(self, avoid: int | None) -> int | None:
        """The least busy live replica with room, another than `avoid` when there is one."""
        live = [i for i in range(len(self._actors)) if i not in self._dead and i not in self._down]
        if not live:  # only replicas that are coming back: wait for them
            live = [i for i in range(len(self._actors)) if i not in self._dead]
        room = [i for i in live if self._busy[i] < DEPTH]
        others = [i for i in room if i != avoid]
        choices = others or ([] if avoid is not None and len(live) > 1 else room)
        return min(choices, key=lambda i: self._busy[i]) if choices else None

    def close(self) -> None:
        actors = self.__dict__.pop("_actors", [])
        if self._lost:  # nothing left to kill, and each try would wait on the lost connection
            return
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 (a cluster already gone has nothing left to kill)
                pass


class RayReward(Reward):
    """`reward` scored in Ray tasks (see the module's doc)."""

    def __init__(self, reward: Reward, config: ExecutorConfig, progress: Any = None) -> None:
        self.reward = reward
        self.value_range = reward.value_range
        self.pending = 0
        self._progress = progress or (lambda: None)
        _ship_by_value(reward)
        try:
            self._ref = ray.put(reward)
        except Exception as exc:
            raise ConfigError(
                f"the reward {reward!r} cannot be sent to Ray workers ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0]}); score it with --executor local"
            ) from None
        self._task = ray.remote(_score).options(
            num_cpus=config.reward_cpus, max_retries=config.worker_retries, retry_exceptions=False
        )

    def __repr__(self) -> str:
        return f"RayReward({self.reward!r})"

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        return self._collect([self._task.remote(self._ref, (prompt, response, sample), False)])[0]

    def score_batch(self, items: Sequence[Item], max_workers: int | None = None) -> list[Score]:
        return self._collect([self._task.remote(self._ref, item, True) for item in items])

    async def ascore(self, prompt: str, response: str, sample: dict) -> Score:
        return await asyncio.to_thread(self.score, prompt, response, sample)

    async def ascore_batch(self, items: Sequence[Item]) -> list[Score]:
        return await asyncio.to_thread(self.score_batch, items)

    def _collect(self, refs: list[Any]) -> list[Score]:
        self.pending += len(refs)
        try:
            waiting = refs
            while waiting:
                waiting = ray.wait(waiting, num_returns=len(waiting), timeout=PROGRESS_EVERY_S)[1]
                self._progress()
            return ray.get(refs)
        except LOST as exc:
            raise ExecutorError(
                "a reward task was lost with its worker more often than --worker-retries allows: "
                f"{type(exc).__name__}; nothing of this step is committed. Rerun the same command to resume"
            ) from None
        except ray_errors.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None
        except ConnectionError as exc:
            raise _cluster_lost(exc) from None
        finally:
            self.pending -= len(refs)


def _cluster_lost(exc: BaseException) -> ExecutorError:
    return ExecutorError(
        f"lost the Ray cluster ({exc}); nothing of this step is committed. Rerun the same command once the "
        "cluster is back (or with --executor local) to resume"
    )


def _ship_by_value(reward: Reward) -> None:
    """A reward defined in a module the workers cannot import by name (a file given as path/to/file.py:name)
    travels with its code."""
    objects = [reward, reward.fn] if isinstance(reward, FunctionReward) else [reward]
    for obj in objects:
        name = getattr(obj, "__module__", None) or type(obj).__module__
        module = sys.modules.get(name)
        if module is None or name == "__main__" or name.startswith("tfgrpo."):
            continue
        if importlib.machinery.PathFinder.find_spec(name.partition(".")[0]) is None:
            ray.cloudpickle.register_pickle_by_value(module)
