"""The learning loop: the step driver (epochs, batches, resume), rollouts, the training step with its
update strategies, and evaluation."""

from .attribution import AttributionReport, LessonAttribution, attribute_lessons
from .evaluate import EvalConfig, EvalReport, LessonCondition, evaluate, show_progress
from .rollouts import RolloutConfig, rollout_batch
from .step import Group, StepContext, StepMetrics, run_step, step_seed
from .training import TrainConfig, train
from .updates import ExampleUpdate, LessonUpdate, Update

__all__ = [
    "AttributionReport",
    "EvalConfig",
    "EvalReport",
    "ExampleUpdate",
    "Group",
    "LessonAttribution",
    "LessonCondition",
    "LessonUpdate",
    "RolloutConfig",
    "StepContext",
    "StepMetrics",
    "TrainConfig",
    "Update",
    "attribute_lessons",
    "evaluate",
    "rollout_batch",
    "run_step",
    "show_progress",
    "step_seed",
    "train",
]
