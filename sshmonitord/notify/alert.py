"""What the notify stage speaks: :class:`Alert` (one finding as the operator sees it),
:class:`Message` (what one channel delivers in one go) and :class:`DeliveryError`.

Alerts are plain, JSON-serialisable data (``to_dict``/``from_dict``) so the queue can keep
them in the store's spool across restarts. Every string that came from a log line
(``summary``, ``subject``, ``user``, ``evidence``) is attacker-controlled: renderers escape it.

**Ids.** Delivery is at least once (a ``kill -9`` between the server's "accepted" and the
spool row's deletion sends the message again after the restart), so every alert and every
message carries a stable, opaque id a receiver can deduplicate on: 32 lowercase hex digits
(128 bits of SHA-256), never any text from a log line. An alert's id is a hash of what
detection would produce again from the same log lines; a message's id is its one alert's id,
or for a digest a hash of its members' ids. See :func:`finding_id` and :func:`message_id`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC
from typing import Any

from ..events import Event, Finding

SEVERITIES: tuple[str, ...] = ("info", "warning", "high", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# How many evidence lines an alert carries, and how long each may be: a flood of long,
# hostile log lines must not turn one alert into a megabyte e-mail.
MAX_EVIDENCE_LINES = 20
MAX_EVIDENCE_CHARS = 2000


ID_LENGTH = 32  # hex digits: 128 bits, no collision in any spool's lifetime
_ID_RE = re.compile(rf"[0-9a-f]{{{ID_LENGTH}}}")


def severity_rank(severity: str) -> int:
    """0 (info) .. 3 (critical); an unknown severity ranks as warning."""
    return _RANK.get(str(severity).lower(), 1)


def is_id(value: object) -> bool:
    """Is ``value`` an id as this module makes them (safe in any header, URL or file name)?"""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def make_id(kind: str, *parts: object) -> str:
    """An opaque id over ``parts``: JSON-encoded first, so no two different lists of parts
    can run together into the same bytes (``("a:b", "c")`` vs ``("a", "b:c")``)."""
    doc = json.dumps([kind, *parts], ensure_ascii=True, separators=(",", ":"), default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:ID_LENGTH]


def _stamp(ev: Event) -> str:
    # Exact to the microsecond the parser produced, with no float in between.
    return ev.ts.astimezone(UTC).isoformat(timespec="microseconds")


def finding_id(f: Finding, host: str) -> str:
    """The id of the alert for ``f`` on ``host``: the same whenever detection produces this
    finding again from the same log lines.

    After a crash the pipeline re-reads the lines after the last committed position, but the
    detection windows start empty: the earlier evidence of a re-detected finding (and so its
    first timestamp) may differ. What does not differ is the event that completed it — the
    last one, the line being handled when the rule fired — so the id covers the rule, the
    subject, the host and that event's time, host and raw line. The engine fires a rule for a
    subject at most once per event, so two different findings never share all of these.
    Never the wall clock (a finding without events, which no rule makes, is the exception:
    it has nothing else to tell it from the next one).
    """
    if f.events:
        last = f.events[-1]
        return make_id("alert/1", host, f.rule, f.subject, _stamp(last), last.host, last.raw)
    return make_id("alert/1-no-events", host, f.rule, f.subject, f.summary, time.time())


def message_id(alert_ids: list[str]) -> str:
    """One alert: its own id. A digest: a hash of its members' ids, sorted (the order a
    message lists them in is presentation) and each counted once. Nothing else: a retry of
    the same alerts must carry the same id although its suppressed count and time differ."""
    members = sorted(set(alert_ids))
    if len(members) == 1:
        return members[0]
    return make_id("digest/1", members)


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

    def __post_init__(self) -> None:
        # An id of the old form (``rule:subject:time``: attacker text, from a spool written
        # by an older version) or any other string: replace it with an opaque one derived
        # from it and the alert's fixed content, so the same spool row always gets the same.
        if not is_id(self.id):
            self.id = make_id(
                "alert/legacy",
                str(self.id),
                self.host,
                self.rule,
                self.subject,
                repr(float(self.first_seen)),
                repr(float(self.last_seen)),
                self.evidence[-1] if self.evidence else None,
            )

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
        kw["id"] = str(kw.get("id") or "")  # a missing id is derived (__post_init__)
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
            id=finding_id(f, host),
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
    ``id``: what a receiver deduplicates on (Message-ID, Idempotency-Key, the JSON ``id``);
    left empty, it is :func:`message_id` of the alerts — or, for a message without alerts (the
    daily report), a hash of its host, subject and text.
    """

    subject: str
    text: str
    html: str
    alerts: list[Alert]
    suppressed: int = 0
    host: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            if self.alerts:
                self.id = message_id(self.alert_ids)
            else:
                self.id = make_id("message/1", self.host, self.subject, self.text)
        elif not is_id(self.id):
            self.id = make_id("message/given", self.id)

    @property
    def alert_ids(self) -> list[str]:
        """The members' ids, in the message's order."""
        return [a.id for a in self.alerts]


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
