"""The Prometheus endpoint: ``GET /metrics`` on ``metrics.listen`` (docs/monitoring.md).

The stages measure themselves as plain samples (measure.py); on each scrape the daemon
gathers them — the same gathering ``sshmonitor status`` shows — and prometheus_client turns
them into the exposition format. Nothing is computed in a thread: the server runs on the
daemon's event loop, so a scrape reads the stages between two of their steps, never in the
middle of one.

The server is deliberately small: GET or HEAD of ``/metrics`` (``/`` points there), one
request per connection, a request head of at most 8 KiB read within 5 s. It serves nothing
else and accepts no input, so a hostile client can only waste one short-lived connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from . import log
from .config import parse_listen
from .measure import Histogram, Sample

# name → (type, help, label names). The names are fixed (issue #15, docs/monitoring.md);
# a sample whose name is not here is a bug, and the tests fail on it.
SPEC: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sshmonitor_build_info": ("gauge", "Always 1; the running version as a label.", ("version",)),
    "sshmonitor_lines_read_total": (
        "counter", "Lines (journal records) read from each source.", ("source",)),
    "sshmonitor_source_lag_seconds": (
        "gauge",
        "Files: seconds since the source last had nothing unread (0 when caught up). Journal: "
        "seconds between the newest record's journal time and its reading.",
        ("source",),
    ),
    "sshmonitor_source_bytes_behind": (
        "gauge", "Bytes written to a followed file and not read yet.", ("source",)),
    "sshmonitor_rotations_total": (
        "counter", "Rotations seen: rotated (renamed/replaced), copytruncate, truncated.",
        ("source", "kind")),
    "sshmonitor_lines_rejected_total": (
        "counter",
        "Lines not taken as they came: too_long (cut at max_line_length), journal records "
        "from an untrusted sender (by reason), bad_record (not journal JSON).",
        ("source", "reason"),
    ),
    "sshmonitor_events_total": ("counter", "Events parsed, by kind.", ("kind",)),
    "sshmonitor_unrecognized_lines_total": (
        "counter",
        "Lines from a program we parse that no rule recognised (a new sshd version?).",
        ("program",),
    ),
    "sshmonitor_malformed_lines_total": (
        "counter", "Lines with no recognisable syslog/journal prefix.", ()),
    "sshmonitor_findings_total": (
        "counter", "Findings raised, by rule and severity.", ("rule", "severity")),
    "sshmonitor_tracked_keys": (
        "gauge", "Keys held by the detection's sliding windows, by table.", ("table",)),
    "sshmonitor_bans_active": ("gauge", "Bans in force now.", ("backend",)),
    "sshmonitor_bans_total": (
        "counter",
        "Bans placed, by reason: the rule, operator, fleet, or restored (from the store at "
        "start).",
        ("reason",),
    ),
    "sshmonitor_backend_errors_total": (
        "counter", "Firewall backend operations that failed.", ("backend",)),
    "sshmonitor_alerts_total": (
        "counter",
        "Alerts by channel and outcome: sent, failed (a delivery attempt), dropped (given "
        "up), dropped_by_cap (summarised by the hourly cap); folded (channel all).",
        ("channel", "outcome"),
    ),
    "sshmonitor_alert_spool_depth": (
        "gauge", "Alerts and messages waiting in the spool (all channels).", ()),
    "sshmonitor_alert_spool_oldest_seconds": (
        "gauge", "Age of the oldest spooled alert or message (0: spool empty).", ()),
    "sshmonitor_store_write_seconds": (
        "histogram", "Time to store one batch (one SQLite transaction).", ()),
    "sshmonitor_line_to_event_seconds": (
        "histogram",
        "From a source handing a line over to its event being parsed and detected.",
        (),
    ),
    "sshmonitor_config_reloads_total": (
        "counter", "Config reloads (SIGHUP), by outcome: success, failure.", ("outcome",)),
    "sshmonitor_fleet_backlog_records": (
        "gauge", "Records in the local outbox not yet in the fleet's database.", ()),
    "sshmonitor_fleet_peers": (
        "gauge", "Other hosts of the fleet heard from in the last 5 minutes.", ()),
    "sshmonitor_fleet_ban_propagation_seconds": (
        "histogram",
        "From the fleet's database taking a ban log entry to this host applying it.",
        (),
    ),
}


def families(samples: Iterable[Sample]) -> list[Any]:
    """prometheus_client metric families for ``samples`` (in SPEC's order)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    by_name: dict[str, list[Sample]] = {}
    for s in samples:
        if s.name not in SPEC:
            raise ValueError(f"not a metric in metrics.SPEC: {s.name}")
        by_name.setdefault(s.name, []).append(s)
    out: list[Any] = []
    for name, (kind, doc, labelnames) in SPEC.items():
        items = by_name.get(name)
        if not items:
            continue
        fam: Any
        if kind == "counter":
            fam = CounterMetricFamily(name, doc, labels=labelnames)
        elif kind == "gauge":
            fam = GaugeMetricFamily(name, doc, labels=labelnames)
        else:
            fam = HistogramMetricFamily(name, doc, labels=labelnames)
        for s in items:
            labels = dict(s.labels)
            values = [labels.get(n, "") for n in labelnames]
            if isinstance(s.value, Histogram):
                fam.add_metric(values, buckets=s.value.cumulative(), sum_value=s.value.sum)
            else:
                fam.add_metric(values, float(s.value))
        out.append(fam)
    return out


def exposition(samples: Iterable[Sample]) -> bytes:
    """The text exposition format of ``samples``, written by prometheus_client."""
    from prometheus_client import generate_latest

    class _Once:
        def __init__(self, fams: list[Any]) -> None:
            self.fams = fams

        def collect(self) -> Iterator[Any]:
            yield from self.fams

    return bytes(generate_latest(_Once(families(samples))))  # type: ignore[arg-type]


# The classic text format (every name here is a classic one): what Prometheus 2 and 3 both
# read. prometheus_client's own CONTENT_TYPE_LATEST names a newer version in recent releases.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD = 8192
READ_TIMEOUT = 5.0
# Connections served at once; more are closed at once. Each costs a file descriptor: a flood
# of idle connections must never take the ones the daemon needs (its logs, the store,
# journalctl, SMTP, the firewall tools).
MAX_CLIENTS = 16


class MetricsServer:
    """Serves ``collect()``'s samples on ``listen``; ``address`` is what was bound."""

    def __init__(self, listen: str, collect: Callable[[], Awaitable[list[Sample]]]) -> None:
        parsed = parse_listen(listen)
        if parsed is None:  # the config check refuses it before this
            raise ValueError(f"metrics.listen: not host:port: {listen!r}")
        self.host, self.port = parsed
        self.collect = collect
        self.address: str | None = None
        self.scrapes = 0
        self.errors = 0
        self.refused = 0  # connections closed because MAX_CLIENTS were being served
        self._clients = 0
        self._server: asyncio.AbstractServer | None = None
        self.log = log.get("metrics")

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True, limit=MAX_HEAD
        )
        sock = self._server.sockets[0]
        host, port = sock.getsockname()[:2]
        self.address = f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
        self.log.info("metrics endpoint listening", address=self.address, path="/metrics")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            self.refused += 1
            writer.close()
            return
        self._clients += 1
        try:
            await self._serve(reader, writer)
        finally:
            self._clients -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # limit=MAX_HEAD: a head without its blank line within 8 KiB is refused.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        try:
            status, ctype, body, head_only = await self._answer(head[:MAX_HEAD])
            out = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + (b"" if head_only else body)
            writer.write(out)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[str, str, bytes, bool]:
        text = "text/plain; charset=utf-8"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", text, b"bad request\n", False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", text, b"GET /metrics\n", False
        head_only = method == b"HEAD"
        if target == b"/":
            return "200 OK", text, b"sshmonitord: metrics at /metrics\n", head_only
        if target != b"/metrics":
            return "404 Not Found", text, b"not found: try /metrics\n", head_only
        try:
            body = exposition(await self.collect())
        except Exception:
            self.errors += 1
            self.log.exception("cannot collect metrics")
            return "500 Internal Server Error", text, b"cannot collect metrics\n", head_only
        self.scrapes += 1
        return "200 OK", CONTENT_TYPE, body, head_only
