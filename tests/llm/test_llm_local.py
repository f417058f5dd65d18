"""TransformersBackend with the bundled SmolLM2-135M-Instruct (loaded once per session)."""

from __future__ import annotations

import asyncio

import pytest

from tfgrpo.errors import ConfigError
from tfgrpo.llm import GenerationParams

pytestmark = pytest.mark.model

STORY = "Write a long story about a dragon who learns to cook."


def test_seed_reproduces_and_does_not_touch_global_rng(local_backend):
    import torch

    params = GenerationParams(n=3, temperature=1.0, max_tokens=10, seed=123)
    torch.manual_seed(0)
    first = local_backend.generate([STORY, "Name three fruits."], params)
    after_first = torch.rand(1)
    second = local_backend.generate([STORY, "Name three fruits."], params)
    other = local_backend.generate([STORY, "Name three fruits."], params.replace(seed=124))
    assert first == second
    assert [g.text for g in first[0]] != [g.text for g in other[0]]
    assert len({g.text for g in first[0]}) > 1  # the n samples differ from one another
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after_first)  # seeding used a forked RNG


def test_a_seeded_group_does_not_depend_on_the_other_prompts_of_the_call(local_backend):
    # What lets groups go to different calls or replicas (tfgrpo.executors) with the same result.
    params = GenerationParams(n=3, temperature=1.0, max_tokens=10, seed=7)
    together = local_backend.generate([STORY, "Name three fruits.", "Hi"], params)
    alone = [local_backend.generate([p], params)[0] for p in ("Hi", STORY, "Name three fruits.")]
    assert together == [alone[1], alone[2], alone[0]]
    assert together[0] != local_backend.generate([STORY], params.replace(seed=8))[0]


def test_n_completions_and_usage(local_backend):
    prompts = [STORY, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]]
    before = local_backend.usage.snapshot()
    groups = local_backend.generate(prompts, GenerationParams(n=4, max_tokens=8, seed=1))
    spent = local_backend.usage.snapshot() - before
    assert [len(group) for group in groups] == [4, 4]
    expected_prompt_tokens = [local_backend.count_tokens(local_backend.render(p)) for p in prompts]
    assert [group[0].prompt_tokens for group in groups] == expected_prompt_tokens
    assert spent.requests == 2
    assert spent.prompt_tokens == sum(expected_prompt_tokens)
    assert spent.completion_tokens == sum(g.completion_tokens for group in groups for g in group)
    for g in (g for group in groups for g in group):
        assert 0 <= g.completion_tokens <= 8
        assert g.finish_reason == ("length" if g.completion_tokens == 8 else "stop")
    assert groups[0][0].finish_reason == "length"  # a long story does not fit in 8 tokens


def test_greedy_is_deterministic_and_stop_strings_truncate(local_backend):
    greedy = GenerationParams(n=2, temperature=0, max_tokens=16)
    full = local_backend.generate([STORY], greedy)[0]
    assert full[0].text == full[1].text and full[0].finish_reason == "length"
    text = full[0].text
    words = text.split()
    assert len(words) >= 4, text
    stop = " " + words[3]
    cut = local_backend.generate([STORY], greedy.replace(stop=[stop, "@@never@@"]))[0][0]
    assert cut.text == text[: text.index(stop)]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text and cut.completion_tokens < 16  # generation stopped early, too


def test_plain_text_mode(local_backend):
    group = local_backend.generate(
        ["The capital of France is"], GenerationParams(temperature=0, max_tokens=4), chat=False
    )
    assert "Paris" in group[0][0].text
    assert group[0][0].prompt_tokens == local_backend.count_tokens("The capital of France is")
    with pytest.raises(ConfigError, match="string prompts"):
        local_backend.generate([[{"role": "user", "content": "hi"}]], chat=False)


def test_logits_processors_pass_through(local_backend):
    import torch

    token = local_backend.tokenizer(" yes", add_special_tokens=False).input_ids[0]

    def only_yes(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(scores, float("-inf"))
        forced[:, token] = 0.0
        return forced

    group = local_backend.generate(["Hi"], GenerationParams(n=2, max_tokens=3, seed=0), logits_processors=[only_yes])
    assert [g.text for g in group[0]] == [" yes yes yes"] * 2


def test_agenerate_and_bad_input(local_backend):
    group = asyncio.run(local_backend.agenerate("Say hi.", GenerationParams(n=2, max_tokens=4, seed=3)))
    assert len(group) == 2 and all(isinstance(g.text, str) and g.completion_tokens <= 4 for g in group)
    assert local_backend.generate([], GenerationParams()) == []
    with pytest.raises(ConfigError, match="list of prompts"):
        local_backend.generate("Say hi.")
