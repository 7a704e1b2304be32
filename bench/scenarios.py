"""Labelled scenarios for the detection benchmark (bench/detection.py).

    from scenarios import generate
    sc = generate(seed=1)          # sc.lines: the auth.log, sc.labels: what each part of it is

One scenario is ~10 days of a classic Debian 12 ``/var/log/auth.log`` (OpenSSH 9.2p1, UsePAM
yes, PasswordAuthentication yes, rsyslog's classic stamps, UTC) of one host with:

- **background**: internet noise (scanners, one-shot botnet members, small brute-force
  campaigns, invalid-user probes: bench/gen_authlog.py's own connection shapes), CRON, and
  the site's routine use: eight office users behind one NAT address (six of them type
  passwords, two admins use keys and sudo), their home addresses, a CI ``deploy`` key, an
  hourly ``backup`` key, a daily ``root`` key login from the bastion, a TCP health check;
- labelled **incidents** (:data:`INCIDENT_KINDS`), two of each kind per scenario, all after
  the new_source/new_key learning period (7 days from the first login);
- labelled **benign** cases (:data:`BENIGN_KINDS`): users' typos before a login from their
  usual network (1-4 failures, on one connection or over two, again within the hour), six
  office users mistyping once each within an hour behind the office NAT, a known key from a
  new network, admins using sudo (an occasional wrong sudo password), the routine use as a
  whole. :data:`EXTRA_BENIGN` are benign kinds beyond issue #13's list (reported, but not
  part of its target).

Line shapes are those of bench/gen_authlog.py (the scanners' connections are its own code),
checked against a real sshd 9.2p1 with PAM for the users' typos: the first failure on a
connection gets pam_unix's ``authentication failure`` line, each one sshd's ``Failed
password``; a client that gives up after its three prompts leaves ``Connection closed by
authenticating user U A port P [preauth]`` and ``PAM 2 more authentication failures``; a
success after typos on the same connection leaves no PAM summary; after a login the
``Received disconnect``/``Disconnected from user`` lines come from the session's own child
pid. One sshd pid per connection; pids grow as on a busy host.

Addresses: attackers are random public addresses (gen_authlog.random_v4/random_v6, which never
return documentation, private or benchmarking space); the site's users live in
198.51.100.0/24 (office NAT), 198.18.0.0/16 and 2001:db8::/32 (homes), 10.20.0.0/24
(internal), and their new networks in 198.19.0.0/16 and 2001:db8:f000::/36: no attacker can
ever share a label's address.

Pure text generation: nothing here imports sshmonitord, so the code under test cannot shape
its own test data.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import ipaddress
import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_BENCH = str(Path(__file__).resolve().parent)
if _BENCH not in sys.path:
    sys.path.append(_BENCH)  # appended: never ahead of the sshmonitord under test

import gen_authlog as ga  # noqa: E402  (needs the path above when imported from tests)

DAY = 86400.0
HOUR = 3600.0
MINUTE = 60.0
DEFAULT_START = "2026-11-02"  # a Monday: the office days are the first five
DEFAULT_DAYS = 10.0
LEARNING = 7 * DAY  # new_source/new_key's default learning period
HOST = "web1"
LOGIND_PID = 612
_TOKEN0 = 1 << 30  # pid placeholders (Builder.pid) start here: above any real pid
_SID = re.compile("\0S(\\d+)\0")

# ---------------------------------------------------------------------------- kinds

INCIDENT_KINDS: dict[str, str] = {
    "bruteforce_fast": "fast brute force: one address, dozens of passwords in minutes",
    "bruteforce_slow": "slow brute force: one address, 1 try / ~30 min for 24 h",
    "distributed_guessing": "distributed guessing: 25-60 addresses, 1-2 tries each, one user",
    "user_enumeration": "user enumeration: 15-40 invalid names from one address",
    "ipv6_rotation": "IPv6 attacker rotating addresses inside its /64",
    "compromise_after_bruteforce": "many failures, then a password success from that address",
    "compromise_after_spray": "a spray against a user, then a password success from a network "
    "it never used",
    "root_login_new_network": "root logs in from a network never seen (password or unknown key)",
    "key_login_new_network": "a user logs in from a new network with a key never seen",
}
BENIGN_KINDS: dict[str, str] = {
    "typo_same_connection": "1-2 typos, then the password, on the same connection, usual network",
    "typo_three_prompts": "3 typos use up a connection's prompts; a new connection succeeds",
    "typo_four": "3 typos on one connection, 1 more on the next, then success",
    "typo_again_within_hour": "typos and a login, then 15-45 min later another typo and login",
    "office_nat_typos": "office NAT (8 users): 6 mistype once each within an hour, all log in",
    "known_key_new_network": "a user's known key from a network never seen (travel)",
    "sudo_normal": "admins using sudo (now and then a wrong sudo password)",
    "routine_use": "everything else the site's users do (catch-all for their addresses)",
}
# Benign behaviour beyond issue #13's list: reported, not part of its target.
EXTRA_BENIGN: dict[str, str] = {
    "root_routine": "the bastion's daily root login with its known key from its usual address",
    "health_check": "a TCP health check from the monitoring host every 5 min (connect, close)",
}
COMPROMISE_KINDS = ("compromise_after_bruteforce", "compromise_after_spray")

# ---------------------------------------------------------------------------- the site

OFFICE_NAT = "198.51.100.20"
BASTION = "10.20.0.7"
CI_RUNNER = "10.20.0.5"
BACKUP_HOST = "10.20.0.9"
MONITOR = "10.20.0.2"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    method: str  # "password" or "publickey"
    usual: tuple[str, ...]  # addresses it logs in from (first: the one in office hours)
    admin: bool = False
    key_type: str = "ED25519"


USERS: dict[str, User] = {
    u.name: u
    for u in (
        User("alice", 1000, "publickey", (OFFICE_NAT, "198.18.10.23", "2001:db8:1234:5600::10"),
             admin=True),
        User("bob", 1001, "publickey", (OFFICE_NAT, "198.18.20.77"), admin=True, key_type="RSA"),
        User("carol", 1002, "password", (OFFICE_NAT, "198.18.30.44")),
        User("dave", 1005, "password", (OFFICE_NAT, "198.18.31.9")),
        User("erin", 1006, "password", (OFFICE_NAT,)),
        User("frank", 1007, "password", (OFFICE_NAT, "2001:db8:4:7::25")),
        User("grace", 1008, "password", (OFFICE_NAT, "198.18.33.60")),
        User("heidi", 1009, "password", (OFFICE_NAT,)),
        User("deploy", 1003, "publickey", (CI_RUNNER,)),
        User("backup", 1004, "publickey", (BACKUP_HOST,)),
        User("root", 0, "publickey", (BASTION,)),
    )
}  # fmt: skip
OFFICE_USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
PASSWORD_USERS = tuple(u for u in OFFICE_USERS if USERS[u].method == "password")
KEY_USERS = ("alice", "bob", "deploy")  # who may log in from a new network with a key
ADMINS = tuple(u for u in OFFICE_USERS if USERS[u].admin)
# Real names a botnet guesses now and then (generic account names), besides root.
GUESSABLE = ("deploy", "backup")
ENUM_NAMES = (  # noqa: SIM905 (a word list reads better as text)
    "john mike david james robert michael william richard thomas mark paul steven andrew "
    "kevin brian george edward ronald anthony jason matthew gary timothy jose larry jeffrey "
    "frank1 scott eric stephen jacob raymond patrick dennis jerry tyler aaron henry douglas "
    "peter adam nathan zachary walter kyle harold carl jeremy keith roger gerald ethan"
).split()
SUDO_COMMANDS = ga.SUDO_COMMANDS


def fingerprint(user: str, salt: str = "") -> str:
    """A stable SHA256 key fingerprint per user (and salt: another key of that user)."""
    if not salt:
        return ga._fingerprint(user)
    digest = hashlib.sha256(f"{user}\0{salt}".encode()).digest()
    return base64.b64encode(digest).decode().rstrip("=")


# ---------------------------------------------------------------------------- labels


@dataclass
class Label:
    """One labelled incident or benign case: where (addresses, networks), who, when."""

    id: str
    cls: str  # "incident" or "benign"
    kind: str
    start: float  # epoch seconds, first line of the case
    end: float  # last line of the case
    addresses: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)  # e.g. the /64 an attacker rotates in
    users: list[str] = field(default_factory=list)
    note: str = ""
    catch_all: bool = False  # a wide label (the whole span): the last resort for its addresses
    extra: bool = False  # a benign kind beyond the list (not in the target)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start_iso"] = _iso(self.start)
        d["end_iso"] = _iso(self.end)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Label:
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Scenario:
    seed: int
    start: float
    end: float
    lines: list[str]
    labels: list[Label]
    last_ts: float  # the last line's time (replay's reference for year inference)

    def write(self, path: Path) -> None:
        """The log (mtime = its last line, as a real auth.log's) and PATH.labels.json."""
        import json
        import os

        path.write_text("".join(f"{line}\n" for line in self.lines), encoding="utf-8")
        last = int(self.last_ts) + 1
        os.utime(path, (last, last))
        meta = {
            "seed": self.seed,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "lines": len(self.lines),
            "labels": [lb.as_dict() for lb in self.labels],
        }
        Path(f"{path}.labels.json").write_text(json.dumps(meta, indent=1) + "\n", "utf-8")


# ---------------------------------------------------------------------------- the builder


class Builder:
    """Emits timed lines (into gen_authlog's Generator heap, so its scanner code can be used
    as is) and records labels."""

    def __init__(
        self, seed: int, start: datetime, days: float, host: str = HOST, noise: float = 1.0
    ) -> None:
        # The Generator is used for its line heap, pid counter, random state and its attack
        # connection shapes; its own schedule (run()) is never started.
        size = max(2000, int(150_000 * noise))
        self.g = ga.Generator(size, start, days, seed, host, 0.35)
        self.rng = self.g.rng
        self.host = host
        self.noise = noise
        self.t0 = start.timestamp()
        self.t_end = self.t0 + days * DAY
        self.labels: list[Label] = []
        self._ids: dict[str, int] = {}
        self.logind = 0
        self.user_sessions: dict[str, list[float]] = {}  # user -> end times of live sessions
        self.typo_spans: dict[str, list[tuple[float, float]]] = {}  # address -> typo episodes
        self.used_new: set[str] = set()
        self._started: list[float] = []  # start time per pid placeholder (see pid())

    # -- plumbing
    def emit(self, ts: float, prog: str, pid: int, msg: str, ip: str | None = None) -> None:
        self.g.emit(ts, prog, pid, msg, "", ip)

    def pid(self, t: float) -> int:
        """A process id for a process started at ``t``. The parts of the log are built one
        after the other, not in time order, so ids are placeholders until :meth:`lines`
        hands out the real ones in order of start (as the kernel does)."""
        token = _TOKEN0 + len(self._started)
        self._started.append(t)
        return token

    def client_port(self) -> int:
        return self.rng.randint(32768, 60999)  # Linux clients' ephemeral range

    def any_port(self) -> int:
        return self.rng.randint(1024, 65535)

    def label(
        self,
        cls: str,
        kind: str,
        start: float,
        end: float,
        addresses: Iterable[str] = (),
        users: Iterable[str] = (),
        networks: Iterable[str] = (),
        note: str = "",
        catch_all: bool = False,
    ) -> Label:
        n = self._ids.get(kind, 0) + 1
        self._ids[kind] = n
        lb = Label(
            f"{kind}-{n}",
            cls,
            kind,
            start,
            end,
            sorted({str(ipaddress.ip_address(a)) for a in addresses}),
            sorted(set(networks)),
            sorted(set(users)),
            note,
            catch_all,
            kind in EXTRA_BENIGN,
        )
        self.labels.append(lb)
        return lb

    def lines(self) -> tuple[list[str], float]:
        """Drain the heap: the log's lines in time order, and the last line's time. Pids and
        logind session ids are handed out here, in the order their processes and sessions
        start (gen_authlog's scanner connections: at their first line)."""
        rows = sorted(self.g.lines)
        self.g.lines = []
        started: dict[int, float] = {}
        for ts, _seq, _prog, pid, _msg, _cat, _ip in rows:
            if pid != LOGIND_PID and pid not in started:
                started[pid] = self._started[pid - _TOKEN0] if pid >= _TOKEN0 else ts
        real: dict[int, int] = {}
        cur = self.rng.randint(300_000, 900_000)
        for pid in sorted(started, key=started.__getitem__):
            cur += self.rng.randint(1, 6)
            if cur > 4_194_304:  # the kernel's pid_max: wrap
                cur = 1000 + cur % 1000
            real[pid] = cur
        sessions: dict[str, str] = {}
        next_sid = self.rng.randint(100, 2000)

        def sid(m: re.Match[str]) -> str:
            nonlocal next_sid
            if m.group(1) not in sessions:
                next_sid += 1
                sessions[m.group(1)] = str(next_sid)
            return sessions[m.group(1)]

        out: list[str] = []
        stamp: tuple[int, str] = (-1, "")
        host = self.host
        last = self.t0
        for ts, _seq, prog, pid, msg, _cat, _ip in rows:
            if msg.startswith("fatal: Timeout before authentication"):
                continue  # Debian's 9.2 never logs it (REAL-COMPONENTS.md)
            if "\0S" in msg:
                msg = _SID.sub(sid, msg)
            sec = int(ts)
            if sec != stamp[0]:
                stamp = (sec, ga._stamp(sec))
            out.append(f"{stamp[1]} {host} {prog}[{real.get(pid, pid)}]: {msg}")
            last = ts
        return out, last

    # -- sshd shapes
    def failures(
        self,
        t: float,
        ip: str,
        user: str,
        tries: int,
        *,
        invalid: bool = False,
        end: str = "closed",
        human: bool = False,
        pid: int | None = None,
        port: int | None = None,
    ) -> tuple[float, int, int]:
        """One connection with ``tries`` failed passwords; returns (time, pid, port) after
        the last line. ``end``: ``closed`` (the client gives up), ``bye`` (it says goodbye
        first), ``max`` (sshd's MaxAuthTries: ``tries`` is 6), ``open`` (still open: the
        caller logs what comes next on it)."""
        rng = self.rng
        pid = self.pid(t) if pid is None else pid
        port = (self.client_port() if human else self.any_port()) if port is None else port
        inv = "invalid user " if invalid else ""
        ts = t + rng.uniform(0.05, 1.0)
        if invalid:
            self.emit(ts, "sshd", pid, f"Invalid user {user} from {ip} port {port}", ip)
        for i in range(tries):
            ts += rng.uniform(3.0, 9.0) if human else rng.uniform(0.2, 1.5)
            if invalid:
                self.emit(ts, "sshd", pid, "pam_unix(sshd:auth): check pass; user unknown")
            if i == 0:  # pam_unix logs the first failure; the rest in its summary
                who = "" if invalid else f"  user={user}"
                self.emit(
                    ts,
                    "sshd",
                    pid,
                    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                    f"tty=ssh ruser= rhost={ip}{who}",
                    ip,
                )
            ts += rng.uniform(1.8, 2.6)  # pam_faildelay
            self.emit(
                ts, "sshd", pid, f"Failed password for {inv}{user} from {ip} port {port} ssh2", ip
            )
        if end == "open":
            return ts, pid, port
        ts += rng.uniform(0.3, 1.2) if human else rng.uniform(0.0, 0.8)
        who = "invalid" if invalid else "authenticating"
        pre = " [preauth]"
        if end == "max":
            self.emit(
                ts,
                "sshd",
                pid,
                f"error: maximum authentication attempts exceeded for {inv}{user} from {ip} "
                f"port {port} ssh2{pre}",
                ip,
            )
            self.emit(
                ts,
                "sshd",
                pid,
                f"Disconnecting {who} user {user} {ip} port {port}: Too many authentication "
                f"failures{pre}",
                ip,
            )
        elif end == "bye":
            reason = rng.choice(ga.BYE_REASONS)
            self.emit(
                ts, "sshd", pid, f"Received disconnect from {ip} port {port}:11: {reason}{pre}", ip
            )
            self.emit(
                ts, "sshd", pid, f"Disconnected from {who} user {user} {ip} port {port}{pre}", ip
            )
        else:
            self.emit(
                ts, "sshd", pid, f"Connection closed by {who} user {user} {ip} port {port}{pre}", ip
            )
        if tries > 1:
            s = "s" if tries > 2 else ""
            who_u = "" if invalid else f"  user={user}"
            self.emit(
                ts,
                "sshd",
                pid,
                f"PAM {tries - 1} more authentication failure{s}; logname= uid=0 euid=0 "
                f"tty=ssh ruser= rhost={ip}{who_u}",
                ip,
            )
            if tries > 3:
                self.emit(ts, "sshd", pid, f"PAM service(sshd) ignoring max retries; {tries} > 3")
        return ts, pid, port

    def probe_invalid(self, t: float, ip: str, user: str) -> float:
        """An invalid user name that gives up before any password (enumeration)."""
        pid, port = self.pid(t), self.any_port()
        ts = t + self.rng.uniform(0.05, 0.8)
        self.emit(ts, "sshd", pid, f"Invalid user {user} from {ip} port {port}", ip)
        ts += self.rng.uniform(0.1, 2.0)
        self.emit(
            ts,
            "sshd",
            pid,
            f"Connection closed by invalid user {user} {ip} port {port} [preauth]",
            ip,
        )
        return ts

    def login(
        self,
        t: float,
        user: str,
        ip: str,
        *,
        method: str | None = None,
        key_fp: str | None = None,
        key_type: str | None = None,
        duration: float = 600.0,
        pid: int | None = None,
        port: int | None = None,
        sudo: int = 0,
    ) -> float:
        """A successful login, its session and its logout; returns the Accepted line's time."""
        rng = self.rng
        u = USERS.get(user)
        uid = u.uid if u is not None else 1000
        method = method or (u.method if u is not None else "password")
        pid = self.pid(t) if pid is None else pid
        port = self.client_port() if port is None else port
        ts = t + rng.uniform(0.1, 0.6)
        if method == "publickey":
            fp = key_fp or fingerprint(user)
            ktype = key_type or (u.key_type if u is not None else "ED25519")
            self.emit(
                ts, "sshd", pid,
                f"Accepted publickey for {user} from {ip} port {port} ssh2: {ktype} SHA256:{fp}",
                ip,
            )  # fmt: skip
        else:
            self.emit(
                ts, "sshd", pid, f"Accepted password for {user} from {ip} port {port} ssh2", ip
            )
        self.emit(
            ts,
            "sshd",
            pid,
            f"pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)",
        )
        self.logind += 1
        sid = f"\0S{self.logind}\0"  # numbered in time order by lines()
        self.emit(ts + 0.01, "systemd-logind", LOGIND_PID, f"New session {sid} of user {user}.")
        live = [e for e in self.user_sessions.get(user, []) if e > ts]
        if not live:
            self.emit(
                ts + 0.02,
                "(systemd)",
                self.pid(ts + 0.02),
                f"pam_unix(systemd-user:session): session opened for user {user}(uid={uid}) "
                "by (uid=0)",
            )
        child = self.pid(ts + 0.01)  # the session's unprivileged child logs the disconnect
        t_out = ts + duration
        live.append(t_out)
        self.user_sessions[user] = live
        for _ in range(sudo):
            self.sudo(rng.uniform(ts + 5, max(ts + 6, t_out - 5)), user, uid)
        self.emit(
            t_out,
            "sshd",
            child,
            f"Received disconnect from {ip} port {port}:11: disconnected by user",
            ip,
        )
        self.emit(t_out, "sshd", child, f"Disconnected from user {user} {ip} port {port}", ip)
        self.emit(t_out, "sshd", pid, f"pam_unix(sshd:session): session closed for user {user}")
        self.emit(
            t_out + 0.01,
            "systemd-logind",
            LOGIND_PID,
            f"Session {sid} logged out. Waiting for processes to exit.",
        )
        self.emit(t_out + 0.02, "systemd-logind", LOGIND_PID, f"Removed session {sid}.")
        if max(live) == t_out:
            self.emit(
                t_out + 10.2,
                "(sd-pam)",
                self.pid(t_out + 10.2),
                f"pam_unix(systemd-user:session): session closed for user {user}",
            )
        return ts

    def sudo(self, t: float, user: str, uid: int, wrong: int | None = None) -> None:
        """sudo as Debian 12 logs it; ``wrong`` passwords first (3: sudo gives up)."""
        rng = self.rng
        if wrong is None:
            r = rng.random()
            wrong = 3 if r < 0.01 else 1 if r < 0.07 else 0
        pid = self.pid(t)
        cmd = rng.choice(SUDO_COMMANDS)
        tty = f"pts/{rng.randint(0, 3)}"
        head = f"   {user} : "
        tail = f"TTY={tty} ; PWD=/home/{user} ; USER=root ; COMMAND={cmd}"
        if wrong:
            self.emit(
                t,
                "sudo",
                pid,
                f"pam_unix(sudo:auth): authentication failure; logname={user} uid={uid} euid=0 "
                f"tty=/dev/{tty} ruser={user} rhost=  user={user}",
            )
            t += rng.uniform(3, 8) * wrong
            if wrong >= 3:
                self.emit(t, "sudo", pid, f"{head}3 incorrect password attempts ; {tail}")
                return
        self.emit(t, "sudo", pid, head + tail)
        self.emit(
            t,
            "sudo",
            pid,
            f"pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid={uid})",
        )
        self.emit(
            t + rng.expovariate(1 / 20),
            "sudo",
            pid,
            "pam_unix(sudo:session): session closed for user root",
        )

    # -- addresses
    def attacker_v4(self) -> str:
        return ga.random_v4(self.rng)

    def attacker_v6(self) -> str:
        return ga.random_v6(self.rng)

    def new_network_address(self, v6: bool = False) -> str:
        """An address of a network none of the site's users has used (hotel, phone)."""
        while True:
            if v6:
                hi = (0x20010DB8 << 32) | (0xF000 << 16) | self.rng.getrandbits(28)
                a = str(ipaddress.IPv6Address((hi << 64) | self.rng.getrandbits(64)))
            else:
                a = str(ipaddress.IPv4Address((198 << 24) | (19 << 16) | self.rng.getrandbits(16)))
            if a not in self.used_new and not a.endswith(".0") and not a.endswith(".255"):
                self.used_new.add(a)
                return a

    # -- background
    def cron(self) -> None:
        """CRON's two lines per job: a job every minute, two more every 5 min, hourly, daily."""
        rng = self.rng
        t = (int(self.t0) // 60 + 1) * 60.0 + 1
        while t < self.t_end:
            lt = datetime.fromtimestamp(t, UTC)
            jobs = 1 if rng.random() < self.noise else 0
            if lt.minute % 5 == 0:
                jobs += 2
            if lt.minute == 17:
                jobs += 1
            if lt.hour == 6 and lt.minute == 25:
                jobs += 1
            for i in range(jobs):
                user, uid = ("root", 0) if i % 3 != 2 else ("www-data", 33)
                s = t + rng.random() * 0.3
                pid = self.pid(s)
                self.emit(
                    s,
                    "CRON",
                    pid,
                    f"pam_unix(cron:session): session opened for user {user}(uid={uid}) by (uid=0)",
                )
                dur = rng.expovariate(1 / 2.0) if rng.random() < 0.97 else rng.uniform(30, 600)
                self.emit(
                    s + dur, "CRON", pid, f"pam_unix(cron:session): session closed for user {user}"
                )
            t += 60.0

    def internet_noise(self) -> None:
        """Attack campaigns from gen_authlog's pools (scanners, one-shot botnet members, small
        brute-force runs, invalid-user probes), plus bots guessing the site's generic names."""
        g, rng = self.g, self.rng
        g._build_pools()
        per_day = {"botnet": 500.0, "scanner": 120.0, "bruteforce": 12.0, "enum": 10.0}
        for profile, n in per_day.items():
            rate = n * self.noise / DAY
            t = self.t0 + rng.expovariate(rate)
            while t < self.t_end:
                g._campaign(t, profile)
                t += rng.expovariate(rate)
        while g.tasks:  # the campaigns' connections
            ts, _seq, fn = heapq.heappop(g.tasks)
            fn(ts)
        rate = 20.0 * self.noise / DAY
        t = self.t0 + rng.expovariate(rate)
        while t < self.t_end:
            ip = self.attacker_v6() if rng.random() < 0.05 else self.attacker_v4()
            self.failures(t, ip, rng.choice(GUESSABLE), rng.choice((1, 1, 2)), end="bye")
            t += rng.expovariate(rate)

    def health_check(self) -> None:
        t = first = self.t0 + self.rng.uniform(0, 300)
        while t < self.t_end:
            pid, port = self.pid(t), self.client_port()
            self.emit(
                t,
                "sshd",
                pid,
                "error: kex_exchange_identification: Connection closed by remote host",
            )
            self.emit(t, "sshd", pid, f"Connection closed by {MONITOR} port {port}", MONITOR)
            t += 300 + self.rng.uniform(-2, 2)
        self.label("benign", "health_check", first, t, [MONITOR], catch_all=True,
                   note="TCP connect and close, no SSH banner")  # fmt: skip

    # -- routine use
    def routine(self, episodes_until: float) -> None:
        """The site's users, day by day; some password logins come after typos."""
        rng = self.rng
        days = int((self.t_end - self.t0) // DAY) + 1
        typo_kinds = ["typo_same_connection"] * 4 + ["typo_three_prompts"] * 2
        typo_kinds += ["typo_four", "typo_again_within_hour"]
        rng.shuffle(typo_kinds)
        self._typo_cycle = typo_kinds
        self._typo_next = 0
        for day in range(days):
            d0 = self.t0 + day * DAY
            weekday = datetime.fromtimestamp(d0, UTC).weekday() < 5
            for name in OFFICE_USERS:
                u = USERS[name]
                if day == 0:
                    # Every usual address once in the first day: the history knows them all
                    # long before new_source's learning period ends.
                    slots = [(d0 + (9 + 3 * i) * HOUR + rng.uniform(0, 2 * HOUR), a)
                             for i, a in enumerate(u.usual)]  # fmt: skip
                elif weekday:
                    n = rng.choice((1, 2, 2, 3))
                    slots = [(d0 + rng.uniform(8 * HOUR, 18 * HOUR), OFFICE_NAT) for _ in range(n)]
                    homes = u.usual[1:]
                    if homes and rng.random() < 0.3:
                        slots.append((d0 + rng.uniform(19 * HOUR, 23 * HOUR), rng.choice(homes)))
                else:
                    homes = u.usual[1:] or u.usual
                    slots = [(d0 + rng.uniform(10 * HOUR, 22 * HOUR), rng.choice(homes))
                             for _ in range(1 if rng.random() < 0.3 else 0)]  # fmt: skip
                for t, ip in slots:
                    if t >= self.t_end - HOUR:
                        continue
                    dur = rng.uniform(10 * MINUTE, 3 * HOUR)
                    sudo = rng.choice((0, 0, 1, 1, 2, 3, 5)) if u.admin else 0
                    kind = self._next_typo_kind()
                    span = HOUR if kind == "typo_again_within_hour" else 5 * MINUTE
                    if (
                        u.method == "password"
                        and day > 0
                        and t < episodes_until
                        and rng.random() < 0.3
                        and self._reserve(ip, t, t + span)
                    ):
                        self._typo_next += 1
                        self.typo_episode(t, name, ip, dur, kind)
                    else:
                        self.login(t, name, ip, duration=dur, sudo=sudo)
                    if sudo:
                        note = f"{sudo} sudo command(s) in a session from {ip}"
                        self.label("benign", "sudo_normal", t, t + dur, users=[name], note=note)
            # CI deploys in office hours, the hourly backup pull, root from the bastion.
            if weekday or rng.random() < 0.2:
                rate = 3 / HOUR
                t = d0 + 8 * HOUR + rng.expovariate(rate)
                while t < d0 + 19 * HOUR and t < self.t_end - HOUR:
                    self.login(t, "deploy", CI_RUNNER, duration=rng.uniform(5, 90))
                    t += rng.expovariate(rate)
            for h in range(24):
                t = d0 + h * HOUR + 5 * MINUTE + rng.uniform(0, 30)
                if t < self.t_end - HOUR:
                    self.login(t, "backup", BACKUP_HOST, duration=rng.uniform(20, 240))
            root_times = [d0 + 3 * HOUR + 10 * MINUTE + rng.uniform(0, 60)]
            if weekday and rng.random() < 0.3:
                root_times.append(d0 + rng.uniform(9 * HOUR, 17 * HOUR))
            for t in root_times:
                if t < self.t_end - HOUR:
                    dur = rng.uniform(60, 1200)
                    ts = self.login(t, "root", BASTION, duration=dur)
                    self.label("benign", "root_routine", ts, ts + dur, [BASTION], ["root"],
                               note="root with its known key from the bastion")  # fmt: skip
        names = (*OFFICE_USERS, "deploy", "backup")
        addresses = {a for n in names for a in USERS[n].usual}
        self.label("benign", "routine_use", self.t0, self.t_end, addresses, names, catch_all=True,
                   note="the site's users from their usual addresses")  # fmt: skip

    def _reserve(self, ip: str, t0: float, t1: float, margin: float = 12 * MINUTE) -> bool:
        """Claim [t0, t1] for one typo episode on this address unless another one is within
        ``margin``: at most 3-4 failures in any 10 minutes from one address (under the ban
        thresholds), as issue #13 has them."""
        spans = self.typo_spans.setdefault(ip, [])
        if any(t0 - margin < b and a < t1 + margin for a, b in spans):
            return False
        spans.append((t0, t1))
        return True

    def _next_typo_kind(self) -> str:
        kind = self._typo_cycle[self._typo_next % len(self._typo_cycle)]
        return kind

    def typo_episode(self, t: float, user: str, ip: str, dur: float, kind: str) -> None:
        """A user's typos then a successful login from ``ip`` (their usual network)."""
        rng = self.rng
        start = t
        note = ""
        if kind == "typo_same_connection":
            n = rng.choice((1, 1, 2))
            ts, pid, port = self.failures(t, ip, user, n, end="open", human=True)
            end = self.login(ts + rng.uniform(3, 9), user, ip, pid=pid, port=port, duration=dur)
            note = f"{n} typo(s), then the password on the same connection"
        elif kind in ("typo_three_prompts", "typo_four"):
            ts, pid, _ = self.failures(t, ip, user, 3, end="closed", human=True)
            t2 = ts + rng.uniform(4, 40)
            extra = 1 if kind == "typo_four" else 0
            if extra:
                t2, pid2, port2 = self.failures(t2, ip, user, 1, end="open", human=True)
                end = self.login(
                    t2 + rng.uniform(3, 9), user, ip, pid=pid2, port=port2, duration=dur
                )
            else:
                end = self.login(t2, user, ip, duration=dur)
            note = f"3 typos use up a connection's prompts, {3 + extra} typos in all"
        else:  # typo_again_within_hour
            n = rng.choice((2, 3))
            if n == 3:
                ts, _pid, _ = self.failures(t, ip, user, 3, end="closed", human=True)
                self.login(ts + rng.uniform(4, 40), user, ip, duration=rng.uniform(5, 15) * MINUTE)
            else:
                ts, pid, port = self.failures(t, ip, user, 2, end="open", human=True)
                self.login(ts + rng.uniform(3, 9), user, ip, pid=pid, port=port,
                           duration=rng.uniform(5, 15) * MINUTE)  # fmt: skip
            t2 = ts + rng.uniform(15, 45) * MINUTE
            ts2, pid2, port2 = self.failures(t2, ip, user, 1, end="open", human=True)
            end = self.login(ts2 + rng.uniform(3, 9), user, ip, pid=pid2, port=port2, duration=dur)
            later = int((t2 - t) / 60)
            note = f"{n} typos and a login, then 1 more typo and a login {later} min later"
        self.label("benign", kind, start, end, [ip], [user], note=note)

    # -- benign cases
    def office_nat_typos(self, t: float) -> None:
        """Six office users mistype once each within an hour behind the NAT; the two admins
        log in with their keys in the same hour. At most 4 failures in any 10 minutes."""
        rng = self.rng
        typists = list(PASSWORD_USERS)
        rng.shuffle(typists)
        offsets: list[float] = []
        while len(offsets) < len(typists):  # >= 2.75 min apart: never 5 in 10 min
            x = rng.uniform(0, 52 * MINUTE)
            if all(abs(x - o) >= 2.75 * MINUTE for o in offsets):
                offsets.append(x)
        offsets.sort()
        end = t
        for user, off in zip(typists, offsets, strict=True):
            ts, pid, port = self.failures(t + off, OFFICE_NAT, user, 1, end="open", human=True)
            end = self.login(ts + rng.uniform(3, 9), user, OFFICE_NAT, pid=pid, port=port,
                             duration=rng.uniform(1, 4) * HOUR)  # fmt: skip
        for admin in ADMINS:
            self.login(t + rng.uniform(0, 55 * MINUTE), admin, OFFICE_NAT,
                       duration=rng.uniform(1, 4) * HOUR, sudo=rng.choice((0, 1, 2)))  # fmt: skip
        self.typo_spans.setdefault(OFFICE_NAT, []).append((t, end))
        self.label("benign", "office_nat_typos", t, end + 60, [OFFICE_NAT], OFFICE_USERS,
                   note="6 users x 1 typo within an hour, then their logins")  # fmt: skip

    def known_key_new_network(self, t: float, user: str) -> None:
        ip = self.new_network_address(v6=self.rng.random() < 0.3)
        ts = self.login(t, user, ip, duration=self.rng.uniform(10 * MINUTE, 2 * HOUR))
        end = ts
        for _ in range(self.rng.randint(0, 2)):  # more logins during the trip
            end = self.login(end + self.rng.uniform(2, 10) * HOUR, user, ip, duration=1200)
        self.label("benign", "known_key_new_network", ts, end, [ip], [user],
                   note="travelling: known key from a new network")  # fmt: skip

    # -- incidents
    def bruteforce_fast(self, t: float, variant: int) -> None:
        rng = self.rng
        ip = self.attacker_v4() if variant == 0 else self.attacker_v6()
        n = rng.randint(6, 25)
        gap = 0.6 if variant == 0 else 8.0  # parallel connections, or one after the other
        ts = t
        last = t
        for _ in range(n):
            tries = rng.choice((1, 3, 6, 6))
            r = rng.random()
            user, invalid = ("root", False) if r < 0.5 else (self.g.bot_user(), True)
            end = "max" if tries == 6 else rng.choice(("closed", "bye"))
            last = max(last, self.failures(ts, ip, user, tries, invalid=invalid, end=end)[0])
            ts += rng.expovariate(1 / gap)
        self.label("incident", "bruteforce_fast", t, last, [ip], ["root"],
                   note=f"{n} connections from one address")  # fmt: skip

    def bruteforce_slow(self, t: float, variant: int) -> None:
        rng = self.rng
        ip = self.attacker_v4()
        ts = t
        n = 0
        users = ["root"] if variant == 0 else ["root", "admin", "ubuntu", "deploy"]
        last = t
        while ts < t + DAY:
            user = rng.choice(users)
            last = self.failures(ts, ip, user, 1, invalid=user in ("admin", "ubuntu"),
                                 end=rng.choice(("closed", "bye")))[0]  # fmt: skip
            n += 1
            ts += rng.uniform(27, 33) * MINUTE
        self.label("incident", "bruteforce_slow", t, last, [ip], users,
                   note=f"{n} tries, one per ~30 min for 24 h")  # fmt: skip

    def distributed_guessing(self, t: float, user: str, variant: int) -> None:
        rng = self.rng
        n = rng.randint(25, 60)
        span = rng.uniform(40 * MINUTE, 3 * HOUR) if variant == 0 else rng.uniform(20, 50) * MINUTE
        ips = [self.attacker_v6() if rng.random() < 0.1 else self.attacker_v4() for _ in range(n)]
        last = t
        for ip in ips:
            ts = t + rng.uniform(0, span)
            last = max(last, self.failures(ts, ip, user, rng.choice((1, 1, 2)), end="bye")[0])
        note = f"{n} addresses x 1-2 tries against {user} over {int(span / 60)} min"
        self.label("incident", "distributed_guessing", t, last, ips, [user], note=note)

    def user_enumeration(self, t: float, variant: int) -> None:
        rng = self.rng
        ip = self.attacker_v4()
        n = rng.randint(15, 40)
        names = rng.sample(ENUM_NAMES + list(ga.BOT_USERS[:40]), n)
        ts = t
        last = t
        for name in names:
            if variant == 0 or rng.random() < 0.7:
                last = self.probe_invalid(ts, ip, name)
            else:
                last = self.failures(ts, ip, name, 1, invalid=True, end="closed")[0]
            ts += rng.uniform(3, 20)
        self.label("incident", "user_enumeration", t, last, [ip], names,
                   note=f"{n} invalid names from one address")  # fmt: skip

    def ipv6_rotation(self, t: float, variant: int) -> None:
        rng = self.rng
        base = ipaddress.IPv6Address(self.attacker_v6())
        net = ipaddress.IPv6Network((int(base) >> 64 << 64, 64))
        n = rng.randint(15, 40)
        gap = rng.uniform(5, 40) if variant == 0 else rng.uniform(8, 14) * MINUTE
        ts = t
        ips: list[str] = []
        last = t
        for _ in range(n):
            ip = str(net.network_address + rng.getrandbits(64))
            ips.append(ip)
            invalid = rng.random() < 0.5
            user = self.g.bot_user() if invalid else "root"
            last = self.failures(ts, ip, user, rng.choice((1, 2, 3)), invalid=invalid,
                                 end=rng.choice(("closed", "bye")))[0]  # fmt: skip
            ts += rng.expovariate(1 / gap)
        self.label("incident", "ipv6_rotation", t, last, ips, ["root"], [str(net)],
                   note=f"{n} addresses of one /64, a new one per connection")  # fmt: skip

    def compromise_after_bruteforce(self, t: float, user: str, variant: int) -> None:
        rng = self.rng
        ip = self.attacker_v4()
        ts = t
        n = 0
        if variant == 0:  # a burst: several connections, a few passwords each
            for _ in range(rng.randint(4, 10)):
                tries = rng.choice((2, 3, 3, 6))
                end = "max" if tries == 6 else "bye"
                ts = self.failures(ts, ip, user, tries, end=end)[0] + rng.uniform(1, 20)
                n += tries
        else:  # paced under the findtime: 1 try every 2-3 minutes for an hour or two
            stop = t + rng.uniform(1, 2) * HOUR
            while ts < stop:
                ts = self.failures(ts, ip, user, 1, end="closed")[0] + rng.uniform(2, 3) * MINUTE
                n += 1
        last = rng.choice((0, 1, 2))  # the guess that works may follow a miss on its connection
        ts, pid, port = self.failures(ts, ip, user, last, end="open")
        n += last
        ok = self.login(ts + rng.uniform(0.5, 2.5), user, ip, method="password", pid=pid,
                        port=port, duration=rng.uniform(2, 30) * MINUTE)  # fmt: skip
        note = f"{n} failures for {user}, then Accepted password from the same address"
        self.label("incident", "compromise_after_bruteforce", t, ok, [ip], [user], note=note)

    def compromise_after_spray(self, t: float, user: str, variant: int) -> None:
        rng = self.rng
        n = rng.randint(20, 50)
        span = rng.uniform(30 * MINUTE, 2.5 * HOUR)
        ips = [self.attacker_v6() if rng.random() < 0.1 else self.attacker_v4() for _ in range(n)]
        last = t
        for ip in ips:
            ts = t + rng.uniform(0, span)
            last = max(last, self.failures(ts, ip, user, rng.choice((1, 1, 2)), end="bye")[0])
        winner = rng.choice(ips) if variant == 0 else self.attacker_v4()
        ok = self.login(last + rng.uniform(1, 20) * MINUTE, user, winner, method="password",
                        duration=rng.uniform(2, 30) * MINUTE)  # fmt: skip
        how = "one of the spray's addresses" if variant == 0 else "a new address"
        self.label("incident", "compromise_after_spray", t, ok, [*ips, winner], [user],
                   note=f"{n} addresses x 1-2 tries against {user}, then a password success "
                   f"from {how} ({winner})")  # fmt: skip

    def root_login_new_network(self, t: float, variant: int) -> None:
        ip = self.attacker_v4()
        if variant == 0:
            ts = self.login(
                t, "root", ip, method="password", duration=self.rng.uniform(5, 40) * MINUTE
            )
            how = "password"
        else:
            fp = fingerprint("root", f"intruder-{self.rng.random()}")
            ts = self.login(t, "root", ip, method="publickey", key_fp=fp, key_type="RSA",
                            duration=self.rng.uniform(5, 40) * MINUTE)  # fmt: skip
            how = "an unknown key"
        self.label("incident", "root_login_new_network", ts, ts, [ip], ["root"],
                   note=f"root from a new network with {how}")  # fmt: skip

    def key_login_new_network(self, t: float, user: str) -> None:
        ip = self.attacker_v6() if self.rng.random() < 0.3 else self.attacker_v4()
        fp = fingerprint(user, f"planted-{self.rng.random()}")
        ts = self.login(t, user, ip, method="publickey", key_fp=fp, key_type="ED25519",
                        duration=self.rng.uniform(5, 40) * MINUTE)  # fmt: skip
        self.label("incident", "key_login_new_network", ts, ts, [ip], [user],
                   note="a key never seen for this user, from a new network")  # fmt: skip


# ---------------------------------------------------------------------------- the plan


def _workday_time(b: Builder, lo: float, hi: float, h0: float = 9.0, h1: float = 16.0) -> float:
    """A time in [lo, hi] on a weekday between h0 and h1 o'clock (office hours)."""
    for _ in range(1000):
        t = b.rng.uniform(lo, hi)
        lt = datetime.fromtimestamp(t, UTC)
        if lt.weekday() < 5 and h0 <= lt.hour + lt.minute / 60 < h1:
            return t
    return lo


def generate(
    seed: int,
    start: str | datetime = DEFAULT_START,
    days: float = DEFAULT_DAYS,
    noise: float = 1.0,
    host: str = HOST,
) -> Scenario:
    """One labelled scenario: ``days`` (>= 9) of log from ``start`` (UTC); ``noise`` scales
    the internet background and CRON (1.0: ~150,000 lines for 10 days)."""
    if days < 9:
        raise ValueError("days must be at least 9 (7 days of learning, then the incidents)")
    if isinstance(start, str):
        st = datetime.fromisoformat(start)
        start = st.replace(tzinfo=UTC) if st.tzinfo is None else st.astimezone(UTC)
    b = Builder(seed, start, days, host, noise)
    rng = b.rng
    t0, t_end = b.t0, b.t_end
    # Incidents and the new-network cases come after the learning period, with margin.
    lo = t0 + LEARNING + 0.5 * DAY
    hi = t_end - 0.4 * DAY
    victims = list(PASSWORD_USERS)
    rng.shuffle(victims)
    key_users = list(KEY_USERS)
    rng.shuffle(key_users)
    for v in (0, 1):
        b.bruteforce_fast(rng.uniform(lo, hi), v)
        b.bruteforce_slow(rng.uniform(lo, hi - DAY), v)
        b.distributed_guessing(rng.uniform(lo, hi), victims[4 + v] if v == 0 else "deploy", v)
        b.user_enumeration(rng.uniform(lo, hi), v)
        b.ipv6_rotation(rng.uniform(lo, hi - 6 * HOUR), v)
        b.compromise_after_bruteforce(rng.uniform(lo, hi), victims[v], v)
        b.compromise_after_spray(rng.uniform(lo, hi), victims[2 + v], v)
        b.root_login_new_network(rng.uniform(lo, hi), v)
        b.key_login_new_network(rng.uniform(lo, hi), key_users[v])
    # Benign cases: the office hour (one in the learning period, one after), travellers.
    for t in (_workday_time(b, t0 + 2 * DAY, t0 + 5 * DAY), _workday_time(b, lo, hi)):
        b.office_nat_typos(t)
    for user in key_users[1:]:
        b.known_key_new_network(_workday_time(b, lo, hi, 7, 22), user)
    b.routine(episodes_until=t_end - 2 * HOUR)
    b.health_check()
    b.cron()
    b.internet_noise()
    lines, last = b.lines()
    b.labels.sort(key=lambda lb: (lb.start, lb.id))
    return Scenario(seed, t0, t_end, lines, b.labels, last)
