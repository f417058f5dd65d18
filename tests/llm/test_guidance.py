"""Logit bias and constrained decoding from the experience library: exact masks and biases with the real
SmolLM2 tokenizer, the effect on the bundled model, and the OpenAI `logit_bias` map sent to a server."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LogitsProcessorList

from support.llm import StandIn, chat_reply
from tfgrpo import Experience, TrainingFreeGRPO
from tfgrpo.errors import ConfigError
from tfgrpo.llm import GenerationParams
from tfgrpo.llm.guidance import (
    LibraryConstraint,
    LogitBias,
    logit_bias_for_prompt,
    processors_for_prompts,
    retrieve_experiences,
    token_encoder,
)
from tfgrpo.llm.http import OpenAIBackend

pytestmark = pytest.mark.model  # the real SmolLM2 tokenizer, from the bundled model

QUESTION = "What is the capital of France?"
RESPONSES = ["The capital of France is Paris.", "Paris is the capital of France."]
# The SmolLM2 token ids of RESPONSES (checked against the tokenizer below), and its EOS (<|im_end|>).
SEQ_A = [504, 3575, 282, 4649, 314, 7042, 30]  # The| capital| of| France| is| Paris|.
SEQ_B = [38634, 314, 260, 3575, 282, 4649, 30]  # Paris| is| the| capital| of| France|.
EOS = 2
VOCAB = 49152


@pytest.fixture(scope="module")
def tokenizer(local_backend):
    return local_backend.tokenizer


@pytest.fixture(scope="module")
def experiences():
    return [Experience(QUESTION, r, 1.0) for r in RESPONSES]


def finite_ids(row: torch.Tensor) -> list[int]:
    return torch.isfinite(row).nonzero().flatten().tolist()


def test_token_ids_are_what_the_tests_expect(tokenizer):
    encode = token_encoder(tokenizer)
    assert [encode(r) for r in RESPONSES] == [SEQ_A, SEQ_B]
    assert tokenizer.eos_token_id == EOS
    assert token_encoder(lambda text: [len(text)])("abc") == [3]  # a plain callable text -> ids
    with pytest.raises(ConfigError, match="tokenizer must be"):
        token_encoder(42)


def test_logit_bias_is_strength_times_the_share_of_responses(tokenizer, experiences):
    bias = LogitBias.from_experiences(experiences, tokenizer, strength=4.0)
    in_both = {3575, 282, 4649, 314, 30}
    assert bias.bias == {**{t: 4.0 for t in in_both}, **{t: 2.0 for t in {504, 7042, 38634, 260}}}
    # The most frequent first, ties by token id.
    assert LogitBias.from_experiences(experiences, tokenizer, 4.0, max_entries=5).bias == {t: 4.0 for t in in_both}

    scores = torch.zeros(2, VOCAB)
    out = bias(torch.zeros(2, 3, dtype=torch.long), scores)
    for row in out:
        assert row.nonzero().flatten().tolist() == sorted(bias.bias)
        assert row[3575].item() == 4.0 and row[260].item() == 2.0
    assert not scores.any()  # the input is not changed in place
    with pytest.raises(ConfigError, match="strength"):
        LogitBias.from_experiences(experiences, tokenizer, strength=101)


def test_openai_logit_bias_map_format(tokenizer, experiences):
    bias = LogitBias.from_experiences(experiences, tokenizer, strength=3.0)
    assert bias.to_openai() == {
        "30": 3, "260": 2, "282": 3, "314": 3, "504": 2, "3575": 3, "4649": 3, "7042": 2, "38634": 2
    }  # fmt: skip
    assert bias.to_openai(integer=False)["260"] == 1.5
    # Clamped to [-100, 100]; what rounds to 0 is left out.
    assert LogitBias({5: 250.0, 6: -300.0, 7: 0.2}).to_openai() == {"5": 100, "6": -100}


def test_strict_constraint_masks_exactly_the_trie(tokenizer, experiences):
    strict = LibraryConstraint.from_experiences(experiences, tokenizer, "strict")
    assert strict.allowed([]) == [504, 38634]
    assert strict.allowed([504]) == [3575]
    assert strict.allowed([38634, 314]) == [260]
    assert strict.allowed(SEQ_A) == [EOS]  # EOS only once a whole library response is produced
    assert strict.allowed(SEQ_A[:-1]) == [30]
    assert strict.allowed([504, 260]) is None  # left the library (forced elsewhere): unconstrained

    prompt = torch.tensor([[7, 8, 9], [0, 8, 9]])  # two rows, left padded
    first = strict(prompt, torch.zeros(2, VOCAB))
    assert [finite_ids(r) for r in first] == [[504, 38634], [504, 38634]]
    assert first[0, 504].item() == 0.0  # allowed tokens keep their scores

    step = torch.cat([prompt, torch.tensor([[504], [38634]])], dim=1)
    second = strict(step, torch.zeros(2, VOCAB))
    assert [finite_ids(r) for r in second] == [[3575], [314]]

    # Row 0 produces all of SEQ_A; row 1 is pushed off the trie (a token the mask forbade).
    for a, b in zip(SEQ_A[1:], [260, 1, 1, 1, 1, 1]):
        step = torch.cat([step, torch.tensor([[a], [b]])], dim=1)
        scores = strict(step, torch.zeros(2, VOCAB))
    assert finite_ids(scores[0]) == [EOS]
    assert torch.isfinite(scores[1]).all()  # never zero allowed tokens: the stray row runs free

    # The same processor used for a new generate call starts again from the root.
    again = strict(torch.tensor([[1, 2]]), torch.zeros(1, VOCAB))
    assert finite_ids(again[0]) == [504, 38634]


def test_rows_reordered_between_steps_are_replayed(tokenizer, experiences):
    """Beam search reorders rows between steps; each row's state follows its own tokens."""
    strict = LibraryConstraint.from_experiences(experiences, tokenizer)
    prompt = torch.tensor([[7, 8, 9], [7, 8, 9]])
    strict(prompt, torch.zeros(2, VOCAB))
    strict(torch.cat([prompt, torch.tensor([[504], [38634]])], dim=1), torch.zeros(2, VOCAB))
    swapped = torch.cat([prompt, torch.tensor([[38634, 314], [504, 3575]])], dim=1)
    assert [finite_ids(r) for r in strict(swapped, torch.zeros(2, VOCAB))] == [[260], [282]]


