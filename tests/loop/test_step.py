"""The one training step with several update strategies, over real HTTP to a scripted stand-in (the only
way to get the same model answers on demand), with real SQLite libraries."""

import json

import pytest

from support.llm import StandIn, chat_reply
from tfgrpo import TrainingFreeGRPO
from tfgrpo.errors import ConfigError
from tfgrpo.learn import ExampleUpdate, LessonUpdate
from tfgrpo.llm.base import GenerationParams
from tfgrpo.llm.cache import CachedBackend, LLMCache
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import TrainConfig, run_step, train
from tfgrpo.rewards.base import FunctionReward, Score
from tfgrpo.semantic import LessonConfig, LessonLibrary

SAMPLES = [
    {"id": "a", "prompt": "What is 2+2?", "answer": "4"},
    {"id": "b", "prompt": "What is 3+3?", "answer": "6"},
]
REWARD = FunctionReward(lambda prompt, response, sample: Score(float(response.strip() == sample["answer"])))
LESSON_REPLY = json.dumps([{"operation": "add", "text": "Add the two numbers and give only the sum."}])


class Script:
    """Policy requests get one right and one wrong answer per group; critic requests get a lesson."""

    def __init__(self, wrong: str = "5"):
        self.wrong = wrong
        self.kinds: list[str] = []

    async def __call__(self, index, path, body):
        text = body["messages"][-1]["content"]
        if text.startswith(("You are analysing", "You study attempts", "You maintain")):
            self.kinds.append("critic")
            return chat_reply(["The attempt added the numbers." if "analysing" in text else LESSON_REPLY])
        self.kinds.append("policy")
        answer = "4" if "2+2" in text else "6"
        return chat_reply([answer if i % 2 == 0 else self.wrong for i in range(body.get("n", 1))])


def backend(stand_in):
    return OpenAIBackend(base_url=stand_in.url, model="scripted", max_retries=0, timeout=10)


CONFIG = TrainConfig(epochs=1, batch_size=2, group_size=2, max_tokens=8, shots=1)


def test_both_strategies_learn_from_the_same_rollouts_in_one_step(tmp_path):
    path = tmp_path / "both.db"
    script = Script()
    with (
        StandIn(script) as server,
        backend(server) as llm,
        TrainingFreeGRPO.open(path) as examples,
        LessonLibrary(path) as lessons,
    ):
        updates = [ExampleUpdate(examples, task_name="sums"), LessonUpdate(lessons, LessonConfig(critic_max_tokens=64))]
        metrics = run_step(llm, SAMPLES, REWARD, updates, CONFIG, global_step=1)

        # One group per sample was generated, once: both strategies learned from those same rollouts.
        assert script.kinds.count("policy") == 2
        assert examples.library_size() == 2 and {e.response for e in examples.experience_library} == {"4", "6"}
        assert lessons.lessons == {"G0": "Add the two numbers and give only the sum."}
        assert examples.progress["global_step"] == lessons.progress["global_step"] == 1
        # One record with the step's figures and each strategy's.
        line = metrics.to_dict()
        assert line["strategies"] == ["examples", "lessons"]
        assert line["groups_with_signal"] == 2 and line["reward_mean"] == 0.5
        assert line["stored"] == 2 and line["lessons"] == 1 and line["applied"] == 1
        assert metrics.stored == 2 and metrics.lesson_version == lessons.version

        # The next step's rollouts carry both: an example in the user message, the lesson in the system one.
        server.requests.clear()
        run_step(llm, SAMPLES[:1], REWARD, updates, CONFIG, global_step=2)
        messages = server.bodies[0]["messages"]
        assert "[G0]. Add the two numbers" in messages[0]["content"]
        assert "Q: What is 3+3?\nA: 6" in messages[-1]["content"]


