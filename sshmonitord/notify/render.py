"""Alerts → one :class:`Message` (subject, plain text, HTML) for the operator.

Attacker-controlled text (user names, log lines, summaries that embed them) is data here:

* the **subject** never contains a control character: CR, LF, ESC, bidi overrides... are
  shown as visible escapes (``\\r\\n``), whitespace runs collapse, the length is capped — a
  user name cannot add a header;
* the **text** part shows every control character as an escape (``\\x1b``), so a log line
  cannot move the cursor, recolour the terminal or fake a line of its own;
* the **HTML** part additionally goes through ``html.escape(quote=True)``; it uses inline
  styles only and loads nothing from anywhere.
* Suggested commands quote their arguments for a POSIX shell (``shlex.quote``): pasting
  ``sshmonitor session --user '$(reboot)'`` runs nothing.
"""

from __future__ import annotations

import shlex
import time
import unicodedata

from ..detect.engine import SPECIFICITY
from ..timefmt import fmt_local
from .alert import Alert, Message, make_id, message_id, severity_rank

SUBJECT_PREFIX = "[sshmonitor]"
MAX_SUBJECT = 200

# What each rule means, in the operator's words (docs/detection.md has the full story).
RULES: dict[str, str] = {
    "bruteforce": "many failed logins from one address",
    "slow_bruteforce": "failed logins from one address, paced over a long window",
    "distributed": "failed logins against one user name from many addresses",
    "enumeration": "many different invalid user names tried from one address",
    "success_after_failures": "a successful login after failed attempts: possible compromise",
    "root_login": "a successful login as root",
    "off_hours": "a successful login outside working hours",
    "new_source": "a login from a network this user never logged in from",
    "new_key": "a login with a key never seen for this user",
    "test": "a test message (sshmonitor test-alert)",
}
# Rules about a successful login: the next step is to look at what the session did.
LOGIN_RULES = frozenset(
    {"success_after_failures", "root_login", "off_hours", "new_source", "new_key"}
)
# Rules about failures from an address: the next step is a ban (or lifting it).
ADDRESS_RULES = frozenset({"bruteforce", "slow_bruteforce", "enumeration"})

COLOURS = {  # severity → (accent, badge text colour)
    "critical": ("#b71c1c", "#ffffff"),
    "high": ("#e65100", "#ffffff"),
    "warning": ("#f9a825", "#212121"),
    "info": ("#1565c0", "#ffffff"),
}

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _hidden(c: str) -> bool:
    # Cc: C0/C1 controls (CR, LF, ESC, NEL); Cf: bidi overrides, zero-width characters;
    # Cs: lone surrogates (undecodable bytes); Zl/Zp: the Unicode line/paragraph separators.
    return unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def _escape_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def visible(text: str) -> str:
    """``text`` with every control, format (bidi, zero-width) and line-separator character
    shown as a backslash escape. The result is one line of printable characters."""
    if text.isprintable():  # the common case; False for every character _hidden() flags
        return text
    return "".join(_escape_char(c) if _hidden(c) else c for c in text)


def one_line(text: str, limit: int) -> str:
    """``visible(text)`` with whitespace runs collapsed, cut to ``limit`` characters."""
    flat = " ".join(visible(text).split())
    if len(flat) > limit:
        flat = flat[: max(0, limit - 1)].rstrip() + "…"
    return flat


# html.escape(quote=True)'s table. Not the html module itself: importing it loads
# html.entities (~0.5 MB of unescape tables the daemon never uses; issue #17).
_HTML_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"}
)


def h(text: object) -> str:
    """Attacker-safe HTML: visible escapes first, then entity escaping (quotes too), as
    ``html.escape(quote=True)`` does (tests/test_startup_imports.py holds them equal)."""
    return visible(str(text)).translate(_HTML_ESCAPES)


def fmt_time(ts: float | None) -> str:
    """An epoch as the machine's local time, e.g. ``2024-05-01 14:03:10 CEST``."""
    return fmt_local(ts, zone_name=True, missing="?")


