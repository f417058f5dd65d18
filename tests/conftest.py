import os

# No test reaches past this machine: LiteLLM would fetch its price list at import otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest
from hypothesis import settings

from llm.support import bundled_backend
from store.server import postgres_server, store_target  # noqa: F401  (fixtures for every test)

# No property test may fail because the machine is slow or busy.
settings.register_profile("tfgrpo", deadline=None)
settings.load_profile("tfgrpo")


@pytest.fixture(scope="session")
def local_backend():
    """The bundled SmolLM2-135M-Instruct on CPU, loaded once for the whole test session."""
    return bundled_backend()
