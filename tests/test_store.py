"""The SQLite store: WAL, migrations, refusing a newer schema."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from sshmonitord import store


def test_open_creates_db_in_wal_and_migrates(tmp_path):
    s = store.Store(tmp_path / "state")
    s.open()
    assert s.schema_version == store.MIGRATIONS[-1][0]
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.set_meta("k", "v1")
    s.set_meta("k", "v2")
    assert s.get_meta("k") == "v2"
    s.close()
    # Reopening is a no-op migration and keeps data.
    s2 = store.Store(tmp_path / "state")
    s2.open()
    assert s2.get_meta("k") == "v2"
    s2.close()


def test_readonly_reader_while_writer_open(tmp_path):
    s = store.Store(tmp_path)
    s.open()
    s.set_meta("a", "1")
    ro = store.connect(s.path, readonly=True)
    assert store.query(ro, "SELECT value FROM meta WHERE key='a'")[0][0] == "1"
    with pytest.raises(sqlite3.OperationalError):
        ro.execute("INSERT INTO meta VALUES ('b', '2')")
    ro.close()
    s.close()


def test_refuses_newer_schema(tmp_path):
    s = store.Store(tmp_path)
    s.open()
    s.conn.execute("PRAGMA user_version=9999")
    s.close()
    with pytest.raises(store.StoreError, match="newer than this sshmonitord knows"):
        store.Store(tmp_path).open()


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    conn = store.connect(tmp_path / "x.db")
    bad = [
        *store.MIGRATIONS,
        (len(store.MIGRATIONS) + 1, "broken", "CREATE TABLE ok_t(a); CREATE TABLE meta(x);"),
    ]
    monkeypatch.setattr(store.schema, "MIGRATIONS", bad)
    with pytest.raises(sqlite3.OperationalError):
        store.migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(bad) - 1
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "ok_t" not in names


def test_run_uses_one_thread(tmp_path):
    s = store.Store(tmp_path)
    s.open()

    async def go() -> set[str]:
        import threading

        names = await asyncio.gather(
            *[s.run(lambda _c: threading.current_thread().name) for _ in range(20)]
        )
        return set(names)

    assert len(asyncio.run(go())) == 1
    s.close()


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(store.StoreError, match="cannot open database"):
        store.Store(f / "sub").open()
