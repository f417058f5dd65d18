"""Servers shared by a test module: `serve-model` over the scripted stand-in backend (it hangs or fails on
cue and signals with events), and the scripted upstream that the `tfgrpo serve` tests put a proxy in front of."""

import pytest

from support.llm import UvicornThread
from support.proxy import Upstream
from support.scripted import ScriptedBackend
from tfgrpo.server.model_server import create_app


@pytest.fixture(scope="module")
def backend():
    return ScriptedBackend()


@pytest.fixture(scope="module")
def server(backend):
    with UvicornThread(create_app(backend, "scripted")) as running:
        yield running


@pytest.fixture(scope="module")
def upstream():
    stand_in = Upstream()
    with UvicornThread(stand_in) as running:
        stand_in.url = f"{running.url}/v1"
        yield stand_in


@pytest.fixture
def fresh(upstream):
    """The module's upstream with its script, its record of requests and its events cleared."""
    upstream.script.clear()
    upstream.bodies.clear()
    upstream.cancelled.clear()
    upstream.hanging.clear()
    return upstream
