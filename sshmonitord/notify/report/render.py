"""The report as text (a sparkline chart), HTML (one self-contained page: inline styles, no
scripts, nothing loaded) and JSON, and as one :class:`~..alert.Message` for any channel.

Everything a client chose — user names, key fingerprints, ban reasons and finding summaries that
embed them — is attacker-controlled: text output goes through :func:`~..render.visible`, HTML
through :func:`~..render.h` (entity-escaped, quotes too), JSON through ``json.dumps`` with
``ensure_ascii`` (so a bidi override cannot reorder a terminal line either).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from ..alert import Message, make_id
from ..render import COLOURS, MAX_SUBJECT, SUBJECT_PREFIX, h, one_line, visible
from .times import local_time, long_time, short_time, span_text

SPARK = "▁▂▃▄▅▆▇█"
NAME_WIDTH = 40  # attacker-controlled names are cut to this many characters in tables
FORMATS = ("text", "html", "json")


def _n(x: int | float) -> str:
    return f"{int(x):,}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{_n(n)} {word if n == 1 else (plural or word + 's')}"

def sparkline(values: Sequence[int | float], vmax: float | None = None) -> str:
    """One character per value, linear from ``▁`` (up to 1/8 of ``vmax``) to ``█`` (``vmax``);
    zero is a blank, so "none" and "a few" look different."""
    top = max(values, default=0) if vmax is None else vmax
    out = []
    for v in values:
        if v <= 0 or top <= 0:
            out.append(" ")
        else:
            out.append(SPARK[min(len(SPARK), max(1, math.ceil(v * len(SPARK) / top))) - 1])
    return "".join(out)


def _period_text(r: dict[str, Any]) -> str:
    span = span_text(r["until"] - r["since"])
    return f"{long_time(r['since'])} → {long_time(r['until'])} ({span})"


def _summary_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    f, inv, lg, b, al, se = (
        r["failures"],
        r["invalid_users"],
        r["logins"],
        r["bans"],
        r["alerts"],
        r["sessions"],
    )
    rows = [
        (
            "Failed logins",
            f"{_plural(f['total'], 'attempt')} from "
            f"{_plural(f['addresses'], 'address', 'addresses')}",
        ),
        (
            "Invalid user names",
            f"{_plural(inv['names'], 'name')} in {_plural(inv['total'], 'try', 'tries')}",
        ),
        (
            "Successful logins",
            f"{_n(lg['total'])} ({_plural(lg['users'], 'user')} from "
            f"{_plural(lg['addresses'], 'address', 'addresses')})",
        ),
    ]
    if se.get("available"):
        rows.append(
            (
                "Sessions",
                f"{_n(se['total'])} ({_n(se['started'])} started, {_n(se['active_at_end'])} "
                f"open at the end" + (f", {_n(se['lost'])} lost" if se["lost"] else "") + ")",
            )
        )
    act = r.get("activity") or {}
    if act:
        bits = []
        if "commands" in act:
            c = act["commands"]
            what = ", ".join(f"{_name(k, 20)} {_n(v)}" for k, v in list(c["by"].items())[:4])
            bits.append(_plural(c["total"], "command") + (f" ({what})" if what else ""))
        if "transfers" in act:
            t = act["transfers"]
            what = ", ".join(f"{_name(k, 20)} {_n(v)}" for k, v in list(t["by"].items())[:4])
            moved = [
                f"{_bytes(t[k])} {arrow}"
                for k, arrow in (("bytes_up", "up"), ("bytes_down", "down"))
                if t.get(k)
            ]
            bits.append(
                _plural(t["total"], "file operation")
                + (f" ({what})" if what else "")
                + (f", {' and '.join(moved)}" if moved else "")
            )
        rows.append(("Audit trail", "; ".join(bits)))
    dry = f" ({_n(b['placed_dry_run'])} dry run)" if b["placed_dry_run"] else ""
    rows.append(
        (
            "Bans",
            f"{_n(b['placed'])} placed{dry}, {_n(b['expired'])} expired, {_n(b['lifted'])} "
            f"lifted, {active_text(b)}",
        )
    )
    sev = ", ".join(f"{_n(n)} {s}" for s, n in al["by_severity"].items())
    rows.append(("Alerts", f"{_n(al['total'])}" + (f" ({sev})" if sev else "")))
    pend = sum(p["count"] for p in al["pending"])
    if pend:
        rows.append(("Undelivered alerts", f"{_n(pend)} waiting in the spool"))
    return rows


def active_text(b: dict[str, Any]) -> str:
    """Bans active at the end of the period: ``3 active at the end``, ``2 active at the end
    (dry run)`` on a dry-run host, ``3 active at the end (+1 dry run)`` for both. Dry-run bans
    are active (they would block), but only in the store, never in the firewall."""
    real, dry = int(b.get("active_at_end") or 0), int(b.get("active_dry_run_at_end") or 0)
    if not dry:
        return f"{_n(real)} active at the end"
    if not real:
        return f"{_n(dry)} active at the end (dry run)"
    return f"{_n(real)} active at the end (+{_n(dry)} dry run)"


def _name(text: Any, width: int = NAME_WIDTH) -> str:
    """An attacker-controlled value for a text table: visible, one line, capped."""
    if text is None:
        return "-"
    return one_line(str(text), width) or '""'


def _table(head: Sequence[str], rows: list[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max([len(hd)] + [len(row[i]) for row in rows]) for i, hd in enumerate(head)]

    def fmt(cells: Sequence[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return ("  " + "  ".join(out)).rstrip()

    return [fmt(head), *(fmt(r) for r in rows)]


TEXT_ROW = 24  # sparkline characters per line; longer charts wrap, one line per 24 columns


def _hour_axis(origin: float, bucket: float, n: int) -> str:
    """Local clock hours (``07 10 13``) every 3 columns under ``n`` one-hour columns."""
    line = [" "] * n
    for i in range(0, n, 3):
        label = local_time(origin + i * bucket).strftime("%H")
        if i + len(label) <= n:
            line[i : i + len(label)] = list(label)
    return "".join(line).rstrip()


def _text_chart(r: dict[str, Any]) -> list[str]:
    c = r["chart"]
    origin, bucket = c["origin"], c["bucket"]
    fails, bans = c["failures"], c["bans"]
    nb = len(fails)
    width = "hour" if bucket == 3600 else f"{int(bucket // 3600)} hours"
    scales = {}
    for label, values in (("failures", fails), ("bans", bans)):
        vmax = max(values, default=0)
        scales[label] = f"max {_n(vmax)}/{width}, total {_n(sum(values))}" if vmax else "none"
    if nb <= TEXT_ROW:
        out = [f"Failures and bans per {width} (local time; one character per {width})"]
        out.append(f"  {'failures':<8} |{sparkline(fails)}| {scales['failures']}")
        out.append(f"  {'bans':<8} |{sparkline(bans)}| {scales['bans']}")
        if bucket == 3600:
            out.append(f"  {'':<8}  {_hour_axis(origin, bucket, nb)}")
    else:
        # One line per TEXT_ROW columns (a day, in hours), both series side by side, each
        # on one scale for the whole period.
        span = "day" if bucket == 3600 else f"{span_text(bucket * TEXT_ROW)}"
        out = [
            f"Failures and bans per {width} (local time; one character per {width}, "
            f"one line per {span})"
        ]
        fline, bline = sparkline(fails), sparkline(bans)
        pad = " " * TEXT_ROW
        out.append(f"  {'':<11}  {'failures':<{TEXT_ROW + 2}}  bans")
        for i in range(0, nb, TEXT_ROW):
            start = local_time(origin + i * bucket).strftime("%m-%d %H:%M")
            f = (fline[i : i + TEXT_ROW] + pad)[:TEXT_ROW]
            b = (bline[i : i + TEXT_ROW] + pad)[:TEXT_ROW]
            out.append(f"  {start}  |{f}|  |{b}|")
        if bucket == 3600:
            axis = _hour_axis(origin, bucket, TEXT_ROW)
            out.append(f"  {'':<11}   {axis:<{TEXT_ROW}}    {axis}")
        out.append(f"  failures: {scales['failures']}; bans: {scales['bans']}")
    out.append("  scale: linear per series, ▁ up to 1/8 of its max, █ = max, blank = none")
    return out


SESSION_HEAD = ("ID", "USER", "FROM", "START", "DURATION", "STATE", "CMDS", "FILES")


def _session_cells(x: dict[str, Any], esc: Callable[..., str]) -> tuple[str, ...]:
    """One session's table cells; ``esc`` renders attacker-controlled values."""
    return (
        "-" if x["id"] is None else esc(x["id"], 20),
        esc(x["user"]),
        esc(x["ip"] or "-"),
        short_time(x["start"]),
        span_text(x["duration"]) + ("+" if x["open_at_end"] else ""),
        "open" if x["open_at_end"] else esc(x["state"] or "closed", 20),
        "-" if x["commands"] is None else _n(x["commands"]),
        "-" if x["transfers"] is None else _n(x["transfers"]),
    )


