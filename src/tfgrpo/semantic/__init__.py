"""Paper mode (arXiv 2510.08191): natural-language lessons with stable ids, edited by the LLM from the
semantic advantage of each group. See `trainer.py` for the step, `lessons.py` for the library."""

from ..llm.cache import CachedBackend, LLMCache, cache_key
from .attribution import AttributionReport, LessonAttribution, attribute_lessons
from .lessons import DEFAULT_INSTRUCTION, ApplyResult, LessonDiff, LessonLibrary, Skipped, Version
from .operations import Operation, ParseResult, extract_json, normalize_id, parse_operations
from .prompts import SemanticPrompts
from .trainer import PRESETS, LessonConfig, LessonStepMetrics, LessonTrainer, rollout_with_lessons

__all__ = [
    "DEFAULT_INSTRUCTION",
    "PRESETS",
    "ApplyResult",
    "AttributionReport",
    "CachedBackend",
    "LLMCache",
    "LessonAttribution",
    "LessonConfig",
    "LessonDiff",
    "LessonLibrary",
    "LessonStepMetrics",
    "LessonTrainer",
    "Operation",
    "ParseResult",
    "SemanticPrompts",
    "Skipped",
    "Version",
    "attribute_lessons",
    "cache_key",
    "extract_json",
    "normalize_id",
    "parse_operations",
    "rollout_with_lessons",
]
