"""`tfgrpo mcp`: the library as an MCP server, driven by the `mcp` package's own client over stdio (a real
`tfgrpo mcp` subprocess) and over streamable HTTP: records form groups and experiences as `tfgrpo serve`'s
feedback does (the same records and learner), `context` serves what was learned, bad arguments and a
session that records too fast are refused without storing anything, and a restart loses nothing."""

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support.llm import free_port, wait_until
from tfgrpo import TrainingFreeGRPO
from tfgrpo.semantic import LessonLibrary
from tfgrpo.semantic.operations import Operation

mcp = pytest.importorskip("mcp")
pytestmark = pytest.mark.slow

TFGRPO = shutil.which("tfgrpo") or str(Path(sys.executable).parent / "tfgrpo")


def stdio(library, *flags):
    return mcp.StdioServerParameters(command=TFGRPO, args=["mcp", "--library", str(library), *flags])


async def call(client, tool, **arguments):
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        return {"error": result.content[0].text}
    return result.structured_content


def test_records_become_experiences_and_context_serves_them(tmp_path):
    library = tmp_path / "lib.db"
    with LessonLibrary(library) as lessons:
        lessons.apply([Operation("add", text="Check the units.")], step=1)

    async def session():
        async with mcp.Client(stdio(library, "--group-size", "2")) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {"context", "lessons", "record", "stats"}
            first = await call(client, "record", task="Convert 3 km to m.", response="3000 m", reward=1.0)
            assert first["groups"] == []
            run = [
                {"role": "assistant", "content": "```python\nprint(3 * 1000)\n```"},
                {"role": "tool", "content": "3000"},
            ]
            second = await call(
                client, "record", task="Convert 3 km to m.", response="300 m", reward=0.0, trajectory=run
            )
            assert second["groups"] == [1]
            context = await call(client, "context", task="Convert 5 km to m.", k=3)
            stats = await call(client, "stats")
            lessons_now = await call(client, "lessons")
            return context, stats, lessons_now

    context, stats, lessons_now = asyncio.run(session())
    assert [e["response"] for e in context["experiences"]] == ["3000 m"]
    expected = "[G0]. Check the units.\n\nQ: Convert 3 km to m.\nA: 3000 m\n\nQ: Convert 5 km to m.\nA:"
    assert expected in context["prompt"]
    assert context["lessons"] == [{"id": "G0", "text": "Check the units."}]
    assert stats["records"] == {"completions": 2, "feedback": 2, "groups": 1} and stats["groups_learned"] == 1
    assert stats["session"] == {"records": 2, "contexts": 1}
    assert lessons_now["version"] == 1 and "[G0]. Check the units." in lessons_now["rendered"]
    with TrainingFreeGRPO.open(library) as grpo:
        assert [e.response for e in grpo.experience_library] == ["3000 m"]


def test_bad_arguments_and_floods_are_refused_and_nothing_is_stored(tmp_path):
    library = tmp_path / "lib.db"

    async def session():
        async with mcp.Client(stdio(library, "--records-per-minute", "3", "--max-task-chars", "100")) as client:
            errors = [
                await call(client, "context", task="x" * 101),
                await call(client, "context", task="q", k=21),
                await call(client, "record", task="q", response="a", reward=float("nan")),
                await call(client, "record", task="q", response="a", reward=1.0, trajectory=[{"role": "judge"}]),
                await call(client, "record", task="", response="a", reward=1.0),
                # The SDK turned these into 1.0, 1.0 and 100.0 before the service saw them.
                await call(client, "record", task="q", response="a", reward=True),
                await call(client, "record", task="q", response="a", reward="1"),
                await call(client, "record", task="q", response="a", reward=" 1e2 "),
                await call(client, "context", task="q", k=True),
            ]
            accepted = [await call(client, "record", task=f"q{i}", response="a", reward=1.0) for i in range(3)]
            flooded = await call(client, "record", task="q9", response="a", reward=1.0)
            stats = await call(client, "stats")
            return errors, accepted, flooded, stats

    errors, accepted, flooded, stats = asyncio.run(session())
    assert all("error" in e for e in errors)
    assert "at most 100" in errors[0]["error"] and "from 0 to 20" in errors[1]["error"]
    assert "reward" in errors[2]["error"] and "trajectory" in errors[3]["error"]  # NaN travels as null
    assert all("reward" in e["error"] for e in errors[5:8]) and "k" in errors[8]["error"]
    assert all("id" in a for a in accepted) and "3 a minute" in flooded["error"]
    assert stats["records"]["completions"] == 3


def test_a_restart_loses_nothing(tmp_path):
    library = tmp_path / "lib.db"

    async def record(reward, response):
        async with mcp.Client(stdio(library, "--group-size", "2")) as client:
            return await call(client, "record", task="Sum 2 and 2.", response=response, reward=reward)

    assert asyncio.run(record(1.0, "4"))["groups"] == []
    assert asyncio.run(record(0.0, "5"))["groups"] == [1]  # the second server saw the first's record
    with TrainingFreeGRPO.open(library) as grpo:
        assert [e.response for e in grpo.experience_library] == ["4"]
        assert grpo.progress["serve_group"] == 1


def test_streamable_http(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [TFGRPO, "mcp", "--library", str(tmp_path / "lib.db"), "--http", f"127.0.0.1:{port}", "--group-size", "2"],
        stderr=subprocess.DEVNULL,
    )

    def listening():
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 60, "tfgrpo mcp to listen")

        async def session():
            async with mcp.Client(f"http://127.0.0.1:{port}/mcp") as client:
                await call(client, "record", task="Name a prime.", response="7", reward=1.0)
                await call(client, "record", task="Name a prime.", response="8", reward=0.0)
                return await call(client, "context", task="Name a prime below 10.", k=1)

        context = asyncio.run(session())
        assert [e["response"] for e in context["experiences"]] == ["7"]
        assert json.dumps(context)
    finally:
        server.terminate()
        server.wait(30)


def test_a_bad_http_address_is_a_clear_error(tmp_path):
    from support.cli import tfgrpo

    for address in ("127.0.0.1", ":8000", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:" + "9" * 5000, "h:٣"):
        ran = tfgrpo("mcp", "--library", tmp_path / "lib.db", "--http", address, check=False)
        assert ran.returncode == 1 and "--http takes HOST:PORT (a port of 1 to 65535)" in ran.stderr, address
    # No key is asked for: anyone who reached another address could write rewards into the library.
    ran = tfgrpo("mcp", "--library", tmp_path / "lib.db", "--http", "0.0.0.0:8090", check=False)
    assert ran.returncode == 1 and "binds only a loopback address" in ran.stderr
    assert not (tmp_path / "lib.db").exists()
