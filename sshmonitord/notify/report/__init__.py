"""The report: what happened over a period, as text, HTML or JSON — daily by mail, or on demand.

``sshmonitor report [--since 24h] [--format text|html|json]`` and the scheduled daily report
(``notify.report``) are the same summary, built by :func:`build_report` from the store alone:

* failed login attempts by address (top N, with first/last seen, user names tried, banned?);
* invalid user names tried (top N) and existing accounts attacked (top N);
* successful logins (user, address, method, keys, when; flagged when the address also failed);
* sessions, commands and file transfers when the store has those tables (else "not recorded");
* bans placed, expired and lifted in the period, and active at its end;
* alerts raised (findings by rule and severity; the login-related and critical ones listed),
  and alerts still waiting in the spool;
* an hourly chart of failures and bans: a Unicode sparkline in text, CSS bars in HTML.

The package, one job per module:

* ``query``: :func:`build_report`, the numbers (its SQL is in ``store/reports.py``);
* ``render``: text, HTML and JSON, and the report as one message for any channel;
* ``schedule``: :class:`ReportScheduler`, the daily report, delivered through the alert spool
  (notify/queue.py) with the alerts' retries and durability;
* ``command``: ``sshmonitor report``;
* ``times``: how the report writes times (the scheduler's too).

The daemon loads only ``schedule`` (and ``times``); the rest loads with the first report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import exports

if TYPE_CHECKING:
    from .command import cmd_report, parse_when, register
    from .query import build_report, chart_axis
    from .render import render_report, report_id, report_message, report_subject, sparkline
    from .schedule import ReportScheduler, ReportSettings, parse_clock, report_settings

# Each part loads with its first use (sshmonitord/lazy.py): the daemon needs only the
# scheduler, `sshmonitor` the command's arguments, and a report built the rest (issue #17).
__getattr__ = exports(
    __name__,
    {
        "cmd_report": "command",
        "parse_when": "command",
        "register": "command",
        "build_report": "query",
        "chart_axis": "query",
        "render_report": "render",
        "report_id": "render",
        "report_message": "render",
        "report_subject": "render",
        "sparkline": "render",
        "ReportScheduler": "schedule",
        "ReportSettings": "schedule",
        "parse_clock": "schedule",
        "report_settings": "schedule",
    },
)

__all__ = [
    "ReportScheduler",
    "ReportSettings",
    "build_report",
    "chart_axis",
    "cmd_report",
    "parse_clock",
    "parse_when",
    "register",
    "render_report",
    "report_id",
    "report_message",
    "report_settings",
    "report_subject",
    "sparkline",
]
