"""`serve-model` streams as OpenAI does (server-sent events read raw and by the official `openai` client),
cancels backend work when the client hangs up (synchronised on the backend's events, never on sleeps),
and checks an optional API key. A real uvicorn server on 127.0.0.1 over the scripted stand-in backend."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from support.llm import UvicornThread
from support.scripted import ScriptedBackend
from tfgrpo.server.guards import key_matches
from tfgrpo.server.model_server import create_app

openai = pytest.importorskip("openai")

HI = [{"role": "user", "content": "hi"}]
HANG = [{"role": "user", "content": "hang"}]


@pytest.fixture(scope="module")
def locked(backend):
    with UvicornThread(create_app(backend, "scripted", api_key="s3cret")) as running:
        yield running


def events(response: httpx.Response) -> list:
    """The `data:` payloads of an event stream, JSON-decoded ("[DONE]" kept as is)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in response.text.split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_chat_stream_is_openai_server_sent_events(server):
    body = {"messages": HI, "stream": True, "n": 2, "stream_options": {"include_usage": True}}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200
    chunks = events(response)
    assert chunks[-1] == "[DONE]" and all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    assert len({c["id"] for c in chunks[:-1]}) == 1 and chunks[0]["model"] == "scripted"
    usage = chunks[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 8
    by_choice: dict[int, list] = {0: [], 1: []}
    for chunk in chunks[:-2]:
        (choice,) = chunk["choices"]
        by_choice[choice["index"]].append(choice)
    for index, choices in by_choice.items():
        assert choices[0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(c["delta"].get("content", "") for c in choices) == f"reply {index} to hi"
        assert len(choices) >= 4  # role, several content pieces, finish
        assert [c["finish_reason"] for c in choices] == [None] * (len(choices) - 1) + ["stop"]
        assert choices[-1]["delta"] == {}


def test_text_completion_stream_indexes_prompts_times_n(server):
    body = {"prompt": ["a", "b"], "n": 2, "stream": True}
    chunks = events(httpx.post(f"{server.url}/v1/completions", json=body, timeout=30))
    assert chunks[-1] == "[DONE]" and all(c["object"] == "text_completion" for c in chunks[:-1])
    texts: dict[int, str] = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "reply 0 to a", 1: "reply 1 to a", 2: "reply 0 to b", 3: "reply 1 to b"}


def test_openai_client_streams_sync_and_async(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0) as client:
        stream = client.chat.completions.create(model="scripted", messages=HI, stream=True)
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces) == "reply 0 to hi" and len([p for p in pieces if p]) == 4
        text = client.completions.create(model="scripted", prompt="x", stream=True)
        assert "".join(c.choices[0].text for c in text) == "reply 0 to x"

    async def read() -> tuple[str, str | None]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0) as client:
            stream = await client.chat.completions.create(model="scripted", messages=HI, stream=True)
            out, finish = "", None
            async for chunk in stream:
                out += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            return out, finish

    assert asyncio.run(read()) == ("reply 0 to hi", "stop")


def test_a_failure_mid_stream_ends_with_an_error_event(server):
    body = {"messages": [{"role": "user", "content": "fail"}], "stream": True}
    chunks = events(httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30))
    assert chunks[-1]["error"]["type"] == "server_error" and "on purpose" in chunks[-1]["error"]["message"]
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0) as client:
        with pytest.raises(openai.APIError, match="on purpose"):
            for _ in client.chat.completions.create(model="scripted", messages=body["messages"], stream=True):
                pass


def test_bad_stream_requests_are_refused_before_streaming(server):
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI, "stream": True, "n": 99})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


def send_and_hang_up(server, body: dict, backend: ScriptedBackend, path: str = "/v1/chat/completions") -> None:
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(payload)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + payload)
        assert backend.started.wait(30), "the backend never started"
    # the socket is closed: the client is gone


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_client_that_hangs_up_cancels_the_backend_work(server, backend, path):
    backend.reset()
    body = {"messages": HANG} if path.endswith("chat/completions") else {"prompt": ["a", "hang"]}
    send_and_hang_up(server, body, backend, path)
    assert backend.cancelled.wait(30), "the backend work was not cancelled"
    assert httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30).status_code == 200


def test_a_streaming_client_that_hangs_up_cancels_the_stream(server, backend):
    backend.reset()
    body = {"messages": HANG, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: ") and json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        assert backend.started.wait(30)
    assert backend.cancelled.wait(30), "the stream was not cancelled"
    assert httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HI}, timeout=30).status_code == 200


def test_api_key_is_required_when_set(locked):
    url = f"{locked.url}/v1/chat/completions"
    missing = httpx.post(url, json={"messages": HI})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    error = missing.json()["error"]
    assert error["code"] == "invalid_api_key" and "Missing API key" in error["message"]
    wrong = httpx.post(url, json={"messages": HI}, headers={"authorization": "Bearer s3cre"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "Incorrect API key provided"
    assert httpx.get(f"{locked.url}/v1/models", headers={"authorization": "Basic s3cret"}).status_code == 401
    assert httpx.post(url, json={"messages": HI}, headers={"authorization": "Bearer s3cret"}).status_code == 200
    for path in ("/health", "/healthz"):  # health checks need no key; /healthz as `tfgrpo serve` answers
        assert httpx.get(f"{locked.url}{path}").json() == {"status": "ok", "model": "scripted"}

    with openai.OpenAI(base_url=f"{locked.url}/v1", api_key="nope", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    with openai.OpenAI(base_url=f"{locked.url}/v1", api_key="s3cret", max_retries=0) as client:
        stream = client.chat.completions.create(model="scripted", messages=HI, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "reply 0 to hi"


def test_a_wrong_key_is_refused_before_the_body_is_read(locked):
    head = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 67108864\r\n\r\n"
    with socket.create_connection(("127.0.0.1", locked.port), timeout=30) as sock:
        sock.sendall(head)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401")


def test_key_comparison():
    assert key_matches(b"abc", "abc") and key_matches("abc", "abc")
    assert not key_matches(b"abd", "abc") and not key_matches(b"ab", "abc") and not key_matches(None, "abc")
