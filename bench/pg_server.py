"""A throwaway PostgreSQL server for benchmarks and tests: `initdb` + `pg_ctl` in a temporary directory,
listening on 127.0.0.1 on a free port (PostgreSQL refuses to run as root, so under root it runs as
`nobody`). Debian's server binaries are found on PATH or under /usr/lib/postgresql/*/bin."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """One cluster, started at construction and stopped by `stop()`. `fast=True`: no fsync on the server
    (for tests, where the server's own durability is not under test); the benchmarks keep the defaults."""

    def __init__(self, fast: bool = False) -> None:
        initdb, self.pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql-15")
        self.dir = Path(tempfile.mkdtemp(prefix="tfgrpo-pg-"))
        self._user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self.data = self.dir / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        try:
            self._run([initdb, "-D", str(self.data), "-U", "tfgrpo", "--auth=trust", "-E", "UTF8", "--no-sync"])
            options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=400"
            if fast:
                options += " -c fsync=off -c full_page_writes=off"
            self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o", options, "start"])
            self._run_sql("CREATE DATABASE tfgrpo_test")
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self._schemas = itertools.count()

    def _run(self, command: list[str]) -> None:
        user = self._user

        def drop_privileges() -> None:
            if user is not None:
                os.setgid(user.pw_gid)
                os.setgroups([])
                os.setuid(user.pw_uid)

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.dir)}
        result = subprocess.run(
            command, preexec_fn=drop_privileges, env=env, cwd=self.dir, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}{tail}")

    def _run_sql(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def url(self, database: str = "tfgrpo_test", schema: str | None = None) -> str:
        query = f"?schema={schema}" if schema else ""
        return f"postgresql://tfgrpo@127.0.0.1:{self.port}/{database}{query}"

    def new_url(self) -> str:
        """A URL of a schema nobody used yet: an empty place for a library."""
        return self.url(schema=f"t{next(self._schemas)}")

    def stop(self) -> None:
        try:
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
