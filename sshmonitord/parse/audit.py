"""auditd's raw log (``/var/log/audit/audit.log``) → ``exec`` and session events.

One audit *event* is several *records* (lines) that share a stamp ``msg=audit(SEC.MS:SERIAL)``:
an ``execve`` is ``SYSCALL`` + ``EXECVE`` (+ ``BPRM_FCAPS``) + ``CWD`` + ``PATH``… +
``PROCTITLE`` (+ ``EOE`` where the kernel's end-of-event record is kept; auditd itself does not
write it to its log). Records of concurrent events interleave. This module is the pure text
layer: :func:`split_record` reads one record's header, :func:`parse_audit` turns one event's
text (its records joined by ``\\n``) into at most one :class:`Event`. Joining records into
events (positions, timeouts, the bounded buffer) is the auditd source's job:
``sources/audit_records.py`` (``AuditGrouper``, and ``AuditAssembler`` for replay and tests).

Formats (kernel ``kernel/audit.c`` and ``auditsc.c``, libaudit, auditd):

* Strings a user can influence (``comm``, ``exe``, ``cwd``, ``name``, ``key``, ``proctitle``,
  ``acct`` and each execve argument) are logged ``"as is"`` when every byte is printable ASCII
  other than ``"`` (0x21–0x7e), else as upper-case hex without quotes. So an unquoted value of
  such a field is hex; anything that is not valid hex is kept as logged. Decoded bytes that are
  not UTF-8 become U+FFFD.
* An execve argument too long for one record is logged as ``aN_len=LEN aN[0]=… aN[1]=…``,
  continued over several ``EXECVE`` records of the same event; each chunk is quoted or hex
  on its own. ``PROCTITLE`` is the NUL-separated command line, cut at 128 bytes.
* ``log_format = ENRICHED`` appends 0x1D and interpreted fields (``AUID="alice"``).
* ``name_format`` other than ``none`` prefixes ``node=NAME``.
* User-space records (PAM's ``USER_START``…) carry their own fields in ``msg='…'``; libaudit
  writes ``op=… acct=… exe=… hostname=… addr=… terminal=… res=…`` in that order. Only ``acct``
  and ``exe`` are encoded, the host name is not: fields before it are taken at their first
  occurrence, fields after it at their last, so nothing a host name holds can stand in for them.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..addresses import normalize_address
from ..events import Event, Kind

PROGRAM = "audit"
UNSET = 4294967295  # (u32)-1: auid/ses of a process no login has claimed
INTERP_SEPARATOR = "\x1d"

MAX_ARGV_CHARS = 64 * 1024  # decoded argv kept in the event; the rest is cut (argv_truncated)
MAX_ARGS = 4096  # argument indices considered
MAX_RAW = 8192  # Event.raw keeps the event's text up to this many characters

# execve/execveat by audit arch (AUDIT_ARCH_*, as auditd prints it) → syscall numbers. Used
# only when the event has no EXECVE record (a failed exec: ENOENT, EACCES).
EXEC_SYSCALLS: dict[str, frozenset[int]] = {
    "c000003e": frozenset({59, 322}),  # x86_64
    "40000003": frozenset({11, 358}),  # i386
    "c00000b7": frozenset({221, 281}),  # aarch64
    "40000028": frozenset({11, 387}),  # arm
    "c0000015": frozenset({11, 362}),  # ppc64le
    "80000015": frozenset({11, 362}),  # ppc64
    "80000016": frozenset({11, 354}),  # s390x
    "c00000f3": frozenset({221, 281}),  # riscv64
    "c0000102": frozenset({221, 281}),  # loongarch64
}

SESSION_TYPES = {
    "USER_START": Kind.SESSION_OPEN,
    "USER_LOGIN": Kind.SESSION_OPEN,
    "USER_END": Kind.SESSION_CLOSE,
    "USER_LOGOUT": Kind.SESSION_CLOSE,
}
# PAM session records are kept from sshd only (su, sudo, cron and systemd --user open PAM
# sessions too). sshd sets PAM_TTY to "ssh" before it has a tty.
SSHD_EXES = frozenset({"sshd", "sshd-session"})

_HEADER = re.compile(
    r"(?:node=(?P<node>\S*) )?type=(?P<type>\S{1,64}) "
    r"msg=audit\((?P<sec>\d{1,12})\.(?P<frac>\d{1,9}):(?P<serial>\d{1,20})\):",
    re.ASCII,
)
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_ARG = re.compile(r"a(\d{1,9})(?:\[(\d{1,9})\]|(_len))?", re.ASCII)
# Shown escaped in `command`: C0/C1 controls, DEL, line/paragraph separators, bidi controls.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x1b": "\\E"}
_USER_FIRST = frozenset({"op", "acct", "id", "exe", "grantors", "comm", "cmd", "cwd"})


# ---------------------------------------------------------------------------------- records


@dataclass(slots=True)
class Record:
    """One audit record (line), split into its header and its field text."""

    node: str
    type: str
    stamp: str  # "SEC.MS:SERIAL": with node, the event's identity
    sec: int
    frac: str
    body: str  # the fields, without the ENRICHED part
    interp: str  # the ENRICHED part after 0x1D ("" when absent)

    @property
    def time(self) -> float:
        return self.sec + int(self.frac[:6].ljust(6, "0")) / 1e6

    def when(self) -> datetime | None:
        try:
            return datetime.fromtimestamp(self.sec, UTC) + timedelta(
                microseconds=int(self.frac[:6].ljust(6, "0"))
            )
        except (OverflowError, OSError, ValueError):
            return None


def split_record(text: str) -> Record | None:
    """``[node=N ]type=T msg=audit(S.MS:SERIAL): fields`` → Record, or None."""
    m = _HEADER.match(text)
    if m is None:
        return None
    node, typ, sec, frac, serial = m.groups()
    body, _, interp = text[m.end() :].partition(INTERP_SEPARATOR)
    return Record(
        node or "", typ, f"{sec}.{frac}:{serial}", int(sec), frac, body.strip(" "), interp
    )


def fields(text: str, last: frozenset[str] = frozenset()) -> dict[str, str]:
    """``k=v k2="v2"…`` → {k: raw value}; a key's first occurrence wins (``last``: its last).

    Splits at whitespace: the kernel never leaves a space in a value (it hex-encodes).
    Tolerates libaudit's old ``(hostname=h, addr=a, terminal=t res=r)`` punctuation.
    """
    out: dict[str, str] = {}
    for tok in text.split():
        k, sep, v = tok.partition("=")
        if not sep:
            continue
        if k[:1] == "(":
            k = k[1:]
        if v[:1] != '"':
            if v[-1:] == ",":
                v = v[:-1]
            if v[-1:] == ")" and "(" not in v:
                v = v[:-1]
        if k not in out or k in last:
            out[k] = v
    return out


def kfields(text: str) -> dict[str, str]:
    """A kernel record's fields: no value holds a space, no key repeats (a later one wins)."""
    return dict(t.split("=", 1) for t in text.split() if "=" in t)


