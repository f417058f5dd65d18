"""`tfgrpo eval --baselines --seeds --out --track` and `tfgrpo report` from the command line, against the
scripted stand-in: the result file holds every condition and the report reads it."""

from __future__ import annotations

import json

import pytest

from support.llm import StandIn
from support.report import TEST, TRAIN, build, policy
from tfgrpo.cli import main


def test_eval_writes_its_full_result_and_the_report_reads_it(tmp_path, capsys):
    paths = build(tmp_path / "lib")
    data, held_out = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in TRAIN))
    held_out.write_text("".join(json.dumps(s) + "\n" for s in TEST))
    out = tmp_path / "eval.json"
    with StandIn(policy) as stand_in:
        model = f"openai:scripted@{stand_in.url}"
        argv = [
            "eval",
            "-l",
            str(paths["library"]),
            "--model",
            model,
            "--data",
            str(data),
            "--eval-data",
            str(held_out),
            "--reward",
            "exact",
            "--baselines",
            "--seeds",
            "0",
            "1",
            "-k",
            "2",
            "--out",
            str(out),
        ]
        assert main(argv) in (0, None)
    table = capsys.readouterr().out
    assert "(strongest baseline)" in table and "2 evaluation seeds" in table
    result = json.loads(out.read_text())
    assert {"library", "zero-shot chat", "zero-shot text", "labelled 3-shot"} <= set(result["conditions"])
    assert "baseline" not in result["conditions"]  # zero-shot as configured is one of the fair baselines
    assert result["library"]["path"] == str(paths["library"]) and result["library"]["lesson_version"] == 2
    assert len(result["seeds"]) == 2 and result["settings"]["k"] == 2 and result["command"] == "eval"
    assert len(result["conditions"]["library"]["rewards"][0]) == len(TEST)
    html = tmp_path / "report.html"
    assert main(["report", "-l", str(paths["library"]), "--eval", str(out), "-o", str(html)]) in (0, None)
    assert 'id="plot-eval-eval"' in html.read_text()


def test_eval_tracks_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'tfgrpo[track]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    paths = build(tmp_path / "lib")
    held_out = tmp_path / "test.jsonl"
    held_out.write_text("".join(json.dumps(s) + "\n" for s in TEST))
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in TRAIN))
    with StandIn(policy) as stand_in:
        argv = [
            "eval",
            "-l",
            str(paths["library"]),
            "--model",
            f"openai:scripted@{stand_in.url}",
            "--data",
            str(data),
            "--eval-data",
            str(held_out),
            "--reward",
            "exact",
            "-k",
            "2",
            "--track",
            "tensorboard",
            "--track-dir",
            str(tmp_path / "runs"),
        ]
        assert main(argv) in (0, None)
    (logdir,) = (tmp_path / "runs" / "tensorboard").iterdir()
    events = EventAccumulator(str(logdir))
    events.Reload()
    assert "eval/library/mean_at_k" in events.Tags()["scalars"] and (logdir / "lib.db").exists()
