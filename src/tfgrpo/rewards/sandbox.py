"""Run untrusted Python (generated code plus its tests) in a sandboxed subprocess.

What is enforced on Linux (see `_sandbox_launcher.py` for how), as root:

- wall-clock timeout, then SIGKILL for the whole process tree: ignoring SIGTERM, setsid or double
  forks do not help, since the program runs in its own pid namespace under an init that kills and
  reaps everything it leaves, and every process of its uid is killed at the end;
- CPU time (RLIMIT_CPU), address space (RLIMIT_AS), size of each written file, stdout and stderr
  included (RLIMIT_FSIZE), open files, no core dumps;
- process count (RLIMIT_NPROC). Linux does not enforce it for root, so the program runs as an
  unprivileged uid of its own (`uid_base` + a free slot, one per concurrent run), where the limit
  holds, and where `kill(-1)` or a fork bomb cannot touch other runs;
- no network: a new network namespace with no interface up (unless `network=True`);
- file system: HOME, TMPDIR and cwd are a size-limited tmpfs mounted over /tmp (and the other
  world-writable dirs), so nothing written reaches the disk and it all vanishes with the run; as
  another uid the program cannot write anywhere else; directories it cannot enter anyway (/root)
  are replaced by an empty tmpfs, with only the interpreter's directories bound back in; /proc
  shows only its own processes; no_new_privs disarms setuid binaries; the environment is a minimal
  fixed one.

As an ordinary user, an unprivileged user namespace gives the same namespaces where the kernel
allows them, but the program runs as that user (it can change the user's files outside /tmp) and
the process limit also counts the user's other processes. Where namespaces are refused (some
containers), there is no network or file system isolation: as root the uid, rlimits and the
killing still hold; as an ordinary user a process that escapes can outlive the run.
`SandboxResult.isolation` lists what was in force. Not done: seccomp syscall filtering, hiding
world-readable files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, SandboxError

LAUNCHER = Path(__file__).with_name("_sandbox_launcher.py")

OUTCOMES = (
    "ok",
    "timeout",
    "cpu_limit",
    "memory",
    "output_limit",
    "process_limit",
    "network",
    "assertion",
    "exception",
    "crash",
    "exit",
)
"""Every `SandboxResult.outcome`; only "ok" passed."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one sandboxed run."""

    timeout_s: float = 10.0
    """Wall-clock seconds before the program and everything it started are killed."""
    cpu_s: int | None = None
    """CPU seconds (RLIMIT_CPU); None: the timeout rounded up."""
    memory_mb: int = 512
    """Address space per process (RLIMIT_AS)."""
    max_processes: int = 16
    """Processes and threads at once, the program included (RLIMIT_NPROC)."""
    max_output_bytes: int = 1_000_000
    """Cap on stdout, on stderr and on each file written; more is reported as "output_limit"."""
    disk_mb: int = 64
    """Size of the private tmpfs that serves as HOME, TMPDIR and cwd."""
    network: bool = False
    """Allow network access (off: a network namespace with no interfaces)."""
    python: str | None = None
    """Interpreter to run; None: the one running tfgrpo."""
    uid_base: int = 1_900_000
    """When run as root, programs run as uids uid_base .. uid_base + uid_slots - 1 (they need not exist
    in /etc/passwd; pick a range nothing else on the machine uses)."""
    uid_slots: int = 64
    """How many sandboxes may run at once when run as root."""

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout_s, int | float) and self.timeout_s > 0):
            raise ConfigError(f"SandboxConfig.timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        for name in ("memory_mb", "max_processes", "max_output_bytes", "disk_mb", "uid_slots"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"SandboxConfig.{name} must be a positive integer, got {value!r}")
        if self.cpu_s is not None and (not isinstance(self.cpu_s, int) or self.cpu_s < 1):
            raise ConfigError(f"SandboxConfig.cpu_s must be a positive integer or None, got {self.cpu_s!r}")
        if not isinstance(self.uid_base, int) or not 1000 <= self.uid_base <= 2**32 - 2 - self.uid_slots:
            raise ConfigError(f"SandboxConfig.uid_base must be an unprivileged uid (>= 1000), got {self.uid_base!r}")


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended. `outcome` is one of `OUTCOMES`; `message` gives the detail."""

    outcome: str
    message: str
    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None
    duration_s: float
    isolation: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.outcome == "ok"

    @property
    def reason(self) -> str:
        return f"{self.outcome}: {self.message}" if self.message else self.outcome


def run_python(code: str, config: SandboxConfig | None = None) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; it passes when it exits with status 0."""
    config = config or SandboxConfig()
    if not sys.platform.startswith("linux"):
        raise SandboxError(f"the sandbox needs Linux (namespaces, /proc); this is {sys.platform}")
    python = config.python or sys.executable
    with _sandbox_uid(config) as uid, tempfile.TemporaryDirectory(prefix="tfgrpo-sandbox-") as base:
        os.chmod(base, 0o711)  # without namespaces the program runs in workdir, by path
        workdir = os.path.join(base, "work")
        os.mkdir(workdir, 0o700)
        Path(workdir, "main.py").write_text(code, encoding="utf-8")
        if uid is not None:
            for path in (workdir, os.path.join(workdir, "main.py")):
                os.chown(path, uid, uid)
            _kill_uid(uid)  # leftovers of a run whose parent died
        launcher_config = {
            "argv": [python, "-I", "-B", "main.py"],
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
            "workdir": workdir,
            "status_path": os.path.join(base, "status.json"),
            "uid": uid,
            "gid": uid,
            "network": config.network,
            "disk_mb": config.disk_mb,
            "reachable": _interpreter_dirs(python),
            "limits": {
                "cpu_s": config.cpu_s or math.ceil(config.timeout_s),
                "memory_bytes": config.memory_mb * 2**20,
                "max_processes": config.max_processes,
                "max_output_bytes": config.max_output_bytes,
            },
        }
        stdout_path, stderr_path = os.path.join(base, "stdout"), os.path.join(base, "stderr")
        start = time.monotonic()
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(launcher_config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
            )
        timed_out = False
        try:
            proc.wait(timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _stop(proc, uid)
        duration = time.monotonic() - start
        return _result(config, launcher_config["status_path"], stdout_path, stderr_path, timed_out, duration)


def _stop(proc: subprocess.Popen, uid: int | None) -> None:
    """End the run, if still going, and leave nothing of it behind."""
    if uid is not None:
        # Kill the program's processes first, so that init reports and reaps them as usual.
        _kill_uid(uid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if uid is not None:
        _kill_uid(uid)


def _result(
    config: SandboxConfig, status_path: str, stdout_path: str, stderr_path: str, timed_out: bool, duration: float
) -> SandboxResult:
    cap = config.max_output_bytes
    sizes = [os.path.getsize(stdout_path), os.path.getsize(stderr_path)]
    stdout, stderr = (_read(path, cap) for path in (stdout_path, stderr_path))
    try:
        with open(status_path) as f:
            status = json.load(f)
    except FileNotFoundError:
        if not timed_out:
            raise SandboxError(f"the sandbox launcher failed: {stderr[-2000:] or 'no output'}") from None
        status = {}
    if "error" in status:
        raise SandboxError(
            f"the sandbox could not start the program: {status['error']}. Check that the interpreter is "
            "readable by other users, or pass SandboxConfig(python=...)"
        )
    exit_code, sig = status.get("exit_code"), status.get("signal")
    outcome, message = _classify(config, timed_out, exit_code, sig, max(sizes) > cap, stderr)
    return SandboxResult(outcome, message, stdout, stderr, exit_code, sig, duration, tuple(status.get("isolation", ())))


def _classify(
    config: SandboxConfig, timed_out: bool, exit_code: int | None, sig: int | None, too_much_output: bool, stderr: str
) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"still running after {config.timeout_s:g} s wall-clock; killed"
    if sig == signal.SIGXCPU:
        return "cpu_limit", f"used more than {config.cpu_s or math.ceil(config.timeout_s)} s of CPU time; killed"
    if too_much_output:
        return "output_limit", f"wrote more than {config.max_output_bytes} bytes"
    if exit_code == 0:
        return "ok", ""
    error = _last_exception(stderr)
    if error.startswith("MemoryError"):
        return "memory", f"exceeded {config.memory_mb} MB ({error})"
    if error.startswith("BlockingIOError") and "Resource temporarily unavailable" in error:
        return "process_limit", f"tried to run more than {config.max_processes} processes ({error})"
    if re.search(r"Network is unreachable|Temporary failure in name resolution|Name or service not known", error):
        return "network", f"network access is blocked ({error})"
    if error.startswith("AssertionError"):
        return "assertion", error
    if error:
        return "exception", error
    if sig is not None:
        return "crash", f"killed by {signal.Signals(sig).name}"
    return "exit", f"exit status {exit_code}"


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?::\s.*)?$")


def _last_exception(stderr: str) -> str:
    """The "SomeError: message" line that ends a traceback (the last unindented line), or ""."""
    for line in reversed(stderr.splitlines()):
        if line.strip():
            return line.strip()[:500] if _EXCEPTION_LINE.match(line) else ""
    return ""


def _read(path: str, cap: int) -> str:
    with open(path, "rb") as f:
        return f.read(cap).decode("utf-8", errors="replace")


def _interpreter_dirs(python: str) -> list[str]:
    """Directories the interpreter needs to start: its prefix, and the venv's and base install's."""
    resolved = os.path.realpath(shutil.which(python) or python)
    if not os.path.exists(resolved):
        raise SandboxError(f"no Python interpreter at {python!r}; pass SandboxConfig(python=...)")
    dirs = {os.path.dirname(os.path.dirname(resolved))}
    if python == sys.executable:
        dirs |= {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    # Keep only outermost directories: binding one brings everything below it.
    return sorted(d for d in dirs if not any(d != o and d.startswith(o.rstrip("/") + "/") for o in dirs))


@contextlib.contextmanager
def _sandbox_uid(config: SandboxConfig) -> Iterator[int | None]:
    """A uid no other sandbox is using (held with a lock file), when running as root; else None."""
    if os.geteuid() != 0:
        yield None
        return
    lock_dir = Path(tempfile.gettempdir(), "tfgrpo-sandbox-uids")
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(lock_dir)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
        raise SandboxError(f"{lock_dir} is not a private directory of root; remove it and try again")
    for uid in range(config.uid_base, config.uid_base + config.uid_slots):
        fd = os.open(lock_dir / str(uid), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)  # releases the lock
        return
    raise SandboxError(
        f"all {config.uid_slots} sandbox uids are in use; raise SandboxConfig.uid_slots or run fewer at once"
    )


def _kill_uid(uid: int, patience_s: float = 5.0) -> None:
    """SIGKILL every process of `uid` until none is left (zombies aside)."""
    deadline = time.monotonic() + patience_s
    while pids := live_pids((uid,)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise SandboxError(f"could not kill the processes of sandbox uid {uid}: {pids[:10]}")
        time.sleep(0.01)


def live_pids(uids: Collection[int], include_zombies: bool = False) -> list[int]:
    """Processes running under any of `uids` (zombies only when asked), read from /proc."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        zombie = fields.get("State", "").strip().startswith("Z")
        if int(fields.get("Uid", "-1").split()[0]) in uids and (include_zombies or not zombie):
            pids.append(int(name))
    return pids
