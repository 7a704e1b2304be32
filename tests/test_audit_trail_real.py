"""The audit trail end to end, all real: OpenSSH (UsePAM yes, ``internal-sftp -l INFO``),
rsyslog, sudo, the real sshmonitord daemon reading the auth.log from the beginning, and the
operator commands reading its database.

One SSH connection does the whole story: a password login (a ControlMaster connection, so
every later step rides the same login), an SFTP upload and download, ``sudo`` on a pty, and
the logout. ``sshmonitor session ID`` must then show each step with the right user,
address, paths, byte counts, TTY and duration — all checked against the auth.log itself.

sudo needs a rule for the test user: a drop-in ``/etc/sudoers.d/sshmtest-<random>`` allowing
only ``/usr/bin/id`` without a password, validated with ``visudo -cf`` and removed in a
``finally``. sudo run inside the session logs through /dev/log, which in sshd's private
mount namespace is the test's rsyslog socket, so its lines land in the test's auth.log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import need

from sshmonitord.parse.prefix import load_zone

if TYPE_CHECKING:
    from realsshd import RealSshd

pytest_plugins = ["realsshd"]
pytestmark = pytest.mark.real

SUDO_COMMAND = "/usr/bin/id"


@contextlib.contextmanager
def sudoers_dropin(user: str, command: str = SUDO_COMMAND) -> Iterator[Path]:
    """Let ``user`` run ``command`` as root without a password, for the duration only."""
    need(shutil.which("sudo") is not None, "sudo not installed (apt-get install sudo)")
    need(shutil.which("visudo") is not None, "visudo not installed (apt-get install sudo)")
    need(Path("/etc/sudoers.d").is_dir(), "/etc/sudoers.d missing")
    # sudo skips names with a dot: the file is written as .tmp, checked, then renamed.
    path = Path(f"/etc/sudoers.d/sshmtest-{secrets.token_hex(4)}")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(f"{user} ALL=(root) NOPASSWD: {command}\n")
        os.chmod(tmp, 0o440)
        check = subprocess.run(["visudo", "-cf", str(tmp)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        os.replace(tmp, path)
        yield path
    finally:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


class Master:
    """A password-authenticated ControlMaster connection: one sshd session whose channels
    (sftp, commands) all belong to the same login. Always stopped and reaped."""

    def __init__(self, sshd: RealSshd) -> None:
        self.sshd = sshd
        self.sock = sshd.dir / f"mux-{secrets.token_hex(3)}.sock"
        self.target = f"{sshd.user}@{sshd.listen}"
        self.proc = subprocess.Popen(
            ["sshpass", "-e", "ssh", *sshd._ssh_opts(), *sshd._password_opts(),
             "-M", "-S", str(self.sock), "-N", self.target],
            env=sshd._pass_env(sshd.password),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"ssh master did not come up:\n{sshd.auth_text()}")
            time.sleep(0.05)

    def ssh(self, *argv: str, tty: bool = False) -> subprocess.CompletedProcess[str]:
        from realsshd import run

        return run(
            ["ssh", *self.sshd._ssh_opts(), "-S", str(self.sock), *(["-tt"] if tty else []),
             self.target, *argv]
        )  # fmt: skip

    def sftp(self, lines: list[str]) -> subprocess.CompletedProcess[str]:
        from realsshd import run

        batch = self.sshd.dir / f"batch-{secrets.token_hex(3)}"
        batch.write_text("".join(f"{x}\n" for x in lines))
        opts = ["-P" if o == "-p" else o for o in self.sshd._ssh_opts()]
        return run(["sftp", *opts, "-o", f"ControlPath={self.sock}", "-b", str(batch),
                    self.target])  # fmt: skip

    def logout(self) -> None:
        from realsshd import run

        run(["ssh", *self.sshd._ssh_opts(), "-S", str(self.sock), "-O", "exit", self.target])
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def log_ts(line: str) -> float:
    """The epoch of a classic auth.log line (local time, this year)."""
    stamp = line[:15]
    now = datetime.now()
    ts = datetime.strptime(f"{now.year} {stamp}", "%Y %b %d %H:%M:%S")
    return ts.replace(tzinfo=load_zone("local")).astimezone(UTC).timestamp()


def only(lines: list[str], pattern: str) -> str:
    hits = [x for x in lines if re.search(pattern, x)]
    assert len(hits) == 1, (pattern, hits)
    return hits[0]


def cli(state_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``sshmonitor ARGV --state-dir DIR`` in its own process: the real ``sshmonitor`` once
    the cli package registers the audit commands, else the same parser built by ``register``."""
    code = (
        "import sys, argparse\n"
        "from sshmonitord import cli\n"
        "from sshmonitord.cli import audit as audit_cli\n"
        "p = cli.parser()\n"
        "names = set()\n"
        "for a in p._actions:\n"
        "    names |= set(getattr(a, 'choices', None) or ())\n"
        "if 'session' in names:\n"
        "    sys.exit(cli.main())\n"
        "p = argparse.ArgumentParser(prog='sshmonitor')\n"
        "sub = p.add_subparsers(dest='command', required=True)\n"
        "audit_cli.register(sub)\n"
        "args = p.parse_args()\n"
        "sys.exit(args.func(args))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_daemon_over(daemon_factory: Callable[..., Any], auth_log: Path, want_sessions: int) -> Any:
    """The real daemon reads the whole auth.log; return it once every session is closed."""
    d = daemon_factory(
        f"sources: {{mode: file, files: [{auth_log}], start_at: beginning, "
        "poll_interval: 200ms}\nresponse: {backend: none}\n"
    )
    d.wait_log("sshmonitord started", timeout=20)
    db = d.state_dir / "sshmonitor.db"
    deadline = time.monotonic() + 30
    states: list[Any] = []
    while time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                states = conn.execute("SELECT state FROM sessions").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            states = []
        if len(states) == want_sessions and all(s[0] == "closed" for s in states):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"sessions not all closed: {states}\n{d.log_text()}")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=15) == 0, d.log_text()
    return d


