"""The critic's structured output over HTTP: its compare and consolidate calls send a json_schema
`response_format` of the operations (a real HTTP server on 127.0.0.1 records what it was sent), the
answer is parsed, and a server that refuses response_format costs one warning, not the training."""

from __future__ import annotations

import json

import jsonschema
import pytest

from support.llm import Reply, StandIn, chat_reply, error_reply
from tfgrpo.errors import BackendError
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.rewards.base import Score
from tfgrpo.semantic import LessonConfig, Operation
from tfgrpo.semantic.critic import Critic
from tfgrpo.semantic.operations import operations_schema

LESSONS = "[G0]. Write only the final number.\n[G3]. Check the sum before answering."
GROUP = ("q1", {"prompt": "What is 9 + 17?", "answer": "26"}, [(Score(1.0), "answered 26"), (Score(0.0), "wrote 25")])


def answering(operations: list[dict]):
    async def behaviour(index: int, path: str, body: dict) -> Reply:
        return chat_reply([json.dumps({"operations": operations})])

    return behaviour


def refusing_response_format(operations: list[dict]):
    """A server that does not know response_format (as some OpenAI-compatible servers answer)."""

    async def behaviour(index: int, path: str, body: dict) -> Reply:
        if "response_format" in body:
            return error_reply(400, "Unrecognized request argument supplied: response_format")
        return chat_reply([json.dumps(operations)])

    return behaviour


def critic_for(server: StandIn, **config) -> tuple[OpenAIBackend, Critic]:
    backend = OpenAIBackend(server.url, model="stand-in", max_retries=0)
    return backend, Critic(backend, LessonConfig(**config))


def test_compare_sends_the_operations_schema_and_parses_the_answer() -> None:
    ops = [{"operation": "update", "id": "G3", "text": "Add the units first."}, {"operation": "none"}]
    with StandIn(answering(ops)) as server:
        backend, critic = critic_for(server, max_operations_per_query=2)
        with backend:
            [critique] = critic.compare([GROUP], LESSONS, seed=0)
    sent = server.bodies[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    schema = sent["json_schema"]["schema"]
    assert schema == operations_schema(("add", "update", "delete", "none"), ("G0", "G3"), 2)
    jsonschema.validate({"operations": ops}, schema)  # the server's answer is one the schema allows
    variants = schema["properties"]["operations"]["items"]["anyOf"]
    assert [v["properties"]["operation"]["enum"] for v in variants] == [["add"], ["update"], ["delete"], ["none"]]
    assert variants[1]["properties"]["id"]["enum"] == ["G0", "G3"]  # only the current lessons' ids
    assert critique.operations == [Operation("update", "Add the units first.", "G3")]
    assert critique.problems == []


def test_consolidate_may_merge_and_an_empty_library_allows_only_add_and_none() -> None:
    with StandIn(answering([{"operation": "merge", "ids": ["G0", "G3"], "text": "Check, then answer."}])) as server:
        backend, critic = critic_for(server)
        with backend:
            operations, record = critic.consolidate([[Operation("add", "x")]], LESSONS, seed=0)
            critic.compare([GROUP], "(no lessons yet)", seed=0)
    assert operations == [Operation("merge", "Check, then answer.", ids=("G0", "G3"))]
    assert record["problems"] == []
    merge_schema = server.bodies[0]["response_format"]["json_schema"]["schema"]
    assert "merge" in json.dumps(merge_schema)
    empty = server.bodies[1]["response_format"]["json_schema"]["schema"]["properties"]["operations"]["items"]
    assert [v["properties"]["operation"]["enum"] for v in empty["anyOf"]] == [["add"], ["none"]]


def test_structured_output_off_sends_no_response_format() -> None:
    with StandIn(answering([{"operation": "none"}])) as server:
        backend, critic = critic_for(server, structured_output=False)
        with backend:
            critic.compare([GROUP], LESSONS, seed=0)
    assert "response_format" not in server.bodies[0]


def test_a_server_that_refuses_response_format_is_asked_plainly_once_and_remembered() -> None:
    ops = [{"operation": "add", "text": "Write the sum only."}]
    with StandIn(refusing_response_format(ops)) as server:
        backend, critic = critic_for(server)
        with backend:
            with pytest.warns(UserWarning, match="refused response_format"):
                [first] = critic.compare([GROUP], LESSONS, seed=0)
            [second] = critic.compare([GROUP], LESSONS, seed=1)
            assert backend.response_format_refused
    assert ["response_format" in body for body in server.bodies] == [True, False, False]
    assert first.operations == second.operations == [Operation("add", "Write the sum only.")]


def test_other_bad_requests_still_fail() -> None:
    async def behaviour(index: int, path: str, body: dict) -> Reply:
        return error_reply(400, "max_tokens is too large")

    with StandIn(behaviour) as server:
        backend, critic = critic_for(server)
        with backend, pytest.raises(BackendError, match="max_tokens is too large"):
            critic.compare([GROUP], LESSONS, seed=0)
    assert len(server.bodies) == 1 and not backend.response_format_refused
