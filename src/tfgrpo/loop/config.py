"""`TrainConfig`: the knobs of a training run, and its presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.knobs import MAX_RUN_SEED, knob, replace_known
from ..errors import ConfigError
from ..learn.rollouts import RolloutConfig


@dataclass(frozen=True)
class TrainConfig(RolloutConfig):
    """The knobs of a training run (and, through `RolloutConfig`, of its rollouts' prompts)."""

    epochs: int = knob(1, "passes over the training samples", minimum=1)
    batch_size: int = knob(4, "prompts per step (each strategy commits once per step)", minimum=1)
    group_size: int = knob(8, "rollouts per prompt (G)", minimum=1, flag="--group-size")
    seed: int = knob(0, "seed of the batch order, the examples drawn and the sampling", minimum=0, maximum=MAX_RUN_SEED)
    active: bool = knob(
        False,
        "spend each epoch's groups where they teach: a prompt whose group had signal and that holds fewer than "
        "--active-min experiences gets another group (at most --active-budget per epoch), in place of prompts "
        "whose last group was all right or all wrong (moved to the end of the next epoch); as many groups per "
        "epoch as uniform allocation (needs the examples strategy)",
    )
    active_min: int = knob(
        2,
        "with --active: a prompt with signal gets more groups until it holds this many experiences",
        minimum=1,
        needs="active",
    )
    active_budget: int = knob(8, "with --active: most extra groups in one epoch", minimum=0, needs="active")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named preset with some fields changed: "paper" (3 epochs, G=5, one batch of the whole
        100-sample training set, temperature 0.7)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
        return replace_known(PRESETS[name], overrides)


PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(epochs=3, batch_size=100, group_size=5, temperature=0.7),
}

RUN_FIELDS = ("seed", "batch_size", "group_size")
"""The settings that fix which samples each step sees (besides the data itself)."""
