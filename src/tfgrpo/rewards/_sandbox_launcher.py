"""Sets up the sandbox and execs the untrusted program. Run by `sandbox.py` as `python -I -S this.py CONFIG`.

Standard library only, single-threaded, so forking here is safe. Process tree:

    launcher (host)           unshares namespaces, waits, writes status.json
      init (pid 1 of new ns)  mounts a private /tmp and /proc; reports the program's exit status; then
                              kills and reaps whatever the program left (as pid 1, or as child
                              subreaper where there is no pid namespace, it inherits every orphan)
        program               rlimits, unprivileged uid, no_new_privs, then exec of the interpreter

The launcher and init die with SIGKILL as soon as their parent does (PR_SET_PDEATHSIG), so killing
the launcher's process group takes the whole tree down. Every step that the platform refuses is
skipped and left out of the reported isolation list; the caller decides what is acceptable.
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
# World-writable places an unprivileged program could litter; they all become the private /tmp.
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def report(fd, **message):
    os.write(fd, (json.dumps(message) + "\n").encode())


def parent_gone(alive_fd):
    # The parent holds the write end of this pipe and never writes: readable means EOF, i.e. it died.
    return bool(select.select([alive_fd], [], [], 0)[0])


def unshare(cfg, isolation):
    """Enter new pid and network namespaces (the mount namespace is init's); returns whether it worked."""
    flags = CLONE_NEWPID | (0 if cfg["network"] else CLONE_NEWNET)
    as_root = os.geteuid() == 0
    if not as_root:
        flags |= CLONE_NEWUSER
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(flags) != 0:
        return False
    if not as_root:  # map ourselves to ourselves, so files and permissions look as outside
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
        isolation.append("user namespace")
    isolation.append("pid namespace")
    if not cfg["network"]:
        isolation.append("network namespace")
    return True


def make_reachable(paths):
    """Mount a tmpfs over each directory the sandbox user cannot traverse (e.g. /root when the
    interpreter lives in /root/.pyenv) and bind back only `paths` at their old places."""
    blocked = {}
    for path in paths:
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            ancestor = "/".join(parts[:i])
            if not os.stat(ancestor).st_mode & 0o001:
                if ancestor != path:
                    blocked.setdefault(ancestor, []).append(path)
                break
    fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for paths_ in blocked.values() for path in paths_}
    for ancestor, inner in blocked.items():
        mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for path in inner:
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fds[path]}", path, None, MS_BIND | MS_REC)
    return sorted(blocked)


def setup_filesystem(cfg, owner, isolation):
    """In a new mount namespace: private /proc and a size-limited tmpfs as /tmp (also over the other
    shared writable dirs), with the program in it. Returns the directory the program runs in."""
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        isolation.append("private /proc")
    except OSError:
        pass  # e.g. in an unprivileged user namespace inside a container with masked /proc
    if owner is not None:
        hidden = make_reachable(cfg["reachable"])
        if hidden:
            isolation.append("hidden: " + ", ".join(hidden))
    with open(os.path.join(cfg["workdir"], "main.py"), "rb") as f:
        program = f.read()
    # An interpreter (e.g. a virtual environment) inside /tmp would vanish under the private /tmp:
    # hold it now and bind it back afterwards.
    under_tmp = {
        path: os.open(path, os.O_PATH | os.O_DIRECTORY)
        for path in cfg["reachable"]
        if any(path == d or path.startswith(d + "/") for d in SHARED_WRITABLE)
    }
    uid, gid = owner if owner is not None else (os.getuid(), os.getgid())
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['disk_mb']}m,mode=0700,uid={uid},gid={gid}")
    with open("/tmp/main.py", "wb") as f:
        f.write(program)
    os.chown("/tmp/main.py", uid, gid)
    tmp_fd = os.open("/tmp", os.O_PATH | os.O_DIRECTORY)
    for path in SHARED_WRITABLE[1:]:
        if os.path.isdir(path) and not os.path.islink(path) and os.stat(path).st_mode & 0o002:
            mount(f"/proc/self/fd/{tmp_fd}", path, None, MS_BIND)
    for path, fd in under_tmp.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    isolation.append(f"private /tmp (tmpfs, {cfg['disk_mb']} MB)")
    return "/tmp"


