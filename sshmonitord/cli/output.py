"""What every ``sshmonitor`` command prints when something is wrong, and how it makes text
from the daemon or the store safe for a terminal."""

from __future__ import annotations

import sys
from typing import Any

from .. import control


def warn(message: str) -> None:
    print(f"sshmonitor: warning: {message}", file=sys.stderr)


def fail(message: str, code: int = 1) -> int:
    """One line on stderr, never a traceback; returns the exit code."""
    print(f"sshmonitor: error: {control.one_line(message)}", file=sys.stderr)
    return code


def failed(exc: control.ControlError) -> int:
    """A control request that failed: exit 2 when the request was wrong or refused."""
    usage = isinstance(exc, control.Refused) and exc.usage
    return fail(str(exc), 2 if usage else 1)


def printable(text: Any) -> str:
    """Log text for a terminal: control characters (escape sequences!) shown as \\xNN."""
    s = "" if text is None else str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in s)


def one_lines(value: Any) -> list[str]:
    """A list of strings from a status field (a list, one string, or nothing), each one line
    (warnings and samples may quote attacker-made text: no line breaks, no escapes)."""
    if not value:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [control.one_line(printable(str(x)), 300) for x in items]