def _unhex(s: str) -> bytes | None:
    if _HEX.fullmatch(s) is None:
        return None
    return bytes.fromhex(s)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace").replace("\x00", "\ufffd")


def untrusted(raw: str | None) -> str | None:
    """An encoded field: ``"text"`` → text; hex → decoded; ``(null)``/``?``/absent → None."""
    if raw is None or raw in ("(null)", "(none)", "?", ""):
        return None
    if raw[0] == '"':
        s = raw[1:-1] if len(raw) > 1 and raw[-1] == '"' else raw[1:]
        return s.replace("\x00", "\ufffd")
    b = _unhex(raw)
    return raw.replace("\x00", "\ufffd") if b is None else _text(b)


def _chunk_bytes(raw: str) -> tuple[bytes, bool]:
    """One execve argument or chunk → (bytes, was hex)."""
    if raw[:1] == '"':
        inner = raw[1:-1] if len(raw) > 1 and raw[-1] == '"' else raw[1:]
        return inner.encode("utf-8", "replace"), False
    b = _unhex(raw)
    if b is None:
        return raw.encode("utf-8", "replace"), False
    return b, True


def _int(raw: str | None) -> int | None:
    if raw is None or not (0 < len(raw) <= 20) or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


def _id(raw: str | None) -> int | None:
    """auid/ses style: (u32)-1 (or -1) means unset."""
    if raw == "-1":
        return None
    v = _int(raw)
    return None if v == UNSET else v


def _plain(raw: str | None) -> str | None:
    if raw is None:
        return None
    if raw[:1] == '"':
        raw = raw[1:-1] if len(raw) > 1 and raw[-1] == '"' else raw[1:]
    return None if raw in ("", "?", "(none)", "(null)") else raw


# --------------------------------------------------------------------------------- events


