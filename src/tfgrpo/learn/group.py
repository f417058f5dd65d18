"""One prompt's rollouts and their scores: what every update strategy learns from, whichever way in made
it (a training step, `tfgrpo serve`'s client feedback, a best-of-G request)."""

from __future__ import annotations

from dataclasses import dataclass

from ..rewards.base import Score


@dataclass
class Group:
    """One prompt's rollouts and their scores. `sample` holds the prompt (`sample["prompt"]`), its id and
    whatever else the reward and the critic read (a reference answer, tests)."""

    sample: dict
    responses: list[str]
    scores: list[Score]

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
