"""Method knobs of the examples strategy: examples as conversation turns (`example_format`) and examples
chosen by relevance and advantage together (`advantage_weight`)."""

import pytest

from support.llm import StandIn, chat_reply
from tfgrpo import ConfigError, TrainingFreeGRPO
from tfgrpo.core.experience import Experience
from tfgrpo.learn.rollouts import RolloutConfig, rollout_batch
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.prompting import PromptTemplate, build_prompt, inject_messages, select_examples
from tfgrpo.rewards.base import FunctionReward, Score

TEMPLATE = PromptTemplate(instruction="Reply with one number.")
EXAMPLES = [Experience("What is 1 + 2?", " 1 + 2 = 3", 0.9), Experience("What is 4 + 4?", "8\n", 0.5)]


def test_turns_put_each_example_in_as_a_user_and_an_assistant_message():
    assert build_prompt("What is 5 + 6?", EXAMPLES, TEMPLATE, example_format="turns") == [
        {"role": "system", "content": "Reply with one number."},
        {"role": "user", "content": "Q: What is 1 + 2?\nA:"},
        {"role": "assistant", "content": "1 + 2 = 3"},
        {"role": "user", "content": "Q: What is 4 + 4?\nA:"},
        {"role": "assistant", "content": "8"},
        {"role": "user", "content": "Q: What is 5 + 6?\nA:"},
    ]
    # Without an instruction there is no system message, and the prompt is still a conversation.
    assert build_prompt("q", EXAMPLES[:1], example_format="turns")[0] == {
        "role": "user",
        "content": "Q: What is 1 + 2?\nA:",
    }


def test_turns_change_nothing_without_examples_or_in_plain_text():
    for chat in (True, False):
        for examples in ([], EXAMPLES):
            if chat and examples:
                continue
            text = build_prompt("q", examples, TEMPLATE, chat=chat)
            assert build_prompt("q", examples, TEMPLATE, chat=chat, example_format="turns") == text


def test_turns_keep_to_the_token_budget_and_bad_formats_are_refused():
    long = Experience("long", "x" * 400, 0.9)
    prompt = build_prompt("q", [long, EXAMPLES[1]], TEMPLATE, token_budget=50, example_format="turns")
    assert [m["content"] for m in prompt if m["role"] == "assistant"] == ["8"]
    with pytest.raises(ConfigError, match="example_format must be one of text, turns"):
        build_prompt("q", EXAMPLES, TEMPLATE, example_format="pairs")
    with pytest.raises(ConfigError, match="example_format"):
        RolloutConfig(example_format="pairs")


def test_inject_messages_puts_the_turns_just_before_the_callers_question():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "What is 5 + 6?", "name": "u1"},
    ]
    out = inject_messages(messages, EXAMPLES[:1], TEMPLATE, example_format="turns")
    assert out == [
        {"role": "system", "content": "Be brief.\n\nReply with one number."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Q: What is 1 + 2?\nA:"},
        {"role": "assistant", "content": "1 + 2 = 3"},
        {"role": "user", "content": "Q: What is 5 + 6?\nA:", "name": "u1"},
    ]
    assert messages[-1]["content"] == "What is 5 + 6?"  # the caller's list is not changed
    # The default text format is as before: one user message holding the pairs.
    assert inject_messages(messages[1:2], EXAMPLES[:1]) == [
        {"role": "user", "content": "Q: What is 1 + 2?\nA:  1 + 2 = 3\n\nQ: Hello\nA:"}
    ]


def library_with_a_relevant_and_a_strong_experience() -> TrainingFreeGRPO:
    grpo = TrainingFreeGRPO(seed=0)
    # Relevant to the query below, advantage 0.5; barely relevant, advantage 0.75.
    grpo.add_rollout_group([("What is 9 + 17?", "9 + 17 = 26"), ("What is 9 + 17?", "3")], [1, 0])
    grpo.add_rollout_group([("What is 2 + 5?", "7")] + [("What is 2 + 5?", "1")] * 3, [1, 0, 0, 0])
    return grpo


def test_advantage_weight_trades_relevance_for_advantage():
    grpo = library_with_a_relevant_and_a_strong_experience()
    query = "What is 9 + 18?"

    def chosen(weight: float) -> list[str]:
        found = select_examples(grpo, query, 1, select="retrieve", retrieval_mode="lexical", advantage_weight=weight)
        return [e.response for e in found]

    assert chosen(0.0) == ["9 + 17 = 26"]  # relevance only, as before
    assert chosen(1.0) == ["7"]  # advantage only
    assert chosen(0.3) == ["9 + 17 = 26"]
    with pytest.raises(ConfigError, match="advantage_weight"):
        RolloutConfig(advantage_weight=1.5)


async def echo(index, path, body):
    return chat_reply(["26"] * body.get("n", 1))


def test_rollout_batch_sends_turns_chosen_with_the_advantage_weight():
    grpo = library_with_a_relevant_and_a_strong_experience()
    config = RolloutConfig(
        shots=1,
        select="retrieve",
        retrieval_mode="lexical",
        advantage_weight=1.0,
        example_format="turns",
        template=TEMPLATE,
        chat=True,
    )
    reward = FunctionReward(lambda prompt, response, sample: Score(1.0))
    with (
        StandIn(echo) as stand_in,
        OpenAIBackend(base_url=stand_in.url, model="scripted", max_retries=0, timeout=10) as llm,
    ):
        rollout_batch(llm, [{"prompt": "What is 9 + 18?"}], reward, 2, config, seed=0, examples=grpo)
    assert stand_in.bodies and all(body["messages"] == SENT for body in stand_in.bodies)


SENT = [
    {"role": "system", "content": "Reply with one number."},
    {"role": "user", "content": "Q: What is 2 + 5?\nA:"},
    {"role": "assistant", "content": "7"},
    {"role": "user", "content": "Q: What is 9 + 18?\nA:"},
]
