"""`Experience`: one successful rollout kept in the library."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import InvalidRolloutsError, LibraryFormatError, TFGRPOError

MAX_TIMESTAMP = 2**63 - 1
"""The latest timestamp both formats hold: the spec's JSON (u64 seconds) and SQLite (signed 64-bit)."""

_SURROGATE = re.compile("[\ud800-\udfff]")


class Experience:
    """A stored rollout: the prompt, the response, its group-relative advantage, when it was stored
    (Unix seconds) and free-form string metadata (task id, domain, ...).

    `id` is assigned by the library that stores it (None for a free-standing experience).
    """

    # `_bucket` and `_pos` are owned by the library's sampler: the bucket holding the experience and its
    # index there (None and -1 once removed).
    __slots__ = ("prompt", "response", "advantage", "timestamp", "_metadata", "id", "_bucket", "_pos")

    def __init__(
        self,
        prompt: str,
        response: str,
        advantage: float,
        timestamp: int | None = None,
        metadata: dict[str, str] | None = None,
        id: int | None = None,
    ) -> None:
        self.prompt = prompt
        self.response = response
        self.advantage = advantage
        self.timestamp = int(time.time()) if timestamp is None else timestamp
        self._metadata = dict(metadata) if metadata else None
        self.id = id
        self._bucket: Any = None  # the sampler's bucket (core/sampler.py)
        self._pos = -1

    @property
    def metadata(self) -> dict[str, str]:
        # Created on first use: most experiences carry none, and an empty dict per experience would
        # cost more memory than the rest of the object.
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict[str, str]) -> None:
        self._metadata = dict(check_metadata(value)) if value else None

    @property
    def stored_metadata(self) -> Mapping[str, str] | None:
        """The metadata as stored, read-only, None when there is none (no empty dict is made)."""
        return MappingProxyType(self._metadata) if self._metadata else None

    def matches(self, where: Mapping[str, str]) -> bool:
        """Whether every key of `where` has that value in the metadata."""
        metadata = self._metadata or {}
        return all(metadata.get(key) == value for key, value in where.items())

    @property
    def in_library(self) -> bool:
        """Whether a library's sampler still holds this experience (False once pruned or removed)."""
        return self._pos >= 0

    def age_seconds(self, now: float | None = None) -> int:
        """Seconds since the experience was stored (never negative)."""
        now = time.time() if now is None else now
        return max(0, int(now) - self.timestamp)

    def is_stale(self, max_age: int, now: float | None = None) -> bool:
        """True when older than `max_age` seconds."""
        return self.age_seconds(now) > max_age

    def to_dict(self) -> dict[str, Any]:
        """The spec's serialisation: the five fields of its Rust reference, nothing else."""
        return {
            "prompt": self.prompt,
            "response": self.response,
            "advantage": self.advantage,
            "timestamp": self.timestamp,
            "metadata": dict(self._metadata) if self._metadata else {},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "experience") -> Experience:
        """Parse one serialised experience, checking every field; unknown fields are ignored."""
        if not isinstance(data, dict):
            raise LibraryFormatError(f"{where}: expected an object, got {type(data).__name__}")
        metadata = data.get("metadata")
        if type(metadata) is dict and not metadata:
            metadata = None  # the spec's files write {} for every experience
        try:
            return cls.checked(
                data.get("prompt"), data.get("response"), data.get("advantage"), data.get("timestamp"), metadata, where
            )
        except LibraryFormatError:
            missing = [f"'{key}'" for key in ("prompt", "response", "advantage", "timestamp") if key not in data]
            if missing:  # (looked for only now: the well-formed case stays one cheap check)
                fields = f"field {missing[0]} is" if len(missing) == 1 else f"fields {', '.join(missing)} are"
                raise LibraryFormatError(f"{where}: {fields} missing") from None
            raise

    @classmethod
    def checked(
        cls,
        prompt: Any,
        response: Any,
        advantage: Any,
        timestamp: Any,
        metadata: Any = None,
        where: str = "experience",
        error: type[TFGRPOError] = LibraryFormatError,
    ) -> Experience:
        """An experience from values that come from outside (a JSON or SQLite file), each checked by the
        one set of rules every way in shares: prompt and response are text UTF-8 can encode (see
        `check_text`), the advantage a finite number, the timestamp whole seconds in
        [0, MAX_TIMESTAMP], metadata None or a map of such text to such text. Anything else raises
        `error` naming `where` and the field."""
        if (
            type(prompt) is str
            and type(response) is str
            and (prompt.isascii() or _SURROGATE.search(prompt) is None)
            and (response.isascii() or _SURROGATE.search(response) is None)
            and type(advantage) is float
            and -math.inf < advantage < math.inf
            and type(timestamp) is int
            and 0 <= timestamp <= MAX_TIMESTAMP
            and metadata is None
        ):
            return cls(prompt, response, advantage, timestamp)  # the common, well-formed case, checked cheaply
        prompt = check_text(prompt, f"{where}: field 'prompt'", error)
        response = check_text(response, f"{where}: field 'response'", error)
        try:
            finite = isinstance(advantage, (int, float)) and math.isfinite(advantage)
        except OverflowError:  # an integer too large for a float
            finite = False
        if isinstance(advantage, bool) or not finite:
            raise error(f"{where}: field 'advantage' must be a finite number, got {advantage!r:.80}")
        timestamp = check_timestamp(timestamp, f"{where}: field 'timestamp'", error)
        if metadata is not None:
            check_metadata(metadata, error, f"{where}: field 'metadata'")
        return cls(prompt, response, float(advantage), timestamp, metadata)

    def _key(self) -> tuple:
        return (self.prompt, self.response, self.advantage, self.timestamp, self._metadata or {})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Experience):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable (metadata), so not hashable

    def __repr__(self) -> str:
        return (
            f"Experience(id={self.id}, advantage={self.advantage:.3f}, timestamp={self.timestamp}, "
            f"prompt={self.prompt[:40]!r}, response={self.response[:40]!r}, metadata={self._metadata or {}})"
        )