def count_processes(uid):
    n = 0
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/status") as f:
                n += any(line.startswith("Uid:") and int(line.split()[1]) == uid for line in f)
        except (OSError, ValueError):
            continue
    return n


def run_program(cfg, owner, home, alive_fd, report_fd, isolation):
    limits = cfg["limits"]
    mem = limits["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_output_bytes"] + 1,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    nproc = limits["max_processes"] + cfg["already_running"]
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    isolation.append("rlimits")
    if owner is not None:
        os.setgroups([])
        os.setgid(owner[1])
        os.setuid(owner[0])
        isolation.append(f"uid {owner[0]}")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    isolation.append("no_new_privs")
    argv = cfg["argv"]
    if not os.access(argv[0], os.X_OK) or not os.access(home, os.W_OK | os.X_OK):
        raise PermissionError(f"the sandbox user cannot run {argv[0]} in {home}")
    if parent_gone(alive_fd):
        os._exit(1)
    os.chdir(home)
    env = dict(cfg["env"], HOME=home, TMPDIR=home)
    report(report_fd, isolation=isolation)
    os.execve(argv[0], argv, env)


def init_process(cfg, owner, namespaces, alive_fd, report_fd, isolation):
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")
    if parent_gone(alive_fd):
        os._exit(1)
    home = setup_filesystem(cfg, owner, isolation) if namespaces else cfg["workdir"]
    program_alive_r, program_alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(program_alive_w)
            run_program(cfg, owner, home, program_alive_r, report_fd, isolation)
        except BaseException as error:  # noqa: BLE001 - report any setup failure, then go
            report(report_fd, error=f"{type(error).__name__}: {error}")
        os._exit(127)
    while True:  # reap orphans until the program itself is done
        try:
            child, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if child == pid:
            break
    if os.WIFSIGNALED(status):
        report(report_fd, signal=os.WTERMSIG(status))
    else:
        report(report_fd, exit_code=os.WEXITSTATUS(status))
    kill_children()
    os._exit(0)


def kill_children():
    """SIGKILL and reap every child until none is left (orphans keep arriving as their parents die)."""
    me = str(os.getpid())
    while True:
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent = f.read().rsplit(")", 1)[1].split()[1]
                if parent == me:
                    os.kill(int(name), signal.SIGKILL)
            except (OSError, IndexError, ValueError):
                continue
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main():
    cfg = json.loads(sys.argv[1])
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    owner = (cfg["uid"], cfg["gid"]) if cfg["uid"] is not None else None
    isolation = []
    # Without a uid of its own, RLIMIT_NPROC counts every process of the user: leave room for those.
    cfg["already_running"] = 0 if owner is not None else count_processes(os.getuid())
    namespaces = unshare(cfg, isolation)
    alive_r, alive_w = os.pipe()
    report_r, report_w = os.pipe()  # close-on-exec: the exec closes it, the launcher sees EOF
    pid = os.fork()
    if pid == 0:
        try:
            os.close(alive_w)
            os.close(report_r)
            init_process(cfg, owner, namespaces, alive_r, report_w, isolation)
        except BaseException as error:  # noqa: BLE001
            report(report_w, error=f"{type(error).__name__}: {error}")
        os._exit(127)
    os.close(report_w)
    os.close(alive_r)
    # Save each report as it comes, so a run killed on timeout still tells what isolation it had.
    status, pending = {}, b""
    while chunk := os.read(report_r, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            status.update(json.loads(line))
        write_status(cfg["status_path"], status)
    os.waitpid(pid, 0)


def write_status(path, status):
    with open(path + ".part", "w") as f:
        json.dump(status, f)
    os.rename(path + ".part", path)


if __name__ == "__main__":
    main()
