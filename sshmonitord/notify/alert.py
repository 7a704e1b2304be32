"""What the notify stage speaks: :class:`Alert` (one finding as the operator sees it),
:class:`Message` (what one channel delivers in one go) and :class:`DeliveryError`.

Alerts are plain, JSON-serialisable data (``to_dict``/``from_dict``) so the queue can keep
them in the store's spool across restarts. Every string that came from a log line
(``summary``, ``subject``, ``user``, ``evidence``) is attacker-controlled: renderers escape it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..events import Finding

SEVERITIES: tuple[str, ...] = ("info", "warning", "high", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# How many evidence lines an alert carries, and how long each may be: a flood of long,
# hostile log lines must not turn one alert into a megabyte e-mail.
MAX_EVIDENCE_LINES = 20
MAX_EVIDENCE_CHARS = 2000


def severity_rank(severity: str) -> int:
    """0 (info) .. 3 (critical); an unknown severity ranks as warning."""
    return _RANK.get(str(severity).lower(), 1)


@dataclass
class Alert:
    """One finding, as the operator will read it."""

    id: str
    rule: str
    severity: str
    subject: str
    host: str
    summary: str
    first_seen: float
    last_seen: float
    count: int = 1
    folded_since: float | None = None
    ban: dict[str, Any] | None = None
    evidence: list[str] = field(default_factory=list)
    user: str | None = None
    ip: str | None = None

    @property
    def rank(self) -> int:
        return severity_rank(self.severity)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = list(self.evidence)
        d["ban"] = dict(self.ban) if self.ban is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict`; unknown keys (from a newer version) are ignored."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["evidence"] = [str(x) for x in kw.get("evidence") or ()]
        kw["first_seen"] = float(kw["first_seen"])
        kw["last_seen"] = float(kw["last_seen"])
        kw["count"] = int(kw.get("count", 1))
        if kw.get("folded_since") is not None:
            kw["folded_since"] = float(kw["folded_since"])
        return cls(**kw)

    @classmethod
    def from_finding(cls, f: Finding, host: str, ban: dict[str, Any] | None = None) -> Alert:
        """An alert for one finding; ``ban`` is what respond/ did ({net, until, offence})."""
        stamps = [e.ts.timestamp() for e in f.events]
        now = time.time()
        first = min(stamps) if stamps else now
        last = max(stamps) if stamps else now
        user = next((e.user for e in reversed(f.events) if e.user), None)
        ip = next((str(e.ip) for e in reversed(f.events) if e.ip is not None), None)
        evidence = [e.raw[:MAX_EVIDENCE_CHARS] for e in f.events if e.raw][-MAX_EVIDENCE_LINES:]
        return cls(
            id=f"{f.rule}:{f.subject}:{int(first)}",
            rule=f.rule,
            severity=str(f.severity),
            subject=f.subject,
            host=host,
            summary=f.summary or f"{f.rule} on {f.subject}",
            first_seen=first,
            last_seen=last,
            count=1,
            folded_since=None,
            ban=dict(ban) if ban is not None else None,
            evidence=evidence,
            user=user,
            ip=ip,
        )


@dataclass
class Message:
    """One e-mail / post: a digest of one or more alerts, rendered for one channel.

    ``suppressed``: how many further alerts the hourly cap held back ("N more suppressed").
    ``host``: the machine the alerts are about (the webhook payload carries it).
    """

    subject: str
    text: str
    html: str
    alerts: list[Alert]
    suppressed: int = 0
    host: str = ""


class DeliveryError(Exception):
    """A channel could not deliver a message.

    ``permanent``: retrying the same message will fail the same way (bad credentials, a
    rejected recipient, HTTP 400): log it and drop it. Otherwise retry later, no sooner than
    ``retry_after`` seconds when the server said so (HTTP Retry-After). ``str(err)`` and
    ``detail`` are what the server (or the OS) said, safe to print on one line.
    """

    def __init__(
        self, detail: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.detail

    def __repr__(self) -> str:
        kind = "permanent" if self.permanent else "transient"
        extra = f", retry_after={self.retry_after}" if self.retry_after is not None else ""
        return f"DeliveryError({self.detail!r}, {kind}{extra})"
