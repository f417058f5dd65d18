"""Decoding constrained to a JSON Schema (structured output on a local model): at every step only the
tokens that keep the output a prefix of a JSON value the schema accepts are allowed, and the
end-of-sequence token only once that value is complete.

The schema (the subset that strict structured output uses: objects whose properties are all written,
in order, and no others; arrays with minItems / maxItems; strings, with enum or maxLength; integers
and numbers as JSON writes them, with no bound but `minimum: 0` (and, for integers, `minimum: 1` or
`exclusiveMinimum: 0`); const; anyOf; a list of types; booleans; null) is compiled into a
character-level grammar whose states are its Brzozowski derivatives: the state after some text is
"what may still follow". States are hash-consed (a state reached twice is the same object), so what is
computed for a state is computed once:

- between values, in a key or an enum, the allowed tokens are found by walking the tokenizer's sorted
  token strings only along the few characters the state accepts;
- inside a free string, every "plain" token (no quote, backslash or control character) is allowed at
  once from a mask made once per tokenizer, and only the few others are walked.

A token budget is kept: a token is allowed only if what it leaves can still be completed in the
tokens that remain (at worst one character per token), so the answer is never cut off unfinished.

    table = TokenTable(tokenizer, eos_ids)            # once per tokenizer
    processor = table.constraint(schema, max_tokens)  # once per generate call (it keeps per-row state)
"""

from __future__ import annotations

import bisect
import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

_WS = frozenset(" \n\t")
_CONTROL = frozenset(chr(i) for i in range(0x20))
_ESCAPES = frozenset('"\\/bfnrtu')
_HEX = frozenset("0123456789abcdefABCDEF")
_UNSUPPORTED = ("$ref", "allOf", "oneOf", "not", "pattern", "format", "minLength", "patternProperties", "if")
_DIGITS = frozenset("0123456789")
_NUMBER_PHASES: dict[str, tuple[bool, int]] = {
    # phase: (a complete number, fewest characters to complete it)
    "start": (False, 1),
    "sign": (False, 1),
    "zero": (True, 0),
    "int": (True, 0),
    "frac0": (False, 1),
    "frac": (True, 0),
    "exp0": (False, 1),
    "expsign": (False, 1),
    "exp": (True, 0),
}
"""The states of a JSON number, -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, as a scanner reads it."""
_LAST = "\U0010ffff"


class _Node:
    """One grammar state; made only by `Grammar._make`, so equal states are the same object."""

    __slots__ = ("kind", "args", "nullable", "shortest", "derivs", "firsts")

    def __init__(self, kind: str, args: tuple) -> None:
        self.kind = kind
        self.args = args
        self.nullable = False
        """Whether the text so far is a complete value."""
        self.shortest = math.inf
        """Fewest characters that complete it."""
        self.derivs: dict[str, _Node] = {}
        self.firsts: tuple[frozenset[str], bool] | None = None
        """(characters, negated): the characters it accepts next (negated: all but those)."""


