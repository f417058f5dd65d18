"""`examples/arithmetic_app.py` against a real proxy (in front of the scripted stand-in upstream), as a
user runs it: a subprocess of the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.proxy import Proxy

APP = Path(__file__).resolve().parents[2] / "examples" / "arithmetic_app.py"


def run_app(proxy: Proxy, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(APP), "--proxy", f"{proxy.url}/v1", "--rounds", "1", "--questions", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # the example app as a process of its own, twice
def test_the_app_names_the_library_the_proxy_serves(fresh, tmp_path):
    # The proxy serves lib.db as "lib"; the app assumed "arithmetic" and died with KeyError: 'experiences'.
    with Proxy(fresh, tmp_path / "lib.db") as proxy:
        wrong = run_app(proxy, "--library", "arithmetic")
        assert wrong.returncode == 1 and "KeyError" not in wrong.stderr
        assert "the proxy serves the library 'lib', not 'arithmetic'" in wrong.stderr
        assert "pass --library lib or leave --library out" in wrong.stderr

        right = run_app(proxy)  # the library's name comes from the proxy's answers
        assert right.returncode == 0, right.stderr
        assert right.stdout.splitlines()[1].startswith("    1 | 0.000 (2)")
        assert "lift:" in right.stdout


def test_the_app_says_when_it_is_not_talking_to_the_proxy(fresh):
    class NotAProxy:
        url = fresh.url.removesuffix("/v1")  # the upstream itself answers, with no tfgrpo field

    result = run_app(NotAProxy())  # type: ignore[arg-type]
    assert result.returncode == 1
    assert "without a tfgrpo field: is --proxy the address of `tfgrpo serve`?" in result.stderr
