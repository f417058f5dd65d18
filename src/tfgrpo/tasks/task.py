"""`Task`: samples, a reward and generation hints under one name; and the registry of tasks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from ..rewards.base import Reward
from .dataset import split as split_samples

SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class Task:
    """What to train and evaluate on: where samples come from, how responses are scored, and how to
    ask (the instruction, used as system prompt, and a `max_tokens` hint for generation)."""

    name: str
    loader: Callable[[], list[dict]]
    """Returns every sample (dicts with at least "id" and "prompt")."""
    reward: Reward
    instruction: str = ""
    max_tokens: int = 256
    stop: tuple[str, ...] = ("\nQ:",)
    """Stop strings for generation: by default where the model would start a next `Q:` of its own."""
    test_fraction: float = 0.2
    """Share of samples in the "test" split."""
    seed: int = 0
    """Seed of the train/test split."""
    stratify: str | None = None
    """A sample field (e.g. "domain") whose every value is split apart, so each keeps `test_fraction`."""

    def load(self, split: str = "train") -> list[dict]:
        """The samples of `split`: "train", "test" or "all"; the same prompt is never in both."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} of task {self.name!r}; use one of {', '.join(SPLITS)}")
        samples = self.loader()
        if split == "all":
            return samples
        if self.stratify is None:
            train, test = split_samples(samples, self.test_fraction, self.seed)
            return train if split == "train" else test
        held_out: set[int] = set()
        for value in dict.fromkeys(s.get(self.stratify) for s in samples):
            part = [s for s in samples if s.get(self.stratify) == value]
            held_out.update(id(s) for s in split_samples(part, self.test_fraction, self.seed)[1])
        return [s for s in samples if (id(s) in held_out) == (split == "test")]


TaskFactory = Callable[..., Task]

_REGISTRY: dict[str, TaskFactory] = {}


def register_task(name: str, factory: TaskFactory) -> None:
    """Make `get_task(name, **options)` call `factory(**options)`; a name already taken is replaced."""
    if not name or not isinstance(name, str):
        raise ConfigError(f"a task name must be a non-empty string, got {name!r}")
    _REGISTRY[name] = factory


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return sorted(_REGISTRY)


def get_task(name: str, **options: object) -> Task:
    """The task registered as `name`, built with `options` (e.g. `get_task("arithmetic", seed=1)`)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(list_tasks())}")
    factory = _REGISTRY[name]
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ConfigError(f"task {name!r} has no option {', '.join(unknown)}; its options: {', '.join(parameters)}")
    return factory(**options)