def test_a_lone_surrogate_from_the_model_is_stored_as_a_replacement_character(tmp_path):
    script = Script(wrong="\ud800")
    with StandIn(script) as server, backend(server) as llm, TrainingFreeGRPO.open(tmp_path / "lib.db") as grpo:
        always = FunctionReward(lambda prompt, response, sample: float(response != "4"))
        run_step(llm, SAMPLES[:1], always, [ExampleUpdate(grpo)], CONFIG)
        assert [e.response for e in grpo.experience_library] == ["\ufffd"]
        grpo.save_to_file(tmp_path / "lib.json")  # every later save still works
    assert "\\ufffd" in (tmp_path / "lib.json").read_text() or "\ufffd" in (tmp_path / "lib.json").read_text()


def test_a_rerun_with_other_settings_is_refused_and_names_each_difference(tmp_path):
    path = tmp_path / "lib.db"
    with StandIn(Script()) as server, backend(server) as llm:
        with TrainingFreeGRPO.open(path) as grpo:
            config = TrainConfig(epochs=2, batch_size=1, group_size=2, max_tokens=8, seed=3)
            train(llm, SAMPLES, REWARD, [ExampleUpdate(grpo)], config, run={"data": "sums.jsonl"})
        with TrainingFreeGRPO.open(path) as grpo:
            size = grpo.library_size()
            other = TrainConfig(epochs=2, batch_size=2, group_size=2, max_tokens=8, seed=4)
            with pytest.raises(ConfigError) as info:
                train(llm, SAMPLES[::-1], REWARD, [ExampleUpdate(grpo)], other, run={"data": "other.jsonl"})
            message = str(info.value)
            for name in ("batch_size: 1 in the library, 2 now", "seed: 3", "data: 'sums.jsonl'", "data_fingerprint"):
                assert name in message
            assert "new library file" in message
            assert grpo.library_size() == size  # nothing was changed
            # More epochs with the same settings is a resume, not a different run.
            more = TrainConfig(epochs=3, batch_size=1, group_size=2, max_tokens=8, seed=3)
            history = train(llm, SAMPLES, REWARD, [ExampleUpdate(grpo)], more, run={"data": "sums.jsonl"})
            assert [m.global_step for m in history] == [5, 6]


def test_the_examples_strategy_refuses_groups_of_one():
    with pytest.raises(ConfigError, match="group_size >= 2"):
        train(None, SAMPLES, REWARD, [ExampleUpdate(TrainingFreeGRPO())], TrainConfig(group_size=1))


def test_a_lone_surrogate_from_the_model_goes_through_the_cache_cleaned_on_both_strategies(tmp_path):
    # `tfgrpo train` sends every call through the run's LLM cache: the raw output was stored there before
    # it was cleaned, and SQLite cannot encode a lone surrogate (UnicodeEncodeError, the run stopped).
    path = tmp_path / "lib.db"
    script = Script(wrong="\ud800")
    with (
        StandIn(script) as server,
        backend(server) as llm,
        TrainingFreeGRPO.open(path) as examples,
        LessonLibrary(path) as lessons,
        LLMCache(path) as cache,
    ):
        wrong_wins = FunctionReward(lambda prompt, response, sample: float(response not in ("4", "6")))
        updates = [ExampleUpdate(examples), LessonUpdate(lessons, LessonConfig(critic_max_tokens=64))]
        train(llm, SAMPLES, wrong_wins, updates, CONFIG, cache=cache)
        assert {e.response for e in examples.experience_library} == {"\ufffd"}
        assert len(cache) > 0 and lessons.version >= 1
        calls = len(server.requests)
    # A second run answers from the cache, with the cleaned text.
    with StandIn(script) as server, backend(server) as llm, LLMCache(path) as cache:
        cached = CachedBackend(llm, cache)
        params = GenerationParams(n=2, max_tokens=8, seed=0)
        first = cached.generate(["x"], params)
        assert cached.generate(["x"], params) == first and cached.hits == 1
        assert all("\ud800" not in g.text for g in first[0])
    assert calls > 0
