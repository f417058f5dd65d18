"""The tools of a real MCP server (tests/support/mcp_server.py, the `mcp` package's own server), over stdio
and over streamable HTTP, called by a scripted model; a server that dies mid-run ends that trajectory
("tool_unavailable", no answer) and the next one connects again; one that writes junk on its pipe, or
answers late, is an error the model sees."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.agents import Model, context, serve, tool_reply
from support.llm import free_port, wait_until
from tfgrpo.agents import AgentConfig, MCPAgent
from tfgrpo.cli.specs import make_agent

pytest.importorskip("mcp")
pytestmark = pytest.mark.slow

SERVER = Path(__file__).parents[1] / "support" / "mcp_server.py"
STDIO = f"{sys.executable} {SERVER}"


def calls(name, arguments):
    return f"```tool\n{json.dumps({'name': name, 'arguments': arguments})}\n```"


def scripted(first_call: str):
    """A model that makes `first_call`, then answers with what came back."""

    def answer(messages, body):
        results = [
            m["content"] for m in messages[1:] if m["role"] == "user" and m["content"][:6] in ("Output", "Error:")
        ]
        return first_call if not results else f"Result: {results[-1]}"

    return Model(answer)


def test_an_mcp_servers_tools_over_stdio_in_the_text_protocol():
    model = scripted(calls("multiply", {"a": 123456789, "b": 987654321}))
    with serve(model) as llm, make_agent(f"mcp:{STDIO}", AgentConfig()) as agent:
        trajectory = agent.run_many([({"prompt": "q"}, context(llm))])[0]
    assert trajectory.ended == "answer" and str(123456789 * 987654321) in trajectory.answer
    system = model.bodies[0]["messages"][0]["content"]
    assert "- multiply(a: integer, b: integer): Multiply two whole numbers exactly." in system
    assert "```tool block" in system


def test_an_mcp_servers_tools_over_http_as_native_tool_calls():
    port = free_port()
    server = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        import socket

        def listening():
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 60, "the MCP server to listen")

        def answer(messages, body):
            assert {t["function"]["name"] for t in body["tools"]} >= {"multiply", "die"}
            done = [m for m in messages if m["role"] == "tool"]
            return f"It is {done[0]['content']}" if done else tool_reply([("multiply", '{"a": 6, "b": 7}')])

        with serve(Model(answer), tool_calls=True) as llm, MCPAgent(f"http://127.0.0.1:{port}/mcp") as agent:
            trajectory = agent.run_many([({"prompt": "q"}, context(llm))])[0]
        assert trajectory.answer == "It is 42" and trajectory.tool_calls == 1
    finally:
        server.kill()
        server.wait()


def test_a_server_that_dies_mid_run_ends_that_trajectory_and_the_next_one_reconnects():
    def answer(messages, body):
        question = messages[-1]["content"] if len(messages) == 2 else messages[1]["content"]
        results = [m["content"] for m in messages[2:] if m["role"] == "user"]
        if results:
            return f"Result: {results[-1]}"
        return calls("die", {}) if "die" in question else calls("multiply", {"a": 2, "b": 3})

    with serve(Model(answer)) as llm, MCPAgent(STDIO, AgentConfig(tool_timeout=20)) as agent:
        (died,) = agent.run_many([({"prompt": "die"}, context(llm, "please die"))])
        (after,) = agent.run_many([({"prompt": "mul"}, context(llm, "multiply"))])
    assert died.ended == "tool_unavailable" and died.answer is None and "went away" in died.detail
    assert after.ended == "answer" and after.answer == "Result: Output:\n```\n6\n```"


def test_junk_on_the_pipe_and_a_late_answer_are_errors_or_results_the_model_sees():
    def answer(messages, body):
        results = [m["content"] for m in messages[2:] if m["role"] == "user"]
        if not results:
            return calls("garbage", {})
        if len(results) == 1:
            return calls("sleep", {"seconds": 5})
        if len(results) == 2:
            return calls("multiply", {"a": 1})
        return "done"

    with serve(Model(answer)) as llm, MCPAgent(STDIO, AgentConfig(tool_timeout=1, max_tool_errors=5)) as agent:
        trajectory = agent.run_many([({"prompt": "q"}, context(llm))])[0]
    outputs = [m for m in trajectory.messages if m.role == "tool"]
    assert outputs[0].content == "after the junk" and not outputs[0].error
    assert outputs[1].error and "timed out" in outputs[1].content
    assert outputs[2].error and "missing b" in outputs[2].content
    assert trajectory.answer == "done"


def test_an_mcp_server_that_cannot_start_is_a_reason():
    with serve(scripted("no call")) as llm, MCPAgent("/no/such/command --x") as agent:
        trajectory = agent.run_many([({"prompt": "q"}, context(llm))])[0]
    assert trajectory.ended == "tool_unavailable" and "cannot connect" in trajectory.detail
