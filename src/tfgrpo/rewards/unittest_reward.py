"""HumanEval-style unit-test reward: the candidate's function runs in the sandbox, the tests run in a
judge process that calls it over a pipe.

Why two processes: the verdict must not be reachable by the code being judged. The candidate's
program (prompt + completion, then a loop that answers calls) holds none of the tests and prints no
verdict; the trusted test code (the sample's `check`) runs in a separate judge process where the
candidate never runs, against a stand-in that sends each call's arguments to the sandbox and decodes
the answer as plain data of checked built-in types (`_wire`). So a result's `__eq__`, the
candidate's builtins or its exit status cannot pass a test, and it cannot read the tests to answer
from them (they are not in the sandbox; neither is the dataset). Asserts are counted in the judge.
This is differential testing as EvalPlus does it, with the comparison on the trusted side.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from .base import Reward, RewardError, Score
from .sandbox import SandboxConfig, SandboxResult, SandboxRun, classify_exception
from .text import extract_code

_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:.*?(?=^\S|\Z)", re.MULTILINE | re.DOTALL)
_HERE = Path(__file__).parent
_WIRE_SOURCE = (_HERE / "_wire.py").read_text(encoding="utf-8")
_JUDGE = f"import sys; sys.path.insert(0, {str(_HERE)!r}); import _judge; del sys.path[0]; _judge.main()"
_REQUEST_FD, _RESPONSE_FD = 3, 4  # where the sandboxed program finds its pipes (SandboxRun's pass_fds)
_JUDGE_GRACE_S = 30.0  # on top of the sandbox timeout, for the trusted tests' own work


class UnitTestReward(Reward):
    """1.0 when the completed function passes the sample's tests, else 0.0 with the reason (timeout,
    assertion, exception, ...). With `fractional=True` the reward is the share of the test's assert
    statements that pass (the statements of `check`, or of the whole test when it has no `check`).

    The sample holds the function's `prompt` (signature and docstring), the `test` code and the
    `entry_point` name, as HumanEval rows do. The response may be the function's body (as in
    HumanEval) or the whole function, bare or in ``` fences; a trailing `if __name__ == "__main__":`
    block is dropped.

    How it is judged (see the module's doc): only the candidate's code runs in the sandbox; the tests
    run in a judge process and call `check(candidate)`, where `candidate` forwards each call to the
    sandbox. Arguments and results travel as plain data (None, bool, int, float, complex, str, bytes,
    list, tuple, dict, set, frozenset); a function that returns anything else fails that call, and
    changes it makes to its arguments are not seen by the tests. Exceptions it raises reach the
    tests as the built-in exception of that name (others as a plain Exception). A call not answered
    within `call_timeout_s` (default: the sandbox's timeout; the program's start counts toward the
    total only), a crash, or junk on the pipe fails that call and every later one; the whole run is
    bounded by the sandbox's `timeout_s`.

    Without an entry point, the functions the prompt leaves unwritten (a bare signature, or a body
    that is only a docstring or `pass`) are the candidate's, and the test code runs as a whole in
    the judge, calling them by name; a prompt with no such function is a `RewardError`.
    """

    max_workers = os.cpu_count()

    def __init__(
        self,
        sandbox: SandboxConfig | None = None,
        fractional: bool = False,
        prompt_field: str = "prompt",
        test_field: str = "test",
        entry_point_field: str = "entry_point",
        call_timeout_s: float | None = None,
    ) -> None:
        self.sandbox = sandbox or SandboxConfig()
        self.fractional = fractional
        self.fields = (prompt_field, test_field, entry_point_field)
        if call_timeout_s is not None and not (isinstance(call_timeout_s, int | float) and call_timeout_s > 0):
            raise RewardError(f"call_timeout_s must be a positive number of seconds, got {call_timeout_s!r}")
        self.call_timeout_s = call_timeout_s

    def program(self, response: str, sample: dict) -> str:
        """The program run in the sandbox for `response`: the prompt completed by the response, run as
        `__main__`, then a loop that answers the judge's calls on fds 3 and 4. It holds no tests."""
        prompt_field, _, entry_point_field = self.fields
        candidate = complete_function(
            self._field(sample, prompt_field), response, sample.get(entry_point_field) or None
        )
        return _WIRE_SOURCE + textwrap.dedent(
            f"""

            import sys as _sys, types as _types
            _module = _types.ModuleType("__main__")
            _sys.modules["__main__"] = _module
            exec(compile({candidate!r}, "candidate.py", "exec"), _module.__dict__)
            serve(_module.__dict__, {_REQUEST_FD}, {_RESPONSE_FD})
            """
        )

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        prompt_field, test_field, entry_point_field = self.fields
        setup, test = self._field(sample, prompt_field), self._field(sample, test_field)
        entry_point = sample.get(entry_point_field) or None
        functions = [entry_point] if entry_point else unwritten_functions(setup)
        if not functions:
            raise RewardError(
                f"the sample has no {entry_point_field!r} and its prompt leaves no function unwritten, so "
                "there is nothing of the response's to test; name the function with an entry point"
            )
        counting = _counting_test(test) if self.fractional else None
        job = {
            "setup": setup if _compiles(setup) else setup.rstrip("\n") + "\n    pass\n",
            "test": counting[0] if counting else test,
            "entry_point": entry_point,
            "functions": functions,
            "request_fd": None,
            "response_fd": None,
            "timeout_s": self.sandbox.timeout_s,
            "call_timeout_s": self.call_timeout_s or self.sandbox.timeout_s,
            "max_message_bytes": self.sandbox.max_output_bytes,
        }
        verdict, result, judge_stderr = self._run(self.program(response, sample), job)
        details = {"outcome": "ok", "stderr": result.stderr[-2000:], "duration_s": result.duration_s}
        if verdict is None:
            return Score(0.0, f"judge: the tests did not finish: {judge_stderr[-500:] or 'no output'}", details)
        if "test_error" in verdict:
            raise RewardError(f"the sample's tests cannot run: {verdict['test_error']}")
        if counting is not None:
            total, passed = counting[1], verdict["passed"]
            details.update(asserts=total, failed=total - passed)
            if passed < total:
                details["outcome"], why = self._failure(verdict, result)
                details["first_failure"] = why
            return Score(passed / total, f"{passed} of {total} asserts passed", details)
        if verdict["error"] is None:
            return Score(1.0, "all tests passed", details)
        details["outcome"], message = self._failure(verdict, result)
        return Score(0.0, f"{details['outcome']}: {message}", details)

    def _run(self, program: str, job: dict) -> tuple[dict | None, SandboxResult, str]:
        """Run the candidate's program in the sandbox and the judge next to it, joined by two pipes."""
        request_r, request_w = os.pipe()
        response_r, response_w = os.pipe()
        ours = [request_w, response_r]
        try:
            try:
                run = SandboxRun(program, self.sandbox, pass_fds=(request_r, response_w))
            finally:
                os.close(request_r)
                os.close(response_w)
            with run:
                job.update(request_fd=request_w, response_fd=response_r)
                try:
                    judge = subprocess.Popen(
                        [sys.executable, "-I", "-c", _JUDGE],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        pass_fds=tuple(ours),
                        cwd=tempfile.gettempdir(),
                        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
                    )
                finally:
                    while ours:
                        os.close(ours.pop())
                started = time.monotonic()
                try:
                    out, err = judge.communicate(json.dumps(job).encode(), timeout=job["timeout_s"] + _JUDGE_GRACE_S)
                except subprocess.TimeoutExpired:
                    judge.kill()
                    out, err = judge.communicate()
                    err += b"\nthe judge ran out of time"
                try:
                    verdict = json.loads(out) if judge.returncode == 0 else None
                except (ValueError, RecursionError):
                    verdict = None
                # The candidate's program ends by itself once the judge's ends of the pipes close (or has
                # ended already); one the judge gave up on (hung, sent junk) is not waited for.
                failure = (verdict or {}).get("candidate") or {"kind": "exited"}
                ending = verdict is not None and failure["kind"] == "exited"
                result = run.finish(job["timeout_s"] - (time.monotonic() - started) if ending else 0)
            return verdict, result, err.decode(errors="replace")
        finally:
            for fd in ours:
                os.close(fd)

    def _failure(self, verdict: dict, result: SandboxResult) -> tuple[str, str]:
        """Why the tests failed: the outcome and message."""
        candidate = verdict.get("candidate")
        if candidate and candidate["kind"] == "exited":
            if result.outcome == "ok":
                return "exit", "the program ended before its tests did"
            return result.outcome, result.message
        if candidate:
            return candidate["kind"].replace("junk", "protocol"), f"the candidate's program {candidate['message']}"
        return classify_exception(self.sandbox, verdict["error"] or "AssertionError")

    @staticmethod
    def _field(sample: dict, name: str) -> str:
        value = sample.get(name)
        if not isinstance(value, str):
            raise RewardError(
                f"the sample has no text field {name!r} (fields: {sorted(sample)}); UnitTestReward needs "
                "HumanEval-style rows, or pass prompt_field=/test_field= to name yours"
            )
        return value


def complete_function(prompt: str, response: str, entry_point: str | None) -> str:
    """The prompt's code completed by the response: appended as the function's body, or, when the
    response defines `entry_point` itself, after the prompt at top level (the new definition wins)."""
    code = _MAIN_GUARD.sub("", extract_code(response, "python"))
    defines = entry_point and re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE)
    if defines:
        if not _compiles(prompt):  # a bare signature needs a body before anything follows it
            prompt = prompt.rstrip("\n") + "\n    pass\n"
        return prompt + "\n\n" + textwrap.dedent(code)
    first = next((line for line in code.splitlines() if line.strip()), "")
    if first and not first[0].isspace():  # a body written flush left: indent it under the signature
        code = "\n".join("    " + line if line.strip() else line for line in code.splitlines())
    return prompt + code


def _compiles(code: str) -> bool:
    try:
        compile(code, "<prompt>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def unwritten_functions(prompt: str) -> list[str]:
    """The top-level functions `prompt` declares but leaves for the response to write: a bare
    signature at the end, or a body that is only a docstring, `pass` or `...`."""
    code = prompt if _compiles(prompt) else prompt.rstrip("\n") + "\n    pass\n"
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and all(
            isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            for s in node.body
        ):
            names.append(node.name)
    return names


_COUNTER = "try:\n    pass\nexcept Exception:\n    __tfgrpo_failed__.append(1)\nelse:\n    __tfgrpo_passed__.append(1)"


def _counting_test(test: str) -> tuple[str, int] | None:
    """The test with each assert-bearing statement of `check` (of the whole test when it has no
    `check`) wrapped to record whether it passed instead of raising, and how many there are; None when
    there is no such statement. The judge runs it; the counts live there."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    body = check.body if check is not None else tree.body
    counted = 0
    for i, statement in enumerate(body):
        definition = isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        if not definition and any(isinstance(node, ast.Assert) for node in ast.walk(statement)):
            counted += 1
            wrapper = ast.parse(_COUNTER).body[0]
            assert isinstance(wrapper, ast.Try)  # _COUNTER is one try statement
            wrapper.body = [statement]
            body[i] = ast.copy_location(wrapper, statement)
    if not counted:
        return None
    return ast.unparse(ast.fix_missing_locations(tree)), counted
