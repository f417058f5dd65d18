"""The prompts of paper mode: the policy's prompt with the lessons in it, and the three prompts of the
semantic advantage (summarise one rollout; compare a group and propose operations; consolidate a batch).

Templates are plain text with `{name}` placeholders; only the names listed for each template are
filled, so literal braces (JSON examples) need no escaping. Override any of them with
`SemanticPrompts(summary=..., group=..., batch=...)`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError

SUMMARY = """You are analysing one attempt at a task, to learn what helps and what hurts.
{task_objective}
## Problem
{question}
{reference}
## Lessons the attempt was given
{lessons}

## The attempt
{response}

## Its result
Reward: {reward}{reward_reason}

Summarise the attempt step by step in a few short lines: the approach it took, which lessons (by id, e.g. [G2])
it used or ignored, and, if the reward is low, exactly where and why it went wrong; if the reward is high,
what made it work. Plain text, at most 120 words."""

TRAJECTORY = """You are analysing one attempt at a task by an agent that could call tools, to learn what helps and
what hurts.
{task_objective}
## Problem
{question}
{reference}
## Lessons the attempt was given
{lessons}

## The attempt (the agent's turns and the tools' results, in order)
{response}

## Its result
Reward: {reward}{reward_reason}

Summarise the attempt step by step in a few short lines: which tools it called and why, which calls failed
and what went wrong in them, whether it used the tools' results correctly, which lessons (by id, e.g. [G2]) it
used or ignored, and, if the reward is low, exactly where and why the reasoning went wrong; if the reward is
high, what made it work. Plain text, at most 150 words."""

GROUP = """You study attempts at the same problem and turn what made them succeed or fail (above all, the
difference between the better and the worse ones) into general lessons.
{task_objective}{learning_objective}
## Problem
{question}
{reference}
## Current lessons
{lessons}

## Attempts (summaries, with their rewards)
{summaries}