def ordinal(n: int) -> str:
    teen = 10 <= n % 100 <= 20
    return f"{n}{'th' if teen else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def order(alerts: list[Alert]) -> list[Alert]:
    """Worst severity first; within a severity, the earliest first; at the same moment, the
    most specific rule first (the headline says "user enumeration", not "brute force")."""
    return sorted(
        alerts,
        key=lambda a: (
            -severity_rank(a.severity),
            a.first_seen,
            SPECIFICITY.get(a.rule, len(SPECIFICITY)),
            a.id,
        ),
    )


def _sentence(summary: str) -> str:
    s = " ".join(visible(summary).split())
    return s if not s or s[-1] in ".!?" else s + "."


def count_text(a: Alert) -> str:
    """``1``, ``3``, or ``5 (4 more since 2024-05-01 13:00:00 UTC)`` for a folded alert."""
    if a.count <= 1:
        return "1"
    if a.folded_since is not None:
        return f"{a.count} ({a.count - 1} more since {fmt_time(a.folded_since)})"
    return str(a.count)


def ban_text(a: Alert) -> str:
    """What respond/ did about it, one line."""
    b = a.ban
    if not b:
        return "no ban (alert only)"
    net = str(b.get("net") or a.subject)
    if b.get("allowlisted"):
        # The rule asked for a ban; the allowlist kept it from being placed.
        return f"not banned: {b['allowlisted']}"
    until = b.get("until")
    when = f"until {fmt_time(until)}" if until else "indefinitely"
    offence = b.get("offence")
    nth = f" ({ordinal(int(offence))} ban)" if offence else ""
    if b.get("dry_run"):
        return f"would have banned {net} {when}{nth} (dry run: the firewall was not changed)"
    return f"banned {net} {when}{nth}"


def next_steps(a: Alert) -> list[tuple[str, str]]:
    """Suggested operator commands, each with why: [(command or "", explanation)]."""
    q = shlex.quote
    steps: list[tuple[str, str]] = []
    ban = a.ban or {}
    allowed = bool(ban.get("allowlisted"))
    banned = bool(ban) and not ban.get("dry_run") and not allowed
    target = str(ban.get("net") or a.ip or a.subject)
    if a.rule in LOGIN_RULES and a.user:
        user = q(visible(a.user))
        steps.append((f"sshmonitor session --user {user}", "review what this login did"))
        steps.append(
            (
                f"usermod -L {user}; loginctl terminate-user {user}",
                "if the login was not expected: lock the account and end its sessions",
            )
        )
        if a.ip and not banned and not allowed:
            steps.append((f"sshmonitor ban {q(visible(a.ip))}", "and block its source"))
    if banned:
        steps.append((f"sshmonitor unban {q(visible(target))}", "if this address is legitimate"))
    elif allowed:
        # `sshmonitor ban` would be refused: the allowlist is the operator's own setting.
        steps.append(
            ("", "if this address should not be trusted: remove it from `allowlist` and reload")
        )
    elif a.rule in ADDRESS_RULES and (a.ip or a.subject):
        steps.append((f"sshmonitor ban {q(visible(target))}", "to block this address now"))
    if a.rule == "distributed":
        steps.append(
            ("", "make sure this account uses keys only (PasswordAuthentication no in sshd_config)")
        )
    steps.append(("sshmonitor bans", "list active bans"))
    return steps


def _subject(alerts: list[Alert], host: str, suppressed: int) -> str:
    head = f"{SUBJECT_PREFIX} "
    if not alerts:
        what = f"{suppressed} alerts suppressed" if suppressed else "no alerts"
        return one_line(f"{head}{host}: {what}", MAX_SUBJECT)
    worst = alerts[0]
    sev = worst.severity.upper()
    if len(alerts) == 1:
        return one_line(f"{head}{sev} {host}: {worst.summary}", MAX_SUBJECT)
    fixed = one_line(f"{head}{sev} {host}: {len(alerts)} alerts", MAX_SUBJECT) + " ("
    tail = f"; +{len(alerts) - 1} more)"
    room = max(20, MAX_SUBJECT - len(fixed) - len(tail))
    subject = fixed + one_line(worst.summary, room) + tail
    return subject if len(subject) <= MAX_SUBJECT else one_line(subject, MAX_SUBJECT)


