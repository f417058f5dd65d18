"""The proxy's completion records on a real SQLite file: feedback is fsynced before it is acknowledged."""

from __future__ import annotations

from tfgrpo.server.records import Completion, CompletionRecords

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


def test_feedback_batches_commit_with_synchronous_full_and_completions_with_normal(tmp_path):
    records = CompletionRecords(tmp_path / "lib.db")
    try:
        records.add(Completion("c1", "2+2?", ["4"])).result()
        assert records._db.execute("PRAGMA synchronous").fetchone()[0] == NORMAL
        result = records.feedback("c1", {0: 1.0}).result()
        assert result.status == 200 and result.recorded == 1
        assert records._db.execute("PRAGMA synchronous").fetchone()[0] == FULL
        records.add(Completion("c2", "2+3?", ["5"])).result()
        assert records._db.execute("PRAGMA synchronous").fetchone()[0] == NORMAL
    finally:
        records.close()
    reopened = CompletionRecords(tmp_path / "lib.db")
    try:
        assert reopened.get("c1")["rewards"] == {"0": 1.0}
    finally:
        reopened.close()
