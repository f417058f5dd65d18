"""One prompt's rollouts and their scores: what every update strategy learns from, whichever way in made
it (a training step, `tfgrpo serve`'s client feedback, a best-of-G request)."""

from __future__ import annotations

from dataclasses import dataclass

from ..agents.trajectory import Trajectory
from ..rewards.base import Score


@dataclass
class Group:
    """One prompt's rollouts and their scores. `sample` holds the prompt (`sample["prompt"]`), its id and
    whatever else the reward and the critic read (a reference answer, tests). `responses` are the
    rollouts as text (a completion's text, a trajectory's transcript); `trajectories`, when the rollouts
    were agent runs (or told as such by a client), the runs themselves, one per response."""

    sample: dict
    responses: list[str]
    scores: list[Score]
    trajectories: list[Trajectory] | None = None
    metadata: list[dict[str, str] | None] | None = None
    """Per response, metadata the library stores with it (a logged record's own), if any."""

    @classmethod
    def of(cls, sample: dict, trajectories: list[Trajectory], scores: list[Score]) -> Group:
        """A group of rollouts as trajectories: the text of each, and the runs kept when any used a tool."""
        kept = None if all(t.plain for t in trajectories) else list(trajectories)
        return cls(sample, [t.text for t in trajectories], scores, kept)

    @property
    def rewards(self) -> list[float]:
        return [s.value for s in self.scores]

    @property
    def has_signal(self) -> bool:
        """Better and worse rollouts to compare: only such a group gives a non-zero advantage."""
        rewards = self.rewards
        return len(rewards) > 1 and min(rewards) != max(rewards)

    @property
    def sample_id(self) -> str:
        return str(self.sample.get("id", ""))

    @property
    def prompt(self) -> str:
        return self.sample["prompt"]
