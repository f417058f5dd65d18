"""`tfgrpo export` / `tfgrpo import` take the rollout log (with its retention) and `tfgrpo serve`'s records
along: SQLite to PostgreSQL to a full JSON copy to SQLite, every row the same; an import into an existing
library adds the logged rollouts and says what of the records it left; damaged rows are refused."""

from __future__ import annotations

import json
import sqlite3

import pytest

from store.server import raw_query
from tfgrpo import TrainingFreeGRPO
from tfgrpo.cli import main
from tfgrpo.core.store.proxy_tables import PROXY_TABLES
from tfgrpo.learn.rollout_log import COLUMNS, Recorder, RolloutLog
from tfgrpo.rewards.base import Score
from tfgrpo.server.records import Completion, CompletionRecords, Sent
from tfgrpo.transfer import TABLES


def run(*argv) -> int:
    return main([str(a) for a in argv])


def make_library(path) -> None:
    """Experiences, 3 pages' worth of logged rollouts (a page is 2,000), served completions with feedback."""
    with TrainingFreeGRPO.open(path) as lib:
        lib.add_rollout_group([("p", "good"), ("p", "bad")], [1.0, 0.0])
    with RolloutLog(path, retention_days=30) as log:
        record = Recorder(log, "train", "run", task="t")
        for i in range(2100):
            sample = {"id": f"s{i}", "prompt": f"question {i} \u00e9", "answer": str(i)}
            record.add(
                sample, [{"role": "user", "content": "as sent"}], [_run("a"), _run("b")], [Score(1.0), Score(0.0)]
            )
        record.flush()
    records = CompletionRecords(path, group_size=2)
    try:
        for cid in ("c1", "c2"):
            records.add(Completion(cid, "2+2?", ["4"], sent=Sent("2+2?", "lib"))).result()
        records.feedback("c1", {0: 1.0}).result()
        assert records.feedback("c2", {0: 0.0}).result().groups == (1,)
    finally:
        records.close()


def rows(target: str) -> dict[str, list]:
    return {
        name: sorted(raw_query(target, f"SELECT {', '.join(columns)} FROM {name}"))
        for name, (columns, _) in TABLES.items()
    }


def test_the_log_and_the_records_survive_sqlite_to_postgresql_to_json_to_sqlite(postgres_server, tmp_path, capsys):
    source = str(tmp_path / "source.db")
    make_library(source)
    before = rows(source)
    assert len(before["rollout_log"]) == 4200 + 2 and len(before["proxy_feedback"]) == 2
    url = postgres_server.new_url()
    assert run("export", "-l", source, url) == 0
    assert "4202 logged rollouts, 2 served completions" in capsys.readouterr().out
    assert rows(url) == before
    dump = tmp_path / "everything.json"
    assert run("export", "-l", url, dump, "--full") == 0
    back = str(tmp_path / "back.db")
    assert run("import", dump, "-l", back) == 0
    assert rows(back) == before
    with RolloutLog(back) as log:
        assert log.retention_days == 30
    records = CompletionRecords(back, group_size=2)  # the copy serves on: its records read as before
    try:
        assert records.counts() == {"completions": 2, "feedback": 2, "groups": 1}
        assert records.get("c1")["rewards"] == {"0": 1.0}
    finally:
        records.close()


def test_an_import_into_an_existing_library_adds_the_logged_rollouts_and_leaves_the_records(tmp_path, capsys):
    source, target = str(tmp_path / "source.db"), str(tmp_path / "target.db")
    make_library(source)
    with RolloutLog(target) as log:
        mine = Recorder(log, "train", "mine")
        mine.add({"prompt": "mine"}, "mine", [_run("x")], [Score(1.0)])
        mine.flush()
    with TrainingFreeGRPO.open(target) as lib:
        lib.add_rollout_group([("mine", "good"), ("mine", "bad")], [1.0, 0.0])
    assert run("import", source, "-l", target) == 0
    assert "2 served completions (tfgrpo serve's records) are not merged" in capsys.readouterr().err
    assert raw_query(target, "SELECT COUNT(*) FROM rollout_log") == [(4202 + 1,)]
    assert "proxy_completions" not in {t for (t,) in raw_query(target, "SELECT name FROM sqlite_master")}
    assert run("import", source, "-l", target) == 0  # again: the same rollouts, not twice
    assert raw_query(target, "SELECT COUNT(*) FROM rollout_log") == [(4202 + 1,)]


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t["rollout_log"]["rows"][0].__setitem__(0, None),  # no id
        lambda t: t["rollout_log"]["rows"][0].__setitem__(COLUMNS.index("sent"), "{not json"),
        lambda t: t["rollout_log"]["rows"][0].pop(),
        lambda t: t["rollout_log"]["rows"][0].__setitem__(1, [1, 2]),
        lambda t: t["proxy_feedback"].update(columns=["completion_id"]),
        lambda t: t.update(proxy_leases={"columns": ["name"], "rows": []}),
    ],
)
def test_damaged_rows_in_a_full_copy_are_refused(tmp_path, capsys, damage):
    source = str(tmp_path / "source.db")
    make_library(source)
    dump = tmp_path / "dump.json"
    assert run("export", "-l", source, dump, "--full") == 0
    data = json.loads(dump.read_text())
    damage(data["tables"])
    dump.write_text(json.dumps(data))
    target = tmp_path / "target.db"
    assert run("import", dump, "-l", target) == 1
    assert capsys.readouterr().err.startswith(f"tfgrpo: error: {dump}")
    assert not target.exists()


def test_the_copied_tables_are_the_schemas_columns(tmp_path):
    path = str(tmp_path / "lib.db")
    make_library(path)
    db = sqlite3.connect(path)
    try:
        for name, (columns, _) in {**PROXY_TABLES, "rollout_log": (COLUMNS, ())}.items():
            assert tuple(row[1] for row in db.execute(f"PRAGMA table_info({name})")) == columns
    finally:
        db.close()


def _run(text):
    from tfgrpo.agents.trajectory import Trajectory
    from tfgrpo.llm.base import Generation

    return Trajectory.of(Generation(text))
