"""`tfgrpo repeat` against a scripted OpenAI-compatible stand-in on 127.0.0.1 (no model needed): the
baselines scored once for all training seeds, each seed's result the same as `tfgrpo eval --baselines`
beside that library, and a rerun that resumes, grows the seeds, or evaluates again when settings differ."""

from __future__ import annotations

import importlib
import json

import pytest

from support.llm import StandIn
from support.repeat import policy, repeat, setup
from tfgrpo.cli import main
from tfgrpo.errors import TFGRPOWarning

evaluation = importlib.import_module("tfgrpo.loop.evaluate")  # the module (the package exports its function)


@pytest.fixture
def stand_in():
    with StandIn(policy) as server:
        yield server


@pytest.fixture
def scored(monkeypatch) -> list[str]:
    """The names of the conditions scored, in order (the real scoring runs)."""
    names: list[str] = []
    real = evaluation.score_condition

    def spy(*args, **kwargs):
        names.append(kwargs.get("name", args[6] if len(args) > 6 else ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "score_condition", spy)
    return names


def test_baselines_are_scored_once_and_each_seed_reads_as_eval_baselines(tmp_path, stand_in, scored, capsys):
    train, evaluate = setup(tmp_path, stand_in)
    out = tmp_path / "out"
    assert repeat(out, train, evaluate, 0, 1) == 0
    baselines = json.loads((out / "baselines.json").read_text())["conditions"]
    assert {"zero-shot chat", "zero-shot text", "labelled 3-shot"} <= set(baselines) and "baseline" not in baselines
    assert scored == [*baselines, "library", "library"]  # every baseline once, then each seed's library

    seed0 = json.loads((out / "eval-seed0.json").read_text())
    assert set(seed0["conditions"]) == {*baselines, "library"}
    assert seed0["conditions"]["library"]["rewards"] != seed0["conditions"]["zero-shot text"]["rewards"]
    summary = json.loads((out / "repeat.json").read_text())
    assert summary["train_seeds"] == [0, 1]
    assert summary["lifts"]["library"]["per_seed"] == [
        json.loads((out / f"eval-seed{s}.json").read_text())["comparisons"][0]["mean_diff"] for s in (0, 1)
    ]

    # `tfgrpo eval --baselines` on the same library scores the baselines beside it: the same result.
    scored.clear()
    alone = tmp_path / "eval.json"
    library = out / "library-seed0.db"
    assert main(["eval", *evaluate.split(), "--library", str(library), "--out", str(alone)]) == 0
    assert scored == [*baselines, "library"]
    assert {k: v for k, v in seed0.items() if k != "repeat"} == json.loads(alone.read_text())
    assert seed0["comparisons"][0]["baseline"] == seed0["strongest_baseline"]

    html = tmp_path / "report.html"
    report = ["report", "-l", str(library), "--eval", str(out / "eval-seed0.json"), "--eval", str(out / "repeat.json")]
    assert main([*report, "-o", str(html)]) == 0 and "library" in html.read_text()


def test_a_mistake_in_the_eval_args_is_found_before_any_training(tmp_path, stand_in, capsys):
    train, evaluate = setup(tmp_path, stand_in)
    with pytest.raises(SystemExit):
        repeat(tmp_path / "out", train, evaluate + " --no-such-flag", 0)
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-flag" in err and "one training seed (0): no spread" in err
    assert stand_in.requests == [] and not (tmp_path / "out" / "library-seed0.db").exists()


def test_a_rerun_resumes_grows_the_seeds_and_evaluates_again_when_settings_differ(tmp_path, stand_in, scored, capsys):
    train, evaluate = setup(tmp_path, stand_in)
    out = tmp_path / "out"
    assert repeat(out, train, evaluate, 0, 1) == 0
    first = json.loads((out / "repeat.json").read_text())
    capsys.readouterr()

    # The same command again: nothing trained, nothing scored, not one request to the model.
    requests, scored[:] = len(stand_in.requests), []
    assert repeat(out, train, evaluate, 0, 1) == 0
    err = capsys.readouterr().err
    assert len(stand_in.requests) == requests and scored == []
    assert f"reusing the baselines in {out / 'baselines.json'}" in err
    assert "training seed 0: reusing the library's evaluation" in err and "training seed 1: reusing" in err
    assert json.loads((out / "repeat.json").read_text()) == first

    # One more seed: only its library is trained and scored; all three are summarised.
    assert repeat(out, train, evaluate, 0, 1, 2) == 0
    err = capsys.readouterr().err
    assert scored == ["library"] and "training seed 2: reusing" not in err
    summary = json.loads((out / "repeat.json").read_text())
    assert (
        summary["train_seeds"] == [0, 1, 2]
        and summary["lifts"]["library"]["per_seed"][:2] == (first["lifts"]["library"]["per_seed"])
    )

    # Other evaluation settings: the saved results are not mixed in, everything is scored again.
    scored.clear()
    assert repeat(out, train, evaluate.replace("-k 2", "-k 3"), 0, 1) == 0
    err = capsys.readouterr().err
    assert "baselines.json: made by another run (k: 2 then, 3 now" in err
    assert "eval-seed0.json: made by another run (k: 2 then, 3 now" in err
    baselines = json.loads((out / "baselines.json").read_text())["conditions"]
    assert scored == [*baselines, "library", "library"]
    assert json.loads((out / "eval-seed1.json").read_text())["k"] == 3

    # A library saved since its evaluation (here: one trained further by hand) is evaluated again.
    from tfgrpo import TrainingFreeGRPO

    with TrainingFreeGRPO.open(str(out / "library-seed0.db")) as grpo:
        grpo.add_rollout_group([("What is 1+2?", "3"), ("What is 1+2?", "4")], [1.0, 0.0])
    scored.clear()
    assert repeat(out, train, evaluate.replace("-k 2", "-k 3"), 0, 1) == 0
    err = capsys.readouterr().err
    assert scored == ["library"] and "eval-seed0.json: made by another run (experiences:" in err

    # Other training settings for an existing library: refused by `tfgrpo train`, nothing overwritten.
    before = (out / "eval-seed0.json").read_text()
    assert repeat(out, train.replace("--batch-size 4", "--batch-size 2"), evaluate, 0, 1) == 1
    err = capsys.readouterr().err
    assert "trained (up to step" in err and "by a different run" in err and "failed" in err
    assert (out / "eval-seed0.json").read_text() == before

    # Showing the libraries' failures changes only the libraries' prompts: the baselines are reused.
    scored.clear()
    assert repeat(out, train, evaluate.replace("-k 2", "-k 3") + " --contrast", 0, 1) == 0
    err = capsys.readouterr().err
    assert f"reusing the baselines in {out / 'baselines.json'}" in err and scored == ["library", "library"]
    assert "contrast: False then, True now" in err


def test_train_on_a_finished_library_loads_no_model(tmp_path, stand_in, monkeypatch, capsys):
    train, _ = setup(tmp_path, stand_in)
    library = str(tmp_path / "lib.db")
    assert main(["train", *train.split(), "-l", library, "--strategy", "both"]) == 0
    capsys.readouterr()

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run opened a model")

    monkeypatch.setattr("tfgrpo.cli.train.make_backend", no_model)
    assert main(["train", *train.split(), "-l", library, "--strategy", "both"]) == 0
    out, err = capsys.readouterr()
    assert f"resuming {library} after step 2" in err and "steps run: 0" in out and "model usage: {}" in out


def test_a_seed_given_twice_is_refused_before_any_training(tmp_path, stand_in, capsys):
    train, evaluate = setup(tmp_path, stand_in)
    assert repeat(tmp_path / "out", train, evaluate, 0, 1, 0) != 0
    assert "a seed given twice" in capsys.readouterr().err
    assert stand_in.requests == [] and not (tmp_path / "out" / "library-seed0.db").exists()


def test_an_out_that_is_a_file_is_refused_before_any_training(tmp_path, stand_in, capsys):
    train, evaluate = setup(tmp_path, stand_in)
    a_file = tmp_path / "results"
    a_file.write_text("kept")
    assert repeat(a_file, train, evaluate, 0, 1) != 0
    assert f"--out {a_file}: a file is in the way" in capsys.readouterr().err
    assert stand_in.requests == [] and a_file.read_text() == "kept"


def test_a_damaged_saved_result_is_said_and_scored_again(tmp_path, stand_in, scored, capsys):
    train, evaluate = setup(tmp_path, stand_in)
    out = tmp_path / "out"
    assert repeat(out, train, evaluate, 0) == 0
    first = json.loads((out / "repeat.json").read_text())
    baselines = json.loads((out / "baselines.json").read_text())
    (out / "baselines.json").write_text(json.dumps({**baselines, "conditions": {"zero-shot chat": 5}}))
    (out / "eval-seed0.json").write_text("{not json")
    scored.clear()
    with pytest.warns(TFGRPOWarning) as said:
        assert repeat(out, train, evaluate, 0) == 0
    said = [str(w.message) for w in said]
    assert any(f"{out / 'baselines.json'} cannot be read back (its conditions are of another shape" in w for w in said)
    assert any(f"{out / 'eval-seed0.json'} cannot be read back (" in w for w in said)
    assert scored == [*baselines["conditions"], "library"]  # everything scored again, nothing lost
    assert json.loads((out / "repeat.json").read_text())["lifts"] == first["lifts"]
