"""`tfgrpo report`: a self-contained HTML file, checked as written and as real headless Chromium shows it
(no network request, no console error, every plot drawn, library text escaped), with a screenshot."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from support.browser import Browser, chromium_path
from support.report import HOSTILE, KEY, build
from tfgrpo.cli import main
from tfgrpo.errors import ConfigError
from tfgrpo.report import write_report

PLOTS = {
    "plot-reward",
    "plot-library",
    "plot-tokens",
    "plot-advantages",
    "plot-eval-eval",
    "plot-attribution-attribution",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return build(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", "-l", str(trained["library"]), "--eval", str(trained["eval"]),
                 "--eval", str(trained["attribution"]), "-o", str(out)]) in (0, None)  # fmt: skip
    return out


def test_the_report_is_one_file_with_every_plot_inline_and_the_text_escaped(report):
    html = report.read_text(encoding="utf-8")
    assert html.count("<svg") >= len(PLOTS)
    for plot in PLOTS:
        assert f'id="{plot}"' in html
    # Nothing is fetched: no script, no link, no external reference of any kind.
    assert "<script" not in html and "<link" not in html and "<img" not in html
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:|//)""", html)
    assert "&lt;img src=&quot;http://127.0.0.1:9/pixel.png&quot;&gt;" in html  # the hostile lesson, as text
    assert KEY in html and "Holm" in html and "strongest baseline" in html.lower()
    assert "v2 (apply, step 2)" in html  # the lesson history, each version with its operations


def test_a_result_file_of_the_wrong_kind_is_refused(trained, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match="not an eval, attribute, repeat or continual result"):
        write_report(trained["library"], tmp_path / "r.html", [bad])
    assert not (tmp_path / "r.html").exists()
    for kind in ("evaluation", "attribution", "repeat", "continual"):  # the right kind, the wrong shape
        bad.write_text(json.dumps({"kind": kind, "conditions": {"x": 1}}))
        with pytest.raises(ConfigError, match=f"bad.json: not a readable {kind} result"):
            write_report(trained["library"], tmp_path / "r.html", [bad])
    assert not (tmp_path / "r.html").exists()


def chromium_or_skip() -> None:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")


def test_chromium_shows_every_plot_with_no_network_and_no_console_error(report, tmp_path):
    chromium_or_skip()
    with Browser() as browser:
        session = browser.open(report.resolve().as_uri())
        plots = browser.evaluate(session, "[...document.querySelectorAll('figure.plot')].map(f => f.id)")
        drawn = browser.evaluate(
            session,
            "[...document.querySelectorAll('figure.plot svg')].filter(s => s.getBoundingClientRect().width > 100"
            " && s.querySelectorAll('path').length > 5).length",
        )
        injected = browser.evaluate(session, "document.querySelectorAll('img, script, iframe').length")
        text = browser.evaluate(session, "document.body.innerText")
        shot = tmp_path / "report.png"
        browser.screenshot(session, str(shot))
        requests, errors = browser.requests(), browser.errors()
    assert PLOTS <= set(plots) and drawn == len(plots)
    assert injected == 0 and HOSTILE in text  # the lesson's markup is shown as text, never run
    assert errors == []
    assert requests and all(url.startswith("file://") for url in requests), requests
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("TFGRPO_KEEP_SCREENSHOT")  # docs/report.png is refreshed with this set
    if keep:
        shutil.copy(shot, keep)


def test_one_evaluation_seed_is_said_to_have_no_spread(trained, tmp_path):
    # The report showed "sd across eval seeds 0.000" for a single seed: no spread is not a spread of zero.
    import json

    import numpy as np

    from tfgrpo.loop.evaluate import ConditionResult, EvalConfig, report_of

    baseline = ConditionResult("zero-shot chat", np.array([[1.0, 0.0], [0.0, 0.0]]), 1.0, baseline=True)
    library = ConditionResult("library", np.array([[1.0, 1.0], [0.0, 1.0]]), 1.0)
    result = report_of([baseline, library], [{"id": "a"}, {"id": "b"}], EvalConfig(k=2)).to_dict()
    assert result["conditions"]["library"]["seed_std"] is None
    path = tmp_path / "one-seed.json"
    path.write_text(json.dumps(result))
    html = write_report(trained["library"], tmp_path / "r.html", [path]).read_text(encoding="utf-8")
    assert "one evaluation seed, so no spread across seeds" in html and "sd across eval seeds" not in html
    two = write_report(trained["library"], tmp_path / "r2.html", [trained["eval"]]).read_text(encoding="utf-8")
    assert "2 evaluation seeds" in two and "sd across eval seeds" in two
