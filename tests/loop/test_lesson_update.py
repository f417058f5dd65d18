"""The semantic-advantage step over real HTTP: an `OpenAIBackend` talking to a stand-in server on
127.0.0.1 that answers as scripted (the only way to get the same hostile LLM output on demand), a real
reward, a real SQLite lesson library and LLM cache."""

import json
import logging

import pytest

from support.llm import StandIn, chat_reply, error_reply
from tfgrpo.errors import BackendError, ConfigError
from tfgrpo.learn import LessonUpdate
from tfgrpo.llm.base import GenerationParams
from tfgrpo.llm.cache import CachedBackend, LLMCache
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import TrainConfig, run_step, train
from tfgrpo.rewards.base import FunctionReward, Score
from tfgrpo.semantic import LessonConfig, LessonLibrary, Operation

SAMPLES = [
    {"id": "a", "prompt": "What is 2+2?", "answer": "4"},
    {"id": "b", "prompt": "What is 3+3?", "answer": "6"},
    {"id": "c", "prompt": "What is 1+1?", "answer": "2"},
]
GROUP_REPLIES = {
    # a fenced answer with one good operation and one on an id that does not exist
    "2+2": '```json\n[{"operation": "add", "text": "Add the numbers carefully."},\n'
    '{"operation": "delete", "id": "G99"}]\n```',
    # JSON embedded in prose, official field names
    "3+3": 'Looking at the group, {"option": "add", "experience": "Double-check the final sum."} seems right.',
}
BATCH_REPLY = json.dumps(
    [
        {"operation": "add", "text": "Add the numbers carefully."},
        {"operation": "merge", "ids": ["G5", "G6"], "text": "Double-check the final sum."},
        {"operation": "add", "text": "add the numbers carefully"},
        {"operation": "update", "id": "G0", "text": " ".join(["very"] * 40)},
    ]
)


def exact(prompt, response, sample):
    ok = response.strip() == sample["answer"]
    return Score(float(ok), "correct" if ok else f"expected {sample['answer']}")


class Script:
    """The stand-in's answers, chosen by what the request asks for; `fail_batch` makes the consolidation
    request fail (HTTP 400) as a crash would, in the middle of a step."""

    def __init__(self, group_replies=GROUP_REPLIES, batch_reply=BATCH_REPLY, summary="Added the two numbers."):
        self.group_replies = group_replies
        self.batch_reply = batch_reply
        self.summary = summary
        self.fail_batch = False
        self.kinds = []

    async def __call__(self, index, path, body):
        messages = body["messages"]
        text = messages[-1]["content"]
        n = body.get("n", 1)
        if text.startswith("You are analysing one attempt"):
            self.kinds.append("summary")
            return chat_reply([self.summary] * n)
        if text.startswith("You study attempts"):
            self.kinds.append("group")
            reply = next((r for key, r in self.group_replies.items() if key in text), "I have nothing to add.")
            return chat_reply([reply] * n)
        if text.startswith("You maintain a short library"):
            self.kinds.append("batch")
            if self.fail_batch:
                return error_reply(400, "scripted failure")
            return chat_reply([self.batch_reply] * n)
        self.kinds.append("policy")
        answer = {"2+2": "4", "3+3": "6", "1+1": "2"}[next(k for k in ("2+2", "3+3", "1+1") if k in text)]
        wrong = str(int(answer) + 1)
        if "1+1" in text:
            return chat_reply([answer] * n)  # always right: no signal
        return chat_reply([answer if i % 2 == 0 else wrong for i in range(n)])


@pytest.fixture
def server():
    script = Script()
    with StandIn(script) as stand_in:
        stand_in.script = script
        yield stand_in


def backend(stand_in):
    return OpenAIBackend(base_url=stand_in.url, model="scripted", max_retries=0, timeout=10)


CONFIG = TrainConfig(epochs=1, batch_size=3, group_size=4, max_tokens=16)
LESSONS = LessonConfig(max_words=12, critic_max_tokens=200)


def step(llm, samples, lib, config=CONFIG, lessons=LESSONS, global_step=1, **kwargs):
    return run_step(
        llm, samples, FunctionReward(exact), [LessonUpdate(lib, lessons, **kwargs)], config, global_step=global_step
    )


