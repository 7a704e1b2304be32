"""Configuration: YAML in, frozen dataclasses out, with errors an operator can act on.

Every key has a default, so an empty file is a valid configuration. The schema *is* the
dataclasses below: a generic walker checks each YAML value against the field's type hint and
metadata (ranges, secrets), and reports every problem with the file name, the dotted key path
(``notify.channels[1].port``), the bad value and what was expected. A reload builds a whole new
:class:`Config` and the daemon swaps it in at once; nothing is mutated in place.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import addresses
from .timefmt import parse_duration

DEFAULT_CONFIG_PATH = "/etc/sshmonitor.yaml"
DEFAULT_STATE_DIR = "/var/lib/sshmonitor"
DEFAULT_RUNTIME_DIR = "/run/sshmonitor"


class Duration(float):
    """Seconds, written in YAML as a number or as ``30s``, ``10m``, ``1h30m``, ``2d``, ``1w``."""

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"


class Secret(str):
    """A secret string. Its repr never shows the value, so it cannot leak into logs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _close_matches(word: str, choices: list[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """difflib's suggestions for a misspelt key, imported only when a config has one."""
    import difflib

    return difflib.get_close_matches(word, choices, n=n, cutoff=cutoff)


def _f(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with schema metadata (``min``, ``max``, ``secret``, ``help``)."""
    if isinstance(default, list | dict | tuple) or dataclasses.is_dataclass(default):
        value = default
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- schema

JOURNAL_MATCHES: tuple[str, ...] = (
    "_COMM=sshd",
    "_COMM=sshd-session",
    "_COMM=sshd-auth",
    "_COMM=sudo",
    "_COMM=su",
    "_COMM=sftp-server",
    "_SYSTEMD_UNIT=ssh.service",
    "_SYSTEMD_UNIT=sshd.service",
    "SYSLOG_IDENTIFIER=sshd",
    "SYSLOG_IDENTIFIER=sshd-session",
    "SYSLOG_IDENTIFIER=sudo",
    "SYSLOG_IDENTIFIER=su",
    "SYSLOG_IDENTIFIER=internal-sftp",
    "SYSLOG_IDENTIFIER=systemd-logind",
)


# Where distributions install sshd and the helpers it runs (OpenSSH 9.8+ splits the
# per-connection work into sshd-session and sshd-auth). journald records the resolved
# /proc/PID/exe, so on merged-/usr systems /sbin/sshd shows as /usr/sbin/sshd.
SSHD_EXES: tuple[str, ...] = (
    "/usr/sbin/sshd",
    "/usr/bin/sshd",  # Arch
    "/usr/lib/openssh/sshd-session",  # Debian, Ubuntu
    "/usr/lib/openssh/sshd-auth",
    "/usr/libexec/openssh/sshd-session",  # Fedora, RHEL
    "/usr/libexec/openssh/sshd-auth",
    "/usr/lib/ssh/sshd-session",  # Arch, Alpine
    "/usr/lib/ssh/sshd-auth",
    "/usr/libexec/ssh/sshd-session",  # openSUSE
    "/usr/libexec/ssh/sshd-auth",
    "/usr/libexec/sshd-session",
    "/usr/libexec/sshd-auth",
    "/usr/local/sbin/sshd",  # built from source
    "/usr/local/libexec/sshd-session",
    "/usr/local/libexec/sshd-auth",
)

# The other programs whose records the audit trail reads: sudo (classic, Ubuntu's sudo.ws,
# sudo-rs), su (util-linux, shadow, sudo-rs), the external sftp-server, systemd-logind.
AUDIT_EXES: tuple[str, ...] = (
    "/usr/bin/sudo",
    "/usr/bin/sudo.ws",
    "/usr/lib/cargo/bin/sudo",
    "/usr/bin/su",
    "/bin/su",
    "/usr/lib/cargo/bin/su",
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/ssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/local/libexec/sftp-server",
    "/usr/lib/systemd/systemd-logind",
    "/lib/systemd/systemd-logind",
)


@dataclass(frozen=True)
class JournalTrustConfig:
    """Which journal records count (docs/configuration.md, docs/security.md).

    Only fields journald itself sets (``_EXE``, ``_UID``, ``_TRANSPORT``, ``_SYSTEMD_UNIT``),
    never the ones a sender chooses (``SYSLOG_IDENTIFIER``, ``SYSLOG_PID``; ``_COMM`` is a
    program name anyone can give a copy of any program)."""

    sshd_exe: tuple[str, ...] = _f(
        SSHD_EXES, help="sshd binaries (_EXE) whose records may count toward bans and findings"
    )
    sshd_users: tuple[str, ...] = _f(
        ("root", "sshd"),
        help="users (_UID; names or numbers) such records must run as: root and privsep",
    )
    sshd_exited: bool = _f(
        True,
        help="also count sshd's last words (no _EXE: it exited first) sent as sshd_users",
    )
    audit_exe: tuple[str, ...] = _f(
        AUDIT_EXES, help="sudo, su, sftp-server and logind binaries (_EXE): audit trail only"
    )
    transports: tuple[str, ...] = _f(
        ("syslog", "journal", "stdout"), help="_TRANSPORT values a counted record may arrive by"
    )
    sshd_units: tuple[str, ...] = _f(
        (), help="if set, units (_SYSTEMD_UNIT, shell patterns) counted sshd records come from"
    )


@dataclass(frozen=True)
class JournalConfig:
    journalctl: str = _f("journalctl", help="journalctl binary to run")
    directory: str | None = _f(None, help="read journal files from this directory")
    files: tuple[str, ...] = _f((), help="read these journal files instead of the system journal")
    matches: tuple[str, ...] = _f(
        JOURNAL_MATCHES, help="journalctl match arguments (OR-ed): which records are read"
    )
    trusted: JournalTrustConfig = _f(
        JournalTrustConfig(), help="which of the records read count (never `matches`)"
    )


@dataclass(frozen=True)
class AuditConfig:
    enabled: bool = _f(False, help="follow auditd's log for commands (docs/auditd.md)")
    path: str = _f("/var/log/audit/audit.log", help="auditd's log_file")
    end_of_event_timeout: Duration = _f(
        Duration(2.0), min=0.1, max=60, help="close an event whose last record never came"
    )


@dataclass(frozen=True)
class SourcesConfig:
    mode: Literal["auto", "file", "journal"] = _f(
        "auto", help="auto: the journal where journald runs, else the log files"
    )
    files: tuple[str, ...] = _f(("/var/log/auth.log", "/var/log/secure"), help="files to follow")
    start_at: Literal["end", "beginning"] = _f("end", help="where to start with no saved position")
    poll_interval: Duration = _f(Duration(1.0), min=0.05, max=60, help="stat() re-check period")
    max_line_length: int = _f(16384, min=256, max=1048576, help="longer lines are cut")
    timezone: str = _f(
        "local", timezone=True, help="zone of classic syslog timestamps (IANA name or local)"
    )
    journal: JournalConfig = _f(JournalConfig())
    audit: AuditConfig = _f(AuditConfig())


Action = Literal["alert", "ban", "both"]
Severity = Literal["info", "warning", "high", "critical"]

FAILURE_WEIGHTS: dict[str, int] = {
    "auth_failure": 1,
    "invalid_user": 1,
    "max_auth_exceeded": 1,
    "not_allowed": 1,
    "penalty": 1,
    # Counted only for addresses that never logged in successfully: scanners get banned,
    # a user whose client drops a connection does not.
    "preauth_disconnect": 1,
    "protocol_error": 1,
}


@dataclass(frozen=True)
class BruteforceRule:
    enabled: bool = _f(True)
    threshold: int = _f(5, min=1, max=1000, help="maxretry: failures from one address")
    window: Duration = _f(Duration(600), min=1, max=7 * 86400, help="findtime")
    severity: Severity = _f("high")
    action: Action = _f("both")


@dataclass(frozen=True)
class SlowBruteforceRule:
    enabled: bool = _f(True)
    threshold: int = _f(20, min=1, max=1000)
    window: Duration = _f(Duration(86400), min=1, max=30 * 86400)
    severity: Severity = _f("high")
    action: Action = _f("both")


@dataclass(frozen=True)
class DistributedRule:
    enabled: bool = _f(True)
    threshold: int = _f(10, min=2, max=100000, help="distinct addresses failing on one user")
    window: Duration = _f(Duration(3600), min=1, max=7 * 86400)
    severity: Severity = _f("warning")
    action: Literal["alert"] = _f("alert")


@dataclass(frozen=True)
class EnumerationRule:
    enabled: bool = _f(True)
    threshold: int = _f(5, min=2, max=10000, help="distinct invalid user names from one address")
    window: Duration = _f(Duration(600), min=1, max=7 * 86400)
    severity: Severity = _f("high")
    action: Action = _f("both")


@dataclass(frozen=True)
class SuccessAfterFailuresRule:
    enabled: bool = _f(True)
    threshold: int = _f(
        3,
        min=1,
        max=1000,
        help="unexplained failed attempts from the login's address (its /64) within window",
    )
    spray_threshold: int = _f(
        5, min=2, max=100000, help="distinct addresses failing against the user within window"
    )
    window: Duration = _f(Duration(3600), min=1, max=7 * 86400)
    severity: Severity = _f("critical", help="a credible compromise (docs/detection.md)")
    weak_severity: Severity = _f(
        "info",
        help="the same counts when the evidence points to the user (own name, usual network) "
        "or the login used a key: recorded, not paged at the default notify.min_severity",
    )
    action: Literal["alert"] = _f("alert")


@dataclass(frozen=True)
class RootLoginRule:
    enabled: bool = _f(True)
    severity: Severity = _f("high")
    routine_severity: Severity = _f(
        "info", help="a root login with a key root used before, from a network it used before"
    )
    action: Literal["alert"] = _f("alert")


@dataclass(frozen=True)
class OffHoursRule:
    enabled: bool = _f(False)
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = _f(
        ("mon", "tue", "wed", "thu", "fri"), help="working days"
    )
    hours: str = _f("08:00-19:00", hours=True, help="working hours, HH:MM-HH:MM")
    timezone: str = _f("local", timezone=True)
    severity: Severity = _f("warning")
    action: Literal["alert"] = _f("alert")


@dataclass(frozen=True)
class NewSourceRule:
    enabled: bool = _f(True)
    ipv4_prefix: int = _f(24, min=8, max=32)
    ipv6_prefix: int = _f(48, min=16, max=128)
    learning: Duration = _f(Duration(7 * 86400), min=0, help="no alerts while history is young")
    severity: Severity = _f("warning")
    action: Literal["alert"] = _f("alert")


@dataclass(frozen=True)
class NewKeyRule:
    enabled: bool = _f(True)
    severity: Severity = _f("warning")
    action: Literal["alert"] = _f("alert")


@dataclass(frozen=True)
class RulesConfig:
    bruteforce: BruteforceRule = _f(BruteforceRule())
    slow_bruteforce: SlowBruteforceRule = _f(SlowBruteforceRule())
    distributed: DistributedRule = _f(DistributedRule())
    enumeration: EnumerationRule = _f(EnumerationRule())
    success_after_failures: SuccessAfterFailuresRule = _f(SuccessAfterFailuresRule())
    root_login: RootLoginRule = _f(RootLoginRule())
    off_hours: OffHoursRule = _f(OffHoursRule())
    new_source: NewSourceRule = _f(NewSourceRule())
    new_key: NewKeyRule = _f(NewKeyRule())


@dataclass(frozen=True)
class DetectionConfig:
    ipv6_prefix: int = _f(64, min=32, max=128, help="IPv6 addresses are counted per this prefix")
    max_keys: int = _f(1_000_000, min=1000, max=50_000_000, help="tracked addresses at most")
    failure_weights: dict[str, int] = _f(dict(FAILURE_WEIGHTS), weights=True)
    rules: RulesConfig = _f(RulesConfig())


@dataclass(frozen=True)
class MaxBanPrefix:
    ipv4: int = _f(16, min=1, max=32, help="widest IPv4 network a ban may cover")
    ipv6: int = _f(32, min=1, max=128, help="widest IPv6 network a ban may cover")


@dataclass(frozen=True)
class ResponseConfig:
    enabled: bool = _f(True, help="ban addresses in the firewall (false: detect and alert only)")
    dry_run: bool = _f(False, help="log and store what would be banned; touch nothing")
    backend: Literal["nftables", "ipset", "command", "none"] = _f("nftables")
    bantime: Duration = _f(Duration(600), min=1, max=365 * 86400, help="first ban")
    bantime_factor: float = _f(4.0, min=1.0, max=100.0, help="multiplier per repeat offence")
    bantime_max: Duration = _f(Duration(7 * 86400), min=1, max=365 * 86400)
    alert_allowlisted: bool = _f(True, help="still alert on allowlisted addresses")
    max_ban_prefix: MaxBanPrefix = _f(
        MaxBanPrefix(), help="wider bans are refused unless `sshmonitor ban --force` (/0 always)"
    )
    nft_table: str = _f("sshmonitor", help="nftables table (family inet)")
    ipset_names: tuple[str, ...] = _f(("sshmonitor4", "sshmonitor6"))
    ban_command: tuple[str, ...] = _f((), help="command backend: argv with {ip} {prefix} {seconds}")
    unban_command: tuple[str, ...] = _f((), help="command backend: argv with {ip} {prefix}")


@dataclass(frozen=True)
class ChannelBase:
    name: str | None = _f(None, help="label used in logs; defaults to the type")
    min_severity: Severity = _f("warning", help="drop alerts below this severity")
    include_rules: tuple[str, ...] = _f((), help="only these rules (empty: all)")
    exclude_rules: tuple[str, ...] = _f((), help="never these rules")


@dataclass(frozen=True)
class ForwardEmailChannel(ChannelBase):
    type: Literal["forwardemail"] = "forwardemail"
    api_key: Secret | None = _f(None, secret=True, required=True, help="Forward Email API key")
    base_url: str = _f("https://api.forwardemail.net", help="API base URL")
    sender: str = _f("", required=True, address=True, help="From: address")
    to: tuple[str, ...] = _f((), required=True, address=True, help="recipients")
    timeout: Duration = _f(Duration(15), min=1, max=300)


@dataclass(frozen=True)
class SmtpChannel(ChannelBase):
    type: Literal["smtp"] = "smtp"
    host: str = _f("localhost", host=True)
    port: int = _f(587, min=1, max=65535)
    tls: Literal["starttls", "implicit", "none"] = _f("starttls")
    username: str | None = _f(None)
    password: Secret | None = _f(None, secret=True)
    sender: str = _f("", required=True, address=True)
    to: tuple[str, ...] = _f((), required=True, address=True)
    timeout: Duration = _f(Duration(30), min=1, max=300)
    ca_file: str | None = _f(None, help="trust this CA (or self-signed certificate) for TLS")
    tls_verify: bool = _f(True, help="verify the server's certificate (leave on)")


@dataclass(frozen=True)
class SendmailChannel(ChannelBase):
    type: Literal["sendmail"] = "sendmail"
    path: str = _f("/usr/sbin/sendmail")
    sender: str = _f("", required=True, address=True)
    to: tuple[str, ...] = _f((), required=True, address=True)


@dataclass(frozen=True)
class WebhookChannel(ChannelBase):
    type: Literal["webhook"] = "webhook"
    url: str = _f("", required=True)
    format: Literal["json", "slack"] = _f("json")
    token: Secret | None = _f(None, secret=True, help="sent as Authorization: Bearer")
    headers: dict[str, str] = _f({})
    timeout: Duration = _f(Duration(15), min=1, max=300)


@dataclass(frozen=True)
class LogChannel(ChannelBase):
    type: Literal["log"] = "log"


Channel = ForwardEmailChannel | SmtpChannel | SendmailChannel | WebhookChannel | LogChannel
CHANNEL_TYPES: dict[str, type] = {
    "forwardemail": ForwardEmailChannel,
    "smtp": SmtpChannel,
    "sendmail": SendmailChannel,
    "webhook": WebhookChannel,
    "log": LogChannel,
}


@dataclass(frozen=True)
class ReportConfig:
    enabled: bool = _f(False, help="send a periodic summary report")
    time: str = _f("07:00", clock=True, help="local time of day to send it, HH:MM")
    period: Duration = _f(Duration(86400), min=3600, max=31 * 86400, help="what it covers")
    top: int = _f(10, min=1, max=1000, help="rows per table")
    channels: tuple[str, ...] = _f((), help="channel names or types; empty: all channels")


@dataclass(frozen=True)
class NotifyConfig:
    throttle: Duration = _f(Duration(3600), min=0, help="same rule+subject folded for this long")
    digest_window: Duration = _f(Duration(60), min=0, max=3600)
    hourly_cap: int = _f(30, min=1, help="messages per channel per hour")
    max_age: Duration = _f(Duration(86400), min=60, help="undelivered alerts are dropped after")
    retry_initial: Duration = _f(Duration(5), min=0.1, max=3600, help="first retry delay")
    retry_max: Duration = _f(Duration(3600), min=1, max=86400, help="longest retry delay")
    channels: tuple[Channel, ...] = _f(())
    report: ReportConfig = _f(ReportConfig())


@dataclass(frozen=True)
class RetentionConfig:
    events: int | None = _f(None, min=1, max=36500, help="days; default: retention_days")
    sessions: int | None = _f(None, min=1, max=36500)
    commands: int | None = _f(None, min=1, max=36500)
    transfers: int | None = _f(None, min=1, max=36500)


@dataclass(frozen=True)
class StoreConfig:
    dir: str = _f(DEFAULT_STATE_DIR, help="state directory (SQLite database)")
    retention_days: int = _f(90, min=1, max=36500)
    retention: RetentionConfig = _f(RetentionConfig())


@dataclass(frozen=True)
class SessionsConfig:
    enabled: bool = _f(True, help="track logins as sessions (the audit trail)")
    lost_after: Duration = _f(Duration(7 * 86400), min=60, help="close unended sessions after")
    check_pids: Literal["auto", "yes", "no"] = _f(
        "auto", help="close sessions whose sshd pid is gone (auto: when /proc shows them)"
    )


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = _f("info")
    format: Literal["auto", "console", "json", "journal"] = _f("auto")


@dataclass(frozen=True)
class ControlConfig:
    socket: str = _f(DEFAULT_RUNTIME_DIR + "/control.sock", help="operator command socket")


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (docs/monitoring.md). Off while ``listen`` is empty."""

    listen: str = _f(
        "",
        listen=True,
        help='host:port for GET /metrics, e.g. "127.0.0.1:9797" or "[::1]:9797" (port 0: any '
        "free port); empty: no endpoint. Anyone who can reach it sees the counters: keep it "
        "on localhost or a monitoring network",
    )


@dataclass(frozen=True)
class FleetCorrelate:
    """Failed attempts from one address (or IPv6 /64) across the fleet's hosts."""

    enabled: bool = _f(True)
    threshold: int = _f(10, min=2, max=1_000_000, help="attempts in window, all hosts together")
    window: Duration = _f(Duration(3600), min=60, max=7 * 86400)
    min_hosts: int = _f(3, min=2, max=10_000, help="on at least this many hosts")


@dataclass(frozen=True)
class FleetSpray:
    """Failed attempts against one user name across the fleet's hosts. (Not FleetCorrelate
    with other defaults: a section given in part takes its class's defaults for the rest.)"""

    enabled: bool = _f(True)
    threshold: int = _f(20, min=2, max=1_000_000, help="attempts in window, all hosts together")
    window: Duration = _f(Duration(3600), min=60, max=7 * 86400)
    min_hosts: int = _f(3, min=2, max=10_000, help="on at least this many hosts")


@dataclass(frozen=True)
class FleetConfig:
    """Fleet mode (docs/fleet.md): ship this host's store to one PostgreSQL, share bans,
    detect across hosts. Off while ``database`` is empty."""

    database: str = _f("", help="libpq URI of the fleet's PostgreSQL; empty: no fleet")
    password: Secret = _f(Secret(""), secret=True, help="or password_file; never logged")
    host: str = _f("", help="this host's name in the fleet (default: the hostname)")
    share_bans: bool = _f(True, help="apply bans decided anywhere in the fleet")
    reconcile: Duration = _f(
        Duration(60), min=5, max=86400, help="compare the firewall with the fleet's bans every"
    )
    correlate: FleetCorrelate = _f(FleetCorrelate())
    spray: FleetSpray = _f(FleetSpray())


@dataclass(frozen=True)
class Config:
    sources: SourcesConfig = _f(SourcesConfig())
    detection: DetectionConfig = _f(DetectionConfig())
    response: ResponseConfig = _f(ResponseConfig())
    notify: NotifyConfig = _f(NotifyConfig())
    store: StoreConfig = _f(StoreConfig())
    sessions: SessionsConfig = _f(SessionsConfig())
    log: LogConfig = _f(LogConfig())
    control: ControlConfig = _f(ControlConfig())
    metrics: MetricsConfig = _f(MetricsConfig())
    fleet: FleetConfig = _f(FleetConfig())
    allowlist: tuple[IPNetwork, ...] = _f((), help="addresses and networks never banned")
    # Not YAML keys: where the config came from and what the loader warned about.
    path: str | None = _f(None, internal=True)
    warnings: tuple[str, ...] = _f((), internal=True)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    key: str
    message: str


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists every reason."""

    def __init__(self, path: str | None, problems: list[Problem]) -> None:
        self.path = path or "<config>"
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [
            f"{self.path}: {p.key}: {p.message}" if p.key else f"{self.path}: {p.message}"
            for p in self.problems
        ]


# --------------------------------------------------------------------------- loading

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def parse_listen(text: str) -> tuple[str, int] | None:
    """``127.0.0.1:9797`` → ("127.0.0.1", 9797); ``[::1]:0`` → ("::1", 0); None if it is not
    host:port with a port from 0 to 65535."""
    m = re.fullmatch(r"\s*(?:\[([0-9A-Fa-f:.%\w]+)\]|([^\s:\[\]]+)):(\d{1,5})\s*", text)
    if m is None or int(m.group(3)) > 65535:
        return None
    return (m.group(1) or m.group(2)), int(m.group(3))


def address_problem(value: str) -> str | None:
    """Why ``value`` cannot be a configured e-mail sender or recipient, or None. A control
    character (a line break, NUL, ...) could break or add a header; an RFC 2047 encoded word
    (``=?``) is decoded by mail readers, and by Python's email package, into text the address
    does not hold: another recipient list, say."""
    if not value.isprintable():
        return "must not contain control characters (line breaks, NUL, tabs...)"
    if "=?" in value:
        return 'must not contain "=?" (an RFC 2047 encoded word, which mail readers decode)'
    return None


def host_problem(value: str) -> str | None:
    """Why ``value`` cannot be a host name or address to connect to, or None: empty, or an
    empty or over-long (> 63) label in a dotted name. Caught here, a typo is one clear line at
    start; caught by the resolver, it would be retried as an outage for ever."""
    name = value.strip()
    if not name:
        return "must not be empty"
    if ":" in name:  # an IPv6 address: the resolver judges it
        return None
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if any(not label for label in labels):
        return "has an empty label (two dots in a row, or a leading dot)"
    if any(len(label) > 63 for label in labels if label.isascii()):
        return "has a label longer than 63 characters"
    return None


def parse_hours(text: str) -> tuple[int, int] | None:
    """``08:00-19:00`` → (480, 1140) minutes; an overnight span (22:00-06:00) is allowed."""
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if m is None:
        return None
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
        return None
    return h1 * 60 + m1, h2 * 60 + m2


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{shown} ({kind})"


class _Walker:
    def __init__(self, path: str | None, base_dir: Path) -> None:
        self.path = path
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, message))

    # Each converter returns the converted value, or raises _Bad after recording nothing.
    def convert(self, tp: Any, value: Any, key: str, meta: typing.Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            rest = [a for a in args if a is not type(None)]
            if rest == [ipaddress.IPv4Network, ipaddress.IPv6Network]:
                return self.network(value, key)
            if all(dataclasses.is_dataclass(a) for a in rest):
                return self.channel(value, key)
            if len(rest) == 1:
                return self.convert(rest[0], value, key, meta)
            raise AssertionError(f"unsupported union {tp}")
        if origin is Literal:
            if value not in args:
                choices = ", ".join(str(a) for a in args)
                hint = ""
                if isinstance(value, str):
                    close = _close_matches(value, [str(a) for a in args], n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(key, f"expected one of {choices}, got {_describe(value)}{hint}")
                raise _Bad
            return value
        if origin is tuple:
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                value = [value]  # a single item where a list is expected is unambiguous
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {_describe(value)}")
                raise _Bad
            out, bad = [], False
            for i, item in enumerate(value):
                try:
                    out.append(self.convert(args[0], item, f"{key}[{i}]", meta))
                except _Bad:
                    bad = True
            if bad:
                raise _Bad
            return tuple(out)
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(key, f"expected a mapping, got {_describe(value)}")
                raise _Bad
            if args[1] is int:
                return self.weights(value, key, meta)
            out_d: dict[str, str] = {}
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, str | int | float):
                    self.fail(f"{key}.{k}", f"expected a string value, got {_describe(v)}")
                    raise _Bad
                out_d[k] = str(v)
            return out_d
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self.section(tp, value, key)
        if tp is bool:
            if not isinstance(value, bool):
                self.fail(key, f"expected true or false, got {_describe(value)}")
                raise _Bad
            return value
        if tp is Duration:
            try:
                seconds = parse_duration(value)
            except ValueError:
                self.fail(
                    key,
                    "expected a duration like 30s, 10m, 1h or a number of seconds, "
                    f"got {_describe(value)}",
                )
                raise _Bad from None
            if seconds < 0:
                self.fail(key, f"must not be negative, got {_describe(value)}")
                raise _Bad
            self.check_range(seconds, key, meta, value)
            return Duration(seconds)
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(key, f"expected an integer, got {_describe(value)}")
                raise _Bad
            self.check_range(value, key, meta, value)
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(key, f"expected a number, got {_describe(value)}")
                raise _Bad
            self.check_range(value, key, meta, value)
            return float(value)
        if (
            tp is str
            and meta.get("clock")
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            # YAML 1.1 reads an unquoted 23:30 as the base-60 number 1410.
            value = f"{value // 60:02d}:{value % 60:02d}"
        if tp is str or tp is Secret:
            if not isinstance(value, str):
                self.fail(key, f"expected a string, got {_describe(value)}")
                raise _Bad
            if meta.get("secret"):
                return Secret(self.expand_env(value, key))
            if meta.get("timezone") and value not in ("local", "UTC"):
                self.check_zone(value, key)
            if meta.get("clock") and not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value.strip()):
                self.fail(key, f"expected a time of day HH:MM (e.g. 07:00), got {_describe(value)}")
                raise _Bad
            if meta.get("listen") and value.strip() and parse_listen(value) is None:
                self.fail(
                    key,
                    'expected host:port, e.g. "127.0.0.1:9797" or "[::1]:9797" (port 0 picks a '
                    f"free one), or empty for no endpoint; got {_describe(value)}",
                )
                raise _Bad
            problem = (address_problem(value) if meta.get("address") else None) or (
                host_problem(value) if meta.get("host") else None
            )
            if problem:
                self.fail(key, f"{problem}; got {_describe(value)}")
                raise _Bad
            if meta.get("hours") and parse_hours(value) is None:
                self.fail(key, f"expected HH:MM-HH:MM (e.g. 08:00-19:00), got {_describe(value)}")
                raise _Bad
            return value
        raise AssertionError(f"unsupported type {tp!r} at {key}")

    def check_range(self, num: float, key: str, meta: typing.Mapping[str, Any], raw: Any) -> None:
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and num < lo) or (hi is not None and num > hi):
            if lo is not None and hi is not None:
                want = f"between {lo} and {hi}"
            elif lo is not None:
                want = f"at least {lo}"
            else:
                want = f"at most {hi}"
            self.fail(key, f"expected a value {want}, got {_describe(raw)}")
            raise _Bad

    def weights(
        self, value: dict[Any, Any], key: str, meta: typing.Mapping[str, Any]
    ) -> dict[str, int]:
        out = dict(FAILURE_WEIGHTS)
        bad = False
        for k, v in value.items():
            if k not in FAILURE_WEIGHTS:
                close = _close_matches(str(k), list(FAILURE_WEIGHTS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(
                    f"{key}.{k}",
                    f"not a failure kind{hint}; failure kinds: " + ", ".join(FAILURE_WEIGHTS),
                )
                bad = True
            elif isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
                self.fail(f"{key}.{k}", f"expected an integer weight 0-100, got {_describe(v)}")
                bad = True
            else:
                out[k] = v
        if bad:
            raise _Bad
        return out

    def check_zone(self, value: str, key: str) -> None:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception:
            self.fail(
                key, f"unknown time zone {value!r} (an IANA name like Europe/Berlin, or local)"
            )
            raise _Bad from None

    def network(self, value: Any, key: str) -> IPNetwork:
        if not isinstance(value, str):
            self.fail(key, f"expected an IP address or network, got {_describe(value)}")
            raise _Bad
        try:
            net = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            try:
                fixed = ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                self.fail(key, f"expected an IP address or network, got {_describe(value)}")
                raise _Bad from exc
            self.fail(key, f"{value!r} has host bits set (did you mean {fixed}?)")
            raise _Bad from exc
        # The one normalisation every other path uses (IPv4-mapped, zone ids).
        return addresses.normalize_network(net)

    def expand_env(self, value: str, key: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                self.fail(key, f"environment variable {name} is not set")
                raise _Bad
            return os.environ[name]

        return _ENV_RE.sub(sub, value)

    def read_secret_file(self, filename: Any, key: str) -> Secret:
        if not isinstance(filename, str) or not filename:
            self.fail(key, f"expected a file name, got {_describe(filename)}")
            raise _Bad
        p = Path(filename)
        if not p.is_absolute():
            p = self.base_dir / p
        try:
            st = p.stat()
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            self.fail(key, f"cannot read secret file {str(p)!r}: {exc.strerror or exc}")
            raise _Bad from None
        except UnicodeDecodeError:
            self.fail(key, f"secret file {str(p)!r} is not UTF-8 text")
            raise _Bad from None
        # Group-readable is how the service user reads a root-owned secret (0640
        # root:sshmonitor); readable by everyone, or writable by anyone else, is not.
        if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
            self.warnings.append(
                f"{self.path or '<config>'}: {key}: secret file {str(p)!r} is readable or "
                f"writable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 640 it"
            )
        secret = text.strip()
        if not secret:
            self.fail(key, f"secret file {str(p)!r} is empty")
            raise _Bad
        return Secret(secret)

    def section(self, cls: type, value: Any, key: str) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(key or "(top level)", f"expected a mapping, got {_describe(value)}")
            raise _Bad
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        known = set(fields) | {f"{n}_file" for n, f in fields.items() if f.metadata.get("secret")}
        kwargs: dict[str, Any] = {}
        bad = False
        for raw_key in value:
            name = str(raw_key)
            if name not in known:
                close = _close_matches(name, sorted(known), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                valid = ", ".join(sorted(known))
                self.fail(_join(key, name), f"unknown key{hint}; valid keys here: {valid}")
                bad = True
        # Walk in the file's order so problems are reported top to bottom.
        order = [str(k).removesuffix("_file") if str(k) not in fields else str(k) for k in value]
        for name in dict.fromkeys(n for n in order if n in fields):
            f = fields[name]
            sub = _join(key, name)
            meta = f.metadata
            if meta.get("secret") and f"{name}_file" in value:
                if name in value:
                    self.fail(sub, f"give either {name} or {name}_file, not both")
                    bad = True
                    continue
                try:
                    kwargs[name] = self.read_secret_file(value[f"{name}_file"], sub + "_file")
                except _Bad:
                    bad = True
                continue
            if name not in value:
                continue
            try:
                kwargs[name] = self.convert(hints[name], value[name], sub, meta)
            except _Bad:
                bad = True
        if bad:
            raise _Bad
        for name, f in fields.items():
            if f.metadata.get("required") and not kwargs.get(name):
                hint = f" (or {name}_file)" if f.metadata.get("secret") else ""
                self.fail(_join(key, name), f"is required for this {_kind(cls)}{hint}")
                bad = True
        if bad:
            raise _Bad
        return cls(**kwargs)

    def channel(self, value: Any, key: str) -> Any:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping with a 'type' key, got {_describe(value)}")
            raise _Bad
        kind = value.get("type")
        if kind not in CHANNEL_TYPES:
            choices = ", ".join(CHANNEL_TYPES)
            hint = ""
            if isinstance(kind, str):
                close = _close_matches(kind, list(CHANNEL_TYPES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.fail(f"{key}.type", f"expected one of {choices}, got {_describe(kind)}{hint}")
            raise _Bad
        return self.section(CHANNEL_TYPES[kind], value, key)


class _Bad(Exception):
    """Internal: a problem was recorded; unwind to the enclosing section."""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _kind(cls: type) -> str:
    t = getattr(cls, "type", None)
    return f"{t} channel" if isinstance(t, str) else "section"


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error, not a silent override."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        k = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if isinstance(k, str | int | float | bool) and k in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {k!r}", key_node.start_mark
            )
        seen[k] = True
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def parse_config(text: str, path: str | None = None) -> Config:
    """Build a Config from YAML text; raise ConfigError listing every problem."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [Problem("", f"{where}invalid YAML: {problem}")]) from None
    base_dir = Path(path).resolve().parent if path else Path.cwd()
    walker = _Walker(path, base_dir)
    try:
        cfg = walker.section(Config, data, "")
    except _Bad:
        raise ConfigError(path, walker.problems) from None
    widest = cfg.response.max_ban_prefix.ipv6
    if cfg.detection.ipv6_prefix < widest:
        raise ConfigError(
            path,
            [
                Problem(
                    "detection.ipv6_prefix",
                    f"counts IPv6 attackers per /{cfg.detection.ipv6_prefix}, wider than "
                    f"response.max_ban_prefix.ipv6 (/{widest}): every such ban would be "
                    f"refused; use {widest} or more",
                )
            ],
        )
    return dataclasses.replace(cfg, path=path, warnings=tuple(walker.warnings))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at ``path``."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(p, [Problem("", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(p, [Problem("", "not UTF-8 text")]) from None
    return parse_config(text, p)