def test_password_sftp_sudo_logout_timeline(
    real_sshd_factory: Callable[..., RealSshd], daemon_factory: Callable[..., Any]
) -> None:
    sshd = real_sshd_factory(use_pam=True)
    up_local = sshd.dir / "report.pdf"
    up_local.write_bytes(os.urandom(54321))
    up_remote = sshd.sftp_dir / "report.pdf"
    down_remote = sshd.sftp_dir / "data.csv"
    down_remote.write_bytes(os.urandom(7777))
    os.chmod(down_remote, 0o644)
    down_local = sshd.dir / "data.csv"

    with sudoers_dropin(sshd.user):
        master = Master(sshd)
        try:
            time.sleep(1.1)  # a duration of whole seconds the log can show
            res = master.sftp([f"put {up_local} {up_remote}", f"get {down_remote} {down_local}"])
            assert res.returncode == 0, f"{res}\n{sshd.auth_text()}"
            res = master.ssh(f"sudo -n {SUDO_COMMAND}", tty=True)
            assert res.returncode == 0 and "uid=0(root)" in res.stdout, res
            sshd.wait_for(r"sudo: +sshmtest : TTY=pts/\d+ ; .*COMMAND=/usr/bin/id$")
            time.sleep(1.1)
            master.logout()
        finally:
            master.stop()
    sshd.wait_for(r"sshd\[\d+\]: pam_unix\(sshd:session\): session closed for user sshmtest$")
    assert up_remote.read_bytes() == up_local.read_bytes()
    assert down_local.read_bytes() == down_remote.read_bytes()

    # What the log itself says, to hold the trail against.
    lines = sshd.auth_lines()
    accepted = only(lines, r"Accepted password for sshmtest from 127\.0\.0\.1 port \d+ ssh2$")
    port = int(re.search(r" port (\d+) ssh2$", accepted).group(1))  # type: ignore[union-attr]
    monitor = int(re.search(r"sshd\[(\d+)\]", accepted).group(1))  # type: ignore[union-attr]
    disc = only(lines, rf"Disconnected from user sshmtest 127\.0\.0\.1 port {port}$")
    child = int(re.search(r"sshd\[(\d+)\]", disc).group(1))  # type: ignore[union-attr]
    assert child != monitor  # the join cannot be by pid
    sudo_line = only(lines, r"sudo: +sshmtest : TTY=")
    tty = re.search(r"TTY=(\S+)", sudo_line).group(1)  # type: ignore[union-attr]
    start = log_ts(accepted)
    first_end = log_ts(only(lines, rf"Received disconnect from 127\.0\.0\.1 port {port}:11:"))
    duration = first_end - start
    assert duration >= 2

    d = run_daemon_over(daemon_factory, sshd.auth_log, want_sessions=1)

    res = cli(d.state_dir, "sessions")
    assert res.returncode == 0, res.stderr
    row = res.stdout.splitlines()[1].split()
    sid = row[0]
    assert row[1:4] == ["sshmtest", f"127.0.0.1:{port}", "password"]
    assert row[-3:] == ["closed", "1", "2"]

    res = cli(d.state_dir, "session", sid)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    print(out)
    assert f"Session {sid}: sshmtest from 127.0.0.1 port {port}" in out
    assert f"sshd pid {monitor}, user child {child}, tty {tty}" in out
    steps = {}
    for line in out.splitlines():
        m = re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  (\S+) +(.*)$", line)
        if m:
            steps.setdefault(m.group(1), []).append(m.group(2))
    assert steps["login"] == [f"sshmtest from 127.0.0.1 port {port} by password"]
    assert steps["upload"] == [f"{up_remote}  54321 bytes (53.0 KiB) written"]
    assert steps["download"] == [f"{down_remote}  7777 bytes (7.6 KiB) read"]
    assert steps["sudo"] == [f"sshmtest as root: {SUDO_COMMAND}  (tty {tty}, in /home/sshmtest)"]
    assert steps["logout"] == [f"disconnected by user; session lasted {int(duration)}s"], out

    doc = json.loads(cli(d.state_dir, "session", sid, "--json").stdout)
    s = doc["session"]
    assert (s["user"], s["ip"], s["port"], s["method"], s["state"]) == (
        "sshmtest", "127.0.0.1", port, "password", "closed"
    )  # fmt: skip
    assert s["duration_seconds"] == duration
    assert (s["bytes_up"], s["bytes_down"], s["tty"]) == (54321, 7777, tty)
    whats = [e["what"] for e in doc["timeline"]]
    assert whats[0] == "login" and whats[-1] == "logout"
    assert whats.index("upload") < whats.index("download") < whats.index("sudo")
    xfer = {e["what"]: e for e in doc["timeline"] if e["what"] in ("upload", "download")}
    assert xfer["upload"]["path"] == str(up_remote) and xfer["upload"]["bytes_written"] == 54321
    assert xfer["download"]["path"] == str(down_remote)
    assert xfer["download"]["bytes_read"] == 7777

    # The same login, as a SIEM sees it.
    res = cli(d.state_dir, "events", "--json", "--user", "sshmtest", "--kind", "auth_success")
    [ev] = [json.loads(x) for x in res.stdout.splitlines()]
    assert (ev["kind"], ev["ip"], ev["port"], ev["pid"], ev["method"]) == (
        "auth_success", "127.0.0.1", port, monitor, "password"
    )  # fmt: skip


