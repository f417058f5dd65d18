"""`serve-model`: a real uvicorn server on 127.0.0.1 over the bundled model, queried by the official
openai client (also streaming), by raw HTTP and by our own OpenAIBackend; a client that hangs up stops
the model (see test_server_limits.py and test_server_stream.py for the rest, on a scripted backend)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading

import httpx
import pytest

from support.llm import UvicornThread, wait_until
from tfgrpo.llm import GenerationParams
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.server.model_server import create_app

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def server(local_backend):
    with UvicornThread(create_app(local_backend, "smol")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0) as c:
        yield c


def test_openai_client_chat_completion(client):
    response = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Say hi."}], n=2, max_tokens=8, seed=5, temperature=0.8
    )
    assert response.object == "chat.completion" and response.model == "smol"
    assert [c.index for c in response.choices] == [0, 1]
    assert all(c.message.role == "assistant" and c.message.content for c in response.choices)
    assert all(c.finish_reason in ("stop", "length") for c in response.choices)
    assert response.usage.prompt_tokens > 5 and 0 < response.usage.completion_tokens <= 16
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    again = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Say hi."}], n=2, max_tokens=8, seed=5, temperature=0.8
    )
    assert [c.message.content for c in again.choices] == [c.message.content for c in response.choices]


def test_openai_client_text_completions(client):
    response = client.completions.create(
        model="smol", prompt=["The capital of France is", "1, 2, 3,"], n=2, max_tokens=4, temperature=0, stop=["\n"]
    )
    assert response.object == "text_completion"
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    assert "Paris" in response.choices[0].text and response.choices[0].text == response.choices[1].text
    assert all("\n" not in c.text for c in response.choices)
    assert response.usage.completion_tokens <= 16


def test_models_and_health(server):
    models = httpx.get(f"{server.url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["smol"] and models["object"] == "list"
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_p": 2}, "top_p"),
        ({"messages": [{"role": "user", "content": "hi"}], "seed": 10**30}, "seed"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 10_000}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e12}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
        ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, "logprobs"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": ["ok", ""]}, "stop"),
        ({"messages": []}, "messages"),
        ({"model": "smol"}, "messages"),
    ],
)
def test_bad_requests_get_openai_style_400(server, body, mentions):
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and mentions in error["message"]


def test_nulls_mean_defaults_and_text_parts_are_joined(server):
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi."}]}],
        "temperature": None,
        "n": None,
        "max_tokens": 4,
        "seed": 1,
    }
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 1 and response.json()["usage"]["completion_tokens"] <= 4


def test_invalid_json_and_unknown_route(server):
    response = httpx.post(
        f"{server.url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "error" in response.json()
    missing = httpx.get(f"{server.url}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["message"]


def test_openai_backend_against_serve_model(server):
    with OpenAIBackend(base_url=f"{server.url}/v1", api_key="none", concurrency=2) as backend:
        params = GenerationParams(n=2, max_tokens=6, seed=11)
        groups = backend.generate(["Name a color.", "Name an animal."], params)
        assert backend.model_name == "smol"  # discovered from /v1/models
        assert [len(g) for g in groups] == [2, 2]
        assert backend.usage.requests == 2 and backend.usage.completion_tokens > 0
        assert backend.generate(["Name a color.", "Name an animal."], params) == groups  # seeded


def test_generation_does_not_block_the_event_loop(server, local_backend, monkeypatch):
    started, release = threading.Event(), threading.Event()
    work = local_backend._generate_chunk

    def held(*args, **kwargs):  # the model's work, in the generation thread, held until the test lets it go
        started.set()
        release.wait(120)
        return work(*args, **kwargs)

    monkeypatch.setattr(local_backend, "_generate_chunk", held)
    body = {"messages": [{"role": "user", "content": "Count from 1 to 100."}], "n": 4, "max_tokens": 8, "seed": 0}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, f"{server.url}/v1/chat/completions", json=body, timeout=120)
        try:
            assert started.wait(120), "the generation never started"
            # A blocked loop would not answer /health until the generation ends.
            assert [httpx.get(f"{server.url}/health", timeout=30).status_code for _ in range(3)] == [200] * 3
            assert not slow.done()
        finally:
            release.set()
        assert slow.result().status_code == 200 and len(slow.result().json()["choices"]) == 4


def test_logit_bias_reaches_the_local_model(client, local_backend):
    banana = local_backend.tokenizer.encode(" banana", add_special_tokens=False)
    assert len(banana) == 1
    plain = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=3, temperature=0)
    biased = client.completions.create(
        model="smol", prompt="The capital of France is", max_tokens=3, temperature=0, logit_bias={str(banana[0]): 100}
    )
    assert "banana" not in plain.choices[0].text
    assert biased.choices[0].text == " banana" * 3


COLOUR = {
    "type": "json_schema",
    "json_schema": {
        "name": "colour",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
            "required": ["colour"],
            "additionalProperties": False,
        },
    },
}


def test_a_json_schema_response_format_constrains_the_local_model(client):
    question = [{"role": "user", "content": "Name a colour."}]
    plain = client.chat.completions.create(model="smol", messages=question, max_tokens=16, temperature=0)
    answer = client.chat.completions.create(
        model="smol", messages=question, max_tokens=16, temperature=0, response_format=COLOUR
    )
    assert json.loads(answer.choices[0].message.content)["colour"] in ("red", "green", "blue")
    assert answer.choices[0].message.content != plain.choices[0].message.content
    with pytest.raises(Exception, match="response_format"):  # JSON mode without a schema is not offered
        client.chat.completions.create(
            model="smol", messages=question, max_tokens=4, response_format={"type": "json_object"}
        )


def test_lone_surrogate_is_a_400_not_a_500(server):
    body = json.dumps({"messages": [{"role": "user", "content": "\ud800"}], "max_tokens": 2})
    response = httpx.post(f"{server.url}/v1/chat/completions", content=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages.0.content"


def test_openai_client_streams_the_bundled_model(client):
    args = {"model": "smol", "messages": [{"role": "user", "content": "Name three fruits."}], "max_tokens": 12}
    args.update(seed=3, temperature=0.8)
    whole = client.chat.completions.create(**args)
    stream = client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2 and "".join(pieces) == whole.choices[0].message.content  # same seed, same text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = client.completions.create(model="smol", prompt="1, 2, 3,", max_tokens=6, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in text).startswith(" 4")


def endless(local_backend) -> dict:
    """A request the model would answer with all 4,000 tokens: its end tokens are banned."""
    return {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 4000,
        "logit_bias": {str(t): -100 for t in local_backend._end_ids},
    }


def test_hanging_up_a_stream_stops_the_bundled_model(server, local_backend):
    before = local_backend.usage.snapshot()
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json={**endless(local_backend), "stream": True}, timeout=120
    ) as response:
        for line in response.iter_lines():  # the first content piece: generation is under way
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break
    quick = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    assert httpx.post(f"{server.url}/v1/chat/completions", json=quick, timeout=120).status_code == 200
    # The backend serves one request at a time: the quick one ran after the cancelled one had stopped.
    spent = local_backend.usage.snapshot() - before
    assert spent.requests == 2 and spent.completion_tokens < 4000


def test_hanging_up_a_plain_request_stops_the_bundled_model(server, local_backend):
    before = local_backend.usage.snapshot()
    payload = json.dumps(endless(local_backend)).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(payload)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head.encode() + payload)
        wait_until(local_backend._lock.locked, timeout=120, what="the model to start generating")
    quick = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    assert httpx.post(f"{server.url}/v1/chat/completions", json=quick, timeout=120).status_code == 200
    spent = local_backend.usage.snapshot() - before
    assert spent.requests == 2 and spent.completion_tokens < 4000


def test_a_prompt_over_the_model_context_is_a_400(server):
    body = {"prompt": "hello " * 9000, "max_tokens": 4}  # over the bundled model's 8,192 tokens
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 400 and "context" in response.json()["error"]["message"]
