"""The nftables backend's long-lived ``nft -j -i`` session under faults, with the real nft
inside a network namespace of the test's own (tests/netns.py; never the machine's firewall).

What each fault must leave: the next ban lands, at most one clear log line, no hang (every
call bounded by the backend's timeout), no zombie (a dead or killed session is reaped).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import need
from structlog.testing import capture_logs

from sshmonitord.respond import BackendError, NotSetUp
from sshmonitord.respond.nftables import NftBackend

if TYPE_CHECKING:
    from netns import NetnsPair

pytest_plugins = ["netns"]

ip = ipaddress.ip_network
Aio = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture
def aio() -> Iterator[Aio]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def backend(netns_pair: NetnsPair, aio: Aio) -> Iterator[NftBackend]:
    need(shutil.which("nft") is not None, "nft is not installed")
    b = NftBackend(wrapper=netns_pair.wrapper(netns_pair.srv), timeout=3.0)
    aio(b.setup())
    try:
        yield b
    finally:
        aio(b.close())


def gone(pid: int) -> bool:
    """The process has ended and been reaped (a zombie still has its /proc entry)."""
    return not Path(f"/proc/{pid}").exists()


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.real
def test_one_process_serves_many_bans(backend: NftBackend, aio: Aio) -> None:
    for i in range(20):
        aio(backend.ban([(ip(f"198.51.100.{i + 1}"), 600)]))
    aio(backend.unban([ip("198.51.100.1")]))
    assert len(aio(backend.list())) == 19
    assert backend.session.started == 1


@pytest.mark.real
def test_session_killed_9_next_ban_lands(
    backend: NftBackend, aio: Aio, caplog: pytest.LogCaptureFixture
) -> None:
    aio(backend.ban([(ip("198.51.100.1"), 600)]))
    pid = backend.session.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # Reaped by the loop's child watcher once the loop runs, before or at the next request.
    with capture_logs() as logs:
        t0 = time.monotonic()
        aio(backend.ban([(ip("198.51.100.2"), 600)]))
        took = time.monotonic() - t0
    assert took < 3.0
    assert set(aio(backend.list())) == {ip("198.51.100.1/32"), ip("198.51.100.2/32")}
    ended = [e for e in logs if e["event"] == "nft session ended; starting a new one"]
    assert len(ended) == 1 and ended[0]["log_level"] == "warning", logs
    assert ended[0]["pid"] == pid
    if ended[0]["status"] != -signal.SIGKILL:
        # Seen twice in CI (2026-12-07): something else in this pytest process reaped the
        # killed session before asyncio's child watcher thread did; asyncio then warns and
        # reports 255. The status is asyncio's report, which the backend only logs; that
        # the next ban lands, one line, a new session and no zombie are asserted regardless.
        # My unverified guess at the other reaper: a stale subprocess.Popen of an earlier
        # test (a transport collected after its loop closed) holding a reused pid, which
        # subprocess._cleanup() polls when the new session's Popen is created.
        unknown = f"Unknown child process pid {pid}"
        assert ended[0]["status"] == 255, ended
        assert any(unknown in r.getMessage() for r in caplog.records), caplog.records
    assert len(logs) == 1, logs
    assert backend.session.started == 2 and backend.session.pid != pid
    assert wait_gone(pid)


@pytest.mark.real
def test_session_hanging_times_out_then_recovers(backend: NftBackend, aio: Aio) -> None:
    aio(backend.list())
    pid = backend.session.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # stuck: reads nothing, answers nothing
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        aio(backend.ban([(ip("198.51.100.3"), 600)]))
    took = time.monotonic() - t0
    assert 2.5 < took < 6.0, took  # the backend's 3 s, once (no retry of a hang)
    assert "timed out" in str(err.value) and "killed after 3 s" in str(err.value)
    assert not isinstance(err.value, NotSetUp)
    assert wait_gone(pid)  # SIGKILL ends a stopped process too; reaped
    aio(backend.ban([(ip("198.51.100.3"), 600)]))
    assert set(aio(backend.list())) == {ip("198.51.100.3/32")}
    assert backend.session.started == 2


@pytest.mark.real
def test_table_deleted_behind_our_back(
    backend: NftBackend, netns_pair: NetnsPair, aio: Aio
) -> None:
    aio(backend.ban([(ip("198.51.100.4"), 600)]))
    netns_pair.run_in(netns_pair.srv, ["nft", "delete", "table", "inet", "sshmonitor"], check=True)
    with pytest.raises(NotSetUp):
        aio(backend.ban([(ip("198.51.100.5"), 600)]))
    aio(backend.setup())
    aio(backend.ban([(ip("198.51.100.5"), 600)]))
    assert set(aio(backend.list())) == {ip("198.51.100.5/32")}
    assert backend.session.started == 1  # an error answer is not a dead session


@pytest.mark.real
def test_failed_transaction_applies_nothing_and_session_stays(
    backend: NftBackend, aio: Aio
) -> None:
    aio(backend.ban([(ip("198.51.100.6"), 600)]))
    # One transaction whose second statement fails: the first must not be applied either.
    with pytest.raises(BackendError) as err:
        aio(
            backend._run(
                "add element inet sshmonitor banned4 { 198.51.100.7 timeout 60s }\n"
                "delete element inet sshmonitor banned4 { 198.51.100.99 }\n"
            )
        )
    assert err.value.returncode == 1 and "Error:" in err.value.stderr
    assert "sshmonitor-end-of-answer" not in err.value.stderr
    assert set(aio(backend.list())) == {ip("198.51.100.6/32")}
    assert backend.session.started == 1


@pytest.mark.real
def test_cancelled_request_kills_and_next_one_works(backend: NftBackend, aio: Aio) -> None:
    aio(backend.list())
    pid = backend.session.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)

    async def cancel_it() -> None:
        task = asyncio.create_task(backend.ban([(ip("198.51.100.8"), 600)]))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    aio(cancel_it())
    assert wait_gone(pid)
    aio(backend.ban([(ip("198.51.100.8"), 600)]))
    assert set(aio(backend.list())) == {ip("198.51.100.8/32")}


@pytest.mark.real
def test_close_and_teardown_end_the_session(backend: NftBackend, aio: Aio) -> None:
    aio(backend.list())
    pid = backend.session.pid
    assert pid is not None
    aio(backend.teardown())
    assert backend.session.pid is None and wait_gone(pid)
    aio(backend.close())  # twice is fine


def test_session_that_cannot_start_is_a_clear_error(aio: Aio) -> None:
    b = NftBackend(nft="/nonexistent/nft")
    with pytest.raises(BackendError) as err:
        aio(b.ban([(ip("198.51.100.9"), 600)]))
    assert err.value.returncode is None and "cannot run" in str(err.value)
    assert "/nonexistent/nft" in str(err.value)


@pytest.mark.real
def test_session_dying_at_once_is_one_error_not_a_loop(
    netns_pair: NetnsPair, aio: Aio
) -> None:
    """A wrapper that starts but whose nft dies at once (here: a missing binary inside the
    namespace) fails the request with its exit status and output, once."""
    b = NftBackend(wrapper=netns_pair.wrapper(netns_pair.srv), nft="/nonexistent/nft")
    with capture_logs() as logs, pytest.raises(BackendError) as err:
        aio(b.ban([(ip("198.51.100.10"), 600)]))
    assert err.value.returncode not in (None, 0)
    assert "No such file or directory" in err.value.stderr
    assert b.session.started == 1 and not logs
    aio(b.close())


@pytest.mark.real
def test_session_dead_and_its_replacement_dying_is_one_backend_error(
    backend: NftBackend, aio: Aio
) -> None:
    """The old session was killed and the new one cannot start (the binary went away):
    a BackendError, never an internal exception, and one warning."""
    aio(backend.list())
    pid = backend.session.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    backend.session.argv[backend.session.argv.index("nft")] = "/nonexistent/nft"
    with capture_logs() as logs, pytest.raises(BackendError) as err:
        aio(backend.ban([(ip("198.51.100.11"), 600)]))
    assert err.value.returncode not in (None, 0)
    assert "No such file or directory" in err.value.stderr
    assert [e["event"] for e in logs] == ["nft session ended; starting a new one"]
    assert wait_gone(pid)