def test_ngram_and_soft_modes(tokenizer, experiences):
    ngram = LibraryConstraint.from_experiences(experiences, tokenizer, "ngram", order=2)
    assert ngram.allowed([]) == [504, 38634]  # how library responses begin
    assert ngram.allowed([38634, 314]) == [260, 7042]  # " is" -> " the" (B) or " Paris" (A)
    assert ngram.allowed([504, 3575, 282, 4649]) == [30, 314]  # " France" -> "." or " is"
    assert ngram.allowed([504, 30]) == [EOS]  # "." ends a response
    # order 3 needs two tokens of context: " France is" continues only as in A.
    assert LibraryConstraint.from_experiences(experiences, tokenizer, "ngram").allowed([38634, 314]) == [260]
    # An unseen context backs off to shorter ones, down to every library token.
    assert ngram.allowed([1]) == sorted({*SEQ_A, *SEQ_B, EOS})

    soft = LibraryConstraint.from_experiences(experiences, tokenizer, "soft", order=2, penalty=4.0)
    out = soft(torch.tensor([[5, 38634, 314]]), torch.zeros(1, VOCAB))
    # One generated token after a prompt of length 3 is not known yet: the first call is the start.
    assert (out[0] == 0).nonzero().flatten().tolist() == [504, 38634]
    assert out[0, 1].item() == -4.0 and torch.isfinite(out).all()


def test_never_zero_allowed_tokens_and_empty_library(tokenizer, experiences):
    # Every allowed id lies beyond this (small) vocabulary: the row is left unconstrained.
    constraint = LibraryConstraint([[500, 600]], eos_token_id=700)
    assert torch.isfinite(constraint(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 100))).all()
    empty = LibraryConstraint.from_experiences([], tokenizer)
    assert empty.allowed([]) is None
    assert torch.isfinite(empty(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, VOCAB))).all()
    assert LogitBias.from_experiences([], tokenizer).bias == {}
    with pytest.raises(ConfigError, match="mode"):
        LibraryConstraint([[1]], EOS, "loose")
    with pytest.raises(ConfigError, match="end-of-sequence"):
        LibraryConstraint.from_experiences(experiences, lambda text: [1])


def test_processors_compose_in_a_list(tokenizer, experiences):
    processors = LogitsProcessorList(
        [
            LogitBias.from_experiences(experiences, tokenizer, 4.0),
            LibraryConstraint.from_experiences(experiences, tokenizer),
        ]
    )
    out = processors(torch.tensor([[1, 2]]), torch.zeros(1, VOCAB))
    assert finite_ids(out[0]) == [504, 38634]
    assert (out[0, 504].item(), out[0, 38634].item()) == (2.0, 2.0)  # biased, then masked


def sample(backend, processors, max_tokens: int = 12) -> list[str]:
    params = GenerationParams(n=8, temperature=1.0, max_tokens=max_tokens, seed=0)
    prompts = [QUESTION, "Name the capital city of France in one sentence."]
    return [g.text for group in backend.generate(prompts, params, logits_processors=processors) for g in group]


