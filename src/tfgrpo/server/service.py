"""`ProxyService`: `tfgrpo serve` as one object whose methods answer each endpoint, without a web server
(`proxy.py` wires them to HTTP). One module per job: completions, feedback, admin; the state they share
is `state.ProxyState`."""

from __future__ import annotations

from .admin import Admin
from .completions import Completions
from .feedback import Feedback


class ProxyService(Completions, Feedback, Admin):
    """The learning proxy: `await start()`, then the handlers, then `await close()`."""
