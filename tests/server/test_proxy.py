"""`tfgrpo serve`: a real uvicorn proxy on 127.0.0.1 in front of a scripted upstream (a real uvicorn
server whose answers a test sets: texts, tool calls, errors, hangs), driven by the official `openai`
client (sync, async, streaming) and by raw HTTP for every error path."""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest

from support.llm import wait_until
from support.proxy import Proxy, Q, chat, seeded_library
from tfgrpo.errors import ConfigError
from tfgrpo.rewards import FunctionReward
from tfgrpo.server.config import ProxyConfig
from tfgrpo.server.limits import ServerLimits
from tfgrpo.server.proxy import create_proxy_app, serve
from tfgrpo.server.tenants import Keys, hash_key

openai = pytest.importorskip("openai")

# ---------------------------------------------------------------------------------------------- the core path


def test_empty_library_passes_the_request_through_with_the_proxy_id(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        response = chat(client, n=1, temperature=0.3)
        assert response.id.startswith("chatcmpl-tfgrpo-") and response.choices[0].message.content == "ok-0"
        assert response.model_extra["tfgrpo"] == {
            "library": "lib",
            "version": 0,
            "lessons": [],
            "experiences": [],
            "holdout": False,
        }
        assert response.system_fingerprint == "fp-scripted" and response.usage.total_tokens == 5
        assert fresh.bodies == [
            {"model": "scripted", "messages": [{"role": "user", "content": Q}], "n": 1, "temperature": 0.3}
        ]
        assert [m.id for m in client.models.list().data] == ["scripted"]


def test_lessons_and_retrieved_experiences_are_injected_as_training_does(fresh, tmp_path):
    from tfgrpo.prompting import PromptTemplate, build_prompt, with_lessons

    seeded_library(tmp_path / "lib.db")
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(shots=1)) as proxy, proxy.client() as client:
        messages = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "What is 2 + 4?"},
        ]
        response = client.chat.completions.create(model="scripted", messages=messages)
        info = response.model_extra["tfgrpo"]
        assert info["lessons"] == ["G0", "G1"] and info["version"] == 1
        lib = proxy.library
        (exp,) = [lib.experiences.get(i) for i in info["experiences"]]
        assert exp.prompt == "What is 2 + 3?" and exp.response.startswith("2 + 3 = 5")  # retrieved, the better one
        sent = fresh.bodies[-1]["messages"]
        expected = build_prompt("What is 2 + 4?", [exp], with_lessons(PromptTemplate(), lib.lessons.render()))
        assert sent[0] == {"role": "system", "content": "You are terse.\n\n" + expected[0]["content"]}
        assert sent[1:3] == messages[1:3] and sent[3] == {"role": "user", "content": expected[1]["content"]}
        assert "[G0]. Add the tens first" in sent[0]["content"] and "Q: What is 2 + 3?" in sent[3]["content"]


def test_text_completions_get_the_build_prompt_text(fresh, tmp_path):
    seeded_library(tmp_path / "lib.db", lessons=False)
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(shots=2)) as proxy, proxy.client() as client:
        response = client.completions.create(model="scripted", prompt="What is 2 + 9?", max_tokens=5)
        assert response.id.startswith("cmpl-tfgrpo-") and response.choices[0].text == "ok-0"
        sent = fresh.bodies[-1]["prompt"]
        assert sent.startswith("Q: What is 2 + 3?\nA: 2 + 3 = 5.") and sent.endswith("Q: What is 2 + 9?\nA:")
        assert response.model_extra["tfgrpo"]["lessons"] == []


