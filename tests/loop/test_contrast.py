"""A failure shown beside a success (`contrast`): the examples update records each success's group's worst
rollout in its metadata, and prompts show it only when asked, in both example formats, within the budget."""

import json
import time

import pytest

from support.llm import StandIn, chat_reply
from tfgrpo import GRPOConfig, TrainingFreeGRPO
from tfgrpo.cli import main
from tfgrpo.core.experience import Experience
from tfgrpo.errors import InvalidRolloutsError
from tfgrpo.learn import ExampleUpdate
from tfgrpo.learn.example_update import CONTRAST_CHARS, with_contrast
from tfgrpo.learn.rollouts import RolloutConfig, rollout_batch
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import TrainConfig, run_step
from tfgrpo.prompting import PromptTemplate, build_prompt, fit_examples, inject_messages
from tfgrpo.rewards.base import FunctionReward, Score

TEMPLATE = PromptTemplate(instruction="Reply with one number.")
Q = "What is 1 + 2?"


def stored(rollouts: list[str], rewards: list[float], threshold: float = 0.0) -> list[Experience]:
    """The experiences the examples update stores from one group of `Q`."""
    grpo = TrainingFreeGRPO.with_config(GRPOConfig(min_advantage_threshold=threshold))
    metadata = with_contrast(rollouts, rewards, {"task": "sums"})
    return grpo.add_rollout_groups([([(Q, r) for r in rollouts], rewards, metadata)])[0]


def contrast(exp: Experience) -> tuple[str, str] | None:
    meta = exp.metadata
    return (meta["contrast_response"], meta["contrast_reward"]) if "contrast_response" in meta else None


# ---------------------------------------------------------------------------------------------- storing


def test_a_success_records_its_groups_lowest_reward_rollout():
    kept = stored(["3", "4", "5", "three"], [1.0, 0.2, 0.0, 0.5])
    assert [(e.response, contrast(e)) for e in kept] == [("3", ("5", "0.0")), ("three", ("5", "0.0"))]
    assert kept[0].metadata["task"] == "sums"
    # A tie for the worst: the first of them.
    (best,) = stored(["3", "4", "5"], [1.0, 0.0, 0.0])
    assert contrast(best) == ("4", "0.0")


def test_no_contrast_when_nothing_in_the_group_is_lower():
    # With a negative threshold, below-mean and equal rollouts are stored too: only those above the
    # group's lowest reward get a contrast, and the worst rollout is never its own contrast.
    kept = stored(["3", "4", "5"], [1.0, 0.5, 0.0], threshold=-1.0)
    assert [(e.response, contrast(e)) for e in kept] == [("3", ("5", "0.0")), ("4", ("5", "0.0")), ("5", None)]
    assert [contrast(e) for e in stored(["3", "3 "], [1.0, 1.0], threshold=-1.0)] == [None, None]
    assert stored(["3", "3 "], [1.0, 1.0]) == []  # all equal: nothing stored at the default threshold


def test_the_contrast_is_bounded_and_kept_as_plain_text():
    hostile = "{prompt} {0} {response} __import__('os')" + "x" * (2 * CONTRAST_CHARS)
    (best,) = stored(["3", hostile], [1.0, 0.0])
    assert contrast(best) == (hostile[:CONTRAST_CHARS], "0.0")
    shown = build_prompt("q", [best], PromptTemplate(), contrast=True)
    assert f"Wrong answer: {hostile[:CONTRAST_CHARS]}\nA: 3" in shown  # not formatted, not parsed


def test_per_rollout_metadata_must_pair_up_with_the_rollouts():
    grpo = TrainingFreeGRPO()
    with pytest.raises(InvalidRolloutsError, match="2 rollouts but 1 metadata"):
        grpo.add_rollout_groups([([(Q, "3"), (Q, "4")], [1.0, 0.0], [{"a": "b"}])])
    with pytest.raises(InvalidRolloutsError, match="str to str"):
        grpo.add_rollout_groups([([(Q, "3"), (Q, "4")], [1.0, 0.0], [{"a": 1}, None])])
    assert grpo.library_size() == 0 and grpo.total_rollouts == 0


# ---------------------------------------------------------------------------------------------- rendering

WITH = Experience(Q, " 1 + 2 = 3", 0.5, metadata={"contrast_response": " 4\n", "contrast_reward": "0.0"})
PLAIN = Experience("What is 4 + 4?", "8\n", 0.4)


