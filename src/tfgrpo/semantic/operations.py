"""Lesson operations, and how to read them out of an LLM's answer.

LLM output is untrusted. `parse_operations` takes whatever came back (JSON, JSON in prose or a markdown
fence, Python-style literals, trailing commas, the official implementation's field names, or junk) and
returns the operations it could read plus a list of problems, one line each. It never raises. Whether an
operation makes sense against the library (does the id exist? is the text a duplicate?) is checked later,
by `LessonLibrary.apply`.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

Kind = Literal["add", "update", "delete", "merge", "none"]
KINDS: tuple[Kind, ...] = ("add", "update", "delete", "merge", "none")

_KIND_ALIASES: dict[str, Kind] = {
    "add": "add",
    "new": "add",
    "insert": "add",
    "create": "add",
    "append": "add",
    "update": "update",
    "modify": "update",
    "edit": "update",
    "replace": "update",
    "revise": "update",
    "rewrite": "update",
    "change": "update",
    "delete": "delete",
    "remove": "delete",
    "drop": "delete",
    "merge": "merge",
    "combine": "merge",
    "consolidate": "merge",
    "none": "none",
    "noop": "none",
    "no-op": "none",
    "no_op": "none",
    "nothing": "none",
    "keep": "none",
    "no_change": "none",
    "no change": "none",
    "skip": "none",
}
_KIND_KEYS = ("operation", "op", "option", "action", "type", "kind")
_TEXT_KEYS = ("text", "experience", "lesson", "content", "new_text", "new_experience", "value", "insight")
_ID_KEYS = ("id", "modified_from", "target", "target_id", "lesson_id", "experience_id", "modify_id", "key")
_IDS_KEYS = ("ids", "merged_from", "merge_ids", "merge", "sources", "source_ids", "from", "targets")
_LIST_KEYS = ("operations", "ops", "updates", "actions", "changes", "experiences", "lessons", "result")

MAX_LESSON_ID = 999_999_999
"""The largest lesson id number, G999999999: nine digits, as every id pattern here reads them."""
_ID_RE = re.compile(r"^\[?\s*G?\s*(\d{1,9})\s*\]?\.?$", re.IGNORECASE)


@dataclass(frozen=True)
class Operation:
    """One edit of the lesson library.

    add: `text` is a new lesson. update: lesson `id` gets `text`. delete: lesson `id` goes.
    merge: lessons `ids` become one lesson with `text` (kept under the first id). none: nothing.
    """

    kind: Kind
    text: str = ""
    id: str | None = None
    ids: tuple[str, ...] = ()
    reason: str = ""
    """Why the LLM proposed it (kept for inspection, never interpreted)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operation": self.kind}
        if self.id is not None:
            out["id"] = self.id
        if self.ids:
            out["ids"] = list(self.ids)
        if self.text:
            out["text"] = self.text
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        """The inverse of `to_dict` (trusted input: what this library stored itself)."""
        return cls(
            kind=data["operation"],
            text=data.get("text", ""),
            id=data.get("id"),
            ids=tuple(data.get("ids", ())),
            reason=data.get("reason", ""),
        )