def test_feedback_semantics(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        cid = chat(client, n=2).id
        first = proxy.post("/v1/feedback", {"id": cid, "reward": 1.0, "choice": 0})
        assert first.status_code == 200 and first.json()["recorded"] == 1
        again = proxy.post("/v1/feedback", {"id": cid, "reward": 1.0, "choice": 0})
        assert again.status_code == 200 and again.json() == {**first.json(), "recorded": 0, "duplicates": 1}
        conflict = proxy.post("/v1/feedback", {"id": cid, "reward": 0.5, "choice": 0})
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflicting_feedback"
        unknown = proxy.post("/v1/feedback", {"id": "chatcmpl-nope", "reward": 1.0})
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"
        assert proxy.post("/v1/feedback", {"id": cid, "reward": 1.0, "choice": 2}).status_code == 400
        assert proxy.library.records.counts()["feedback"] == 1 and proxy.library.experiences.library_size() == 0
        done = proxy.post("/v1/feedback", {"id": cid, "reward": 0.0, "choice": 1})
        assert done.status_code == 200 and done.json()["groups"] == [1]
        (exp,) = list(proxy.library.experiences.experience_library)  # the group went in at once: the better choice
        assert (exp.prompt, exp.response, exp.advantage) == (Q, "ok-0", 0.5)
        assert proxy.library.experiences.progress["serve_group"] == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reward": 1.0}, "id"),
        ({"id": 7, "reward": 1.0}, "id"),
        ({"id": "x"}, "reward"),
        ({"id": "x", "reward": "high"}, "reward"),
        ({"id": "x", "reward": True}, "reward"),
        ({"id": "x", "reward": 1, "rewards": [1]}, "reward"),
        ({"id": "x", "rewards": []}, "rewards"),
        ({"id": "x", "rewards": [1, None]}, "rewards.1"),
        ({"id": "x", "reward": 1, "choice": -1}, "choice"),
        ({"id": "x", "reward": 1, "choice": 1.5}, "choice"),
    ],
)
def test_bad_feedback_bodies_are_400s(fresh, tmp_path, body, param):
    with Proxy(fresh, tmp_path / "lib.db") as proxy:
        response = proxy.post("/v1/feedback", body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_non_finite_reward_is_400(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        cid = chat(client).id
        response = proxy.post("/v1/feedback", f'{{"id": "{cid}", "reward": NaN}}')
        assert response.status_code == 400 and "finite" in response.json()["error"]["message"]


def test_a_reward_too_large_to_learn_from_is_400_not_a_group_the_learner_drops(fresh, tmp_path):
    # 1e308 is finite, but two of them overflow the group's sum: the learner would skip the group after a 200.
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        cid = chat(client, n=3).id
        response = proxy.post("/v1/feedback", {"id": cid, "rewards": [1e308, 1e308, 0.0]})
        assert response.status_code == 400 and response.json()["error"]["param"] == "rewards.0"
        assert "too large to learn from" in response.json()["error"]["message"]
        response = proxy.post("/v1/feedback", {"id": cid, "rewards": [1e150, -1e150, 0.0]})
        assert response.status_code == 200 and response.json()["groups"] == [1]


def test_rewards_for_every_choice_form_one_group(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        cid = chat(client, n=3).id
        response = proxy.post("/v1/feedback", {"id": cid, "rewards": [0.0, 1.0, 0.0]})
        assert response.json()["groups"] == [1] and response.json()["recorded"] == 3
        assert [e.response for e in proxy.library.experiences.experience_library] == ["ok-1"]


def test_n1_feedback_on_one_prompt_accumulates_into_groups(fresh, tmp_path):
    config = ProxyConfig(group_size=3, shots=0)
    with Proxy(fresh, tmp_path / "lib.db", config) as proxy, proxy.client() as client:
        fresh.script += [("texts", ["right"]), ("texts", ["wrong"]), ("texts", ["other prompt"]), ("texts", ["meh"])]
        ids = [chat(client).id, chat(client).id, chat(client, "Another question").id, chat(client).id]
        results = [proxy.post("/v1/feedback", {"id": i, "reward": r}).json() for i, r in zip(ids, [1, 0, 1, 0])]
        assert [r["groups"] for r in results] == [[], [], [], [1]]
        assert [(e.prompt, e.response) for e in proxy.library.experiences.experience_library] == [(Q, "right")]
        assert proxy.library.records.get(ids[2])["group"] is None


def test_holdout_requests_go_untouched_and_never_join_groups(fresh, tmp_path):
    seeded_library(tmp_path / "lib.db")
    config = ProxyConfig(holdout=1.0, group_size=2)
    with Proxy(fresh, tmp_path / "lib.db", config) as proxy, proxy.client() as client:
        response = chat(client, n=2, content="What is 2 + 4?")
        assert response.model_extra["tfgrpo"]["holdout"] is True and response.model_extra["tfgrpo"]["lessons"] == []
        assert fresh.bodies[-1]["messages"] == [{"role": "user", "content": "What is 2 + 4?"}]
        assert proxy.post("/v1/feedback", {"id": response.id, "rewards": [1, 0]}).json()["groups"] == []


def test_lift_with_its_confidence_interval(fresh, tmp_path):
    config = ProxyConfig(holdout=0.5, seed=3, shots=0)
    with Proxy(fresh, tmp_path / "lib.db", config) as proxy, proxy.client() as client:
        arms = {True: [], False: []}
        for i in range(24):
            response = chat(client, content=f"question {i}")
            holdout = response.model_extra["tfgrpo"]["holdout"]
            reward = (1.0 if i % 3 else 0.0) if not holdout else (1.0 if i % 3 == 0 else 0.0)
            arms[holdout].append(reward)
            assert proxy.post("/v1/feedback", {"id": response.id, "reward": reward}).status_code == 200
        lift = proxy.get("/v1/libraries/lib/lift").json()
    assert lift["with_library"]["n"] == len(arms[False]) > 0 and lift["without_library"]["n"] == len(arms[True]) > 0
    mean = {k: sum(v) / len(v) for k, v in arms.items()}
    assert math.isclose(lift["lift"], mean[False] - mean[True])
    var = {k: sum((x - mean[k]) ** 2 for x in v) / (len(v) - 1) for k, v in arms.items()}
    half = 1.96 * math.sqrt(var[False] / len(arms[False]) + var[True] / len(arms[True]))
    assert lift["ci95"] == pytest.approx([lift["lift"] - half, lift["lift"] + half])


def test_best_of_g_with_a_server_reward_learns_without_feedback(fresh, tmp_path):
    reward = FunctionReward(lambda prompt, response, sample: float(response == sample["want"]))
    config = ProxyConfig(group_size=3, return_choice="best")
    with Proxy(fresh, tmp_path / "lib.db", config, reward=reward) as proxy, proxy.client() as client:
        response = chat(client, extra_body={"tfgrpo": {"sample": {"want": "ok-2"}}})
        assert fresh.bodies[-1]["n"] == 3 and "tfgrpo" not in fresh.bodies[-1]
        assert [c.message.content for c in response.choices] == ["ok-2"] and response.choices[0].index == 0
        assert response.model_extra["tfgrpo"]["rewards"] == [1.0]
        wait_until(lambda: proxy.library.learned == 1, what="the group to be learned")
        assert [e.response for e in proxy.library.experiences.experience_library] == ["ok-2"]
        assert proxy.post("/v1/feedback", {"id": response.id, "reward": 1.0}).json()["groups"] == []


def test_best_of_g_streams_the_chosen_answer(fresh, tmp_path):
    reward = FunctionReward(lambda prompt, response, sample: float(response == "ok-1"))
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(group_size=2), reward=reward) as proxy, proxy.client() as c:
        chunks = list(chat(c, stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "ok-1"
        assert chunks[0].id.startswith("chatcmpl-tfgrpo-") and chunks[0].model_extra["tfgrpo"]["rewards"] == [1.0]
        assert "stream" not in fresh.bodies[-1] and fresh.bodies[-1]["n"] == 2


def test_best_of_g_first_returns_the_first_sample(fresh, tmp_path):
    reward = FunctionReward(lambda prompt, response, sample: float(response == "ok-1"))
    config = ProxyConfig(group_size=2, return_choice="first")
    with Proxy(fresh, tmp_path / "lib.db", config, reward=reward) as proxy, proxy.client() as client:
        assert chat(client).choices[0].message.content == "ok-0"


# ---------------------------------------------------------------------------------------------- pass-through


def test_tools_response_format_logprobs_and_unknown_fields_pass_through_untouched(fresh, tmp_path):
    seeded_library(tmp_path / "lib.db")
    calls = [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'}}]
    fresh.script.append(("tools", calls))
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
    extra = {
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "my_vendor_field": {"x": [1, 2]},
        "seed": 9,
    }
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        response = client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": Q}],
            tools=tools,
            tool_choice="auto",
            response_format={"type": "json_object"},
            logprobs=True,
            top_logprobs=2,
            seed=9,
            extra_body={"my_vendor_field": {"x": [1, 2]}},
        )
        sent = fresh.bodies[-1]
        assert {k: sent[k] for k in extra} == extra and sent["messages"] != [{"role": "user", "content": Q}]
        assert [c.model_dump() for c in response.choices[0].message.tool_calls] == calls
        assert response.choices[0].finish_reason == "tool_calls"
        assert proxy.library.records.get(response.id)["choices"] == [json.dumps(calls)]


def test_streaming_passes_chunks_through_and_records_the_full_text(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        chunks = list(chat(client, n=2, stream=True))
        ids = {c.id for c in chunks}
        assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-tfgrpo-")
        assert chunks[0].model_extra["tfgrpo"]["library"] == "lib" and len(chunks) == 6
        text = {0: "", 1: ""}
        for c in chunks:
            text[c.choices[0].index] += c.choices[0].delta.content or ""
        assert text == {0: "ok-0", 1: "ok-1"} and fresh.bodies[-1]["stream"] is True
        cid = chunks[0].id
        assert proxy.library.records.get(cid)["choices"] == ["ok-0", "ok-1"]
        assert proxy.post("/v1/feedback", {"id": cid, "rewards": [1, 0]}).json()["groups"] == [1]
        completion = list(client.completions.create(model="scripted", prompt="Say ok", stream=True))
        assert "".join(c.choices[0].text for c in completion) == "ok-0"


def test_async_client_concurrently(fresh, tmp_path):
    async def main(url: str) -> list:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client:
            return await asyncio.gather(
                *(
                    client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": f"q{i}"}])
                    for i in range(16)
                )
            )

    with Proxy(fresh, tmp_path / "lib.db") as proxy:
        responses = asyncio.run(main(proxy.url))
        assert len({r.id for r in responses}) == 16
        assert proxy.library.records.counts()["completions"] == 16


# ---------------------------------------------------------------------------------------------- errors


def test_upstream_4xx_is_passed_back_as_is(fresh, tmp_path):
    fresh.script.append(("status", 422))
    with Proxy(fresh, tmp_path / "lib.db") as proxy:
        response = proxy.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 422 and response.json()["error"]["message"] == "scripted 422"
        assert len(fresh.bodies) == 1


def test_upstream_5xx_is_retried_then_502(fresh, tmp_path):
    fresh.script += [("status", 503), ("status", 500)]
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(retries=2)) as proxy, proxy.client() as client:
        assert chat(client).choices[0].message.content == "ok-0" and len(fresh.bodies) == 3
        fresh.script += [("status", 500)] * 3
        response = proxy.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
        assert len(fresh.bodies) == 6 and "3 tries" in response.json()["error"]["message"]


def test_upstream_timeout_is_504(fresh, tmp_path):
    fresh.script += ["hang"]
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(retries=0, timeout=0.5)) as proxy:
        response = proxy.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"


def test_upstream_that_stalls_mid_answer_is_retried_then_504(fresh, tmp_path):
    fresh.script += ["stall", "stall", "stall"]
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(retries=2, timeout=0.5)) as proxy:
        response = proxy.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
        assert len(fresh.bodies) == 3 and "3 tries" in response.json()["error"]["message"]
        assert "tfgrpo_upstream_retries_total 2.0" in proxy.get("/metrics").text


def test_unreachable_upstream_is_502(tmp_path):
    class Nowhere:
        url = "http://127.0.0.1:9/v1"  # the discard port: nothing listens

    with Proxy(Nowhere(), tmp_path / "lib.db", ProxyConfig(retries=1)) as proxy:
        response = proxy.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"


def test_client_disconnect_cancels_the_upstream_request(fresh, tmp_path):
    import socket

    with Proxy(fresh, tmp_path / "lib.db") as proxy:
        for stream in (False, True):
            fresh.script.append("hang")
            fresh.cancelled.clear()
            fresh.hanging.clear()
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": stream})
            sock = socket.create_connection(("127.0.0.1", proxy.thread.port))
            sock.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n{body}".encode()
            )
            assert fresh.hanging.wait(30)
            sock.close()  # the client hangs up while the upstream is still working
            assert fresh.cancelled.wait(30), f"the upstream request was not cancelled (stream={stream})"
            assert proxy.library.records.counts()["completions"] == 0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        ({"model": "m"}, 400, "messages"),
        ({"model": "m", "messages": []}, 400, "messages"),
        ({"model": "m", "messages": ["hi"]}, 400, "messages.0"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": "two"}, 400, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1000}, 400, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 400, "stream"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**12}, 400, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tfgrpo": 3}, 400, "tfgrpo"),
        ({"model": "m", "messages": [{"role": "user", "content": "\ud800"}]}, 400, "messages.0.content"),
        ({"model": "m", "messages": [{"role": "user", "content": "x" * 600_000}]}, 400, "messages.0.content"),
    ],
)
def test_hostile_chat_bodies_are_openai_shaped_400s(fresh, tmp_path, body, status, param):
    with Proxy(fresh, tmp_path / "lib.db") as proxy:
        response = proxy.post("/v1/chat/completions", body)
        error = response.json()["error"]
        assert response.status_code == status and error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert fresh.bodies == []


