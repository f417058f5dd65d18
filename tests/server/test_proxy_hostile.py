"""What a hostile upstream and a hostile client send the proxy: every case answers cleanly (an OpenAI-shaped
error with the right code, or the answer with its text made valid), leaves no traceback in the log, and
learning goes on."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest

from support.llm import wait_until
from support.proxy import Proxy, chat
from tfgrpo.server.config import ProxyConfig
from tfgrpo.server.tenants import Keys, hash_key

openai = pytest.importorskip("openai")

NO_INJECTION = ProxyConfig(shots=0, lessons_every=0)


def errors_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def completion(text_or_message, chat: bool = True) -> bytes:
    choice = {"index": 0, "finish_reason": "stop"}
    choice.update({"message": text_or_message} if chat else {"text": text_or_message})
    return json.dumps({"id": "up", "object": "x", "created": 0, "model": "m", "choices": [choice]}).encode()


@pytest.mark.parametrize(
    "raw, chat_endpoint",
    [
        (completion(5, chat=False), False),  # a number where the text goes
        (completion(["a"], chat=False), False),
        (completion("a string, not a message"), True),
        (completion({"role": "assistant", "content": 7}), True),
        (completion({"role": "assistant", "content": "x", "tool_calls": "call"}), True),
        (b'{"choices": "none"}', True),
        (b'{"choices": [{"index": "0", "message": {"content": "x"}}]}', True),
        (b'{"choices": [17]}', True),
        (b"[1, 2]", True),
        (b"not json", True),
        (b'{"choices": [{"index": 5, "message": {"content": "x"}}]}', True),  # one choice asked for
        (b'{"choices": [{"index": -1, "text": "x"}]}', False),
        (b'{"choices": [{"message": {"content": "x"}}, {"message": {"content": "y"}}]}', True),
        (b'{"choices": [{"index": 0, "message": {"content": "x"}}], "x": NaN}', True),
        (b'{"choices": [{"index": 0, "text": "x"}], "x": 1e400}', False),
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_502_and_nothing_is_recorded(fresh, tmp_path, caplog, raw, chat_endpoint):
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy:
        fresh.script.append(("raw", raw))
        if chat_endpoint:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            response = proxy.post("/v1/chat/completions", body)
        else:
            response = proxy.post("/v1/completions", {"model": "m", "prompt": "hi"})
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "upstream_error"
        assert proxy.library.records.counts()["completions"] == 0
    assert not errors_logged(caplog)


def test_after_a_malformed_answer_the_library_goes_on_learning(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy, proxy.client() as client:
        fresh.script.append(("raw", completion(5, chat=False)))
        assert proxy.post("/v1/completions", {"model": "m", "prompt": "hi", "n": 2}).status_code == 502
        answer = client.completions.create(model="m", prompt="hi", n=2)
        ack = proxy.post("/v1/feedback", {"id": answer.id, "rewards": [1, 0]})
        assert ack.status_code == 200 and ack.json()["groups"] == [1]
        assert [e.response for e in proxy.library.experiences.experience_library] == ["ok-0"]


def test_a_lone_surrogate_from_the_upstream_becomes_a_replacement_character(fresh, tmp_path, caplog):
    raw = completion({"role": "assistant", "content": "a\ud800b"})  # json.dumps escapes it: \ud800
    assert b"\\ud800" in raw
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy, proxy.client() as client:
        fresh.script.append(("raw", raw))
        answer = chat(client, n=1)
        assert answer.choices[0].message.content == "a\ufffdb"
        assert proxy.library.records.get(answer.id)["choices"] == ["a\ufffdb"]
        chunks = [json.dumps({"choices": [{"index": 0, "delta": {"content": t}}]}).encode() for t in ("x\udc00", "y")]
        fresh.script.append(("events", chunks, "done"))
        pieces = [c.choices[0].delta.content for c in chat(client, stream=True) if c.choices]
        assert "".join(p for p in pieces if p) == "x\ufffdy"
    assert not errors_logged(caplog)


@pytest.mark.parametrize("end, code", [("break", "upstream_error"), ("stall", "upstream_timeout")])
def test_a_stream_that_breaks_or_stalls_ends_with_the_same_codes_as_a_whole_answer(fresh, tmp_path, caplog, end, code):
    first = json.dumps({"choices": [{"index": 0, "delta": {"content": "par"}}]}).encode()
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(shots=0, lessons_every=0, timeout=0.5, retries=0)) as proxy:
        fresh.script.append(("events", [first], end))
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30) as response:
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert response.status_code == 200
        error = json.loads(events[-1])["error"]
        assert error["code"] == code, error
        assert "internal error" not in error["message"]
    assert not errors_logged(caplog)


def test_a_lone_surrogate_in_a_request_key_is_a_json_400(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy:
        raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "\\ud800": 1}'
        response = proxy.post("/v1/chat/completions", raw)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_unicode" and error["param"] == "\\ud800"


def test_a_client_that_hangs_up_mid_body_is_no_server_error(fresh, tmp_path, caplog):
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy:
        for path, endpoint in (
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/libraries/lib/lessons/rollback", "/v1/libraries"),
        ):
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
            with socket.create_connection(("127.0.0.1", proxy.thread.port)) as sock:
                head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
                sock.sendall(head.encode() + body[:100])
            counted = f'tfgrpo_requests_total{{endpoint="{endpoint}"'
            wait_until(lambda c=counted: c in proxy.get("/metrics").text, what="the hang-up counted")
        metrics = proxy.get("/metrics").text
        assert 'status="500"' not in metrics, metrics
        assert 'status="499"' in metrics
    assert not errors_logged(caplog)


def test_a_huge_feedback_id_is_not_quoted_whole(fresh, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tfgrpo.serve")
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy:
        huge = "x" * 1_000_000
        response = proxy.post("/v1/feedback", {"id": huge, "reward": 1})
        assert response.status_code == 404
        assert len(response.text) < 500
    assert all(len(r.getMessage()) + len(json.dumps(getattr(r, "fields", {}))) < 2000 for r in caplog.records)


def test_health_tells_nothing_and_the_deployments_figures_need_an_operator_key(fresh, tmp_path):
    (tmp_path / "keys.toml").write_text(
        '[libraries]\na = "a.db"\nb = "b.db"\n'
        f'[[keys]]\nsha256 = "{hash_key("a-admin")}"\nlibrary = "a"\nrole = "admin"\n'
        f'[[keys]]\nsha256 = "{hash_key("b-user")}"\nlibrary = "b"\n'
        f'[[keys]]\nsha256 = "{hash_key("ops")}"\nrole = "operator"\n'
    )
    keys = Keys.load(tmp_path / "keys.toml")
    with Proxy(fresh, tmp_path / "a.db", NO_INJECTION, keys=keys, libraries=dict(keys.libraries)) as proxy:
        for path in ("/healthz", "/health"):
            assert proxy.get(path).json() == {"status": "ok"}
        assert proxy.get("/metrics").status_code == 401
        assert proxy.get("/metrics", key="a-admin").status_code == 403  # a tenant's admin sees no other tenant
        assert proxy.get("/metrics", key="b-user").status_code == 403
        figures = proxy.get("/metrics", key="ops")
        assert figures.status_code == 200 and 'library="a"' in figures.text and 'library="b"' in figures.text
        assert proxy.get("/v1/libraries/b", key="ops").status_code == 200  # an operator reads every library
        assert proxy.get("/v1/libraries/b", key="a-admin").status_code == 404  # and a tenant learns nothing of b
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert proxy.post("/v1/chat/completions", body, key="ops").status_code == 403  # serves no library


def test_a_group_that_cannot_be_learned_is_skipped_and_learning_goes_on(fresh, tmp_path, caplog):
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy, proxy.client() as client:
        lib = proxy.library
        commit = lib.examples.commit

        def poisoned(groups, ctx):  # stands in for a group the library cannot take, whatever the cause
            if any(g.prompt == "poison" for g in groups):
                raise TypeError("a group the library cannot take")
            return commit(groups, ctx)

        lib.examples.commit = poisoned
        bad = chat(client, "poison", n=2)
        ack = proxy.post("/v1/feedback", {"id": bad.id, "rewards": [1, 0]})
        assert ack.status_code == 200 and ack.json()["groups"] == [1]
        good = chat(client, "fine", n=2)
        assert proxy.post("/v1/feedback", {"id": good.id, "rewards": [1, 0]}).json()["groups"] == [2]
        assert [e.prompt for e in lib.experiences.experience_library] == ["fine"]
        assert lib.learned == 2
        assert 'tfgrpo_groups_skipped_total{library="lib"} 1.0' in proxy.get("/metrics").text
    assert any("cannot be learned" in m for m in errors_logged(caplog))


def test_a_request_unlike_anything_learned_gets_no_examples_and_is_counted(fresh, tmp_path):
    """--min-relevance: an unrelated request (here a DSPy-style prompt) gets none of the arithmetic examples
    it would otherwise have been handed; a related one still gets them."""
    from tfgrpo import TrainingFreeGRPO

    grpo = TrainingFreeGRPO.open(tmp_path / "lib.db")
    for a, b in ((13, 14), (9, 17), (25, 30), (17, 8)):
        question = f"What is {a} + {b}?"
        grpo.add_rollout_group([(question, str(a + b)), (question, "0")], [1.0, 0.0])
    grpo.close()
    dspy = "[[ ## question ## ]]\nWhat is the capital of France?\n\nRespond with the field `[[ ## answer ## ]]`."
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(lessons_every=0)) as proxy, proxy.client() as client:
        assert chat(client, dspy).model_extra["tfgrpo"]["experiences"] == []
        assert fresh.bodies[-1]["messages"] == [{"role": "user", "content": dspy}]
        assert len(chat(client, "What is 17 + 25?").model_extra["tfgrpo"]["experiences"]) == 3
        assert 'tfgrpo_injection_skipped_total{library="lib"} 1.0' in proxy.get("/metrics").text
    with Proxy(fresh, tmp_path / "lib.db", ProxyConfig(lessons_every=0, min_relevance=0.0)) as proxy:
        with proxy.client() as client:
            assert chat(client, dspy).model_extra["tfgrpo"]["experiences"]  # without the gate, it is handed some


@pytest.mark.parametrize(
    "events",
    [
        [b'{"choices": [{"index": 1000000, "delta": {"content": "hi"}}]}'],  # it was a list of a million texts
        [b'{"choices": [{"index": -1, "delta": {"content": "hi"}}]}'],
        [b'{"choices": [{"index": 0, "delta": {"content": "hi"}}], "x": NaN}'],
        [],  # no event at all: no answer
    ],
)
def test_a_stream_of_the_wrong_shape_ends_with_an_upstream_error_and_no_record(fresh, tmp_path, caplog, events):
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy:
        fresh.script.append(("events", events, "done"))
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30) as response:
            sent = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert json.loads(sent[-1])["error"]["code"] == "upstream_error", sent
        assert proxy.library.records.counts()["completions"] == 0
        assert chat(proxy.client(), n=1).choices[0].message.content == "ok-0"
    assert not errors_logged(caplog)


def test_token_counts_past_a_database_integer_are_taken_as_unknown(fresh, tmp_path, caplog):
    """The upstream's usage figures go into the rollout log; one past 2**63 failed the whole write batch."""
    answer = json.loads(completion({"role": "assistant", "content": "x"}))
    answer["usage"] = {"prompt_tokens": 10**30, "completion_tokens": 2}
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy, proxy.client() as client:
        fresh.script.append(("raw", json.dumps(answer).encode()))
        assert chat(client, n=1).choices[0].message.content == "x"
        assert proxy.library.records.counts()["completions"] == 1
    assert not errors_logged(caplog)


