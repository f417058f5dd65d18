"""Decoding constrained to the operations' JSON schema (`tfgrpo.llm.structured`): the character-level
grammar, the token masks over a small tokenizer, and the bundled model writing operations through it."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from support.properties import examples
from tfgrpo.errors import ConfigError
from tfgrpo.llm.base import GenerationParams
from tfgrpo.llm.structured import Grammar, TokenTable
from tfgrpo.semantic.operations import KINDS, operations_schema, parse_operations, response_format

IDS = ("G0", "G3", "G12")
SCHEMA = operations_schema(KINDS, IDS, max_operations=3)
GRAMMAR = Grammar(SCHEMA)
TEXT_ALPHABET = 'ab Z9.,:{}[]"\\/é\u2014'  # the free-text characters the random walks draw from


def answers_with(texts):
    """Answers of the schema, with lesson texts drawn from `texts`."""
    operation = st.one_of(
        st.builds(lambda t: {"operation": "add", "text": t}, texts),
        st.builds(lambda i, t: {"operation": "update", "id": i, "text": t}, st.sampled_from(IDS), texts),
        st.builds(lambda i: {"operation": "delete", "id": i}, st.sampled_from(IDS)),
        st.builds(
            lambda ids, t: {"operation": "merge", "ids": ids, "text": t},
            st.lists(st.sampled_from(IDS), min_size=2, max_size=3),
            texts,
        ),
        st.just({"operation": "none"}),
    )
    return st.builds(lambda ops: {"operations": ops}, st.lists(operation, min_size=1, max_size=3))


answers = answers_with(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12))


def dumps(value: dict, style: int) -> str:
    """The answer as a model might write it: compact, spaced, or indented."""
    if style == 0:
        return json.dumps(value, separators=(",", ":"))
    if style == 1:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, indent=1)


@given(answers, st.integers(0, 2))
def test_every_valid_answer_is_accepted_at_every_prefix(answer: dict, style: int) -> None:
    text = dumps(answer, style)
    state = GRAMMAR.root
    for i, ch in enumerate(text):
        assert not state.nullable, "complete before the end"
        state = GRAMMAR.deriv(state, ch)
        assert state is not GRAMMAR.empty, f"blocked at {i}: {text[: i + 1]!r}"
    assert state.nullable and state.shortest == 0


@pytest.mark.parametrize(
    "text",
    [
        '{"operations": []}',  # minItems 1
        '{"operations": [{"operation": "delete", "id": "G7"}]}',  # not a current lesson
        '{"operations": [{"operation": "add"}]}',  # add needs its text
        '{"operations": [{"operation": "merge", "ids": ["G0"], "text": "x"}]}',  # merge needs two ids
        '{"operations": [{"operation": "none"}, {"operation": "none"}, {"operation": "none"}, {"operation": "none"}]}',
        '{"operations": [{"operation": "add", "text": "a\nb"}]}',  # a raw newline inside a string
        '[{"operation": "none"}]',
    ],
)
def test_invalid_answers_are_refused(text: str) -> None:
    state = GRAMMAR.advance(GRAMMAR.root, text)
    assert state is GRAMMAR.empty or not state.nullable
    try:
        value = json.loads(text)
    except ValueError:
        return  # not JSON at all
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, SCHEMA)


def walk(data, grammar: Grammar, steps: int) -> str:
    """A random path through the grammar for `steps` characters, then the shortest way to its end."""
    state, out = grammar.root, []
    for step in range(10_000):
        chars, negated = grammar.firsts(state)
        options = sorted(c for c in (TEXT_ALPHABET if negated else chars) if c not in chars or not negated)
        options = [c for c in options if grammar.deriv(state, c) is not grammar.empty]
        if state.nullable and (step >= steps or not options or data.draw(st.booleans())):
            break
        if step >= steps:
            options = [c for c in options if grammar.deriv(state, c).shortest < state.shortest]
        assert options, f"no way on after {''.join(out)!r}"
        ch = data.draw(st.sampled_from(options))
        out.append(ch)
        state = grammar.deriv(state, ch)
    assert state.nullable
    return "".join(out)


@settings(max_examples=examples(150))
@given(st.data(), st.integers(0, 200))
def test_every_completed_output_parses_and_validates(data, steps: int) -> None:
    text = walk(data, GRAMMAR, steps)
    value = json.loads(text)
    jsonschema.validate(value, SCHEMA)
    parsed = parse_operations(text)
    assert parsed.problems == [] and len(parsed.operations) == len(value["operations"])


def test_unsupported_schemas_say_what_is_not_supported() -> None:
    with pytest.raises(ConfigError, match="pattern"):
        Grammar({"type": "string", "pattern": "^G"})
    with pytest.raises(ConfigError, match="type 'date'"):
        Grammar({"type": "object", "properties": {"n": {"type": "date"}}})
    for bounds in ({"maximum": 10}, {"minimum": 2}, {"multipleOf": 2}, {"minimum": 0, "maximum": 9}):
        with pytest.raises(ConfigError, match=r"\.n: the local JSON constraint keeps a number's bounds only as"):
            Grammar({"type": "object", "properties": {"n": {"type": "integer", **bounds}}})
    with pytest.raises(ConfigError, match="exclusiveMinimum"):
        Grammar({"type": "number", "exclusiveMinimum": 0})  # 0.0, 0e1, ... are not > 0: refused, not ignored


# A DSPy / pydantic typed output: an integer, a number, an optional integer and a non-negative one.
TYPED = {
    "title": "Answer",
    "type": "object",
    "properties": {
        "answer": {"title": "Answer", "type": "integer"},
        "confidence": {"title": "Confidence", "type": "number"},
        "steps": {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}]},
        "cost": {"type": ["number", "null"], "minimum": 0},
    },
    "required": ["answer", "confidence", "steps", "cost"],
    "additionalProperties": False,
}
TYPED_GRAMMAR = Grammar(TYPED)
typed_answers = st.builds(
    lambda answer, confidence, steps, cost: {"answer": answer, "confidence": confidence, "steps": steps, "cost": cost},
    st.integers(-(10**20), 10**20),
    st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False)),
    st.one_of(st.none(), st.integers(1, 10**9)),
    st.one_of(st.none(), st.floats(0, 1e300), st.integers(0, 10**6)),
)


@given(typed_answers, st.integers(0, 2))
def test_integers_and_numbers_as_json_writes_them_are_accepted_at_every_prefix(answer: dict, style: int) -> None:
    text = dumps(answer, style)
    state = TYPED_GRAMMAR.root
    for i, ch in enumerate(text):
        state = TYPED_GRAMMAR.deriv(state, ch)
        assert state is not TYPED_GRAMMAR.empty, f"blocked at {i}: {text[: i + 1]!r}"
    assert state.nullable and state.shortest == 0


@pytest.mark.parametrize("spelled", ["1E5", "-0.25e-3", "7e+2", "0", "-0", "10.0", "0.5E-07"])
def test_every_spelling_of_a_number_json_allows_is_accepted(spelled: str) -> None:
    text = f'{{"answer": -12, "confidence": {spelled}, "steps": 3, "cost": {spelled.lstrip("-")}}}'
    assert TYPED_GRAMMAR.advance(TYPED_GRAMMAR.root, text).nullable


@pytest.mark.parametrize(
    "field, value",
    [
        ("answer", "012"),  # a leading zero
        ("answer", "1.5"),  # not an integer
        ("answer", "1e3"),
        ("answer", "+1"),
        ("answer", "-"),
        ("answer", '"3"'),
        ("confidence", "1."),
        ("confidence", ".5"),
        ("confidence", "1e"),
        ("confidence", "NaN"),
        ("confidence", "Infinity"),
        ("steps", "0"),  # exclusiveMinimum 0
        ("steps", "-2"),
        ("cost", "-1"),  # minimum 0
        ("cost", "-0.5"),
    ],
)
def test_numbers_json_or_the_schema_refuse_are_refused(field: str, value: str) -> None:
    fields = {"answer": "1", "confidence": "0.5", "steps": "null", "cost": "null", field: value}
    text = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    state = TYPED_GRAMMAR.advance(TYPED_GRAMMAR.root, text)
    assert state is TYPED_GRAMMAR.empty or not state.nullable


@settings(max_examples=examples(150))
@given(st.data(), st.integers(0, 60))
def test_every_completed_typed_output_parses_and_validates(data, steps: int) -> None:
    text = walk(data, TYPED_GRAMMAR, steps)
    jsonschema.validate(json.loads(text), TYPED)


class ToyTokenizer:
    """A byte-level-like tokenizer over a fixed vocabulary (each token decodes to its own text)."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab
        self.eos_token_id = len(vocab)
        self.all_special_ids = [self.eos_token_id]

    def __len__(self) -> int:
        return len(self.vocab) + 1

    def batch_decode(self, rows, **_) -> list[str]:
        return ["".join(self.vocab[i] if i < len(self.vocab) else "<eos>" for i in row) for row in rows]

    def encode(self, text: str) -> list[int]:
        """Longest match first (every single character of the tests is in the vocabulary)."""
        ids, i = [], 0
        while i < len(text):
            best = max((t for t in self.vocab if text.startswith(t, i)), key=len)
            ids.append(self.vocab.index(best))
            i += len(best)
        return ids


