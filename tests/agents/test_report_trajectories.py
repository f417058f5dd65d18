"""`tfgrpo report` shows the trajectory figures of agent runs (per step and per evaluated condition), and
nothing of the kind for runs of plain completions."""

import json

from tfgrpo import TrainingFreeGRPO
from tfgrpo.report import write_report

FIGURES = {
    "rollouts": 8,
    "turns_per_rollout": 1.5,
    "tool_calls_per_rollout": 0.75,
    "tool_errors_per_rollout": 0.125,
    "tokens_per_rollout": 210.0,
    "seconds_per_rollout": 1.0,
    "answered": 0.875,
    "endings": {"answer": 7, "max_turns": 1},
}


def test_the_report_shows_tool_calls_per_step_and_per_condition(tmp_path):
    library = tmp_path / "lib.db"
    TrainingFreeGRPO.open(library).close()
    step = {"global_step": 1, "reward_mean": 0.5, "signal_share": 0.5, "prompt_tokens": 10, "completion_tokens": 5}
    metrics = tmp_path / "lib.db.metrics.jsonl"
    metrics.write_text(json.dumps({**step, "trajectories": FIGURES}) + "\n")
    condition = {
        "baseline": True,
        "mean_at_k": 0.5,
        "pass_at_k": 0.5,
        "per_seed_mean_at_k": [0.5],
        "per_seed_pass_at_k": [0.5],
        "per_prompt": [0.5, 0.5],
        "rewards": [[[0.0, 1.0], [1.0, 0.0]]],
        "description": {},
        "trajectories": FIGURES,
    }
    result = tmp_path / "eval.json"
    result.write_text(
        json.dumps(
            {"kind": "evaluation", "n_prompts": 2, "k": 2, "seeds": [1], "conditions": {"zero-shot agent": condition}}
        )
    )
    html = write_report(library, tmp_path / "r.html", [result]).read_text()
    assert 'id="plot-trajectories"' in html and "tool calls / rollout" in html and "0.75" in html
    metrics.write_text(json.dumps(step) + "\n")
    del condition["trajectories"]
    result.write_text(
        json.dumps({"kind": "evaluation", "n_prompts": 2, "k": 2, "seeds": [1], "conditions": {"c": condition}})
    )
    plain = write_report(library, tmp_path / "p.html", [result]).read_text()
    assert "plot-trajectories" not in plain and "tool calls / rollout" not in plain