def parse_audit(text: str, host: str = "") -> Event | None:
    """One event's records (joined by newlines) → an ``exec`` or session Event, or None.

    None for everything else: other syscalls, other record types, and fragments (records
    whose SYSCALL record was before the point we started reading). ``host`` is the Event's
    host when the records carry no ``node=`` (auditd's ``name_format = none``).
    """
    lines = text.split("\n")
    first_type = _rtype(lines[0])
    if first_type in SESSION_TYPES:
        rec = split_record(lines[0])
        return None if rec is None else _session(rec, text, host)
    if "type=SYSCALL " not in text:
        return None  # not a syscall event, or a fragment of one
    records = [r for r in (split_record(x) for x in lines if _rtype(x) in _WANTED) if r is not None]
    syscall = next((r for r in records if r.type == "SYSCALL"), None)
    if syscall is None:
        return None
    execve = [r for r in records if r.type == "EXECVE"]
    sf = kfields(syscall.body)
    if not execve and not _is_exec(sf, syscall.interp):
        return None
    ts = syscall.when()
    if ts is None:
        return None
    argv, argc, truncated = _argv(execve)
    success = sf.get("success")
    ok = None if success is None else success == "yes"
    if not execve:
        # A failed exec has no EXECVE: the path it tried is PATH item 0. A successful one
        # whose EXECVE was lost: the new image's PROCTITLE (cut at 128 bytes).
        if ok:
            argv = _proctitle(records)
            truncated = True
        else:
            argv = _first_path(lines)
    cwd = next((untrusted(kfields(r.body).get("cwd")) for r in records if r.type == "CWD"), None)
    key = untrusted(sf.get("key"))
    if key is not None:
        key = key.replace("\x01", ",")  # several keys on one rule: 0x01-separated
    interp = fields(syscall.interp) if syscall.interp else {}
    detail: dict[str, Any] = {
        "auid": _id(sf.get("auid")),
        "ses": _ses(sf.get("ses")),
        "uid": _int(sf.get("uid")),
        "euid": _int(sf.get("euid")),
        "exe": untrusted(sf.get("exe")),
        "comm": untrusted(sf.get("comm")),
        "argv": argv,
        "command": shell_join(argv),
        "cwd": cwd,
        "tty": _plain(sf.get("tty")),
        "success": ok,
        "key": key,
        "ppid": _int(sf.get("ppid")),
        "argc": argc,
        "argv_truncated": truncated,
        "auid_user": _plain(interp.get("AUID")) if "AUID" in interp else None,
    }
    return Event(
        ts,
        syscall.node or host,
        PROGRAM,
        _int(sf.get("pid")),
        Kind.EXEC,
        None,
        detail=detail,
        raw=text[:MAX_RAW],
    )


_WANTED = frozenset({"SYSCALL", "EXECVE", "CWD", "PROCTITLE"})


def _rtype(line: str) -> str:
    """A record's type without parsing it (``[node=N ]type=T msg=…``)."""
    i = line.find("type=", 0, 300)
    if i < 0:
        return ""
    j = line.find(" ", i)
    return line[i + 5 : j] if j > 0 else line[i + 5 :]


def _ses(raw: str | None) -> str | None:
    v = _id(raw)
    return None if v is None else str(v)


def _is_exec(sf: dict[str, str], interp: str) -> bool:
    nums = EXEC_SYSCALLS.get(sf.get("arch", "").lower())
    n = _int(sf.get("syscall"))
    if nums is not None and n is not None:
        return n in nums
    if interp:  # ENRICHED, an arch we do not list
        return fields(interp).get("SYSCALL") in ("execve", "execveat")
    return False