PIECES = ['{"', "operations", '":', " [", "[{", '"operation"', ': "', "add", "none", "update", '",']
PIECES += [' "text', '"}', "]}"]
PIECES += ["hello", " world", "\\n", '"\n', "\n  ", ' "G3"', ", ", "\u00e9", "\ufffd"]
PIECES += ["12", "0.", "e-", "-3", "7,", '": 4', "null", "-", "+", "E"]  # numbers split across tokens
TOKENIZER = ToyTokenizer(sorted(set(PIECES + list(' \n{}[]":,\\/abcdefghilmnoprstuwxyzGU0123456789.'))))
TABLE = TokenTable(TOKENIZER, [TOKENIZER.eos_token_id])


def run_constraint(schema: dict, max_tokens: int, seed: int) -> tuple[list[int], str]:
    """Sample tokens at random (uniform logits) through the constraint, as generate would."""
    processor = TABLE.constraint(schema, max_tokens)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[0, 1]])  # a two-token "prompt"
    out: list[int] = []
    for _ in range(max_tokens):
        scores = processor(ids, torch.rand((1, len(TOKENIZER)), generator=generator))
        token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))
        if token == TOKENIZER.eos_token_id:
            break
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out, "".join(TOKENIZER.vocab[i] for i in out)


@settings(max_examples=examples(60))
@given(st.integers(0, 2**31), st.integers(40, 120))
def test_sampled_tokens_always_end_in_a_valid_answer_within_the_budget(seed: int, max_tokens: int) -> None:
    tokens, text = run_constraint(SCHEMA, max_tokens, seed)
    assert len(tokens) <= max_tokens
    jsonschema.validate(json.loads(text), SCHEMA)
    assert "\ufffd" not in text  # a token that is part of a character is never allowed


