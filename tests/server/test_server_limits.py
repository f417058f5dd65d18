"""`serve-model` stays up: every hostile request of issue 11 against a real uvicorn server on 127.0.0.1
gets a 4xx with an OpenAI-shaped body that names the limit or field, and the server keeps answering.
The backend is the scripted stand-in: these requests must be refused before any model would run."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import httpx
import pytest

from support.llm import UvicornThread
from tfgrpo.server.limits import ServerLimits, check_limits
from tfgrpo.server.model_server import create_app
from tfgrpo.server.openai_api import OpenAIError

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def small(backend):
    limits = ServerLimits(max_body_bytes=1000, max_messages=3, max_text_chars=50, max_logit_bias=2)
    with UvicornThread(create_app(backend, "scripted", limits=limits)) as running:
        yield running


def post(server, body, path="/v1/chat/completions", **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30, **kwargs)


def assert_error(response: httpx.Response, status: int, param: str | None, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert all(w in error["message"] for w in words), error["message"]
    return error


def still_serves(server) -> None:
    response = post(server, {"messages": HI, "max_tokens": 1})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "reply 0 to hi"


@pytest.mark.parametrize(
    ("body", "param", "limit"),
    [
        ({"messages": HI, "n": 10_000}, "n", "--max-n"),
        ({"messages": HI, "stop": [f"s{i}" for i in range(10_000)]}, "stop", "--max-stop"),
        ({"messages": HI, "stop": ["x" * 1000]}, "stop.0", "--max-stop-chars"),
        ({"messages": HI, "max_tokens": 1e12}, "max_tokens", "--max-tokens"),
        ({"messages": HI, "max_completion_tokens": 10**12}, "max_completion_tokens", "--max-tokens"),
        ({"messages": HI * 300}, "messages", "--max-messages"),
        ({"messages": HI, "logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias", "--max-logit-bias"),
    ],
)
def test_chat_limits_are_400s_naming_the_limit(server, backend, body, param, limit):
    before = len(backend.params)
    error = assert_error(post(server, body), 400, param, limit, "limit")
    assert error["code"] == "limit_exceeded"
    assert len(backend.params) == before  # refused before the backend saw it
    still_serves(server)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("n", True, "not a boolean"),  # was read as n = 1
        ("max_tokens", True, "not a boolean"),
        ("max_completion_tokens", False, "not a boolean"),
        ("seed", True, "not a boolean"),
        ("temperature", True, "not a boolean"),
        ("top_p", False, "not a boolean"),
        ("n", "2", "not a string"),  # was read as 2
        ("temperature", "0.5", "not a string"),
        ("n", 1.5, "integer"),
        ("logit_bias", {"1": True}, "not a boolean"),
        ("stream", 1, "true or false"),
        ("stream", "yes", "true or false"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_a_400_not_a_guess(server, backend, field, value, words):
    before = len(backend.params)
    param = "logit_bias.1" if field == "logit_bias" else field
    error = assert_error(post(server, {"messages": HI, field: value}), 400, param, words)
    assert error["message"].startswith(param)
    assert len(backend.params) == before
    # JSON numbers are numbers: 2.0 is the integer 2, 1 the float 1.0.
    ok = post(server, {"messages": HI, "n": 2.0, "temperature": 1, "max_tokens": 1, "logit_bias": {"1": 5}})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 2


def test_ten_thousand_prompts_are_refused(server):
    body = {"prompt": ["1 + 1 ="] * 10_000, "max_tokens": 1}
    assert_error(post(server, body, "/v1/completions"), 400, "prompt", "10000 prompts", "--max-prompts")
    assert post(server, {"prompt": ["a", "b"], "max_tokens": 1}, "/v1/completions").status_code == 200


def test_message_and_prompt_sizes(small):
    long = "x" * 51
    assert_error(post(small, {"messages": [{"role": "user", "content": long}]}), 400, "messages.0.content", "51")
    parts = [{"type": "text", "text": "x" * 30}, {"type": "text", "text": "y" * 30}]
    assert_error(post(small, {"messages": [{"role": "user", "content": parts}]}), 400, "messages.0.content")
    assert_error(post(small, {"prompt": ["ok", long]}, "/v1/completions"), 400, "prompt.1", "--max-text-chars")
    assert_error(post(small, {"messages": HI * 4}), 400, "messages", "4 messages")
    assert_error(post(small, {"messages": HI, "logit_bias": {"1": 1, "2": 1, "3": 1}}), 400, "logit_bias")
    assert post(small, {"messages": HI * 3, "logit_bias": {"1": 1, "2": 1}}).status_code == 200


def test_logit_bias_keys_become_token_ids(server, backend):
    body = {"messages": HI, "logit_bias": {"7": 2.5, "50256": -100}}
    assert post(server, body).status_code == 200
    assert backend.params[-1].logit_bias == {7: 2.5, 50256: -100.0}
    before = len(backend.params)
    # "²".isdigit() is True, but int("²") fails; int() of over 4,300 digits raises
    for key in ("abc", "-1", "1.5", "²", "9" * 5000, "12345678901"):
        assert_error(post(server, {"messages": HI, "logit_bias": {key: 1}}), 400, "logit_bias", "not a token id")
        assert_error(post(server, {"prompt": "x", "logit_bias": {key: 1}}, "/v1/completions"), 400, "logit_bias")
    assert len(backend.params) == before
    still_serves(server)


def test_limits_are_configurable_and_checked():
    tight = ServerLimits(max_n=2)
    check_limits({"n": 2}, tight)
    with pytest.raises(OpenAIError) as caught:
        check_limits({"n": 3}, tight)
    assert caught.value.status == 400 and caught.value.param == "n"
    check_limits({"n": "many", "stop": 7, "messages": "x"}, tight)  # wrong types: the request model's job
    with pytest.raises(ValueError, match="max_n"):
        ServerLimits(max_n=0)


def raw_exchange(server, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send a request by hand and read the whole answer (the server closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    return int(status_line.split()[1]), json.loads(payload)


def test_a_64_mb_body_is_refused_before_it_is_sent(server):
    # Only the headers go out: a server that tried to read the body would never answer.
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 67108864\r\n\r\n"
    )
    status, body = raw_exchange(server, head)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert "67108864" in body["error"]["message"] and "--max-body-bytes" in body["error"]["message"]
    still_serves(server)


def test_a_content_length_of_5000_digits_is_refused(server):
    """uvicorn's parser refuses it before the app; BodyLimit itself (under any ASGI server) answers a 413."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: " + b"9" * 5000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        assert sock.recv(100).startswith((b"HTTP/1.1 400", b"HTTP/1.1 413"))
    still_serves(server)

    from tfgrpo.server.guards import BodyLimit

    async def endpoint(scope, receive, send):
        raise AssertionError("the endpoint ran")

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": [(b"content-length", b"9" * 5000)]}
    asyncio.run(BodyLimit(endpoint, 1000)(scope, receive, send))
    assert sent[0]["status"] == 413 and b"over this server's limit of 1000" in sent[1]["body"]


