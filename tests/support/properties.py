"""How hard the property tests try: TFGRPO_HYPOTHESIS=full (the default where CI is set; `make test`) or
fast (the default elsewhere; `make test-fast`), a fifth of the examples. Registered in tests/conftest.py."""

from __future__ import annotations

import os

PROFILES = ("full", "fast")
PROFILE = os.environ.get("TFGRPO_HYPOTHESIS") or ("full" if os.environ.get("CI") else "fast")
if PROFILE not in PROFILES:
    raise ValueError(f"TFGRPO_HYPOTHESIS must be one of {', '.join(PROFILES)}, got {PROFILE!r}")


def examples(full: int) -> int:
    """The number of examples for a test that tries `full` under the full profile."""
    return full if PROFILE == "full" else max(10, full // 5)
