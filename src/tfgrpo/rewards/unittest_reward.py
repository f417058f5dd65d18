"""HumanEval-style unit-test reward: prompt + completion + tests + `check(entry_point)`, run in the sandbox."""

from __future__ import annotations

import ast
import os
import re
import secrets
import textwrap

from .base import Reward, RewardError, Score
from .sandbox import SandboxConfig, run_python
from .text import extract_code

_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:.*?(?=^\S|\Z)", re.MULTILINE | re.DOTALL)


class UnitTestReward(Reward):
    """1.0 when the completed function passes the sample's tests, else 0.0 with the reason (timeout,
    assertion, exception, ...). With `fractional=True` the reward is the share of the `check`
    function's assert statements that pass.

    The sample holds the function's `prompt` (signature and docstring), the `test` code and the
    `entry_point` name, as HumanEval rows do; without an entry point the tests run as they are. The
    response may be the function's body (as in HumanEval) or the whole function, bare or in ```
    fences; a trailing `if __name__ == "__main__":` block is dropped.
    """

    max_workers = os.cpu_count()

    def __init__(
        self,
        sandbox: SandboxConfig | None = None,
        fractional: bool = False,
        prompt_field: str = "prompt",
        test_field: str = "test",
        entry_point_field: str = "entry_point",
    ) -> None:
        self.sandbox = sandbox or SandboxConfig()
        self.fractional = fractional
        self.fields = (prompt_field, test_field, entry_point_field)

    def program(self, response: str, sample: dict, marker: str = "tfgrpo-done") -> str:
        """The Python program run for `response`. Its last line prints `marker` and the number of
        failed asserts, so that a program that exits early (say `sys.exit(0)`) does not pass."""
        return self._build(response, sample, None, marker)

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        counting = _counting_test(self._field(sample, self.fields[1])) if self.fractional else None
        marker = f"tfgrpo-{secrets.token_hex(8)}"
        result = run_python(self._build(response, sample, counting, marker), self.sandbox)
        details = {"outcome": result.outcome, "stderr": result.stderr[-2000:], "duration_s": result.duration_s}
        failed = _marker_value(result.stdout, marker)
        if failed is None or not result.passed:
            reason = result.reason if not result.passed else "exit: the program ended before its tests did"
            return Score(0.0, reason, details)
        if counting is None:
            return Score(1.0, "all tests passed", details)
        total = counting[1]
        details.update(asserts=total, failed=failed)
        return Score((total - failed) / total, f"{total - failed} of {total} asserts passed", details)

    def _build(self, response: str, sample: dict, counting: tuple[str, int] | None, marker: str) -> str:
        prompt_field, test_field, entry_point_field = self.fields
        entry_point = sample.get(entry_point_field) or None
        program = complete_function(self._field(sample, prompt_field), response, entry_point)
        test = self._field(sample, test_field) if counting is None else counting[0]
        call = f"check({entry_point})\n" if entry_point else ""
        # Created after the completion, so the completion cannot have touched it.
        counter = "__tfgrpo_failed__ = []\n"
        return f"{program}\n\n{counter}{test}\n\n{call}print({marker!r}, len(__tfgrpo_failed__))\n"

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


def _counting_test(test: str) -> tuple[str, int] | None:
    """The test with each assert-bearing statement of `check` wrapped to record failure instead of
    raising, and how many there are; None when there is no such `check`."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        return None
    counted = 0
    for i, statement in enumerate(check.body):
        if any(isinstance(node, ast.Assert) for node in ast.walk(statement)):
            counted += 1
            wrapper = ast.parse("try:\n    pass\nexcept Exception:\n    __tfgrpo_failed__.append(1)").body[0]
            wrapper.body = [statement]
            check.body[i] = ast.copy_location(wrapper, statement)
    if not counted:
        return None
    return ast.unparse(ast.fix_missing_locations(tree)), counted


def _marker_value(stdout: str, marker: str) -> int | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker + " "):
            return int(line.split()[1])
    return None
