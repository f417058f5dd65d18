"""`tfgrpo mcp`'s tools without MCP (`LibraryService`): text UTF-8 cannot encode is refused with a
`ConfigError` naming the argument before anything is stored, and the sessions kept are bounded."""

import asyncio

import pytest

from tfgrpo.errors import ConfigError
from tfgrpo.server.config import ProxyConfig
from tfgrpo.server.mcp_service import LibraryService, MCPLimits


def run(library, limits, calls):
    async def go():
        service = LibraryService(library, ProxyConfig(group_size=2), limits)
        await service.start()
        try:
            return await calls(service)
        finally:
            await service.close()

    return asyncio.run(go())


def test_lone_surrogates_are_refused_by_name_and_nothing_is_stored(tmp_path):
    async def calls(service):
        refused = []
        for call in (
            service.record("s", "t\ud800", "3000 m", 1.0),
            service.record("s", "task", "30\udfff", 1.0),
            service.record("s", "task", "3000 m", 1.0, trajectory=[{"role": "tool", "content": "\ud800"}]),
            service.context("s", "\ud800"),
        ):
            with pytest.raises(ConfigError) as error:
                await call
            refused.append(str(error.value))
        return refused, await service.stats("s")

    refused, stats = run(tmp_path / "lib.db", MCPLimits(), calls)
    assert "task" in refused[0] and "surrogate" in refused[0]
    assert "response" in refused[1] and "surrogate" in refused[1]
    assert refused[2].startswith("trajectory: 0.content") and "task" in refused[3]
    assert stats["records"]["completions"] == 0 and stats["session"] == {"records": 0, "contexts": 0}


def test_the_least_recent_sessions_are_forgotten_past_the_bound(tmp_path):
    async def calls(service):
        for i in range(5):
            await service.context(f"client-{i}", "q")
        await service.context("client-2", "q")  # used again: now the most recent
        await service.context("client-5", "q")
        return list(service.sessions), await service.stats("client-2")

    kept, stats = run(tmp_path / "lib.db", MCPLimits(max_sessions=3), calls)
    assert kept == ["client-4", "client-2", "client-5"]
    assert stats["session"]["contexts"] == 2


def test_a_reward_that_cannot_be_learned_from_is_refused_and_nothing_is_stored(tmp_path):
    async def calls(service):
        refused = []
        for reward in (float("nan"), 1e308, -1e200, True):
            with pytest.raises(ConfigError) as error:
                await service.record("s", "task", "3000 m", reward)
            refused.append(str(error.value))
        return refused, await service.stats("s")

    refused, stats = run(tmp_path / "lib.db", MCPLimits(), calls)
    assert "finite" in refused[0] and "finite" in refused[3]
    assert all("too large to learn from" in r for r in refused[1:3])
    assert stats["records"]["completions"] == 0