def test_one_step_turns_the_groups_difference_into_lessons(server, tmp_path, caplog):
    with backend(server) as llm, LessonLibrary(tmp_path / "run.db") as lib:
        with caplog.at_level(logging.WARNING, logger="tfgrpo.semantic"):
            metrics = step(llm, SAMPLES, lib)

        # Rollouts: one request per sample (n=4 natively); summaries only for the 2 groups with signal.
        assert server.script.kinds.count("policy") == 3
        assert server.script.kinds.count("summary") == 8
        assert server.script.kinds.count("group") == 2 and server.script.kinds.count("batch") == 1
        assert metrics.llm_requests == len(server.requests) == 14
        assert metrics.groups == 3 and metrics.groups_with_signal == 2 and metrics.reward_mean == pytest.approx(2 / 3)
        assert metrics.proposed == 3  # two from group a (one on an id that does not exist), one from b

        # The batch answer: an add, a merge of invented ids (added instead), a duplicate, an overlong update.
        assert lib.lessons == {"G0": " ".join(["very"] * 12) + "...", "G1": "Double-check the final sum."}
        version = lib.history()[-1]
        assert version.kind == "step" and version.step == 1 and lib.progress["global_step"] == 1
        reasons = [s.reason for s in version.skipped]
        assert any("merge named lessons that do not exist (G5, G6)" in r for r in reasons)
        assert any(r == "duplicate of G0; skipped" for r in reasons)
        assert any("had 40 words (limit 12); shortened" in r for r in reasons)
        # What the step saw is kept with the version.
        context = version.context
        assert [s["sample_id"] for s in context["summaries"]] == ["a", "b"]
        assert context["summaries"][0]["rollouts"][1] == {
            "response": "5",
            "reward": 0.0,
            "reason": "expected 4",
            "summary": "Added the two numbers.",
        }
        assert context["rewards"] == {"a": [1.0, 0.0, 1.0, 0.0], "b": [1.0, 0.0, 1.0, 0.0], "c": [1.0] * 4}
        assert [c["operations"] for c in context["critiques"]] == [
            [{"operation": "add", "text": "Add the numbers carefully."}, {"operation": "delete", "id": "G99"}],
            [{"operation": "add", "text": "Double-check the final sum."}],
        ]
        assert any("markdown fence" in p for p in context["problems"])
        assert any("embedded in prose" in p for p in context["problems"])
        assert "embedded in prose" in caplog.text and "do not exist (G5, G6)" in caplog.text
        assert metrics.skipped == len(version.skipped) and metrics.problems

        # The critic saw the reward, its reason and the reference answer.
        summary_bodies = [b for b in server.bodies if b["messages"][-1]["content"].startswith("You are analysing")]
        # Summaries are requested concurrently, so find the one for the failed attempt by its content.
        failed = [
            b["messages"][-1]["content"]
            for b in summary_bodies
            if "Reward: 0 (expected 4)" in b["messages"][-1]["content"]
        ]
        assert failed and all("## Reference answer\n4" in text for text in failed)
        assert all(b["temperature"] == 0.0 for b in summary_bodies)
        policy_bodies = [b for b in server.bodies if "n" in b]
        assert all(b["temperature"] == 0.7 and b["n"] == 4 for b in policy_bodies)

        # The next step's rollouts carry the lessons in the system message, with the instruction.
        server.requests.clear()
        step(llm, SAMPLES[:1], lib, global_step=2)
        system = server.bodies[0]["messages"][0]
        assert system["role"] == "system"
        assert "MUST" in system["content"] and "[G1]. Double-check the final sum." in system["content"]


def test_junk_everywhere_leaves_the_library_alone_and_says_why(tmp_path):
    script = Script(group_replies={"2+2": "As an AI, I think lessons are good.", "3+3": "[1, 2, {]"}, batch_reply="?")
    with StandIn(script) as stand_in, backend(stand_in) as llm, LessonLibrary(tmp_path / "run.db") as lib:
        metrics = step(llm, SAMPLES, lib)
        assert lib.lessons == {} and lib.version == 1 and lib.progress["global_step"] == 1
        assert "batch" not in script.kinds  # nothing proposed: no consolidation call
        assert sum("no JSON found" in p for p in metrics.problems) == 2
        assert lib.history()[-1].context["critiques"][0]["answer"] == "As an AI, I think lessons are good."


