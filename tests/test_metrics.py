"""The Prometheus endpoint (issue #15): a real daemon, real lines, a real SMTP server, real
scrapes over HTTP, checked by the real promtool; plus the pieces under it."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import need

from sshmonitord.config import ConfigError, parse_config, parse_listen
from sshmonitord.measure import Histogram, sample
from sshmonitord.metrics import SPEC, exposition
from sshmonitord.sources.tailer import FileFollower

try:
    import aiosmtpd.controller as aiosmtpd
except ImportError:  # pragma: no cover - installed by scripts/test
    aiosmtpd = None


def promtool() -> str:
    path = shutil.which("promtool")
    need(path is not None, "promtool (Debian package prometheus)")
    assert path is not None
    return path


# ----------------------------------------------------------------------------- scraping


Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_exposition(text: str) -> Series:
    """name{labels} value lines → {(name, sorted labels): value} (comments skipped)."""
    out: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert m, line
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def scrape(address: str, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as r:
        assert r.status == 200
        if path == "/metrics":
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return str(r.read().decode())


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def endpoint(d: Any) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = d.cli("status", "--json", "--socket", str(d.socket_path))
        if r.returncode == 0:
            st = json.loads(r.stdout)
            addr = st["metrics_endpoint"]["address"]
            if addr:
                return str(addr)
        time.sleep(0.1)
    raise AssertionError(f"no metrics endpoint:\n{d.log_text()}")


def wait_until(d: Any, address: str, cond: Any, timeout: float = 20.0) -> Series:
    deadline = time.monotonic() + timeout
    series: Series = {}
    while time.monotonic() < deadline:
        series = parse_exposition(scrape(address))
        if cond(series):
            return series
        time.sleep(0.2)
    shown = "\n".join(f"{k} {v}" for k, v in sorted(series.items()))
    raise AssertionError(f"metrics never got there:\n{shown}\n{d.log_text()}")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class Inbox:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK queued"


FAILURES = [
    f"Dec  6 12:00:{i:02d} web1 sshd[{100 + i}]: Failed password for root from "
    f"203.0.113.{1 + i // 5} port {4000 + i} ssh2"
    for i in range(15)
]


def test_the_endpoint_follows_real_lines_bans_alerts_and_agrees_with_status(
    tmp_path: Path, daemon_factory: Any
) -> None:
    need(aiosmtpd is not None, "aiosmtpd (pip install aiosmtpd)")
    log = tmp_path / "auth.log"
    log.write_text("")
    banned = tmp_path / "banned"
    ban = tmp_path / "ban.sh"
    # The firewall command fails for one address: a backend error.
    ban.write_text(f'#!/bin/sh\n[ "$1" = 203.0.113.3 ] && exit 3\necho "$1" >> {banned}\n')
    ban.chmod(0o755)
    inbox = Inbox()
    smtp = aiosmtpd.Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        conf = (
            f"sources: {{mode: file, files: [{log}], start_at: beginning, poll_interval: 200ms,"
            " max_line_length: 1000}\n"
            f"response: {{backend: command, ban_command: [{ban}, '{{ip}}']}}\n"
            'metrics: {listen: "127.0.0.1:0"}\n'
            "notify:\n  digest_window: 300ms\n  retry_initial: 300ms\n  retry_max: 1s\n"
            "  channels:\n"
            f"    - {{type: smtp, name: mail, host: 127.0.0.1, port: {smtp.port}, tls: none, "
            "sender: sshmonitor@example.org, to: [admin@example.org], min_severity: info}\n"
            f"    - {{type: smtp, name: down, host: 127.0.0.1, port: {free_port()}, tls: none, "
            "sender: sshmonitor@example.org, to: [admin@example.org], min_severity: info}\n"
            "detection: {rules: {new_source: {enabled: false}, new_key: {enabled: false}}}\n"
            # Fleet mode with its database away: its metrics are served all the same (the
            # dashboard's fleet row must find them).
            f'fleet: {{database: "postgresql://nobody@/nodb?host={tmp_path}/no-pg", host: web1}}\n'
        )
        d = daemon_factory(conf)
        address = endpoint(d)
        before = parse_exposition(scrape(address))
        assert value(before, "sshmonitor_build_info", version=_version()) == 1
        assert value(before, "sshmonitor_lines_read_total", source=str(log)) == 0
        assert value(before, "sshmonitor_config_reloads_total", outcome="failure") == 0
        assert ("sshmonitor_alerts_total", (("channel", "mail"), ("outcome", "sent"))) in before

        with log.open("a") as fh:
            fh.write("\n".join(FAILURES) + "\n")
            fh.write("Dec  6 12:01:00 web1 sshd[900]: A message no sshd ever wrote\n")
            fh.write("no prefix at all, just words\n")
            fh.write("Dec  6 12:01:01 web1 sshd[901]: " + "x" * 3000 + "\n")
        n_lines = len(FAILURES) + 3

        def settled(s: Series) -> bool:
            return (
                value(s, "sshmonitor_alerts_total", channel="mail", outcome="sent") >= 3
                and value(s, "sshmonitor_alerts_total", channel="down", outcome="failed") >= 3
                and value(s, "sshmonitor_backend_errors_total", backend="command") >= 1
            )

        s = wait_until(d, address, settled)
        src = str(log)
        assert value(s, "sshmonitor_lines_read_total", source=src) == n_lines
        assert value(s, "sshmonitor_source_bytes_behind", source=src) == 0
        assert value(s, "sshmonitor_source_lag_seconds", source=src) == 0
        assert value(s, "sshmonitor_lines_rejected_total", source=src, reason="too_long") == 1
        assert value(s, "sshmonitor_events_total", kind="auth_failure") == 15
        assert value(s, "sshmonitor_unrecognized_lines_total", program="sshd") >= 1
        assert value(s, "sshmonitor_malformed_lines_total") == 1
        assert value(s, "sshmonitor_findings_total", rule="bruteforce", severity="high") == 3
        assert value(s, "sshmonitor_bans_total", reason="bruteforce") == 3
        assert value(s, "sshmonitor_bans_active", backend="command") == 3
        assert value(s, "sshmonitor_tracked_keys", table="addresses") == 3
        assert value(s, "sshmonitor_store_write_seconds_count") >= 1
        assert value(s, "sshmonitor_line_to_event_seconds_count") == n_lines
        assert value(s, "sshmonitor_line_to_event_seconds_bucket", le="+Inf") == n_lines
        # The down channel's alerts wait in the spool; the mail channel's went.
        assert value(s, "sshmonitor_alert_spool_depth") >= 3
        assert value(s, "sshmonitor_alert_spool_oldest_seconds") > 0
        assert sorted(banned.read_text().split()) == ["203.0.113.1", "203.0.113.2"]
        assert inbox.count >= 1

        # A reload that fails, then one that works.
        d.write_config(conf.replace("retry_max: 1s", "retry_max: banana"))
        d.signal(1)
        d.wait_log("config reload failed")
        d.write_config(conf)
        d.signal(1)
        s = wait_until(
            d, address,
            lambda s: value(s, "sshmonitor_config_reloads_total", outcome="success") == 1,
        )
        assert value(s, "sshmonitor_config_reloads_total", outcome="failure") == 1

        # status --json shows the numbers the endpoint serves (ages and lags aside, which
        # move with the clock between the two reads, and the down channel's failures: it
        # retries every second).
        text = scrape(address)
        r = d.cli("status", "--json", "--socket", str(d.socket_path))
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["counters"]["findings.bruteforce"] == 3  # the same tally, by rule
        scraped = parse_exposition(text)
        moving = {"sshmonitor_alert_spool_oldest_seconds", "sshmonitor_source_lag_seconds"}
        status_series: Series = {}
        for m in st["metrics"]:
            key = tuple(sorted(m["labels"].items()))
            if isinstance(m["value"], dict):
                status_series[(m["name"] + "_count", key)] = m["value"]["count"]
                for le, c in m["value"]["buckets"].items():
                    status_series[(m["name"] + "_bucket", tuple(sorted((*key, ("le", le)))))] = c
            else:
                status_series[(m["name"], key)] = m["value"]
        compared = 0
        for k, v in status_series.items():
            if k[0] in moving or ("channel", "down") in k[1]:
                continue
            assert scraped[k] == pytest.approx(v), k
            compared += 1
        assert compared > 40
        human = d.cli("status", "--socket", str(d.socket_path))
        assert f"http://{address}/metrics" in human.stdout
        assert f'sshmonitor_lines_read_total{{source="{src}"}} {n_lines}' in human.stdout

        # Every metric the shipped dashboard and alerting rules name is in a real scrape.
        from test_prometheus_rules import dashboard_metric_names, rule_metric_names

        served = {re.sub(r"_(bucket|sum|count)$", "", k[0]) for k in scraped}
        assert dashboard_metric_names() - served == set()
        assert rule_metric_names() - served - {"up"} == set()
        assert served == set(SPEC)  # and nothing else
        # The real promtool finds nothing to remark on in a real scrape.
        r2 = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)
        assert r2.returncode == 0 and not r2.stdout.strip() and not r2.stderr.strip(), (
            r2.stdout + r2.stderr
        )
    finally:
        smtp.stop()


def _version() -> str:
    from sshmonitord import __version__

    return __version__


def test_the_endpoint_answers_only_what_it_serves(tmp_path: Path, daemon_factory: Any) -> None:
    """Hostile or odd clients: wrong paths and methods, garbage, a huge head, a client that
    never finishes its request — each gets a short answer or a closed socket, and the
    endpoint keeps serving (and the daemon following its log)."""
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(
        f"sources: {{mode: file, files: [{log}], poll_interval: 200ms}}\n"
        'metrics: {listen: "127.0.0.1:0"}\n'
    )
    address = endpoint(d)
    host, port = address.rsplit(":", 1)
    assert scrape(address, "/").startswith("sshmonitord: metrics at /metrics")
    for path, code in (("/nope", 404), ("/metrics/../../etc/passwd", 404)):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{address}{path}", timeout=5)
        assert err.value.code == code
    req = urllib.request.Request(f"http://{address}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 405

    def raw(data: bytes, wait: float = 5.0) -> bytes:
        with socket.create_connection((host, int(port)), timeout=wait) as s:
            s.sendall(data)
            chunks = []
            while True:
                try:
                    c = s.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    break
                if not c:
                    break
                chunks.append(c)
            return b"".join(chunks)

    assert raw(b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    for size in (9_000, 20_000, 100_000):  # the 8 KiB head limit holds (64 KiB got through)
        assert raw(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * size + b"\r\n\r\n") == b"", size
    # A flood of idle connections: beyond 16 at once they are closed at once (each costs the
    # daemon a file descriptor), and the endpoint serves again when they are gone.
    flood = [socket.create_connection((host, int(port))) for _ in range(40)]
    try:
        closed = 0
        for s in flood:
            s.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                closed += s.recv(1) == b""
        assert closed >= 40 - 16, closed
    finally:
        for s in flood:
            s.close()
    time.sleep(0.3)
    idle = socket.create_connection((host, int(port)))  # sends nothing, ever
    idle.sendall(b"GET /metr")
    try:
        t0 = time.monotonic()
        assert scrape(address).startswith("# HELP")  # others are served meanwhile
        assert time.monotonic() - t0 < 2
        head = raw(b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    finally:
        idle.close()
    log.write_text(FAILURES[0] + "\n")
    # The tailer counts a line read before the pipeline has made its event: a scrape in
    # between sees the first and not yet the second, so wait for both.
    wait_until(  # raises if the daemon stopped following its log
        d,
        address,
        lambda s: (
            value(s, "sshmonitor_lines_read_total", source=str(log)) == 1
            and value(s, "sshmonitor_events_total", kind="auth_failure") == 1
        ),
    )


def test_a_busy_port_is_one_clear_line_and_monitoring_goes_on(
    tmp_path: Path, daemon_factory: Any
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        log = tmp_path / "auth.log"
        log.write_text("")
        d = daemon_factory(
            f"sources: {{mode: file, files: [{log}], poll_interval: 200ms}}\n"
            f'metrics: {{listen: "127.0.0.1:{port}"}}\n'
        )
        d.wait_log("sshmonitord started")
        assert "metrics endpoint not started" in d.log_text()
        assert "Traceback" not in d.log_text()
        r = d.cli("status", "--socket", str(d.socket_path))
        assert f"metrics:  NOT SERVED: cannot listen on 127.0.0.1:{port}" in r.stdout
        log.write_text(FAILURES[0] + "\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = json.loads(d.cli("status", "--json", "--socket", str(d.socket_path)).stdout)
            if st["counters"].get("events.auth_failure") == 1:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(d.log_text())
    finally:
        taken.close()


def test_lag_and_bytes_behind_grow_while_the_store_is_locked(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """The fault the endpoint exists for: the daemon stops reading (here another process
    holds the store's lock, so the pipeline fills up and the sources wait). bytes_behind and
    lag grow; once the lock is gone, both fall back to 0 and every line is read."""
    log = tmp_path / "auth.log"
    log.write_text("")
    d = daemon_factory(
        f"sources: {{mode: file, files: [{log}], start_at: beginning, poll_interval: 200ms}}\n"
        'metrics: {listen: "127.0.0.1:0"}\n'
        "detection: {rules: {new_source: {enabled: false}}}\n"
    )
    address = endpoint(d)
    db = sqlite3.connect(d.state_dir / "sshmonitor.db", timeout=30)
    db.execute("BEGIN EXCLUSIVE")
    try:
        line = FAILURES[0] + "\n"
        n = 0
        src = str(log)
        with log.open("a") as fh:
            for _ in range(60):  # until the daemon stops reading (bounded: 60 x 20,000 lines)
                fh.write(line * 20_000)
                fh.flush()
                n += 20_000
                time.sleep(0.3)
                s = parse_exposition(scrape(address))
                if value(s, "sshmonitor_source_bytes_behind", source=src) > 0 and value(
                    s, "sshmonitor_lines_read_total", source=src
                ) == value(parse_exposition(scrape(address)), "sshmonitor_lines_read_total",
                           source=src):
                    break
        time.sleep(2.5)
        s = parse_exposition(scrape(address))
        assert value(s, "sshmonitor_source_bytes_behind", source=src) > 0
        assert value(s, "sshmonitor_source_lag_seconds", source=src) >= 2
        assert value(s, "sshmonitor_lines_read_total", source=src) < n
    finally:
        db.rollback()
        db.close()
    s = wait_until(
        d, address,
        lambda s: value(s, "sshmonitor_lines_read_total", source=src) == n
        and value(s, "sshmonitor_source_bytes_behind", source=src) == 0,
        timeout=120,
    )
    assert value(s, "sshmonitor_source_lag_seconds", source=src) == 0


# ----------------------------------------------------------------------------- the pieces


def test_follower_lag_is_the_time_since_it_last_had_nothing_unread(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("one\n")
    f = FileFollower(str(log), start_at="beginning")
    f.resume([])
    f.poll()
    assert {m.name: m.value for m in f.metrics(time.monotonic())}[
        "sshmonitor_source_bytes_behind"] == 0
    with log.open("a") as fh:
        fh.write("two\nthree\n")
    later = time.monotonic() + 42
    got = {m.name: m.value for m in f.metrics(later)}
    assert got["sshmonitor_source_bytes_behind"] == len("two\nthree\n")
    assert got["sshmonitor_source_lag_seconds"] == pytest.approx(42, abs=1)
    f.poll()
    got = {m.name: m.value for m in f.metrics(later)}
    assert got["sshmonitor_source_bytes_behind"] == 0
    assert got["sshmonitor_source_lag_seconds"] == 0
    f.close()


def test_histogram_is_cumulative_and_ignores_nan() -> None:
    h = Histogram(buckets=(0.1, 1.0))
    h.observe(0.05)
    h.observe(0.5, n=3)
    h.observe(7.0)
    h.observe(float("nan"))
    h.observe(-1.0)  # a clock step backwards: counted as 0
    assert h.cumulative() == [("0.1", 2), ("1.0", 5), ("+Inf", 6)]
    assert h.count == 6 and h.sum == pytest.approx(0.05 + 1.5 + 7.0)


def test_every_metric_in_spec_renders_and_promtool_accepts_it() -> None:
    samples = []
    for name, (kind, _doc, labels) in SPEC.items():
        lab = {n: f"v-{n}" for n in labels}
        if kind == "histogram":
            h = Histogram()
            h.observe(0.003)
            samples.append(sample(name, h, **lab))
        else:
            samples.append(sample(name, 3, **lab))
    text = exposition(samples).decode()
    series = parse_exposition(text)
    for name, (kind, _doc, _labels) in SPEC.items():
        suffix = "_count" if kind == "histogram" else ""
        assert any(k[0] == name + suffix for k in series), name
    r = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    with pytest.raises(ValueError, match="not a metric"):
        exposition([sample("sshmonitor_made_up_total", 1)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9797", ("127.0.0.1", 9797)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
        ("::1:80", None),
        ("127.0.0.1:65536", None),
        ("127.0.0.1", None),
        (":9797", None),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(text) == expected


def test_a_bad_listen_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.listen: expected host:port"):
        parse_config('metrics: {listen: "9797"}')
    assert parse_config("metrics: {listen: ''}").metrics.listen == ""
    assert parse_config("").metrics.listen == ""
