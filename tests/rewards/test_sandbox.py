"""The sandbox against hostile programs: each comes back as a failed result with the right outcome,
nothing survives it, nothing outside its own directory is touched, and the caller goes on."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from support.rewards import sandbox_pids
from tfgrpo.errors import ConfigError
from tfgrpo.rewards import FunctionReward, SandboxConfig, SandboxError, run_python
from tfgrpo.rewards.sandbox import interpreter_view

# Uids of this test process's own (the default range starts at 1_900_000): the processes these tests find
# under them are theirs, whatever other test processes (xdist workers) run in their sandboxes meanwhile.
UIDS = 2_000_000 + 64 * (os.getpid() % 100_000)
LIMITS = SandboxConfig(timeout_s=10, memory_mb=256, max_processes=8, max_output_bytes=50_000, uid_base=UIDS)
SHORT = dataclasses.replace(LIMITS, timeout_s=2)  # for programs that are meant to time out
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="per-run uids are used only when running as root")


def run(code: str, config: SandboxConfig = LIMITS):
    return run_python(textwrap.dedent(code), config)


def assert_still_works() -> None:
    """The sandbox (and this process) carry on normally after a hostile run."""
    result = run("print('still here')")
    assert result.passed and result.stdout == "still here\n"


def test_a_good_program_passes_and_its_output_comes_back():
    result = run("import sys; print('out'); print('err', file=sys.stderr)")
    assert result.passed
    assert (result.outcome, result.exit_code, result.signal) == ("ok", 0, None)
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.reason == "ok"


def test_the_program_sees_a_scrubbed_environment_and_a_private_home(monkeypatch):
    monkeypatch.setenv("TFGRPO_SECRET_TOKEN", "do-not-leak")
    result = run(
        """
        import json, os
        print(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "files": os.listdir(".")}))
        """
    )
    seen = json.loads(result.stdout)
    assert "TFGRPO_SECRET_TOKEN" not in seen["env"]
    assert seen["env"]["HOME"] == seen["cwd"] == seen["env"]["TMPDIR"]
    # Only the program, plus the way back to the interpreter when it lives inside /tmp (a venv there).
    interpreter_in_tmp = {p.split("/")[2] for p in (sys.prefix, sys.base_prefix) if p.startswith("/tmp/")}
    assert sorted(seen["files"]) == sorted({"main.py", *interpreter_in_tmp})


def test_an_infinite_loop_times_out():
    result = run("while True: pass", SHORT)
    assert (result.passed, result.outcome) == (False, "timeout")
    assert "2 s" in result.message
    assert_still_works()


def test_a_child_that_ignores_sigterm_and_hangs_is_killed():
    result = run(
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(1000)
        """,
        SHORT,
    )
    assert result.outcome == "timeout"
    assert_still_works()


def test_cpu_time_is_limited():
    result = run("while True: pass", SandboxConfig(timeout_s=30, cpu_s=1))
    assert result.outcome == "cpu_limit"
    assert result.signal == 24  # SIGXCPU


@pytest.mark.parametrize(
    "code",
    ["x = bytearray(10 ** 10)", "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))"],
    ids=["one-huge-allocation", "growing"],
)
def test_a_memory_hog_is_stopped(code):
    result = run(code)
    assert result.outcome == "memory"
    assert "MemoryError" in result.message
    assert_still_works()


def test_a_fork_bomb_is_stopped_and_nothing_of_it_survives():
    result = run("import os\nwhile True:\n    os.fork()")
    assert not result.passed
    assert result.outcome in ("process_limit", "timeout")
    if os.geteuid() == 0:
        assert sandbox_pids(LIMITS) == []
    assert_still_works()


def test_a_fork_bomb_that_swallows_errors_runs_into_the_timeout_and_is_killed():
    result = run(
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        SHORT,
    )
    assert result.outcome == "timeout"
    if os.geteuid() == 0:
        assert sandbox_pids(LIMITS) == []
    assert_still_works()


def test_the_process_limit_counts_every_process():
    result = run(
        """
        import os, time
        started = 0
        for _ in range(50):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            started += 1
        print(started)
        """
    )
    # The program itself counts: with max_processes=8 it may start at most 7 more (as an ordinary
    # user the limit also leaves room for the user's other processes, so it is only an upper bound).
    started = int(result.stdout)
    assert 1 <= started <= LIMITS.max_processes - 1
    if os.geteuid() == 0:
        assert started == LIMITS.max_processes - 1
    assert result.passed  # it exited 0; its sleeping children died with it
    if os.geteuid() == 0:
        assert sandbox_pids(LIMITS) == []


