"""The top-level package: what a user of the Python API needs, importable by name, without loading the
heavy layers until one of their names is asked for."""

import subprocess
import sys

import tfgrpo


def test_every_exported_name_resolves():
    for name in tfgrpo.__all__:
        assert getattr(tfgrpo, name) is not None, name
    assert callable(tfgrpo.train) and callable(tfgrpo.evaluate) and callable(tfgrpo.serve)
    assert tfgrpo.get_backend.__module__ == "tfgrpo.llm"


def test_importing_the_package_loads_no_web_framework_and_no_model_library():
    heavy = "('fastapi', 'aiohttp', 'torch', 'transformers')"
    code = f"import sys, tfgrpo; print(sorted(m for m in {heavy} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_cli_parser_loads_no_web_framework():
    code = (
        "import sys; from tfgrpo.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('fastapi', 'aiohttp', 'uvicorn', 'torch') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_importing_the_package_needs_only_the_standard_library():
    """The sandbox's launcher runs the package in an interpreter that may have nothing installed."""
    code = "import sys; import tfgrpo.rewards.sandbox; print(sorted(m for m in ('numpy',) if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
