import pytest

from llm.support import bundled_backend


@pytest.fixture(scope="session")
def local_backend():
    """The bundled SmolLM2-135M-Instruct on CPU, shared with tests/llm (loaded once per session)."""
    return bundled_backend()