def test_a_daemonized_grandchild_does_not_outlive_the_run():
    result = run(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        print("parent done")
        """
    )
    assert result.passed and result.stdout == "parent done\n"
    if os.geteuid() == 0:
        assert sandbox_pids(LIMITS) == []


def test_huge_output_is_capped():
    result = run("while True:\n    print('x' * 10_000)")
    assert result.outcome == "output_limit"
    assert len(result.stdout) <= LIMITS.max_output_bytes
    assert_still_works()


def test_files_written_are_capped_too():
    result = run("open('big', 'wb').write(b'x' * 200_000)")
    assert result.outcome == "exception"
    assert "File too large" in result.message


def test_the_network_is_unreachable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
        if "network namespace" not in result.isolation:
            pytest.skip("this platform refuses network namespaces")
        assert result.outcome == "network"
        assert "unreachable" in result.message
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


def test_name_resolution_fails_as_network():
    result = run("import socket\nsocket.getaddrinfo('example.com', 80)")
    assert result.outcome == "network"


def test_the_network_can_be_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        config = SandboxConfig(timeout_s=5, network=True)
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).close()", config)
        assert result.passed, result.reason
        connection, _ = server.accept()
        connection.close()


@as_root
def test_destructive_code_cannot_touch_anything_outside_its_directory(tmp_path, monkeypatch):
    # A fake home (what HOME points at in this process) and a victim directory outside /tmp: neither is
    # in the sandbox's root. What it can see (the interpreter) it cannot change.
    fake_home = tmp_path / "home"
    fake_home.mkdir()
    (fake_home / "sentinel").write_text("keep me")
    monkeypatch.setenv("HOME", str(fake_home))
    parent = next((d for d in ("/srv", "/mnt", "/opt") if os.path.isdir(d) and os.access(d, os.W_OK)), None)
    if parent is None:
        pytest.skip("no writable directory outside /tmp to hold the victim")
    victim = Path(tempfile.mkdtemp(prefix="tfgrpo-test-victim-", dir=parent))
    escape = Path(tempfile.gettempdir(), f"tfgrpo-escape-{uuid.uuid4().hex}")
    try:
        victim.chmod(0o755)
        (victim / "sentinel").write_text("keep me too")
        result = run(
            f"""
            import os, shutil
            os.system("rm -rf ~ {fake_home} {victim} 2>/dev/null")
            for attempt in (lambda: shutil.rmtree({str(victim)!r}),
                            lambda: os.remove({str(victim / "sentinel")!r}),
                            lambda: open({str(victim / "new")!r}, "w"),
                            lambda: open(os.__file__, "a"),
                            lambda: os.remove(os.__file__)):
                try:
                    attempt()
                    print("done")
                except OSError as error:
                    print(type(error).__name__)
            open({str(escape)!r}, "w").write("escaped")
            print(os.path.exists({str(victim / "sentinel")!r}), os.path.exists({str(fake_home)!r}))
            """
        )
        assert result.passed, result.reason
        # It could not even see the victim or the fake home; the standard library is read-only.
        seen = result.stdout.split()
        assert seen[:3] + seen[5:] == ["FileNotFoundError"] * 3 + ["False", "False"]
        assert set(seen[3:5]) <= {"PermissionError", "OSError"}, seen
        assert (fake_home / "sentinel").read_text() == "keep me"
        assert (victim / "sentinel").read_text() == "keep me too"
        assert sorted(os.listdir(victim)) == ["sentinel"]
        assert not escape.exists()
    finally:
        shutil.rmtree(victim)
        escape.unlink(missing_ok=True)


def test_exceptions_are_classified():
    cases = {
        "assert 1 == 2, 'one is not two'": ("assertion", "AssertionError: one is not two"),
        "raise ValueError('bad value')": ("exception", "ValueError: bad value"),
        "def f(:\n    pass": ("exception", "SyntaxError: invalid syntax"),
        "import sys; sys.exit(3)": ("exit", "exit status 3"),
        "import ctypes; ctypes.string_at(0)": ("crash", "killed by SIGSEGV"),
    }
    for code, (outcome, message) in cases.items():
        result = run(code)
        assert (result.outcome, result.message) == (outcome, message), code
        assert not result.passed


def test_the_program_cannot_signal_the_caller():
    result = run(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)")
    assert result.outcome == "exception"  # ProcessLookupError: this process is not visible to it
    assert_still_works()


def test_concurrent_runs_do_not_disturb_each_other():
    # A fork bomb next to ordinary programs: with a uid per run, it cannot use up their process slots.
    programs = ["import os\nwhile True:\n    os.fork()"] + ["import os; os.fork(); print('ok')"] * 5
    reward = FunctionReward(lambda prompt, code, sample: float(run_python(code, LIMITS).passed))
    scores = reward.score_batch([("", code, {}) for code in programs], max_workers=len(programs))
    assert [s.value for s in scores] == [0.0] + [1.0] * 5


def test_a_missing_interpreter_is_a_sandbox_error_not_a_failed_program():
    with pytest.raises(SandboxError, match="interpreter"):
        run_python("print(1)", SandboxConfig(python="/nonexistent/python3"))


def test_bad_limits_are_config_errors():
    for bad in ({"timeout_s": 0}, {"memory_mb": -1}, {"max_processes": 0}, {"cpu_s": 0}, {"uid_base": 0}):
        with pytest.raises(ConfigError):
            SandboxConfig(**bad)


SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
_TEXT = {"capture_output": True, "text": True}


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not SYSTEM_PYTHON,
    reason="needs root (to become an ordinary user with setpriv) and a system python3",
)
def test_as_an_ordinary_user_the_sandbox_still_contains_the_program():
    # The library itself running as 'nobody' (no uid switching possible): user namespaces take over.
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 10))"], **_TEXT)
    if version.stdout.strip() != "True":
        pytest.skip("the system python3 is older than 3.10")
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parents[2] / "src")!r})
        from tfgrpo.rewards.sandbox import SandboxConfig, run_python
        config = SandboxConfig(timeout_s=2, max_processes=8)
        programs = ["print('hi')", "while True: pass", "import os\\nwhile True:\\n    os.fork()",
                    "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)"]
        print(json.dumps([run_python(p, config).outcome for p in programs]))
        """
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON, "-I", "-c", script],
        cwd="/",
        timeout=60,
        **_TEXT,
    )
    if "SandboxError" in done.stderr:
        pytest.skip(f"unprivileged namespaces are not available here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout)
    assert outcomes[:2] == ["ok", "timeout"]
    assert outcomes[2] in ("process_limit", "timeout")
    assert outcomes[3] == "network"


without_sys_admin = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not SYSTEM_PYTHON,
    reason="needs root (to drop CAP_SYS_ADMIN with setpriv) and a system python3",
)


