"""`tfgrpo continual`: the accuracy matrix and GEM's figures, the phases, the baselines that learn from the
same stream, resuming, and the command, with a scripted student for a model (tests/support/students.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support.cli import tfgrpo
from support.students import Student, domain_samples
from tfgrpo.errors import ConfigError, TFGRPOWarning
from tfgrpo.loop.continual import (
    across_seeds,
    by_domain,
    fixed_shots,
    gem_figures,
    knn_library,
    make_plan,
    merge,
    summarise,
)
from tfgrpo.tasks import get_task

DOMAINS = ["dates", "json", "quote"]


def test_gem_figures_follow_the_definitions():
    # Row 0 before training; domain j learned in phase j + 1.
    R = np.array(
        [
            [0.1, 0.2, 0.0],
            [0.9, 0.3, 0.1],
            [0.6, 0.8, 0.2],
            [0.5, 0.7, 1.0],
        ]
    )
    f = gem_figures(R)
    assert f["acc"] == pytest.approx((0.5 + 0.7 + 1.0) / 3)
    assert f["bwt"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)  # R[T][j] - R[j][j]
    assert f["fwt"] == pytest.approx(((0.3 - 0.2) + (0.2 - 0.0)) / 2)  # R[j-1][j] - b_j
    assert f["seen"] == [None, pytest.approx(0.9), pytest.approx(0.7), pytest.approx(2.2 / 3)]
    assert f["all"][0] == pytest.approx(0.1)
    mixed = gem_figures(R, "mixed")
    assert mixed["bwt"] is None and mixed["fwt"] is None and "seen" not in mixed and mixed["acc"] == f["acc"]


def test_figures_across_seeds_have_a_t_interval_and_a_lift_over_the_strongest_baseline():
    figure = across_seeds([0.2, 0.4, 0.6])
    assert figure is not None and figure.pop("per_seed") == [0.2, 0.4, 0.6]
    half = 4.303 * 0.2 / 3**0.5  # t with 2 degrees of freedom
    assert figure == pytest.approx({"mean": 0.4, "ci_low": 0.4 - half, "ci_high": 0.4 + half, "sd": 0.2})
    assert across_seeds([0.2, None]) is None
    plan = make_plan(*[by_domain(domain_samples(DOMAINS[:2], 2), DOMAINS[:2])] * 2)
    flat = {s: np.full((3, 2), 0.5) for s in (0, 1, 2)}
    better = {s: np.array([[0.5, 0.5], [0.9, 0.5], [0.8, 0.7 + 0.1 * s]]) for s in (0, 1, 2)}
    summary = summarise({"zero-shot": flat, "fixed": flat, "library": better}, plan)
    assert summary["strongest_baseline"] in ("zero-shot", "fixed")
    lift = summary["lifts"]["library"]
    assert lift["per_seed"] == pytest.approx([0.75 - 0.5, 0.8 - 0.5, 0.85 - 0.5])
    assert lift["ci_low"] < lift["mean"] < lift["ci_high"]
    assert summary["conditions"]["library"]["curves"]["seen"][1]["mean"] == pytest.approx(0.9)


def test_the_plan_is_a_phase_per_domain_or_the_same_samples_mixed():
    task = get_task("multidomain", domains=",".join(DOMAINS), n=6, test_fraction=0.5)
    train, test = by_domain(task.load("train"), DOMAINS), by_domain(task.load("test"), DOMAINS)
    phases = make_plan(train, test)
    assert [name for name, _ in phases.phases] == DOMAINS
    assert all(s["domain"] == name for name, samples in phases.phases for s in samples)
    assert [s["domain"] for s in phases.test] == [d for d in DOMAINS for _ in range(3)]
    mixed = make_plan(train, test, "mixed", seed=4)
    assert sorted(s["id"] for _, p in mixed.phases for s in p) == sorted(s["id"] for _, p in phases.phases for s in p)
    assert len({s["domain"] for s in mixed.phases[0][1]}) > 1
    assert mixed.fingerprint() != make_plan(train, test, "mixed", seed=5).fingerprint()
    with pytest.raises(ConfigError, match="no samples of domain"):
        by_domain(task.load("train"), ["dates", "chess"])
    with pytest.raises(ConfigError, match="has no domain"):
        by_domain([{"id": "a", "prompt": "x"}])


def test_fixed_shots_take_the_domains_in_turn_and_knn_keeps_every_success_with_its_domain():
    samples = domain_samples(DOMAINS, 3)
    pool = [(s, f"answer {s['id']}") for s in samples]  # domain after domain, as a phase schedule meets them
    assert [p for p, _ in fixed_shots(pool, 4)] == [samples[i]["prompt"] for i in (0, 3, 6, 1)]
    assert fixed_shots(pool[:1], 3) == ((samples[0]["prompt"], "answer dates-0-0"),)
    library = knn_library(pool)
    assert library.library_size() == 9
    assert {e.metadata["domain"] for e in library.experience_library} == set(DOMAINS)


@pytest.fixture
def student(monkeypatch):
    """`--model local` answered by a scripted student of the task's samples."""
    samples = get_task("multidomain", n=6, test_fraction=0.5).load("all")  # every domain's
    made: list[Student] = []

    def get_backend(spec, **kwargs):
        made.append(Student(samples))
        return made[-1]

    monkeypatch.setattr("tfgrpo.llm.get_backend", get_backend)
    return made


