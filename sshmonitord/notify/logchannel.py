"""The always-on channel: every alert as one structured log line (the journal, with
``format: journal``). Level follows severity: critical → error, high → warning, else info.
It never fails, so it is also the default when no other channel is configured.
"""

from __future__ import annotations

from typing import Any

from .. import log as _log
from .alert import Alert, Message
from .channels import BaseChannel

LEVELS = {"critical": "error", "high": "warning"}
# Evidence lines per log entry: enough to see what happened, few enough for a journal line.
LOG_EVIDENCE = 3


class LogChannel(BaseChannel):
    type = "log"

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("min_severity", "info")
        super().__init__(**kw)

    async def send(self, message: Message) -> str:
        log = _log.get("alerts")
        for a in message.alerts:
            log_alert(a, log)
        if message.suppressed:
            log.warning("alerts suppressed", count=message.suppressed, reason="hourly cap")
        n = len(message.alerts)
        return f"logged {n} alert{'s' if n != 1 else ''}"


def log_alert(a: Alert, log: Any | None = None) -> None:
    """One alert as one structured log line (``alert stage=alerts id=… rule=…``), at the
    level its severity maps to. The daemon's alert queue logs every alert this way."""
    log = log if log is not None else _log.get("alerts")
    level = LEVELS.get(a.severity.lower(), "info")
    fields: dict[str, Any] = {
        "id": a.id,
        "rule": a.rule,
        "severity": a.severity,
        "subject": a.subject,
        "host": a.host,
        "summary": a.summary,
        "count": a.count,
        "first_seen": round(a.first_seen, 3),
        "last_seen": round(a.last_seen, 3),
    }
    if a.folded_since is not None:
        fields["folded_since"] = round(a.folded_since, 3)
    if a.user is not None:
        fields["user"] = a.user
    if a.ip is not None:
        fields["ip"] = a.ip
    if a.ban and a.ban.get("allowlisted"):
        fields["allowlisted"] = a.ban["allowlisted"]  # not banned, and why
    elif a.ban:
        fields["ban_net"] = a.ban.get("net")
        fields["ban_until"] = a.ban.get("until")
        fields["ban_offence"] = a.ban.get("offence")
        if a.ban.get("dry_run"):
            fields["ban_dry_run"] = True
    if a.evidence:
        fields["evidence"] = a.evidence[-LOG_EVIDENCE:]
    getattr(log, level)("alert", **fields)
