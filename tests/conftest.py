import gc
import os

# No test reaches past this machine: LiteLLM would fetch its price list at import otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest
from hypothesis import settings

from store.server import postgres_server, store_target  # noqa: F401  (fixtures for every test)
from support.llm import bundled_backend
from support.properties import PROFILE

# No property test may fail because the machine is slow or busy. TFGRPO_HYPOTHESIS picks the profile (see
# support/properties.py); a test that sets its own max_examples passes it through `examples()`.
settings.register_profile("full", deadline=None, max_examples=100)
settings.register_profile("fast", deadline=None, max_examples=20)
settings.load_profile(PROFILE)


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(config, items):
    """Every test that uses the bundled model says so with the `model` marker, and counts as slow: loading
    the model takes 20 s or more (once per test process), more than the whole of a quick run can spare."""
    unmarked = [
        i.nodeid
        for i in items
        if "local_backend" in getattr(i, "fixturenames", ()) and not i.get_closest_marker("model")
    ]
    if unmarked:
        raise pytest.UsageError("these tests use the bundled model but are not marked model:\n" + "\n".join(unmarked))
    for item in items:
        if item.get_closest_marker("model"):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Collect the garbage of the tests before, then freeze what is still alive (the modules imported so
    far: torch, transformers, the HTTP stacks, most of a million objects; the model; module-scoped servers):
    the library runs a full `gc.collect()` before every load and open, and each would otherwise walk all
    of it again, half a second or more each time, most of the time of the tests that load many files.
    Refcounting still frees frozen objects; only cyclic garbage among them stays."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def local_backend():
    """The bundled SmolLM2-135M-Instruct on CPU, loaded once for the whole test session (per worker)."""
    return bundled_backend()


@pytest.fixture
def local_model(local_backend, monkeypatch):
    """`--model local` (the default) answered by the session's bundled model instead of a copy loaded for
    the command (see support/cli.py); the command's `with backend:` leaves it open for the tests after it."""
    import tfgrpo.llm

    make = tfgrpo.llm.get_backend

    def get_backend(spec, **kwargs):
        return local_backend if spec == "local" and not kwargs else make(spec, **kwargs)

    monkeypatch.setattr(tfgrpo.llm, "get_backend", get_backend)
    monkeypatch.setattr(local_backend, "close", lambda: None)
    return local_backend
