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


def _proc_state(pid: int) -> str | None:
    """The process's state letter from /proc (``Z`` = zombie), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the state follows its last ")".
    return stat.rpartition(")")[2].split()[0]


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie. PID 1 of some machines (CI's among them) does not
    reap orphans, so a killed postmaster stays a zombie there and ``kill -0`` still succeeds."""
    return _proc_state(pid) not in (None, "Z", "X")


def _shm_attached(shmid: int) -> int | None:
    """How many processes are attached to System V segment ``shmid`` (None: no such segment)."""
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        if len(cols) > 6 and cols[1] == str(shmid):
            return int(cols[6])
    return None


class PgServer:
    """One PostgreSQL cluster in a temp directory; :meth:`cleanup` removes every trace.

    ``initdb`` runs in the constructor (~1 s); :meth:`start` / :meth:`stop` take ~0.1 s each.
    """

    def __init__(self, port: int = 5432, options: str = "") -> None:
        binary = pg_bin()
        if binary is None:
            raise RuntimeError("PostgreSQL is not installed (apt install postgresql)")
        self.bin = binary
        # Only names the socket (.s.PGSQL.<port>) and the shared memory key: no TCP is opened,
        # so servers of several runs never collide on it.
        self.port = port
        self.options = options  # more postgres -c settings, e.g. "-c max_connections=400"
        self.as_root = os.geteuid() == 0
        self.superuser = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        # Short: a Unix socket path must fit in ~107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="sshm-pg-", dir="/tmp"))
        self.socket_dir = self.dir
        self.data = self.dir / "data"
        self.logfile = self.dir / "log"
        try:
            if self.as_root:
                pw = pwd.getpwnam("postgres")
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.dir.chmod(0o755)
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                       "--no-sync", "-U", self.superuser])
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=90)
        if check and res.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed: {res.stdout}{res.stderr}\n"
                f"server log (end):\n{self.read_log()[-2000:]}"
            )
        return res

    def read_log(self) -> str:
        """The server's log so far (pg_ctl -l): startup, recovery and shutdown messages."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        """Start and wait until it accepts connections (after :meth:`kill9`: crash recovery)."""
        opts = f"-k {self.socket_dir} -c listen_addresses= -c fsync=off -p {self.port}"
        if self.options:
            opts += " " + self.options
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                   "-l", str(self.logfile), "-o", opts, "start"])

    def stop(self) -> None:
        """A fast shutdown (connections are cut): what an outage looks like to a client.
        Does nothing if the server is not running."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                   "-m", "fast", "stop"], check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def postmaster_pid(self) -> int | None:
        """The PID in data/postmaster.pid (present while running), or None."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def _shmid(self) -> int | None:
        """The System V segment the postmaster recorded (line 7 of postmaster.pid: key, id)."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            return int(lines[6].split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def kill9(self) -> None:
        """SIGKILL the postmaster and its children: a crash. :meth:`start` recovers.

        Returns once none of them runs any more and nothing is attached to the old shared
        memory. The stale lock files (postmaster.pid and the socket's .lock) are removed: where
        PID 1 does not reap orphans the killed postmaster stays a zombie, and postgres refuses
        to start while the PID in them answers ``kill -0`` ("lock file already exists").
        Recovery does not depend on them: postgres sees the unclean shutdown in pg_control and
        replays the WAL ("automatic recovery in progress" in :meth:`read_log`).
        """
        pid = self.postmaster_pid()
        if pid is None:
            return
        shmid = self._shmid()
        from realsshd import child_pids

        victims = [pid, *child_pids(pid)]
        for p in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            any(_alive(p) for p in victims)
            or (shmid is not None and (_shm_attached(shmid) or 0) > 0)
        ):
            time.sleep(0.02)
        if any(_alive(p) for p in victims):
            raise RuntimeError(f"PostgreSQL processes {victims} survived SIGKILL")
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        (self.socket_dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)  # same check
        # The next start would recycle the orphaned segment; remove it now so a kill9 that is
        # never followed by a start (a test's last step) leaks nothing.
        if shmid is not None and _shm_attached(shmid) == 0:
            subprocess.run(["ipcrm", "-m", str(shmid)], capture_output=True, check=False)

    def url(self, role: str | None = None, db: str = "postgres") -> str:
        """A libpq URL over the Unix socket; ``role`` defaults to :attr:`superuser`."""
        who = role or self.superuser
        return f"postgresql://{who}@/{db}?host={self.socket_dir}&port={self.port}"

    def execute(self, sql: str, db: str = "postgres", args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser, autocommit; its rows (or [])."""
        import psycopg

        with psycopg.connect(self.url(db=db), autocommit=True) as conn:
            cur = conn.execute(sql, args)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str, owner: str | None = None) -> None:
        own = f' OWNER "{owner}"' if owner else ""
        self.execute(f'CREATE DATABASE "{name}"{own}')

    def drop_database(self, name: str) -> None:
        """Drop it even with sessions still open; never raises (teardown)."""
        with contextlib.suppress(Exception):
            self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        """Stop (killing it if a fast stop does not end it) and remove the temp directory."""
        self.stop()
        if self.is_running():
            self.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)