def test_a_junk_consolidation_falls_back_to_the_groups_proposals(tmp_path):
    script = Script(batch_reply="I merged them all in my head.")
    with StandIn(script) as stand_in, backend(stand_in) as llm, LessonLibrary() as lib:
        metrics = step(llm, SAMPLES, lib)
        assert lib.lessons == {"G0": "Add the numbers carefully.", "G1": "Double-check the final sum."}
        assert any("applying the groups' proposals directly" in p for p in metrics.problems)
        assert any("delete of G99, which does not exist" in p for p in metrics.problems)


def test_a_resumed_run_makes_no_llm_call_twice(server, tmp_path):
    reward = FunctionReward(exact)
    config = TrainConfig(epochs=2, batch_size=2, group_size=2, max_tokens=16)

    def run(path, cache, on_step=lambda *a: 0):
        with LessonLibrary(path) as lib, backend(server) as llm:
            history = train(llm, SAMPLES, reward, [LessonUpdate(lib, LESSONS)], config, cache=cache, on_step=on_step)
            return history, lib.lessons, lib.version, lib.progress

    # The reference: an uninterrupted run.
    _, reference_lessons, _, _ = run(tmp_path / "ref.db", LLMCache(tmp_path / "ref.db"))
    reference_calls = len(server.requests)
    assert reference_calls > 10

    # A run killed in the middle of step 3: its consolidation request fails.
    server.requests.clear()
    server.script.kinds.clear()
    path = tmp_path / "run.db"
    steps = []

    def fail_after_step_2(metrics, total):
        steps.append(metrics.global_step)
        server.script.fail_batch = metrics.global_step == 2

    with pytest.raises(BackendError, match="scripted failure"):
        run(path, LLMCache(path), on_step=fail_after_step_2)
    with LessonLibrary(path) as lib:
        assert lib.progress["global_step"] == 2 and steps == [1, 2]
        version_before = lib.version
    server.script.fail_batch = False
    calls_before_resume = len(server.requests)

    # Resume in a new process (new objects on the same file): only the failed request is sent again.
    with LLMCache(path) as cache:
        history, lessons, version, _ = run(path, cache)
    assert version > version_before
    assert [m.global_step for m in history] == [3, 4]
    # Every request of the reference run was made once, plus the one that failed.
    assert len(server.requests) == reference_calls + 1
    assert server.script.kinds[calls_before_resume] == "batch"  # step 3 resumed at its failed call
    assert history[0].cache_hits > 0
    assert lessons == reference_lessons

    # From a fresh library but the same cache: the whole run again with zero requests.
    server.requests.clear()
    with LLMCache(path) as cache:
        history, lessons, _, _ = run(tmp_path / "again.db", cache)
    assert len(history) == 4 and sum(m.llm_requests for m in history) == 0
    assert len(server.requests) == 0
    assert lessons == reference_lessons


def test_without_ground_truth_every_group_goes_on_and_the_critic_sees_no_answers(tmp_path):
    policy_script, critic_script = Script(), Script()
    with StandIn(policy_script) as policy_server, StandIn(critic_script) as critic_server:
        with backend(policy_server) as policy, backend(critic_server) as critic:
            config = TrainConfig(epochs=1, batch_size=3, group_size=2)
            lessons = LessonConfig(use_ground_truth=False, placement="user")
            lib = LessonLibrary()
            lib.apply([Operation("add", "Be brief.")])
            metrics = step(policy, SAMPLES, lib, config, lessons, critic=critic)
    assert set(policy_script.kinds) == {"policy"} and "policy" not in critic_script.kinds
    assert critic_script.kinds.count("summary") == 6 and critic_script.kinds.count("group") == 3
    assert metrics.groups_with_signal == 2
    critic_text = "\n".join(b["messages"][-1]["content"] for b in critic_server.bodies)
    assert "Reference answer" not in critic_text and "expected 4" not in critic_text
    assert "Reward: not available" in critic_text and "(reward " not in critic_text
    user = policy_server.bodies[0]["messages"]
    assert len(user) == 1 and user[0]["content"].endswith("[G0]. Be brief.\n\nQ: What is 2+2?\nA:")


