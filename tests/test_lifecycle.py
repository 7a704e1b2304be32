"""The daemon under a stand-in for systemd: a real process and a real notify socket."""

from __future__ import annotations

import itertools
import signal
import time

from conftest import NotifySocket


def test_ready_only_after_store_and_socket_exist(daemon_factory, notify_socket: NotifySocket):
    d = daemon_factory(notify=notify_socket)
    msg = notify_socket.wait_for("READY", "1")
    # READY=1 means the store is open and the control socket answers.
    assert (d.state_dir / "sshmonitor.db").exists()
    assert d.socket_path.exists()
    assert "STATUS" in msg
    st = d.cli("status", "--socket", str(d.socket_path))
    assert st.returncode == 0, st.stderr
    assert "running, pid" in st.stdout
    assert f"pid {d.proc.pid}" in st.stdout


def test_watchdog_pings_at_half_interval(daemon_factory, notify_socket: NotifySocket):
    # 400 ms watchdog -> a ping every ~200 ms.
    daemon_factory(notify=notify_socket, env={"WATCHDOG_USEC": "400000"})
    notify_socket.wait_for("READY", "1")
    start = len(notify_socket.messages)
    first = notify_socket.wait_for("WATCHDOG", "1", after=start)
    assert first == {"WATCHDOG": "1"}
    times = []
    idx = notify_socket.last_index
    for _ in range(4):
        notify_socket.wait_for("WATCHDOG", "1", after=idx + 1, timeout=3)
        idx = notify_socket.last_index
        times.append(notify_socket.messages[idx][0])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.1 < g < 0.6 for g in gaps), gaps


def test_no_watchdog_without_watchdog_usec(daemon_factory, notify_socket: NotifySocket):
    daemon_factory(notify=notify_socket)
    notify_socket.wait_for("READY", "1")
    time.sleep(1.0)
    notify_socket._drain(0.1)
    assert not any("WATCHDOG" in m for _, m in notify_socket.messages)


def test_watchdog_for_another_pid_is_ignored(daemon_factory, notify_socket: NotifySocket):
    daemon_factory(notify=notify_socket, env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    notify_socket.wait_for("READY", "1")
    time.sleep(0.8)
    notify_socket._drain(0.1)
    assert not any("WATCHDOG" in m for _, m in notify_socket.messages)


def test_bad_reload_keeps_old_config_then_good_reload_applies(
    daemon_factory, notify_socket: NotifySocket
):
    d = daemon_factory("log: {level: info}\n", notify=notify_socket)
    notify_socket.wait_for("READY", "1")
    n = len(notify_socket.messages)

    d.write_config(
        "log: {level: info}\nnotify:\n  channels:\n    - type: log\n"
        "    - {type: smtp, port: seventy, sender: a@b.c, to: [x@y.z]}\n"
    )
    d.signal(signal.SIGHUP)
    msg = notify_socket.wait_for("RELOADING", "1", after=n)
    assert int(msg["MONOTONIC_USEC"]) > 0
    notify_socket.wait_for("READY", "1", after=notify_socket.last_index + 1)
    text = d.wait_log("config reload failed; keeping the running config")
    assert "key=notify.channels[1].port" in text
    assert "expected an integer" in text
    assert d.proc.poll() is None
    st = d.cli("status", "--socket", str(d.socket_path))
    assert st.returncode == 0
    assert "LAST RELOAD FAILED" in st.stdout
    assert "notify.channels[1].port" in st.stdout
    assert "log_level" not in st.stdout
    js = d.cli("status", "--socket", str(d.socket_path), "--json")
    assert '"log_level": "info"' in js.stdout

    n = len(notify_socket.messages)
    d.write_config("log: {level: debug}\n")
    d.signal(signal.SIGHUP)
    notify_socket.wait_for("RELOADING", "1", after=n)
    notify_socket.wait_for("READY", "1", after=notify_socket.last_index + 1)
    d.wait_log("config reloaded")
    js = d.cli("status", "--socket", str(d.socket_path), "--json")
    assert '"log_level": "debug"' in js.stdout
    assert '"last_reload_error": null' in js.stdout


def test_sigterm_stops_cleanly(daemon_factory, notify_socket: NotifySocket):
    d = daemon_factory(notify=notify_socket)
    notify_socket.wait_for("READY", "1")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING", "1")
    assert d.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 10
    assert not d.socket_path.exists(), "control socket left behind"


def test_sigint_stops_cleanly(daemon_factory, notify_socket: NotifySocket):
    d = daemon_factory(notify=notify_socket)
    notify_socket.wait_for("READY", "1")
    d.signal(signal.SIGINT)
    assert d.proc.wait(timeout=10) == 0


def test_invalid_config_at_start_exits_78_naming_the_key(daemon_factory, notify_socket):
    d = daemon_factory("sources:\n  start_at: middle\n", notify=notify_socket)
    assert d.proc.wait(timeout=10) == 78
    text = d.log_text()
    assert "invalid config; not starting" in text
    assert "key=sources.start_at" in text


def test_second_daemon_on_same_socket_refuses(daemon_factory, notify_socket, tmp_path):
    d = daemon_factory(notify=notify_socket)
    notify_socket.wait_for("READY", "1")
    other_state = tmp_path / "other-state"
    d2 = daemon_factory(args=["--state-dir", str(other_state)])
    assert d2.proc.wait(timeout=10) == 1
    assert "another sshmonitord is already listening" in d2.log_text()
    assert d.proc.poll() is None


def test_status_not_running_message(tmp_path, capsys):
    from sshmonitord.cli import main

    sock = tmp_path / "nothing.sock"
    assert main(["status", "--socket", str(sock)]) == 1
    err = capsys.readouterr().err
    assert f"sshmonitord is not running (no control socket at {sock})" in err
