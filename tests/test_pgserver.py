"""The PostgreSQL harness itself (tests/pgserver.py) against the real server: the fleet tests
trust it to cut connections on stop(), to crash on kill9() and recover on start(), and to leave
nothing behind.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import need

TESTS = Path(__file__).resolve().parent


def _need_pg() -> None:
    from pgserver import have_psycopg, pg_bin

    need(pg_bin() is not None, "PostgreSQL is not installed (apt install postgresql)")
    need(have_psycopg(), "psycopg 3 is not installed (pip install 'psycopg>=3.1.7')")


@pytest.fixture(scope="module")
def scratch() -> Iterator[Any]:
    """A server of this module's own, for the tests that stop and crash it (the session's
    server stays up for everybody else). A non-default port: -p must reach the server."""
    _need_pg()
    from pgserver import PgServer

    server = PgServer(port=5499)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def _running_with(marker: str) -> list[str]:
    """Command lines of live (non-zombie) processes that mention ``marker``."""
    from pgserver import _alive

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and _alive(int(entry.name)):
            found.append(cmdline)
    return found


def test_session_server_connects_over_its_socket_only(pg_server, pg_db):
    import psycopg

    with psycopg.connect(pg_server.url(db=pg_db)) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), current_setting('server_version_num')::int"
        ).fetchone()
        assert row is not None
        user, db, version = row
        assert (user, db) == (pg_server.superuser, pg_db)
        assert version >= 150000
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)  # no TCP at all
    assert (pg_server.socket_dir / f".s.PGSQL.{pg_server.port}").is_socket()


def test_a_unique_role_connects_as_itself(pg_server, pg_db):
    import psycopg
    from pgserver import unique_name

    role = unique_name("harness")
    assert role != unique_name("harness")
    pg_server.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with psycopg.connect(pg_server.url(role=role, db=pg_db)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")\
                .fetchone() == (False,)
    finally:
        pg_server.execute(f'DROP ROLE "{role}"')


def test_listen_notify_is_delivered_between_two_connections(pg_server, pg_db):
    import psycopg

    got: list[tuple[str, str]] = []
    with psycopg.connect(pg_server.url(db=pg_db), autocommit=True) as listener, \
            psycopg.connect(pg_server.url(db=pg_db), autocommit=True) as sender:
        listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        listener.execute("LISTEN harness_chan")
        sender.execute("SELECT pg_notify('harness_chan', 'ban 203.0.113.7')")
        # The listener sends nothing: its socket becomes readable by the server's push alone.
        # (select + a no-op query works with psycopg 3.1, which has no notifies(timeout=).)
        readable, _, _ = select.select([listener.fileno()], [], [], 5)
        assert readable, "no notification within 5 s"
        listener.execute("SELECT 1")
    assert got == [("harness_chan", "ban 203.0.113.7")]


def test_stop_cuts_connections_and_start_brings_the_data_back(scratch):
    import psycopg

    assert scratch.port == 5499 and (scratch.socket_dir / ".s.PGSQL.5499").is_socket()
    scratch.execute("CREATE TABLE kept (v text)")
    scratch.execute("INSERT INTO kept VALUES ('before the outage')")
    conn = psycopg.connect(scratch.url(), autocommit=True)
    try:
        assert conn.execute("SHOW port").fetchone() == ("5499",)
        scratch.stop()
        assert not scratch.is_running()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(scratch.url(), connect_timeout=2)
    finally:
        conn.close()
    scratch.start()
    assert scratch.is_running()
    assert scratch.execute("SELECT v FROM kept") == [("before the outage",)]
    scratch.restart()
    assert scratch.execute("SELECT count(*) FROM kept") == [(1,)]


def test_kill9_is_a_crash_and_start_recovers_committed_data(scratch):
    import psycopg
    from pgserver import _alive

    scratch.execute("CREATE TABLE crash (v int)")
    scratch.execute("INSERT INTO crash SELECT generate_series(1, 1000)")
    conn = psycopg.connect(scratch.url(), autocommit=True)
    pid = scratch.postmaster_pid()
    assert pid is not None
    log_before = len(scratch.read_log())
    try:
        t0 = time.monotonic()
        scratch.kill9()
        took = time.monotonic() - t0
        assert not _alive(pid) and not scratch.is_running()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    assert took < 5, f"kill9 took {took:.1f} s"
    scratch.start()
    assert "automatic recovery in progress" in scratch.read_log()[log_before:]
    assert scratch.execute("SELECT count(*), sum(v) FROM crash") == [(1000, 500500)]


def test_kill9_then_start_works_where_nobody_reaps_the_dead_postmaster():
    """CI machines' PID 1 does not reap orphans: the killed postmaster stays a zombie whose PID
    still answers kill -0, and postgres refuses to start over its postmaster.pid. A child
    subreaper that never waits reproduces that here."""
    _need_pg()
    script = f"""
import ctypes, json, sys
sys.path.insert(0, {str(TESTS)!r})
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
from pgserver import PgServer, _proc_state
s = PgServer()
try:
    s.start()
    s.execute("CREATE TABLE t (v int)")
    s.execute("INSERT INTO t VALUES (7)")
    pid = s.postmaster_pid()
    s.kill9()
    state = _proc_state(pid)
    s.start()
    print(json.dumps({{"state": state, "rows": s.execute("SELECT v FROM t")}}))
finally:
    s.cleanup()
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"state": "Z", "rows": [[7]]}


@pytest.mark.parametrize("how", ["running", "killed"])
def test_cleanup_leaves_no_process_segment_or_directory(how):
    _need_pg()
    import psycopg
    from pgserver import PgServer, _alive, _shm_attached
    from realsshd import child_pids

    server = PgServer()
    try:
        server.start()
        conn = psycopg.connect(server.url())  # a backend process too
        pid = server.postmaster_pid()
        assert pid is not None
        procs = [pid, *child_pids(pid)]
        shmid = server._shmid()
        assert shmid is not None and _shm_attached(shmid)
        assert _running_with(str(server.data))
        if how == "killed":
            server.kill9()  # a test that ends on a crash, without a start
    finally:
        server.cleanup()
    conn.close()
    assert len(procs) >= 3
    assert not [p for p in procs if _alive(p)]
    assert _running_with(str(server.dir)) == []
    assert not server.dir.exists()
    assert _shm_attached(shmid) is None  # the shared memory segment is gone too