def test_with_one_rollout_per_group_every_group_goes_to_the_critic_alone(server, tmp_path):
    """G=1, the paper's ablation without group comparison: no group can show signal, so every rollout
    is summarised and compared with nothing but its own reward and the reference."""
    config = TrainConfig(epochs=1, batch_size=3, group_size=1, max_tokens=16)
    with backend(server) as llm, LessonLibrary(tmp_path / "g1.db") as lib:
        metrics = step(llm, SAMPLES, lib, config)
    kinds = server.script.kinds
    assert kinds.count("policy") == 3 and kinds.count("summary") == 3 and kinds.count("group") == 3
    assert metrics.groups_with_signal == 0 and metrics.applied > 0 and len(lib) > 0
    group_texts = [b["messages"][-1]["content"] for b in server.bodies if "You study attempts" in str(b["messages"])]
    for text in group_texts:
        assert "### Attempt 1 (reward 1)" in text and "### Attempt 2" not in text
        assert "## Reference answer" in text


def test_training_prompts_the_policy_exactly_as_evaluation_does(tmp_path):
    """The lesson rollouts use the evaluation's template, stop strings and few-shot examples, with the
    lessons put in the same place, so what is learned is what is measured."""
    from tfgrpo import GRPOConfig, TrainingFreeGRPO
    from tfgrpo.learn import ExampleUpdate
    from tfgrpo.loop import EvalConfig, LessonCondition, evaluate
    from tfgrpo.prompting import PromptTemplate

    template = PromptTemplate(instruction="Reply with one number.")
    shared = {"template": template, "stop": ("\n",), "shots": 1, "max_tokens": 16, "temperature": 0.3}
    examples = TrainingFreeGRPO.with_config(GRPOConfig(group_size=4))
    examples.add_rollout_group([("What is 5+5?", r) for r in ("10", "11", "12", "13")], [1.0, 0.0, 0.0, 0.0])
    script = Script()
    with StandIn(script) as stand_in, backend(stand_in) as llm:
        lib = LessonLibrary()
        lib.apply([Operation("add", "Be brief.")])
        config = TrainConfig(epochs=1, batch_size=1, group_size=2, **shared)
        # 1+1 is always answered right: no signal, so both libraries stay as they are for the evaluation.
        updates = [ExampleUpdate(examples), LessonUpdate(lib, LESSONS)]
        run_step(llm, SAMPLES[2:], FunctionReward(exact), updates, config)
        assert examples.library_size() == 1 and len(lib) == 1
        trained = stand_in.bodies[0]
        stand_in.bodies.clear()
        evaluate(
            llm,
            SAMPLES[2:],
            FunctionReward(exact),
            {"both": LessonCondition(lib, examples=examples)},
            EvalConfig(k=2, **shared),
        )
        evaluated = stand_in.bodies[0]
    assert trained["messages"] == evaluated["messages"]
    assert trained["messages"][0] == {"role": "system", "content": "Reply with one number.\n\n" + lib.render()}
    assert trained["messages"][1]["content"] == "Q: What is 5+5?\nA: 10\n\nQ: What is 1+1?\nA:"
    assert trained["stop"] == evaluated["stop"] == ["\n"]


def test_the_cache_is_keyed_by_model_prompt_and_params(server, tmp_path):
    with backend(server) as llm, LLMCache(tmp_path / "c.db") as cache:
        cached = CachedBackend(llm, cache)
        params = GenerationParams(n=2, temperature=0.7, seed=1)
        first = cached.generate(["What is 2+2?", "What is 2+2?"], params)
        assert len(server.requests) == 1  # the same prompt twice in one call is asked once
        assert cached.generate(["What is 2+2?"], params) == first[:1]
        assert len(server.requests) == 1 and cached.hits == 2 and cached.misses == 1
        cached.generate(["What is 2+2?"], params.replace(seed=2))
        cached.generate(["What is 2+2?"], params.replace(temperature=0.3))
        CachedBackend(llm, cache, model="other").generate(["What is 2+2?"], params)
        assert len(server.requests) == 4 and len(cache) == 4
        assert [g.text for g in first[0]] == ["4", "5"]


