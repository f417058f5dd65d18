"""`tfgrpo lessons import/export` with the paper's agent YAML, as a user types it (`tfgrpo.cli.main`
in-process)."""

import json
from pathlib import Path

import yaml

from support.cli import tfgrpo
from tfgrpo.semantic import LessonLibrary

FIXTURES = Path(__file__).parent / "fixtures" / "youtu-agent"


def run(*args: object):
    return tfgrpo(*args, check=False)


def test_import_and_export_the_papers_agent_yaml(tmp_path):
    lib, paper = tmp_path / "lessons.db", FIXTURES / "math_practice_agent.yaml"
    imported = run("lessons", "import", paper, "-l", lib)
    assert imported.returncode == 0, imported.stderr
    assert "27 lessons at version 1" in imported.stdout and "note:" not in imported.stderr
    shown = json.loads(run("lessons", "show", "--json", "-l", lib).stdout)
    with LessonLibrary() as direct:
        direct.import_agent_yaml(paper)
        assert shown == direct.lessons and len(shown["G5"].split()) == 36  # not cut to 32 words

    # A new .yml file: a minimal agent config; an existing one keeps its config; --base reads another.
    fresh, existing, based = tmp_path / "new.yml", tmp_path / "web.yaml", tmp_path / "based.yaml"
    existing.write_text((FIXTURES / "web_practice_agent.yaml").read_text())
    assert run("lessons", "export", fresh, "-l", lib).returncode == 0
    assert run("lessons", "export", existing, "-l", lib).returncode == 0
    assert run("lessons", "export", based, "--base", paper, "-l", lib).returncode == 0
    assert yaml.safe_load(fresh.read_text())["type"] == "simple"
    web = yaml.safe_load(existing.read_text())
    assert web["toolkits"]["search"]["config"]["search_engine"] == "google"
    assert web["agent"]["instructions"].startswith("You are a helpful assistant.\n\nWhen solving problems")
    assert yaml.safe_load(based.read_text())["toolkits"] == yaml.safe_load(paper.read_text())["toolkits"]
    for path in (fresh, existing, based):
        other = tmp_path / f"{path.stem}.db"
        assert run("lessons", "import", path, "-l", other).returncode == 0
        assert json.loads(run("lessons", "show", "--json", "-l", other).stdout) == shown


def test_a_yaml_that_is_not_an_agent_config_is_refused(tmp_path):
    lib, bad = tmp_path / "lessons.db", tmp_path / "practice.yaml"
    bad.write_text("exp_id: math\npractice:\n  epochs: 3\n")
    refused = run("lessons", "import", bad, "-l", lib)
    assert refused.returncode == 1 and "not an agent config (no `agent:` section)" in refused.stderr
    assert "Traceback" not in refused.stderr
    exported = run("lessons", "export", bad, "-l", lib)
    assert exported.returncode == 1 and "not an agent config" in exported.stderr
    assert bad.read_text() == "exp_id: math\npractice:\n  epochs: 3\n"
