"""Ray for these tests: on loopback only, without usage reporting or token files, small."""

from __future__ import annotations

import os

# Before Ray is imported: keep every Ray process on 127.0.0.1 (Ray otherwise binds the machine's own
# address), report no usage, write no auth token into ~/.ray, and give a lost Ray Client 10 s to come back.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_CLIENT_RECONNECT_GRACE_PERIOD"] = "10"
os.environ.setdefault("OMP_NUM_THREADS", "1")
