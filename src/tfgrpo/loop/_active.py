"""Active allocation of a run's rollouts (the guide's use case 4, `TrainConfig.active`): each epoch runs as
many groups as a uniform epoch (one per training prompt), but spends them where they teach. A prompt whose
group had signal and that still holds fewer than `active_min` experiences gets another group (at most
`active_budget` extra groups per epoch), in place of the prompts least likely to teach: those whose last
group was all right or all wrong go to the end of the next epoch's order, where the extra groups leave
them out first.

The allocation is a step's first update: its `commit` sees the step's groups before the strategies commit
and puts its new state into the step's position, which the strategies save with their change; so a
resumed run continues the same allocation from the library's stored progress.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from ..core.advantages import compute_advantages
from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..learn.group import Group
from ..learn.update import StepContext, Update
from .config import TrainConfig


class ActiveAllocation(Update):
    """Decides each step's batch (`batches`) from the groups of the steps before it (`commit`)."""

    name = "active"

    def __init__(self, library: TrainingFreeGRPO, samples: Sequence[dict], config: TrainConfig) -> None:
        ids = [str(s.get("id", "")) for s in samples]
        if len(set(ids)) < len(ids) or "" in ids:
            raise ConfigError("--active needs a distinct id on every training sample")
        self.library = library
        self.samples = dict(zip(ids, samples))
        self.config = config
        stored = (library.progress or {}).get("active")
        if library.progress and stored is None:
            raise ConfigError(
                "this library was trained without --active; train with the same settings to resume, or into a new "
                "library to allocate actively"
            )
        self.state: dict[str, Any] = stored if stored is not None else self._epoch_state(0, {})
        unknown = [i for i in [*self.state["order"], *self.state["queue"]] if i not in self.samples]
        if unknown:
            raise ConfigError(f"the stored allocation names samples this run does not have (e.g. {unknown[0]!r})")

    def _epoch_state(self, epoch: int, flat: dict[str, bool]) -> dict[str, Any]:
        """The start of an epoch: the seeded order of the uniform schedule, prompts whose last group was
        flat (no signal) moved to its end."""
        order = list(self.samples)
        random.Random(f"{self.config.seed}:{epoch}").shuffle(order)
        order.sort(key=lambda i: bool(flat.get(i)))  # stable: the shuffled order within each part
        return {"epoch": epoch, "index": 0, "order": order, "queue": [], "extra": 0, "groups": 0, "flat": flat}

    def batches(self) -> Iterator[tuple[int, int, list[dict]]]:
        """(epoch, step in epoch, batch) for every step left: queued extra groups first (within the budget),
        then the epoch's order, until the epoch has run one group per training prompt."""
        while self.state["epoch"] < self.config.epochs:
            st = self.state
            batch: list[str] = []
            while len(batch) < self.config.batch_size and st["groups"] + len(batch) < len(self.samples):
                if st["queue"] and st["extra"] < self.config.active_budget:
                    batch.append(st["queue"].pop(0))
                    st["extra"] += 1
                elif st["order"]:
                    batch.append(st["order"].pop(0))
                else:
                    break
            if not batch:
                self.state = self._epoch_state(st["epoch"] + 1, st["flat"])
                continue
            st["groups"] += len(batch)
            st["index"] += 1
            yield st["epoch"], st["index"] - 1, [self.samples[i] for i in batch]

    def done(self) -> int:
        return int((self.library.progress or {}).get("global_step", 0))

    def stored_run(self) -> dict | None:
        return (self.library.progress or {}).get("run")

    def commit(self, groups: list[Group], ctx: StepContext) -> dict[str, Any]:
        """Note each group's signal, queue the prompts that should get another group, and put the state into
        the step's position (saved by the strategies that commit after this)."""
        st = self.state
        threshold = self.library.config.min_advantage_threshold
        queued = 0
        for group in groups:
            key = group.sample_id
            st["flat"][key] = not group.has_signal
            if not group.has_signal or key in st["queue"]:
                continue
            advantages = compute_advantages(group.rewards, self.library.config.scale_advantages_by_std)
            held = len(self.library.filter_by_metadata(sample_id=key)) + sum(a > threshold for a in advantages)
            if held < self.config.active_min and st["extra"] + len(st["queue"]) < self.config.active_budget:
                st["queue"].append(key)
                queued += 1
        ctx.position["active"] = {
            **st,
            "order": list(st["order"]),
            "queue": list(st["queue"]),
            "flat": dict(st["flat"]),
        }
        return {"extra_groups": st["extra"], "queued": queued, "epoch_groups": st["groups"]}
