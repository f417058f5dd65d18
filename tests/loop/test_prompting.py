import pytest

from tfgrpo import ConfigError, TrainingFreeGRPO
from tfgrpo.core.experience import Experience
from tfgrpo.prompting import PromptTemplate, approx_tokens, build_prompt, select_examples


def test_spec_few_shot_format():
    examples = [Experience("What is 1 + 1?", " 2", 0.5), Experience("What is 2 + 3?", " 5", 0.4)]
    assert build_prompt("What is 4 + 4?", examples) == (
        "Q: What is 1 + 1?\nA:  2\n\nQ: What is 2 + 3?\nA:  5\n\nQ: What is 4 + 4?\nA:"
    )


def test_token_budget_keeps_examples_that_fit():
    long = Experience("long", "x" * 400, 0.9)  # ~101 tokens
    short = Experience("short", "y", 0.5)
    prompt = build_prompt("q", [long, short], token_budget=50)
    assert "x" * 400 not in prompt and "Q: short\nA: y" in prompt
    assert build_prompt("q", [long, short], token_budget=0) == "Q: q\nA:"
    assert approx_tokens("abcd" * 10) == 10


def test_instruction_is_a_system_message_for_chat_and_a_paragraph_for_text():
    template = PromptTemplate(instruction="Answer with a number.")
    chat = build_prompt("q", [], template)
    assert chat == [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "Q: q\nA:"},
    ]
    assert build_prompt("q", [], template, chat=False) == "Answer with a number.\n\nQ: q\nA:"


def test_custom_templates_are_checked():
    template = PromptTemplate(example="### {prompt}\n{response}\n", query="### {prompt}\n")
    assert build_prompt("b", [Experience("a", "r", 1.0)], template) == "### a\nr\n### b\n"
    assert build_prompt("{x}", [Experience("{y}", "{z}", 1.0)], template) == "### {y}\n{z}\n### {x}\n"
    with pytest.raises(ConfigError, match="must contain"):
        PromptTemplate(example="Q: {prompt}")
    with pytest.raises(ConfigError, match="placeholder"):
        PromptTemplate(query="{prompt} {other}")


def test_select_examples_skips_the_same_prompt_and_duplicates_best_first():
    grpo = TrainingFreeGRPO(seed=3)
    grpo.add_rollout_group([("same", "a"), ("same", "b")], [1, 0])
    grpo.add_rollout_group([("other", "c"), ("other", "d"), ("other", "e")], [1, 0, 0])
    grpo.add_rollout_group([("third", "c"), ("third", "f")], [1, 0])
    chosen = select_examples(grpo, "same", shots=5)
    assert {e.prompt for e in chosen} <= {"other", "third"}
    assert len({e.response for e in chosen}) == len(chosen) == 1  # "c" twice counts once
    assert select_examples(grpo, "same", shots=5, exclude_same_prompt=False)[0].advantage == pytest.approx(2 / 3)
    assert select_examples(None, "q", 3) == [] and select_examples(grpo, "q", 0) == []


def test_select_retrieve_picks_the_most_relevant_experiences():
    grpo = TrainingFreeGRPO(seed=0)
    grpo.add_rollout_group(
        [("Read file lines from disk", "open(p).readlines()"), ("Read file lines from disk", "x")], [1, 0]
    )
    grpo.add_rollout_group([("Reverse a string", "s[::-1]"), ("Reverse a string", "s")], [1, 0])
    grpo.add_rollout_group([("Sort a list of numbers", "sorted(xs)"), ("Sort a list of numbers", "xs")], [1, 0])
    chosen = select_examples(grpo, "Read file bytes", shots=1, select="retrieve", retrieval_mode="lexical")
    assert [e.response for e in chosen] == ["open(p).readlines()"]
    with pytest.raises(ConfigError, match="select must be"):
        select_examples(grpo, "q", 1, select="nearest")


def test_a_routed_prompt_with_nothing_of_its_own_kind_borrows_from_the_rest_only_with_the_fallback():
    from tfgrpo.learn.rollouts import RolloutConfig

    grpo = TrainingFreeGRPO(seed=0)
    grpo.add_rollout_group(
        [("Join with hyphens: red road", "red-road"), ("Join with hyphens: red road", "x")], [1, 0], {"domain": "h"}
    )
    grpo.add_rollout_group(
        [("Rewrite in lower case: RED LAMP", "red lamp"), ("Rewrite in lower case: RED LAMP", "y")], [1, 0],
        {"domain": "l"},
    )  # fmt: skip
    query, options = "Repeat inside quotes: red lamp", {"select": "retrieve", "retrieval_mode": "lexical"}
    assert select_examples(grpo, query, 2, where={"domain": "q"}, **options) == []
    borrowed = select_examples(grpo, query, 2, where={"domain": "q"}, where_fallback=True, **options)
    assert {e.response for e in borrowed} == {"red-road", "red lamp"}
    own = select_examples(grpo, query, 2, where={"domain": "h"}, where_fallback=True, **options)
    assert [e.response for e in own] == ["red-road"]  # its own kind exists: nothing borrowed
    with pytest.raises(ConfigError, match="give --where too"):
        RolloutConfig(select="retrieve", where_fallback=True)
