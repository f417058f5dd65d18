"""`--lessons-k`: with many lessons, each prompt gets the k most relevant (lexical retrieval over the
lessons' text) instead of the whole block, in training, evaluation and `tfgrpo serve` alike; the default
(0) keeps every lesson."""

from tfgrpo.learn import rollout_batch
from tfgrpo.learn.rollouts import RolloutConfig
from tfgrpo.llm.base import Generation
from tfgrpo.rewards.base import FunctionReward
from tfgrpo.semantic import LessonLibrary
from tfgrpo.semantic.operations import Operation

TEXTS = [
    "Multiply large numbers with Python, never in your head.",
    "For a prime count, sieve up to the bound.",
    "Give units with every length.",
    "A Fibonacci number grows fast: use integers, not floats.",
    "Read the question twice before answering.",
]


def library(path):
    lib = LessonLibrary(path)
    lib.apply([Operation("add", text=t) for t in TEXTS], step=1)
    return lib


def test_the_k_most_relevant_lessons_in_library_order(tmp_path):
    with library(tmp_path / "l.db") as lib:
        chosen = lib.relevant("How many primes are below 500? Use a sieve.", 2)
        assert list(chosen.values()) == [TEXTS[1], TEXTS[4]] or list(chosen.values())[0] == TEXTS[1]
        assert len(chosen) == 2 and TEXTS[1] in chosen.values()
        assert lib.relevant("anything", 0) == lib.lessons == lib.relevant("anything", 10)
        block = lib.render(query="What is the 40th Fibonacci number?", k=1)
        assert block.endswith(f"]. {TEXTS[3]}") and block.count("\n[G") == 1
        assert lib.render() == lib.render(query="x", k=0)


class Recorder:
    model_name = "rec"
    tool_calls = False

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, params=None, *, chat=None):
        self.prompts += prompts
        return [[Generation("1")] * params.n for _ in prompts]

    @property
    def usage(self):
        from tfgrpo.llm.base import Usage

        return Usage()


def test_rollouts_get_per_prompt_lessons_and_the_default_keeps_them_all(tmp_path):
    samples = [{"prompt": "Multiply 48213 by 9127."}, {"prompt": "Give the length of the rope in units."}]
    reward = FunctionReward(lambda p, r, s: 1.0)
    with library(tmp_path / "l.db") as lib:
        everything, picked = Recorder(), Recorder()
        rollout_batch(everything, samples, reward, 1, RolloutConfig(shots=0), 0, lessons=lib)
        rollout_batch(picked, samples, reward, 1, RolloutConfig(shots=0, lessons_k=1), 0, lessons=lib)
        rendered = Recorder()
        rollout_batch(rendered, samples, reward, 1, RolloutConfig(shots=0), 0, lessons=lib.render())
    assert everything.prompts == rendered.prompts  # the library object or its block: the same prompts
    assert all(all(t in p[0]["content"] for t in TEXTS) for p in everything.prompts)
    first, second = (p[0]["content"] for p in picked.prompts)
    assert TEXTS[0] in first and sum(t in first for t in TEXTS) == 1
    assert TEXTS[2] in second and sum(t in second for t in TEXTS) == 1


def test_serve_injects_the_k_most_relevant_lessons(tmp_path):
    import asyncio

    from tfgrpo.server.config import ProxyConfig
    from tfgrpo.server.metrics import ProxyMetrics
    from tfgrpo.server.served import ServedLibrary

    path = tmp_path / "lib.db"
    library(path).close()
    for k, expected in ((0, len(TEXTS)), (2, 2)):
        lib = ServedLibrary("lib", path, ProxyConfig(shots=0, lessons_k=k), ProxyMetrics())
        try:
            _, lessons, template = lib.inject("How many primes are below 900?")
            assert len(lessons) == expected and TEXTS[1] in lessons.values()
            assert sum(t in template.instruction for t in TEXTS) == expected
        finally:
            asyncio.run(lib.close())