ARGS = ["--task", "multidomain", "--task-option", f"domains={','.join(DOMAINS)}", "--task-option", "n=6",
        "--task-option", "test_fraction=0.5", "-G", "8", "--batch-size", "3", "-k", "2", "--shots", "2",
        "--example-format", "turns"]  # fmt: skip


def test_continual_measures_forgetting_and_transfer_against_the_baselines(student, tmp_path):
    out = tmp_path / "out"
    ran = tfgrpo("continual", *ARGS, "--seeds", "0", "1", "--out", out, "--select", "retrieve",
                 "--retrieval-mode", "lexical", "--name", "retrieve")  # fmt: skip
    result = json.loads((out / "continual.json").read_text())
    assert result["kind"] == "continual" and result["domains"] == DOMAINS
    assert result["phases"] == ["before training", *DOMAINS]
    conditions = result["conditions"]
    assert set(conditions) == {"zero-shot", "fixed", "knn", "retrieve"}
    zero = np.asarray(conditions["zero-shot"]["R"]["0"])
    for name in conditions:  # before training every condition prompts as zero-shot does
        for seed in ("0", "1"):
            assert conditions[name]["R"][seed][0] == pytest.approx(zero[0].tolist())
    assert (zero == zero[0]).all()  # no state: every row the one before training
    # The student answers right once it is shown a success of the same domain: retrieval finds one per
    # domain, so after a domain's phase it is learned and stays learned.
    R = np.asarray(conditions["retrieve"]["R"]["0"])
    for j in range(len(DOMAINS)):
        assert R[j + 1, j] == 1.0 and R[-1, j] == 1.0
        assert R[j, j] == pytest.approx(zero[0, j])  # nothing of it was seen before its phase
    assert conditions["retrieve"]["bwt"]["mean"] == 0.0
    assert conditions["retrieve"]["acc"]["mean"] == 1.0
    # Two fixed examples cannot show three domains: the last domain is never learned by `fixed`.
    fixed = np.asarray(conditions["fixed"]["R"]["0"])
    assert fixed[-1, 2] == pytest.approx(zero[0, 2]) and fixed[-1, 0] == 1.0
    assert conditions["knn"]["acc"]["mean"] == 1.0
    assert result["lifts"]["retrieve"]["baseline"] == result["strongest_baseline"] == "knn"
    assert "ACC" in ran.stdout and "retrieve - knn" in ran.stdout
    # The baselines are kept for the next run on the same prompts and seeds: nothing is scored again.
    calls = student[-1].calls
    again = tfgrpo("continual", *ARGS, "--seeds", "0", "1", "--out", out, "--select", "retrieve",
                   "--retrieval-mode", "lexical", "--name", "retrieve")  # fmt: skip
    assert student[-1].calls == 0 and calls > 0
    assert json.loads((out / "continual.json").read_text())["conditions"] == conditions
    assert again.stdout == ran.stdout