def run_without_sys_admin(script: str):
    """Run `script` as root without CAP_SYS_ADMIN (as in many containers), where the kernel refuses to
    create namespaces: the real failure, not a stand-in. It prints its findings as JSON."""
    preamble = f"import json, sys\nsys.path.insert(0, {str(Path(__file__).parents[2] / 'src')!r})\n"
    done = subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", SYSTEM_PYTHON, "-I", "-c", preamble + script],
        timeout=120,
        **_TEXT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@without_sys_admin
def test_without_namespaces_the_sandbox_refuses_to_run_the_program():
    witness = Path(tempfile.gettempdir(), f"tfgrpo-unsandboxed-{uuid.uuid4().hex}")
    script = textwrap.dedent(
        f"""
        from tfgrpo.errors import SandboxError
        from tfgrpo.rewards import SandboxConfig, UnitTestReward, run_python
        config = SandboxConfig(timeout_s=5, python={SYSTEM_PYTHON!r})
        errors = []
        try:
            run_python("open({str(witness)!r}, 'w').write('ran')", config)
        except SandboxError as error:
            errors.append(str(error))
        sample = {{"prompt": "def f():\\n", "test": "def check(c):\\n    assert c() == 1\\n", "entry_point": "f"}}
        try:
            UnitTestReward(config).score("", "    open({str(witness)!r}, 'w').write('ran')\\n    return 1", sample)
        except SandboxError as error:
            errors.append(str(error))
        print(json.dumps(errors))
        """
    )
    try:
        errors = run_without_sys_admin(script)
        assert len(errors) == 2
        assert all("refused to create the sandbox's namespaces" in e and "allow_unsandboxed=True" in e for e in errors)
        assert not witness.exists()  # the program was never run
    finally:
        witness.unlink(missing_ok=True)


