"""Many rows in one INSERT statement: what ``executemany`` does, with the GIL taken back
once per chunk instead of once per row.

sqlite3's ``executemany`` releases the GIL around every row's step and must take it back for
the next row. While the event loop's thread is busy in Python (the pipeline handling the
next batches while the store thread commits the last ones), each of those takes waits up to
the interpreter's switch interval, 5 ms: a 15,000-row commit then took 50 s instead of 0.13
(bench/store_overlap.py). One ``INSERT ... VALUES (...), (...), ...`` per chunk waits once
per chunk. The rows, their order and their rowids are those of ``executemany``; an
``ON CONFLICT`` clause applies to each row in turn, so a key repeated within one chunk is
inserted, then updated, as it would be one statement after another.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any

# Rows per statement at most; fewer where SQLite's limit on parameters says so.
MULTI_INSERT_ROWS = 512
# Fewer rows than this (a live stream's batch, a chunk's tail) go through executemany: a
# handful of GIL waits, and no statement compiled for them.
MIN_MULTI_ROWS = 32


def rows_per_statement(conn: sqlite3.Connection, width: int) -> int:
    limit = 999  # SQLite's default before 3.32
    with contextlib.suppress(AttributeError, sqlite3.Error):
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(MULTI_INSERT_ROWS, limit // max(1, width)))


@functools.lru_cache(maxsize=64)
def multi_statement(sql: str, rows: int) -> str:
    """``INSERT INTO t(..) VALUES (?, ..) [tail]`` for ``rows`` rows in one statement."""
    head, rest = sql.split(" VALUES ", 1)
    end = rest.index(")") + 1  # the row's placeholders: "(?, ?, ...)", no nested parentheses
    return head + " VALUES " + ",".join([rest[:end]] * rows) + rest[end:]


def insert_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``conn.executemany(sql, rows)`` for an INSERT of one ``VALUES (?, ...)`` row.

    Statements come in a few fixed sizes (the largest, then quarters of it down to
    MIN_MULTI_ROWS), never one per batch size: sqlite3 keeps up to 128 compiled statements,
    and a compiled events INSERT of 512 rows holds 0.9 MB (2,048 rows: 3.5 MB)."""
    if len(rows) < MIN_MULTI_ROWS:
        conn.executemany(sql, rows)
        return
    size = rows_per_statement(conn, len(rows[0]))
    flat = itertools.chain.from_iterable
    i, left = 0, len(rows)
    while left:
        while size > left:
            size //= 4
        if size < max(2, MIN_MULTI_ROWS):
            conn.executemany(sql, rows[i:])
            return
        for _ in range(left // size):
            conn.execute(multi_statement(sql, size), list(flat(rows[i : i + size])))
            i += size
        left = len(rows) - i