def test_text_completion_bodies(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db") as proxy:
        assert proxy.post("/v1/completions", {"model": "m"}).json()["error"]["param"] == "prompt"
        many = proxy.post("/v1/completions", {"model": "m", "prompt": ["a", "b"]})
        assert many.status_code == 400 and "one prompt per request" in many.json()["error"]["message"]


def test_huge_body_is_413_before_it_is_read(fresh, tmp_path):
    limits = ServerLimits(max_body_bytes=10_000)
    with Proxy(fresh, tmp_path / "lib.db", limits=limits) as proxy:
        body = {"model": "m", "messages": [{"role": "user", "content": "x" * 20_000}]}
        response = proxy.post("/v1/chat/completions", body)
        assert response.status_code == 413 and fresh.bodies == []


def test_upstream_answer_over_the_output_limit_is_502(fresh, tmp_path):
    fresh.script.append(("texts", ["y" * 5000]))
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(max_output_bytes=2048)) as proxy:
        response = proxy.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_too_large"


# ---------------------------------------------------------------------------------------------- tenants, operations


@pytest.fixture
def tenants(tmp_path):
    (tmp_path / "keys.toml").write_text(
        '[libraries]\nalpha = "alpha.db"\nbeta = "beta.db"\n\n'
        f'[[keys]]\nsha256 = "{hash_key("a-user")}"\nlibrary = "alpha"\n\n'
        f'[[keys]]\nsha256 = "{hash_key("a-admin")}"\nlibrary = "alpha"\nrole = "admin"\n\n'
        f'[[keys]]\nsha256 = "{hash_key("b-user")}"\nlibrary = "beta"\nrole = "user"\n'
    )
    seeded_library(tmp_path / "alpha.db")
    return Keys.load(tmp_path / "keys.toml")


