"""One Training-Free GRPO step, as the paper writes it: for each prompt of the batch, generate a group
conditioned on what the libraries hold, score it, find the groups with signal, and let each update
strategy turn the groups into library changes (examples by advantage, lessons by the critic), each
committed together with the step's position so a killed run resumes without double counting."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..agents.base import Agent
from ..agents.trajectory import Tally, Trajectory
from ..learn.group import Group
from ..learn.rollout_log import Recorder
from ..learn.rollouts import Rollouts, rollout_batch
from ..learn.update import StepContext, Update
from ..llm.base import Backend
from ..llm.cache import CachedBackend, LLMCache
from ..rewards.base import Reward
from .config import TrainConfig


@dataclass
class StepMetrics:
    """One line of the metrics log: the step's own figures, then each update strategy's."""

    epoch: int
    step: int
    global_step: int
    groups: int
    groups_with_signal: int
    reward_mean: float
    llm_requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    cache_hits: int
    seconds: float
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per strategy name ("examples", "lessons"), the figures its commit returned."""
    trajectories: dict[str, Any] = field(default_factory=dict)
    """With an agent: the trajectories' figures (`Tally.to_dict`: turns, tool calls and errors per
    rollout, how they ended); empty for completions."""

    @property
    def signal_share(self) -> float:
        return self.groups_with_signal / self.groups if self.groups else 0.0

    def __getattr__(self, name: str) -> Any:
        # An update's figure read as an attribute: `metrics.stored`, `metrics.lesson_version`.
        if name != "updates":
            for figures in self.__dict__.get("updates", {}).values():
                if name in figures:
                    return figures[name]
        raise AttributeError(f"StepMetrics has no field {name!r}")

    def to_dict(self) -> dict[str, Any]:
        common = {k: v for k, v in asdict(self).items() if k not in ("updates", "trajectories")}
        if self.trajectories:
            common["trajectories"] = self.trajectories
        flat = {**common, "signal_share": self.signal_share, "strategies": list(self.updates)}
        for figures in self.updates.values():
            flat.update(figures)
        return flat


def step_seed(seed: int, global_step: int) -> int:
    """The one seed rule: every step of every strategy draws from (run seed, step)."""
    return seed * 1_000_003 + global_step


def run_step(
    policy: Backend,
    batch: Sequence[dict],
    reward: Reward,
    updates: Sequence[Update],
    config: TrainConfig,
    *,
    epoch: int = 0,
    step: int = 0,
    global_step: int = 1,
    cache: LLMCache | None = None,
    validation: list[dict] | None = None,
    progress_extra: dict | None = None,
    agent: Agent | None = None,
    record: Recorder | None = None,
) -> StepMetrics:
    """One step (see the module's docstring). `record`: the run's rollout log recorder; the step's rollouts
    are written to the log (one transaction) before any strategy commits, under ids that a step run again
    after a restart writes again instead of adding to."""
    started = time.perf_counter()
    raw = _raw_backends(policy, updates)
    usage_before = [b.usage.snapshot() for b in raw]
    hits_before = cache.hits if cache is not None else 0
    seed = step_seed(config.seed, global_step)
    cached_policy = CachedBackend(policy, cache, namespace="policy") if cache is not None else policy
    condition: dict[str, Any] = {}
    for update in updates:
        condition.update(update.prompt_condition())
    learning = [u for u in updates if u.done() < global_step]
    if record is not None:
        record = record.at(step=global_step, strategy="+".join(u.name for u in learning))
    rollouts = Rollouts(
        cached_policy,
        reward,
        config,
        config.group_size,
        examples=condition.get("examples"),
        validation=validation,
        agent=agent,
        record=record,
    )
    position = {"epoch": epoch, "step": step, "global_step": global_step, **(progress_extra or {})}
    ctx = StepContext(seed=seed, global_step=global_step, position=position, rollouts=rollouts, cache=cache)

    # 1-2. A group of G rollouts per prompt, prompted with what the libraries hold; a reward for each.
    rollouts_made, scores = rollout_batch(
        cached_policy, batch, reward, config.group_size, config, seed, **condition, agent=agent, record=record
    )
    groups = [Group.of(sample, runs, s) for sample, runs, s in zip(batch, rollouts_made, scores)]
    if record is not None:
        record.flush()

    # 3-4. Advantages within each group, and the library updates: each strategy commits the step with
    #      its position (a strategy that had committed this step before a restart is not asked again).
    figures = {u.name: u.commit(groups, ctx) for u in learning}

    spent = [b.usage.snapshot() - before for b, before in zip(raw, usage_before)]
    rewards = [r for g in groups for r in g.rewards]
    return StepMetrics(
        epoch=epoch,
        step=step,
        global_step=global_step,
        groups=len(groups),
        groups_with_signal=sum(g.has_signal for g in groups),
        reward_mean=sum(rewards) / len(rewards) if rewards else 0.0,
        llm_requests=sum(u.requests for u in spent),
        prompt_tokens=sum(u.prompt_tokens for u in spent),
        completion_tokens=sum(u.completion_tokens for u in spent),
        cost=sum(u.cost for u in spent),
        cache_hits=(cache.hits - hits_before) if cache is not None else 0,
        seconds=time.perf_counter() - started,
        updates=figures,
        trajectories=_tally(rollouts_made) if agent is not None else {},
    )


def _tally(groups: list[list[Trajectory]]) -> dict[str, Any]:
    tally = Tally()
    for runs in groups:
        for run in runs:
            tally.add(run)
    return tally.to_dict()


def _raw_backends(policy: Backend, updates: Sequence[Update]) -> list[Backend]:
    """Every model the step may call, once each, for its usage."""
    backends: dict[int, Backend] = {id(policy): policy}
    for update in updates:
        for backend in update.backends():
            backends.setdefault(id(backend), backend)
    return list(backends.values())
