"""The judge: runs a sample's trusted test code against a stand-in for the candidate's function.

Run by `unittest_reward.py` as a plain subprocess, with this directory on `sys.path` only while it is
imported. The candidate never runs here: each call of the stand-in is sent, as plain data (`_wire`),
to the candidate's program in the sandbox, and the answer is decoded as hostile data. The job comes
as JSON on stdin; the verdict goes as JSON to what was stdout (the tests' own prints go to stderr).
A call the candidate does not answer in time, or answers with junk, fails, and so does every later
call: the verdict never waits on, or believes, the candidate's program.
"""

import builtins
import json
import os
import resource
import select
import sys
import time

import _wire

MEMORY_LIMIT = 4 << 30


class CandidateFailed(Exception):
    """The candidate cannot answer: its program ended, hung, or sent junk (`kind`)."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


class CandidateError(Exception):
    """An exception the candidate raised that is not a built-in one (its text is the original's)."""


class TestError(BaseException):
    """The tests cannot be run as written: not the candidate's fault. A BaseException, so that the
    tests' own `except Exception` (or the assert counting) does not take it for a failed assert."""


class Channel:
    """The judge's end of the pipes to the candidate's program."""

    def __init__(self, job):
        self.request_fd, self.response_fd = job["request_fd"], job["response_fd"]
        os.set_blocking(self.request_fd, False)
        self.deadline = time.monotonic() + job["timeout_s"]
        self.call_timeout_s = job["call_timeout_s"]
        self.max_bytes = job["max_message_bytes"]
        self.pending = b""
        self.ready = False
        self.calls = 0
        self.failure = None

    def call(self, name, args, kwargs):
        if self.failure is not None:
            raise self.failure
        try:
            request = _wire.dumps(["call", name, _wire.encode(args), _wire.encode(kwargs)])
        except _wire.WireError as error:
            raise TestError(f"the tests pass {name}() a value that cannot be sent to the sandbox: {error}") from None
        self.calls += 1
        try:
            if not self.ready:  # its start counts toward the total time only
                if self._receive(self.deadline, f"start before {name}() was called") != ["ready"]:
                    raise CandidateFailed("junk", "did not start by saying it was ready")
                self.ready = True
            deadline = min(self.deadline, time.monotonic() + self.call_timeout_s)
            self._send(request, deadline, name)
            return _answer(self._receive(deadline, f"answer {name}()"))
        except CandidateFailed as failure:
            self.failure = failure
            raise
        except _wire.WireError as error:
            self.failure = CandidateFailed("junk", f"sent junk: {error}")
            raise self.failure from None

    def _send(self, data, deadline, name):
        while data:
            if not select.select([], [self.request_fd], [], max(0.0, deadline - time.monotonic()))[1]:
                raise CandidateFailed("timeout", f"did not take the call to {name}() in time")
            try:
                data = data[os.write(self.request_fd, data) :]
            except BrokenPipeError:
                raise CandidateFailed("exited", "ended") from None

    def _receive(self, deadline, what):
        while b"\n" not in self.pending:
            if len(self.pending) > self.max_bytes:
                raise CandidateFailed("junk", f"sent a message of more than {self.max_bytes} bytes")
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.response_fd], [], [], left)[0]:
                raise CandidateFailed("timeout", f"did not {what} in time")
            chunk = os.read(self.response_fd, 1 << 16)
            if not chunk:
                raise CandidateFailed("exited", "ended")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return _wire.loads(line)


_ENDS_ITERATION = (StopIteration, StopAsyncIteration)


def _answer(reply):
    """The value of an ["ok", value] reply; raises what a ["raised", type, message] reply says."""
    if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
        return _wire.decode(reply[1])
    if type(reply) is list and len(reply) == 3 and reply[0] == "raised" and all(type(r) is str for r in reply[1:]):
        kind, message = reply[1][:100], reply[2][:1000]
        cls = getattr(builtins, kind, None)
        # (StopIteration out of the candidate would end a test's map/filter as if its cases had run out)
        if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, _ENDS_ITERATION):
            try:
                error = cls(message)
            except Exception:  # e.g. UnicodeDecodeError wants five arguments
                error = None
            if type(error) is cls:
                raise error
        raise CandidateError(f"{kind}: {message}" if message else kind)
    raise _wire.WireError("a reply is neither ['ok', value] nor ['raised', type, message]")


def stand_in(channel, name):
    """What the tests call instead of the candidate's function `name`."""

    def candidate(*args, **kwargs):
        return channel.call(name, list(args), kwargs)

    candidate.__name__ = candidate.__qualname__ = name
    return candidate


def describe(error):
    """The last line of a traceback for `error`, as Python prints it."""
    if isinstance(error, CandidateError):
        return str(error)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def judge(job):
    try:
        setup = compile(job["setup"], "<prompt>", "exec")
        test = compile(job["test"], "<test>", "exec")
    except (SyntaxError, ValueError) as problem:
        return {"test_error": f"the prompt or the tests do not compile: {describe(problem)}"}
    channel = Channel(job)
    passed: list[int] = []
    failed: list[int] = []
    namespace: dict = {"__name__": "__main__", "__tfgrpo_passed__": passed, "__tfgrpo_failed__": failed}
    try:
        try:
            exec(setup, namespace)  # the prompt's own helpers (trusted), as the tests may use them
        except Exception as problem:
            raise TestError(f"the prompt's code fails: {describe(problem)}") from None
        for name in job["functions"]:
            namespace[name] = stand_in(channel, name)
        namespace["__tfgrpo_passed__"], namespace["__tfgrpo_failed__"] = passed, failed
        error = None
        try:
            exec(test, namespace)
            entry_point = job["entry_point"]
            if entry_point:
                if not callable(namespace.get("check")):
                    raise TestError("the tests define no check(candidate) function")
                namespace["check"](namespace[entry_point])
        except Exception as raised:
            error = describe(raised)
    except TestError as problem:
        return {"test_error": str(problem)}
    failure = channel.failure
    return {
        "error": error,
        "passed": len(passed),
        "calls": channel.calls,
        "candidate": None if failure is None else {"kind": failure.kind, "message": str(failure)},
    }


def main():
    job = json.loads(sys.stdin.read())
    verdict_fd = os.dup(1)
    os.dup2(2, 1)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    verdict = judge(job)
    os.write(verdict_fd, json.dumps(verdict).encode())