# ----------------------------------------------------------------------------- text


def _text_alert(a: Alert, i: int, n: int) -> list[str]:
    label = f"[{i}/{n}] " if n > 1 else ""
    rule_help = RULES.get(a.rule)
    lines = [
        f"{label}{a.severity.upper()} · {visible(a.rule)} · {visible(a.subject)}",
        f"What happened: {_sentence(a.summary)}",
        f"Rule:          {visible(a.rule)}" + (f" — {rule_help}" if rule_help else ""),
        f"First seen:    {fmt_time(a.first_seen)}",
        f"Last seen:     {fmt_time(a.last_seen)}",
        f"Occurrences:   {count_text(a)}",
        f"Done:          {ban_text(a)}",
    ]
    steps = next_steps(a)
    for j, (cmd, why) in enumerate(steps):
        lead = "Next:          " if j == 0 else "               "
        lines.append(f"{lead}{cmd}   ({why})" if cmd else f"{lead}{why}")
    if a.evidence:
        lines.append(f"Evidence ({len(a.evidence)} log line{'s' if len(a.evidence) != 1 else ''}):")
        lines.extend(f"  | {visible(e)}" for e in a.evidence)
    return lines


def _text(alerts: list[Alert], host: str, suppressed: int, now: float, mid: str) -> str:
    n = len(alerts)
    out: list[str] = []
    if n:
        worst = alerts[0].severity.upper()
        what = f"1 {worst} alert" if n == 1 else f"{n} alerts, the worst {worst}"
        out.append(f"sshmonitor on {visible(host)}: {what}")
        out.append("")
    for i, a in enumerate(alerts, 1):
        out.extend(_text_alert(a, i, n))
        out.append("")
    if suppressed:
        out.append(
            f"{suppressed} more alert{'s' if suppressed != 1 else ''} suppressed by the hourly "
            "cap; every alert is in the journal (journalctl -u sshmonitor)."
        )
        out.append("")
    out.append("-- ")
    out.append(f"sshmonitord on {visible(host)}, {fmt_time(now)}")
    # The id a re-delivery repeats (Message-ID, Idempotency-Key): a reader can tell a
    # duplicate from a new alert, in chat channels too.
    if mid:
        out.append(f"message id {mid}")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- HTML

_FONT = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
_MONO = "font-family:SFMono-Regular,Consolas,'Liberation Mono',Menlo,monospace"
_LABEL = "padding:2px 12px 2px 0;color:#616161;vertical-align:top;white-space:nowrap"
_VALUE = "padding:2px 0;vertical-align:top"


def _html_alert(a: Alert) -> str:
    accent, fg = COLOURS.get(a.severity.lower(), COLOURS["warning"])
    rule_help = RULES.get(a.rule)
    rows = [
        ("Rule", h(a.rule) + (f" — {h(rule_help)}" if rule_help else "")),
        ("Subject", h(a.subject)),
        ("First seen", h(fmt_time(a.first_seen))),
        ("Last seen", h(fmt_time(a.last_seen))),
        ("Occurrences", h(count_text(a))),
        ("Done", h(ban_text(a))),
    ]
    table = "".join(
        f'<tr><td style="{_LABEL}">{k}</td><td style="{_VALUE}">{v}</td></tr>' for k, v in rows
    )
    steps = "".join(
        '<li style="margin:2px 0">'
        + (
            f'<code style="{_MONO};background:#eeeeee;padding:1px 4px">{h(cmd)}</code> — '
            if cmd
            else ""
        )
        + f"{h(why)}</li>"
        for cmd, why in next_steps(a)
    )
    evidence = ""
    if a.evidence:
        lines = "\n".join(h(e) for e in a.evidence)
        evidence = (
            f'<div style="margin:10px 0 4px;font-weight:bold">Evidence '
            f"({len(a.evidence)} log line{'s' if len(a.evidence) != 1 else ''})</div>"
            f'<pre style="{_MONO};font-size:12px;line-height:1.4;margin:0;padding:8px;'
            "background:#263238;color:#eceff1;white-space:pre-wrap;word-break:break-all;"
            f'overflow-wrap:anywhere">{lines}</pre>'
        )
    return (
        f'<div style="background:#ffffff;border-left:6px solid {accent};padding:12px 16px;'
        'margin:0 0 16px 0">'
        f'<div style="margin:0 0 6px 0"><span style="background:{accent};color:{fg};'
        'font-weight:bold;font-size:12px;padding:2px 6px;border-radius:3px">'
        f"{h(a.severity.upper())}</span> "
        f'<span style="color:#616161;font-size:13px">{h(a.rule)} · {h(a.subject)}</span></div>'
        f'<p style="font-size:15px;margin:4px 0 10px 0">{h(_sentence(a.summary))}</p>'
        f'<table style="border-collapse:collapse;font-size:13px">{table}</table>'
        '<div style="margin:10px 0 4px;font-weight:bold">What to do next</div>'
        f'<ul style="margin:0;padding-left:20px;font-size:13px">{steps}</ul>'
        f"{evidence}</div>\n"
    )