@pytest.mark.parametrize("number", [b"NaN", b"-Infinity", b"1e400"])
def test_a_number_that_is_not_json_in_a_request_is_a_400(fresh, tmp_path, number):
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy:
        raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + number + b"}"
        response = proxy.post("/v1/chat/completions", raw)
        assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
        assert fresh.bodies == []


def test_health_says_so_when_a_librarys_writer_has_stopped(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "acme.db", NO_INJECTION) as proxy:
        assert proxy.get("/healthz").json() == {"status": "ok"}
        records = proxy.library.records
        records._queue.put(None)  # what closing does: the writer stops
        records._thread.join(timeout=60)
        response = proxy.get("/healthz")
        assert response.status_code == 503 and response.json()["status"] == "failing"
        assert "acme" not in response.text  # still no library named


def test_an_upstream_redirect_is_not_followed(fresh, tmp_path):
    """The proxy talks to the upstream it was given: a redirect (here to itself, which would answer) is the
    upstream's answer, not a new address to call with the request."""
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy:
        fresh.script.append(("redirect",))
        response = proxy.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 502 and len(fresh.bodies) == 1
        assert "answered 307" in response.json()["error"]["message"]
        fresh.script.append(("redirect",))
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        assert proxy.post("/v1/chat/completions", body).status_code == 502 and len(fresh.bodies) == 2


def test_an_upstream_refusal_goes_through_as_it_came_and_is_not_sniffed(fresh, tmp_path):
    with Proxy(fresh, tmp_path / "lib.db", NO_INJECTION) as proxy:
        fresh.script.append(("status", 404))
        response = proxy.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 404 and response.json()["error"]["message"] == "scripted 404"
        assert response.headers["x-content-type-options"] == "nosniff"
