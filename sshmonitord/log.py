"""The daemon's own logging, through structlog.

Three renderings of the same event dict:

* ``journal``: ``<6>event key=value`` on stderr, with the sd-daemon priority prefix and no
  timestamp (journald adds its own), so ``journalctl -u sshmonitor -p warning`` filters;
* ``console``: a timestamped, human-readable line (coloured on a terminal);
* ``json``: one JSON object per line for log shippers.

Values are quoted so that attacker-controlled text (user names, banners) can never start a
new line in our log and forge an entry.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# sd-daemon(3) priorities, as in syslog(3).
PRIORITY = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
}
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:@,+%[]")


def format_value(value: Any) -> str:
    """Render one value for a key=value line: bare when plainly safe, else JSON-quoted."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if text and all(c in _SAFE for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _plain(event: Any) -> str:
    text = str(event)
    # The message itself is ours, but it may embed a value; never let it break the line.
    return text.replace("\r", "\\r").replace("\n", "\\n")


class LogfmtRenderer:
    """``[<prio>]event key=value ...``; ``journal=True`` adds the sd-daemon prefix."""

    def __init__(self, journal: bool, timestamps: bool) -> None:
        self.journal = journal
        self.timestamps = timestamps

    def __call__(self, _logger: Any, method: str, ev: dict[str, Any]) -> str:
        level = ev.pop("level", method)
        event = _plain(ev.pop("event", ""))
        ev.pop("timestamp", None)
        exc = ev.pop("exception", None)
        parts = []
        if self.journal:
            parts.append(f"<{PRIORITY.get(level, 6)}>{event}")
        else:
            if self.timestamps:
                parts.append(datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S"))
            parts.append(f"{level.upper():<7} {event}")
        parts.extend(f"{k}={format_value(v)}" for k, v in ev.items())
        line = " ".join(parts)
        if exc:
            # A traceback is multi-line by nature; keep it one journal entry.
            line += " exception=" + json.dumps(str(exc))
        return line


def under_journald(stream: TextIO = sys.stderr) -> bool:
    """True when ``stream`` is connected to journald (sd-daemon's JOURNAL_STREAM check)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":", 1))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def resolve_format(fmt: str, stream: TextIO = sys.stderr) -> str:
    """Turn ``auto`` into ``journal``, ``console`` or ``json`` for this process."""
    if fmt != "auto":
        return fmt
    if under_journald(stream):
        return "journal"
    return "console"


def setup(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> str:
    """Configure structlog for the whole process; return the format actually used."""
    out = stream or sys.stderr
    fmt = resolve_format(fmt, out)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if fmt == "json":
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ]
    else:
        processors += [
            structlog.processors.format_exc_info,
            LogfmtRenderer(journal=fmt == "journal", timestamps=True),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    return fmt


def get(name: str | None = None) -> Any:
    """A bound logger; ``name`` becomes the ``stage`` key."""
    log = structlog.get_logger()
    return log.bind(stage=name) if name else log
