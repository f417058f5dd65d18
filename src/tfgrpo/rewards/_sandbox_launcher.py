"""Sets up the sandbox and execs the untrusted program. Run by `sandbox.py` as `python -I -S this.py CONFIG`.

Standard library only, single-threaded, so forking here is safe. Process tree:

    launcher (host)           unshares namespaces, waits, writes status.json
      init (pid 1 of new ns)  builds a new root (a tmpfs holding only the interpreter, read-only, a
                              private /tmp, /proc and a few devices) and moves into it; reports the
                              program's exit status; then kills and reaps whatever the program left
                              (as pid 1, or as child subreaper where there is no pid namespace)
        program               rlimits, unprivileged uid, no_new_privs, then exec of the interpreter

The launcher and init die with SIGKILL as soon as their parent does (PR_SET_PDEATHSIG), so killing
the launcher's process group takes the whole tree down. Where the kernel refuses namespaces the
launcher refuses to run the program ("refused" in the status), unless the config allows running
unsandboxed; then the program runs with its uid and rlimits only, which the isolation list shows.
"""

import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC = 1, 2, 4, 8, 32, 4096, 8192, 16384
MS_PRIVATE, MNT_DETACH = 1 << 18, 2
# Flags of a mount that a read-only remount of a bind of it must keep (the kernel refuses to drop them).
KEPT_FLAGS = {
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: 1024,
    os.ST_NODIRATIME: 2048,
    os.ST_RELATIME: 1 << 21,
}
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
DEVICES = ("null", "zero", "full", "random", "urandom")
FIRST_PASSED_FD = 3

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


def take_passed_fds(fds):
    """Move the file descriptors the program is given to 3, 4, ... (in order), before anything else
    here opens a file; they stay open across exec."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
    for fd in fds:
        os.close(fd)
    for i, fd in enumerate(high):
        os.dup2(fd, FIRST_PASSED_FD + i, inheritable=True)
        os.close(fd)
    return list(range(FIRST_PASSED_FD, FIRST_PASSED_FD + len(fds)))


def unshare(cfg, isolation):
    """Enter new pid and network namespaces (the mount namespace is init's); OSError when refused."""
    flags = CLONE_NEWPID | (0 if cfg["network"] else CLONE_NEWNET)
    as_root = os.geteuid() == 0
    if not as_root:
        flags |= CLONE_NEWUSER
    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(flags), "unshare")
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


def bind(source, target, readonly=True):
    """Bind `source` (a file or directory) at `target`, read-only unless told otherwise."""
    os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
    if os.path.isdir(source):
        os.makedirs(target, 0o755, exist_ok=True)
    elif not os.path.exists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    mount(source, target, None, MS_BIND)
    if readonly:
        kept = os.statvfs(target).f_flag
        flags = sum(ms for st, ms in KEPT_FLAGS.items() if kept & st)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)


def expose(path, root, bound):
    """Make `path` lead, inside `root`, where it leads outside: each symbolic link on the way is copied,
    and the file or directory it ends at is bound read-only (unless one of `bound` holds it already)."""
    for _ in range(40):
        parts = [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            here = "/" + "/".join(parts[:i])
            if os.path.islink(here):
                target = os.readlink(here)
                if not os.path.lexists(root + here):
                    os.makedirs(os.path.dirname(root + here), 0o755, exist_ok=True)
                    os.symlink(target, root + here)
                path = os.path.normpath(os.path.join(os.path.dirname(here), target, *parts[i:]))
                break
        else:
            if os.path.exists(path) and not any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
                bind(path, root + path)
                bound.append(path)
            return
    raise OSError(f"too many symbolic links in {path}")


def setup_filesystem(cfg, owner, isolation):
    """In a new mount namespace, a new root on a small tmpfs holding only: the interpreter's files,
    read-only (`cfg["expose"]`, minus the `cfg["hide"]` directories, which are emptied), a private
    size-limited /tmp with the program in it, /proc, and /dev/null and friends. Everything else of
    the host is gone from the program's view. Returns the directory the program runs in."""
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    with open(os.path.join(cfg["workdir"], "main.py"), "rb") as f:
        program = f.read()
    os.umask(0o022)
    root = cfg["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    uid, gid = owner if owner is not None else (os.getuid(), os.getgid())
    os.mkdir(root + "/tmp")
    mount(
        "tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['disk_mb']}m,mode=0700,uid={uid},gid={gid}"
    )
    with open(root + "/tmp/main.py", "wb") as f:
        f.write(program)
    os.chown(root + "/tmp/main.py", uid, gid)
    bound: list[str] = []
    for path in cfg["expose"]:  # after /tmp: an interpreter in the host's /tmp (a venv there) is bound into it
        expose(path, root, bound)
    for path in cfg["hide"]:
        if os.path.isdir(root + path):
            mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "mode=0555,size=4k")
    for name in DEVICES:
        bind(f"/dev/{name}", f"{root}/dev/{name}", readonly=False)
    os.symlink("/tmp", root + "/dev/shm")
    os.mkdir(root + "/proc", 0o555)
    try:
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        isolation.append("private /proc")
    except OSError:
        pass  # e.g. in an unprivileged user namespace inside a container with masked /proc
    enter_root(root)
    isolation.append("private root (the interpreter read-only, /tmp, /proc, /dev/null and the like)")
    isolation.append(f"private /tmp (tmpfs, {cfg['disk_mb']} MB)")
    return "/tmp"


def enter_root(root):
    """Make `root` the file system root, with the old one detached (pivot_root), or, on a machine
    whose pivot_root number is not known here, moved over by chroot."""
    os.chdir(root)
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is not None:
        check(libc.syscall(number, b".", b"."), "pivot_root")
        check(libc.umount2(b".", MNT_DETACH), "umount the old root")
    else:
        mount(".", "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")


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
    for fd in cfg["passed_fds"]:  # only the program holds them, so its end is the other side's EOF
        os.close(fd)
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
        try:
            names = os.listdir("/proc")
        except FileNotFoundError:  # no /proc could be mounted: as pid 1 of the namespace, kill all of it
            names = []
            if os.getpid() == 1:
                os.kill(-1, signal.SIGKILL)
        for name in names:
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
    cfg["passed_fds"] = take_passed_fds(cfg["pass_fds"])
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    owner = (cfg["uid"], cfg["gid"]) if cfg["uid"] is not None else None
    isolation: list[str] = []
    # Without a uid of its own, RLIMIT_NPROC counts every process of the user: leave room for those.
    cfg["already_running"] = 0 if owner is not None else count_processes(os.getuid())
    try:
        unshare(cfg, isolation)
        namespaces = True
    except OSError as error:
        if not cfg["allow_unsandboxed"]:
            write_status(cfg["status_path"], {"refused": str(error)})
            return
        namespaces = False
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
    for fd in cfg["passed_fds"]:
        os.close(fd)
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
