"""Pulling the part a reward checks out of a model's free-form response: code, numbers."""

from __future__ import annotations

import re

# An opening fence with an optional language tag, the code, and the same fence closing it (or the end).
_FENCE = re.compile(
    r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.DOTALL | re.MULTILINE
)

_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")


def extract_code(response: str, language: str | None = None) -> str:
    """The code in a response: the first fenced block tagged `language` (any tag matches when None),
    else the first fenced block, else the whole response. An unclosed fence runs to the end."""
    return code_blocks(response, language)[0]


def code_blocks(response: str, language: str | None = None) -> list[str]:
    """Every fenced block tagged `language` (every block when None) in order; else the first fenced
    block; else the whole response."""
    blocks = [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(response)]
    if not blocks:
        return [response]
    if language is not None:
        aliases = _LANGUAGE_TAGS.get(language.lower(), {language.lower()})
        tagged = [code for tag, code in blocks if tag in aliases]
        return tagged or [blocks[0][1]]
    return [code for _, code in blocks]


_LANGUAGE_TAGS = {
    "python": {"python", "py", "python3"},
    "c": {"c", "h"},
    "cpp": {"cpp", "c++", "cc", "cxx", "hpp"},
    "rust": {"rust", "rs"},
}


def last_number_text(text: str) -> str | None:
    """The last number written in `text` ("-12", "1,234", "3.5", "12." ...) as plain digits ("1234"), or None."""
    matches = _NUMBER.findall(text)
    return matches[-1].replace(",", "").replace("\u2212", "-") if matches else None


def extract_last_number(text: str) -> float | None:
    """The last number written in `text` (see `last_number_text`) as a float, or None."""
    found = last_number_text(text)
    return None if found is None else float(found)
