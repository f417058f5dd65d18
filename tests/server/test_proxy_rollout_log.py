"""`tfgrpo serve` keeps every served completion in the library's rollout log (in the same transactions as
its records): the prompt as the caller gave it and as it went upstream, each choice, its feedback, its group
and advantage; best-of-G keeps every sampled response with the proxy's reward; `--no-rollout-log` keeps none."""

from __future__ import annotations

import pytest

from store.server import raw_query
from support.proxy import Proxy, Q, chat, seeded_library
from tfgrpo.learn.rollout_log import SOURCES, Filters, RolloutLog
from tfgrpo.rewards import FunctionReward
from tfgrpo.server.config import ProxyConfig
from tfgrpo.server.records import Completion, CompletionRecords, Sent

openai = pytest.importorskip("openai")
EVERYTHING = Filters(sources=SOURCES)


def logged(path) -> dict:
    with RolloutLog(path) as log:
        return {r.id: r for r in log.rows(EVERYTHING)}


def test_served_choices_are_logged_with_the_prompt_sent_their_feedback_and_group(fresh, tmp_path):
    seeded_library(tmp_path / "lib.db")
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(shots=1)) as proxy, proxy.client() as client:
        cid = chat(client, "What is 2 + 4?", n=2).id
        version = proxy.library.experiences.version
        rows = logged(tmp_path / "lib.db")
        assert sorted(rows) == [f"serve:{cid}:0", f"serve:{cid}:1"]
        first = rows[f"serve:{cid}:0"]
        assert (first.prompt, first.response, first.reward, first.advantage) == ("What is 2 + 4?", "ok-0", None, None)
        assert first.sent == fresh.bodies[-1]["messages"] and "Q: What is 2 + 3?" in str(first.sent)
        assert (first.source, first.run, first.model, first.prompt_tokens) == ("serve", "lib", "scripted", 3)
        assert first.completion_tokens is None  # (the upstream counts the request's two choices together)
        assert (first.library_version, first.lessons_version) == (version, 1)

        assert proxy.post("/v1/feedback", {"id": cid, "rewards": [1.0, 0.0]}).json()["groups"] == [1]
        rows = logged(tmp_path / "lib.db")
        assert [(r.reward, r.advantage, r.group_id) for r in rows.values()] == [
            (1.0, 0.5, "serve:group-1"),
            (0.0, -0.5, "serve:group-1"),
        ]
        single = chat(client, Q, n=1).id  # n = 1: its own group until feedback groups it with others
        assert logged(tmp_path / "lib.db")[f"serve:{single}:0"].group_id == f"serve:{single}"


def test_best_of_g_logs_every_sampled_response_with_the_proxys_reward(fresh, tmp_path):
    reward = FunctionReward(lambda prompt, response, sample: 1.0 if response == "ok-2" else 0.0)
    config = ProxyConfig(group_size=4)
    with Proxy(fresh, tmp_path / "lib.db", config, reward=reward) as proxy, proxy.client() as client:
        response = chat(client, n=1)
        assert response.choices[0].message.content == "ok-2"
    rows = logged(tmp_path / "lib.db")
    assert sorted(rows) == [f"serve:{response.id}:s{i}" for i in range(4)]
    assert [r.response for r in rows.values()] == ["ok-0", "ok-1", "ok-2", "ok-3"]
    assert [r.reward for r in rows.values()] == [0.0, 0.0, 1.0, 0.0]
    assert [r.advantage for r in rows.values()] == [-0.25, -0.25, 0.75, -0.25]
    assert {r.group_id for r in rows.values()} == {"serve:group-1"}


def test_no_rollout_log_keeps_none(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(rollout_log=False)) as proxy, proxy.client() as client:
        cid = chat(client, n=2).id
        assert proxy.post("/v1/feedback", {"id": cid, "rewards": [1.0, 0.0]}).status_code == 200
    tables = {t for (t,) in raw_query(str(tmp_path / "lib.db"), "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "proxy_completions" in tables and "rollout_log" not in tables


def test_n1_completions_of_one_prompt_get_their_group_and_advantages_when_it_forms(tmp_path):
    sent = Sent("2+2?", "lib", model="m", prompt_tokens=7, completion_tokens=1, seconds=0.5)
    records = CompletionRecords(tmp_path / "lib.db", group_size=2)
    try:
        for cid, text in (("c1", "4"), ("c2", "5"), ("h", "4")):
            records.add(Completion(cid, "2+2?", [text], holdout=cid == "h", sent=sent)).result()
        records.feedback("c1", {0: 1.0}).result()
        rows = logged(tmp_path / "lib.db")
        assert (rows["serve:c1:0"].reward, rows["serve:c1:0"].group_id) == (1.0, "serve:c1")
        assert rows["serve:h:0"].condition == "holdout" and rows["serve:c1:0"].condition is None
        assert (rows["serve:c1:0"].completion_tokens, rows["serve:c1:0"].seconds) == (1, 0.5)
        assert records.feedback("c2", {0: 0.0}).result().groups == (1,)
        rows = logged(tmp_path / "lib.db")
        assert [(rows[i].group_id, rows[i].advantage) for i in ("serve:c1:0", "serve:c2:0")] == [
            ("serve:group-1", 0.5),
            ("serve:group-1", -0.5),
        ]
        assert rows["serve:h:0"].reward is None
    finally:
        records.close()
