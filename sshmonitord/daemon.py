"""The daemon: wires the stages together and owns the process lifecycle.

* start: load config, open the store, bind the control socket, open sources, then READY=1;
* SIGHUP: RELOADING=1, build a new Config; on any error keep the old one and say why;
* SIGTERM/SIGINT: STOPPING=1, stop sources, drain in-flight work, flush, exit 0;
  a second signal exits at once;
* watchdog: WATCHDOG=1 at half of WATCHDOG_USEC, only while the loop and stages are healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import inspect
import os
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from . import __version__, config, log, sources
from .audit import SessionStage, SessionTracker, settings_from
from .control import ControlError, ControlServer
from .detect.engine import Engine, History
from .events import Action, Event, Finding, FleetFinding, Severity
from .measure import Sample, as_json, sample
from .notify.build import build_channels, journal_channel
from .notify.channels import BaseChannel
from .notify.queue import AlertQueue
from .notify.report import ReportScheduler
from .parse import Parser
from .parse.prefix import load_zone
from .paths import resolve_socket, resolve_state_dir
from .pipeline import Pipeline
from .respond.backends import backend_for
from .respond.bans import BanManager, NotCompleted
from .sources.journald import journald_running
from .store import Store, StoreError, outbox
from .store import history as history_store
from .systemd import Notifier

STOP_TIMEOUT = 8.0  # leaves headroom under systemd's and the 10 s


class Stage(Protocol):
    """What the daemon needs from each pipeline stage."""

    name: str
    role: str  # "source", "pipeline", "respond", "notify" or "audit"

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def apply_config(self, cfg: config.Config) -> None: ...
    def describe(self) -> dict[str, Any]: ...
    def healthy(self) -> bool: ...


@dataclass
class Counters:
    """Named monotonically increasing counters, shown by ``sshmonitor status``."""

    values: dict[str, int] = field(default_factory=dict)

    def inc(self, name: str, n: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n

    def get(self, name: str) -> int:
        return self.values.get(name, 0)


class RateWindow:
    """Events per hour over a sliding hour, in one-minute buckets (monotonic clock)."""

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}

    def add(self, n: int = 1) -> None:
        minute = int(time.monotonic() // 60)
        self.buckets[minute] = self.buckets.get(minute, 0) + n

    def per_hour(self) -> int:
        now = int(time.monotonic() // 60)
        for m in [m for m in self.buckets if m <= now - 60]:
            del self.buckets[m]
        return sum(self.buckets.values())


def _human(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return str(int(n))


def shutdown_order(stages: list[Stage], last: list[Any]) -> list[Stage]:
    """The order to stop stages in: the reverse of their start (sources first, so no new
    lines come), except that ``last`` (pipeline, alerts, bans) stop at the very end, in that
    order: the pipeline drains its queue, and the findings and bans of those last batches
    must still reach a running alert queue and ban manager."""
    late = [s for s in last if s is not None]
    return [s for s in reversed(stages) if all(s is not x for x in late)] + late


class Daemon:
    """One running sshmonitord."""

    def __init__(
        self,
        cfg: config.Config,
        state_dir: str | None = None,
        log_format: str | None = None,
        dry_run: bool = False,
        trace_lines: bool = False,
    ) -> None:
        self.config = cfg
        self.config_path = cfg.path
        self.log_format_override = log_format
        self.state_dir = resolve_state_dir(state_dir, cfg)
        self.socket_path = resolve_socket(cfg.control.socket)
        self.dry_run = dry_run
        self.trace_lines = trace_lines
        self.pipeline: Pipeline | None = None
        self.engine: Engine | None = None
        self.bans: BanManager | None = None
        self.alerts: AlertQueue | None = None
        self.report: ReportScheduler | None = None
        self.sessions: SessionTracker | None = None
        self.session_stage: SessionStage | None = None
        self.fleet: Stage | None = None
        self.notifier = Notifier()
        self.store = Store(self.state_dir)
        self.counters = Counters()
        self.findings_by: Counter[tuple[str, str]] = Counter()  # (rule, severity)
        self.reloads: Counter[str] = Counter({"success": 0, "failure": 0})
        self.metrics_server: Any = None
        self.metrics_error: str | None = None
        self.rate = RateWindow()
        self.stages: list[Stage] = []
        # The log sources among the stages (what the status line says is being followed).
        self.sources: list[Stage] = []
        self.log = log.get("daemon")
        self.started_mono = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.config_loaded_at = self.started_at
        self.last_reload_error: list[str] | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self.control = ControlServer(
            self.socket_path,
            {
                "status": self._cmd_status,
                "reload": self._cmd_reload,
                "ping": self._cmd_ping,
                # Each stage brings its own commands once it is built (_open); until then:
                "bans": self._cmd_not_yet,
                "ban": self._cmd_not_yet,
                "unban": self._cmd_not_yet,
            },
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Run until asked to stop; return the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        for w in self.config.warnings:
            self.log.warning("config warning", detail=w)
        try:
            await self._open()
        except (StoreError, ControlError, OSError) as exc:
            self.log.error("cannot start", error=str(exc))
            self.notifier.send(f"STATUS=failed to start: {exc}")
            await self._close()
            return 1
        # Everything built at start-up lives as long as the process: keep it out of every
        # future garbage collection.
        gc.collect()
        gc.freeze()
        self.notifier.ready(self.status_line())
        self.log.info(
            "sshmonitord started",
            version=__version__,
            pid=os.getpid(),
            config=self.config_path,
            state_dir=self.state_dir,
            socket=self.socket_path,
            dry_run=self.dry_run,
            watchdog_usec=self.notifier.watchdog_usec,
        )
        self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        if self.notifier.watchdog_usec:
            self._tasks.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
        await self._stop.wait()
        self.notifier.stopping()
        self.log.info("stopping")
        try:
            await asyncio.wait_for(self._shutdown(), STOP_TIMEOUT)
        except TimeoutError:
            self.log.error(
                "shutdown took too long; exiting with work left in flight", timeout=STOP_TIMEOUT
            )
        self.log.info("stopped")
        return 0

    async def _open(self) -> None:
        await asyncio.to_thread(self.store.open)
        try:
            await self.store.run(
                lambda _c: self.store.set_meta("last_start", self.started_at.isoformat())
            )
        except sqlite3.Error as exc:
            self.log.warning("cannot record the start in the store", error=str(exc))
        await self.control.start()
        saved_files = await self.store.run(lambda _c: self.store.load_file_positions())
        saved_times = await self.store.run(lambda _c: self.store.file_position_times())
        saved_cursor = await self.store.run(lambda _c: self.store.load_journal_cursor())
        zone = load_zone(self.config.sources.timezone)
        stored = await self.store.run(history_store.load)
        history = History(stored.sources, stored.keys, stored.since)
        self.engine = Engine(self.config.detection, history, zone=zone)
        self.bans = BanManager(
            self.store,
            backend_for(self.config.response, self.dry_run),
            self.config.response,
            self.config.allowlist,
            dry_run=self.dry_run,
        )
        if self.config.fleet.database:
            # Late: psycopg and the fleet's modules load only on hosts that have a fleet.
            from .detect.fleet import evaluate
            from .store.fleet.service import FleetService

            self.engine.attempts = {}  # ship each event's counted attempts
            self.fleet = FleetService(
                self.store,
                self.config,
                self.bans,
                __version__,
                on_fleet_findings=self._on_fleet_findings,
                evaluate=evaluate,
            )
        else:
            # No fleet (any more): no outbox triggers, nothing to pay for them.
            await self.store.run(functools.partial(outbox.enable, on=False))
        channels = self._channels(self.config)
        self.alerts = AlertQueue(
            self.store,
            self.config.notify,
            channels,
            socket.gethostname(),
            dry_run=self.dry_run,
            journal=journal_channel(self.config.notify.channels, socket.gethostname()),
        )
        # The daily report goes out through the alert spool: its retries, its durability.
        self.report = ReportScheduler(
            self.store,
            self.config,
            channels,
            socket.gethostname(),
            queue=self.alerts,
            dry_run=self.dry_run,
        )
        # The audit trail (docs/audit-trail.md): its index of open sessions comes back
        # from the store, so sessions open at the last stop stay open.
        session_settings = settings_from(self.config)
        if session_settings.enabled:
            self.sessions = SessionTracker(
                lost_after=session_settings.lost_after, check_pids=session_settings.check_pids
            )
            await self.store.run(self.sessions.load)
        self.pipeline = Pipeline(
            self.store,
            # auditd's records carry no host name by default: give them ours, as sshd's lines
            # have it, so their events join (sessions, commands).
            Parser(zone=zone, audit_host=socket.gethostname().split(".")[0]),
            self.engine,
            self.bans,
            on_events=self._on_events,
            on_findings=self._alert,
            on_found=self._log_findings,
            trace=self.trace_lines,
            sessions=self.sessions,
        )
        if self.sessions is not None:
            pipeline = self.pipeline
            self.session_stage = SessionStage(
                self.store, self.sessions, session_settings, busy=lambda: not pipeline.queue.empty()
            )
        self.sources = sources.build(
            self._sources_config(), self.pipeline.emit, saved_files, saved_cursor, saved_times
        )
        # The consumer first, so sources resuming a rotated file have somewhere to put it;
        # bans before sources, so active bans are back in the firewall before new lines.
        self.stages = [
            self.pipeline,
            self.bans,
            *([self.fleet] if self.fleet is not None else []),
            self.alerts,
            self.report,
            *([self.session_stage] if self.session_stage is not None else []),
            *self.sources,
        ]
        for stage in self.stages:
            await stage.start()
        for stage in self.stages:
            self.control.handlers.update(getattr(stage, "commands", dict)())
        # Where a first start begins (start_at: end), stored before any line is: a crash
        # before the first batch is stored must not move it past lines never handled.
        initial = [p for st in self.stages for p in getattr(st, "initial", [])]
        if initial:
            try:
                await self.store.run(lambda _c: self.store.save_initial_positions(initial))
            except sqlite3.Error as exc:
                self.log.warning("cannot store where the sources start", error=str(exc))
        if self.store.recovered is not None:
            await self._alert_store_recovered(self.store.recovered)
        silent = self._silent_sources()
        if silent is not None:
            self.log.warning("nothing to read", detail=silent)
        if self.config.metrics.listen.strip():
            await self._start_metrics(self.config.metrics.listen)

    async def _start_metrics(self, listen: str) -> None:
        # Late: prometheus_client loads only where an endpoint is configured.
        from .metrics import MetricsServer

        server = MetricsServer(listen, self.metric_samples)
        try:
            await server.start()
        except OSError as exc:
            # Monitoring goes on without the endpoint; Prometheus sees it down and says so.
            self.metrics_error = f"cannot listen on {listen}: {exc.strerror or exc}"
            self.log.error("metrics endpoint not started", error=self.metrics_error)
            return
        self.metrics_server = server

    async def metric_samples(self) -> list[Sample]:
        """Every stage's measurements now: what the endpoint serves and status shows."""
        out = [sample("sshmonitor_build_info", 1, version=__version__)]
        for stage in self.stages:
            measure = getattr(stage, "metrics", None)
            if measure is None:
                continue
            got = measure()
            out.extend(await got if inspect.isawaitable(got) else got)
        if self.engine is not None:
            out.extend(self.engine.metrics())
        out.extend(
            sample("sshmonitor_findings_total", n, rule=rule, severity=sev)
            for (rule, sev), n in sorted(self.findings_by.items())
        )
        out.extend(
            sample("sshmonitor_config_reloads_total", n, outcome=outcome)
            for outcome, n in sorted(self.reloads.items())
        )
        return out

    def _sources_config(self) -> config.Config:
        """The config the sources start with. A store started fresh after damage has no
        positions: start at the end of the logs, whatever ``start_at`` says, rather than
        alert again on the history the old store had already handled."""
        cfg = self.config
        if self.store.recovered is None or cfg.sources.start_at == "end":
            return cfg
        return dataclasses.replace(
            cfg, sources=dataclasses.replace(cfg.sources, start_at="end")
        )

    async def _alert_store_recovered(self, info: dict[str, str]) -> None:
        finding = Finding(
            "store_recovered",
            Severity.HIGH,
            socket.gethostname(),
            (),
            Action.ALERT,
            f"the state database was damaged ({info['error']}); it was moved to "
            f"{info['moved_to']} and a fresh one started: ban history, login history and the "
            "audit trail before this start are in the moved file only",
        )
        await self._on_findings([finding])

    def _channels(self, cfg: config.Config) -> list[BaseChannel]:
        """The delivery channels (the journal is always on and needs none)."""
        return build_channels(cfg.notify.channels, socket.gethostname())

    async def _on_findings(self, findings: list[Finding]) -> None:
        """Findings from outside the pipeline (the fleet's rules, a damaged store): log them,
        then alert."""
        self._log_findings(findings)
        await self._alert(findings)

    def _log_findings(self, findings: list[Finding]) -> None:
        """The journal's record of what detection found. The pipeline calls it as soon as a
        batch's findings exist, before their bans are decided and placed, so the journal
        reads "finding" before the "banning" (or "not banning") it caused."""
        for f in findings:
            self.findings_by[f.rule, str(f.severity)] += 1
            level = self.log.error if f.severity == "critical" else self.log.warning
            level(
                "finding",
                rule=f.rule,
                severity=str(f.severity),
                subject=f.subject,
                action=str(f.action),
                summary=f.summary,
                evidence=[e.raw for e in f.events[-3:]],
            )

    async def _alert(self, findings: list[Finding]) -> None:
        """Findings become alerts once their bans are in place (an alert says what was done).
        The alert queue logs each one (``alert stage=alerts …``: the journal is always a
        channel) and queues it for e-mail and webhooks. An allowlisted address kept from a
        ban is said so in its alert, or not alerted on with ``response.alert_allowlisted:
        false``."""
        if self.alerts is None:
            return
        bans = self.bans.alert_info(findings) if self.bans is not None else {}
        if not self.config.response.alert_allowlisted:
            findings = [f for f in findings if "allowlisted" not in bans.get(f.ban_net or "", {})]
        if findings:
            await self.alerts.submit(findings, bans)

    async def _on_fleet_findings(self, found: list[FleetFinding]) -> None:
        """The fleet's rules found something while this host held the lease: alert as for a
        local finding (the fleet ban reaches every host through the ban log)."""
        await self._on_findings(
            [
                Finding(
                    f.rule,
                    Severity(f.severity),
                    f.subject,
                    (),
                    Action.BOTH if f.ban else Action.ALERT,
                    f.summary,
                    ban_net=f.subject if f.ban else None,
                )
                for f in found
            ]
        )

    def _on_events(self, events: list[Event]) -> None:
        self.rate.add(len(events))
        for ev in events:
            self.counters.inc(f"events.{ev.kind}")

    async def _shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        for stage in shutdown_order(self.stages, [self.pipeline, self.alerts, self.bans]):
            try:
                await stage.stop()
            except Exception:
                self.log.exception("stage failed to stop cleanly", stage=stage.name)
        await self._close()

    async def _close(self) -> None:
        if self.metrics_server is not None:
            with contextlib.suppress(Exception):
                await self.metrics_server.stop()
        with contextlib.suppress(Exception):
            await self.control.close()
        await asyncio.to_thread(self.store.close)

    def _on_stop_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:
            # The operator asked twice: they want us gone now, not drained.
            sys.stderr.write(f"second {signal.Signals(sig).name}: exiting at once\n")
            sys.stderr.flush()
            os._exit(1)
        self.log.info("signal received", signal=signal.Signals(sig).name)
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ reload

    def _on_hup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload(), name="reload")

    async def reload(self) -> bool:
        """Re-read the config file; swap it in whole, or keep the old one on any error."""
        async with self._reload_lock:
            self.notifier.reloading()
            ok = False
            try:
                if self.config_path is None:
                    raise config.ConfigError(None, [config.Problem("", "no config file to reload")])
                new = await asyncio.to_thread(config.load_config, self.config_path)
                self._check_restart_only(new)
                for stage in self.stages:
                    if stage is self.alerts:
                        chans = self._channels(new)
                        journal = journal_channel(new.notify.channels, socket.gethostname())
                        self.alerts.apply_config(new, chans, journal)
                        # Built together with the alert queue in _open(): never None here.
                        if self.report is not None:
                            self.report.apply_config(new, chans)
                    elif stage is self.report:
                        continue
                    else:
                        stage.apply_config(new)
            except config.ConfigError as exc:
                self.last_reload_error = exc.lines()
                for p in exc.problems:
                    self.log.error(
                        "config reload failed; keeping the running config",
                        file=exc.path,
                        key=p.key or None,
                        problem=p.message,
                    )
            except Exception as exc:
                self.last_reload_error = [f"{type(exc).__name__}: {exc}"]
                self.log.exception("config reload failed; keeping the running config")
            else:
                self.config = new
                self.config_loaded_at = datetime.now(UTC)
                self.last_reload_error = None
                log.setup(new.log.level, self.log_format_override or new.log.format)
                for w in new.warnings:
                    self.log.warning("config warning", detail=w)
                self.log.info("config reloaded", file=self.config_path)
                ok = True
            self.reloads["success" if ok else "failure"] += 1
            self.notifier.ready(self.status_line())
            return ok

    def _check_restart_only(self, new: config.Config) -> None:
        for what, old_v, new_v in (
            ("store.dir", self.config.store.dir, new.store.dir),
            ("control.socket", self.config.control.socket, new.control.socket),
            ("metrics.listen", self.config.metrics.listen, new.metrics.listen),
        ):
            if old_v != new_v:
                self.log.warning(
                    "setting changes only on restart", key=what, running=old_v, configured=new_v
                )

    # ------------------------------------------------------------------ health

    def healthy(self) -> bool:
        """Every stage says it is healthy and no background task died."""
        for t in self._tasks:
            if t.done() and not t.cancelled():
                return False
        return all(stage.healthy() for stage in self.stages)

    async def _watchdog_loop(self) -> None:
        usec = self.notifier.watchdog_usec or 0
        interval = usec / 2_000_000
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            lag = loop.time() - before - interval
            store_ok = await self._store_responds(timeout=interval)
            if self.healthy() and store_ok:
                self.notifier.watchdog()
            else:
                self.log.error(
                    "unhealthy: withholding the watchdog ping so systemd restarts us",
                    loop_lag=round(lag, 3),
                    store_ok=store_ok,
                )

    async def _store_responds(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.store.run(lambda _c: self.store.ping()), timeout)
            return True
        except Exception:
            return False

    # ------------------------------------------------------------------ status

    def status_line(self) -> str:
        """One-line summary for systemd's STATUS= (shown by systemctl status)."""
        parts = []
        described = [s.describe() for s in self.stages if s.role == "source"]
        following = [d["summary"] for d in described if d.get("summary")]
        if self._silent_sources(described) is not None:
            parts.append("NOTHING CAN ARRIVE: " + ("; ".join(following) or "no log source"))
        else:
            parts.append("; ".join(following) if following else "no log sources open")
        parts.append(f"{_human(self.rate.per_hour())} events/h")
        if self.bans is not None:
            parts.append(self.bans.describe()["summary"])
        if self.pipeline is not None and self.pipeline.store_error is not None:
            parts.append(f"STORE FAILING, {_human(self.pipeline.unstored_lines)} lines held")
        if self.store.recovered is not None:
            parts.append("damaged database moved aside at start")
        if self.dry_run:
            parts.append("dry run")
        if self.last_reload_error:
            parts.append("last reload FAILED (old config in force)")
        return "; ".join(parts)

    async def _status_loop(self) -> None:
        last = ""
        while True:
            line = self.status_line()
            if line != last:
                self.notifier.status(line)
                last = line
            await asyncio.sleep(5)

    def _store_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.store.path)}
        if self.store.recovered is not None:
            out["recovered"] = dict(self.store.recovered)
        if self.store.corruption_seen:
            out["damaged"] = True
        if self.pipeline is not None and self.pipeline.store_error is not None:
            out["error"] = self.pipeline.store_error
            out["unstored_lines"] = self.pipeline.unstored_lines
        return out

    def _silent_sources(self, described: list[dict[str, Any]] | None = None) -> str | None:
        """Why no sshd line can reach us now (every log source waits for a file that does not
        exist, or reads a journal no journald writes), or None. auditd's log does not count:
        it carries no logins."""
        if described is None:
            described = [s.describe() for s in self.stages if s.role == "source"]
        feeds = [d for d in described if d.get("name") != "auditd"]
        if not feeds or any(d.get("can_deliver", True) for d in feeds):
            return None
        head = "no log source can deliver anything: "
        if any(d.get("mode") == "journal" for d in feeds):
            return (
                head + "journald is not running here, so the journal gets no new records "
                "(start systemd-journald, or set sources.mode: file)"
            )
        files = ", ".join(p for d in feeds for p in d.get("waiting_for") or []) or "the log files"
        if self.config.sources.mode == "auto":
            # Why auto mode did not take the journal (sources.choose).
            journal = (
                f"journalctl ({self.config.sources.journal.journalctl}) cannot be run"
                if journald_running()
                else "journald is not running here"
            )
            return (
                head + f"{journal} and none of {files} exists; each file is "
                "read as soon as it appears (install rsyslog, or set sources.files to where "
                "sshd logs)"
            )
        return (
            head + f"none of {files} exists; each is read as soon as it appears (is "
            "sources.files where sshd logs?)"
        )

    def _warnings(self) -> list[str]:
        out: list[str] = []
        silent = self._silent_sources()
        if silent is not None:
            out.append(silent)
        rec = self.store.recovered
        if rec is not None:
            out.append(
                f"the database was damaged and moved to {rec['moved_to']} at {rec['at']}; "
                "this store started empty"
            )
        if self.store.corruption_seen:
            out.append("the database is damaged: restart the service to move it aside")
        return out

    async def _cmd_status(self, _req: dict[str, Any]) -> dict[str, Any]:
        return {
            "warnings": self._warnings(),
            "store": self._store_status(),
            "version": __version__,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "uptime_seconds": round(time.monotonic() - self.started_mono, 1),
            "started_at": self.started_at.isoformat(),
            "config": self.config_path,
            "config_loaded_at": self.config_loaded_at.isoformat(),
            "last_reload_error": self.last_reload_error,
            "state_dir": self.state_dir,
            "database": str(self.store.path),
            "schema_version": self.store.schema_version,
            "dry_run": self.dry_run,
            "log_level": self.config.log.level,
            "status": self.status_line(),
            "events_per_hour": self.rate.per_hour(),
            "stages": [{**s.describe(), "role": s.role} for s in self.stages],
            "counters": dict(sorted({**self.counters.values, **self._finding_counts()}.items())),
            "metrics_endpoint": self._metrics_status(),
            "metrics": await self._metrics_json(),
        }

    def _finding_counts(self) -> dict[str, int]:
        """``findings.<rule>`` for status: findings_by (what the metrics serve) summed over
        severities."""
        out: dict[str, int] = {}
        for (rule, _sev), n in self.findings_by.items():
            out[f"findings.{rule}"] = out.get(f"findings.{rule}", 0) + n
        return out

    def _metrics_status(self) -> dict[str, Any]:
        server = self.metrics_server
        return {
            "listen": self.config.metrics.listen or None,
            "address": None if server is None else server.address,
            "url": None if server is None else f"http://{server.address}/metrics",
            "scrapes": 0 if server is None else server.scrapes,
            "error": self.metrics_error,
        }

    async def _metrics_json(self) -> list[dict[str, Any]]:
        return as_json(await self.metric_samples())

    async def _cmd_reload(self, _req: dict[str, Any]) -> dict[str, Any]:
        ok = await self.reload()
        return {"reloaded": ok, "errors": self.last_reload_error}

    async def _cmd_ping(self, _req: dict[str, Any]) -> str:
        return "pong"

    async def _cmd_not_yet(self, _req: dict[str, Any]) -> Any:
        raise NotCompleted("that part of the daemon is not running yet; try again in a moment")


def run(
    cfg: config.Config,
    state_dir: str | None,
    log_format: str | None,
    dry_run: bool,
    trace_lines: bool = False,
) -> int:
    """Entry point used by the CLI: build the daemon and run its loop."""
    daemon = Daemon(
        cfg, state_dir=state_dir, log_format=log_format, dry_run=dry_run, trace_lines=trace_lines
    )
    return asyncio.run(daemon.run())
