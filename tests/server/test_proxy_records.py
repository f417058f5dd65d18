"""The proxy's completion records on a real SQLite file: feedback is fsynced before it is acknowledged."""

from __future__ import annotations

from tfgrpo.server.records import Completion, CompletionRecords, _scan_figures

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


def test_feedback_batches_commit_with_synchronous_full_and_completions_with_normal(tmp_path):
    records = CompletionRecords(tmp_path / "lib.db")
    try:
        records.add(Completion("c1", "2+2?", ["4"])).result()
        assert records._sqlite.execute("PRAGMA synchronous").fetchone()[0] == NORMAL
        result = records.feedback("c1", {0: 1.0}).result()
        assert result.status == 200 and result.recorded == 1
        assert records._sqlite.execute("PRAGMA synchronous").fetchone()[0] == FULL
        records.add(Completion("c2", "2+3?", ["5"])).result()
        assert records._sqlite.execute("PRAGMA synchronous").fetchone()[0] == NORMAL
    finally:
        records.close()
    reopened = CompletionRecords(tmp_path / "lib.db")
    try:
        assert reopened.get("c1")["rewards"] == {"0": 1.0}
    finally:
        reopened.close()


def test_counts_and_reward_moments_kept_up_to_date_match_the_tables(tmp_path):
    """The figures kept in the transaction of each commit (stats, lift, --track; every process writing the
    file shares them) are what the tables say, through partial, duplicate, conflicting and unknown
    feedback, holdouts, and a reopen."""
    import math

    records = CompletionRecords(tmp_path / "lib.db", group_size=2)
    try:
        for i in range(6):
            records.add(Completion(f"c{i}", "same prompt", ["a", "b", "c"][: 1 + i % 3], holdout=i % 2 == 1)).result()
        steps = [("c0", {0: 1.0}), ("c1", {0: 0.0}), ("c2", {0: 0.5}), ("c2", {1: 0.25}), ("c2", {1: 0.25}),
                 ("c2", {1: 0.75}), ("c5", {0: 0.2, 2: 0.9}), ("c5", {1: 0.4}), ("nope", {0: 1.0}), ("c3", {0: 1.0}),
                 ("c4", {5: 1.0}), ("c2", {2: 1.0})]  # fmt: skip
        for cid, rewards in steps:
            records.feedback(cid, rewards).result()
            with records._db.reading() as tx:
                scanned = dict(_scan_figures(tx))
            counts = {name: scanned[name] for name in ("completions", "feedback", "groups")}
            moments = {
                arm: (scanned[f"n:{int(arm)}"], scanned[f"sum:{int(arm)}"], scanned[f"sq:{int(arm)}"])
                for arm in (False, True)
            }
            assert records.counts() == counts
            for arm in (False, True):
                assert records.reward_moments()[arm][0] == moments[arm][0]
                assert all(
                    math.isclose(a, b, abs_tol=1e-12) for a, b in zip(records.reward_moments()[arm], moments[arm])
                )
        assert records.counts() == {"completions": 6, "feedback": 9, "groups": 1}
        kept = records.reward_moments()
    finally:
        records.close()
    reopened = CompletionRecords(tmp_path / "lib.db")
    try:
        assert reopened.counts() == {"completions": 6, "feedback": 9, "groups": 1}
        assert {arm: m[0] for arm, m in reopened.reward_moments().items()} == {False: 2, True: 3}
        assert all(
            math.isclose(a, b) for arm in (False, True) for a, b in zip(reopened.reward_moments()[arm], kept[arm])
        )
    finally:
        reopened.close()


def test_a_file_recorded_before_the_figures_table_gets_it_from_its_tables(tmp_path):
    records = CompletionRecords(tmp_path / "lib.db")
    try:
        records.add(Completion("c1", "2+2?", ["4", "5"])).result()
        records.feedback("c1", {0: 1.0, 1: 0.0}).result()
    finally:
        records.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "lib.db") as db:
        db.execute("DROP TABLE proxy_figures")
    reopened = CompletionRecords(tmp_path / "lib.db")
    try:
        assert reopened.counts() == {"completions": 1, "feedback": 2, "groups": 1}
        assert reopened.reward_moments()[False] == (1, 0.5, 0.25)
    finally:
        reopened.close()


def test_two_writers_of_one_file_share_the_figures_and_form_each_group_once(tmp_path):
    """What `serve --workers` relies on: two record writers (two processes' worth) on one file."""
    first, second = (
        CompletionRecords(tmp_path / "lib.db", group_size=2),
        CompletionRecords(tmp_path / "lib.db", group_size=2),
    )
    try:
        first.add(Completion("a", "same", ["x"])).result()
        second.add(Completion("b", "same", ["y"])).result()
        assert first.feedback("a", {0: 1.0}).result().groups == ()
        assert second.feedback("b", {0: 0.0}).result().groups == (1,)  # the group spans both writers
        assert first.counts() == second.counts() == {"completions": 2, "feedback": 2, "groups": 1}
        (formed,) = first.groups_after(0)
        assert formed.members == ["a", "b"] and formed.group.rewards == [1.0, 0.0]
    finally:
        first.close()
        second.close()


def test_a_waiter_that_goes_away_leaves_the_writer_and_the_record_in_place(tmp_path):
    """A client that hangs up while its record waits for the library's write lock (held here by another
    connection, as a sibling worker can) cancels its wait, not the write: the record is committed, and the
    writer lives on to record the next one (it died of resolving a cancelled future, and every later request
    hung)."""
    import asyncio
    import sqlite3

    records = CompletionRecords(tmp_path / "lib.db")
    lock = sqlite3.connect(tmp_path / "lib.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")

        async def hang_up() -> None:
            waiting = asyncio.ensure_future(asyncio.wrap_future(records.add(Completion("gone", "p", ["a"]))))
            await asyncio.sleep(0)  # the wait has begun
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)

        asyncio.run(hang_up())
        lock.execute("COMMIT")
        records.add(Completion("next", "p", ["b"])).result(timeout=60)
        assert records.alive
        assert records.get("gone")["choices"] == ["a"] and records.get("next")["choices"] == ["b"]
    finally:
        lock.close()
        records.close()


def test_a_failing_group_callback_does_not_stop_the_writer(tmp_path):
    def broken(group) -> None:
        raise RuntimeError("the event loop is closed")

    records = CompletionRecords(tmp_path / "lib.db", group_size=2, on_group=broken)
    try:
        records.add(Completion("c1", "p", ["a", "b"])).result(timeout=60)
        assert records.feedback("c1", {0: 1.0, 1: 0.0}).result(timeout=60).groups
        records.add(Completion("c2", "p", ["c"])).result(timeout=60)
        assert records.alive and records.counts()["groups"] == 1
    finally:
        records.close()
