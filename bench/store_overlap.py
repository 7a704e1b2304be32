#!/usr/bin/env python3
"""Can the store thread commit while the event loop parses? (issue #17, the daemon's path)

    bench/store_overlap.py [--rows 15000] [--table-rows 200000] [--chunk 256] [--rounds 2]

The daemon parses and detects on the event loop's thread and writes events on the store's
thread (sshmonitord/store). For the two to overlap, a commit must make progress while the
loop's thread is busy in Python. sqlite3's ``executemany`` releases the GIL around every
row's ``sqlite3_step`` and must take it back for the next row; a busy thread holds it for up
to the switch interval (5 ms), so each row can wait that long. A multi-row
``INSERT ... VALUES (...), (...), ...`` takes the GIL back once per chunk of rows instead.

This script measures one group commit (``--rows`` events-table rows, the four indexes of
the real schema, on a table already holding ``--table-rows``) each way, once with the main
thread idle and once with it busy in Python, and prints wall and CPU time of the commit and
how much work the main thread got done meanwhile. Same SQLite settings as the store (WAL,
synchronous NORMAL, 32 MB page cache). Nothing here is asserted; it is a measurement.

What it showed (issue #17's note): with the loop busy, executemany's commit took 26-50x its
idle time and the multi-row one 2.5x. With the loop idle, the multi-row INSERT cost 20-30 %
*more* CPU per row through the real Store in 1,000-row transactions, so it paid only together
with a pipeline that parses the next batches while the store commits: the pipeline now does
that in a backlog, and the store writes 32 rows or more through store/rows.py.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import threading
import time

COLS = "ts, host, program, pid, kind, user, ip, port, method, key_fp, count, session, detail, raw"
ONE = "(" + ",".join("?" * 14) + ")"
INSERT = f"INSERT INTO events({COLS}) VALUES {ONE}"


def make_rows(rng: random.Random, n: int, t0: float) -> list[tuple[object, ...]]:
    """Rows shaped like a flood's: a new address on nearly every row."""
    return [
        (
            t0 + i * 0.01,
            "web1",
            "sshd",
            rng.randint(1000, 99999),
            "auth_failure",
            rng.choice(("root", "admin", "test", "oracle")),
            ".".join(str(rng.randrange(1, 224 if i == 0 else 255)) for i in range(4)),
            rng.randint(1024, 65535),
            "password",
            None,
            1,
            str(rng.randint(1000, 99999)),
            '{"preauth": true}' if rng.random() < 0.5 else None,
            "Nov 22 10:11:12 web1 sshd[4242]: Failed password for root from 192.0.2.1 port "
            "4242 ssh2",
        )
        for i in range(n)
    ]


def open_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-32768")
    conn.execute(f"CREATE TABLE events(id INTEGER PRIMARY KEY, {COLS})")
    for cols in ("ts", "ip, ts", "user, ts", "kind, ts"):
        conn.execute(f"CREATE INDEX events_{cols.replace(', ', '_')} ON events({cols})")
    return conn


def commit(conn: sqlite3.Connection, how: str, rows: list[tuple[object, ...]], chunk: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    if how == "executemany":
        conn.executemany(INSERT, rows)
    else:
        head = f"INSERT INTO events({COLS}) VALUES "
        full = head + ",".join([ONE] * chunk)
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            sql = full if len(part) == chunk else head + ",".join([ONE] * len(part))
            conn.execute(sql, [v for row in part for v in row])
    conn.execute("COMMIT")


def busy_unit() -> None:
    sum(i * i for i in range(1000))


def measure(conn: sqlite3.Connection, how: str, rows: list[tuple[object, ...]], chunk: int,
            busy: bool) -> tuple[float, float, float]:  # fmt: skip
    """(commit wall s, commit CPU s, main-thread work units per second meanwhile)."""
    out: list[float] = []

    def run() -> None:
        w0, c0 = time.perf_counter(), time.thread_time()
        commit(conn, how, rows, chunk)
        out.extend((time.perf_counter() - w0, time.thread_time() - c0))

    th = threading.Thread(target=run)
    units = 0
    t0 = time.perf_counter()
    th.start()
    if busy:
        while th.is_alive():
            busy_unit()
            units += 1
    th.join()
    return out[0], out[1], units / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=15000, help="rows per commit (15000)")
    ap.add_argument("--table-rows", type=int, default=200_000, help="rows already stored")
    ap.add_argument("--chunk", type=int, default=256, help="rows per multi-row INSERT (256)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="sm-overlap-") as tmp:
        conn = open_db(os.path.join(tmp, "events.db"))
        commit(conn, "executemany", make_rows(rng, args.table_rows, 0.0), args.chunk)
        # The main thread's pace alone, for reference.
        t0, units = time.perf_counter(), 0
        while time.perf_counter() - t0 < 1.0:
            busy_unit()
            units += 1
        print(f"main thread alone: {units / (time.perf_counter() - t0):,.0f} work units/s")
        print(f"{'insert':12s} {'main':5s} {'commit wall s':>13s} {'commit CPU s':>12s} "
              f"{'main units/s':>12s}")  # fmt: skip
        t = float(args.table_rows)
        for _ in range(args.rounds):
            for how in ("executemany", "multi-row"):
                for busy in (False, True):
                    rows = make_rows(rng, args.rows, t)
                    t += args.rows
                    wall, cpu, rate = measure(conn, how, rows, args.chunk, busy)
                    shown = f"{rate:12,.0f}" if busy else f"{'-':>12s}"
                    print(f"{how:12s} {'busy' if busy else 'idle':5s} {wall:13.3f} {cpu:12.3f} "
                          f"{shown}")  # fmt: skip
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
