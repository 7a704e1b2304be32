"""Detection's memory of connections (sshd pids): what it joins, for how long, and what it
costs (issue #17).

A connection's follow-up lines (closed, disconnected, maximum attempts), its "Failed password
for invalid user X" after "Invalid user X", and its PAM prompts restated by a Failed line
are one attempt, not several. detection remembers each connection by its pid for
SESSION_MAX_AGE after its last counted failure (log time): long enough for everything one
connection writes, short enough that a pid the kernel hands to a later connection is not
taken for the old one, and short enough that a month of logs does not keep every pid.

Lines are real sshd wording, read by the daemon's own parser.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from detectfeed import Stream

from sshmonitord import config
from sshmonitord.detect import engine as engine_mod
from sshmonitord.detect.engine import SESSION_MAX_AGE
from sshmonitord.events import Finding

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%b %d %H:%M:%S")


class Feed(Stream):
    """sshd lines at ``at`` seconds after T0, with rules' settings changed by keyword."""

    def __init__(self, **rules: dict[str, object]) -> None:
        cfg = config.DetectionConfig()
        for name, changes in rules.items():
            r = dataclasses.replace(getattr(cfg.rules, name), **changes)
            cfg = dataclasses.replace(cfg, rules=dataclasses.replace(cfg.rules, **{name: r}))
        super().__init__(T0 + timedelta(days=2), cfg=cfg)

    def line(self, at: float, pid: int, message: str) -> list[Finding]:
        return self.feed(f"{stamp(at)} h sshd[{pid}]: {message}")


def test_one_connection_is_one_attempt_however_its_lines_are_spread() -> None:
    f = Feed()
    f.line(0, 500, "Invalid user ghost from 198.51.100.7 port 4000")
    f.line(3, 500, "Failed password for invalid user ghost from 198.51.100.7 port 4000 ssh2")
    f.line(4, 500, "Connection closed by invalid user ghost 198.51.100.7 port 4000 [preauth]")
    assert f.failures("198.51.100.7") == 1
    # LoginGraceTime at its default lets a connection live 120 s: still one attempt.
    f.line(200, 501, "Failed password for root from 198.51.100.7 port 4001 ssh2")
    f.line(
        320, 501, "Connection closed by authenticating user root 198.51.100.7 port 4001 [preauth]"
    )
    assert f.failures("198.51.100.7") == 2


def test_a_reused_pid_is_a_new_connection() -> None:
    """The kernel gives pid 4242 to a later connection from another address: its lines are
    its own attempt, not follow-ups of the first one (which hid them from detection)."""
    f = Feed()
    f.line(0, 4242, "Failed password for root from 198.51.100.7 port 4000 ssh2")
    later = SESSION_MAX_AGE + 3600
    # A scanner that only opens and closes a connection: its one line is all it writes.
    f.line(
        later, 4242, "Connection closed by authenticating user root 203.0.113.9 port 5 [preauth]"
    )
    assert f.failures("203.0.113.9") == 1
    # An address whose connection on a reused pid says "Invalid user" and then fails: one
    # attempt, however old the pid's previous connection.
    f.line(later + 10, 4343, "Invalid user old from 192.0.2.1 port 6000")
    again = later * 2
    f.line(again, 4343, "Invalid user ghost from 203.0.113.10 port 7000")
    f.line(
        again + 1, 4343, "Failed password for invalid user ghost from 203.0.113.10 port 7000 ssh2"
    )
    assert f.failures("203.0.113.10") == 1


def test_a_reused_pid_after_a_pam_prompt_counts_its_own_failure() -> None:
    """sshd's "PAM: Authentication failure" line waits for the Failed line that restates
    it; on a pid reused an hour later, the new connection's Failed line is its own."""
    f = Feed()
    f.line(0, 77, "error: PAM: Authentication failure for root from 198.51.100.7")
    later = SESSION_MAX_AGE + 3600
    f.line(later, 77, "Failed keyboard-interactive/pam for root from 203.0.113.9 port 5 ssh2")
    assert f.failures("203.0.113.9") == 1
    # Within one connection the pair is one prompt.
    f.line(later + 5, 78, "error: PAM: Authentication failure for root from 203.0.113.20")
    f.line(later + 6, 78, "Failed keyboard-interactive/pam for root from 203.0.113.20 port 6 ssh2")
    assert f.failures("203.0.113.20") == 1
    assert 78 not in f.engine.pam_pending and "78" not in f.engine.pam_pending


def test_the_memory_of_connections_is_bounded_by_time() -> None:
    """A month of attacks used to keep 100,000 connections (and their pid strings, ~16 MB in
    a 1M-line replay); now only the last SESSION_MAX_AGE of them, whatever the count."""
    f = Feed()
    e = f.engine
    rate = 20  # connections per second of log time
    seconds = 4 * int(SESSION_MAX_AGE)
    largest = 0
    for i in range(seconds * rate):
        at = i / rate
        pid = 10_000 + i
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        f.line(at, pid, f"Invalid user u{i} from {ip} port 4000")
        f.line(at, pid, f"error: PAM: Authentication failure for illegal user u{i} from {ip}")
        largest = max(largest, len(e.counted_sessions), len(e.invalid_sessions), len(e.pam_pending))
    bound = SESSION_MAX_AGE * rate + 2 * (engine_mod.SESSION_EXPIRY_EVERY + 1)
    assert largest <= bound
    assert len(e.counted_sessions) > SESSION_MAX_AGE * rate * 0.9  # recent ones are kept


@pytest.mark.parametrize("gap", [1.0, SESSION_MAX_AGE - 1])
def test_follow_ups_within_a_connection_life_never_count(gap: float) -> None:
    f = Feed()
    for i in range(6):
        pid, port = 900 + i, 4000 + i
        at = i * 1000.0
        f.line(at, pid, f"Failed password for root from 198.51.100.7 port {port} ssh2")
        f.line(
            at + gap,
            pid,
            "error: maximum authentication attempts exceeded for root from 198.51.100.7 "
            f"port {port} ssh2 [preauth]",
        )
        f.line(
            at + gap,
            pid,
            f"Connection closed by authenticating user root 198.51.100.7 port {port} [preauth]",
        )
    assert f.failures("198.51.100.7") == 6


def test_lines_stamped_in_the_past_expire_nothing_live() -> None:
    """Expiry runs in log time, from the stream's own stamps. Lines stamped hours earlier (a
    late file, or a local user's forged lines) between a connection's failure and its
    follow-up must not make detection forget the connection and count the follow-up too."""
    f = Feed()
    at = 7200.0
    f.line(at, 600, "Failed password for root from 198.51.100.7 port 4000 ssh2")
    for i in range(3 * (engine_mod.SESSION_EXPIRY_EVERY + 1)):  # expiry runs several times
        f.line(i * 0.1, 20_000 + i, f"Invalid user old{i} from 10.9.{i >> 8}.{i & 255} port 9")
    assert "600" in f.engine.counted_sessions
    f.line(
        at + 1,
        600,
        "Connection closed by authenticating user root 198.51.100.7 port 4000 [preauth]",
    )
    assert f.failures("198.51.100.7") == 1
