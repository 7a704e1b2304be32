"""A real OpenSSH server logging to a real, private rsyslog: real auth.log lines for tests.

Recipe: /work/shared/REAL-COMPONENTS.md ("OpenSSH server", "A classic auth.log from a private
syslog socket", "Process hygiene"). In short:

* ``rsyslogd -n`` listens on a private imuxsock socket ``$R/log.sock`` (never the machine's
  /dev/log) and writes ``auth,authpriv.*`` to ``$R/auth.log`` in the classic format and
  everything to ``$R/all.log`` with ISO 8601 stamps;
* ``sshd -D`` runs in its own mount namespace whose /dev is a private tmpfs with ``/dev/log``
  bound to ``$R/log.sock`` — and in its own PID namespace with sshd as its init, so every
  session process it leaves behind is reaped by sshd or by the kernel, never left as a zombie
  for this machine's PID 1 (which does not reap orphans);
* clients are the real ``ssh``/``sftp``, with ``sshpass`` for passwords.

``$R`` lives under ``/run/sshmonitord-tests`` rather than /tmp: sshd's StrictModes refuses an
AuthorizedKeysFile below a world-writable directory, and the key check runs as the target
user, so ``$R`` and the key file are root-owned and world-readable (private keys stay 0600).

Use :class:`RealSshd` as a context manager, or the ``real_sshd`` / ``real_sshd_factory``
fixtures (import them into the test module).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import need

SSHD = "/usr/sbin/sshd"
BASE_DIR = Path(os.environ.get("SSHM_REAL_DIR", "/run/sshmonitord-tests"))
TEST_USER = "sshmtest"
TEST_PASSWORD = "Test-Pass-123"
REQUIRED_BINARIES = (SSHD, "rsyslogd", "sshpass", "ssh", "sftp", "ssh-keygen", "unshare", "mount")


# ------------------------------------------------------------------------- process hygiene


def proc_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat (R, S, Z, ...), or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ppid ..." — comm may contain spaces and parentheses: split at the last ")".
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie counts as dead (``kill -0`` would say alive)."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/PID/task/*/children, else a /proc scan)."""
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(x) for x in (task / "children").read_text().split()]
        return kids
    except OSError:
        pass
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split(" ", 2)[1]) == pid:
            kids.append(int(entry.name))
    return kids


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10
) -> None:
    """Signal a child we started, wait for it, SIGKILL it if it does not go. Always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=timeout)


def run(
    argv: Sequence[str],
    *,
    timeout: float = 30,
    env: dict[str, str] | None = None,
    input: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a client in its own process group; on timeout kill the whole group and reap it
    (``sshpass`` forks ``ssh``: killing only sshpass would orphan ssh)."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"{argv[0]} timed out after {timeout}s: {argv}\n{out}\n{err}"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a straggler left in the group
    res = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check and res.returncode != 0:
        raise AssertionError(f"{argv} exited {res.returncode}:\n{out}\n{err}")
    return res


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn: the child gets ``sig`` if the test process dies without cleaning up."""

    def preexec() -> None:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