class Grammar:
    """A JSON Schema compiled into character-level states. `root` is the state before any text;
    `advance(state, text)` is the state after `text` (`empty` when no continuation is valid)."""

    def __init__(self, schema: Mapping[str, Any], max_whitespace: int = 10) -> None:
        self._table: dict[tuple, _Node] = {}
        self.empty = self._make("empty", ())
        self.eps = self._make("eps", ())
        self.eps.nullable, self.eps.shortest = True, 0
        self.ws = self._ws(max_whitespace)
        self.root = self._compile(schema, "the schema")

    # -------------------------------------------------------------- building states

    def _make(self, kind: str, args: tuple) -> _Node:
        key = (kind, args)
        node = self._table.get(key)
        if node is None:
            node = self._table[key] = _Node(kind, args)
            if kind not in ("empty", "eps"):
                self._measure(node)
        return node

    def _lit(self, text: str) -> _Node:
        return self._make("lit", (text,)) if text else self.eps

    def _ws(self, n: int) -> _Node:
        return self._make("ws", (n,)) if n > 0 else self.eps

    def _str(self, mode: str, left: int, hex_left: int = 0) -> _Node:
        return self._make("str", (mode, left, hex_left))

    def _num(self, phase: str, integer: bool, start: tuple[bool, bool] = (True, True)) -> _Node:
        """A JSON number in `phase` (`integer`: no fraction or exponent); `start`: whether it may begin
        with a minus sign and whether it may be 0 (only the first phase depends on them)."""
        return self._make("num", (phase, integer, start if phase == "start" else ()))

    def _seq(self, parts: Sequence[_Node]) -> _Node:
        flat: list[_Node] = []
        for part in parts:
            if part is self.empty:
                return self.empty
            if part is self.eps:
                continue
            flat.extend(part.args if part.kind == "seq" else (part,))
        if not flat:
            return self.eps
        return flat[0] if len(flat) == 1 else self._make("seq", tuple(flat))

    def _alt(self, options: Sequence[_Node]) -> _Node:
        flat: set[_Node] = set()
        for option in options:
            if option is not self.empty:
                flat.update(option.args[0] if option.kind == "alt" else (option,))
        if not flat:
            return self.empty
        return next(iter(flat)) if len(flat) == 1 else self._make("alt", (frozenset(flat),))

    def _more(self, item: _Node, lo: int, hi: int) -> _Node:
        """Between `lo` and `hi` (-1: any number) more `, item`s after the first item of an array."""
        return self._make("more", (item, lo, hi))

    def _expand(self, node: _Node) -> _Node:
        item, lo, hi = node.args
        options = [self.eps] if lo == 0 else []
        if hi != 0:
            rest = self._more(item, max(lo - 1, 0), hi - 1 if hi > 0 else -1)
            options.append(self._seq([self.ws, self._lit(","), self.ws, item, rest]))
        return self._alt(options)

    def _measure(self, node: _Node) -> None:
        kind, args = node.kind, node.args
        if kind == "lit":
            node.shortest = len(args[0])
        elif kind == "ws":
            node.nullable, node.shortest = True, 0
        elif kind == "str":
            mode, _, hex_left = args
            node.shortest = {"open": 2, "body": 1, "esc": 2, "hex": hex_left + 1}[mode]
        elif kind == "num":
            node.nullable, node.shortest = _NUMBER_PHASES[args[0]]
        elif kind == "seq":
            node.nullable = all(p.nullable for p in args)
            node.shortest = sum(p.shortest for p in args)
        elif kind == "alt":
            node.nullable = any(o.nullable for o in args[0])
            node.shortest = min(o.shortest for o in args[0])
        elif kind == "more":
            _, lo, _ = args
            item = args[0]
            node.nullable = lo == 0
            node.shortest = 0 if lo == 0 else lo * (item.shortest + 1)

    # -------------------------------------------------------------- the schema

    def _compile(self, schema: Any, where: str) -> _Node:
        if not isinstance(schema, Mapping):
            raise ConfigError(f"{where} must be a JSON Schema object, got {schema!r:.80}")
        for key in _UNSUPPORTED:
            if key in schema:
                raise ConfigError(f"{where}: the local JSON constraint does not support {key!r}; leave it out")
        if "anyOf" in schema:
            return self._alt([self._compile(s, f"{where}.anyOf[{i}]") for i, s in enumerate(schema["anyOf"])])
        if isinstance(schema.get("type"), list):  # {"type": ["integer", "null"]}: any of them
            return self._alt([self._compile({**schema, "type": t}, where) for t in schema["type"]])
        if "const" in schema:
            return self._lit(json.dumps(schema["const"], ensure_ascii=False))
        if "enum" in schema:
            if not schema["enum"]:
                raise ConfigError(f"{where}: an empty enum accepts nothing")
            return self._alt([self._lit(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]])
        kind = schema.get("type")
        if kind == "object":
            parts = [self._lit("{"), self.ws]
            for i, (name, sub) in enumerate((schema.get("properties") or {}).items()):
                if i:
                    parts += [self._lit(","), self.ws]
                value = self._compile(sub, f"{where}.{name}")
                parts += [self._lit(json.dumps(name, ensure_ascii=False)), self.ws, self._lit(":"), self.ws, value]
                parts.append(self.ws)
            return self._seq([*parts, self._lit("}")])
        if kind == "array":
            item = self._compile(schema.get("items", {}), f"{where}[]")
            lo, hi = int(schema.get("minItems", 0)), int(schema.get("maxItems", -1))
            if hi == 0:
                content = self.eps
            else:
                content = self._seq([item, self._more(item, max(lo - 1, 0), hi - 1 if hi > 0 else -1)])
                if lo == 0:
                    content = self._alt([self.eps, content])
            return self._seq([self._lit("["), self.ws, content, self.ws, self._lit("]")])
        if kind == "string":
            return self._str("open", int(schema.get("maxLength", -1)))
        if kind in ("integer", "number"):
            return self._number(schema, kind == "integer", where)
        if kind == "boolean":
            return self._alt([self._lit("true"), self._lit("false")])
        if kind == "null":
            return self._lit("null")
        raise ConfigError(
            f"{where}: the local JSON constraint supports objects, arrays, strings, integers, numbers, enum/const, "
            f"anyOf, booleans and null, not type {kind!r}"
        )

    def _number(self, schema: Mapping[str, Any], integer: bool, where: str) -> _Node:
        """A JSON number (an integer: digits alone). The bounds that the characters alone decide are
        kept (>= 0, and for integers > 0); any other bound or multipleOf is refused, not ignored."""
        bounds = {k: schema[k] for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in schema}
        bounds.update({k: schema[k] for k in ("multipleOf",) if k in schema})
        if not bounds:
            return self._num("start", integer)
        if bounds == {"minimum": 0}:
            return self._num("start", integer, (False, True))
        if integer and bounds in ({"minimum": 1}, {"exclusiveMinimum": 0}):
            return self._num("start", integer, (False, False))
        raise ConfigError(
            f"{where}: the local JSON constraint keeps a number's bounds only as minimum 0 (and, for integers, "
            f"minimum 1 or exclusiveMinimum 0), not {json.dumps(bounds)}; leave them out and check the value"
        )

    # -------------------------------------------------------------- matching

    def deriv(self, node: _Node, ch: str) -> _Node:
        """The state after one more character."""
        found = node.derivs.get(ch)
        if found is None:
            found = node.derivs[ch] = self._deriv(node, ch)
        return found

    def _deriv(self, node: _Node, ch: str) -> _Node:
        kind, args = node.kind, node.args
        if kind == "lit":
            return self._lit(args[0][1:]) if args[0][0] == ch else self.empty
        if kind == "ws":
            return self._ws(args[0] - 1) if ch in _WS else self.empty
        if kind == "str":
            mode, left, hex_left = args
            if mode == "open":
                return self._str("body", left) if ch == '"' else self.empty
            if mode == "body":
                if ch == '"':
                    return self.eps
                if ch in _CONTROL or left == 0:
                    return self.empty
                rest = left - 1 if left > 0 else -1
                return self._str("esc", rest) if ch == "\\" else self._str("body", rest)
            if mode == "esc":
                if ch not in _ESCAPES:
                    return self.empty
                return self._str("hex", left, 4) if ch == "u" else self._str("body", left)
            if ch not in _HEX:
                return self.empty
            return self._str("hex", left, hex_left - 1) if hex_left > 1 else self._str("body", left)
        if kind == "num":
            return self._num_deriv(args, ch)
        if kind == "seq":
            head, rest = args[0], self._seq(args[1:])
            options = [self._seq([self.deriv(head, ch), rest])]
            if head.nullable:
                options.append(self.deriv(rest, ch))
            return self._alt(options)
        if kind == "alt":
            return self._alt([self.deriv(o, ch) for o in args[0]])
        if kind == "more":
            return self.deriv(self._expand(node), ch)
        return self.empty  # empty, eps

    def _num_deriv(self, args: tuple, ch: str) -> _Node:
        phase, integer, start = args
        nxt: str | None = None
        if phase == "start" and ch == "-" and start[0]:
            nxt = "sign"
        elif phase in ("start", "sign") and ch in _DIGITS:
            nxt = "int" if ch != "0" else "zero" if phase == "sign" or start[1] else None
        elif phase in ("int", "frac", "exp") and ch in _DIGITS:
            nxt = phase
        elif phase in ("frac0", "exp0", "expsign") and ch in _DIGITS:
            nxt = "frac" if phase == "frac0" else "exp"
        elif phase in ("zero", "int") and ch == "." and not integer:
            nxt = "frac0"
        elif phase in ("zero", "int", "frac") and ch in "eE" and not integer:
            nxt = "exp0"
        elif phase == "exp0" and ch in "+-":
            nxt = "expsign"
        return self.empty if nxt is None else self._num(nxt, integer)

    def advance(self, node: _Node, text: str) -> _Node:
        for ch in text:
            node = self.deriv(node, ch)
            if node is self.empty:
                break
        return node

    def firsts(self, node: _Node) -> tuple[frozenset[str], bool]:
        """The characters `node` accepts next, as (set, negated)."""
        if node.firsts is None:
            node.firsts = self._firsts(node)
        return node.firsts

    def _firsts(self, node: _Node) -> tuple[frozenset[str], bool]:
        kind, args = node.kind, node.args
        if kind == "lit":
            return frozenset(args[0][0]), False
        if kind == "ws":
            return _WS, False
        if kind == "str":
            mode, left, _ = args
            if mode == "open":
                return frozenset('"'), False
            if mode == "body":
                return (frozenset('"'), False) if left == 0 else (_CONTROL, True)
            return (_ESCAPES, False) if mode == "esc" else (_HEX, False)
        if kind == "num":
            phase, integer, start = args
            if phase == "start":
                return frozenset(("-" if start[0] else "") + ("0123456789" if start[1] else "123456789")), False
            more = (
                "+-"
                if phase == "exp0"
                else ""
                if integer
                else {"zero": ".eE", "int": ".eE", "frac": "eE"}.get(phase, "")
            )
            return frozenset(("" if phase == "zero" else "0123456789") + more), False
        parts: list[_Node] = []
        if kind == "seq":
            for part in args:
                parts.append(part)
                if not part.nullable:
                    break
        elif kind == "alt":
            parts = list(args[0])
        elif kind == "more":
            parts = [self._expand(node)]
        chars: frozenset[str] = frozenset()
        negated = False
        for part in parts:
            other, other_negated = self.firsts(part)
            if negated and other_negated:
                chars = chars & other
            elif negated:
                chars = chars - other
            elif other_negated:
                chars, negated = other - chars, True
            else:
                chars = chars | other
        return chars, negated

    def string_body(self, node: _Node) -> _Node | None:
        """The free string `node` is inside (its next characters are the string's), or None."""
        head = node.args[0] if node.kind == "seq" else node
        if head.kind == "str" and head.args[0] == "body":
            return head
        return None