def test_paper_preset_and_config_checks():
    paper, critic = TrainConfig.preset("paper"), LessonConfig.preset("paper")
    assert (paper.epochs, paper.group_size, paper.batch_size) == (3, 5, 100)
    assert (paper.temperature, critic.eval_temperature) == (0.7, 0.3)
    assert TrainConfig.preset("paper", batch_size=10).batch_size == 10
    with pytest.raises(ConfigError, match="unknown preset"):
        LessonConfig.preset("nope")
    with pytest.raises(ConfigError, match="no field"):
        TrainConfig.preset("paper", epoch=3)
    assert TrainConfig(group_size=1).group_size == 1  # the paper's G=1 ablation
    with pytest.raises(ConfigError, match="group_size"):
        TrainConfig(group_size=0)
    with pytest.raises(ConfigError, match="shots"):
        TrainConfig(shots=-1)
    with pytest.raises(ConfigError, match="placement"):
        LessonConfig(placement="assistant")


class Sabotage(Script):
    """A policy that answers 5 to everything once the lesson "Always answer 5." is in its prompt."""

    async def __call__(self, index, path, body):
        prompt = "\n".join(str(m["content"]) for m in body["messages"])
        if not body["messages"][-1]["content"].startswith("You ") and "Always answer 5." in prompt:
            self.kinds.append("policy")
            return chat_reply(["5"] * body.get("n", 1))
        return await super().__call__(index, path, body)


@pytest.mark.parametrize(("lesson", "accepted"), [("Always answer 5.", False), ("Add the numbers carefully.", True)])
def test_validated_updates_keep_only_candidates_that_do_not_lower_the_reward(tmp_path, lesson, accepted):
    batch_reply = json.dumps([{"operation": "add", "text": lesson}])
    lessons = LessonConfig(critic_max_tokens=200, validate_margin=0.1, validation_size=2)
    validation = [SAMPLES[0], SAMPLES[2]]
    with StandIn(Sabotage(batch_reply=batch_reply)) as stand_in:
        with backend(stand_in) as llm, LessonLibrary(tmp_path / "run.db") as lib:
            lib.apply([Operation("add", "Read the question.")])
            before = lib.version
            updates = [LessonUpdate(lib, lessons)]
            metrics = train(llm, SAMPLES, FunctionReward(exact), updates, CONFIG, validation=validation)
            (m,) = metrics
            assert m.validation_current == pytest.approx(0.75)  # a: 2/4 right, c: 4/4 right
            assert m.accepted is accepted and lib.progress["global_step"] == 1
            if accepted:
                assert m.validation_candidate == pytest.approx(0.75) and m.rejected_version is None
                assert lib.lessons == {"G0": "Read the question.", "G1": lesson}
                assert lib.history()[-1].context["validation"]["accepted"] is True
            else:
                assert m.validation_candidate == 0.0
                assert lib.lessons == {"G0": "Read the question."} and m.lesson_version == lib.version == before + 2
                rejected = lib.get_version(m.rejected_version)
                assert rejected.kind == "rejected" and rejected.lessons == {"G0": "Read the question.", "G1": lesson}
                assert rejected.context["validation"] == {
                    "current": 0.75,
                    "candidate": 0.0,
                    "margin": 0.1,
                    "samples": ["a", "c"],
                    "accepted": False,
                }
                assert lib.history()[-1].kind == "rollback"
        # Reopened: the rejected candidate never became current.
        with LessonLibrary(tmp_path / "run.db") as lib:
            assert lib.lessons == {"G0": "Read the question."} if not accepted else len(lib) == 2


def test_validation_settings_are_checked():
    with pytest.raises(ConfigError, match="validate_margin"):
        LessonConfig(validate_margin=-1)
    with pytest.raises(ConfigError, match="validation_size"):
        LessonConfig(validation_size=0)
