#!/usr/bin/env python3
"""Generate a realistic Debian 12 ``/var/log/auth.log`` (classic syslog format) with ground truth.

    bench/gen_authlog.py --lines 1000000 --out /tmp/auth.log [--seed 1] [--start 2026-11-17]

The log covers about a week (``--days``), timestamps never go backwards, and its density per
second follows what a public host sees: a steady background of botnet noise, bursts when a
noisy address runs a brute-force campaign over parallel connections, interactive logins in
office hours, hourly automation, and CRON every minute (a third of the lines). The sshd lines
are OpenSSH 9.2p1's (Debian 12) with UsePAM yes and PasswordAuthentication yes, in the order
sshd and pam_unix write them, including the ones a parser is easily surprised by
(``pam_unix(sshd:auth): check pass; user unknown``, ``PAM service(sshd) ignoring max
retries; 6 > 3``, ``fatal: Timeout before authentication …``, ``error:
kex_exchange_identification: …`` without an address).

Every line belongs to one *category* (see CATEGORIES). The categories of attacker lines that
carry the attacker's address are *attack evidence*, in three tiers:

- ``auth``: a failed authentication or a non-existent user (``Invalid user``, ``Failed
  password``, ``pam_unix(sshd:auth): authentication failure``, ``PAM N more …``, ``maximum
  authentication attempts exceeded``, ``Disconnecting … Too many authentication failures``):
  what fail2ban's sshd filter (mode=normal) and sshguard are meant to catch;
- ``preauth``: a connection that ended before authentication (``Connection closed by
  [invalid|authenticating user X] A port P [preauth]``, ``Disconnected from invalid user …
  [preauth]``, ``Received disconnect … [preauth]``, ``Connection reset … [preauth]``,
  ``fatal: Timeout before authentication for A port P``);
- ``protocol``: a scanner that never spoke SSH properly (``banner exchange … invalid
  format``, ``Unable to negotiate …``, ``Connection closed by A port P`` after a failed
  identification exchange).

Attacker lines with no address (``error: kex_exchange_identification: Connection closed by
remote host``, ``check pass; user unknown``, ``PAM service(sshd) ignoring max retries``) are
not evidence: no tool can attribute them from the line alone. Neither are legitimate users'
mistyped passwords (category ``legit_failed_password``): a tool that matches them is right
to, but they are not an attacker's.

On exit it prints the lines per category to stderr and writes FILE.truth.json: the counts
per category, group and tier, the evidence totals, and per attacking address the evidence
lines, auth-tier lines and password attempts. The file's mtime is set to its last timestamp
(as a real auth.log's is), so year inference of year-less timestamps works.

``classify()`` maps any line of such a file back to its category and address; bench/replay.py
uses it to tell which lines each tool matched.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import ipaddress
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

# ---------------------------------------------------------------------------- categories

# category -> (group, tier). group: attack | legit | cron | system.
# tier (attack group only): auth | preauth | protocol = evidence with an address; none = not.
CATEGORIES: dict[str, tuple[str, str]] = {
    # attack, auth tier
    "invalid_user": ("attack", "auth"),
    "failed_password": ("attack", "auth"),
    "failed_password_invalid": ("attack", "auth"),
    "pam_auth_failure": ("attack", "auth"),
    "pam_more_failures": ("attack", "auth"),
    "max_auth_exceeded": ("attack", "auth"),
    "too_many_failures": ("attack", "auth"),
    # attack, preauth tier
    "closed_invalid_user": ("attack", "preauth"),
    "closed_authenticating_user": ("attack", "preauth"),
    "disconnected_invalid_user": ("attack", "preauth"),
    "disconnected_authenticating_user": ("attack", "preauth"),
    "received_disconnect_preauth": ("attack", "preauth"),
    "closed_preauth": ("attack", "preauth"),
    "reset_preauth": ("attack", "preauth"),
    "timeout_before_auth": ("attack", "preauth"),
    # attack, protocol tier
    "banner_invalid_format": ("attack", "protocol"),
    "unable_to_negotiate": ("attack", "protocol"),
    "closed_after_kex": ("attack", "protocol"),
    "reset_after_kex": ("attack", "protocol"),
    # attack, no address on the line
    "kex_identification": ("attack", "none"),
    "pam_check_pass": ("attack", "none"),
    "pam_ignoring_max_retries": ("attack", "none"),
    # legitimate use
    "accepted_publickey": ("legit", ""),
    "accepted_password": ("legit", ""),
    "legit_failed_password": ("legit", ""),
    "legit_pam_failure": ("legit", ""),
    "sshd_session_opened": ("legit", ""),
    "sshd_session_closed": ("legit", ""),
    "received_disconnect_user": ("legit", ""),
    "disconnected_user": ("legit", ""),
    "logind_new_session": ("legit", ""),
    "logind_logged_out": ("legit", ""),
    "logind_removed_session": ("legit", ""),
    "systemd_user_session": ("legit", ""),
    "sudo_command": ("legit", ""),
    "sudo_session": ("legit", ""),
    "sudo_auth_failure": ("legit", ""),
    "su_session": ("legit", ""),
    # cron and the rest
    "cron_session_opened": ("cron", ""),
    "cron_session_closed": ("cron", ""),
    "sshd_restart": ("system", ""),
}
EVIDENCE_TIERS = ("auth", "preauth", "protocol")
# Shares of the attack lines per attacker profile, and the persistent pools: attackers per
# line of the file and the Zipf exponent of their activity (higher: a few very noisy ones).
PROFILE_SHARES = {"bruteforce": 0.58, "botnet": 0.14, "scanner": 0.22, "enum": 0.06}
POOLS = {"bruteforce": (1 / 500, 1.0), "scanner": (1 / 600, 0.5), "enum": (1 / 2000, 0.8)}
LEGIT_LINES_PER_DAY = 1500  # rough, to size the attack rate; the span absorbs the error


def is_evidence(category: str) -> bool:
    group, tier = CATEGORIES[category]
    return group == "attack" and tier in EVIDENCE_TIERS


# Legitimate users: name -> (uid, addresses they connect from). Attackers never use these.
USERS: dict[str, tuple[int, tuple[str, ...]]] = {
    "alice": (1000, ("203.0.113.10", "2001:db8:1234:5600::10")),
    "bob": (1001, ("198.51.100.77", "198.51.100.78")),
    "carol": (1002, ("192.0.2.44",)),
    "deploy": (1003, ("10.20.0.5",)),
    "backup": (1004, ("10.20.0.9",)),
}
LEGIT_ADDRESSES = frozenset(a for _, addrs in USERS.values() for a in addrs)

# Names botnets try, most tried first (the weights fall off as 1/rank).
BOT_USERS = (  # noqa: SIM905 (a word list reads better as text)
    "admin user test ubuntu oracle postgres guest support git ftpuser debian pi test1 "
    "user1 deploy1 dev hadoop mysql www-data1 centos ec2-user jenkins ansible minecraft "
    "steam administrator sol solana validator es elastic tomcat nginx docker kafka redis "
    "zabbix nagios server web operator usuario teste ubnt vagrant odoo test2 demo "
    "sysadmin backup1 bitcoin node mongodb ts3 teamspeak gitlab jira confluence wordpress "
    "ftp sftp manager admin1 admin123 Admin ADMIN 123 1234 12345 a x temp tmp student "
    "developer prueba frappe erpnext odoo14 nexus sonar grafana prometheus bot testuser "
    "azureuser cloud vps hostname mcserver rust csgo factorio"
).split()
ODD_USERS = ("", "john doe", "admin@example", "\\001", "user;id")  # rare, but sshd logs them

KEX_OFFERS = (
    "diffie-hellman-group14-sha1,diffie-hellman-group-exchange-sha1,diffie-hellman-group1-sha1",
    "diffie-hellman-group1-sha1",
    "diffie-hellman-group-exchange-sha1,diffie-hellman-group1-sha1",
)
BYE_REASONS = ("Bye Bye", "Bye Bye", "Bye", "Normal Shutdown, Thank you for playing")
HOSTKEY_OFFERS = ("ssh-rsa,ssh-dss", "ssh-dss")
SUDO_COMMANDS = (
    "/usr/bin/apt update",
    "/usr/bin/apt upgrade -y",
    "/usr/bin/systemctl restart nginx",
    "/usr/bin/systemctl status sshmonitor",
    "/usr/bin/journalctl -u ssh -n 100",
    "/usr/bin/tail -f /var/log/auth.log",
    "/usr/sbin/nft list ruleset",
    "/usr/bin/docker ps",
    "/usr/bin/vim /etc/nginx/sites-available/default",
    "/bin/bash",
)

# ---------------------------------------------------------------------------- classifier

_PREFIX = re.compile(r"([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (\S+) ([^\s\[:]+)(?:\[(\d+)\])?: ")
_U = r"(?:invalid|authenticating) user .* "
# Ordered; the first match wins. Group "a" is the address when the line carries one.
_SSHD_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (cat, re.compile(pat, re.S))
    for cat, pat in (
        ("invalid_user", r"Invalid user .* from (?P<a>\S+) port \d+$"),
        (
            "failed_password_invalid",
            r"Failed password for invalid user .* from (?P<a>\S+) port "
            r"\d+ ssh2$",
        ),
        ("failed_password", r"Failed password for .* from (?P<a>\S+) port \d+ ssh2$"),
        ("pam_check_pass", r"pam_unix\(sshd:auth\): check pass; user unknown$"),
        ("pam_auth_failure", r"pam_unix\(sshd:auth\): authentication failure; .* rhost=(?P<a>\S+)"),
        ("pam_more_failures", r"PAM \d+ more authentication failures?; .* rhost=(?P<a>\S+)"),
        ("pam_ignoring_max_retries", r"PAM service\(sshd\) ignoring max retries; \d+ > \d+$"),
        (
            "max_auth_exceeded",
            r"error: maximum authentication attempts exceeded for .* from "
            r"(?P<a>\S+) port \d+ ssh2 \[preauth\]$",
        ),
        (
            "too_many_failures",
            r"Disconnecting " + _U + r"(?P<a>\S+) port \d+: Too many "
            r"authentication failures \[preauth\]$",
        ),
        (
            "closed_invalid_user",
            r"Connection closed by invalid user .* (?P<a>\S+) port \d+ "
            r"\[preauth\]$",
        ),
        (
            "closed_authenticating_user",
            r"Connection closed by authenticating user .* (?P<a>\S+) "
            r"port \d+ \[preauth\]$",
        ),
        (
            "disconnected_invalid_user",
            r"Disconnected from invalid user .* (?P<a>\S+) port \d+ "
            r"\[preauth\]$",
        ),
        (
            "disconnected_authenticating_user",
            r"Disconnected from authenticating user .* "
            r"(?P<a>\S+) port \d+ \[preauth\]$",
        ),
        (
            "received_disconnect_preauth",
            r"Received disconnect from (?P<a>\S+) port \d+:\d+: .* "
            r"\[preauth\]$",
        ),
        ("closed_preauth", r"Connection closed by (?P<a>\S+) port \d+ \[preauth\]$"),
        ("reset_preauth", r"Connection reset by (?P<a>\S+) port \d+ \[preauth\]$"),
        ("timeout_before_auth", r"fatal: Timeout before authentication for (?P<a>\S+) port \d+$"),
        (
            "banner_invalid_format",
            r"banner exchange: Connection from (?P<a>\S+) port \d+: "
            r"invalid format$",
        ),
        (
            "unable_to_negotiate",
            r"Unable to negotiate with (?P<a>\S+) port \d+: no matching .* "
            r"found\. Their offer: \S+ \[preauth\]$",
        ),
        ("closed_after_kex", r"Connection closed by (?P<a>\S+) port \d+$"),
        ("reset_after_kex", r"Connection reset by (?P<a>\S+) port \d+$"),
        ("kex_identification", r"error: kex_exchange_identification: "),
        ("accepted_publickey", r"Accepted publickey for \S+ from (?P<a>\S+) port \d+ ssh2: "),
        ("accepted_password", r"Accepted password for \S+ from (?P<a>\S+) port \d+ ssh2$"),
        ("sshd_session_opened", r"pam_unix\(sshd:session\): session opened for user "),
        ("sshd_session_closed", r"pam_unix\(sshd:session\): session closed for user "),
        (
            "received_disconnect_user",
            r"Received disconnect from (?P<a>\S+) port \d+:11: "
            r"disconnected by user$",
        ),
        ("disconnected_user", r"Disconnected from user \S+ (?P<a>\S+) port \d+$"),
        ("sshd_restart", r"(?:Received SIGHUP; restarting\.|Server listening on .*)$"),
    )
)
_OTHER_RULES: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    "CRON": (
        ("cron_session_opened", re.compile(r"pam_unix\(cron:session\): session opened ")),
        ("cron_session_closed", re.compile(r"pam_unix\(cron:session\): session closed ")),
    ),
    "systemd-logind": (
        ("logind_new_session", re.compile(r"New session \S+ of user \S+\.$")),
        ("logind_logged_out", re.compile(r"Session \S+ logged out\. Waiting for processes")),
        ("logind_removed_session", re.compile(r"Removed session \S+\.$")),
    ),
    "(systemd)": (("systemd_user_session", re.compile(r"pam_unix\(systemd-user:session\): ")),),
    "(sd-pam)": (("systemd_user_session", re.compile(r"pam_unix\(systemd-user:session\): ")),),
    "sudo": (
        ("sudo_session", re.compile(r"pam_unix\(sudo:session\): ")),
        ("sudo_auth_failure", re.compile(r"pam_unix\(sudo:auth\): authentication failure")),
        ("sudo_command", re.compile(r"\s*\S+ : (?:\d+ incorrect password attempts? ; )?TTY=")),
    ),
    "su": (("su_session", re.compile(r"(?:\(to \S+\) \S+ on \S+|pam_unix\(su(?:-l)?:session\))")),),
}


def classify(line: str) -> tuple[str, str | None]:
    """(category, address or None) of one line of a generated file; ("?", None) if unknown."""
    m = _PREFIX.match(line)
    if m is None:
        return "?", None
    prog, msg = m.group(3), line[m.end() :].rstrip("\n")
    if prog == "sshd":
        for cat, pat in _SSHD_RULES:
            mm = pat.match(msg)
            if mm is not None:
                a = mm.groupdict().get("a")
                if a is not None and a in LEGIT_ADDRESSES:
                    if cat == "failed_password":
                        cat = "legit_failed_password"
                    elif cat == "pam_auth_failure":
                        cat = "legit_pam_failure"
                return cat, a
        return "?", None
    for cat, pat in _OTHER_RULES.get(prog, ()):
        if pat.match(msg):
            return cat, None
    return "?", None


# ---------------------------------------------------------------------------- addresses

_V4_BAD = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    )
]


def random_v4(rng: random.Random, near: str | None = None) -> str:
    """A public IPv4 address (in the /24 of ``near`` when given)."""
    while True:
        if near is not None:
            base = int(ipaddress.IPv4Address(near)) & 0xFFFFFF00
            a = ipaddress.IPv4Address(base | rng.randint(1, 254))
        else:
            a = ipaddress.IPv4Address(rng.getrandbits(32))
            if any(a in n for n in _V4_BAD):
                continue
        return str(a)


def random_v6(rng: random.Random) -> str:
    """A global unicast IPv6 address as sshd prints it (RFC 5952, via inet_ntop)."""
    while True:
        hi = (0x2 << 60) | rng.getrandbits(60)  # 2000::/3 /64 prefix
        if (hi >> 32) == 0x20010DB8:  # documentation prefix: legit users live there
            continue
        hi &= ~0xFFFF if rng.random() < 0.5 else ~0  # many hosters hand out a /48
        iid = rng.randint(1, 16) if rng.random() < 0.5 else rng.getrandbits(64)
        return ipaddress.IPv6Address((hi << 64) | iid).compressed


# ---------------------------------------------------------------------------- the generator


@dataclass
class Attacker:
    ip: str
    profile: str  # bruteforce | scanner | enum | botnet
    weight: float = 1.0


@dataclass
class Counts:
    categories: Counter[str] = field(default_factory=Counter)
    attackers: dict[str, list[int]] = field(default_factory=dict)  # ip -> [evid, auth, tries]


Line = tuple[float, int, str, int, str, str, str | None]  # ts, seq, prog, pid, msg, cat, ip


class Generator:
    """Discrete-event simulation: tasks (connections, sessions, cron runs) emit timed lines."""

    def __init__(
        self, n_lines: int, start: datetime, days: float, seed: int, host: str, cron_share: float
    ) -> None:
        self.n = n_lines
        self.rng = random.Random(seed)
        self.t0 = start.timestamp()
        self.t_end = self.t0 + days * 86400
        self.days = days
        self.host = host
        self.cron_share = cron_share
        self.pid = self.rng.randint(300_000, 900_000)
        self.seq = 0
        self.lines: list[Line] = []  # heap of pending lines
        self.tasks: list[tuple[float, int, Callable[[float], None]]] = []  # heap
        self.counts = Counts()
        self.written = 0
        self.last_ts = self.t0
        self.logind_session = self.rng.randint(100, 2000)
        self.user_sessions: Counter[str] = Counter()  # live sessions per user (for systemd)
        self.pools: dict[str, tuple[list[Attacker], list[float]]] = {}
        self.profile_p: list[tuple[str, float]] = []
        self.one_shots = 0
        self.bot_user_cum = list(_cumsum(1.0 / (i + 1) ** 0.9 for i in range(len(BOT_USERS))))

    # -- plumbing
    def next_pid(self) -> int:
        self.pid += self.rng.randint(1, 6)
        if self.pid > 4_194_304:
            self.pid = 1000 + self.pid % 1000
        return self.pid

    def emit(
        self, ts: float, prog: str, pid: int, msg: str, cat: str, ip: str | None = None
    ) -> None:
        self.seq += 1
        heapq.heappush(self.lines, (ts, self.seq, prog, pid, msg, cat, ip))

    def at(self, ts: float, fn: Callable[[float], None]) -> None:
        self.seq += 1
        heapq.heappush(self.tasks, (ts, self.seq, fn))

    def bot_user(self) -> str:
        r = self.rng.random()
        if r < 0.004:
            return self.rng.choice(ODD_USERS)
        return BOT_USERS[_bisect(self.bot_user_cum, self.rng.random() * self.bot_user_cum[-1])]

    def run(self, write: Callable[[str], object]) -> None:
        """Run the simulation until ``n`` lines are written."""
        self._schedule_sources()
        stamp_cache: tuple[int, str] = (-1, "")
        host = self.host
        lines = self.lines
        tasks = self.tasks
        counts = self.counts
        cats = counts.categories
        attackers = counts.attackers
        while self.written < self.n:
            t_next = tasks[0][0] if tasks else math.inf
            while lines and lines[0][0] <= t_next:
                ts, _seq, prog, pid, msg, cat, ip = heapq.heappop(lines)
                sec = int(ts)
                if sec != stamp_cache[0]:
                    stamp_cache = (sec, _stamp(sec))
                write(f"{stamp_cache[1]} {host} {prog}[{pid}]: {msg}\n")
                cats[cat] += 1
                if ip is not None and CATEGORIES[cat][0] == "attack":
                    rec = attackers.get(ip)
                    if rec is None:
                        rec = attackers[ip] = [0, 0, 0]
                    rec[0] += 1
                    if CATEGORIES[cat][1] == "auth":
                        rec[1] += 1
                    if cat in ("failed_password", "failed_password_invalid"):
                        rec[2] += 1
                self.last_ts = ts
                self.written += 1
                if self.written >= self.n:
                    return
            if not tasks:
                raise RuntimeError("no more tasks before the line budget was reached")
            t, _seq, fn = heapq.heappop(tasks)
            fn(t)

    # -- sources
    def _schedule_sources(self) -> None:
        minutes = (self.t_end - self.t0) / 60
        # CRON: two lines per job run; jobs per minute chosen to hit the share of lines (a
        # fraction is run now and then). A small file gets proportionally fewer logins too.
        self.cron_per_minute = self.n * self.cron_share / 2 / minutes
        self.legit_scale = min(1.0, self.n / 1_000_000)
        first_minute = math.ceil(self.t0 / 60) * 60
        self.at(first_minute + 1, self._cron)
        # Legitimate use: interactive logins, hourly backup pulls, CI deploys, a nightly su.
        self.at(self.t0 + self.rng.uniform(0, 600), self._interactive_arrival)
        self.at(math.ceil(self.t0 / 3600) * 3600 + 300 + self.rng.uniform(0, 30), self._backup)
        self.at(self.t0 + self.rng.uniform(0, 3600), self._deploy_arrival)
        self.at(self.t0 + self.rng.uniform(0.5, 2.5) * 86400, self._sshd_restart)
        # Attacks: a Poisson process of campaigns, its rate set so that attack lines fill the
        # budget left by the schedule above within the requested span. A campaign's profile is
        # drawn so that each profile gets its share of the attack *lines* (PROFILE_SHARES).
        self._build_pools()
        other = self.n * self.cron_share + LEGIT_LINES_PER_DAY * self.days * self.legit_scale
        attack_lines = max(self.n - other, self.n * 0.05)
        means = {p: self._mean_campaign_lines(p) for p in PROFILE_SHARES}
        weights = {p: share / means[p] for p, share in PROFILE_SHARES.items()}
        total_w = sum(weights.values())
        self.profile_p = [(p, w / total_w) for p, w in weights.items()]
        mean = sum(pr * means[p] for p, pr in self.profile_p)
        self.campaign_rate = attack_lines / mean / (self.t_end - self.t0)  # per second
        self.at(self.t0 + self.rng.expovariate(self.campaign_rate), self._campaign_arrival)

    def _build_pools(self) -> None:
        """Persistent attackers per profile; Zipf weights make a few of them very noisy."""
        prev: str | None = None
        for profile, (per_line, exponent) in POOLS.items():
            pool: list[Attacker] = []
            for rank in range(max(20, int(self.n * per_line))):
                if self.rng.random() < 0.08:
                    ip = random_v6(self.rng)
                elif prev is not None and ":" not in prev and self.rng.random() < 0.15:
                    ip = random_v4(self.rng, near=prev)  # same /24 as the previous one
                else:
                    ip = random_v4(self.rng)
                prev = ip
                pool.append(Attacker(ip, profile, 1.0 / (rank + 1) ** exponent))
            self.rng.shuffle(pool)
            self.pools[profile] = (pool, list(_cumsum(a.weight for a in pool)))

    def _pick_attacker(self, profile: str) -> Attacker:
        if profile == "botnet":  # the long tail: a botnet member seen once
            self.one_shots += 1
            ip = random_v6(self.rng) if self.rng.random() < 0.04 else random_v4(self.rng)
            return Attacker(ip, "botnet")
        pool, cum = self.pools[profile]
        return pool[_bisect(cum, self.rng.random() * cum[-1])]

    def _mean_campaign_lines(self, profile: str) -> float:
        """Lines per campaign of a profile, measured on a dry run with its own random state."""
        probe = Generator.__new__(Generator)
        probe.__dict__.update(self.__dict__)
        probe.rng = random.Random(12345)
        probe.lines, probe.tasks = [], []
        total = 0
        n = 4000
        for _ in range(n):
            probe._campaign(0.0, profile)
            while probe.tasks:
                t, _s, fn = heapq.heappop(probe.tasks)
                fn(t)
            total += len(probe.lines)
            probe.lines = []
        return total / n

    # -- cron
    def _cron(self, t: float) -> None:
        lt = datetime.fromtimestamp(t, UTC)
        jobs = int(self.cron_per_minute)
        if self.rng.random() < self.cron_per_minute - jobs:
            jobs += 1
        if lt.minute % 5 == 0:
            jobs += 2
        if lt.minute == 17:
            jobs += 1  # cron.hourly
        if lt.hour == 6 and lt.minute == 25:
            jobs += 1  # cron.daily
        for i in range(jobs):
            pid = self.next_pid()
            user, uid = ("root", 0) if i % 4 else (("www-data", 33) if i % 8 else ("backup", 1004))
            start = t + self.rng.random() * 0.3
            self.emit(
                start,
                "CRON",
                pid,
                f"pam_unix(cron:session): session opened for user {user}(uid={uid}) by (uid=0)",
                "cron_session_opened",
            )
            dur = (
                self.rng.expovariate(1 / 2.0)
                if self.rng.random() < 0.97
                else (self.rng.uniform(30, 600))
            )
            self.emit(
                start + dur,
                "CRON",
                pid,
                f"pam_unix(cron:session): session closed for user {user}",
                "cron_session_closed",
            )
        if lt.hour == 2 and lt.minute == 30:
            self.at(t + 2, self._su_backup)
        self.at(t + 60, self._cron)

    def _su_backup(self, t: float) -> None:
        pid = self.next_pid()
        self.emit(t, "su", pid, "(to postgres) root on none", "su_session")
        self.emit(
            t,
            "su",
            pid,
            "pam_unix(su-l:session): session opened for user postgres(uid=110) by (uid=0)",
            "su_session",
        )
        self.emit(
            t + self.rng.uniform(20, 200),
            "su",
            pid,
            "pam_unix(su-l:session): session closed for user postgres",
            "su_session",
        )

    # -- legitimate use
    def _office_factor(self, t: float) -> float:
        lt = datetime.fromtimestamp(t, UTC)
        weekday = lt.weekday() < 5
        if 8 <= lt.hour < 19:
            return 1.0 if weekday else 0.15
        return 0.08 if weekday else 0.04

    def _interactive_arrival(self, t: float) -> None:
        # Thinning: a peak of 6 logins per hour.
        if self.rng.random() < self._office_factor(t):
            user = self.rng.choice(("alice", "alice", "bob", "carol"))
            self._login(t, user, self.rng.uniform(300, 3 * 3600), interactive=True)
        self.at(t + self.rng.expovariate(6 / 3600 * self.legit_scale), self._interactive_arrival)

    def _backup(self, t: float) -> None:
        self._login(t, "backup", self.rng.uniform(20, 240), interactive=False)
        self.at(t + 3600 / self.legit_scale + self.rng.uniform(-5, 5), self._backup)

    def _deploy_arrival(self, t: float) -> None:
        if self.rng.random() < self._office_factor(t):
            self._login(t, "deploy", self.rng.uniform(5, 90), interactive=False)
        self.at(t + self.rng.expovariate(3 / 3600 * self.legit_scale), self._deploy_arrival)

    def _login(self, t: float, user: str, duration: float, interactive: bool) -> None:
        rng = self.rng
        uid, addrs = USERS[user]
        ip = rng.choice(addrs)
        port = rng.randint(32768, 60999)
        pid = self.next_pid()
        ts = t + rng.uniform(0.1, 0.6)
        password = interactive and user == "carol"  # carol's VPN box has no key
        if password:
            if rng.random() < 0.1:  # a typo first
                self.emit(
                    ts,
                    "sshd",
                    pid,
                    "pam_unix(sshd:auth): authentication failure; "
                    f"logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={user}",
                    "legit_pam_failure",
                    ip,
                )
                ts += rng.uniform(1.8, 2.5)
                self.emit(
                    ts,
                    "sshd",
                    pid,
                    f"Failed password for {user} from {ip} port {port} ssh2",
                    "legit_failed_password",
                    ip,
                )
                ts += rng.uniform(2, 6)
            self.emit(
                ts,
                "sshd",
                pid,
                f"Accepted password for {user} from {ip} port {port} ssh2",
                "accepted_password",
                ip,
            )
        else:
            fp = _fingerprint(user)
            self.emit(
                ts,
                "sshd",
                pid,
                f"Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:{fp}",
                "accepted_publickey",
                ip,
            )
        self.emit(
            ts,
            "sshd",
            pid,
            f"pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)",
            "sshd_session_opened",
        )
        self.logind_session += 1
        sid = self.logind_session
        self.emit(
            ts + 0.01,
            "systemd-logind",
            612,
            f"New session {sid} of user {user}.",
            "logind_new_session",
        )
        if self.user_sessions[user] == 0:
            upid = self.next_pid()
            self.emit(
                ts + 0.02,
                "(systemd)",
                upid,
                "pam_unix(systemd-user:session): session "
                f"opened for user {user}(uid={uid}) by (uid=0)",
                "systemd_user_session",
            )
        self.user_sessions[user] += 1
        if interactive:
            n_sudo = rng.choice((0, 0, 1, 1, 2, 3, 5))
            for _ in range(n_sudo):
                self.at(
                    ts + rng.uniform(5, max(6.0, duration - 5)),
                    lambda t2, u=user, i=uid: self._sudo(t2, u, i),
                )
        self.at(ts + duration, lambda t2: self._logout(t2, user, ip, port, pid, sid))

    def _sudo(self, t: float, user: str, uid: int) -> None:
        pid = self.next_pid()
        cmd = self.rng.choice(SUDO_COMMANDS)
        tty = f"pts/{self.rng.randint(0, 3)}"
        if self.rng.random() < 0.05:
            self.emit(
                t,
                "sudo",
                pid,
                f"pam_unix(sudo:auth): authentication failure; "
                f"logname={user} uid={uid} euid=0 tty=/dev/{tty} ruser={user} rhost=  "
                f"user={user}",
                "sudo_auth_failure",
            )
            t += self.rng.uniform(3, 8)
        self.emit(
            t,
            "sudo",
            pid,
            f"   {user} : TTY={tty} ; PWD=/home/{user} ; USER=root ; COMMAND={cmd}",
            "sudo_command",
        )
        self.emit(
            t,
            "sudo",
            pid,
            f"pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid={uid})",
            "sudo_session",
        )
        self.emit(
            t + self.rng.expovariate(1 / 20),
            "sudo",
            pid,
            "pam_unix(sudo:session): session closed for user root",
            "sudo_session",
        )

    def _logout(self, t: float, user: str, ip: str, port: int, pid: int, sid: int) -> None:
        self.emit(
            t,
            "sshd",
            pid,
            f"Received disconnect from {ip} port {port}:11: disconnected by user",
            "received_disconnect_user",
            ip,
        )
        self.emit(
            t,
            "sshd",
            pid,
            f"Disconnected from user {user} {ip} port {port}",
            "disconnected_user",
            ip,
        )
        self.emit(
            t,
            "sshd",
            pid,
            f"pam_unix(sshd:session): session closed for user {user}",
            "sshd_session_closed",
        )
        self.emit(
            t + 0.01,
            "systemd-logind",
            612,
            f"Session {sid} logged out. Waiting for processes to exit.",
            "logind_logged_out",
        )
        self.emit(
            t + 0.02, "systemd-logind", 612, f"Removed session {sid}.", "logind_removed_session"
        )
        self.user_sessions[user] -= 1
        if self.user_sessions[user] == 0:
            self.emit(
                t + 10.2,
                "(sd-pam)",
                self.next_pid(),
                f"pam_unix(systemd-user:session): session closed for user {user}",
                "systemd_user_session",
            )

    def _sshd_restart(self, t: float) -> None:
        self.emit(t, "sshd", 812, "Received SIGHUP; restarting.", "sshd_restart")
        self.emit(t + 0.05, "sshd", 812, "Server listening on 0.0.0.0 port 22.", "sshd_restart")
        self.emit(t + 0.05, "sshd", 812, "Server listening on :: port 22.", "sshd_restart")
        self.at(t + self.rng.uniform(2, 4) * 86400, self._sshd_restart)

    # -- attacks
    def _campaign_arrival(self, t: float) -> None:
        r = self.rng.random()
        profile = self.profile_p[-1][0]
        for p, pr in self.profile_p:
            r -= pr
            if r < 0:
                profile = p
                break
        self._campaign(t, profile)
        # Attack pressure drifts by the hour (a campaign wave now and then).
        hour = int(t // 3600)
        wave = 0.6 + 0.8 * ((hour * 2654435761) % 1000) / 1000
        self.at(t + self.rng.expovariate(self.campaign_rate * wave), self._campaign_arrival)

    def _campaign(self, t: float, profile: str) -> None:
        rng = self.rng
        a = self._pick_attacker(profile)
        if profile == "botnet":
            n, gap = 1, 0.0
        elif profile == "bruteforce":
            n = 1 + int(rng.expovariate(1 / 12))
            gap = rng.choice((0.3, 1.0, 3.0, 10.0))  # parallel connections or a slow drip
        elif profile == "scanner":
            n, gap = rng.randint(1, 3), 1.0
        else:  # enum
            n, gap = rng.randint(1, 8), 2.0
        ts = t
        for _ in range(n):
            self.at(ts, lambda t2, att=a: self._connection(t2, att))
            ts += rng.expovariate(1 / gap) if gap else 0.0

    def _connection(self, t: float, a: Attacker) -> None:
        rng = self.rng
        r = rng.random()
        if a.profile == "botnet":
            kind = (
                "pw_invalid"
                if r < 0.55
                else "pw_root"
                if r < 0.8
                else "pw_multi"
                if (r < 0.88)
                else "closed"
            )
        elif a.profile == "bruteforce":
            kind = (
                "pw_invalid"
                if r < 0.45
                else "pw_root"
                if r < 0.62
                else "pw_multi"
                if r < 0.80
                else "closed"
                if r < 0.88
                else "key_root"
                if r < 0.94
                else "bye_root"
            )
        elif a.profile == "scanner":
            kind = (
                "kex"
                if r < 0.30
                else "closed"
                if r < 0.50
                else "negotiate"
                if r < 0.65
                else "banner"
                if r < 0.75
                else "reset"
                if r < 0.85
                else "timeout"
                if r < 0.92
                else "kex_reset"
            )
        else:
            kind = "enum" if r < 0.7 else "pw_invalid" if r < 0.9 else "key_root"
        pid = self.next_pid()
        port = rng.randint(1024, 65535)
        ip = a.ip
        ts = t + rng.uniform(0.05, 1.5)
        e = self.emit
        pre = " [preauth]"
        if kind in ("pw_invalid", "pw_root", "pw_multi"):
            invalid = kind == "pw_invalid" or (kind == "pw_multi" and rng.random() < 0.6)
            user = self.bot_user() if invalid else "root"
            tries = 1 if kind != "pw_multi" else rng.choice((2, 3, 4, 6, 6, 6))
            inv = "invalid user " if invalid else ""
            if invalid:
                e(ts, "sshd", pid, f"Invalid user {user} from {ip} port {port}", "invalid_user", ip)
            for i in range(tries):
                ts += rng.uniform(0.2, 1.5)
                if invalid:
                    e(
                        ts,
                        "sshd",
                        pid,
                        "pam_unix(sshd:auth): check pass; user unknown",
                        "pam_check_pass",
                    )
                if i == 0:
                    who = "" if invalid else f"  user={user}"
                    e(
                        ts,
                        "sshd",
                        pid,
                        "pam_unix(sshd:auth): authentication failure; logname= "
                        f"uid=0 euid=0 tty=ssh ruser= rhost={ip}{who}",
                        "pam_auth_failure",
                        ip,
                    )
                ts += rng.uniform(1.8, 2.6)  # pam_faildelay
                e(
                    ts,
                    "sshd",
                    pid,
                    f"Failed password for {inv}{user} from {ip} port {port} ssh2",
                    "failed_password_invalid" if invalid else "failed_password",
                    ip,
                )
            ts += rng.uniform(0.0, 0.8)
            if tries >= 6:
                e(
                    ts,
                    "sshd",
                    pid,
                    f"error: maximum authentication attempts exceeded for "
                    f"{inv}{user} from {ip} port {port} ssh2{pre}",
                    "max_auth_exceeded",
                    ip,
                )
                who = "invalid" if invalid else "authenticating"
                e(
                    ts,
                    "sshd",
                    pid,
                    f"Disconnecting {who} user {user} {ip} port {port}: Too many "
                    f"authentication failures{pre}",
                    "too_many_failures",
                    ip,
                )
            elif rng.random() < 0.75:
                e(
                    ts,
                    "sshd",
                    pid,
                    f"Received disconnect from {ip} port {port}:11: {rng.choice(BYE_REASONS)}{pre}",
                    "received_disconnect_preauth",
                    ip,
                )
                who = "invalid" if invalid else "authenticating"
                e(
                    ts,
                    "sshd",
                    pid,
                    f"Disconnected from {who} user {user} {ip} port {port}{pre}",
                    f"disconnected_{who}_user",
                    ip,
                )
            else:
                who = "invalid" if invalid else "authenticating"
                e(
                    ts,
                    "sshd",
                    pid,
                    f"Connection closed by {who} user {user} {ip} port {port}{pre}",
                    f"closed_{who}_user",
                    ip,
                )
            if tries > 1:
                s = "s" if tries > 2 else ""
                who = "" if invalid else f"  user={user}"
                e(
                    ts,
                    "sshd",
                    pid,
                    f"PAM {tries - 1} more authentication failure{s}; logname= "
                    f"uid=0 euid=0 tty=ssh ruser= rhost={ip}{who}",
                    "pam_more_failures",
                    ip,
                )
                if tries > 3:
                    e(
                        ts,
                        "sshd",
                        pid,
                        f"PAM service(sshd) ignoring max retries; {tries} > 3",
                        "pam_ignoring_max_retries",
                    )
        elif kind == "enum":  # an invalid user that gives up before any password
            user = self.bot_user()
            e(ts, "sshd", pid, f"Invalid user {user} from {ip} port {port}", "invalid_user", ip)
            ts += rng.uniform(0.1, 2)
            e(
                ts,
                "sshd",
                pid,
                f"Connection closed by invalid user {user} {ip} port {port}{pre}",
                "closed_invalid_user",
                ip,
            )
        elif kind == "key_root":  # offers keys for root, none accepted
            ts += rng.uniform(0.3, 3)
            e(
                ts,
                "sshd",
                pid,
                f"Connection closed by authenticating user root {ip} port {port}{pre}",
                "closed_authenticating_user",
                ip,
            )
        elif kind == "bye_root":
            ts += rng.uniform(0.3, 3)
            e(
                ts,
                "sshd",
                pid,
                f"Received disconnect from {ip} port {port}:11: Bye Bye{pre}",
                "received_disconnect_preauth",
                ip,
            )
            e(
                ts,
                "sshd",
                pid,
                f"Disconnected from authenticating user root {ip} port {port}{pre}",
                "disconnected_authenticating_user",
                ip,
            )
        elif kind == "closed":
            e(ts, "sshd", pid, f"Connection closed by {ip} port {port}{pre}", "closed_preauth", ip)
        elif kind == "reset":
            e(ts, "sshd", pid, f"Connection reset by {ip} port {port}{pre}", "reset_preauth", ip)
        elif kind == "kex":
            e(
                ts,
                "sshd",
                pid,
                "error: kex_exchange_identification: Connection closed by remote host",
                "kex_identification",
            )
            e(ts, "sshd", pid, f"Connection closed by {ip} port {port}", "closed_after_kex", ip)
        elif kind == "kex_reset":
            e(
                ts,
                "sshd",
                pid,
                "error: kex_exchange_identification: read: Connection reset by peer",
                "kex_identification",
            )
            e(ts, "sshd", pid, f"Connection reset by {ip} port {port}", "reset_after_kex", ip)
        elif kind == "banner":
            if rng.random() < 0.4:
                e(
                    ts,
                    "sshd",
                    pid,
                    "error: kex_exchange_identification: client sent invalid "
                    'protocol identifier "GET / HTTP/1.1"',
                    "kex_identification",
                )
            e(
                ts,
                "sshd",
                pid,
                f"banner exchange: Connection from {ip} port {port}: invalid format",
                "banner_invalid_format",
                ip,
            )
        elif kind == "negotiate":
            if rng.random() < 0.8:
                what, offer = "key exchange method", rng.choice(KEX_OFFERS)
            else:
                what, offer = "host key type", rng.choice(HOSTKEY_OFFERS)
            e(
                ts,
                "sshd",
                pid,
                f"Unable to negotiate with {ip} port {port}: no matching {what} "
                f"found. Their offer: {offer}{pre}",
                "unable_to_negotiate",
                ip,
            )
        elif kind == "timeout":
            e(
                ts + 120,
                "sshd",
                pid,
                f"fatal: Timeout before authentication for {ip} port {port}",
                "timeout_before_auth",
                ip,
            )


def _bisect(cum: list[float], x: float) -> int:
    """The first index whose cumulative weight reaches x."""
    return min(bisect.bisect_left(cum, x), len(cum) - 1)


def _cumsum(xs: Iterable[float]) -> Iterable[float]:
    s = 0.0
    for x in xs:
        s += x
        yield s


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _stamp(sec: int) -> str:
    d = datetime.fromtimestamp(sec, UTC)
    return f"{_MONTHS[d.month - 1]} {d.day:2d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def _fingerprint(user: str) -> str:
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(user.encode()).digest()).decode().rstrip("=")


# ---------------------------------------------------------------------------- truth


def truth_dict(g: Generator, path: str, seed: int, start: datetime) -> dict[str, Any]:
    cats = g.counts.categories
    by_group: Counter[str] = Counter()
    by_tier: Counter[str] = Counter()
    for c, n in cats.items():
        grp, tier = CATEGORIES[c]
        by_group[grp] += n
        if grp == "attack":
            by_tier[tier] += n
    attackers = sorted(g.counts.attackers.items(), key=lambda kv: (-kv[1][0], kv[0]))
    evidence = sum(by_tier[t] for t in EVIDENCE_TIERS)
    return {
        "file": os.path.abspath(path),
        "generator": "bench/gen_authlog.py",
        "lines": g.written,
        "seed": seed,
        "host": g.host,
        "start": start.isoformat(),
        "first_ts": datetime.fromtimestamp(g.t0, UTC).isoformat(),
        "last_ts": datetime.fromtimestamp(int(g.last_ts), UTC).isoformat(),
        "definition": (
            "attack_evidence_lines = lines of an attacker's connection that carry its address "
            "(tiers auth + preauth + protocol); auth_failure_evidence_lines = the auth tier "
            "alone (failed password, invalid user, PAM failures, max attempts)"
        ),
        "attack_evidence_lines": evidence,
        "auth_failure_evidence_lines": by_tier["auth"],
        "evidence_by_tier": {t: by_tier[t] for t in (*EVIDENCE_TIERS, "none")},
        "password_attempts": cats["failed_password"] + cats["failed_password_invalid"],
        "groups": dict(by_group.most_common()),
        "categories": {
            c: {
                "lines": cats[c],
                "group": CATEGORIES[c][0],
                "tier": CATEGORIES[c][1],
                "evidence": is_evidence(c),
            }
            for c in CATEGORIES
        },
        "distinct_attackers": len(attackers),
        "distinct_attackers_ipv6": sum(1 for ip, _ in attackers if ":" in ip),
        "attackers_with_one_evidence_line": sum(1 for _, r in attackers if r[0] == 1),
        "one_shot_botnet_addresses": g.one_shots,
        "legit_addresses": sorted(LEGIT_ADDRESSES),
        "attackers_fields": ["evidence_lines", "auth_lines", "password_attempts"],
        "attackers": {ip: r for ip, r in attackers},
    }


def print_report(truth: dict[str, Any], seconds: float, err: TextIO = sys.stderr) -> None:
    w = err.write
    n_total = truth["lines"]
    w(
        f"generated {n_total:,} lines in {seconds:.1f} s ({truth['first_ts']} .. "
        f"{truth['last_ts']})\n\n"
    )
    w(f"  {'category':<34} {'group':<7} {'tier':<9} {'lines':>9} {'share':>7}\n")
    for c, info in sorted(truth["categories"].items(), key=lambda kv: -kv[1]["lines"]):
        n = info["lines"]
        if not n:
            continue
        mark = "*" if info["evidence"] else " "
        w(
            f" {mark}{c:<34} {info['group']:<7} {info['tier']:<9} {n:>9,} "
            f"{100 * n / n_total:6.2f}%\n"
        )
    w("\n  groups: " + ", ".join(f"{k} {v:,}" for k, v in truth["groups"].items()) + "\n")
    w("\nGROUND TRUTH (* above):\n")
    w(
        f"  attack evidence lines (attacker address on the line): "
        f"{truth['attack_evidence_lines']:,}\n"
    )
    w(
        f"    of which auth-failure evidence (auth tier):        "
        f"{truth['auth_failure_evidence_lines']:,}\n"
    )
    tiers = truth["evidence_by_tier"]
    w(
        f"    preauth tier {tiers['preauth']:,}, protocol tier {tiers['protocol']:,}; attacker "
        f"lines without an address: {tiers['none']:,}\n"
    )
    w(f"  password attempts: {truth['password_attempts']:,}\n")
    w(
        f"  distinct attacking addresses: {truth['distinct_attackers']:,} "
        f"({truth['distinct_attackers_ipv6']:,} IPv6, "
        f"{truth['attackers_with_one_evidence_line']:,} with a single evidence line)\n"
    )
    top = list(truth["attackers"].items())[:5]
    w("  noisiest: " + ", ".join(f"{ip} ({r[0]:,})" for ip, r in top) + "\n")


# ---------------------------------------------------------------------------- CLI


def default_start(days: float) -> datetime:
    """Midnight UTC, ``days`` + 1 days ago: the whole log lies in the past."""
    return (datetime.now(UTC) - timedelta(days=days + 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )


def parse_start(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def cron_share_for(attack_share: float, lines: int, days: float) -> float:
    """The CRON share that leaves ``attack_share`` of the lines to attacks, after the
    legitimate users' lines (which do not scale with the attack)."""
    legit = LEGIT_LINES_PER_DAY * days * min(1.0, lines / 1_000_000) / lines
    return max(0.0, 1.0 - attack_share - legit)


