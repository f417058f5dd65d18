"""Rewards that compare a response with the sample's reference answer, and an LLM judge."""

from __future__ import annotations

import json
import math
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal

from ..errors import ConfigError
from .base import Reward, RewardError, Score
from .text import last_number_text


def reference(sample: dict, field: str) -> object:
    """The sample's reference answer, or a `RewardError` that says which field is missing."""
    if field not in sample or sample[field] is None:
        raise RewardError(
            f"the sample has no reference answer in field {field!r} (fields: {sorted(sample)}); "
            "pass answer_field= to name the right one"
        )
    return sample[field]


def _accepted(answer: object) -> list[str]:
    """A reference answer may be one value or a list of acceptable ones."""
    return [str(a) for a in answer] if isinstance(answer, list | tuple) else [str(answer)]


class MathReward(Reward):
    """1.0 when the response's final answer is mathematically equal to the reference (`math_verify`:
    "\\frac{1}{2}" equals "0.5", "$x^2$" equals "x**2", a \\boxed{} answer is found in prose)."""

    # math_verify's timeouts use signal.alarm, which works only in the main thread; so batches are
    # scored in the calling thread (parsing holds the GIL anyway). Called from another thread (`ascore`,
    # a server's scoring), a response is checked in a process of its own, killed past the time allowed:
    # an answer such as 9^{9^{9^{9}}} would otherwise hold that thread for ever.
    max_workers = 1

    def __init__(self, answer_field: str = "answer", timeout_s: int = 5) -> None:
        try:
            import math_verify
        except ImportError as error:
            raise RewardError("MathReward needs math-verify: pip install 'tfgrpo[tasks]'") from error
        self._math_verify = math_verify
        self.answer_field = answer_field
        self.timeout_s = timeout_s
        self._worker: _MathWorker | None = None
        self._worker_lock = threading.Lock()

    def __getstate__(self) -> dict:  # (a Ray worker gets its own checker process)
        return {**self.__dict__, "_math_verify": None, "_worker": None, "_worker_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        import math_verify

        self._math_verify, self._worker_lock = math_verify, threading.Lock()

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        if threading.current_thread() is not threading.main_thread():
            answer = reference(sample, self.answer_field)
            with self._worker_lock:
                if self._worker is None or self._worker.dead:
                    self._worker = _MathWorker(self.answer_field, self.timeout_s)
                return self._worker.score(response, {self.answer_field: answer})
        return self._check(response, sample)

    def _check(self, response: str, sample: dict) -> Score:
        answer = reference(sample, self.answer_field)
        answers = _accepted(answer)
        timeout = self.timeout_s
        parse, verify = self._math_verify.parse, self._math_verify.verify
        # A bare LaTeX reference ("\\sqrt{2}") is only recognised inside $...$.
        golds = [parse(a, parsing_timeout=timeout) or parse(f"${a}$", parsing_timeout=timeout) for a in answers]
        if not all(golds):
            raise RewardError(f"math_verify cannot parse the reference answer {answer!r}")
        predicted = parse(response, parsing_timeout=timeout)
        if not predicted:
            return Score(0.0, "no final answer found in the response")
        shown = predicted[-1]
        for gold in golds:
            if verify(gold, predicted, timeout_seconds=timeout):
                return Score(1.0, f"answer {shown} equals the reference {answer}")
        return Score(0.0, f"answer {shown} differs from the reference {answer}")


class _MathWorker:
    """A process (`python -m tfgrpo.rewards.math_reward`) that checks answers on its main thread, where
    math_verify's timeouts work; killed when one takes longer than they allow (the next call makes another)."""

    def __init__(self, answer_field: str, timeout_s: int) -> None:
        self.limit_s = 3 * timeout_s + 5  # parsing both sides and verifying, each with its own timeout
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, answer_field, str(timeout_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
        )
        self.ready = self.dead = False

    def _line(self, timeout_s: float) -> str | None:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        return self.process.stdout.readline() if readable else None

    def score(self, response: str, sample: dict) -> Score:
        assert self.process.stdin is not None
        try:
            if not self.ready:
                if self._line(120) != "ready\n":  # importing sympy, once
                    self.close()
                    raise RewardError("the math checker process did not start")
                self.ready = True
            self.process.stdin.write(json.dumps([response, sample], default=str) + "\n")
            self.process.stdin.flush()
            line = self._line(self.limit_s)
        except (OSError, ValueError):
            line = ""
        if line is None:
            self.close()
            return Score(0.0, f"the answer took more than {self.limit_s} s to check")
        if not line:
            self.close()
            raise RewardError("the math checker process ended")
        kind, value, reason = json.loads(line)
        if kind == "error":
            raise RewardError(reason)
        return Score(value, reason)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.dead = True


def _serve(answer_field: str, timeout_s: int) -> None:
    """The checker process: one JSON line [response, sample] in, one [kind, value, reason] out."""
    reward = MathReward(answer_field, timeout_s)
    print("ready", flush=True)
    for line in sys.stdin:
        response, sample = json.loads(line)
        try:
            found = reward._check(response, sample)
            answer = ["score", found.value, found.reason]
        except Exception as error:  # RewardError (a reference it cannot parse), or math_verify's own
            answer = ["error", 0.0, f"{type(error).__name__}: {error}"[:500]]
        print(json.dumps(answer), flush=True)


def normalize(text: str, ignore_case: bool = True, collapse_whitespace: bool = True) -> str:
    """`text` stripped, with runs of whitespace made one space and case folded (each optional)."""
    text = text.strip()
    if collapse_whitespace:
        text = " ".join(text.split())
    return text.casefold() if ignore_case else text


class ExactMatchReward(Reward):
    """1.0 when the whole response equals the reference answer (or one of a list of them), after
    stripping and, by default, ignoring case and differences in whitespace."""

    def __init__(self, answer_field: str = "answer", ignore_case: bool = True, collapse_whitespace: bool = True):
        self.answer_field = answer_field
        self.options = {"ignore_case": ignore_case, "collapse_whitespace": collapse_whitespace}

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        answers = _accepted(reference(sample, self.answer_field))
        got = normalize(response, **self.options)
        if any(got == normalize(answer, **self.options) for answer in answers):
            return Score(1.0, "matches the reference")
        return Score(0.0, f"{response.strip()[:80]!r} does not match the reference {answers[0][:80]!r}")


class RegexReward(Reward):
    """Without `group`: 1.0 when `pattern` occurs in the response. With `group` (a number or name): the
    group of the pattern's last match is compared with the reference answer, normalised as in
    `ExactMatchReward`."""

    def __init__(
        self,
        pattern: str,
        group: int | str | None = None,
        answer_field: str = "answer",
        flags: int = 0,
        ignore_case: bool = True,
        collapse_whitespace: bool = True,
    ) -> None:
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as error:
            raise ConfigError(f"RegexReward pattern {pattern!r} is not a valid regular expression: {error}") from error
        if isinstance(group, str) and group not in self.pattern.groupindex:
            raise ConfigError(f"RegexReward pattern {pattern!r} has no group named {group!r}")
        if isinstance(group, int) and not 0 <= group <= self.pattern.groups:
            raise ConfigError(f"RegexReward pattern {pattern!r} has {self.pattern.groups} groups, not {group}")
        self.group = group
        self.answer_field = answer_field
        self.options = {"ignore_case": ignore_case, "collapse_whitespace": collapse_whitespace}

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        matches = list(self.pattern.finditer(response))
        if not matches:
            return Score(0.0, f"pattern {self.pattern.pattern!r} not found")
        if self.group is None:
            return Score(1.0, f"pattern {self.pattern.pattern!r} found")
        got = matches[-1].group(self.group) or ""
        answers = _accepted(reference(sample, self.answer_field))
        if any(normalize(got, **self.options) == normalize(answer, **self.options) for answer in answers):
            return Score(1.0, f"extracted {got!r} matches the reference")
        return Score(0.0, f"extracted {got[:80]!r} does not match the reference {answers[0][:80]!r}")


class NumericMatchReward(Reward):
    """1.0 when the last number in the response equals the numeric reference answer: exactly for a whole
    number (42.0 is 42; an estimate of a large product is not), else within the relative tolerance
    `tolerance` (at least absolute for small values)."""

    def __init__(self, answer_field: str = "answer", tolerance: float = 1e-6) -> None:
        self.answer_field = answer_field
        self.tolerance = tolerance

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        answer = reference(sample, self.answer_field)
        gold_text = last_number_text(str(answer))
        if gold_text is None:
            raise RewardError(f"the reference answer {answer!r} is not a number")
        got_text = last_number_text(response)
        if got_text is None:
            return Score(0.0, "no number in the response")
        got, gold = float(got_text), float(gold_text)
        if "." not in gold_text:
            right = Decimal(got_text) == Decimal(gold_text)
        else:
            right = abs(got - gold) <= self.tolerance * max(1.0, abs(gold))
        if right:
            return Score(1.0, f"{got_text[:40]} is correct")
        return Score(0.0, f"{got_text[:40]} is not {gold_text[:40]}")


Judge = Callable[[str], str]
"""What `JudgeReward` needs from an LLM: prompt in, text out (e.g. a backend's `complete` method)."""

JUDGE_TEMPLATE = """You are grading a response to a task.

Task:
{prompt}

Reference answer (may be empty):
{answer}

Response to grade:
{response}

Judge how correct and complete the response is. Write one or two sentences of justification, then a
last line of the form "Score: N" where N is a number from 0 (wrong) to {scale:g} (fully correct)."""

# "Score: 7", "score = 0.8", "Score: **8**/10", "score of 7 out of 10", "Score: 80%".
_JUDGE_SCORE = re.compile(
    r"\bscore\b[^\d\n-]{0,12}(-?\d+(?:\.\d+)?)(?!\w)(?:\**\s*(?:/|out of)\s*\**(\d+(?:\.\d+)?))?\s*(%)?", re.IGNORECASE
)
_BARE_NUMBER = re.compile(r"^\s*\**(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?\s*(%)?\**\s*$")


class JudgeReward(Reward):
    """An LLM grades the response. Its output is treated as untrusted text: the last "Score: N" (or
    a bare number) is taken, read on `scale` (or as N/M or N%), and clamped to [0, 1]; output without a
    usable score gives 0.0 with the reason."""

    def __init__(self, judge: Judge, template: str = JUDGE_TEMPLATE, scale: float = 10, answer_field: str = "answer"):
        if not callable(judge):
            raise ConfigError(f"JudgeReward needs a callable judge (prompt -> text), got {judge!r}")
        if not (isinstance(scale, int | float) and scale > 0):
            raise ConfigError(f"JudgeReward scale must be a positive number, got {scale!r}")
        self.judge = judge
        self.template = template
        self.scale = scale
        self.answer_field = answer_field

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        answer = sample.get(self.answer_field)
        question = self.template.format(
            prompt=prompt, response=response, answer="" if answer is None else answer, scale=self.scale
        )
        output = self.judge(question)
        if not isinstance(output, str):
            return Score(0.0, f"the judge returned {type(output).__name__}, not text")
        value = parse_judge_score(output, self.scale)
        if value is None:
            return Score(0.0, f"no score in the judge's output: {output.strip()[-200:]!r}", {"judge": output[-2000:]})
        return Score(value, f"judged {value:.2f}", {"judge": output[-2000:]})


def parse_judge_score(text: str, scale: float = 10) -> float | None:
    """The judge's final score as a value in [0, 1], or None when there is none."""
    matches = list(_JUDGE_SCORE.finditer(text)) or list(_BARE_NUMBER.finditer(text))
    if not matches:
        return None
    number, denominator, percent = matches[-1].groups()
    value = float(number)
    if denominator is not None:
        if float(denominator) == 0:
            return None
        value /= float(denominator)
    elif percent:
        value /= 100
    else:
        value /= scale
    return min(1.0, max(0.0, value)) if math.isfinite(value) else None


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
