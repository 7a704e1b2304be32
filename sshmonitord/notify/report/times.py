"""How the report writes times: local wall-clock time and spans of time.

Its own module so that the daily report's scheduler (schedule.py), loaded with the daemon,
does not load the report's queries and rendering until a report is built (issue #17: memory).
"""

from __future__ import annotations

from datetime import datetime


def local_time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts)  # naive local time: DST-correct arithmetic via mktime


def short_time(ts: float | None) -> str:
    return "-" if ts is None else local_time(ts).strftime("%m-%d %H:%M")


def long_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def span_text(seconds: float) -> str:
    """``1d 2h``, ``3h 5m``, ``42s``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    d, s = divmod(s, 86400)
    hh, s = divmod(s, 3600)
    m = s // 60
    parts = [f"{d}d"] if d else []
    if hh:
        parts.append(f"{hh}h")
    if m and not d:
        parts.append(f"{m}m")
    return " ".join(parts) or "0m"
