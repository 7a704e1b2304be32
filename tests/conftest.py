"""Shared fixtures: a real sshmonitord subprocess with a real sd_notify socket."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip on a developer box, but fail in CI: a missing real component is a CI defect."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(reason)


def _root_firewall() -> str | None:
    """This machine's own (root namespace) nftables ruleset, or None if nft is unusable."""
    import shutil

    if os.geteuid() != 0 or shutil.which("nft") is None:
        return None
    r = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=30)
    return r.stdout if r.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def root_firewall_untouched() -> Iterator[None]:
    """Fail the run if any test changed the machine's own firewall (it must never)."""
    before = _root_firewall()
    yield
    after = _root_firewall()
    assert before == after, (
        f"a test changed the root namespace's nftables ruleset!\nbefore:\n{before}\nafter:\n{after}"
    )


class NotifySocket:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, dict[str, str]]] = []

    def _drain(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return
        fields: dict[str, str] = {}
        for line in data.decode().splitlines():
            k, _, v = line.partition("=")
            fields[k] = v
        self.messages.append((time.monotonic(), fields))

    def wait_for(
        self, key: str, value: str | None = None, timeout: float = 10.0, after: int = 0
    ) -> dict[str, str]:
        """Wait for a message (index >= after) carrying key[=value]; return it."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            for i in range(seen, len(self.messages)):
                fields = self.messages[i][1]
                if key in fields and (value is None or fields[key] == value):
                    self.last_index = i
                    return fields
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} within {timeout}s; got {self.messages}")
            self._drain(min(left, 0.2))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


class DaemonProc:
    """A real sshmonitord subprocess; always killed and reaped by the fixture."""

    def __init__(
        self,
        tmp: Path,
        config_text: str,
        notify: NotifySocket | None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        wrap: list[str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.config_path = tmp / "sshmonitor.yaml"
        self.socket_path = tmp / "run" / "control.sock"
        self.state_dir = tmp / "state"
        self.write_config(config_text)
        self.log_path = tmp / f"daemon-{id(self)}.log"
        full_env = dict(os.environ)
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            full_env.pop(var, None)
        if notify is not None:
            full_env["NOTIFY_SOCKET"] = str(notify.path)
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                *(wrap or []),  # e.g. ip netns exec NS: the daemon inside a test namespace
                sys.executable,
                "-m",
                "sshmonitord",
                "--config",
                str(self.config_path),
                "--state-dir",
                str(self.state_dir),
                "--log-format",
                "console",
                *(args or []),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )

    def write_config(self, text: str) -> None:
        tmp = self.config_path.with_suffix(".new")
        head = f"control: {{socket: {self.socket_path}}}\n"
        if not re.search(r"^sources:", text, re.M):
            # Never follow this machine's own logs or journal from a test.
            head += f"sources: {{mode: file, files: [{self.tmp / 'auth.log'}]}}\n"
        if not re.search(r"^response:", text, re.M):
            # Never touch this machine's own firewall: tests that ban run in a namespace.
            head += "response: {backend: none}\n"
        tmp.write_text(head + text)
        tmp.replace(self.config_path)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.log_text()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from sshmonitord.cli import main; sys.exit(main())",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[object]:
    procs: list[DaemonProc] = []

    def start(
        config_text: str = "",
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        wrap: list[str] | None = None,
    ) -> DaemonProc:
        d = DaemonProc(tmp_path, config_text, notify, env, args, wrap)
        procs.append(d)
        return d

    yield start
    for d in procs:
        d.stop()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """One real PostgreSQL for the session (tests/pgserver.py), removed afterwards."""
    from pgserver import PgServer, have_psycopg, pg_bin

    need(pg_bin() is not None, "PostgreSQL is not installed (apt install postgresql)")
    need(have_psycopg(), "psycopg 3 is not installed (pip install 'psycopg>=3.1.7')")
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_db(pg_server: object) -> Iterator[str]:
    """A fresh database on the session's server; dropped afterwards. The server is started
    again first if an earlier test stopped it (an outage test that failed half-way)."""
    from pgserver import PgServer, unique_name

    server = pg_server
    assert isinstance(server, PgServer)
    if server.postmaster_pid() is None or not (server.data / "postmaster.pid").exists():
        server.start()
    name = unique_name("sshm")
    server.create_database(name)
    try:
        yield name
    finally:
        if server.postmaster_pid() is None:
            server.start()
        server.drop_database(name)
