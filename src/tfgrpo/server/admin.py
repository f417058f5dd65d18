"""Everything but completions and feedback: health, the Prometheus figures (an operator's), and each
library's stats, lift, lessons, history, rollback and export (its admin key's, or an operator's; the lift
its users' too)."""

from __future__ import annotations

from typing import Any

from . import records
from ._state import ProxyState
from .openai_api import bad_request
from .served import ServedLibrary


class Admin(ProxyState):
    def health(self) -> dict[str, Any]:
        """Says only that the proxy answers and records: no key is asked for, so no library is named."""
        if any(not lib.records.alive for lib in self.libraries.values()):
            return {"status": "failing", "reason": "a library's records writer has stopped; see the server's log"}
        return {"status": "ok"}

    def prometheus(self) -> tuple[bytes, str]:
        """Every library's figures (call `require_operator` first)."""
        for lib in self.libraries.values():
            lib.update_gauges()
        return self.metrics.render()

    async def stats(self, lib: ServedLibrary) -> dict[str, Any]:
        return await lib.run(lib.stats)

    def lift(self, lib: ServedLibrary) -> dict[str, Any]:
        return {"library": lib.name, "holdout": self.config.holdout, **records.lift(lib.records.reward_moments())}

    def lessons(self, lib: ServedLibrary) -> dict[str, Any]:
        return {"library": lib.name, "version": lib.lessons.version, "lessons": lib.lessons.lessons}

    def lessons_history(self, lib: ServedLibrary) -> dict[str, Any]:
        return {"library": lib.name, "versions": [v.to_dict() for v in lib.lessons.history()]}

    def lessons_rollback(self, lib: ServedLibrary, body: dict[str, Any]) -> dict[str, Any]:
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= lib.lessons.version:
            raise bad_request(f"version: must be a whole number in 0..{lib.lessons.version}", param="version")
        before = lib.lessons.version
        result = lib.lessons.rollback(version)
        lib.update_gauges()
        return {
            "library": lib.name,
            "from": before,
            "to": version,
            "version": result.version,
            "lessons": lib.lessons.lessons,
        }

    async def export(self, lib: ServedLibrary) -> dict[str, Any]:
        experiences = await lib.run(lambda: [{"id": e.id, **e.to_dict()} for e in lib.experiences.experience_library])
        return {
            "library": lib.name,
            "experiences": experiences,
            "lessons": lib.lessons.lessons,
            "lesson_version": lib.lessons.version,
        }
