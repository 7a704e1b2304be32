"""``sshmonitor status``, ``reload`` and ``check-config``: the daemon's state and its config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import config, control
from ..timefmt import fmt_duration
from .output import failed, one_lines, printable
from .where import config_arg, socket_arg, socket_for


def cmd_check_config(args: argparse.Namespace) -> int:
    # Not where.load_config: that falls back to built-in defaults when the default file is
    # missing, and a missing file is exactly what check-config must report.
    path = args.file or args.config or config.DEFAULT_CONFIG_PATH
    try:
        cfg = config.load_config(path)
    except config.ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print("ok")
    return 0


def print_status(st: dict[str, Any]) -> None:
    """The daemon's status for people. Tolerant: an older or newer daemon may lack keys."""
    g = st.get
    print(f"sshmonitord {g('version', '?')} running, pid {g('pid', '?')} on {g('host', '?')}")
    if "uptime_seconds" in st:
        print(f"  uptime:   {fmt_duration(st['uptime_seconds'])} (since {g('started_at', '?')})")
    print(f"  status:   {g('status', '?')}")
    print(
        f"  config:   {g('config') or '(built-in defaults)'} (loaded {g('config_loaded_at', '?')})"
    )
    if g("last_reload_error"):
        print("  LAST RELOAD FAILED, the previous config is still in force:")
        for line in one_lines(g("last_reload_error")):
            print(f"    {line}")
    print(f"  state:    {g('database', '?')} (schema v{g('schema_version', '?')})")
    store = g("store")
    if isinstance(store, dict):
        rec = store.get("recovered")
        if isinstance(rec, dict):
            print(
                f"    the database was damaged ({rec.get('error', '?')}) and moved aside to "
                f"{rec.get('moved_to', '?')} at {rec.get('at', '?')}; this store started empty"
            )
        if store.get("damaged"):
            print("    the database is damaged: restart the service to move it aside")
        if store.get("error"):
            print(
                f"    CANNOT WRITE: {store['error']}; {store.get('unstored_lines', '?')} lines "
                "held in memory (bans and alerts act on them all the same)"
            )
    if g("dry_run"):
        print("  mode:     DRY RUN (no bans, no alerts sent)")
    for w in one_lines(g("warnings")):
        print(f"  warning: {w}")
    for stage in g("stages") or []:
        if not isinstance(stage, dict):
            continue
        print(f"  {str(stage.get('name', 'stage')) + ':':<9} {stage.get('summary', '')}")
        mode = stage.get("mode")
        if mode is not None and stage.get("forgeable", mode == "file"):
            print(
                f"            sources: {mode} mode (forgeable by local users: see docs/security.md)"
            )
        elif mode is not None:
            print(f"            sources: {mode} mode (trusted fields only)")
        rej = stage.get("rejected") or {}
        if rej:
            total = sum(rej.values()) if isinstance(rej, dict) else rej
            why = ", ".join(f"{k} {v}" for k, v in rej.items()) if isinstance(rej, dict) else ""
            print(f"            {total} journal record(s) rejected (untrusted sender: {why})")
            for sample in one_lines(stage.get("rejected_samples"))[:3]:
                print(f"              e.g. {sample}")
        for w in one_lines(stage.get("warnings")):
            print(f"            warning: {w}")
    counters = g("counters") or {}
    if counters:
        print("  counters:")
        for k, v in counters.items():
            print(f"    {k:<28} {v}")
    endpoint = g("metrics_endpoint")
    if isinstance(endpoint, dict):
        if endpoint.get("error"):
            print(f"  metrics:  NOT SERVED: {endpoint['error']}")
        elif endpoint.get("url"):
            print(f"  metrics:  {endpoint['url']} ({endpoint.get('scrapes', 0)} scrapes)")
        else:
            print("  metrics:  no endpoint (metrics.listen is not set)")
    measured = g("metrics") or []
    if measured:
        print("  measurements (the numbers the metrics endpoint serves):")
        for m in measured:
            if not isinstance(m, dict):
                continue
            labels = m.get("labels") or {}
            name = str(m.get("name", "?")) + (
                "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
            )
            value = m.get("value")
            if isinstance(value, dict):  # a histogram
                n, total = value.get("count", 0), value.get("sum", 0.0)
                mean = f", mean {total / n:.4f}s" if n else ""
                shown = f"{n} observed{mean}"
            elif isinstance(value, float) and not value.is_integer():
                shown = f"{value:.3f}"
            else:
                shown = str(int(value)) if isinstance(value, int | float) else str(value)
            print(f"    {printable(name)} {shown}")


def cmd_status(args: argparse.Namespace) -> int:
    path = socket_for(args)
    try:
        st = control.request(path, "status")
    except control.ControlError as exc:
        return failed(exc)
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print_status(st)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    path = socket_for(args)
    try:
        res = control.request(path, "reload")
    except control.ControlError as exc:
        return failed(exc)
    if res["reloaded"]:
        print("reloaded")
        return 0
    print("reload FAILED; the running config stays in force:", file=sys.stderr)
    for line in res.get("errors") or []:
        print(f"  {line}", file=sys.stderr)
    return 1


def register_check_config(sub: Any) -> None:
    """Add ``check-config`` (first in ``sshmonitor --help``)."""
    c = sub.add_parser(
        "check-config",
        help="validate a config file; prints ok or every error",
        description="Validate a config file without starting anything. Exit 0 "
        "and 'ok' when valid, else every problem and exit 1.",
    )
    config_arg(c)
    c.add_argument("file", nargs="?", help="config file (same as --config)")
    c.set_defaults(func=cmd_check_config)


def register(sub: Any) -> None:
    """Add ``status`` and ``reload`` (last in ``sshmonitor --help``)."""
    for name, func, text in (
        ("status", cmd_status, "show the running daemon's state (exit 1 if not running)"),
        ("reload", cmd_reload, "reload the daemon's config and report errors (like SIGHUP)"),
    ):
        s = sub.add_parser(name, help=text, description=text)
        config_arg(s)
        socket_arg(s)
        if name == "status":
            s.add_argument("--json", action="store_true", help="machine-readable output")
        s.set_defaults(func=func)
