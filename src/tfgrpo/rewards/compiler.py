"""Compiler feedback: does the code compile, and with how many errors and warnings.

Python is checked with `compile()` (nothing runs) in a subprocess, so hostile input that exhausts the
parser cannot hurt the caller; warnings such as SyntaxWarning are counted. C and C++ go through
`gcc`/`g++ -fsyntax-only -Wall`, Rust through `rustc --emit=metadata` (type and borrow checking, no
code generation). Compilers run with a timeout and a 2 GiB address-space limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .base import Reward, RewardError, Score
from .text import code_blocks

LANGUAGES = ("python", "c", "cpp", "rust")

_MEMORY_LIMIT = 2 << 30

# Sets the limit, then becomes the compiler (no preexec_fn: rewards are scored from threads).
_LIMITED = (
    f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({_MEMORY_LIMIT}, {_MEMORY_LIMIT})); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)

_PYTHON_CHECK = f"""
import json, resource, sys, warnings
resource.setrlimit(resource.RLIMIT_AS, ({_MEMORY_LIMIT}, {_MEMORY_LIMIT}))
source = sys.stdin.buffer.read()
errors = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        compile(source, "<code>", "exec")
    except SyntaxError as e:
        errors.append(f"line {{e.lineno}}: {{type(e).__name__}}: {{e.msg}}")
    except (ValueError, MemoryError, RecursionError) as e:
        errors.append(f"{{type(e).__name__}}: {{e}}")
warns = [f"line {{w.lineno}}: {{w.category.__name__}}: {{w.message}}" for w in caught]
print(json.dumps({{"errors": errors, "warnings": warns}}))
"""

_GCC_DIAGNOSTIC = re.compile(r"^[^\n:]*:\d+(?::\d+)?: (fatal error|error|warning): .*$", re.MULTILINE)
_RUST_SUMMARY = re.compile(r"^(aborting due to|\d+ warnings? emitted|For more information)")


@dataclass(frozen=True)
class CompileResult:
    """Outcome of one compilation: `success` is True when the compiler accepted the code (warnings
    allowed); `messages` lists each error and warning as "line N: level: text"."""

    success: bool
    errors: int
    warnings: int
    messages: list[str] = field(default_factory=list)
    language: str = "python"


class CompilerFeedback:
    """Compile code and report errors and warnings (`CompilerFeedback.compile(code)`)."""

    @staticmethod
    def compile(code: str, language: str = "python", timeout_s: float = 30.0) -> CompileResult:
        """Check `code` in `language` (one of `LANGUAGES`). Raises `RewardError` when the compiler is
        not installed; a compiler that runs out of time or memory gives a failed result."""
        language = language.lower()
        if language not in LANGUAGES:
            raise ConfigError(f"unknown language {language!r}; CompilerFeedback supports {', '.join(LANGUAGES)}")
        with tempfile.TemporaryDirectory(prefix="tfgrpo-compile-") as tmp:
            try:
                if language == "python":
                    return _compile_python(code, timeout_s)
                if language == "rust":
                    return _compile_rust(code, Path(tmp), timeout_s)
                return _compile_gcc(code, language, Path(tmp), timeout_s)
            except subprocess.TimeoutExpired:
                return CompileResult(False, 1, 0, [f"the compiler took more than {timeout_s:g} s"], language)

    @staticmethod
    def available(language: str) -> bool:
        """Whether `language` can be compiled here (its compiler is installed)."""
        language = language.lower()
        return language == "python" or (language in LANGUAGES and _find_compiler(language) is not None)


def _compile_python(code: str, timeout_s: float) -> CompileResult:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PYTHON_CHECK],
        input=code.encode("utf-8", errors="surrogateescape"),
        capture_output=True,
        timeout=timeout_s,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:  # the checker itself died, e.g. out of memory
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return CompileResult(False, 1, 0, [f"the Python parser failed: {detail[0]}"], "python")
    errors, warnings = report["errors"], report["warnings"]
    return CompileResult(not errors, len(errors), len(warnings), errors + warnings, "python")


def _compile_gcc(code: str, language: str, tmp: Path, timeout_s: float) -> CompileResult:
    source = tmp / ("main.c" if language == "c" else "main.cpp")
    source.write_text(code, encoding="utf-8")
    compiler = _require_compiler(language)
    flags = ["-fsyntax-only", "-Wall", "-fdiagnostics-color=never", "-x", "c" if language == "c" else "c++"]
    done = _run_limited([compiler, *flags, source.name], tmp, timeout_s)
    found = list(_GCC_DIAGNOSTIC.finditer(done.stderr))
    messages = ["line " + m.group(0).removeprefix(f"{source.name}:") for m in found]
    errors = sum(m.group(1) != "warning" for m in found)
    warnings = len(found) - errors
    if done.returncode != 0 and errors == 0:  # e.g. the compiler crashed or hit the memory limit
        errors, messages = 1, [*messages, done.stderr.strip()[-500:] or f"exit status {done.returncode}"]
    return CompileResult(done.returncode == 0, errors, warnings, messages, language)


def _compile_rust(code: str, tmp: Path, timeout_s: float) -> CompileResult:
    (tmp / "main.rs").write_text(code, encoding="utf-8")
    compiler = _require_compiler("rust")
    # A snippet without `fn main` is checked as a library, where unused items are not worth a warning.
    has_main = re.search(r"\bfn\s+main\s*\(", code)
    crate = ["--crate-type", "bin"] if has_main else ["--crate-type", "lib", "-A", "dead_code"]
    args = [compiler, "--edition", "2021", *crate, "--emit=metadata", "--error-format=json", "-o", "out.rmeta"]
    done = _run_limited([*args, "main.rs"], tmp, timeout_s)
    messages, errors, warnings = [], 0, 0
    for line in done.stderr.splitlines():
        try:
            diagnostic = json.loads(line)
        except json.JSONDecodeError:
            continue
        level, text, spans = diagnostic.get("level"), diagnostic.get("message", ""), diagnostic.get("spans") or []
        if level not in ("error", "warning") or (not spans and _RUST_SUMMARY.match(text)):
            continue
        errors += level == "error"
        warnings += level == "warning"
        where = next((f"line {s['line_start']}: " for s in spans if s.get("is_primary")), "")
        messages.append(f"{where}{level}: {text}")
    if done.returncode != 0 and errors == 0:
        errors, messages = 1, [*messages, f"rustc failed with exit status {done.returncode}"]
    return CompileResult(done.returncode == 0, errors, warnings, messages, "rust")


def _run_limited(command: list[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LIMITED, *command],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout_s,
        env=_compiler_environment(cwd),
    )


def _compiler_environment(work: Path) -> dict[str, str]:
    """What a compiler of untrusted code is given: the tools it needs, not this process's environment (its
    messages are the score's reason, and code can quote a variable in them: `include_str!`, `#include`)."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "TMPDIR": str(work), "HOME": str(Path.home())}
    for name, default in (("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")):  # rustup's rustc finds its toolchain
        env[name] = os.environ.get(name, str(Path.home() / default))
    return env


