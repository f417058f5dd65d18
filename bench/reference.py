"""A straightforward library doing what the spec's reference code does, as the benchmark baseline:
one Python list, weights rebuilt on every sample, a full sort on every prune."""

from __future__ import annotations

import math
import random

from tfgrpo import Experience, GRPOConfig


class ReferenceGRPO:
    def __init__(self, config: GRPOConfig, seed: int = 0, clock=None) -> None:
        self.config = config
        self.experience_library: list[Experience] = []
        self.random = random.Random(seed)
        self.clock = clock

    def add_rollout_group(self, rollouts: list[tuple[str, str]], rewards: list[float]) -> None:
        mean = sum(rewards) / len(rewards)
        now = int(self.clock())
        for (prompt, response), reward in zip(rollouts, rewards):
            advantage = reward - mean
            if advantage > self.config.min_advantage_threshold:
                self.experience_library.append(Experience(prompt, response, advantage, now))
        self.prune_library(now)

    def prune_library(self, now: int) -> None:
        max_age = self.config.max_experience_age
        self.experience_library = [e for e in self.experience_library if now - e.timestamp <= max_age]
        if len(self.experience_library) > self.config.max_library_size:
            self.experience_library.sort(key=lambda e: e.advantage, reverse=True)
            del self.experience_library[self.config.max_library_size :]

    def sample_experience(self) -> Experience | None:
        if not self.experience_library:
            return None
        t = self.config.sampling_temperature
        top = max(e.advantage for e in self.experience_library)
        weights = [math.exp((e.advantage - top) / t) for e in self.experience_library]
        return self.random.choices(self.experience_library, weights)[0]

    def sample_multiple(self, k: int) -> list[Experience]:
        return [self.sample_experience() for _ in range(k)]
