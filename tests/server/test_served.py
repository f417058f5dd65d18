"""One served library (`ServedLibrary`) on a real SQLite library file, without HTTP: what it injects."""

from __future__ import annotations

import asyncio

from tfgrpo import GRPOConfig, TrainingFreeGRPO
from tfgrpo.server import records
from tfgrpo.server.config import ProxyConfig
from tfgrpo.server.metrics import ProxyMetrics
from tfgrpo.server.served import ServedLibrary


def test_a_repeated_prompt_gets_what_retrieval_gives_until_the_library_changes(tmp_path):
    """Retrieved experiences are kept per prompt (a prompt is asked again for its n = 1 groups), and a
    change of the library (a group learned) makes the next request retrieve again."""
    path = tmp_path / "lib.db"
    grpo = TrainingFreeGRPO(GRPOConfig())
    grpo.add_rollout_groups([([(f"add {a} and {a}", f"{2 * a}"), (f"add {a} and {a}", "0")], [1.0, 0.0], None)
                             for a in range(5)])  # fmt: skip
    grpo.save_to_file(path)
    grpo.close()
    lib = ServedLibrary("lib", path, ProxyConfig(shots=2, min_relevance=0.0), ProxyMetrics())
    try:
        first = [e.prompt for e in lib.inject("please add 7 and 9")[0]]
        assert len(first) == 2 and "add 7 and 9" not in " ".join(first)
        assert [e.prompt for e in lib.inject("please add 7 and 9")[0]] == first
        lib._commit([records.FormedGroup.of(1, "add 7 and 9", ["16", "2"], [1.0, 0.0], ["c1"], None)])
        again = [e.prompt for e in lib.inject("please add 7 and 9")[0]]
        assert "add 7 and 9" in again
    finally:
        asyncio.run(lib.close())