@dataclass
class ParseResult:
    operations: list[Operation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What could not be read, or was read only after a repair (one line each)."""
    found_json: bool = False
    """Whether any JSON-like value was found at all (False: the answer was prose or junk)."""


def normalize_id(value: object) -> str | None:
    """ "G3", "g3", "[G3]", "[G3].", "3" and 3 are all "G3"; anything else (a number beyond
    `MAX_LESSON_ID` too) is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return f"G{value}" if 0 <= value <= MAX_LESSON_ID else None
    if not isinstance(value, str):
        return None
    match = _ID_RE.match(value.strip())
    return f"G{int(match.group(1))}" if match else None


def clean_text(value: object) -> str:
    """A lesson's text as one line: whitespace collapsed, a leading id ("[G3]. ", "G3: ") and list
    markers stripped, surrounding quotes removed. Non-strings give ""."""
    if not isinstance(value, str):
        return ""
    text = " ".join(value.split())
    text = re.sub(r"^(?:[-*•]\s*|\d{1,3}[.)]\s+)", "", text)
    text = re.sub(r"^\[?G\d{1,9}\]?\s*[.:)\-]\s*", "", text, flags=re.IGNORECASE)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def parse_operations(answer: object, limit: int | None = None) -> ParseResult:
    """The operations in an LLM's answer, at most `limit` of them (the rest are dropped with a problem)."""
    result = ParseResult()
    if not isinstance(answer, str):
        result.problems.append(f"the answer is not text ({type(answer).__name__}); nothing to parse")
        return result
    value, how = extract_json(answer)
    if how is None:
        shown = " ".join(answer.split())[:120]
        result.problems.append(f"no JSON found in the answer ({shown!r})")
        return result
    result.found_json = True
    if how != "json":
        result.problems.append(f"answer repaired before parsing: {how}")
    for index, item in enumerate(_operation_items(value, result.problems)):
        op = _to_operation(item, index, result.problems)
        if op is not None:
            result.operations.append(op)
    if limit is not None and len(result.operations) > limit:
        result.problems.append(f"{len(result.operations)} operations proposed, only the first {limit} kept")
        result.operations = result.operations[:limit]
    return result


def extract_json(text: str) -> tuple[Any, str | None]:
    """The first JSON value (object or array) in `text`, and how it was found: "json" (the whole text),
    or a description of the repair; (None, None) when there is none."""
    stripped = text.strip()
    value = _loads(stripped)
    if value is not _MISSING:
        return value, "json"
    fences = re.findall(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", text, flags=re.DOTALL)
    for body in fences:
        value = _loads(body.strip())
        if value is not _MISSING:
            return value, "took the JSON inside a markdown fence"
        value = _lenient(body.strip())
        if value is not _MISSING:
            return value, "took the JSON inside a markdown fence and fixed its syntax"
    if "```" in text and not fences:  # an unclosed fence (the answer was cut off)
        text = text.split("```", 1)[1]
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:_MAX_STARTS]
    for start in starts:
        try:
            value, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, (list, dict)):
            return value, "took the JSON embedded in prose"
    for start in starts:
        candidate = _balanced(text, start)
        if candidate is None:
            continue
        value = _lenient(candidate)
        if value is not _MISSING and isinstance(value, (list, dict)):
            return value, "took the JSON-like value embedded in prose and fixed its syntax"
    return None, None


_MISSING = object()
_MAX_STARTS = 200
_MAX_SPAN = 20_000
"""Most bracket positions tried as the start of embedded JSON, and the longest span read from each
(together they bound the work on long junk)."""


def _loads(text: str) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return _MISSING
    return value if isinstance(value, (list, dict)) else _MISSING


def _lenient(text: str) -> Any:
    """Common breakages: trailing commas, Python literals (single quotes, True/None)."""
    fixed = re.sub(r",\s*([\]}])", r"\1", text)
    value = _loads(fixed)
    if value is not _MISSING:
        return value
    if len(fixed) > _MAX_SPAN:
        return _MISSING
    try:
        value = ast.literal_eval(fixed)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _MISSING
    return value if isinstance(value, (list, dict)) else _MISSING


