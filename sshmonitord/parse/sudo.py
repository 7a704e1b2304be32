"""sudo and su messages → ``sudo`` / ``sudo_failure`` / ``su`` / ``su_failure`` Events."""

from __future__ import annotations

import re
from typing import Any

from ..events import Event, Kind
from .prefix import Prefix

# "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id"
# "alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=…"
# The user is sudo's own (a local account name); COMMAND is last and may contain " ; ".
_SUDO = re.compile(r"\s*(?P<user>\S+) : (?P<rest>.*)$", re.S)
_FIELD_NAMES = ("TTY", "PWD", "USER", "GROUP", "TSID", "ENV", "COMMAND")


def _fields(rest: str) -> tuple[str | None, dict[str, str]]:
    """Split ``[reason ; ]KEY=value ; … ; COMMAND=…``; COMMAND takes the rest of the line."""
    out: dict[str, str] = {}
    reason = None
    cmd_at = rest.find("COMMAND=")
    command = None
    if cmd_at >= 0:
        command = rest[cmd_at + 8 :]
        rest = rest[:cmd_at].rstrip(" ;")
    for i, part in enumerate(p.strip() for p in rest.split(" ; ")):
        key, eq, val = part.partition("=")
        if eq and key in _FIELD_NAMES:
            out[key] = val
        elif i == 0 and part:
            reason = part
    if command is not None:
        out["COMMAND"] = command
    return reason, out


def parse_sudo(pre: Prefix) -> Event | None:
    msg = pre.message
    if msg.startswith("pam_") or msg.startswith("PAM "):
        return _ignored(pre)
    m = _SUDO.match(msg)
    if m is None:
        return _ignored(pre)
    reason, f = _fields(m.group("rest"))
    detail: dict[str, Any] = {}
    if "TTY" in f:
        detail["tty"] = f["TTY"]
    if "PWD" in f:
        detail["pwd"] = f["PWD"]
    if "USER" in f:
        detail["runas"] = f["USER"]
    if "COMMAND" in f:
        detail["command"] = f["COMMAND"]
    kind = Kind.SUDO
    if reason is not None:
        detail["reason"] = reason
        kind = Kind.SUDO_FAILURE
    elif not f:
        return _ignored(pre)
    return Event(pre.ts, pre.host, pre.program, pre.pid, kind, m.group("user"), detail=detail)


_SU_OK = re.compile(r"(?:\+ \S+ )?\(to (?P<target>\S+)\) (?P<user>\S+) on (?P<tty>\S+)$")
_SU_FAIL = re.compile(r"FAILED SU \(to (?P<target>\S+)\) (?P<user>\S+) on (?P<tty>\S+)$")


def parse_su(pre: Prefix) -> Event | None:
    msg = pre.message
    for pat, kind in ((_SU_FAIL, Kind.SU_FAILURE), (_SU_OK, Kind.SU)):
        m = pat.match(msg)
        if m is not None:
            return Event(
                pre.ts,
                pre.host,
                pre.program,
                pre.pid,
                kind,
                m.group("user"),
                detail={"target": m.group("target"), "tty": m.group("tty")},
            )
    return _ignored(pre)


_PAM_USER = re.compile(
    r"pam_\w+\([^)]*\): (?:session (?:opened|closed) for user (?P<user>[^\s(]+)"
    r"|authentication failure;.* user=(?P<auser>\S+))"
)


def _ignored(pre: Prefix) -> Event:
    """sudo's and su's own PAM chatter: recorded with the user it names, never scored."""
    m = _PAM_USER.match(pre.message.lstrip())
    user = None
    if m is not None:
        user = m.group("user") or m.group("auser")
    return Event(pre.ts, pre.host, pre.program, pre.pid, Kind.IGNORED, user)
