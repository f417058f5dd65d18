"""Paper mode (arXiv 2510.08191): natural-language lessons with stable ids, edited by an LLM critic from
the semantic advantage of each group. `lessons.py` is the library, `critic.py` the three critic calls,
`operations.py` the hostile-output parsing; the training strategy is `tfgrpo.learn.LessonUpdate`."""

from .critic import PRESETS, Critic, Critique, LessonConfig
from .lessons import DEFAULT_INSTRUCTION, ApplyResult, LessonDiff, LessonLibrary, Skipped, Version
from .operations import Operation, ParseResult, extract_json, normalize_id, parse_operations
from .prompts import SemanticPrompts

__all__ = [
    "DEFAULT_INSTRUCTION",
    "PRESETS",
    "ApplyResult",
    "Critic",
    "Critique",
    "LessonConfig",
    "LessonDiff",
    "LessonLibrary",
    "Operation",
    "ParseResult",
    "SemanticPrompts",
    "Skipped",
    "Version",
    "extract_json",
    "normalize_id",
    "parse_operations",
]