def test_tenants_see_and_change_only_their_own_library(fresh, tmp_path, tenants):
    assert "a-user" not in (tmp_path / "keys.toml").read_text()
    with Proxy(fresh, tmp_path / "x.db", libraries=tenants.libraries, keys=tenants) as proxy:
        with proxy.client("a-user") as alpha, proxy.client("b-user") as beta:
            a = chat(alpha, "What is 2 + 4?")
            assert a.model_extra["tfgrpo"]["library"] == "alpha" and a.model_extra["tfgrpo"]["lessons"]
            b = chat(beta, "What is 2 + 4?")
            assert b.model_extra["tfgrpo"] == {
                **b.model_extra["tfgrpo"],
                "library": "beta",
                "lessons": [],
                "experiences": [],
            }
        assert proxy.post("/v1/feedback", {"id": a.id, "reward": 1}, key="b-user").status_code == 404
        assert proxy.post("/v1/feedback", {"id": a.id, "reward": 1}, key="a-user").status_code == 200
        assert proxy.post("/v1/feedback", {"id": a.id, "reward": 1}).status_code == 401
        assert proxy.post("/v1/feedback", {"id": a.id, "reward": 1}, key="wrong").status_code == 401
        assert proxy.get("/v1/libraries/alpha", key="a-user").status_code == 403
        assert proxy.get("/v1/libraries/beta", key="a-admin").status_code == 404
        stats = proxy.get("/v1/libraries/alpha", key="a-admin").json()
        assert stats["records"]["feedback"] == 1 and stats["experiences"]["current_library_size"] == 2
        assert proxy.get("/v1/libraries/alpha/lift", key="a-user").json()["with_library"]["n"] == 1
        assert proxy.get("/v1/libraries/alpha/lift", key="b-user").status_code == 404
        lessons = proxy.get("/v1/libraries/alpha/lessons", key="a-admin").json()
        assert list(lessons["lessons"]) == ["G0", "G1"] and lessons["version"] == 1
        history = proxy.get("/v1/libraries/alpha/lessons/history", key="a-admin").json()["versions"]
        assert [v["version"] for v in history] == [0, 1]
        rolled = proxy.post("/v1/libraries/alpha/lessons/rollback", {"version": 0}, key="a-admin").json()
        assert rolled["version"] == 2 and rolled["lessons"] == {}
        assert proxy.post("/v1/libraries/alpha/lessons/rollback", {"version": 9}, key="a-admin").status_code == 400
        with proxy.client("a-user") as alpha:
            assert chat(alpha, "What is 2 + 4?").model_extra["tfgrpo"]["lessons"] == []
        export = proxy.get("/v1/libraries/alpha/export", key="a-admin").json()
        assert len(export["experiences"]) == 2 and export["lesson_version"] == 2
        assert proxy.get("/v1/models", key="b-user").status_code == 200
        assert proxy.get("/v1/models").status_code == 401
        assert proxy.get("/metrics", key="a-user").status_code == 403
        assert proxy.get("/healthz").status_code == 200


