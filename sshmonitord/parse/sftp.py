"""OpenSSH sftp-server / internal-sftp (``-l INFO``) → sftp_open / sftp_close / sftp_op."""

from __future__ import annotations

import re
from typing import Any

from ..events import Event, Kind
from .prefix import Prefix
from .sshd import addr

# Paths are quoted by sftp-server with no escaping of embedded quotes, so anchor each
# pattern at its fixed words and take the path greedily between the quotes.
_PATTERNS: list[tuple[re.Pattern[str], Kind, str | None]] = [
    (
        re.compile(r'open "(?P<path>.*)" flags (?P<flags>\S*) mode (?P<mode>\d+)$'),
        Kind.SFTP_OPEN,
        None,
    ),
    (
        re.compile(
            r'(?P<forced>forced )?close "(?P<path>.*)" bytes read (?P<r>\d+) written (?P<w>\d+)$'
        ),
        Kind.SFTP_CLOSE,
        None,
    ),
    (re.compile(r'remove name "(?P<path>.*)"$'), Kind.SFTP_OP, "remove"),
    (re.compile(r'rename old "(?P<path>.*)" new "(?P<new>.*)"$'), Kind.SFTP_OP, "rename"),
    (re.compile(r'posix-rename old "(?P<path>.*)" new "(?P<new>.*)"$'), Kind.SFTP_OP, "rename"),
    (re.compile(r'copy old "(?P<path>.*)" new "(?P<new>.*)"$'), Kind.SFTP_OP, "copy"),
    (re.compile(r'mkdir name "(?P<path>.*)" mode (?P<mode>\d+)$'), Kind.SFTP_OP, "mkdir"),
    (re.compile(r'rmdir name "(?P<path>.*)"$'), Kind.SFTP_OP, "rmdir"),
    (re.compile(r'symlink old "(?P<path>.*)" new "(?P<new>.*)"$'), Kind.SFTP_OP, "symlink"),
    (re.compile(r'hardlink old "(?P<path>.*)" new "(?P<new>.*)"$'), Kind.SFTP_OP, "hardlink"),
    (re.compile(r'set "(?P<path>.*)" (?P<what>.*)$'), Kind.SFTP_OP, "setstat"),
    (re.compile(r'opendir "(?P<path>.*)"$'), Kind.SFTP_OP, "opendir"),
    (re.compile(r'closedir "(?P<path>.*)"$'), Kind.SFTP_OP, "closedir"),
]
_SESSION = re.compile(
    r"session (?P<what>opened|closed) for local user (?P<user>.*) from "
    r"\[(?P<addr>[^\]]*)\]$"
)


def parse_sftp(pre: Prefix) -> Event | None:
    msg = pre.message
    m = _SESSION.match(msg)
    if m is not None:
        ip, host = addr(m.group("addr"))
        detail: dict[str, Any] = {
            "op": "session_open" if m.group("what") == "opened" else "session_close"
        }
        if host is not None:
            detail["host"] = host
        return Event(
            pre.ts,
            pre.host,
            pre.program,
            pre.pid,
            Kind.SFTP_OP,
            m.group("user"),
            ip,
            detail=detail,
            session=str(pre.pid) if pre.pid is not None else None,
        )
    for pat, kind, op in _PATTERNS:
        m = pat.match(msg)
        if m is None:
            continue
        gd = m.groupdict()
        detail = {"path": gd["path"]}
        if op is not None:
            detail["op"] = op
        if gd.get("new") is not None:
            detail["new_path"] = gd["new"]
        if gd.get("flags") is not None:
            detail["flags"] = gd["flags"]
        if gd.get("mode") is not None:
            detail["mode"] = gd["mode"]
        if gd.get("what") is not None:
            detail["what"] = gd["what"]
        if gd.get("forced"):
            detail["forced"] = True
        if kind is Kind.SFTP_CLOSE:
            detail["bytes_read"] = int(gd["r"])
            detail["bytes_written"] = int(gd["w"])
        return Event(
            pre.ts,
            pre.host,
            pre.program,
            pre.pid,
            kind,
            detail=detail,
            session=str(pre.pid) if pre.pid is not None else None,
        )
    return Event(pre.ts, pre.host, pre.program, pre.pid, Kind.IGNORED)
