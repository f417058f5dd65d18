"""`POST /v1/feedback`: rewards for served completions, committed to the library file before the 200; a
feedback that completes a group is answered once the group is in the library."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

from ..core.advantages import MAX_REWARD_MAGNITUDE
from ..errors import excerpt
from ._state import ProxyState
from .metrics import log_fields
from .openai_api import OpenAIError, bad_request
from .served import ServedLibrary

log = logging.getLogger("tfgrpo.serve")

_STATUS_CODES = {404: "completion_not_found", 409: "conflicting_feedback", 400: "invalid_choice"}


class Feedback(ProxyState):
    async def feedback(self, lib: ServedLibrary, body: dict[str, Any]) -> dict[str, Any]:
        """`{"id", "reward", "choice"?}` or `{"id", "rewards": [one per choice]}` for `lib`'s completions, or
        `{"trajectory", "reward"}` for every completion of an agent's run."""
        if "trajectory" in body:
            cid, reward = _trajectory_reward(body)
            result = await asyncio.wrap_future(lib.records.feedback_trajectory(cid, reward))
        else:
            cid, rewards = _rewards(body)
            result = await asyncio.wrap_future(lib.records.feedback(cid, rewards))
        self.metrics.feedback.labels(lib.name, str(result.status)).inc()
        log.info(
            "feedback",
            extra=log_fields(
                id=excerpt(cid),
                library=lib.name,
                status=result.status,
                recorded=result.recorded,
                groups=list(result.groups) or None,
            ),
        )
        if result.status != 200:
            param = ("trajectory" if "trajectory" in body else "id") if result.status == 404 else "choice"
            raise OpenAIError(result.status, result.message, param=param, code=_STATUS_CODES[result.status])
        for seq in result.groups:
            await lib.wait_learned(seq)
        return {
            "id": cid,
            "object": "feedback",
            "recorded": result.recorded,
            "duplicates": result.duplicates,
            "groups": list(result.groups),
        }


def _trajectory_reward(body: dict[str, Any]) -> tuple[str, float]:
    """The run id and its one reward of a trajectory feedback body, checked."""
    run = body.get("trajectory")
    if not isinstance(run, str) or not run or "id" in body or "rewards" in body or "choice" in body:
        raise bad_request(
            'a trajectory feedback is {"trajectory": ID, "reward": number}: the id the completions carried in '
            '"tfgrpo": {"trajectory": ID}, and one reward for the whole run',
            param="trajectory",
        )
    if "reward" not in body:
        raise bad_request("reward: required", param="reward")
    return run, _finite(body["reward"], "reward")


def _rewards(body: dict[str, Any]) -> tuple[str, dict[int, float]]:
    """The completion id and choice -> reward of a feedback body, checked."""
    cid = body.get("id")
    if not isinstance(cid, str) or not cid:
        raise bad_request("id: the `id` of a proxy response is required", param="id")
    if ("reward" in body) == ("rewards" in body):
        raise bad_request(
            'send "reward" (with an optional "choice") or "rewards" (one per choice), not both', param="reward"
        )
    if "rewards" in body:
        values = body["rewards"]
        if not isinstance(values, list) or not values:
            raise bad_request("rewards: must be a non-empty list of numbers, one per choice", param="rewards")
        if "choice" in body:
            raise bad_request('"choice" goes with "reward", not with "rewards"', param="choice")
        return cid, {i: _finite(v, f"rewards.{i}") for i, v in enumerate(values)}
    choice = body.get("choice", 0)
    if isinstance(choice, bool) or not isinstance(choice, int) or choice < 0:
        raise bad_request("choice: must be a whole number >= 0", param="choice")
    return cid, {choice: _finite(body["reward"], "reward")}


def _finite(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{param}: must be a finite number, got {json.dumps(value)[:50]}", param=param)
    if abs(value) > MAX_REWARD_MAGNITUDE:
        raise bad_request(
            f"{param}: {json.dumps(value)[:50]} is too large to learn from (at most {MAX_REWARD_MAGNITUDE:g} either "
            "way); rescale the rewards",
            param=param,
        )
    return float(value)