def test_text_shows_the_wrong_answer_between_the_query_and_the_right_one():
    assert build_prompt("What is 5 + 6?", [WITH, PLAIN], TEMPLATE, contrast=True) == [
        {"role": "system", "content": "Reply with one number."},
        {
            "role": "user",
            "content": "Q: What is 1 + 2?\nWrong answer: 4\nA:  1 + 2 = 3\n\n"
            "Q: What is 4 + 4?\nA: 8\n\n\nQ: What is 5 + 6?\nA:",
        },
    ]
    assert (
        build_prompt("q", [WITH], contrast=True, chat=False)
        == "Q: What is 1 + 2?\nWrong answer: 4\nA:  1 + 2 = 3\n\nQ: q\nA:"
    )
    empty = Experience(Q, "3", 0.5, metadata={"contrast_response": " \n", "contrast_reward": "0.0"})
    assert "Q: What is 1 + 2?\nWrong answer: (no answer)\nA: 3" in build_prompt("q", [empty], contrast=True)


def test_turns_show_the_wrong_answer_a_correction_and_the_right_answer():
    assert build_prompt("What is 5 + 6?", [WITH, PLAIN], TEMPLATE, example_format="turns", contrast=True) == [
        {"role": "system", "content": "Reply with one number."},
        {"role": "user", "content": "Q: What is 1 + 2?\nA:"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "That answer is wrong. Try again."},
        {"role": "assistant", "content": "1 + 2 = 3"},
        {"role": "user", "content": "Q: What is 4 + 4?\nA:"},
        {"role": "assistant", "content": "8"},
        {"role": "user", "content": "Q: What is 5 + 6?\nA:"},
    ]


# Today's prompts (before contrast existed), written out: off, the recorded failure changes nothing.
TODAY_TEXT = [
    {"role": "system", "content": "Reply with one number."},
    {"role": "user", "content": "Q: What is 1 + 2?\nA:  1 + 2 = 3\n\nQ: What is 4 + 4?\nA: 8\n\n\nQ: q\nA:"},
]
TODAY_TURNS = [
    {"role": "system", "content": "Reply with one number."},
    {"role": "user", "content": "Q: What is 1 + 2?\nA:"},
    {"role": "assistant", "content": "1 + 2 = 3"},
    {"role": "user", "content": "Q: What is 4 + 4?\nA:"},
    {"role": "assistant", "content": "8"},
    {"role": "user", "content": "Q: q\nA:"},
]


def test_off_the_prompts_are_todays_and_without_a_recorded_failure_on_changes_nothing():
    bare = Experience(WITH.prompt, WITH.response, WITH.advantage)  # an older library's experience
    for examples, contrast_on in (([WITH, PLAIN], False), ([bare, PLAIN], True), ([bare, PLAIN], False)):
        assert build_prompt("q", examples, TEMPLATE, contrast=contrast_on) == TODAY_TEXT
        assert build_prompt("q", examples, TEMPLATE, example_format="turns", contrast=contrast_on) == TODAY_TURNS
    assert build_prompt("q", [WITH, PLAIN], TEMPLATE) == TODAY_TEXT  # the default is off
    assert build_prompt("q", [WITH], chat=False) == "Q: What is 1 + 2?\nA:  1 + 2 = 3\n\nQ: q\nA:"
    assert RolloutConfig().contrast is False


