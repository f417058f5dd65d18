"""examples/finetune_from_library.py, the worked example, at its smallest (`--tiny`): a library trained on the
bundled model, its SFT and DPO export, TRL fine-tuning of the bundled model on each, and the held-out
comparison of every condition on the same prompts, run as a user runs it (a process of its own)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")
pytestmark = [pytest.mark.model, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetune_from_library.py"


def test_the_worked_example_learns_exports_fine_tunes_and_compares(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"]["sft"] > 0 and summary["rows"]["dpo"] > 0
    sft = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert len(sft) == summary["rows"]["sft"] and all(r["messages"][-1]["role"] == "assistant" for r in sft)
    for kind in ("sft", "dpo"):
        losses = summary["losses"][kind]
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses) and losses[0] != losses[1]
        assert (tmp_path / f"model-{kind}" / "model.safetensors").is_file()
    evaluation = summary["evaluation"]
    conditions = evaluation["conditions"]
    assert {"zero-shot chat", "library", "SFT model, zero-shot chat", "DPO model, zero-shot chat"} <= set(conditions)
    # Every condition on the same 4 held-out prompts, k=1, one evaluation seed: comparable prompt by prompt.
    assert all(len(c["rewards"]) == 1 and len(c["rewards"][0]) == 4 for c in conditions.values())
    assert not conditions["SFT model, zero-shot chat"]["baseline"] and conditions["zero-shot chat"]["baseline"]
    compared = {(d["name"], d["baseline"]) for d in evaluation["comparisons"] + summary["more comparisons"]}
    assert ("SFT model, zero-shot chat", "library") in compared and ("DPO model, zero-shot chat", "library") in compared
    assert "SFT model, zero-shot chat - library" in done.stdout
