"""The drivers: epochs and batches of a training run (resumable), held-out evaluation, lesson
attribution. What a step learns, and how, is `tfgrpo.learn`."""

from ._progress import Progress
from ._schedule import total_steps
from .attribution import AttributionReport, LessonAttribution, attribute_lessons
from .config import TrainConfig
from .evaluate import EvalConfig, EvalReport, LessonCondition, evaluate, show_progress
from .step import StepMetrics, run_step, step_seed
from .training import train

__all__ = [
    "AttributionReport",
    "EvalConfig",
    "EvalReport",
    "LessonAttribution",
    "LessonCondition",
    "Progress",
    "StepMetrics",
    "TrainConfig",
    "attribute_lessons",
    "evaluate",
    "run_step",
    "show_progress",
    "step_seed",
    "total_steps",
    "train",
]