def _balanced(text: str, start: int) -> str | None:
    """The bracketed span starting at `start`, matching brackets outside quoted strings."""
    pairs = {"[": "]", "{": "}"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for i in range(start, min(len(text), start + _MAX_SPAN)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in "]}":
            if not stack or stack.pop() != ch:
                return None
            if not stack:
                return text[start : i + 1]
    return None


def _operation_items(value: Any, problems: list[str]) -> list[Any]:
    """The list of candidate operation objects inside a parsed value."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            if isinstance(value.get(key), list):
                return value[key]
        if any(k in value for k in _KIND_KEYS):
            return [value]
        # The official implementation's library format {"G0": "...", ...} is not a list of operations.
        if value and all(normalize_id(k) for k in value):
            problems.append("the answer is a whole library ({id: text}), not operations; ignored")
            return []
        problems.append(f"a JSON object without operations (keys: {sorted(map(str, value))[:8]})")
        return []
    problems.append(f"JSON of type {type(value).__name__} holds no operations")
    return []


def _first(item: Mapping, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in item and item[key] is not None:
            return item[key]
    return None


def _to_operation(item: Any, index: int, problems: list[str]) -> Operation | None:
    where = f"operation #{index + 1}"
    if not isinstance(item, Mapping):
        problems.append(f"{where} is not an object ({item!r:.80}); skipped")
        return None
    item = {str(k).strip().lower(): v for k, v in item.items()}
    raw_kind = _first(item, _KIND_KEYS)
    kind = _KIND_ALIASES.get(raw_kind.strip().lower()) if isinstance(raw_kind, str) else None
    if kind is None:
        problems.append(f"{where} has no known operation ({raw_kind!r:.40}); skipped")
        return None
    raw_text = _first(item, _TEXT_KEYS)
    text = clean_text(raw_text)
    if raw_text is not None and not isinstance(raw_text, str):
        problems.append(f"{where}: lesson text is not a string ({raw_text!r:.60}); ignored")
    raw_reason = _first(item, ("reason", "rationale", "why", "justification"))
    reason = " ".join(raw_reason.split())[:500] if isinstance(raw_reason, str) else ""

    raw_id = _first(item, _ID_KEYS)
    raw_ids = _first(item, _IDS_KEYS)
    op_id = None
    ids: list[str] = []
    if raw_id is not None:
        op_id = normalize_id(raw_id)
        if op_id is None:
            problems.append(f"{where}: id {raw_id!r:.40} is not a lesson id like G3 (G0 .. G{MAX_LESSON_ID})")
    if raw_ids is not None:
        candidates = raw_ids if isinstance(raw_ids, list) else re.split(r"[,\s]+", str(raw_ids))
        for candidate in candidates:
            norm = normalize_id(candidate)
            if norm is None:
                if candidate not in ("", None):
                    problems.append(
                        f"{where}: {candidate!r:.40} is not a lesson id like G3 (G0 .. G{MAX_LESSON_ID}); dropped"
                    )
            elif norm not in ids:
                ids.append(norm)
    if kind == "merge" and op_id is not None and op_id not in ids:
        ids.insert(0, op_id)
    if kind in ("update", "delete") and op_id is None and len(ids) == 1:
        op_id = ids[0]
    if kind != "merge":
        ids = []
    return Operation(kind, text, op_id if kind in ("update", "delete") else None, tuple(ids), reason)


OPERATION_FIELDS: dict[Kind, tuple[str, ...]] = {
    "add": ("text",),
    "update": ("id", "text"),
    "delete": ("id",),
    "merge": ("ids", "text"),
    "none": (),
}
"""The fields each kind of operation is written with, in order: the one description of the shape that
the prompts show, `operations_schema` sends and the local constraint decodes."""


def operations_schema(
    kinds: tuple[Kind, ...] = KINDS, ids: tuple[str, ...] = (), max_operations: int | None = None
) -> dict[str, Any]:
    """The JSON Schema of a well-formed answer, `{"operations": [{"operation": "add", "text": "..."}, ...]}`
    (an object at the top, as OpenAI's strict structured output requires), within what strict mode
    supports: every property required, in order, no others. Operations that name a lesson may name only
    one of `ids` (the current lessons), and are left out when there are none (merge: fewer than two)."""
    lesson_id = {"type": "string", "enum": list(ids)}
    values: dict[str, dict[str, Any]] = {
        "text": {"type": "string"},
        "id": lesson_id,
        "ids": {"type": "array", "items": lesson_id, "minItems": 2},
    }
    variants = []
    for kind in kinds:
        fields = OPERATION_FIELDS[kind]
        if ("id" in fields and not ids) or ("ids" in fields and len(ids) < 2):
            continue
        properties = {"operation": {"type": "string", "enum": [kind]}, **{f: values[f] for f in fields}}
        variants.append(
            {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
        )
    if not variants:
        raise ConfigError(f"no operation of the kinds {kinds} can be written with the lesson ids {ids}")
    array: dict[str, Any] = {"type": "array", "items": variants[0] if len(variants) == 1 else {"anyOf": variants}}
    array["minItems"] = 1  # "nothing to learn" is the operation none, so the answer always says something
    if max_operations is not None:
        array["maxItems"] = max_operations
    return {
        "type": "object",
        "properties": {"operations": array},
        "required": ["operations"],
        "additionalProperties": False,
    }


def response_format(schema: dict[str, Any], name: str = "lesson_operations") -> dict[str, Any]:
    """An OpenAI `response_format` asking for JSON that follows `schema` (strict mode)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