def share_of_library(texts: list[str]) -> float:
    return sum(t in RESPONSES for t in texts) / len(texts)


def test_guidance_makes_library_patterns_measurably_more_frequent(local_backend, experiences):
    tok = local_backend.tokenizer
    shares = {
        "none": share_of_library(sample(local_backend, None)),
        "bias": share_of_library(sample(local_backend, [LogitBias.from_experiences(experiences, tok, 4.0)])),
        "soft": share_of_library(sample(local_backend, [LibraryConstraint.from_experiences(experiences, tok, "soft")])),
        "strict": share_of_library(sample(local_backend, [LibraryConstraint.from_experiences(experiences, tok)])),
    }
    print("share of outputs that are exactly a library response:", shares)
    # Measured (16 samples, seed 0): none 0.0, bias 0.5, soft 0.94, strict 1.0.
    assert shares["strict"] == 1.0
    assert shares["soft"] >= 0.75
    assert shares["none"] <= 0.25
    assert shares["bias"] > shares["none"]


def test_strict_mode_never_emits_a_token_outside_the_trie(local_backend, experiences):
    strict = LibraryConstraint.from_experiences(experiences, local_backend.tokenizer)
    seen: list[tuple[int, list[int]]] = []  # (the prompt's length in its generate call, the row so far)
    prompt: list = []  # the first step of the current generate call

    def record(input_ids, scores):  # runs after the constraint, sees every token sampled so far
        rows = input_ids.tolist()
        width = len(prompt[0]) if prompt else 0
        if not prompt or len(rows[0]) <= width or [row[:width] for row in rows] != prompt:  # a new call
            prompt[:] = rows
        seen.extend((len(prompt[0]), row) for row in rows)
        return scores

    texts = sample(local_backend, [strict, record])  # a seeded call: one generate call per prompt
    checked = 0
    for start, row in seen:
        generated = row[start:]
        cut = generated.index(EOS) if EOS in generated else len(generated)
        assert strict.allowed(generated[:cut]) is not None, generated  # still on the trie
        if cut < len(generated):
            assert EOS in strict.allowed(generated[:cut])  # EOS right after a whole response
        checked += 1
    assert checked > 16 and set(texts) <= set(RESPONSES)


def test_processors_for_prompts_from_a_library(local_backend):
    grpo = TrainingFreeGRPO()
    grpo.add_rollout_group([(QUESTION, r) for r in [*RESPONSES, "Berlin.", "London."]], [1.0, 1.0, 0.0, 0.0])
    grpo.add_rollout_group([("What is 2+2?", r) for r in ["4", "5"]], [1.0, 0.0])
    assert {e.response for e in retrieve_experiences(grpo, QUESTION)} == set(RESPONSES)
    assert len(retrieve_experiences(grpo, [QUESTION, QUESTION, "What is 2+2?"])) == 3  # union, once each
    assert processors_for_prompts(grpo, "Unknown question?", local_backend.tokenizer) == []

    processors = processors_for_prompts(grpo, [QUESTION], local_backend.tokenizer, bias=1.0, constraint="strict")
    assert [type(p) for p in processors] == [LogitBias, LibraryConstraint]
    texts = sample(local_backend, processors, max_tokens=10)
    assert set(texts) <= set(RESPONSES)


def test_generation_params_logit_bias_is_checked():
    assert GenerationParams(logit_bias={"12": 5, 7: -1.5}).logit_bias == {12: 5, 7: -1.5}
    assert GenerationParams(logit_bias={}).logit_bias is None
    hash(GenerationParams(logit_bias={1: 1}))  # still hashable
    for bad in ({1: 101}, {-1: 1}, {"x": 1}, {"9" * 5000: 1}, {1: math.nan}, [1, 2]):
        with pytest.raises(ConfigError, match="logit_bias"):
            GenerationParams(logit_bias=bad)


def test_logit_bias_map_is_sent_to_the_server(local_backend):
    grpo = TrainingFreeGRPO()
    grpo.add_rollout_group([(QUESTION, r) for r in [*RESPONSES, "Berlin."]], [1.0, 1.0, 0.0])
    bias = logit_bias_for_prompt(grpo, QUESTION, local_backend.tokenizer, strength=3.0)
    assert bias["3575"] == 3 and bias["504"] == 2

    async def answer(index, path, body):
        return chat_reply(["Paris."])

    with StandIn(answer) as server, OpenAIBackend(base_url=server.url, model="stand-in") as backend:
        backend.generate([QUESTION], GenerationParams(max_tokens=8, logit_bias=bias))
        backend.generate([QUESTION], GenerationParams(max_tokens=8))
    with_bias, without = server.bodies
    assert with_bias["logit_bias"] == bias
    assert "logit_bias" not in without
