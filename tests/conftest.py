import pytest

from llm.support import bundled_backend


@pytest.fixture(scope="session")
def local_backend():
    """The bundled SmolLM2-135M-Instruct on CPU, loaded once for the whole test session."""
    return bundled_backend()