def test_without_keys_only_loopback_addresses(tmp_path):
    with pytest.raises(ConfigError, match="loopback"):
        serve("openai:m@http://127.0.0.1:9/v1", str(tmp_path / "lib.db"), host="0.0.0.0")


def test_bad_keys_files(tmp_path):
    path = tmp_path / "keys.toml"
    (tmp_path / "folder").mkdir()
    for text, mentions in [
        ("not toml [", "TOML"),
        ('[libraries]\na = "a.db"\n', "[[keys]]"),
        ('[libraries]\na = "a.db"\n[[keys]]\nsha256 = "plain-key"\nlibrary = "a"\n', "64"),
        (f'[libraries]\na = "a.db"\n[[keys]]\nsha256 = "{hash_key("k")}"\nlibrary = "b"\n', "not in"),
        (f'[libraries]\na = "a.db"\n[[keys]]\nsha256 = "{hash_key("k")}"\nlibrary = "a"\nrole = "root"\n', "role"),
        # Two names of one file: one tenant's completions and feedback were the other's.
        (
            f'[libraries]\na = "s.db"\nb = "./s.db"\n[[keys]]\nsha256 = "{hash_key("k")}"\nlibrary = "a"\n',
            "one library",
        ),
        (f'[libraries]\n"a/b" = "a.db"\n[[keys]]\nsha256 = "{hash_key("k")}"\nlibrary = "a/b"\n', "usable name"),
        (f'[libraries]\n"" = "a.db"\n[[keys]]\nsha256 = "{hash_key("k")}"\nlibrary = ""\n', "usable name"),
        (f'[libraries]\na = "a.db"\n[[keys]]\nsha256 = "{hash_key("k")}"\nlibrary = "a"\nRole = "admin"\n', "Role"),
        (f'[libraries]\na = "a.db"\n[[key]]\nsha256 = "{hash_key("k")}"\nlibrary = "a"\n', "unknown table"),
        (f'[libraries]\na = "a.db"\n[[keys]]\nsha256 = "{hash_key("")}"\nlibrary = "a"\n', "empty key"),
        (f'[libraries]\na = "folder"\n[[keys]]\nsha256 = "{hash_key("k")}"\nlibrary = "a"\n', "is a folder"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(mentions)):
            Keys.load(path)


def test_a_json_library_is_refused(fresh, tmp_path):
    with pytest.raises(ConfigError, match="SQLite"):
        create_proxy_app(fresh.url, {"lib": tmp_path / "lib.json"})


def test_healthz_and_metrics(fresh, tmp_path):
    seeded_library(tmp_path / "lib.db")
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        cid = chat(client, "What is 2 + 4?", n=2).id
        proxy.post("/v1/feedback", {"id": cid, "rewards": [1, 0]})
        for path in ("/healthz", "/health"):  # no key asked, so nothing about a library told
            assert proxy.get(path).json() == {"status": "ok"}
        text = proxy.get("/metrics").text
    for line in [
        'tfgrpo_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0',
        'tfgrpo_injected_items_total{kind="lessons",library="lib"} 2.0',
        'tfgrpo_feedback_total{library="lib",status="200"} 1.0',
        'tfgrpo_groups_total{library="lib",signal="true"} 1.0',
        'tfgrpo_library_size{library="lib"} 3.0',
        'tfgrpo_lessons_version{library="lib"} 1.0',
    ]:
        assert line in text, line
    assert 'tfgrpo_upstream_seconds_count{endpoint="completions"} 1.0' in text
    assert "tfgrpo_request_seconds_bucket" in text


def test_lessons_update_runs_in_the_background_every_n_groups_with_signal(fresh, tmp_path):
    from support.llm import StandIn, chat_reply
    from tfgrpo.learn import LessonUpdate
    from tfgrpo.llm.http import OpenAIBackend
    from tfgrpo.semantic import LessonConfig
    from tfgrpo.server.served import OnlineLessons

    proposal = json.dumps([{"operation": "add", "text": "Check the sum twice before answering."}])

    async def critic_script(index, path, body):
        text = body["messages"][-1]["content"]
        n = body.get("n", 1)
        if text.startswith("You are analysing one attempt"):
            return chat_reply(["Added the numbers."] * n)
        return chat_reply([proposal] * n)  # the group comparison and the batch update

    with StandIn(critic_script) as critic_server:
        critic = OpenAIBackend(base_url=critic_server.url, api_key="none", model="critic", max_retries=0)
        lessons = OnlineLessons(lambda library: LessonUpdate(library, LessonConfig(), critic=critic))
        config = ProxyConfig(lessons_every=2, shots=0)
        with Proxy(fresh, tmp_path / "lib.db", config, lessons=lessons) as proxy, proxy.client() as client:
            first = chat(client, "What is 1 + 1?", n=2)
            proxy.post("/v1/feedback", {"id": first.id, "rewards": [1, 1]})  # no signal: does not count
            for question in ("What is 2 + 2?", "What is 3 + 3?"):
                cid = chat(client, question, n=2).id
                assert proxy.post("/v1/feedback", {"id": cid, "rewards": [1, 0]}).status_code == 200
            wait_until(lambda: proxy.library.lessons.version == 1, what="the background lessons update")
            response = chat(client, "What is 4 + 4?")
            assert response.model_extra["tfgrpo"]["lessons"] == ["G0"]
            assert response.model_extra["tfgrpo"]["version"] == 1
            assert "[G0]. Check the sum twice before answering." in fresh.bodies[-1]["messages"][0]["content"]
            (version,) = [v for v in proxy.library.lessons.history() if v.kind == "step"]
            assert sorted(version.context["rewards"]) == ["serve-2", "serve-3"]
        critic.close()


def test_the_readme_feedback_call_with_the_openai_client(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        response = chat(client, n=2)
        ack = client.post("/feedback", body={"id": response.id, "rewards": [1.0, 0.0]}, cast_to=dict)
        assert ack["groups"] == [1] and ack["recorded"] == 2
        one = chat(client)
        assert client.post("/feedback", body={"id": one.id, "reward": 0.7, "choice": 0}, cast_to=dict)["recorded"] == 1
        with pytest.raises(openai.ConflictError):
            client.post("/feedback", body={"id": one.id, "reward": 0.1, "choice": 0}, cast_to=dict)
        with pytest.raises(openai.NotFoundError):
            client.post("/feedback", body={"id": "chatcmpl-unknown", "reward": 1}, cast_to=dict)


def test_a_slow_client_does_not_hold_up_the_others(fresh, tmp_path):
    import socket

    with Proxy(fresh, tmp_path / "lib.db") as proxy, proxy.client() as client:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "slow"}]}).encode()
        slow = socket.create_connection(("127.0.0.1", proxy.thread.port))
        slow.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )  # headers and a tenth of the body, then nothing for a while
        assert chat(client, "fast").choices[0].message.content == "ok-0"  # answered while the slow one waits
        assert fresh.bodies[-1]["messages"][0]["content"] == "fast"
        slow.sendall(body[10:])
        answer = b""
        while b"chatcmpl-tfgrpo-" not in answer:
            chunk = slow.recv(65536)
            assert chunk, "the slow client's connection closed without an answer"
            answer += chunk
        slow.close()
        assert answer.startswith(b"HTTP/1.1 200")


