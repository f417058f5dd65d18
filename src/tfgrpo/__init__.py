"""tfgrpo: Training-Free GRPO. Make a frozen LLM better at a task from a reward signal, without
gradients, by keeping what worked in an experience library that goes back into later prompts."""

from .core.advantages import compute_advantages
from .core.config import GRPOConfig
from .core.experience import Experience
from .core.index import register_default_index
from .core.library import ExperienceLibrary, TrainingFreeGRPO
from .core.stats import GRPOStats
from .errors import (
    BackendError,
    ConfigError,
    InvalidRolloutsError,
    LibraryFormatError,
    LibraryNotFoundError,
    StoreError,
    TFGRPOError,
    TFGRPOWarning,
)

__version__ = "0.1.0"


def _retriever(embedder=None, **options):
    """The library's default retrieval index (numpy and the retrieval layer load at its first use)."""
    from .retrieval import Retriever

    return Retriever(embedder, **options)


register_default_index(_retriever)

# The layers above the core, imported only when one of their names is asked for (the core needs only
# numpy; these bring their own optional extras when used).
_LAZY = {
    "CompilerFeedback": "tfgrpo.rewards.compiler",
    "EvalConfig": "tfgrpo.loop.evaluate",
    "ExampleUpdate": "tfgrpo.learn",
    "LessonConfig": "tfgrpo.semantic.critic",
    "LessonLibrary": "tfgrpo.semantic.lessons",
    "LessonUpdate": "tfgrpo.learn",
    "Reward": "tfgrpo.rewards.base",
    "RolloutLog": "tfgrpo.learn.rollout_log",
    "TrainConfig": "tfgrpo.loop.config",
    "evaluate": "tfgrpo.loop.evaluate",
    "export_dataset": "tfgrpo.learn.export",
    "get_backend": "tfgrpo.llm",
    "learn_from_log": "tfgrpo.loop.from_log",
    "serve": "tfgrpo.server.proxy",
    "train": "tfgrpo.loop.training",
}

__all__ = [
    "BackendError",
    "ConfigError",
    "Experience",
    "ExperienceLibrary",
    "GRPOConfig",
    "GRPOStats",
    "InvalidRolloutsError",
    "LibraryFormatError",
    "LibraryNotFoundError",
    "StoreError",
    "TFGRPOError",
    "TFGRPOWarning",
    "TrainingFreeGRPO",
    "compute_advantages",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfgrpo' has no attribute {name!r}")