@settings(max_examples=examples(60))
@given(st.integers(0, 2**31), st.integers(TYPED_GRAMMAR.root.shortest, TYPED_GRAMMAR.root.shortest + 80))
def test_sampled_tokens_always_end_in_a_valid_typed_answer(seed: int, max_tokens: int) -> None:
    # (Fewer tokens than the shortest answer has characters cannot be promised an answer.)
    tokens, text = run_constraint(TYPED, max_tokens, seed)
    assert len(tokens) <= max_tokens
    value = json.loads(text)
    jsonschema.validate(value, TYPED)
    assert type(value["answer"]) is int


@given(typed_answers, st.integers(0, 2))
def test_no_tokenisation_of_a_valid_typed_answer_is_blocked(answer: dict, style: int) -> None:
    text = dumps(answer, style)
    masks = TABLE.masks(TYPED)
    state = masks.grammar.root
    for token in TOKENIZER.encode(text):
        assert token in set(masks.allowed(state, budget=10_000).tolist()), (text, TOKENIZER.vocab[token])
        state = masks.grammar.advance(state, TOKENIZER.vocab[token])
    assert state.nullable


toy_answers = answers_with(st.text(alphabet='abcdeghilmnoprstuwxyz .,é\\"\n', max_size=12))  # the toy vocabulary's


@given(toy_answers, st.integers(0, 2))
def test_no_tokenisation_of_a_valid_answer_is_blocked(answer: dict, style: int) -> None:
    text = dumps(answer, style)
    masks = TABLE.masks(SCHEMA)
    state = masks.grammar.root
    for token in TOKENIZER.encode(text):
        assert token in set(masks.allowed(state, budget=10_000).tolist()), (text, TOKENIZER.vocab[token])
        state = masks.grammar.advance(state, TOKENIZER.vocab[token])
    assert state.nullable


def test_the_budget_closes_an_answer_that_would_run_on() -> None:
    schema = operations_schema(("add",), ())
    minimum = Grammar(schema).root.shortest  # characters of the shortest answer, one token each at worst
    for max_tokens in (minimum, minimum + 3):
        tokens, text = run_constraint(schema, max_tokens, seed=1)
        assert len(tokens) <= max_tokens
        jsonschema.validate(json.loads(text), schema)


@pytest.mark.model
def test_the_bundled_model_writes_parseable_operations_through_the_constraint(local_backend) -> None:
    from tfgrpo.semantic.prompts import SemanticPrompts, group_prompt

    backend = local_backend
    prompt = group_prompt(
        SemanticPrompts(),
        question="What is 9 + 17?",
        summaries=[(1.0, "Answered 26 directly."), (0.0, "Wrote 9 + 17 = 25: an addition slip.")],
        lessons="[G0]. Write only the final number.",
        max_operations=3,
        max_words=32,
        reference="26",
    )
    schema = operations_schema(("add", "update", "delete", "none"), ("G0",), 3)
    params = GenerationParams(temperature=0, max_tokens=60, response_format=response_format(schema))
    [[plain]] = backend.generate([prompt], params.replace(response_format=None), chat=True)
    [[generation]] = backend.generate([prompt], params, chat=True)
    assert generation.completion_tokens <= 60
    jsonschema.validate(json.loads(generation.text), schema)
    parsed = parse_operations(generation.text)
    assert parsed.problems == [] and parsed.operations, generation.text
    assert plain.text != generation.text  # the constraint changed what the model wrote


@pytest.mark.model
def test_the_bundled_model_writes_an_integer_and_a_number_through_the_constraint(local_backend) -> None:
    # Integer and number were refused (a ConfigError, a 400 from serve-model): DSPy's typed outputs use them.
    backend = local_backend
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}, "confidence": {"type": "number", "minimum": 0}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    params = GenerationParams(temperature=0, max_tokens=40, response_format=response_format(schema, "answer"))
    prompt = [{"role": "user", "content": 'What is 9 + 17? Reply as JSON: {"answer": ..., "confidence": ...}'}]
    [[generation]] = backend.generate([prompt], params, chat=True)
    value = json.loads(generation.text)
    jsonschema.validate(value, schema)
    assert type(value["answer"]) is int and generation.completion_tokens <= 40
