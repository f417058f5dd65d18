"""`ExampleUpdate`, the spec's method: advantages within each group; rollouts above the threshold are
stored as few-shot examples (`TrainingFreeGRPO.add_rollout_groups`, one transaction per step), each with
the group's worst rollout beside it in its metadata (`with_contrast`)."""

from __future__ import annotations

import json
from typing import Any

from ..agents.trajectory import TOOL_CHARS, Trajectory
from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from .group import Group
from .update import StepContext, Update


class ExampleUpdate(Update):
    """Successful rollouts, by advantage, into an experience library (its few-shot examples go into the
    prompts of the next rollouts)."""

    name = "examples"

    def __init__(self, library: TrainingFreeGRPO, task_name: str = "task") -> None:
        self.library = library
        self.task_name = task_name

    def check(self, group_size: int) -> None:
        if group_size < 2:
            raise ConfigError("the examples strategy needs group_size >= 2: advantages compare rollouts within a group")

    def prompt_condition(self) -> dict[str, Any]:
        return {"examples": self.library}

    def done(self) -> int:
        return int((self.library.progress or {}).get("global_step", 0))

    def stored_run(self) -> dict | None:
        return (self.library.progress or {}).get("run")

    def progress(self) -> dict | None:
        return self.library.progress

    def commit(self, groups: list[Group], ctx: StepContext) -> dict[str, Any]:
        grpo = self.library
        stored, pruned = grpo.total_stored, grpo.total_pruned
        grpo.add_rollout_groups(
            [
                (
                    [(g.prompt, text) for text in stored_texts(g)],
                    g.rewards,
                    with_metadata(
                        with_trajectories(
                            with_contrast(
                                stored_texts(g),
                                g.rewards,
                                {**sample_metadata(g.sample), "task": self.task_name, "sample_id": g.sample_id},
                            ),
                            g.trajectories,
                        ),
                        g.metadata,
                    ),
                )
                for g in groups
            ],
            progress=ctx.position,
            only_if=ctx.expect,
        )
        stats = grpo.stats()
        return {
            "stored": grpo.total_stored - stored,
            "pruned": grpo.total_pruned - pruned,
            "library_size": stats.current_library_size,
            "avg_advantage": stats.avg_advantage,
            "max_advantage": stats.max_advantage,
            "min_advantage": stats.min_advantage,
        }


def sample_metadata(sample: dict) -> dict[str, str]:
    """The sample's own tags (`sample["metadata"]`, e.g. its domain) as an experience keeps them: text keys
    with text, number or true/false values, as text; anything else (nested data, None) is left out."""
    tags = sample.get("metadata")
    if not isinstance(tags, dict):
        return {}
    return {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in tags.items()
        if isinstance(key, str) and key and isinstance(value, (str, int, float)) and str(value)
    }


def stored_texts(group: Group) -> list[str]:
    """The rollouts' text as the library keeps it: a completion as it came, an agent's run as its
    transcript with each tool result cut to TOOL_CHARS (a marker says how much went)."""
    if group.trajectories is None:
        return group.responses
    return [text if t.plain else t.transcript(TOOL_CHARS) for text, t in zip(group.responses, group.trajectories)]


def with_trajectories(
    metadata: list[dict[str, str] | None], trajectories: list[Trajectory] | None
) -> list[dict[str, str] | None]:
    """Per rollout, its metadata and, for a trajectory that used tools, the run as JSON (`trajectory`,
    tool results cut to TOOL_CHARS), so prompts can show it as turns. Completions stay as they were."""
    if trajectories is None:
        return metadata
    return [
        m if t.plain else {**(m or {}), "trajectory": json.dumps(t.to_dict(TOOL_CHARS), ensure_ascii=False)}
        for m, t in zip(metadata, trajectories)
    ]


def with_metadata(
    metadata: list[dict[str, str] | None], own: list[dict[str, str] | None] | None
) -> list[dict[str, str] | None]:
    """Per rollout, its metadata with the group's own for it (`Group.metadata`) beneath."""
    if own is None:
        return metadata
    return [{**(o or {}), **(m or {})} or None for m, o in zip(metadata, own)]


CONTRAST_CHARS = 2000
"""Most characters of a failed rollout kept as a success's contrast."""


def with_contrast(responses: list[str], rewards: list[float], metadata: dict[str, str]) -> list[dict[str, str] | None]:
    """Per rollout, `metadata` and its contrast: the group's worst rollout (the first, on a tie) when its
    reward is lower, as `contrast_response` (model output kept as plain text, cut to CONTRAST_CHARS) and
    `contrast_reward`. Recorded whether or not prompts show it (`RolloutConfig.contrast`)."""
    if not rewards:
        return []
    worst = min(range(len(rewards)), key=rewards.__getitem__)
    contrast = {
        **metadata,
        "contrast_response": responses[worst][:CONTRAST_CHARS],
        "contrast_reward": repr(float(rewards[worst])),
    }
    return [contrast if reward > rewards[worst] else metadata for reward in rewards]