def test_a_killed_run_resumes_to_the_result_of_an_unbroken_one(student, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    tfgrpo("continual", *ARGS, "--seeds", "0", "--out", whole, "--no-baselines")
    expected = json.loads((whole / "continual.json").read_text())["conditions"]["library"]["R"]
    calls = student[-1].calls
    samples = student[-1].known.values()

    for stop in (calls // 3, 2 * calls // 3):  # killed in the first phases, then later

        def get_backend(spec, stop=stop, **kwargs):
            student.append(Student(list(samples), fail_after=stop))
            return student[-1]

        monkeypatch.setattr("tfgrpo.llm.get_backend", get_backend)
        killed = tfgrpo("continual", *ARGS, "--seeds", "0", "--out", tmp_path / "broken", "--no-baselines", check=False)
        assert killed.returncode == 130 and "resume" in killed.stderr
    monkeypatch.setattr(
        "tfgrpo.llm.get_backend", lambda spec, **kw: student.append(Student(list(samples))) or student[-1]
    )
    tfgrpo("continual", *ARGS, "--seeds", "0", "--out", tmp_path / "broken", "--no-baselines")
    resumed = json.loads((tmp_path / "broken" / "continual.json").read_text())["conditions"]["library"]["R"]
    assert resumed == expected
    assert student[-1].calls < calls  # the resumed run did only what was left


def test_a_damaged_saved_score_or_pool_is_said_and_made_again(student, tmp_path):
    out = tmp_path / "out"
    tfgrpo("continual", *ARGS, "--seeds", "0", "--out", out)
    expected = json.loads((out / "continual.json").read_text())["conditions"]
    damaged = {
        out / "baselines" / "zero-shot.json": "not json",
        out / "baselines" / "seed0" / "pool-phase1.json": json.dumps({"identity": None, "successes": 3}),
        out / "baselines" / "seed0" / "phase2.json": "[1, 2]",
        out / "seed0" / "phase3.json": json.dumps({"identity": None, "rewards": {"library": "x"}}),
    }
    for path, text in damaged.items():
        assert path.exists(), path
        if text.startswith('{"identity": null'):  # the right identity, a body of another shape
            saved = json.loads(path.read_text())
            text = json.dumps({**json.loads(text), "identity": saved["identity"]})
        path.write_text(text)
    with pytest.warns(TFGRPOWarning) as said:
        tfgrpo("continual", *ARGS, "--seeds", "0", "--out", out)
    for path in damaged:
        assert any(f"{path} cannot be read back" in str(w.message) for w in said), path
    assert json.loads((out / "continual.json").read_text())["conditions"] == expected


def test_a_mixed_schedule_reports_accuracy_without_transfer(student, tmp_path):
    ran = tfgrpo("continual", *ARGS, "--seeds", "0", "--out", tmp_path, "--schedule", "mixed", "--no-baselines")
    assert "(one seed)" in ran.stdout and ".. " not in ran.stdout  # one training seed: no interval shown
    result = json.loads((tmp_path / "continual.json").read_text())
    library = result["conditions"]["library"]
    assert result["phases"] == ["before training", "mixed 1", "mixed 2", "mixed 3"]
    assert library["acc"] is not None and library["bwt"] is None and library["fwt"] is None


def test_routing_by_metadata_retrieves_only_the_prompts_own_domain(student, tmp_path):
    # quote, lower and hyphen requests draw from one vocabulary: retrieval by words mixes them up.
    words = ["--task-option", "domains=quote,lower,hyphen"]
    tfgrpo("continual", *ARGS, *words, "--seeds", "0", "--out", tmp_path, "--no-baselines", "--select", "retrieve",
           "--retrieval-mode", "lexical", "--where", "domain", "--shots", "3")  # fmt: skip
    from tfgrpo import TrainingFreeGRPO

    with TrainingFreeGRPO.open(tmp_path / "library-seed0.db") as library:
        assert {e.metadata["domain"] for e in library.experience_library} == {"quote", "lower", "hyphen"}
    # Every prompt with examples (training rollouts and evaluations) showed only its own domain's; without
    # --where, lexical retrieval of three shots shows other domains too.
    routed = [(asked, shown) for asked, shown in student[-1].shown if shown]
    assert routed and all(shown == {asked} for asked, shown in routed)
    tfgrpo("continual", *ARGS, *words, "--seeds", "0", "--out", tmp_path / "unrouted", "--no-baselines", "--select",
           "retrieve", "--retrieval-mode", "lexical", "--shots", "3")  # fmt: skip
    assert any(shown - {asked} for asked, shown in student[-1].shown)
    result = json.loads((tmp_path / "continual.json").read_text())
    assert result["conditions"]["library"]["acc"]["mean"] == 1.0


def test_routing_with_a_fallback_borrows_only_while_a_domain_has_nothing_of_its_own(student, tmp_path):
    words = ["--task-option", "domains=quote,lower,hyphen"]
    tfgrpo("continual", *ARGS, *words, "--seeds", "0", "--out", tmp_path, "--no-baselines", "--select", "retrieve",
           "--retrieval-mode", "lexical", "--where", "domain", "--where-fallback", "--shots", "3")  # fmt: skip
    shown = [(asked, seen) for asked, seen in student[-1].shown if seen]
    borrowed = [i for i, (asked, seen) in enumerate(shown) if asked not in seen]
    own = [i for i, (asked, seen) in enumerate(shown) if asked in seen]
    assert borrowed and own  # a new domain's first prompts borrowed, later ones had their own
    assert all(seen == {asked} for asked, seen in shown if asked in seen)  # never a mix
    # Once a domain shows its own, it never borrows again (the library only grows here).
    for domain in ("quote", "lower", "hyphen"):
        mine = [i for i, (asked, _) in enumerate(shown) if asked == domain]
        first_own = next((i for i in mine if i in own), None)
        assert first_own is None or all(i in own for i in mine if i > first_own)


def test_bad_continual_arguments_are_clear_errors(student, tmp_path):
    ran = tfgrpo("continual", *ARGS, "--domains", "dates,dates", "--out", tmp_path, check=False)
    assert ran.returncode == 1 and "each domain once" in ran.stderr
    ran = tfgrpo("continual", *ARGS, "--domains", "dates,chess", "--out", tmp_path, check=False)
    assert ran.returncode == 1 and "no samples of domain(s) chess" in ran.stderr
    ran = tfgrpo("continual", "--domains", "dates,chess", "--out", tmp_path, check=False)  # multidomain by default
    assert ran.returncode == 1 and "the training data has dates, json, quote, lower, hyphen" in ran.stderr
    ran = tfgrpo("continual", "--domains", "dates", "--task-option", "n=1", "--out", tmp_path, check=False)
    assert ran.returncode == 1 and "no samples of domain(s) dates; the held-out data is empty" in ran.stderr
    ran = tfgrpo("continual", *ARGS, "--where", "domain", "--out", tmp_path, check=False)
    assert ran.returncode == 1 and "--select retrieve" in ran.stderr
    ran = tfgrpo("continual", *ARGS, "--seeds", "1", "1", "--out", tmp_path, check=False)
    assert ran.returncode == 1 and "each training seed once" in ran.stderr
    # Refused before any model call: a capacity of nothing, an --out or --baselines-dir that is a file.
    ran = tfgrpo("continual", *ARGS, "--max-library-size", "0", "--out", tmp_path / "a", check=False)
    assert ran.returncode == 1 and "max_library_size must be >= 1" in ran.stderr
    a_file = tmp_path / "a-file"
    a_file.write_text("kept")
    ran = tfgrpo("continual", *ARGS, "--out", a_file, check=False)
    assert ran.returncode == 1 and f"--out {a_file}: a file is in the way" in ran.stderr
    ran = tfgrpo("continual", *ARGS, "--out", tmp_path / "b", "--baselines-dir", a_file, check=False)
    assert ran.returncode == 1 and "--baselines-dir" in ran.stderr and a_file.read_text() == "kept"
    ran = tfgrpo("continual", *ARGS, "--out", a_file / "below", check=False)
    assert ran.returncode == 1 and "cannot make the folder" in ran.stderr
    # A library condition named as a baseline took the baseline's row; baselines beside --out overwrote it.
    ran = tfgrpo("continual", *ARGS, "--name", "zero-shot", "--out", tmp_path / "c", check=False)
    assert ran.returncode == 1 and "other than zero-shot, fixed, knn" in ran.stderr
    ran = tfgrpo("continual", *ARGS, "--out", tmp_path / "d", "--baselines-dir", tmp_path / "d", check=False)
    assert ran.returncode == 1 and "give the baselines a folder of their own" in ran.stderr  # (alone, they may)
    ran = tfgrpo("continual", *ARGS, "--no-baselines", "--baselines-only", "--out", tmp_path / "e", check=False)
    assert ran.returncode == 1 and "one or the other" in ran.stderr
    ran = tfgrpo("continual", *ARGS, "--active", "--out", tmp_path / "e", check=False)  # train's: it did nothing here
    assert ran.returncode == 2 and "unrecognized arguments: --active" in ran.stderr
    (tmp_path / "n.yaml").write_text("seeds: []\nname: null\n")
    ran = tfgrpo("continual", *ARGS, "--config", tmp_path / "n.yaml", "--out", tmp_path / "e", check=False)
    assert ran.returncode == 1 and "takes one value or more" in ran.stderr and "Traceback" not in ran.stderr
    assert student == []  # refused before a model was even made


def test_print_config_prints_and_runs_nothing(student, tmp_path):
    ran = tfgrpo("continual", *ARGS, "--out", tmp_path / "out", "--print-config", "json")
    printed = json.loads(ran.stdout)
    assert printed["out"] == str(tmp_path / "out") and printed["group_size"] == 8
    assert student == [] and not (tmp_path / "out").exists()


def test_a_rerun_of_another_kind_is_refused_before_any_call_or_scored_again(student, tmp_path):
    """Into the same --out: a library trained by another run is refused before anything is scored (the
    baselines it found were scored again and overwritten first), and another model or reward does not
    reuse the first one's scores."""
    out = tmp_path / "out"
    tfgrpo("continual", *ARGS, "--seeds", "0", "--out", out)
    first = json.loads((out / "continual.json").read_text())
    kept = {p: p.read_bytes() for p in (out / "baselines").rglob("*.json")}
    made = len(student)
    ran = tfgrpo("continual", *ARGS, "--seeds", "0", "--out", out, "--schedule", "mixed", check=False)
    assert ran.returncode == 1 and "trained (up to step" in ran.stderr and "by a different run" in ran.stderr
    assert len(student) == made and {p: p.read_bytes() for p in kept} == kept  # no model made, nothing scored
    another = ["--model", "openai:another@http://127.0.0.1:9/v1"]
    ran = tfgrpo("continual", *ARGS, "--seeds", "0", "--out", out, *another, "-l", tmp_path / "o.db", check=False)
    assert ran.returncode == 1 and "holds the results of another continual run (it differs in: library, source)" in (
        ran.stderr
    )
    assert len(student) == made
    # Into a folder of its own beside the same baselines: the zero-shot row is scored again, for this model.
    tfgrpo("continual", *ARGS, "--seeds", "0", "--out", tmp_path / "out2", *another, "--baselines-dir",
           out / "baselines", "--no-baselines")  # fmt: skip
    assert len(student) == made + 1 and student[-1].calls > 0
    zero = json.loads((out / "baselines" / "zero-shot.json").read_text())
    assert zero["identity"]["source"]["model"] == another[1]
    tfgrpo("continual", *ARGS, "--seeds", "0", "--out", out)  # the first run again: its figures, once more
    assert json.loads((out / "continual.json").read_text())["conditions"] == first["conditions"]


def test_runs_on_the_same_prompts_are_compared_side_by_side(student, tmp_path):
    shared = ["--seeds", "0", "--retrieval-mode", "lexical", "--baselines-dir", tmp_path / "baselines"]
    tfgrpo("continual", *ARGS, *shared, "--out", tmp_path / "a", "--select", "retrieve", "--name", "retrieve")
    tfgrpo("continual", *ARGS, *shared, "--out", tmp_path / "b", "--no-baselines", "--name", "sample")
    first, second = (json.loads((tmp_path / d / "continual.json").read_text()) for d in ("a", "b"))
    assert set(second["conditions"]) == {"zero-shot", "sample"}
    merged = merge([first, second])
    assert set(merged["conditions"]) == {"zero-shot", "fixed", "knn", "retrieve", "sample"}
    assert set(merged["lifts"]) == {"retrieve", "sample"}
    assert merged["lifts"]["sample"]["baseline"] == merged["strongest_baseline"] == first["strongest_baseline"]
    assert merged["conditions"]["sample"]["R"] == second["conditions"]["sample"]["R"]
    out = tmp_path / "report.html"
    tfgrpo("report", "-l", tmp_path / "a" / "library-seed0.db", "--eval", tmp_path / "a" / "continual.json",
           "--eval", tmp_path / "b" / "continual.json", "-o", out)  # fmt: skip
    html = out.read_text()
    side = html[html.index("Continual conditions side by side") :]
    assert all(f'id="plot-continual-matrix-{c}-side-by-side"' in side for c in ("retrieve", "sample", "knn"))
    assert 'id="plot-continual-matrix-retrieve-a-continual"' in html and "plot-continual-seen-b-continual" in html
    # Results of other prompts, or one condition scored two ways, are not merged.
    other = tmp_path / "c"
    tfgrpo("continual", *ARGS, "--seeds", "0", "--out", other, "--no-baselines", "--domains", "dates,json")
    with pytest.raises(ConfigError, match="different plans"):
        merge([first, json.loads((other / "continual.json").read_text())])
    renamed = json.loads(json.dumps(second).replace('"sample"', '"retrieve"'))
    with pytest.raises(ConfigError, match="scored differently"):
        merge([first, renamed])
    with pytest.raises(ConfigError, match="no continual results"):
        merge([])
    # A result file is data from elsewhere: one of another shape is named, and no report is written.
    damaged = {
        "R": lambda d: d["conditions"]["sample"].__setitem__("R", {"0": "x"}),
        "R-shape": lambda d: d["conditions"]["sample"].__setitem__("R", {"0": [[0.5, 0.5]]}),
        "R-none": lambda d: d["conditions"]["sample"].__setitem__("R", {}),
        "phases": lambda d: d.__setitem__("phases", None),
        "conditions": lambda d: d.__setitem__("conditions", []),
    }
    for field, damage in damaged.items():
        bad = json.loads(json.dumps(second))
        damage(bad)
        path = tmp_path / f"damaged-{field}.json"
        path.write_text(json.dumps(bad))
        for files in ([path], [tmp_path / "a" / "continual.json", path]):
            args = [a for f in files for a in ("--eval", f)]
            ran = tfgrpo(
                "report", "-l", tmp_path / "a" / "library-seed0.db", *args, "-o", tmp_path / "x.html", check=False
            )
            assert ran.returncode == 1 and f"{path}: " in ran.stderr and "Traceback" not in ran.stderr, (field, files)
    assert not (tmp_path / "x.html").exists()
    # Its figures are made again from its matrices: a file's own (here made up) are not drawn.
    tampered = json.loads(json.dumps(second))
    tampered["conditions"]["sample"]["acc"] = {"mean": 0.987654, "ci_low": 0.9, "ci_high": 1.0, "per_seed": [1.0]}
    tampered["conditions"]["sample"]["R_mean"] = [[1, 2], [3]]
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    args = ["-l", tmp_path / "a" / "library-seed0.db", "--eval", tmp_path / "tampered.json", "-o", tmp_path / "x.html"]
    tfgrpo("report", *args)
    assert "+0.988 (one seed)" not in (tmp_path / "x.html").read_text()


@pytest.mark.parametrize(
    "extra",
    [
        ["--select", "sample"],
        ["--select", "retrieve", "--advantage-weight", "0.5"],
        ["--strategy", "lessons", "--shots", "0"],
        ["--strategy", "both", "--select", "retrieve"],
        ["--select", "retrieve", "--max-library-size", "2", "--eviction-policy", "balanced"],  # (warns: tiny)
        pytest.param(["--select", "retrieve", "--shots", "0", "--guidance", "bias"], marks=pytest.mark.slow),
    ],
    ids=["sample", "advantage-weight", "lessons", "both", "capacity", "bias"],  # bias: the bundled tokenizer
)
def test_every_library_condition_of_the_benchmark_runs_beside_the_same_baselines(student, tmp_path, extra):
    shared = ["--seeds", "0", "--retrieval-mode", "lexical", "--baselines-dir", tmp_path / "baselines"]
    tfgrpo("continual", *ARGS, *shared, "--out", tmp_path / "a", "--baselines-only")
    tfgrpo("continual", *ARGS, *shared, *extra, "--out", tmp_path / "b", "--no-baselines", "--name", "this")
    baselines, this = (json.loads((tmp_path / d / "continual.json").read_text()) for d in ("a", "b"))
    merged = merge([baselines, this])
    assert set(merged["conditions"]) == {"zero-shot", "fixed", "knn", "this"}
    R = np.asarray(merged["conditions"]["this"]["R"]["0"])
    assert R.shape == (len(DOMAINS) + 1, len(DOMAINS)) and R[0].tolist() == this["conditions"]["zero-shot"]["R_mean"][0]
    assert merged["lifts"]["this"]["baseline"] == merged["strongest_baseline"]
    if "--max-library-size" in extra:
        from tfgrpo import TrainingFreeGRPO

        with TrainingFreeGRPO.open(tmp_path / "b" / "library-seed0.db") as library:
            assert library.library_size() <= 2


def test_constrained_decoding_needs_a_local_model(student, tmp_path):
    ran = tfgrpo("continual", *ARGS, "--seeds", "0", "--out", tmp_path, "--no-baselines", "--select", "retrieve",
                 "--shots", "0", "--guidance", "constrain", check=False)  # fmt: skip
    assert ran.returncode == 1 and "--guidance constrain needs a local model" in ran.stderr


def test_each_training_seed_has_a_library_of_its_own_beside_a_file_or_in_a_schema_of_its_own():
    from tfgrpo.cli.continual import seed_library

    assert seed_library("runs/lib.db", 2) == "runs/lib-seed2.db"
    url = seed_library("postgresql://u:pw@db.internal:5432/tfgrpo?schema=exp&sslmode=disable", 1)
    assert url == "postgresql://u:pw@db.internal:5432/tfgrpo?sslmode=disable&schema=exp_seed1"
    assert seed_library("postgresql://db.internal/tfgrpo", 0) == "postgresql://db.internal/tfgrpo?schema=library_seed0"