def test_the_failure_counts_within_the_token_budget():
    long = Experience(Q, "3", 0.9, metadata={"contrast_response": "9" * 400, "contrast_reward": "0.0"})
    examples = [long, PLAIN]
    assert fit_examples(examples, TEMPLATE, 50) == examples  # off: the failure is not shown, so not counted
    assert fit_examples(examples, TEMPLATE, 50, contrast=True) == [PLAIN]
    for example_format in ("text", "turns"):
        prompt = build_prompt("q", examples, TEMPLATE, 50, example_format=example_format, contrast=True)
        assert "9" * 400 not in json.dumps(prompt) and "4 + 4" in json.dumps(prompt)
    # What the budget counts is what the text prompt shows.
    text = build_prompt("q", [WITH], PromptTemplate(), chat=False, contrast=True)
    cost = len(text) - len("Q: q\nA:")
    assert fit_examples([WITH], PromptTemplate(), (cost + 3) // 4, contrast=True) == [WITH]
    assert fit_examples([WITH], PromptTemplate(), (cost + 3) // 4 - 1, contrast=True) == []


def test_inject_messages_shows_the_failure_as_training_does():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    for example_format in ("text", "turns"):
        built = build_prompt("q", [WITH], TEMPLATE, example_format=example_format, contrast=True)
        out = inject_messages(messages, [WITH], TEMPLATE, example_format=example_format, contrast=True)
        assert out == [{"role": "system", "content": "Be brief.\n\nReply with one number."}, *built[1:]]
    assert inject_messages(messages, [WITH], TEMPLATE) == [
        {"role": "system", "content": "Be brief.\n\nReply with one number."},
        {"role": "user", "content": "Q: What is 1 + 2?\nA:  1 + 2 = 3\n\nQ: q\nA:"},
    ]


# ---------------------------------------------------------------------------------------------- libraries


def test_contrast_survives_every_library_format_and_older_files_load(tmp_path):
    grpo = TrainingFreeGRPO()
    grpo.add_rollout_groups([([(Q, "3"), (Q, "4")], [1.0, 0.0], with_contrast(["3", "4"], [1.0, 0.0], {"k": "v"}))])
    for name in ("lib.json", "lib.db"):
        grpo.save_to_file(tmp_path / name)
        copy = TrainingFreeGRPO()
        copy.load_from_file(tmp_path / name)
        assert [e.metadata for e in copy.experience_library] == [
            {"k": "v", "contrast_response": "4", "contrast_reward": "0.0"}
        ]
    # A library written before contrast (the spec's JSON, metadata {}) loads and prompts as before.
    old = tmp_path / "old.json"
    old.write_text(
        json.dumps([{"prompt": Q, "response": "3", "advantage": 0.5, "timestamp": int(time.time()), "metadata": {}}])
    )
    older = TrainingFreeGRPO()
    older.load_from_file(old)
    examples = list(older.experience_library)
    assert (
        build_prompt("q", examples, contrast=True)
        == build_prompt("q", examples)
        == "Q: What is 1 + 2?\nA: 3\n\nQ: q\nA:"
    )


def test_library_commands_show_the_contrast_on_a_line_of_its_own(tmp_path, capsys):
    path = tmp_path / "lib.db"
    with TrainingFreeGRPO.open(path) as grpo:
        grpo.add_rollout_groups(
            [([(Q, "3"), (Q, "4\nfour")], [1.0, 0.0], with_contrast(["3", "4\nfour"], [1.0, 0.0], {}))]
        )
    assert main(["sample", "-l", str(path), "-k", "1"]) in (0, None)
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("metadata={'contrast_reward': '0.0'}") and out[-1] == "  contrast: 4 four"
    assert main(["query", "-l", str(path), "What", "--json"]) in (0, None)
    assert json.loads(capsys.readouterr().out)["metadata"]["contrast_response"] == "4\nfour"
    assert main(["export", "-l", str(path), str(tmp_path / "out.json")]) in (0, None)
    assert main(["import", str(tmp_path / "out.json"), "-l", str(tmp_path / "copy.db")]) in (0, None)
    with TrainingFreeGRPO.open(tmp_path / "copy.db") as copy:
        assert copy.experience_library[0].metadata["contrast_response"] == "4\nfour"


# ---------------------------------------------------------------------------------------------- the loop

SAMPLES = [{"id": "a", "prompt": "What is 2+2?", "answer": "4"}]
REWARD = FunctionReward(lambda prompt, response, sample: Score(float(response.strip() == sample["answer"])))


async def right_then_wrong(index, path, body):
    return chat_reply(["4" if i % 2 == 0 else "5" for i in range(body.get("n", 1))])


@pytest.mark.parametrize("example_format", ["text", "turns"])
def test_a_trained_step_records_the_failure_and_the_flag_puts_it_into_the_next_rollouts(tmp_path, example_format):
    path = tmp_path / "lib.db"
    with (
        StandIn(right_then_wrong) as server,
        OpenAIBackend(base_url=server.url, model="scripted", max_retries=0, timeout=10) as llm,
    ):
        with TrainingFreeGRPO.open(path) as grpo:
            config = TrainConfig(epochs=1, batch_size=1, group_size=2, max_tokens=4, shots=1)
            run_step(llm, SAMPLES, REWARD, [ExampleUpdate(grpo, task_name="sums")], config)
        with TrainingFreeGRPO.open(path) as grpo:
            (exp,) = grpo.experience_library
            assert exp.metadata == {
                "task": "sums",
                "sample_id": "a",
                "contrast_response": "5",
                "contrast_reward": "0.0",
            }
            sent = {}
            for on in (False, True):
                server.requests.clear()
                rollouts = RolloutConfig(shots=1, example_format=example_format, contrast=on, chat=True)
                rollout_batch(llm, [{"prompt": "What is 3+3?"}], REWARD, 2, rollouts, seed=0, examples=grpo)
                sent[on] = server.bodies[0]["messages"]
    query = {"role": "user", "content": "Q: What is 3+3?\nA:"}
    if example_format == "text":
        assert sent[False] == [{"role": "user", "content": "Q: What is 2+2?\nA: 4\n\n" + query["content"]}]
        assert sent[True] == [
            {"role": "user", "content": "Q: What is 2+2?\nWrong answer: 5\nA: 4\n\n" + query["content"]}
        ]
    else:
        example = {"role": "user", "content": "Q: What is 2+2?\nA:"}
        right = {"role": "assistant", "content": "4"}
        assert sent[False] == [example, right, query]
        correction = {"role": "user", "content": "That answer is wrong. Try again."}
        assert sent[True] == [example, {"role": "assistant", "content": "5"}, correction, right, query]