@without_sys_admin
def test_allowed_to_run_unsandboxed_the_uid_and_rlimits_still_contain_the_program():
    script = textwrap.dedent(
        f"""
        from tfgrpo.rewards.sandbox import SandboxConfig, run_python
        config = SandboxConfig(timeout_s=2, max_processes=8, python={SYSTEM_PYTHON!r}, allow_unsandboxed=True,
                               uid_base={UIDS})
        programs = ["import os; print(os.getuid())", "while True: pass",
                    "import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    time.sleep(100)",
                    "import os\\nwhile True:\\n    os.fork()"]
        results = [run_python(p, config) for p in programs]
        print(json.dumps([[r.outcome, r.stdout.strip(), "network namespace" in r.isolation] for r in results]))
        """
    )
    results = run_without_sys_admin(script)
    assert results[0] == ["ok", str(LIMITS.uid_base), False]
    assert [r[0] for r in results[1:3]] == ["timeout", "ok"]
    assert results[3][0] in ("process_limit", "timeout")
    assert sandbox_pids(LIMITS, zombies=True) == []


def test_sys_executable_is_the_default_interpreter():
    result = run("import sys; print(sys.version_info[:2])")
    assert result.stdout.strip() == str(tuple(sys.version_info[:2]))


def test_the_host_files_are_not_there_only_the_interpreter_and_tmp():
    secrets = ["/etc/passwd", "/etc/shadow", __file__, str(Path(__file__).parents[2] / "pyproject.toml")]
    secrets += [str(p) for d in ("/root", "/home") if os.path.isdir(d) for p in Path(d).glob("*") if p.is_file()][:20]
    # Every file it can see must belong to the interpreter: its executable, standard library, libraries.
    exposed, _ = interpreter_view(os.path.abspath(sys.executable))
    allowed = sorted({os.path.realpath(p) for p in exposed} | set(exposed))
    result = run(
        f"""
        import json, os
        tried = {{}}
        for path in {secrets!r}:
            try:
                open(path).close()
                tried[path] = "read"
            except OSError as error:
                tried[path] = type(error).__name__
        seen, strays = 0, []
        for top in sorted(set(os.listdir("/")) - {{"proc", "dev", "tmp"}}):
            for here, dirs, files in os.walk("/" + top):
                for path in (os.path.join(here, name) for name in files):
                    seen += 1
                    if not path.startswith(tuple({allowed!r})) and os.path.realpath(path) not in {allowed!r}:
                        strays.append(path)
        home = os.listdir("/home") if os.path.isdir("/home") else []
        print(json.dumps({{"tried": tried, "seen": seen, "strays": strays[:20], "home": home}}))
        """
    )
    assert result.passed, result.reason
    found = json.loads(result.stdout)
    assert found["tried"] == dict.fromkeys(secrets, "FileNotFoundError")
    assert found["home"] == []
    assert found["seen"] > 100 and found["strays"] == []
    assert "private root (the interpreter read-only, /tmp, /proc, /dev/null and the like)" in result.isolation


@pytest.fixture(scope="module")
def venv_in_tmp():
    """A virtual environment under /tmp (as in CI) with a package of its own in site-packages."""
    with tempfile.TemporaryDirectory(prefix="tfgrpo-test-venv-") as base:
        os.chmod(base, 0o755)
        venv = Path(base, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        site = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            **_TEXT,
        ).stdout.strip()
        Path(site, "tfgrpo_probe.py").write_text("ANSWER = 42\n")
        yield venv / "bin" / "python"


def test_a_venv_under_tmp_runs_and_its_packages_are_hidden_unless_asked_for(venv_in_tmp):
    program = (
        "import sys\ntry:\n    import tfgrpo_probe\n    print(sys.prefix, tfgrpo_probe.ANSWER)\nexcept ImportError:\n"
    )
    program += "    print(sys.prefix, 'hidden')\n"
    config = dataclasses.replace(LIMITS, python=str(venv_in_tmp))
    hidden = run_python(program, config)
    shown = run_python(program, dataclasses.replace(config, site_packages=True))
    assert (hidden.outcome, shown.outcome) == ("ok", "ok"), hidden.stderr + shown.stderr
    prefix = str(venv_in_tmp.parents[1])
    assert hidden.stdout.split() == [prefix, "hidden"]
    assert shown.stdout.split() == [prefix, "42"]