def _text(r: dict[str, Any], host: str) -> str:
    out = [f"sshmonitor report for {visible(host)}", f"Period: {_period_text(r)}", ""]
    rows = _summary_lines(r)
    w = max(len(k) for k, _ in rows) + 1
    out += [f"  {k + ':':<{w}} {v}" for k, v in rows]
    out.append("")
    out += _text_chart(r)
    out.append("")

    f = r["failures"]
    out.append(f"Top addresses by failed logins ({_n(f['addresses'])} in all)")
    if f["top"]:
        out += _table(
            ("ADDRESS", "FAILURES", "USERS", "FIRST", "LAST", "BANNED"),
            [
                (
                    _name(a["ip"] or "(no address)"),
                    _n(a["count"]),
                    _n(a["users"]),
                    short_time(a["first"]),
                    short_time(a["last"]),
                    "yes" if a["banned"] else "no",
                )
                for a in f["top"]
            ],
            {1, 2},
        )
    else:
        out.append("  none")
    out.append("")

    for key, title in (
        ("invalid_users", "Invalid user names tried"),
        ("accounts", "Existing accounts attacked (failed logins)"),
    ):
        sec = r[key]
        total = sec["names"]
        out.append(f"{title} ({_plural(total, 'name')})")
        if sec["top"]:
            out += _table(
                ("USER", "TRIES", "ADDRESSES", "FIRST", "LAST"),
                [
                    (
                        _name(u["user"]),
                        _n(u["count"]),
                        _n(u["addresses"]),
                        short_time(u["first"]),
                        short_time(u["last"]),
                    )
                    for u in sec["top"]
                ],
                {1, 2},
            )
            if sec["more"]:
                out.append(f"  … and {_n(sec['more'])} more")
        else:
            out.append("  none")
        out.append("")

    lg = r["logins"]
    out.append(f"Successful logins ({_n(lg['total'])})")
    if lg["groups"]:
        out += _table(
            ("USER", "FROM", "METHOD", "TIMES", "FIRST", "LAST", "NOTE"),
            [
                (
                    _name(g["user"]),
                    _name(g["ip"] or "(no address)"),
                    _name(g["method"], 24),
                    _n(g["count"]),
                    short_time(g["first"]),
                    short_time(g["last"]),
                    f"! {_plural(g['failures_from_ip'], 'failure')} from this address"
                    if g["failures_from_ip"]
                    else "",
                )
                for g in lg["groups"]
            ],
            {3},
        )
        keys = [(g, k) for g in lg["groups"] for k in g["keys"]]
        if keys:
            out.append("  keys:")
            out += [f"    {_name(g['user'])}: {_name(k, 80)}" for g, k in keys[:20]]
        if lg["more"]:
            out.append(f"  … and {_n(lg['more'])} more (user, address, method) combinations")
    else:
        out.append("  none")
    out.append("")

    se = r["sessions"]
    if se.get("available"):
        out.append(f"Sessions ({_n(se['total'])} in the period)")
        if se["longest"]:
            out.append("  longest:")
            out += _table(
                SESSION_HEAD, [_session_cells(x, _name) for x in se["longest"]], {0, 4, 6, 7}
            )
        if se["active"]:
            out.append(f"  open at the end: {_n(se['active_at_end'])}")
            out += [
                f"    {_name(x['user'])} from {_name(x['ip'] or '-')} "
                f"since {short_time(x['start'])}"
                + (f" (session {_name(x['id'], 20)})" if x["id"] is not None else "")
                for x in se["active"]
            ]
        if se["total"]:
            out.append("  the full timeline of one: sshmonitor session ID")
    else:
        out.append(f"Sessions: not recorded ({visible(se.get('reason', ''))})")
    out.append("")

    b = r["bans"]
    out.append(
        f"Bans: {_n(b['placed'])} placed, {_n(b['expired'])} expired, {_n(b['lifted'])} "
        f"lifted, {active_text(b)}"
    )
    if b["by_rule"]:
        out.append(
            "  placed by rule: " + ", ".join(f"{_name(k)} {_n(v)}" for k, v in b["by_rule"].items())
        )
    if b["lifted_by"]:
        out.append(
            "  lifted by: " + ", ".join(f"{_name(k)} {_n(v)}" for k, v in b["lifted_by"].items())
        )
    if b["recent"]:
        out.append("  most recent:")
        out += _table(
            ("NETWORK", "RULE", "#", "PLACED", "UNTIL", "STATE"),
            [
                (
                    _name(x["net"]),
                    _name(x["rule"], 24),
                    _n(x["offence"]),
                    short_time(x["created"]),
                    short_time(x["expires"]),
                    _name(x["state"], 30) + (" (dry run)" if x["dry_run"] else ""),
                )
                for x in b["recent"]
            ],
            {2},
        )
        if b["more"]:
            out.append(f"  … and {_n(b['more'])} more")
    out.append("")

    al = r["alerts"]
    out.append(f"Alerts raised ({_n(al['total'])})")
    if al["by_rule"]:
        out += _table(
            ("RULE", "SEVERITY", "COUNT", "SUBJECTS"),
            [
                (_name(a["rule"], 30), _name(a["severity"], 10), _n(a["count"]), _n(a["subjects"]))
                for a in al["by_rule"]
            ],
            {2, 3},
        )
    else:
        out.append("  none")
    if al["notable"]:
        out.append("  logins and critical alerts (most recent first):")
        for a in al["notable"]:
            out.append(
                f"    {short_time(a['ts'])}  {_name(a['severity'], 10).upper()}  "
                f"{_name(a['rule'], 30)}: {_name(a['summary'], 160)}"
            )
        more = int(al.get("notable_total", 0)) - len(al["notable"])
        if more > 0:
            out.append(f"    … and {_n(more)} more")
    for p in al["pending"]:
        out.append(
            f"  waiting for delivery on {_name(p['channel'])}: {_n(p['count'])} "
            f"(oldest {short_time(p['oldest'])}, {_plural(p['attempts'], 'attempt')})"
        )
    out += ["", "-- ", f"sshmonitord on {visible(host)}, built {long_time(r['generated'])}"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- HTML

_FONT = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
_MONO = "font-family:SFMono-Regular,Consolas,'Liberation Mono',Menlo,monospace"
_TH = (
    "text-align:left;padding:3px 10px 3px 0;color:#616161;font-weight:normal;"
    "border-bottom:1px solid #e0e0e0;white-space:nowrap"
)
_TD = "padding:3px 10px 3px 0;border-bottom:1px solid #f0f0f0;vertical-align:top"
_NUM = _TD + ";text-align:right;white-space:nowrap"
_H2 = "font-size:15px;margin:18px 0 6px 0"
_BOX = "background:#ffffff;padding:12px 16px;margin:0 0 14px 0"
_NOTE = "font-size:12px;color:#757575;margin:4px 0 0 0"
_BAR_H = 60  # px, the tallest bar


def _h_table(head: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """``rows`` are already-escaped HTML cells."""
    th = "".join(
        f'<th style="{_TH}{";text-align:right" if i in right else ""}">{h(x)}</th>'
        for i, x in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td style="{_NUM if i in right else _TD}">{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        f'<table style="border-collapse:collapse;font-size:13px;width:100%">'
        f"<tr>{th}</tr>{body}</table>"
    )


def _hn(text: Any, width: int = NAME_WIDTH) -> str:
    """An attacker-controlled value for HTML: capped like the text, then escaped."""
    if text is None:
        return "-"
    return h(one_line(str(text), width) or '""')


def _code(text: Any, width: int = NAME_WIDTH) -> str:
    return f'<code style="{_MONO};font-size:12px">{_hn(text, width)}</code>'


def _html_bars(values: list[int], colour: str, label: str, origin: float, bucket: float) -> str:
    vmax = max(values, default=0)
    cells = []
    for i, v in enumerate(values):
        start = local_time(origin + i * bucket).strftime("%m-%d %H:%M")
        height = 0 if v <= 0 else max(2, round(v * _BAR_H / vmax))
        bar = (
            f'<div style="height:{height}px;background:{colour};font-size:0;line-height:0">'
            "&nbsp;</div>"
            if height
            else ""
        )
        cells.append(
            f'<td title="{h(start)}: {_n(v)} {h(label)}" style="vertical-align:bottom;'
            f'height:{_BAR_H}px;padding:0 1px;border-bottom:1px solid #9e9e9e">{bar}</td>'
        )
    return "".join(cells)


def _html_chart(r: dict[str, Any]) -> str:
    c = r["chart"]
    nb = len(c["failures"])
    width = "hour" if c["bucket"] == 3600 else f"{int(c['bucket'] // 3600)} hours"
    span = nb * c["bucket"]
    long = span > 86400 + 3600  # more than a day: labels carry the date
    step = next(x for x in (1, 2, 3, 6, 12, 24, 48, 96, 192, 10**9) if nb / x <= (6 if long else 8))
    labels = []
    for i in range(nb):
        t = local_time(c["origin"] + i * c["bucket"])
        text = ""
        if i % step == 0:
            text = t.strftime("%m-%d %H:%M" if long else "%H:%M")
        labels.append(
            f'<td style="font-size:10px;color:#757575;padding:2px 0 0 1px;'
            f'white-space:nowrap;overflow:visible">{h(text)}</td>'
        )
    rows: list[str] = []
    for label, values, colour in (
        ("failures", c["failures"], "#e65100"),
        ("bans", c["bans"], "#1565c0"),
    ):
        vmax = max(values, default=0)
        scale = f"max {_n(vmax)}/{width}, total {_n(sum(values))}" if vmax else "none"
        if rows:  # a gap between the series
            rows.append(f'<tr><td colspan="{nb + 1}" style="height:10px"></td></tr>')
        rows.append(
            f'<tr><td style="font-size:12px;padding:0 8px 0 0;vertical-align:bottom;'
            f'overflow:hidden">{h(label)}<br><span style="color:#757575;'
            f'font-size:10px">{h(scale)}</span></td>'
            f"{_html_bars(values, colour, label, c['origin'], c['bucket'])}</tr>"
        )
    rows.append(f"<tr><td></td>{''.join(labels)}</tr>")
    return (
        f'<table style="border-collapse:collapse;width:100%;table-layout:fixed" '
        f'role="img" aria-label="failures and bans per {h(width)}">'
        f'<col style="width:120px">{"".join(rows)}</table>'
        f'<p style="{_NOTE}">Per {h(width)}, local time; each row is scaled to its own '
        "maximum (hover a bar for its value).</p>"
    )


def _html(r: dict[str, Any], host: str, subject: str) -> str:
    parts: list[str] = []
    summary = "".join(
        f'<tr><td style="padding:2px 14px 2px 0;color:#616161;white-space:nowrap">{h(k)}</td>'
        f'<td style="padding:2px 0">{h(v)}</td></tr>'
        for k, v in _summary_lines(r)
    )
    parts.append(
        f'<div style="{_BOX}"><table style="border-collapse:collapse;font-size:14px">'
        f"{summary}</table></div>"
    )
    parts.append(f'<div style="{_BOX}">{_html_chart(r)}</div>')

    f = r["failures"]
    sec = [f'<h2 style="{_H2}">Top addresses by failed logins ({_n(f["addresses"])} in all)</h2>']
    if f["top"]:
        sec.append(
            _h_table(
                ("Address", "Failures", "Users", "First", "Last", "Banned"),
                [
                    (
                        _code(a["ip"] or "(no address)"),
                        _n(a["count"]),
                        _n(a["users"]),
                        h(short_time(a["first"])),
                        h(short_time(a["last"])),
                        "yes" if a["banned"] else "no",
                    )
                    for a in f["top"]
                ],
                {1, 2},
            )
        )
    else:
        sec.append('<p style="margin:0">none</p>')
    for key, title in (
        ("invalid_users", "Invalid user names tried"),
        ("accounts", "Existing accounts attacked"),
    ):
        s = r[key]
        sec.append(f'<h2 style="{_H2}">{h(title)} ({h(_plural(s["names"], "name"))})</h2>')
        if s["top"]:
            sec.append(
                _h_table(
                    ("User", "Tries", "Addresses", "First", "Last"),
                    [
                        (
                            _code(u["user"]),
                            _n(u["count"]),
                            _n(u["addresses"]),
                            h(short_time(u["first"])),
                            h(short_time(u["last"])),
                        )
                        for u in s["top"]
                    ],
                    {1, 2},
                )
            )
            if s["more"]:
                sec.append(f'<p style="{_NOTE}">… and {_n(s["more"])} more</p>')
        else:
            sec.append('<p style="margin:0">none</p>')
    parts.append(f'<div style="{_BOX}">{"".join(sec)}</div>')

    lg = r["logins"]
    sec = [f'<h2 style="{_H2}">Successful logins ({_n(lg["total"])})</h2>']
    if lg["groups"]:
        rows = []
        for g in lg["groups"]:
            note = ""
            if g["failures_from_ip"]:
                note = (
                    '<span style="color:#b71c1c;font-weight:bold">'
                    f"{h(_plural(g['failures_from_ip'], 'failure'))} from this address</span>"
                )
            if g["keys"]:
                note += "".join(f"<br>{_code(k, 80)}" for k in g["keys"][:3])
            rows.append(
                (
                    _code(g["user"]),
                    _code(g["ip"] or "(no address)"),
                    _hn(g["method"], 24),
                    _n(g["count"]),
                    h(short_time(g["first"])),
                    h(short_time(g["last"])),
                    note,
                )
            )
        sec.append(_h_table(("User", "From", "Method", "Times", "First", "Last", ""), rows, {3}))
        if lg["more"]:
            sec.append(f'<p style="{_NOTE}">… and {_n(lg["more"])} more</p>')
    else:
        sec.append('<p style="margin:0">none</p>')
    se = r["sessions"]
    if se.get("available"):
        sec.append(f'<h2 style="{_H2}">Sessions ({_n(se["total"])})</h2>')
        if se["longest"]:
            sec.append(
                _h_table(
                    SESSION_HEAD,
                    [_session_cells(x, lambda v, w=NAME_WIDTH: _code(v, w)) for x in se["longest"]],
                    {0, 4, 6, 7},
                )
            )
        if se["active"]:
            items = "".join(
                f"<li>{_code(x['user'])} from {_code(x['ip'] or '-')} since "
                f"{h(short_time(x['start']))}"
                + (f" (session {_code(x['id'], 20)})" if x["id"] is not None else "")
                + "</li>"
                for x in se["active"]
            )
            sec.append(
                '<p style="margin:6px 0 0 0;font-size:13px">'
                f"Open at the end: {_n(se['active_at_end'])}</p>"
                f'<ul style="margin:2px 0;padding-left:20px;font-size:13px">{items}</ul>'
            )
    else:
        sec.append(f'<p style="{_NOTE}">Sessions: not recorded ({h(se.get("reason", ""))})</p>')
    parts.append(f'<div style="{_BOX}">{"".join(sec)}</div>')

    b = r["bans"]
    sec = [
        f'<h2 style="{_H2}">Bans: {_n(b["placed"])} placed, {_n(b["expired"])} expired, '
        f"{_n(b['lifted'])} lifted, {h(active_text(b))}</h2>"
    ]
    if b["by_rule"]:
        sec.append(
            '<p style="margin:0 0 6px 0;font-size:13px">Placed by rule: '
            + ", ".join(f"{_hn(k)} {_n(v)}" for k, v in b["by_rule"].items())
            + "</p>"
        )
    if b["lifted_by"]:
        sec.append(
            '<p style="margin:0 0 6px 0;font-size:13px">Lifted by: '
            + ", ".join(f"{_hn(k)} {_n(v)}" for k, v in b["lifted_by"].items())
            + "</p>"
        )
    if b["recent"]:
        sec.append(
            _h_table(
                ("Network", "Rule", "#", "Placed", "Until", "State"),
                [
                    (
                        _code(x["net"]),
                        _hn(x["rule"], 24),
                        _n(x["offence"]),
                        h(short_time(x["created"])),
                        h(short_time(x["expires"])),
                        _hn(x["state"], 30) + (" (dry run)" if x["dry_run"] else ""),
                    )
                    for x in b["recent"]
                ],
                {2},
            )
        )
        if b["more"]:
            sec.append(f'<p style="{_NOTE}">… and {_n(b["more"])} more</p>')
    parts.append(f'<div style="{_BOX}">{"".join(sec)}</div>')

    al = r["alerts"]
    sec = [f'<h2 style="{_H2}">Alerts raised ({_n(al["total"])})</h2>']
    if al["by_rule"]:
        rule_rows = []
        for a in al["by_rule"]:
            accent, fg = COLOURS.get(str(a["severity"]).lower(), COLOURS["warning"])
            badge = (
                f'<span style="background:{accent};color:{fg};font-size:11px;font-weight:bold;'
                f'padding:1px 5px;border-radius:3px">{_hn(str(a["severity"]).upper(), 10)}</span>'
            )
            rule_rows.append((_hn(a["rule"], 30), badge, _n(a["count"]), _n(a["subjects"])))
        sec.append(_h_table(("Rule", "Severity", "Count", "Subjects"), rule_rows, {2, 3}))
    else:
        sec.append('<p style="margin:0">none</p>')
    if al["notable"]:
        items = "".join(
            f'<li style="margin:2px 0">{h(short_time(a["ts"]))} <b>{_hn(a["severity"], 10).upper()}'
            f"</b> {_hn(a['rule'], 30)}: {_hn(a['summary'], 300)}</li>"
            for a in al["notable"]
        )
        more = int(al.get("notable_total", 0)) - len(al["notable"])
        if more > 0:
            items += f"<li>… and {_n(more)} more</li>"
        sec.append(
            '<p style="margin:8px 0 2px 0;font-size:13px">Logins and critical alerts:</p>'
            f'<ul style="margin:0;padding-left:20px;font-size:13px">{items}</ul>'
        )
    for p in al["pending"]:
        sec.append(
            f'<p style="{_NOTE}">Waiting for delivery on {_hn(p["channel"])}: {_n(p["count"])} '
            f"(oldest {h(short_time(p['oldest']))})</p>"
        )
    parts.append(f'<div style="{_BOX}">{"".join(sec)}</div>')

    return (
        "<!DOCTYPE html>\n"
        '<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{h(subject)}</title></head>\n"
        f'<body style="margin:0;padding:16px;background:#f5f5f5;color:#212121;{_FONT}">'
        '<div style="max-width:780px;margin:0 auto">'
        f'<h1 style="font-size:18px;margin:0 0 4px 0">sshmonitor report for {h(host)}</h1>'
        f'<p style="font-size:13px;color:#616161;margin:0 0 12px 0">{h(_period_text(r))}</p>\n'
        + "\n".join(parts)
        + f'\n<p style="{_NOTE}">sshmonitord on {h(host)}, built {h(long_time(r["generated"]))}</p>'
        "</div></body></html>\n"
    )


def report_subject(report: dict[str, Any], host: str) -> str:
    f, b, lg, al = report["failures"], report["bans"], report["logins"], report["alerts"]
    crit = al["by_severity"].get("critical", 0)
    bits = [
        _plural(f["total"], "failure"),
        _plural(b["placed"], "ban"),
        _plural(lg["total"], "login"),
    ]
    if crit:
        bits.append(f"{_n(crit)} CRITICAL")
    span = span_text(report["until"] - report["since"])
    when = local_time(report["until"]).strftime("%Y-%m-%d %H:%M")
    return one_line(
        f"{SUBJECT_PREFIX} report {host}: {', '.join(bits)} ({span} to {when})", MAX_SUBJECT
    )


def render_report(report: dict[str, Any], host: str, fmt: str) -> str:
    """The report as ``text``, ``html`` (a whole document, no external resources, no script)
    or ``json`` (the report dict, plus ``host``)."""
    if fmt == "json":
        return json.dumps({"host": host, **report}, indent=2, ensure_ascii=True) + "\n"
    if fmt == "text":
        return _text(report, host)
    if fmt == "html":
        return _html(report, host, report_subject(report, host))
    raise ValueError(f"unknown report format {fmt!r} (text, html or json)")


def report_message(report: dict[str, Any], host: str) -> Message:
    """The report as one message for any channel (subject, text and HTML; no alerts)."""
    subject = report_subject(report, host)
    return Message(
        subject=subject,
        text=_text(report, host),
        html=_html(report, host, subject),
        alerts=[],
        suppressed=0,
        host=host,
        # Fixed by host and period: the report of a slot sent again (a retry, a catch-up
        # after a crash) is recognisable as the same report.
        id=report_id(host, report["since"], report["until"]),
    )


def report_id(host: str, since: float, until: float) -> str:
    """The message id of the report of ``[since, until)`` on ``host``."""
    return make_id("report/1", host, float(since), float(until))