def test_a_chunked_body_is_cut_off_at_the_limit(small):
    head = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    chunk = b"a" * 600
    body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2  # 1200 bytes, never finished
    status, answer = raw_exchange(small, head, body)
    assert status == 413 and "limit of 1000" in answer["error"]["message"]


def test_a_body_over_the_limit_with_httpx(small):
    response = post(small, {"messages": [{"role": "user", "content": "x" * 2000}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_seed_out_of_range_is_a_400(server):
    assert_error(post(server, {"messages": HI, "seed": 10**30}), 400, "seed", "outside")
    assert_error(post(server, {"prompt": "x", "seed": -1}, "/v1/completions"), 400, "seed")
    assert post(server, {"messages": HI, "seed": 2**63 - 1}).status_code == 200


def test_lone_surrogates_are_refused(server):
    body = json.dumps({"messages": [{"role": "user", "content": "a\ud800b"}]})  # ASCII JSON with "\ud800"
    response = httpx.post(f"{server.url}/v1/chat/completions", content=body, timeout=30)
    error = assert_error(response, 400, "messages.0.content", "surrogate")
    assert error["code"] == "invalid_unicode"
    stop = json.dumps({"prompt": "x", "stop": ["\udfff"]})
    assert_error(httpx.post(f"{server.url}/v1/completions", content=stop), 400, "stop.0", "surrogate")
    paired = json.dumps({"messages": [{"role": "user", "content": "\U0001f600"}]})  # "\ud83d\ude00": a pair
    assert httpx.post(f"{server.url}/v1/chat/completions", content=paired, timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("tool_choice", "required"),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("response_format", {"type": "json_object"}),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("top_k", 5),
    ],
)
def test_unsupported_features_are_400s_naming_the_field(server, field, value):
    error = assert_error(post(server, {"messages": HI, field: value}), 400, field, field, "not supported")
    assert error["code"] == "unsupported_parameter"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "logprobs": 0}, "logprobs"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "suffix": "end"}, "suffix"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
    ],
)
def test_unsupported_text_completion_features(server, body, param):
    assert_error(post(server, body, "/v1/completions"), 400, param, "not supported")


def test_tool_messages_are_refused(server):
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]}
    assert_error(post(server, {"messages": [*HI, call]}), 400, "messages.1.tool_calls")
    assert_error(post(server, {"messages": [{"role": "tool", "content": "4"}]}), 400, "messages.0.role")
    image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert_error(post(server, {"messages": [{"role": "user", "content": image}]}), 400, "messages.0.content.1.type")


def test_values_that_ask_for_nothing_are_accepted(server):
    body = {
        "messages": HI,
        "tools": [],
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "logprobs": False,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "parallel_tool_calls": True,
        "user": "someone",
    }
    assert post(server, body).status_code == 200


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", ["not valid JSON"]),
        (b"[1, 2]", ["JSON object", "list"]),
        (b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"]),
        (b'{"messages": "\xff"}', ["UTF-8"]),
    ],
)
def test_bodies_that_are_not_json_objects(server, content, words):
    response = httpx.post(f"{server.url}/v1/chat/completions", content=content, timeout=30)
    assert_error(response, 400, None, *words)


def test_backend_failure_and_unknown_route_are_openai_errors(server, caplog):
    with httpx.Client(base_url=server.url, timeout=30) as client:  # one kept-alive connection
        response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "fail"}]})
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
        assert "on purpose" in response.json()["error"]["message"]
        assert client.get("/health").status_code == 200  # the connection was dropped after a backend failure
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # nor is it a traceback in the log
    missing = httpx.get(f"{server.url}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["message"]
