"""OpenAIBackend against stand-in servers (real HTTP on 127.0.0.1) that fail on purpose."""

from __future__ import annotations

import asyncio
import threading

import pytest

from support.llm import Reply, StandIn, chat_reply, error_reply, gathering
from tfgrpo.errors import BackendError, ConfigError
from tfgrpo.llm import GenerationParams
from tfgrpo.llm.http import OpenAIBackend

FAST = {"max_retries": 3, "timeout": 5.0}


def backend_for(server: StandIn, **kwargs) -> OpenAIBackend:
    backend = OpenAIBackend(base_url=server.url, api_key="test", model="stand-in", **{**FAST, **kwargs})
    backend.backoff_base = 0.01  # fast backoff, so a slow test proves Retry-After was honoured
    return backend


def script(*replies: Reply, then: Reply | None = None):
    """A behaviour answering the given replies in order, then `then` (default: success) for ever."""

    async def behaviour(index: int, path: str, body: dict) -> Reply:
        if index < len(replies):
            return replies[index]
        return then or chat_reply(["ok"])

    return behaviour


def test_429_retry_after_is_honoured():
    limited = error_reply(429, "slow down", {"Retry-After": "1"})
    with StandIn(script(limited, limited)) as server, backend_for(server) as backend:
        groups = backend.generate(["hi"], GenerationParams(max_tokens=4))
    assert groups[0][0].text == "ok"
    assert len(server.requests) == 3 and backend.usage.retries == 2 and backend.usage.requests == 1
    gaps = [b - a for a, b in zip(server.arrivals, server.arrivals[1:])]
    # A lower bound only (a slow machine waits longer, never shorter): ~1 s each time, not the 0.01 s backoff.
    assert all(gap >= 0.8 for gap in gaps), gaps


def test_500_then_success():
    with StandIn(script(error_reply(500), error_reply(502))) as server, backend_for(server) as backend:
        groups = backend.generate(["hi"])
    assert groups == [[groups[0][0]]] and groups[0][0].text == "ok"
    assert len(server.requests) == 3 and backend.usage.retries == 2


def test_permanent_failure_gives_clear_error_after_max_retries():
    with StandIn(script(then=error_reply(503, "overloaded"))) as server, backend_for(server, max_retries=2) as backend:
        with pytest.raises(BackendError, match=r"3 times.*HTTP 503: overloaded") as info:
            backend.generate(["hi"])
    assert len(server.requests) == 3 and backend.usage.retries == 2 and backend.usage.requests == 0
    assert server.url in str(info.value)


def test_client_errors_are_not_retried():
    with StandIn(script(then=error_reply(400, "max_tokens is too large"))) as server, backend_for(server) as backend:
        with pytest.raises(BackendError, match=r"\(400\): max_tokens is too large"):
            backend.generate(["hi"])
    assert len(server.requests) == 1 and backend.usage.retries == 0


def test_an_answer_nested_past_the_parsers_depth_is_a_backend_error():
    deep = b"[" * 100_000 + b"]" * 100_000
    with StandIn(script(then=Reply(raw=deep))) as server, backend_for(server) as backend:
        with pytest.raises(BackendError, match="response that is not JSON"):
            backend.generate(["hi"])
    with StandIn(script(then=Reply(status=400, raw=deep))) as server, backend_for(server) as backend:
        with pytest.raises(BackendError, match=r"\(400\): \[\[\["):  # the error's text, as it came
            backend.generate(["hi"])


@pytest.mark.parametrize("usage", [{"prompt_tokens": "7"}, [1, 2], {"prompt_tokens": -3}, {"prompt_tokens": 10**30}])
def test_token_counts_of_the_wrong_kind_are_unknown_not_a_crash(usage):
    """The server's usage is its word on its own tokens: text, a list or a negative count was a TypeError
    (AttributeError) out of generate; now the answer stands and the count is unknown."""
    answer = chat_reply(["fine"])
    answer.body["usage"] = usage
    with StandIn(script(then=answer)) as server, backend_for(server) as backend:
        generation = backend.generate(["hi"])[0][0]
        assert generation.text == "fine" and generation.prompt_tokens is None
        assert backend.usage.prompt_tokens == 0 and backend.usage.requests == 1


def test_a_choice_whose_text_is_not_text_is_a_backend_error():
    answer = chat_reply(["x"])
    answer.body["choices"][0]["message"]["content"] = 5
    with StandIn(script(then=answer)) as server, backend_for(server) as backend:
        with pytest.raises(BackendError, match="malformed chat completion response"):
            backend.generate(["hi"])


