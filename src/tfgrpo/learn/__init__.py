"""Learning, used by every way in (training, evaluation, `tfgrpo serve`): rollouts, one `Group` with one
signal rule, and the update strategies that turn scored groups into library changes (`ExampleUpdate`,
`LessonUpdate`, the `Update` interface)."""

from .example_update import ExampleUpdate, with_contrast
from .group import Group
from .lesson_update import LessonUpdate
from .rollouts import PromptingConfig, RolloutConfig, Rollouts, rollout_batch
from .update import StepContext, Update

__all__ = [
    "ExampleUpdate",
    "Group",
    "LessonUpdate",
    "PromptingConfig",
    "RolloutConfig",
    "Rollouts",
    "StepContext",
    "Update",
    "rollout_batch",
    "with_contrast",
]
