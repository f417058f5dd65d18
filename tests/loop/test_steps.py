"""The resumable step driver both training loops run on."""

import json
from dataclasses import asdict, dataclass

import pytest

from tfgrpo.errors import ConfigError
from tfgrpo.loop._schedule import epoch_batches, run_steps

SAMPLES = [{"id": str(i), "prompt": f"q{i}"} for i in range(5)]


@dataclass
class Metrics:
    global_step: int
    ids: list

    def to_dict(self) -> dict:
        return asdict(self)


def run(path, done, epochs=2):
    seen = []

    def step(batch, epoch, index, global_step):
        seen.append((epoch, index, global_step))
        return Metrics(global_step, [s["id"] for s in batch])

    history = run_steps(
        SAMPLES, epochs=epochs, batch_size=2, seed=7, done=done, step=step, report=lambda m, t: None, metrics_path=path
    )
    return seen, history


def test_a_resumed_run_skips_the_committed_steps_and_sees_the_same_batches(tmp_path):
    full, history = run(tmp_path / "a.jsonl", done=0)
    assert [g for _, _, g in full] == [1, 2, 3, 4, 5, 6]  # 3 batches of at most 2, two epochs
    resumed, _ = run(tmp_path / "b.jsonl", done=4)
    assert resumed == full[4:]
    assert epoch_batches(SAMPLES, 2, 7, 1) == epoch_batches(SAMPLES, 2, 7, 1) != epoch_batches(SAMPLES, 2, 7, 0)
    assert sorted(i for m in history[:3] for i in m.ids) == [s["id"] for s in SAMPLES]


def test_a_metrics_line_lost_to_a_kill_is_marked_and_a_cut_line_ended(tmp_path):
    path = tmp_path / "m.jsonl"
    run(path, done=0, epochs=1)
    lines = path.read_text().splitlines()
    # Killed after step 3 was committed: its line is half written, step 2's is whole.
    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:10])
    run(path, done=3, epochs=2)
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            assert line == lines[2][:10]
    assert [r["global_step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert "metrics_lost" in rows[2] and "ids" in rows[3]


def test_no_samples_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no training samples"):
        run_steps([], epochs=1, batch_size=1, seed=0, done=0, step=None, report=None)