def test_hang_past_timeout_is_retried():
    async def behaviour(index, path, body):
        if index == 0:
            await asyncio.sleep(30)  # the client gives up long before this (2 s: ample for the second answer)
        return chat_reply(["late but fine"])

    with StandIn(behaviour) as server, backend_for(server, timeout=2.0) as backend:
        groups = backend.generate(["hi"])
    assert groups[0][0].text == "late but fine"
    assert len(server.requests) == 2 and backend.usage.retries == 1


def test_server_that_always_hangs_times_out_with_clear_error():
    async def behaviour(index, path, body):
        await asyncio.sleep(30)

    with StandIn(behaviour) as server, backend_for(server, timeout=0.3, max_retries=1) as backend:
        with pytest.raises(BackendError, match=r"2 times.*timed out after 0.3 s"):
            backend.generate(["hi"])
    assert len(server.requests) == 2


def test_dropped_connection_is_retried():
    with StandIn(script(Reply(drop=True), Reply(drop=True))) as server, backend_for(server) as backend:
        groups = backend.generate(["hi"])
    assert groups[0][0].text == "ok"
    assert len(server.requests) == 3 and backend.usage.retries == 2


def test_concurrency_never_exceeds_the_bound():
    # Requests are held until 5 are in flight at once: the bound is reached whatever the machine's speed.
    behaviour = gathering(5, lambda body: chat_reply([body["messages"][0]["content"]]))
    prompts = [f"p{i}" for i in range(40)]
    with StandIn(behaviour) as server, backend_for(server, concurrency=5) as backend:
        # Two threads calling the sync API at once share one bound.
        results: dict[int, list] = {}
        threads = [
            threading.Thread(target=lambda k=k: results.__setitem__(k, backend.generate(prompts[k::2])))
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert server.max_in_flight == 5  # reached, never exceeded
    assert [g[0].text for g in results[0]] == prompts[0::2]  # answers come back in prompt order
    assert [g[0].text for g in results[1]] == prompts[1::2]


def test_async_callers_share_the_bound():
    behaviour = gathering(4, lambda body: chat_reply(["ok"]))

    async def main(backend):
        return await asyncio.gather(*(backend.agenerate(f"p{i}") for i in range(30)))

    with StandIn(behaviour) as server, backend_for(server, concurrency=4) as backend:
        groups = asyncio.run(main(backend))
    assert len(groups) == 30 and all(g[0].text == "ok" for g in groups)
    assert server.max_in_flight == 4


def test_sync_generate_inside_a_running_event_loop():
    with StandIn(script()) as server, backend_for(server) as backend:

        async def main():
            return backend.generate(["hi"])  # a notebook cell or an async app calling the sync API

        assert asyncio.run(main())[0][0].text == "ok"
        assert backend.generate([]) == []
    with pytest.raises(BackendError, match="closed"):
        backend.generate(["after close"])


def test_one_failing_prompt_cancels_the_rest():
    # "bad" is refused once all three requests are in flight; the other two are held until the client hangs up.
    all_in = gathering(3, lambda body: error_reply(401, "invalid api key"))

    async def behaviour(index, path, body):
        reply = await all_in(index, path, body)
        if body["messages"][0]["content"] != "bad":
            await asyncio.Event().wait()  # if left running, these would time out and be retried 20 times
        return reply

    async def still_running() -> set[asyncio.Task]:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        if tasks:
            await asyncio.wait(tasks, timeout=30)  # cancelled ones end at once
        return {task for task in tasks if not task.done()}

    with StandIn(behaviour) as server, backend_for(server, max_retries=20) as backend:
        with pytest.raises(BackendError, match="invalid api key"):
            backend.generate(["bad", "slow 1", "slow 2"])
        assert asyncio.run_coroutine_threadsafe(still_running(), backend._runner.loop).result() == set()
        assert len(server.requests) == 3 and backend.usage.retries == 0  # nothing is left to send more


def test_native_n():
    async def behaviour(index, path, body):
        return chat_reply([f"c{i}" for i in range(body.get("n", 1))])

    with StandIn(behaviour) as server, backend_for(server, n_strategy="native") as backend:
        groups = backend.generate(["a", "b"], GenerationParams(n=3, seed=7))
    assert [[g.text for g in group] for group in groups] == [["c0", "c1", "c2"]] * 2
    assert len(server.requests) == 2 and all(body["n"] == 3 and body["seed"] == 7 for body in server.bodies)


def test_server_ignoring_n_is_fanned_out_with_distinct_seeds():
    async def behaviour(index, path, body):
        return chat_reply([f"seed {body.get('seed')}"])  # like llama.cpp: one choice whatever n says

    with StandIn(behaviour) as server, backend_for(server) as backend:
        first = backend.generate(["a"], GenerationParams(n=3, seed=10))
        asked_first = len(server.requests)
        second = backend.generate(["a"], GenerationParams(n=3, seed=10))
    assert [g.text for g in first[0]] == ["seed 10", "seed 11", "seed 12"]
    assert [g.text for g in second[0]] == ["seed 10", "seed 11", "seed 12"]
    assert asked_first == 3 and server.bodies[0]["n"] == 3  # tried n once ...
    assert len(server.requests) == 6 and "n" not in server.bodies[3]  # ... then fanned out straight away


def test_native_strategy_refuses_short_answers():
    with StandIn(script()) as server, backend_for(server, n_strategy="native") as backend:
        with pytest.raises(BackendError, match="does not support n"):
            backend.generate(["a"], GenerationParams(n=2))
    assert len(server.requests) == 1


def test_usage_cost_and_request_body():
    with StandIn(script(then=chat_reply(["done"], prompt_tokens=100, completion_tokens=20))) as server:
        prices = {"prompt": 1.0, "completion": 4.0}
        with backend_for(server, price_table=prices, extra_body={"top_k": 5}) as backend:
            params = GenerationParams(temperature=0.3, top_p=0.9, max_tokens=12, stop=["\n"], seed=1)
            groups = backend.generate(
                ["hi", [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]], params
            )
    gen = groups[0][0]
    assert (gen.prompt_tokens, gen.completion_tokens, gen.finish_reason) == (100, 20, "stop")
    usage = backend.usage
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (2, 200, 40)
    assert usage.cost == pytest.approx((200 * 1.0 + 40 * 4.0) / 1e6)
    path, body = server.requests[0]
    assert path == "POST /v1/chat/completions"
    assert body["model"] == "stand-in" and body["top_k"] == 5
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["stop"]) == (0.3, 0.9, 12, ["\n"])
    assert sorted(b["messages"][0]["role"] for b in server.bodies) == ["system", "user"]