def test_concurrent_sessions_at_verbose_each_get_their_own_actions(
    real_sshd_factory: Callable[..., RealSshd], daemon_factory: Callable[..., Any]
) -> None:
    """Two logins of the same user from the same address at once: VERBOSE's ``Starting
    session`` lines give the TTY and the sftp subsystem to the right one."""

    sshd = real_sshd_factory(use_pam=True, log_level="VERBOSE")
    f = sshd.dir / "small.txt"
    f.write_text("hello\n")
    with sudoers_dropin(sshd.user):
        master = Master(sshd)
        bystander = None
        try:
            # A key login that stays open (a command on a pty) while the other one works.
            bystander = subprocess.Popen(
                ["ssh", *sshd._ssh_opts(), *sshd._key_opts(), "-tt",
                 f"{sshd.user}@{sshd.listen}", "sleep 4"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            sshd.wait_for(r"Starting session: command on pts/\d+ for sshmtest .* id 0$")
            assert master.sftp([f"put {f} {sshd.sftp_dir}/small.txt"]).returncode == 0
            res = master.ssh(f"sudo -n {SUDO_COMMAND}", tty=True)
            assert res.returncode == 0, res
            master.logout()
            assert bystander.wait(timeout=20) == 0
        finally:
            master.stop()
            if bystander is not None and bystander.poll() is None:
                os.killpg(bystander.pid, signal.SIGKILL)
                bystander.wait()
    sshd.wait_for_count(r"sshd\[\d+\]: pam_unix\(sshd:session\): session closed", 2)
    lines = sshd.auth_lines()
    pw_port = int(
        re.search(  # type: ignore[union-attr]
            r"Accepted password for sshmtest from \S+ port (\d+)", "\n".join(lines)
        ).group(1)
    )

    d = run_daemon_over(daemon_factory, sshd.auth_log, want_sessions=2)
    out = cli(d.state_dir, "sessions", "--json").stdout
    by_method = {s["method"]: s for s in map(json.loads, out.splitlines())}
    pw, key = by_method["password"], by_method["publickey"]
    assert pw["port"] == pw_port
    assert (pw["commands"], pw["transfers"], pw["bytes_up"]) == (1, 1, 6)
    assert (key["commands"], key["transfers"]) == (0, 0)
    assert key["key_fp"] == sshd.key_fp
    assert pw["tty"] and key["tty"] and pw["tty"] != key["tty"]
    doc = json.loads(cli(d.state_dir, "session", str(pw["id"]), "--json").stdout)
    [sudo] = [e for e in doc["timeline"] if e["what"] == "sudo"]
    assert (sudo["tty"], sudo["attribution"]) == (pw["tty"], "tty")
    [up] = [e for e in doc["timeline"] if e["what"] == "upload"]
    assert up["attribution"] == "user" and up["bytes_written"] == 6