def test_validated_lessons_update_keeps_or_rejects_by_the_server_reward(fresh, tmp_path):
    """--validate-margin: the candidate lessons are scored on the recent prompts with --reward (the
    policy is the upstream); a candidate that scores worse than the current lessons is kept as a
    rejected version and the lessons stay as they were."""
    from support.llm import StandIn, chat_reply
    from tfgrpo.learn import LessonUpdate, RolloutConfig, Rollouts
    from tfgrpo.llm.http import OpenAIBackend
    from tfgrpo.semantic import LessonConfig
    from tfgrpo.server.served import OnlineLessons

    proposal = json.dumps([{"operation": "add", "text": "Always answer with a long story."}])

    async def critic_script(index, path, body):
        text = body["messages"][-1]["content"]
        summary = text.startswith("You are analysing one attempt")
        return chat_reply(["Answered."] * body.get("n", 1) if summary else [proposal] * body.get("n", 1))

    # The policy answers well without lessons and badly with them: the candidate must be rejected.
    reward = FunctionReward(lambda prompt, response, sample: float(response == "ok-0"))
    with StandIn(critic_script) as critic_server:
        critic = OpenAIBackend(base_url=critic_server.url, api_key="none", model="critic", max_retries=0)
        policy = OpenAIBackend(base_url=fresh.url, api_key="none", model="scripted", max_retries=0)
        lessons = OnlineLessons(
            lambda library: LessonUpdate(library, LessonConfig(validate_margin=0.0), critic=critic),
            Rollouts(policy, reward, RolloutConfig(shots=0), group_size=2),
        )
        config = ProxyConfig(lessons_every=1, shots=0, group_size=2)
        with Proxy(fresh, tmp_path / "lib.db", config, reward=reward, lessons=lessons) as proxy:
            with proxy.client() as client:
                fresh.script += [("texts", ["ok-0", "bad"])]  # the request's group: signal
                fresh.script += [("texts", ["ok-0", "ok-0"]), ("texts", ["bad", "bad"])]  # current, candidate
                chat(client, "What is 5 + 5?")
                wait_until(lambda: len(proxy.library.lessons.history()) == 3, what="the validated update")
            rejected, back = proxy.library.lessons.history()[1:]
            assert rejected.kind == "rejected" and rejected.context["validation"]["accepted"] is False
            assert back.kind == "rollback" and back.lessons == {}
            assert rejected.context["validation"]["current"] == 1.0
            assert rejected.context["validation"]["candidate"] == 0.0
            assert proxy.library.lessons.lessons == {}
        critic.close()
        policy.close()