_COMPILERS = {"c": "gcc", "cpp": "g++", "rust": "rustc"}
_C_COMMENT = re.compile(r"//[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL)
_COMMENT = {"python": re.compile(r"#[^\n]*"), "c": _C_COMMENT, "cpp": _C_COMMENT, "rust": _C_COMMENT}


def _find_compiler(language: str) -> str | None:
    name = _COMPILERS[language]
    found = shutil.which(name)
    if found is None and language == "rust":  # rustup's default place, often missing from PATH
        candidate = Path.home() / ".cargo" / "bin" / name
        found = str(candidate) if candidate.exists() else None
    return found


def _require_compiler(language: str) -> str:
    found = _find_compiler(language)
    if found is None:
        raise RewardError(f"{_COMPILERS[language]} is not installed (not on PATH); install it to check {language} code")
    return found


class CompilerReward(Reward):
    """1.0 when the response's code compiles, else 0.0; code inside ``` fences is taken when present."""

    def __init__(self, language: str = "python", timeout_s: float = 30.0) -> None:
        if language.lower() not in LANGUAGES:
            raise ConfigError(f"unknown language {language!r}; CompilerReward supports {', '.join(LANGUAGES)}")
        self.language = language.lower()
        self.timeout_s = timeout_s

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        # Every block of the language: a trivial first block must not vouch for a broken one after it.
        blocks = [
            code for code in code_blocks(response, self.language) if _COMMENT[self.language].sub("", code).strip()
        ]
        if not blocks:  # nothing compiles trivially
            return Score(0.0, "no code (nothing but whitespace and comments)", {"errors": 0, "warnings": 0})
        for code in blocks:
            result = CompilerFeedback.compile(code, self.language, self.timeout_s)
            if not result.success:
                break
        reason = "compiles" if result.success else "does not compile: " + "; ".join(result.messages[:3])
        details = {"errors": result.errors, "warnings": result.warnings, "messages": result.messages}
        return Score(1.0 if result.success else 0.0, reason, details)