def _html(
    alerts: list[Alert], host: str, subject: str, suppressed: int, now: float, mid: str
) -> str:
    n = len(alerts)
    heading = f"{n} alert{'s' if n != 1 else ''} on {h(host)}" if n else f"sshmonitor on {h(host)}"
    body = "".join(_html_alert(a) for a in alerts)
    if suppressed:
        body += (
            '<p style="font-size:13px;color:#b71c1c;margin:0 0 16px 0">'
            f"{suppressed} more alert{'s' if suppressed != 1 else ''} suppressed by the hourly "
            "cap; every alert is in the journal (<code>journalctl -u sshmonitor</code>).</p>"
        )
    return (
        "<!DOCTYPE html>\n"
        '<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{h(subject)}</title></head>\n"
        f'<body style="margin:0;padding:16px;background:#f5f5f5;color:#212121;{_FONT}">'
        '<div style="max-width:780px;margin:0 auto">'
        f'<h1 style="font-size:18px;margin:0 0 12px 0">{heading}</h1>\n'
        f"{body}"
        f'<p style="font-size:12px;color:#757575;margin:8px 0 0 0">sshmonitord on {h(host)}, '
        f"{h(fmt_time(now))}{f' · message id {h(mid)}' if mid else ''}</p>"
        "</div></body></html>\n"
    )


# ----------------------------------------------------------------------------- API


def render(
    alerts: list[Alert], host: str, suppressed: int = 0, now: float | None = None
) -> Message:
    """One message for ``alerts`` (any order; rendered worst severity first).

    Its ``id`` depends on the alerts' ids alone — not on ``suppressed`` or ``now``, which
    differ when the queue retries the same alerts after a failure."""
    now = time.time() if now is None else now
    ordered = order(list(alerts))
    subject = _subject(ordered, host, suppressed)
    mid = message_id([a.id for a in ordered]) if ordered else ""
    return Message(
        subject=subject,
        text=_text(ordered, host, suppressed, now, mid),
        html=_html(ordered, host, subject, suppressed, now, mid),
        alerts=ordered,
        suppressed=suppressed,
        host=host,
        id=mid,
    )


def test_alert(host: str, now: float | None = None) -> Alert:
    """An info alert for ``sshmonitor test-alert``: proves a channel works end to end."""
    now = time.time() if now is None else now
    return Alert(
        # Each test-alert run is a new message: the time belongs in its id.
        id=make_id("test/1", host, now),
        rule="test",
        severity="info",
        subject="test",
        host=host,
        summary="test message from sshmonitor test-alert: this channel works",
        first_seen=now,
        last_seen=now,
    )


def test_message(host: str, now: float | None = None) -> Message:
    return render([test_alert(host, now)], host, now=now)


# pytest would collect test_* helpers imported into a test module as tests.
test_alert.__test__ = False  # type: ignore[attr-defined]
test_message.__test__ = False  # type: ignore[attr-defined]
