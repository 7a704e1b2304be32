"""Operator mistakes against the real daemon (a subprocess) and the real ``sshmonitor`` CLI:
one clear line on the CLI (exit 2 for a bad or refused request), at most an INFO line in the
daemon, never a traceback (issue #11 item 11); IPv4-mapped spellings and wide networks refused
on the daemon's side too (item 6); ``status`` and ``reload`` reach the daemon while the config
file on disk is broken (item 13).

The daemon runs with ``response.backend: none`` (conftest's default): nothing touches a
firewall.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sshmonitord import control
from sshmonitord.cli import print_status


def sshmonitor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sshmonitord.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sshmonitor: error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return lines[0]


@pytest.fixture
def daemon(daemon_factory):
    d = daemon_factory()
    d.wait_log("sshmonitord started", timeout=20)
    return d


def no_traceback(d) -> None:
    text = d.log_text()
    assert "Traceback" not in text, text
    assert " ERROR " not in text, text


def test_ban_mistakes_are_one_line_exit_2(daemon):
    d = daemon
    sock = str(d.socket_path)
    for args, needle in [
        (["ban", "not-an-ip"], "'not-an-ip' is not an IP address"),
        (["ban", "127.0.0.1"], "127.0.0.1/32 is allowlisted (127.0.0.0/8"),
        (["ban", "::ffff:127.0.0.1"], "127.0.0.1/32 is allowlisted"),
        (["ban", "::ffff:0:0/97"], "0.0.0.0/1 covers the allowlisted 127.0.0.0/8"),
        (["ban", "10.0.0.0/8"], "wider than response.max_ban_prefix.ipv4 (/16)"),
        (["ban", "fe80::/64"], "link-local"),
        (["ban", "::/0", "--force"], "a /0 is never banned"),
        (["ban", "::ffff:0:0/96", "--force"], "0.0.0.0/0 is every address"),
        (["ban", "198.51.100.7", "--for", "soon"], "bad duration"),
        (["unban", "not-an-ip"], "is not an IP address"),
    ]:
        r = sshmonitor(*args, "--socket", sock)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in one_error_line(r), (args, r.stderr)
        assert r.stdout == ""
    r = sshmonitor("bans", "--socket", sock)
    assert r.returncode == 0 and r.stdout.startswith("0 active bans"), r.stdout
    no_traceback(d)


def test_the_daemon_refuses_on_its_own(daemon):
    """Another client than our CLI (or an older one) sends the raw spelling: the daemon
    normalises before its own checks, answers one line, logs one INFO line."""
    d = daemon
    sock = str(d.socket_path)
    for net, needle in [
        ("not-an-ip", "is not an IP address"),
        ("::ffff:127.0.0.1", "127.0.0.1/32 is allowlisted"),
        ("::ffff:0:0/97", "0.0.0.0/1 covers the allowlisted"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8 is wider than"),
        ("::/0", "never banned"),
    ]:
        with pytest.raises(control.Refused) as info:
            control.request(sock, "ban", net=net, seconds=60, reason="test")
        assert info.value.usage is True
        assert needle in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(control.Refused) as info:
        control.request(sock, "unban", net="::ffff:not-an-ip")
    assert info.value.usage is True
    with pytest.raises(control.Refused) as info:
        control.request(sock, "no-such-command")
    assert info.value.usage is True
    d.wait_log("control command refused")
    no_traceback(d)
    refusals = [x for x in d.log_text().splitlines() if "control command refused" in x]
    assert len(refusals) == 6 and all(" INFO " in x for x in refusals), refusals


def test_ban_normalises_and_unban_of_nothing_is_quiet(daemon):
    d = daemon
    sock = str(d.socket_path)
    r = sshmonitor("ban", "::ffff:198.51.100.7", "--for", "1h", "--socket", sock)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("banned 198.51.100.7/32 for 3600s"), r.stdout
    assert "IPv4-mapped" in r.stderr  # said, on the line before, once it worked
    r = sshmonitor("ban", "198.51.100.77/24", "--for", "1h", "--socket", sock)
    assert r.returncode == 0 and "host bits set; using 198.51.100.0/24" in r.stderr
    assert r.stdout.startswith("banned 198.51.100.0/24")
    r = sshmonitor("bans", "--socket", sock)
    assert "198.51.100.7/32" in r.stdout and "::ffff" not in r.stdout

    r = sshmonitor("unban", "::ffff:198.51.100.7", "--socket", sock)
    assert r.returncode == 0 and r.stdout.strip() == "unbanned 198.51.100.7/32", r
    before = d.log_text().count("unbanned")
    r = sshmonitor("unban", "203.0.113.250", "--socket", sock)
    assert r.returncode == 1, r
    assert r.stderr.strip() == "203.0.113.250 was not banned" and r.stdout == ""
    assert d.log_text().count("unbanned") == before  # the daemon did not claim it
    no_traceback(d)


def test_force_bans_a_wide_network(daemon):
    d = daemon
    sock = str(d.socket_path)
    r = sshmonitor("ban", "10.0.0.0/8", "--force", "--for", "10m", "--socket", sock)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("banned 10.0.0.0/8 for 600s")
    no_traceback(d)


def test_cli_checks_the_address_before_connecting(tmp_path: Path):
    nowhere = str(tmp_path / "no.sock")
    r = sshmonitor("ban", "300.1.2.3", "--socket", nowhere)
    assert r.returncode == 2 and "is not an IP address" in one_error_line(r)
    r = sshmonitor("ban", "0.0.0.0/0", "--force", "--socket", nowhere)
    assert r.returncode == 2 and "never banned" in one_error_line(r)
    r = sshmonitor("unban", "", "--socket", nowhere)
    assert r.returncode == 2
    # A well-formed request to no daemon: exit 1, one line.
    r = sshmonitor("ban", "198.51.100.7", "--socket", nowhere)
    assert r.returncode == 1 and "not running" in one_error_line(r)


# ---------------------------------------------------------------------------- item 13


def test_status_and_reload_reach_the_daemon_while_the_config_is_broken(daemon):
    d = daemon
    cfg = str(d.config_path)
    good = d.config_path.read_text()
    r = sshmonitor("status", "--config", cfg)
    assert r.returncode == 0 and "running" in r.stdout, r.stderr

    # Broken values, still YAML: the socket is read from it leniently.
    d.config_path.write_text(good + "detection: {rules: {bruteforce: {threshold: lots}}}\n")
    r = sshmonitor("status", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "running" in r.stdout
    (warning,) = r.stderr.splitlines()
    assert warning.startswith(f"sshmonitor: warning: {cfg} is not a valid config")
    assert str(d.socket_path) in warning
    r = sshmonitor("reload", "--config", cfg)
    assert r.returncode == 1
    assert "reload FAILED" in r.stderr and "threshold" in r.stderr, r.stderr
    r = sshmonitor("status", "--config", cfg)
    assert "LAST RELOAD FAILED" in r.stdout and "threshold" in r.stdout

    # Not even YAML: the default socket, which systemd's RUNTIME_DIRECTORY moves (here the
    # test daemon's directory).
    d.config_path.write_text("control: [unclosed\n")
    env = {"RUNTIME_DIRECTORY": str(d.socket_path.parent)}
    r = sshmonitor("status", "--config", cfg, env=env)
    assert r.returncode == 0 and "running" in r.stdout, r.stderr
    r = sshmonitor("reload", "--config", cfg, env=env)
    assert r.returncode == 1 and "reload FAILED" in r.stderr

    # Fixed: reload works, and the old config was in force all along.
    d.config_path.write_text(good)
    r = sshmonitor("reload", "--config", cfg)
    assert r.returncode == 0 and r.stdout.strip() == "reloaded", r.stderr
    assert d.proc.poll() is None
    assert "Traceback" not in d.log_text()


def test_no_daemon_is_one_line_even_with_a_broken_config(tmp_path: Path):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(f"control: {{socket: {tmp_path / 'x.sock'}}}\nresponse: {{bantime: -1}}\n")
    r = sshmonitor("status", "--config", str(cfg))
    assert r.returncode == 1
    warning, error = r.stderr.splitlines()
    assert warning.startswith("sshmonitor: warning:")
    assert (
        error
        == f"sshmonitor: error: sshmonitord is not running (no control socket at {tmp_path / 'x.sock'})"
    )


# ---------------------------------------------------------------------------- status output


def test_print_status_shows_warnings_modes_and_store(capsys):
    print_status(
        {
            "version": "1.0",
            "pid": 42,
            "host": "web1",
            "uptime_seconds": 90,
            "started_at": "2026-01-01T00:00:00",
            "status": "ok",
            "config": "/etc/sshmonitor.yaml",
            "config_loaded_at": "2026-01-01T00:00:00",
            "database": "/var/lib/sshmonitor/sshmonitor.db",
            "schema_version": 7,
            "warnings": ["journal: 3 records from untrusted senders refused"],
            "store": {
                "path": "/var/lib/sshmonitor/sshmonitor.db",
                "recovered": {
                    "moved_to": "/var/lib/x.corrupt-1",
                    "error": "file is not a database",
                    "at": "2026-01-01T00:00:00Z",
                },
                "error": "database or disk is full",
                "unstored_lines": 1200,
            },
            "stages": [
                {"name": "tailer", "summary": "following /var/log/auth.log", "mode": "file"},
                {
                    "name": "journal",
                    "summary": "following the system journal",
                    "mode": "journal",
                    "forgeable": False,
                    "rejected": {"untrusted_exe": 2, "missing_exe": 1},
                    "rejected_samples": ["evil\nAccepted password for root from 6.6.6.6"],
                    "warnings": ["sshd unit not found"],
                },
                {"name": "bans", "summary": "0 bans active", "warnings": []},
            ],
        }
    )
    out = capsys.readouterr().out
    assert "warning: journal: 3 records from untrusted senders refused" in out
    assert "sources: file mode (forgeable by local users: see docs/security.md)" in out
    assert "sources: journal mode (trusted fields only)" in out
    assert "3 journal record(s) rejected (untrusted sender: untrusted_exe 2, missing_exe 1)" in out
    assert "evil\\x0aAccepted" in out  # attacker text stays on its line
    assert "warning: sshd unit not found" in out
    assert "moved aside to /var/lib/x.corrupt-1" in out and "file is not a database" in out
    assert "CANNOT WRITE: database or disk is full; 1200 lines held" in out


def test_print_status_tolerates_missing_keys(capsys):
    print_status({})
    print_status({"stages": [{}], "store": {}, "warnings": None})
    assert "running" in capsys.readouterr().out


# ---------------------------------------------------------------------------- the package

SUBCOMMANDS = (
    "check-config", "replay", "bans", "ban", "unban", "report", "sessions", "session", "events",
    "test-alert", "status", "reload",
)  # fmt: skip


def test_every_command_has_its_help_in_the_order_of_old(capsys):
    """The cli package registers every command group, in the order `sshmonitor --help` has
    always listed them, and each one's --help works (exit 0, its own usage line)."""
    from sshmonitord.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    listing = capsys.readouterr().out
    positions = [listing.index(f"    {name}") for name in SUBCOMMANDS]
    assert positions == sorted(positions)
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: sshmonitor {name} "), name


