"""A real PostgreSQL server for the test session, and the fixture that runs store tests on both engines.

The server (Debian's PostgreSQL 15: `initdb` and `pg_ctl` on PATH or under /usr/lib/postgresql/*/bin)
is made in a temporary directory and listens on 127.0.0.1 on a free port. PostgreSQL refuses to run as
root, so under root it runs as `nobody`. Each test gets a schema of its own in one database. Without the
binaries (or psycopg) the PostgreSQL side of a test is skipped, except under CI (`CI` set), where that is
a failure.
"""

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

import pytest


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}")
    pytest.skip(reason)


class PostgresServer:
    """One `initdb` cluster on 127.0.0.1, started and stopped with `pg_ctl`."""

    def __init__(self, initdb: str, pg_ctl: str) -> None:
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="tfgrpo-pg-"))
        self._user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self.data = self.dir / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run([initdb, "-D", str(self.data), "-U", "tfgrpo", "--auth=trust", "-E", "UTF8", "--no-sync"])
        # Durability of the server itself is not under test (the clients' is): no fsync, for speed.
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c full_page_writes=off -c max_connections=400"
        )
        self._run([pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o", options, "start"])
        self._schemas = itertools.count()
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE tfgrpo_test")

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


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server (started on first use, stopped at the end)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql-15")
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'tfgrpo[postgres]'")
    server = PostgresServer(initdb, pg_ctl)  # type: ignore[arg-type]
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path) -> str:
    """Where to make a library, on each engine: an SQLite path, or the URL of an empty PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "lib.db")
    return request.getfixturevalue("postgres_server").new_url()


def raw_query(target: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows read straight through the engine's own driver (not through tfgrpo), `?` placeholders."""
    if target.startswith("postgresql://"):
        import psycopg

        base, _, schema = target.partition("?schema=")
        with psycopg.connect(base, autocommit=True) as conn:
            if schema:
                conn.execute(f'SET search_path TO "{schema}"')
            return [tuple(row) for row in conn.execute(sql.replace("?", "%s"), params or None).fetchall()]
    import sqlite3

    db = sqlite3.connect(target)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()