Propose at most {max_operations} operations on the current lessons that would make future attempts at
*similar* problems score higher. Each lesson must be general (not about this problem's numbers or names),
actionable, and at most {max_words} words. Operations:
- {{"operation": "add", "text": "..."}}
- {{"operation": "update", "id": "G3", "text": "..."}} (rewrite lesson G3)
- {{"operation": "delete", "id": "G3"}} (it is wrong or harmful)
- {{"operation": "none"}} (nothing worth learning)
Use only ids that appear in the current lessons. Answer with a JSON array and nothing else."""

BATCH = """You maintain a short library of general lessons for a task.
{task_objective}{learning_objective}
## Current lessons
{lessons}

## Proposed operations from this batch of problems
{proposals}

Consolidate the proposals into one final set of operations on the current lessons: drop duplicates and
problem-specific advice, combine overlapping lessons, resolve conflicts. Each lesson at most {max_words} words.
Operations:
- {{"operation": "add", "text": "..."}}
- {{"operation": "update", "id": "G3", "text": "..."}}
- {{"operation": "delete", "id": "G3"}}
- {{"operation": "merge", "ids": ["G1", "G4"], "text": "..."}} (the listed lessons become one)
- {{"operation": "none"}}
Use only ids that appear in the current lessons. Answer with a JSON array and nothing else."""

_FIELDS = {
    "summary": ("task_objective", "question", "reference", "lessons", "response", "reward", "reward_reason"),
    "trajectory": ("task_objective", "question", "reference", "lessons", "response", "reward", "reward_reason"),
    "group": (
        "task_objective",
        "learning_objective",
        "question",
        "reference",
        "lessons",
        "summaries",
        "max_operations",
        "max_words",
    ),
    "batch": ("task_objective", "learning_objective", "lessons", "proposals", "max_words"),
}


def fill(template: str, values: Mapping[str, object]) -> str:
    """Replace `{name}` for the names in `values`; `{{` and `}}` become single braces; every other
    brace is left as it is."""
    pattern = re.compile(r"\{\{|\}\}|\{(" + "|".join(map(re.escape, values)) + r")\}")

    def sub(match: re.Match) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return str(values[match.group(1)])

    return pattern.sub(sub, template)


@dataclass(frozen=True)
class SemanticPrompts:
    summary: str = SUMMARY
    group: str = GROUP
    batch: str = BATCH
    trajectory: str = TRAJECTORY
    """The summary prompt of a rollout that was an agent's run with tools (its placeholders: the summary's)."""

    def __post_init__(self) -> None:
        required = {
            "summary": ("response",),
            "group": ("summaries",),
            "batch": ("proposals",),
            "trajectory": ("response",),
        }
        for name, needed in required.items():
            text = getattr(self, name)
            if not isinstance(text, str):
                raise ConfigError(f"SemanticPrompts.{name} must be a string")
            for placeholder in needed:
                if "{" + placeholder + "}" not in text:
                    raise ConfigError(
                        f"SemanticPrompts.{name} must contain {{{placeholder}}}; its placeholders: "
                        + ", ".join("{" + f + "}" for f in _FIELDS[name])
                    )


def _section(title: str, text: str | None) -> str:
    return f"\n## {title}\n{text}\n" if text else ""


def _objective(label: str, text: str) -> str:
    return f"{label}: {text}\n" if text else ""


def clip(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars`, keeping its start and end (where the answer usually is)."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


def summary_prompt(
    prompts: SemanticPrompts,
    *,
    question: str,
    response: str,
    reward: float | None,
    lessons: str,
    reward_reason: str = "",
    reference: str | None = None,
    task_objective: str = "",
    max_chars: int = 4000,
    template: str | None = None,
) -> str:
    """The summary prompt of one rollout (`template`: another summary template, e.g. `prompts.trajectory`)."""
    return fill(
        template or prompts.summary,
        {
            "task_objective": _objective("Task objective", task_objective),
            "question": clip(question, max_chars),
            "reference": _section("Reference answer", reference),
            "lessons": lessons,
            "response": clip(response, max_chars) or "(empty response)",
            "reward": "not available" if reward is None else f"{reward:g}",
            "reward_reason": f" ({reward_reason})" if reward_reason else "",
        },
    )


def group_prompt(
    prompts: SemanticPrompts,
    *,
    question: str,
    summaries: Sequence[tuple[float | None, str]],
    lessons: str,
    max_operations: int,
    max_words: int,
    reference: str | None = None,
    task_objective: str = "",
    learning_objective: str = "",
    max_chars: int = 4000,
) -> str:
    lines = [
        f"### Attempt {i + 1}" + ("" if reward is None else f" (reward {reward:g})") + f"\n{text.strip()}"
        for i, (reward, text) in enumerate(summaries)
    ]
    return fill(
        prompts.group,
        {
            "task_objective": _objective("Task objective", task_objective),
            "learning_objective": _objective("Learning objective", learning_objective),
            "question": clip(question, max_chars),
            "reference": _section("Reference answer", reference),
            "lessons": lessons,
            "summaries": "\n\n".join(lines),
            "max_operations": max_operations,
            "max_words": max_words,
        },
    )


def batch_prompt(
    prompts: SemanticPrompts,
    *,
    proposals: Sequence[Sequence[dict]],
    lessons: str,
    max_words: int,
    task_objective: str = "",
    learning_objective: str = "",
) -> str:
    import json

    lines = []
    for i, ops in enumerate(proposals):
        if ops:
            lines.append(f"Problem {i + 1}: " + json.dumps(list(ops), ensure_ascii=False))
    return fill(
        prompts.batch,
        {
            "task_objective": _objective("Task objective", task_objective),
            "learning_objective": _objective("Learning objective", learning_objective),
            "lessons": lessons,
            "proposals": "\n".join(lines) or "(none)",
            "max_words": max_words,
        },
    )
