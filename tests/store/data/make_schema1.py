"""How tests/store/data/schema1.db was made, with tfgrpo at main 4fd01bf (library schema 1, before the
shared-store change): a small library with experiences, lessons with versions, LLM-cache rows and
embeddings, all in one SQLite file. Kept for the record; it needs that release to run again."""

import sys

import numpy as np

from tfgrpo import GRPOConfig, TrainingFreeGRPO
from tfgrpo.llm.base import Generation, GenerationParams
from tfgrpo.llm.cache import LLMCache, cache_key
from tfgrpo.semantic import LessonLibrary
from tfgrpo.semantic.operations import Operation

path = sys.argv[1]
t = [1_718_000_000]


def clock():
    return t[0]


cfg = GRPOConfig(max_library_size=50, sampling_temperature=0.7, max_experience_age=10**9)
with TrainingFreeGRPO.open(path, cfg, clock=clock) as lib:
    for g in range(6):
        t[0] += 60
        lib.add_rollout_groups(
            [
                (
                    [(f"task {g}", f"answer {g}.{i}") for i in range(4)],
                    [float((g + i) % 4) for i in range(4)],
                    {"domain": "math" if g % 2 else "code"},
                )
            ],
            progress={"global_step": g + 1, "run": {"data": "fixture"}},
        )
    lib.tag(lib.experience_library[0], note="naïve ✓")
    lib.remove(lib.experience_library[2])
    store = lib.store
    store.save_embeddings(
        "fixture-model",
        [("task 0", np.arange(4, dtype=np.float32).tobytes()), ("task 1", np.ones(4, np.float32).tobytes())],
    )
with LessonLibrary(path) as lessons:
    lessons.apply(
        [
            Operation("add", "Check the units before answering."),
            Operation("add", "Write the final answer on its own line."),
        ],
        step=1,
        progress={"global_step": 1},
    )
    lessons.apply(
        [Operation("update", "Check the units and the sign before answering.", id="G0")],
        step=2,
        progress={"global_step": 2},
    )
    lessons.apply(
        [Operation("add", "Prefer exact fractions over decimals."), Operation("delete", id="G1")],
        step=3,
        progress={"global_step": 3},
    )
with LLMCache(path) as cache:
    params = GenerationParams(n=2, temperature=0.0, seed=7)
    cache.put_many(
        [
            (
                cache_key("fixture-model", "What is 2+2?", params, True),
                "fixture-model",
                '{"request": 1}',
                [Generation("4", "stop", 5, 1), Generation("four", "stop", 5, 1)],
            )
        ]
    )
    cache.put_many(
        [
            (
                cache_key("fixture-model", "What is 3+3?", params, True),
                "fixture-model",
                '{"request": 2}',
                [Generation("6", "length", 5, 1)],
            )
        ]
    )
print("ok")