def generate(
    out: str,
    lines: int,
    seed: int,
    start: datetime,
    days: float = 7.0,
    host: str = "web1",
    cron_share: float = 0.35,
    quiet: bool = False,
) -> dict[str, Any]:
    """Write the log and FILE.truth.json; returns the truth."""
    t = time.perf_counter()
    g = Generator(lines, start, days, seed, host, cron_share)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as fh:
        g.run(fh.write)
    os.replace(tmp, out)
    last = int(g.last_ts) + 1
    os.utime(out, (last, last))
    truth = truth_dict(g, out, seed, start)
    with open(out + ".truth.json", "w", encoding="utf-8") as fh:
        json.dump(truth, fh, indent=1)
        fh.write("\n")
    if not quiet:
        print_report(truth, time.perf_counter() - t)
    return truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Generate a realistic Debian auth.log (classic syslog format) and its ground "
        "truth (FILE.truth.json: lines per category, attack-evidence totals, per-address counts).",
    )
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines to write (default 1M)")
    ap.add_argument("--out", required=True, help="the log file to write")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument(
        "--start",
        "--year-start",
        dest="start",
        default=None,
        help="first timestamp, ISO 8601 in UTC (default: 00:00, --days + 1 days ago); the "
        "year matters because syslog timestamps carry none: the file's mtime is set to its "
        "last line",
    )
    ap.add_argument("--days", type=float, default=7.0, help="span to spread the lines over (7)")
    ap.add_argument("--host", default="web1", help="host name column (web1)")
    ap.add_argument("--cron-share", type=float, default=0.35, help="share of CRON lines (0.35)")
    ap.add_argument(
        "--attack-share",
        type=float,
        default=None,
        help="share of lines from attacks (0-1); sets --cron-share to what legitimate use "
        "leaves (e.g. 0.95 for an attack-heavy log where >90 %% of lines become events)",
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="re-read the file and check classify() agrees with the truth",
    )
    args = ap.parse_args(argv)
    if args.lines < 1:
        ap.error("--lines must be positive")
    if args.attack_share is not None:
        if not 0 < args.attack_share < 1:
            ap.error("--attack-share must be between 0 and 1")
        args.cron_share = cron_share_for(args.attack_share, args.lines, args.days)
    start = default_start(args.days) if args.start is None else parse_start(args.start)
    truth = generate(args.out, args.lines, args.seed, start, args.days, args.host, args.cron_share)
    if args.check:
        got: Counter[str] = Counter()
        with open(args.out, encoding="utf-8") as fh:
            for line in fh:
                got[classify(line)[0]] += 1
        want = {c: v["lines"] for c, v in truth["categories"].items() if v["lines"]}
        if dict(got) != want:
            sys.stderr.write(f"classify() disagrees: got {dict(got)}\nwant {want}\n")
            return 1
        sys.stderr.write("check: classify() agrees with the truth on every category\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