def _argv(execve: list[Record]) -> tuple[list[str], int | None, bool]:
    """EXECVE records → (argv, argc, truncated). Chunks are joined as bytes, then decoded."""
    argc: int | None = None
    whole: dict[int, bytes] = {}
    parts: dict[int, dict[int, bytes]] = {}
    lens: dict[int, int] = {}
    hexed: dict[int, bool] = {}
    for r in execve:
        for k, v in kfields(r.body).items():
            if k == "argc":
                argc = _int(v) if argc is None else argc
                continue
            m = _ARG.fullmatch(k)
            if m is None:
                continue
            i = int(m.group(1))
            if i >= MAX_ARGS:
                continue
            if m.group(3):  # aN_len
                n = _int(v)
                if n is not None:
                    lens[i] = n
                continue
            b, was_hex = _chunk_bytes(v)
            if m.group(2) is None:
                whole.setdefault(i, b)
            else:
                parts.setdefault(i, {}).setdefault(int(m.group(2)), b)
                hexed[i] = hexed.get(i, False) or was_hex
    for i, chunks in parts.items():
        if i not in whole:
            whole[i] = b"".join(chunks[j] for j in sorted(chunks))
    truncated = False
    if whole:
        top = max(whole)
        if len(whole) != top + 1:
            truncated = True  # a gap: records lost or dropped
        if argc is not None and argc != top + 1:
            truncated = True
    elif argc:
        truncated = True
    for i, n in lens.items():
        # aN_len counts hex digits when the argument was hex-encoded.
        want = n // 2 if hexed.get(i) else n
        if i in whole and len(whole[i]) < want:
            truncated = True
    argv: list[str] = []
    budget = MAX_ARGV_CHARS
    for i in sorted(whole):
        s = _text(whole[i])
        if len(s) > budget:
            argv.append(s[:budget])
            truncated = True
            break
        argv.append(s)
        budget -= len(s)
    return argv, argc, truncated


def _proctitle(records: list[Record]) -> list[str]:
    for r in records:
        if r.type == "PROCTITLE":
            raw = kfields(r.body).get("proctitle")
            if raw is None:
                return []
            if raw[:1] == '"':
                return [untrusted(raw) or ""]
            b = _unhex(raw)
            if b is None:
                return [raw]
            return [_text(a) for a in b.split(b"\x00")]
    return []


def _first_path(lines: list[str]) -> list[str]:
    for line in lines:
        r = split_record(line) if _rtype(line) == "PATH" else None
        if r is not None:
            f = kfields(r.body)
            if f.get("item") == "0":
                name = untrusted(f.get("name"))
                return [name] if name is not None else []
    return []


def shell_join(argv: list[str]) -> str:
    """``shlex.join``, but an argument holding control or bidi characters is written as bash
    ``$'…'`` with escapes, so the command is still exact and never carries raw terminal
    controls or line breaks into an alert, a table or a terminal."""
    return " ".join(_quote(a) for a in argv)


def _quote(a: str) -> str:
    if _UNSAFE.search(a) is None:
        return shlex.quote(a)
    out = []
    for ch in a:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif _UNSAFE.match(ch):
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x80 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def _session(rec: Record, text: str, host: str) -> Event | None:
    """PAM's USER_START/USER_END (and sshd's own USER_LOGIN) → session_open/close."""
    body = " " + rec.body
    i = body.find(" msg='")
    if i < 0:
        return None
    i += 1
    outer = fields(body[:i])
    j = body.rfind("'")
    inner_text = body[i + 5 : j] if j > i + 4 else body[i + 5 :]
    inner = _user_fields(inner_text)
    if inner.get("res") not in ("success", "yes", "1"):
        return None
    exe = untrusted(inner.get("exe"))
    terminal = _plain(inner.get("terminal"))
    if (exe or "").rsplit("/", 1)[-1] not in SSHD_EXES and terminal != "ssh":
        return None
    ts = rec.when()
    if ts is None:
        return None
    acct = untrusted(inner.get("acct"))
    if acct == "(unknown)":
        acct = None
    addr = _plain(inner.get("addr"))
    pid = _int(outer.get("pid"))
    detail: dict[str, Any] = {
        "ses": _ses(outer.get("ses")),
        "auid": _id(outer.get("auid")),
        "addr": addr,
        "terminal": terminal,
        "acct": acct,
        "uid": _int(inner.get("id")),
        "hostname": _plain(inner.get("hostname")),
        "exe": exe,
        "op": _plain(inner.get("op")),
        "record": rec.type,
    }
    return Event(
        ts,
        rec.node or host,
        PROGRAM,
        pid,
        SESSION_TYPES[rec.type],
        acct,
        ip=_ip(addr),
        session=None if pid is None else str(pid),
        detail=detail,
        raw=text[:MAX_RAW],
    )


def _user_fields(text: str) -> dict[str, str]:
    """Inner ``msg='…'`` fields: first occurrence before the host name, last after it."""
    first = fields(text)
    last = fields(text, last=frozenset(first))
    return {k: (first[k] if k in _USER_FIRST else last[k]) for k in first}


def _ip(addr: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if addr is None or len(addr) > 64:
        return None
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    return normalize_address(ip)