def test_completions_mode_and_client_side_stop():
    with StandIn(script(then=chat_reply(["line one\nline two"], chat=False))) as server:
        with backend_for(server, mode="completions") as backend:
            groups = backend.generate(["Once upon"], GenerationParams(stop=["\n"]))
            with pytest.raises(ConfigError, match="string prompts"):
                backend.generate([[{"role": "user", "content": "hi"}]])
    assert groups[0][0].text == "line one"
    assert server.requests[0][0] == "POST /v1/completions" and server.bodies[0]["prompt"] == "Once upon"


def test_requests_carry_the_openai_clients_headers(monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-1")
    with StandIn(script()) as server, backend_for(server) as backend:
        backend.generate(["hi"])
    [headers] = server.headers
    assert headers["authorization"] == "Bearer test"
    assert (headers["openai-organization"], headers["openai-project"]) == ("org-1", "proj-1")
    assert headers["content-type"] == "application/json" and headers["user-agent"].startswith("AsyncOpenAI/Python")


def test_proxy_environment_is_honoured(monkeypatch):
    with StandIn(script()) as proxy, StandIn(script()) as server:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/v1"))
        monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
        with OpenAIBackend(base_url="http://example.invalid/v1", api_key="k", model="m", max_retries=0) as backend:
            backend.generate(["through the proxy"])
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with backend_for(server) as backend:
            backend.generate(["straight to the server"])
    assert [path for path, _ in proxy.requests] == ["POST http://example.invalid/v1/chat/completions"]
    assert [path for path, _ in server.requests] == ["POST /v1/chat/completions"]


def test_model_is_discovered_from_the_server(monkeypatch):
    monkeypatch.delenv("TFGRPO_MODEL", raising=False)

    async def behaviour(index, path, body):
        if path.endswith("/models"):
            return Reply(body={"object": "list", "data": [{"id": "served-model", "object": "model"}]})
        return chat_reply([body["model"]])

    with StandIn(behaviour) as server, OpenAIBackend(base_url=server.url) as backend:
        groups = backend.generate(["a", "b"])
    assert [g[0].text for g in groups] == ["served-model"] * 2
    assert [path for path, _ in server.requests].count("GET /v1/models") == 1
