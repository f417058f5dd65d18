"""`serve-model` over the scripted stand-in backend (it hangs or fails on cue and signals with events),
one server per test module."""

import pytest

from llm.support import UvicornThread
from server.scripted import ScriptedBackend
from tfgrpo.server.model_server import create_app


@pytest.fixture(scope="module")
def backend():
    return ScriptedBackend()


@pytest.fixture(scope="module")
def server(backend):
    with UvicornThread(create_app(backend, "scripted")) as running:
        yield running