def test_replay_help_says_it_lists_findings_and_bans(capsys):
    """Replay no longer only parses: its help says it lists what the daemon would raise and
    ban, with the config's allowlist and ban lengths (issue #12)."""
    from sshmonitord.cli import main

    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Nothing is banned and nothing is sent" in text
    assert "the findings the daemon would raise and the bans it would place" in text
    assert "allowlist and ban lengths" in text


def test_commands_find_their_files_in_one_place():
    """Config, state directory and control socket: every command of the cli package gets them
    from cli/where.py, and where.py from sshmonitord/paths.py (the daemon's own rules): no
    command module imports paths.py or the store's path helper itself (issue #12)."""
    import ast

    import sshmonitord.cli

    pkg = Path(sshmonitord.cli.__file__).parent
    offenders = []
    for path in sorted(pkg.glob("*.py")):
        if path.name == "where.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("paths"):
                offenders.append(f"{path.name}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.ImportFrom) and any(
                a.name in ("db_path", "resolve_socket", "resolve_state_dir", "load_for_cli")
                for a in node.names
            ):
                offenders.append(f"{path.name}:{node.lineno} imports {node.names[0].name}")
    assert not offenders, "\n".join(offenders)
    where = (pkg / "where.py").read_text(encoding="utf-8")
    assert "from ..paths import" in where
