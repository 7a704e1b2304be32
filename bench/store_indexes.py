#!/usr/bin/env python3
"""What each index on the events table costs a stored row, and what it buys a query
(issue #17: "fewer or cheaper indexes, not storing what no query reads — measure which").

    bench/store_indexes.py [--log FILE] [--lines 300000] [--group 15000]
                           [--variants all,-events_ip_ts,...,none]

The rows are real: the first ``--lines`` lines of a generated auth.log (default: an
attack-heavy one made here with bench/gen_authlog.py, 95 % attack lines), parsed by the
daemon's own parser into the daemon's own rows (``store.event_row``). Each variant is a fresh
database made by the real ``Store`` (its schema and PRAGMAs: WAL, synchronous NORMAL, and the
32 MB page cache a backlog's transactions get) with the named indexes dropped; the rows go in
through ``Store.add_events`` in transactions of ``--group`` rows, as the pipeline's group
commits of a backlog do. It prints, per variant, the store's CPU per row over all rows and over
the last quarter (the table's size shows there), the file's size, and then the time of every
query the daemon, the report and the CLI run on the events table, against that variant's
database (best of three).

A query still running after QUERY_CAP (20 s) is stopped and shows as ``nan``. Nothing here is
asserted; it is a measurement. One process, no daemon, no threads: the CPU
time is the store's own (``time.process_time``).
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sshmonitord.events import Kind, Line  # noqa: E402
from sshmonitord.parse import Parser  # noqa: E402
from sshmonitord.store import Store, event_row  # noqa: E402
from sshmonitord.store import reports as rq  # noqa: E402
from sshmonitord.store import sessions as sq  # noqa: E402

INDEXES = ("events_ts", "events_ip_ts", "events_user_ts", "events_kind_ts")
DAY = 86400.0


def rows_of(log: Path, lines: int) -> list[tuple[Any, ...]]:
    parser = Parser()
    rows: list[tuple[Any, ...]] = []
    with log.open(encoding="utf-8", errors="replace") as fh:
        for i, text in enumerate(fh):
            if i >= lines:
                break
            ev = parser.parse_line(Line(text.rstrip("\n"), str(log)))
            if ev is not None and ev.kind is not Kind.IGNORED:
                rows.append(event_row(ev))
    return rows


def dropped(variant: str) -> tuple[str, ...]:
    if variant == "all":
        return ()
    if variant == "none":
        return INDEXES
    name = variant.lstrip("-")
    if name not in INDEXES:
        raise SystemExit(f"unknown variant {variant!r}: all, none or -INDEX ({', '.join(INDEXES)})")
    return (name,)


def fill(state: Path, variant: str, rows: list[tuple[Any, ...]], group: int) -> dict[str, Any]:
    store = Store(state)
    store.open()
    for name in dropped(variant):
        store.conn.execute(f"DROP INDEX {name}")
    quarter = len(rows) - len(rows) // 4
    cpu_all = wall_all = cpu_last = 0.0
    rows_last = 0
    for start in range(0, len(rows), group):
        chunk = rows[start : start + group]
        c0, w0 = time.process_time(), time.perf_counter()
        store.cache_for(len(chunk))  # as the pipeline does: a backlog's cache
        with store.transaction():
            store.add_events(chunk)
        dc, dw = time.process_time() - c0, time.perf_counter() - w0
        cpu_all += dc
        wall_all += dw
        if start >= quarter:
            cpu_last += dc
            rows_last += len(chunk)
    store.close()
    db = state / "sshmonitor.db"
    return {
        "us_row": cpu_all / len(rows) * 1e6,
        "us_row_last": cpu_last / max(1, rows_last) * 1e6,
        "wall_s": wall_all,
        "mb": db.stat().st_size / 1e6,
        "db": db,
    }


def queries(rows: list[tuple[Any, ...]]) -> dict[str, Callable[[sqlite3.Connection], Any]]:
    """Every query on the events table, with arguments a real one would have: the last day of
    the log, its busiest address and the user name most tried."""
    end = max(r[0] for r in rows) + 1
    day = end - DAY
    ips = Counter(r[6] for r in rows if r[6] is not None)
    users = Counter(r[5] for r in rows if r[5] is not None)
    top_ip = ips.most_common(1)[0][0]
    rare_ip = ips.most_common()[-1][0]
    top_user = users.most_common(1)[0][0]
    rare_user = users.most_common()[-1][0]
    return {
        "report: count_kind (day)": lambda c: rq.count_kind(c, "auth_failure", day, end),
        "report: failure_buckets (day)": lambda c: len(rq.failure_buckets(c, day, 3600, day, end)),
        "report: unmatched_invalid (day)": lambda c: len(
            rq.unmatched_invalid_buckets(c, day, 3600, day, end, 10.0)
        ),
        "report: users_tried (top ip, day)": lambda c: rq.users_tried(c, top_ip, day, end),
        "report: invalid_user_groups (day)": lambda c: len(rq.invalid_user_groups(c, day, end)),
        "report: account_groups (day)": lambda c: len(rq.account_groups(c, day, end)),
        "report: login_groups (day)": lambda c: len(rq.login_groups(c, day, end)),
        "cli: events --user TOP (all)": lambda c: sum(1 for _ in sq.list_events(c, user=top_user)),
        "cli: events --user RARE (all)": lambda c: sum(
            1 for _ in sq.list_events(c, user=rare_user)
        ),
        "cli: events --user TOP --limit 100": lambda c: sum(
            1 for _ in sq.list_events(c, user=top_user, limit=100)
        ),
        "cli: events --ip RARE (all)": lambda c: sum(
            1 for _ in sq.list_events(c, addresses=[rare_ip], single_address=True)
        ),
        "cli: events --since 1d --limit 100": lambda c: sum(
            1 for _ in sq.list_events(c, since=day, limit=100)
        ),
        "cli: distinct addresses": lambda c: sum(1 for _ in sq.distinct_addresses(c, "events")),
    }


QUERY_CAP = 20.0  # seconds; a query without its index can take hours (nan in the table)


def best_of(fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection) -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()

        def over(t0: float = t0) -> bool:
            return time.perf_counter() - t0 > QUERY_CAP

        conn.set_progress_handler(over, 100_000)
        try:
            fn(conn)
        except sqlite3.OperationalError:  # interrupted at the cap
            return float("nan")
        finally:
            conn.set_progress_handler(None, 0)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--log", type=Path, help="auth.log to parse (default: generate one)")
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--group", type=int, default=15_000, help="rows per transaction")
    ap.add_argument("--variants", default="all," + ",".join(f"-{i}" for i in INDEXES) + ",none")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sm-indexes-") as tmp:
        log = args.log
        if log is None:
            log = Path(tmp) / "auth.log"
            print(f"generating {args.lines:,} attack-heavy lines ...", file=sys.stderr)
            subprocess.run(
                [sys.executable, str(HERE / "gen_authlog.py"), "--lines", str(args.lines),
                 "--out", str(log), "--attack-share", "0.95"],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        rows = rows_of(log, args.lines)
        print(f"{len(rows):,} rows from {args.lines:,} lines of {log}", file=sys.stderr)
        qs = queries(rows)
        results: dict[str, dict[str, Any]] = {}
        for v in args.variants.split(","):
            print(f"variant {v} ...", file=sys.stderr)
            results[v] = fill(Path(tmp) / v.lstrip("-"), v, rows, args.group)
            conn = sqlite3.connect(f"file:{results[v]['db']}?mode=ro", uri=True)
            results[v]["q"] = {name: best_of(fn, conn) for name, fn in qs.items()}
            conn.close()
        names = list(results)
        print(f"\n{'':38s}" + "".join(f"{n:>16s}" for n in names))
        for key, label, fmt in (
            ("us_row", "store CPU per row, µs", "{:16.1f}"),
            ("us_row_last", "  last quarter of the rows, µs", "{:16.1f}"),
            ("wall_s", "insert wall, s", "{:16.1f}"),
            ("mb", "database MB", "{:16.1f}"),
        ):
            print(f"{label:38s}" + "".join(fmt.format(results[n][key]) for n in names))
        print("query, ms (best of 3)")
        for q in qs:
            print(f"  {q:36s}" + "".join(f"{results[n]['q'][q] * 1e3:16.1f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