def remove_stale_dirs() -> None:
    """Remove temp dirs left by a test process that was killed before its teardown ran."""
    for d in BASE_DIR.glob("sshd-*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # being created right now, or not ours
        if not pid_alive(owner):
            shutil.rmtree(d, ignore_errors=True)


def free_port() -> int:
    """A port that was free a moment ago (bind port 0, close). sshd start-up retries on a race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------- the test user


def ensure_user(user: str = TEST_USER, password: str = TEST_PASSWORD) -> pwd.struct_passwd:
    """Create the test user once (bash shell, home directory) and (re)set its password.

    Idempotent and safe against a concurrent test doing the same; the user is never deleted
    because other tests may be logged in as it.
    """
    BASE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(BASE_DIR / ".user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            run(["useradd", "-m", "-s", "/bin/bash", user], check=True)
            pw = pwd.getpwnam(user)
        run(["chpasswd"], input=f"{user}:{password}\n", check=True)
        run(["usermod", "-U", user])  # in case someone locked it; harmless otherwise
    return pw


# ------------------------------------------------------------------------- the server


RSYSLOG_CONF = """\
global(workDirectory="{R}/work")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{R}/log.sock" CreatePath="on" RateLimit.Interval="0")
$ActionFileDefaultTemplate RSYSLOG_TraditionalFileFormat
auth,authpriv.*   {R}/auth.log
*.*   action(type="omfile" file="{R}/all.log" template="RSYSLOG_FileFormat")
"""

# Run by `unshare -m --propagation private --pid --fork`: a private /dev whose /dev/log is
# our rsyslog's socket, then sshd as the PID namespace's init.
START_SSHD = """\
#!/bin/sh
set -e
R='{R}'
mkdir -p "$R/olddev"
mount --rbind /dev "$R/olddev"
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
for n in null zero full random urandom tty; do
    touch "/dev/$n"
    mount --bind "$R/olddev/$n" "/dev/$n"
done
for d in pts shm; do
    mkdir "/dev/$d"
    mount --rbind "$R/olddev/$d" "/dev/$d"
done
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
ln -sf pts/ptmx /dev/ptmx
touch /dev/log
mount --bind "$R/log.sock" /dev/log
exec {SSHD} -D -f "$R/sshd_config"
"""


class RealSshd:
    """A real sshd + rsyslogd pair in a private temp dir. Use as a context manager.

    Attributes once started: ``dir`` ($R), ``port``, ``auth_log``, ``all_log``, ``user``,
    ``password``, ``client_key``, ``key_fp`` (``SHA256:...`` as ``ssh-keygen -lf`` prints it),
    ``sftp_dir`` (a directory the test user may write, inside $R).
    """

    def __init__(
        self,
        *,
        use_pam: bool = False,
        log_level: str = "INFO",
        max_auth_tries: int = 6,
        extra_config: str = "",
        user: str = TEST_USER,
        password: str = TEST_PASSWORD,
        start_timeout: float = 15.0,
        netns: str | None = None,
        listen: str = "127.0.0.1",
    ) -> None:
        # netns: run sshd inside this network namespace (the test's own), listening on
        # `listen`; clients then run in another namespace (client_ns=...) of the test's.
        self.netns = netns
        self.listen = listen
        self.use_pam = use_pam
        self.log_level = log_level
        self.max_auth_tries = max_auth_tries
        self.extra_config = extra_config
        self.user = user
        self.password = password
        self.start_timeout = start_timeout
        self.dir = Path()
        self.port = 0
        self.key_fp = ""
        self._rsyslog: subprocess.Popen[bytes] | None = None
        self._sshd: subprocess.Popen[bytes] | None = None  # the `unshare` wrapping sshd
        self._stderr: list[Any] = []

    # -- paths
    @property
    def auth_log(self) -> Path:
        return self.dir / "auth.log"

    @property
    def all_log(self) -> Path:
        return self.dir / "all.log"

    @property
    def client_key(self) -> Path:
        return self.dir / "client_ed25519"

    @property
    def sftp_dir(self) -> Path:
        return self.dir / "sftp"

    @property
    def sshd_pid(self) -> int | None:
        """sshd's pid as this machine sees it (the init of the sshd's PID namespace)."""
        if self._sshd is None or self._sshd.poll() is not None:
            return None
        kids = child_pids(self._sshd.pid)
        return kids[0] if kids else None

    # -- lifecycle
    def __enter__(self) -> RealSshd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        need(os.geteuid() == 0, "real sshd tests need root")
        for b in REQUIRED_BINARIES:
            need(
                shutil.which(b) is not None, f"{b} not installed (openssh-server, rsyslog, sshpass)"
            )
        probe = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "--pid", "--fork", "true"],
            capture_output=True,
            text=True,
        )
        need(probe.returncode == 0, f"unshare (mount+pid namespaces) fails: {probe.stderr}")
        ensure_user(self.user, self.password)
        BASE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(BASE_DIR, 0o755)
        remove_stale_dirs()
        self.dir = Path(tempfile.mkdtemp(prefix="sshd-", dir=BASE_DIR))
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        try:
            self._prepare()
            self._start_rsyslog()
            last = ""
            for _attempt in range(3):  # the free port may be taken before sshd binds it
                self.port = free_port()
                self._write_sshd_config()
                if self._start_sshd():
                    return
                last = self._stderr_text()
            raise AssertionError(f"sshd did not start:\n{last}\n{self.all_log_text()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop sshd (and with it every session process), then rsyslogd; remove $R."""
        try:
            if self._sshd is not None:
                self._stop_sshd()
            if self._rsyslog is not None:
                stop_process(self._rsyslog)
                self._rsyslog = None
        finally:
            for fh in self._stderr:
                fh.close()
            self._stderr.clear()
            # $R/olddev is /dev bound inside sshd's private namespace only; should it ever be
            # a mount point here, leave the directory rather than recurse into /dev.
            R = self.dir
            if R.name and R.is_dir() and not os.path.ismount(R / "olddev"):
                shutil.rmtree(R, ignore_errors=True)

    def _prepare(self) -> None:
        R = self.dir
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        os.chmod("/run/sshd", 0o755)
        os.chmod(R, 0o755)  # traversable by the test user: sshd reads the key file as that user
        (R / "work").mkdir()
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(R / "host_ed25519")],
            check=True,
        )
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sshmtest-client",
             "-f", str(self.client_key)],
            check=True,
        )  # fmt: skip
        out = run(["ssh-keygen", "-lf", f"{self.client_key}.pub"], check=True).stdout
        # "256 SHA256:abc... sshmtest-client (ED25519)"
        self.key_fp = out.split()[1]
        keys = R / "authorized_keys"
        keys.mkdir(mode=0o755)
        (keys / self.user).write_text(Path(f"{self.client_key}.pub").read_text())
        os.chmod(keys / self.user, 0o644)
        pw = pwd.getpwnam(self.user)
        self.sftp_dir.mkdir(mode=0o755)
        os.chown(self.sftp_dir, pw.pw_uid, pw.pw_gid)
        (R / "start-sshd.sh").write_text(START_SSHD.format(R=R, SSHD=SSHD))
        os.chmod(R / "start-sshd.sh", 0o755)

    def _write_sshd_config(self) -> None:
        R = self.dir
        text = f"""\
Port {self.port}
ListenAddress {self.listen}
HostKey {R}/host_ed25519
PidFile none
UsePAM {"yes" if self.use_pam else "no"}
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
StrictModes yes
AuthorizedKeysFile {R}/authorized_keys/%u
LogLevel {self.log_level}
SyslogFacility AUTH
MaxAuthTries {self.max_auth_tries}
PrintMotd no
PrintLastLog no
UseDNS no
X11Forwarding no
Subsystem sftp internal-sftp -l INFO
{self.extra_config}
"""
        (R / "sshd_config").write_text(text)
        res = run([SSHD, "-t", "-f", str(R / "sshd_config")])
        if res.returncode != 0:
            raise AssertionError(f"sshd -t rejects the config:\n{res.stderr}\n{text}")

    def _stderr_file(self, name: str) -> Any:
        fh = open(self.dir / name, "ab")  # noqa: SIM115 - closed in stop()
        self._stderr.append(fh)
        return fh

    def _stderr_text(self) -> str:
        parts = []
        for name in ("rsyslogd.err", "sshd.err"):
            p = self.dir / name
            if p.exists():
                parts.append(f"--- {name}\n{p.read_text(errors='replace')}")
        return "\n".join(parts)

    def _start_rsyslog(self) -> None:
        R = self.dir
        (R / "rsyslog.conf").write_text(RSYSLOG_CONF.format(R=R))
        err = self._stderr_file("rsyslogd.err")
        self._rsyslog = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(R / "rsyslog.conf"), "-i", str(R / "rsyslogd.pid")],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )
        deadline = time.monotonic() + self.start_timeout
        while not (R / "log.sock").exists():
            if self._rsyslog.poll() is not None:
                raise AssertionError(
                    f"rsyslogd exited {self._rsyslog.returncode}:\n{self._stderr_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslogd made no socket:\n{self._stderr_text()}")
            time.sleep(0.02)

    def _start_sshd(self) -> bool:
        """Start sshd; True once it logged that it listens, False if it died (port race)."""
        mark = len(self.auth_lines())
        err = self._stderr_file("sshd.err")
        self._sshd = subprocess.Popen(
            # --kill-child: if this process dies hard, sshd gets SIGTERM rather than living on.
            [*(["ip", "netns", "exec", self.netns] if self.netns else []),
             "unshare", "-m", "--propagation", "private", "--pid", "--fork", "--kill-child",
             str(self.dir / "start-sshd.sh")],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
            # unshare ignores SIGTERM while it waits; its --kill-child then stops sshd.
            preexec_fn=_die_with_parent(signal.SIGKILL),
        )  # fmt: skip
        listening = re.compile(
            rf"sshd\[\d+\]: Server listening on {re.escape(self.listen)} port {self.port}\."
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if any(listening.search(x) for x in self.auth_lines()[mark:]):
                return True
            if self._sshd.poll() is not None:
                self._sshd = None
                return False
            time.sleep(0.02)
        self._stop_sshd()
        raise AssertionError(
            f"sshd not listening after {self.start_timeout}s:\n{self._stderr_text()}\n"
            + "\n".join(self.auth_lines())
        )

    def _stop_sshd(self) -> None:
        proc = self._sshd
        if proc is None:
            return
        self._sshd = None
        # `unshare --fork` ignores SIGTERM while it waits; signal sshd, its child. sshd is the
        # PID namespace's init: when it exits the kernel kills and reaps whatever is left in
        # the namespace (session processes), and unshare — our child — reaps sshd.
        for pid in child_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for pid in child_pids(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stop_process(proc, signal.SIGKILL)

    # -- the log
    def auth_text(self) -> str:
        try:
            return self.auth_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_log_text(self) -> str:
        try:
            return self.all_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def auth_lines(self) -> list[str]:
        return self.auth_text().splitlines()

    def wait_for(self, pattern: str, timeout: float = 10.0, after: int = 0) -> str:
        """The first auth.log line (index >= after) matching regex ``pattern`` (re.search);
        polls until ``timeout``, then fails showing the log."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.auth_lines()[after:]:
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no auth.log line matching {pattern!r} within {timeout}s:\n" + self.auth_text()
                )
            time.sleep(0.05)

    def wait_for_count(self, pattern: str, count: int, timeout: float = 10.0) -> list[str]:
        """Wait until at least ``count`` auth.log lines match regex ``pattern``; return them."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            hits = [line for line in self.auth_lines() if rx.search(line)]
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(hits)} < {count} auth.log lines matching {pattern!r} within "
                    f"{timeout}s:\n" + self.auth_text()
                )
            time.sleep(0.05)

    def events(self, zone: Any = None) -> list[Any]:
        """Every auth.log line through sshmonitord's Parser (None results dropped)."""
        from sshmonitord.parse import Parser
        from sshmonitord.parse.prefix import load_zone

        parser = Parser(zone=zone or load_zone("local"), reference=datetime.now(UTC))
        return [ev for line in self.auth_lines() if (ev := parser.parse_text(line)) is not None]

    # -- clients
    def _ssh_opts(self) -> list[str]:
        return [
            "-F", "/dev/null",
            "-p", str(self.port),
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10",
            "-o", "IdentityAgent=none",
        ]  # fmt: skip

    def _password_opts(self) -> list[str]:
        return [
            "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password",
            "-o", "NumberOfPasswordPrompts=1",
            "-o", "BatchMode=no",
        ]  # fmt: skip

    def _key_opts(self) -> list[str]:
        return [
            "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "PreferredAuthentications=publickey",
            "-o", "PasswordAuthentication=no",
            "-o", "BatchMode=yes",
        ]  # fmt: skip

    @staticmethod
    def _pass_env(password: str) -> dict[str, str]:
        return {**os.environ, "SSHPASS": password}

    def _client(self, client_ns: str | None, source: str | None) -> tuple[list[str], list[str]]:
        """(argv prefix, ssh options) for a client in ``client_ns`` bound to ``source``."""
        prefix = ["ip", "netns", "exec", client_ns] if client_ns else []
        opts = ["-b", source] if source else []
        return prefix, opts

    def _target(self, brackets: bool = False) -> str:
        # ssh takes user@fd00::1 as is (the port is -p); sftp wants user@[fd00::1].
        return f"[{self.listen}]" if brackets and ":" in self.listen else self.listen

    def ssh_password(
        self,
        user: str,
        password: str,
        cmd: str = "true",
        timeout: float = 30,
        client_ns: str | None = None,
        source: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """One password attempt by the real ssh client (via ``sshpass -e``)."""
        prefix, bind = self._client(client_ns, source)
        argv = [*prefix, "sshpass", "-e", "ssh", *self._ssh_opts(), *bind,
                *self._password_opts(), f"{user}@{self._target()}", cmd]  # fmt: skip
        return run(argv, env=self._pass_env(password), timeout=timeout)

    def fail_password(
        self,
        user: str | None = None,
        password: str = "wrong",
        client_ns: str | None = None,
        source: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A rejected password (sshpass exits 5); asserts the login did fail."""
        res = self.ssh_password(user or self.user, password, client_ns=client_ns, source=source)
        assert res.returncode != 0, f"login with a wrong password succeeded: {res}"
        return res

    def login_password(
        self, cmd: str = "true", client_ns: str | None = None, source: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A successful password login of the test user running ``cmd``."""
        res = self.ssh_password(self.user, self.password, cmd, client_ns=client_ns, source=source)
        assert res.returncode == 0, f"password login failed: {res}\n{self.auth_text()}"
        return res

    def login_key(
        self, cmd: str = "true", client_ns: str | None = None, source: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A successful public-key login of the test user running ``cmd``."""
        prefix, bind = self._client(client_ns, source)
        argv = [
            *prefix,
            "ssh",
            *self._ssh_opts(),
            *bind,
            *self._key_opts(),
            f"{self.user}@{self._target()}",
            cmd,
        ]
        res = run(argv)
        assert res.returncode == 0, f"key login failed: {res}\n{self.auth_text()}"
        return res

    def sftp_batch(
        self, lines: Sequence[str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``sftp -b`` with these batch commands as the test user (key auth: -b implies
        BatchMode). Remote paths: use :attr:`sftp_dir`, which the test user owns."""
        batch = Path(tempfile.mkstemp(prefix="batch-", dir=self.dir)[1])
        batch.write_text("".join(f"{x}\n" for x in lines))
        opts = ["-P" if o == "-p" else o for o in self._ssh_opts()]  # sftp: -P port
        argv = [
            "sftp",
            *opts,
            *self._key_opts(),
            "-b",
            str(batch),
            f"{self.user}@{self._target(brackets=True)}",
        ]
        res = run(argv)
        if check:
            assert res.returncode == 0, f"sftp failed: {res}\n{self.auth_text()}"
        return res


# ------------------------------------------------------------------------- fixtures


@pytest.fixture
def real_sshd_factory() -> Iterator[Callable[..., RealSshd]]:
    """``start(use_pam=..., log_level=..., max_auth_tries=..., extra_config=...)`` → a started
    RealSshd; every one is stopped (and its temp dir removed) at teardown, pass or fail."""
    started: list[RealSshd] = []

    def start(**kw: Any) -> RealSshd:
        s = RealSshd(**kw)
        s.start()
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in reversed(started):
            s.stop()


@pytest.fixture
def real_sshd(real_sshd_factory: Callable[..., RealSshd]) -> RealSshd:
    """A started RealSshd with the defaults (UsePAM no: a failed password costs ~0.15 s)."""
    return real_sshd_factory()
