"""Times and durations, read and written the same way by every command and message.

* ``parse_duration``: ``90``, ``1.5``, ``30s``, ``10m``, ``1h30m``, ``2d``, ``1w`` → seconds
  (the config's durations and every ``--since 24h``);
* ``parse_when``: ``now``, a duration ago, or ISO 8601 (naive: the zone given, else this
  machine's local time) → an aware datetime;
* ``fmt_duration``: ``4s``, ``3m 4s``, ``2h 3m 4s``, ``1d 2h 3m``;
* ``fmt_local``: an epoch as this machine's local time (``2026-11-24 07:00:00``, with the zone
  name where a reader may be elsewhere: e-mails); ``iso_utc`` for machine-readable output.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Parse ``90``, ``1.5``, ``"30s"``, ``"10m"``, ``"1h30m"``; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError
    text = value.strip().lower()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    neg = text.startswith("-")
    body = text[1:].lstrip() if neg else text
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(body):
        if m.start() != pos and body[pos : m.start()].strip():
            raise ValueError
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos == 0 or body[pos:].strip():
        raise ValueError
    return -total if neg else total


def parse_when(text: str, now: datetime, zone: tzinfo | None = None) -> datetime:
    """``now``, a duration ago (``24h``, ``90m``, ``7d``) or an ISO 8601 time
    (``2026-11-24T07:00``; without a zone: ``zone``, else this machine's local time).
    Raises ValueError with a sentence for the operator."""
    t = text.strip()
    if t.lower() == "now":
        return now
    try:
        return now - timedelta(seconds=parse_duration(t))
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (24h, 7d) nor an ISO 8601 time (2026-11-24T07:00)"
        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=zone) if zone is not None else ts.astimezone()
    return ts


def fmt_duration(seconds: float | None) -> str:
    """``4s``, ``3m 4s``, ``2h 3m 4s``, ``1d 2h 3m``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m {s}s"
    return f"{m}m {s}s" if m else f"{s}s"


def fmt_local(epoch: float | None, zone_name: bool = False, missing: str = "-") -> str:
    """An epoch as this machine's local time: ``2026-11-24 07:00:00`` (``+ CET`` with
    ``zone_name``)."""
    if epoch is None:
        return missing
    dt = datetime.fromtimestamp(float(epoch)).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S %Z" if zone_name else "%Y-%m-%d %H:%M:%S").strip()


def iso_utc(epoch: float | None) -> str | None:
    """An epoch as ISO 8601 in UTC with a ``Z`` (JSON output)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
