"""`Experience`: one successful rollout kept in the library."""

from __future__ import annotations

import math
import time
from typing import Any

from ..errors import InvalidRolloutsError, LibraryFormatError


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
        self._bucket = None
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
        if type(data) is dict:  # the common, well-formed case, checked cheaply
            prompt, response = data.get("prompt"), data.get("response")
            advantage, timestamp = data.get("advantage"), data.get("timestamp")
            if (
                type(prompt) is str
                and type(response) is str
                and type(advantage) is float
                and -math.inf < advantage < math.inf
                and type(timestamp) is int
                and timestamp >= 0
                and not data.get("metadata")
            ):
                return cls(prompt, response, advantage, timestamp)
        if not isinstance(data, dict):
            raise LibraryFormatError(f"{where}: expected an object, got {type(data).__name__}")
        for field in ("prompt", "response"):
            if not isinstance(data.get(field), str):
                raise LibraryFormatError(f"{where}: field {field!r} must be a string, got {data.get(field)!r:.80}")
        advantage = data.get("advantage")
        try:
            finite = isinstance(advantage, (int, float)) and math.isfinite(advantage)
        except OverflowError:  # an integer too large for a float
            finite = False
        if isinstance(advantage, bool) or not finite:
            raise LibraryFormatError(f"{where}: field 'advantage' must be a finite number, got {advantage!r}")
        timestamp = data.get("timestamp")
        if isinstance(timestamp, float) and timestamp.is_integer():
            timestamp = int(timestamp)
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise LibraryFormatError(f"{where}: field 'timestamp' must be whole Unix seconds >= 0, got {timestamp!r}")
        metadata = data.get("metadata") or None
        if metadata is not None:
            try:
                check_metadata(metadata)
            except InvalidRolloutsError as exc:
                raise LibraryFormatError(f"{where}: {exc}") from None
        return cls(data["prompt"], data["response"], float(advantage), timestamp, metadata)

    def _key(self) -> tuple:
        return (self.prompt, self.response, self.advantage, self.timestamp, self._metadata or {})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Experience):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # mutable (metadata), so not hashable

    def __repr__(self) -> str:
        return (
            f"Experience(id={self.id}, advantage={self.advantage:.3f}, timestamp={self.timestamp}, "
            f"prompt={self.prompt[:40]!r}, response={self.response[:40]!r}, metadata={self._metadata or {}})"
        )


def check_metadata(metadata: Any) -> dict[str, str]:
    """Metadata is a map of strings to strings, as in the spec (so files stay readable by its Rust code)."""
    if not isinstance(metadata, dict):
        raise InvalidRolloutsError(f"metadata must be a dict of str to str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidRolloutsError(
                f"metadata must map str to str; got {key!r}: {value!r} (convert values with str())"
            )
    return metadata