def check_metadata(
    metadata: Any, error: type[TFGRPOError] = InvalidRolloutsError, what: str = "metadata"
) -> dict[str, str]:
    """Metadata is a map of strings to strings, as in the spec (so files stay readable by its Rust code),
    each checked by `check_text`."""
    if not isinstance(metadata, dict):
        raise error(f"{what} must be a dict of str to str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise error(f"{what} must map str to str; got {key!r:.80}: {value!r:.80} (convert values with str())")
        check_text(key, f"{what} key {key!r:.40}", error)
        check_text(value, f"{what}[{key!r:.40}]", error)
    return metadata


def check_timestamp(value: Any, what: str = "timestamp", error: type[TFGRPOError] = InvalidRolloutsError) -> int:
    """Whole Unix seconds both file formats can hold: >= 0 (the spec's `u64`) and <= 2**63 - 1 (an SQLite
    INTEGER). A float with no fractional part is taken as the whole number it is."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIMESTAMP:
        raise error(f"{what} must be whole Unix seconds in [0, 2**63 - 1], got {value!r:.80}")
    return int(value)


def check_text(value: Any, what: str, error: type[TFGRPOError] = InvalidRolloutsError) -> str:
    """`value` if it is a string UTF-8 can encode; otherwise `error` naming `what`.

    The one rule for text (prompts, responses, metadata): a lone surrogate (U+D800..U+DFFF, e.g. from a
    JSON escape "\\ud800" or a model's broken decoding) is refused where it would enter the library,
    with `InvalidRolloutsError` from the API and `LibraryFormatError` from a file: accepted, it would make
    every later save fail. Model output is not refused but cleaned by the loop with `clean_text` before
    it reaches the library, so one bad generation cannot stop a training run.
    """
    if type(value) is str and (value.isascii() or _SURROGATE.search(value) is None):
        return value
    if not isinstance(value, str):
        raise error(f"{what} must be a string, got {type(value).__name__} {value!r:.80}")
    found = _SURROGATE.search(value)
    if found is None:
        return value
    raise error(
        f"{what} contains a lone surrogate U+{ord(found.group()):04X} at index {found.start()}, which UTF-8 "
        "cannot encode (so it could never be saved); replace it, e.g. with tfgrpo.core.experience.clean_text"
    )


def clean_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a surrogate pair becomes the character it
    encodes): what the loop applies to model output before it is scored and stored."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def approx_tokens(text: str) -> int:
    """About four characters per token for English text and code; good enough for a budget."""
    return (len(text) + 3) // 4


def json_text(value: Any, **options: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)` that UTF-8 (and so SQLite) can always encode: a lone
    surrogate in any string of `value` becomes U+FFFD. For every JSON column written from text that
    did not pass `check_text` (model output, critiques, records of a step)."""
    return clean_text(json.dumps(value, ensure_ascii=False, **options))
