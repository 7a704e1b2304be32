"""A real PostgreSQL server of the test suite's own (Debian's ``postgresql`` package).

Recipe: /work/shared/REAL-COMPONENTS.md ("PostgreSQL (fleet)"). ``initdb`` and ``pg_ctl`` are
not on PATH on a fresh machine: they are found under /usr/lib/postgresql/<version>/bin.
initdb refuses root, so as root the server runs as the ``postgres`` user. The data directory
and the Unix socket live in a unique temp directory; no TCP port is opened
(``listen_addresses=''``), so nothing is shared with anything else on the machine.

Authentication is ``trust`` for every role: row-level security and grants are enforced per
*role*, whatever the authentication, and that is what the tests check. Roles are
cluster-wide: tests that create roles give them unique names (:func:`unique_name`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    base = Path("/usr/lib/postgresql")
    if not base.is_dir():
        return None
    versions = sorted(
        (p for p in base.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    return versions[-1] / "bin" if versions else None


def have_psycopg() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def unique_name(prefix: str) -> str:
    """A role or database name no other test (or run) uses."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}".lower()


class PgServer:
    """One PostgreSQL cluster in a temp directory; :meth:`cleanup` removes every trace."""

    def __init__(self, port: int = 5432, options: str = "") -> None:
        binary = pg_bin()
        if binary is None:
            raise RuntimeError("PostgreSQL is not installed (apt install postgresql)")
        self.bin = binary
        self.port = port
        self.options = options  # more postgres -c settings, e.g. "-c max_connections=400"
        self.as_root = os.geteuid() == 0
        self.superuser = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        # Short: a Unix socket path must fit in ~107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="sshm-pg-", dir="/tmp"))
        self.socket_dir = self.dir
        self.data = self.dir / "data"
        self.logfile = self.dir / "log"
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.dir.chmod(0o755)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "--no-sync",
                   "-U", self.superuser])

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise RuntimeError(f"{argv[-1]} failed: {res.stdout}{res.stderr}")
        return res

    def start(self) -> None:
        opts = f"-k {self.socket_dir} -c listen_addresses= -c fsync=off -p {self.port}"
        if self.options:
            opts += " " + self.options
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                   "-l", str(self.logfile), "-o", opts, "start"])

    def stop(self) -> None:
        """A fast shutdown (connections are cut): what an outage looks like to a client."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop"],
                  check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill9(self) -> None:
        """SIGKILL the postmaster and its children: a crash. :meth:`start` recovers."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        for p in [pid, *(int(x) for x in children.stdout.split())]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Children of a killed postmaster exit on their own once they notice; wait for them
        # so the next start finds the shared memory free.
        while time.monotonic() < deadline and subprocess.run(
            ["pgrep", "-f", f"postgres.*{self.data}"], capture_output=True
        ).returncode == 0:
            time.sleep(0.05)

    def url(self, role: str | None = None, db: str = "postgres") -> str:
        return f"postgresql://{role or self.superuser}@/{db}?host={self.socket_dir}&port={self.port}"

    def execute(self, sql: str, db: str = "postgres", args: Any = None) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url(db=db), autocommit=True) as conn:
            cur = conn.execute(sql, args)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str, owner: str | None = None) -> None:
        own = f' OWNER "{owner}"' if owner else ""
        self.execute(f'CREATE DATABASE "{name}"{own}')

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        self.stop()
        if self.postmaster_pid() is not None and (self.data / "postmaster.pid").exists():
            self.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)