class TokenTable:
    """A tokenizer's tokens as text, made once: the decoded string of every ordinary token, sorted for
    prefix walks, and the mask of "plain" tokens (text with no quote, backslash or control character).

    Each token must decode on its own to exactly the text it adds to an output (true of byte-level BPE
    tokenizers, GPT-2's, SmolLM2's, Llama 3's); tokens that are part of a multi-byte character, and
    special tokens, are never allowed inside JSON."""

    def __init__(self, tokenizer: Any, eos_ids: Sequence[int], max_whitespace: int = 10) -> None:
        import numpy as np

        size = len(tokenizer)
        special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        special |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        texts = tokenizer.batch_decode(
            [[i] for i in range(size)], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        self.texts: list[str | None] = [
            None if i in special or not t or "\ufffd" in t else t for i, t in enumerate(texts)
        ]
        self.eos_ids = list(eos_ids)
        self.size = size
        self.max_whitespace = max_whitespace
        by_text: dict[str, list[int]] = {}
        for i, text in enumerate(self.texts):
            if text is not None:
                by_text.setdefault(text, []).append(i)
        self.sorted_texts = sorted(by_text)
        self.sorted_ids = [by_text[t] for t in self.sorted_texts]
        plain = [i for i, t in enumerate(self.texts) if t is not None and not (set(t) & _PLAIN_BREAKERS)]
        self.plain_ids = np.array(plain, dtype=np.int64)
        self.plain_lengths = np.array([len(self.texts[i] or "") for i in plain], dtype=np.int64)
        plain_set = set(plain)
        self.other = [(t, ids) for t, ids in by_text.items() if ids[0] not in plain_set]
        """The non-plain token texts (with their ids), walked one by one inside strings."""
        self._grammars: OrderedDict[str, _Masks] = OrderedDict()

    def masks(self, schema: Mapping[str, Any]) -> _Masks:
        """The compiled schema with its per-state token masks (the last few schemas are kept)."""
        key = json.dumps(schema, sort_keys=True)
        found = self._grammars.get(key)
        if found is None:
            found = self._grammars[key] = _Masks(self, Grammar(schema, self.max_whitespace))
            while len(self._grammars) > 8:
                self._grammars.popitem(last=False)
        self._grammars.move_to_end(key)
        return found

    def constraint(self, schema: Mapping[str, Any], max_tokens: int) -> JSONSchemaConstraint:
        """A logits processor for one generate call (it keeps per-row state)."""
        return JSONSchemaConstraint(self.masks(schema), max_tokens)


_PLAIN_BREAKERS = _CONTROL | {'"', "\\"}


class _Masks:
    """The tokens allowed in each state of one grammar, with the shortest completion each leaves."""

    def __init__(self, table: TokenTable, grammar: Grammar) -> None:
        self.table = table
        self.grammar = grammar
        self._cache: dict[_Node, tuple[Any, Any, bool]] = {}

    def allowed(self, state: _Node, budget: int) -> Any:
        """The ids of the tokens allowed in `state` whose leftover can be completed in `budget` tokens."""
        import numpy as np

        entry = self._cache.get(state)
        if entry is None:
            entry = self._cache[state] = self._compute(state)
        ids, after, plain = entry
        chosen = ids[after <= budget]
        if plain and state.shortest <= budget:
            body = self.grammar.string_body(state)
            left = body.args[1] if body is not None else -1
            table = self.table
            extra = table.plain_ids if left < 0 else table.plain_ids[table.plain_lengths <= left]
            chosen = np.concatenate([chosen, extra])
        return chosen

    def _compute(self, state: _Node) -> tuple[Any, Any, bool]:
        import numpy as np

        ids: list[int] = []
        after: list[float] = []
        grammar = self.grammar
        if grammar.string_body(state) is not None:
            # Plain tokens stay in the string (and leave the same shortest completion): one mask.
            for text, token_ids in self.table.other:
                end = grammar.advance(state, text)
                if end is not grammar.empty:
                    ids += token_ids
                    after += [end.shortest] * len(token_ids)
            plain = True
        else:
            self._walk(state, "", 0, len(self.table.sorted_texts), ids, after)
            plain = False
        return np.array(ids, dtype=np.int64), np.array(after, dtype=np.float64), plain

    def _walk(self, state: _Node, prefix: str, lo: int, hi: int, ids: list[int], after: list[float]) -> None:
        """Every token in sorted_texts[lo:hi] (all start with `prefix`, which led to `state`)."""
        texts = self.table.sorted_texts
        depth = len(prefix)
        if lo < hi and len(texts[lo]) == depth:  # the token that is exactly the prefix
            token_ids = self.table.sorted_ids[lo]
            ids += token_ids
            after += [state.shortest] * len(token_ids)
            lo += 1
        chars, negated = self.grammar.firsts(state)
        if not negated:
            for ch in chars:
                start = bisect.bisect_left(texts, prefix + ch, lo, hi)
                end = bisect.bisect_left(texts, prefix + ch + _LAST, start, hi)
                if start < end:
                    self._walk(self.grammar.deriv(state, ch), prefix + ch, start, end, ids, after)
            return
        i = lo
        while i < hi:
            ch = texts[i][depth]
            end = bisect.bisect_left(texts, prefix + chr(ord(ch) + 1), i, hi) if ord(ch) < 0x10FFFF else hi
            if ch not in chars:
                nxt = self.grammar.deriv(state, ch)
                if nxt is not self.grammar.empty:
                    self._walk(nxt, prefix + ch, i, end, ids, after)
            i = end


class JSONSchemaConstraint:
    """A transformers logits processor: every row of the batch may only continue a prefix of a JSON
    value of the schema, within `max_tokens` new tokens. Made for one generate call."""

    def __init__(self, masks: _Masks, max_tokens: int) -> None:
        self.masks = masks
        self.max_tokens = max_tokens
        self.start: int | None = None
        self.states: list[_Node | None] = []
        """Per row: the grammar state (None once the row has ended)."""

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch

        grammar, table = self.masks.grammar, self.masks.table
        rows, width = scores.shape
        if self.start is None:
            self.start = int(input_ids.shape[1])
            self.states = [grammar.root] * rows
        else:
            last = input_ids[:, -1].tolist()
            for row, token in enumerate(last):
                state = self.states[row]
                if state is None:
                    continue
                text = table.texts[token] if token < table.size else None
                if token in table.eos_ids or text is None:
                    self.states[row] = None
                else:
                    self.states[row] = grammar.advance(state, text)
        budget = self.max_tokens - (int(input_ids.shape[1]) - self.start) - 1  # tokens left after this one
        mask = np.zeros((rows, width), dtype=bool)
        eos = [i for i in table.eos_ids if i < width]
        for row, state in enumerate(self.states):
            if state is not None and state is not grammar.empty:
                allowed = self.masks.allowed(state, budget)
                mask[row, allowed[allowed < width]] = True
                if state.nullable:
                    mask[row, eos] = True
            if not mask[row].any():  # finished, or no way on: end the row
                mask[row, eos] = True
        return scores.masked_fill(~torch.from_numpy(mask).to(scores.device), float("-inf"))
