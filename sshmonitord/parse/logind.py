"""systemd-logind's session lines, for joining logins to their logind session number."""

from __future__ import annotations

import re

from ..events import Event, Kind
from .prefix import Prefix

# Old: "New session 42 of user alice."  New (systemd 256+): "New session '42' of user
# 'alice' with class 'user' and type 'tty'."
_NEW = re.compile(
    r"New session '?(?P<sid>[^' ]+)'? of user (?:'(?P<quser>.*)' with class .*"
    r"|(?P<user>.+))\.$"
)
_REMOVED = re.compile(r"Removed session '?(?P<sid>[^' ]+)'?\.$")
_LOGGED_OUT = re.compile(r"Session '?(?P<sid>[^' ]+)'? logged out\..*$")


def parse_logind(pre: Prefix) -> Event | None:
    """``New session 42 of user alice.`` → session_open; ``Removed session 42.`` → close."""
    msg = pre.message
    m = _NEW.match(msg)
    if m is not None:
        return Event(
            pre.ts,
            pre.host,
            pre.program,
            pre.pid,
            Kind.SESSION_OPEN,
            m.group("quser") if m.group("quser") is not None else m.group("user"),
            detail={"logind_session": m.group("sid")},
        )
    m = _REMOVED.match(msg)
    if m is not None:
        return Event(
            pre.ts,
            pre.host,
            pre.program,
            pre.pid,
            Kind.SESSION_CLOSE,
            detail={"logind_session": m.group("sid")},
        )
    m = _LOGGED_OUT.match(msg)
    if m is not None:
        return Event(
            pre.ts,
            pre.host,
            pre.program,
            pre.pid,
            Kind.IGNORED,
            detail={"logind_session": m.group("sid")},
        )
    return None  # logind says much else (seats, suspend); none of it is ours
