"""tfgrpo: Training-Free GRPO. Make a frozen LLM better at a task from a reward signal, without
gradients, by keeping what worked in an experience library that goes back into later prompts."""

from . import retrieval as _retrieval  # noqa: F401  (registers the library's default retrieval index)
from .core.advantages import compute_advantages
from .core.config import GRPOConfig
from .core.experience import Experience
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

__all__ = [
    "BackendError",
    "CompilerFeedback",
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
]


def __getattr__(name: str):
    # The reward layer sits above the core; import it only when asked for.
    if name == "CompilerFeedback":
        from .rewards.compiler import CompilerFeedback

        return CompilerFeedback
    raise AttributeError(f"module 'tfgrpo' has no attribute {name!r}")
