"""Two network namespaces of the test's own: a server ``srv`` and an attacker ``atk``.

Recipe: /work/shared/REAL-COMPONENTS.md ("Network namespaces", "nftables / ipset inside the
namespace"). What this module guarantees:

* **The machine's own network is never touched.** Every command runs as ``ip -n NAME ...`` or
  ``ip netns exec NAME ...``; the veth pair is created directly inside the two namespaces
  (``ip link add A netns srv type veth peer name B netns atk``), so it never exists in the
  root namespace, not even for a moment. Firewall tests run nft/iptables/ipset only inside
  ``srv``; clients run only inside ``atk``; nothing connects from the root namespace.
* **Unique names per run**: ``smn<pid>-<hex4>-srv`` / ``-atk``, veth ``sm<pid><hex4>s``/``a``
  (at most 15 characters). Namespaces left by a test process that was SIGKILLed (pid gone)
  are removed, with whatever still runs in them, the next time the fixture is used.
* **Guaranteed teardown**: every process started here is killed and reaped (they also get
  SIGKILL if the test process dies), then both namespaces are deleted — pass or fail.

Addresses (N random in 16..250, so 10.N.0.0/24 and fdNN::/64 differ from run to run)::

    srv  veth  10.N.0.1/24              fdNN::1/64
    atk  veth  10.N.0.2/24, 10.N.0.3/24  fdNN::2/64, fdNN::3/64     (IPv6 with nodad)

Reusable for end-to-end tests: start sshd or the daemon in ``srv`` with :meth:`popen_in`,
run ssh clients in ``atk`` with :meth:`run_in`, and firewall backends in ``srv`` with
``wrapper=pair.wrapper(pair.srv)``. Use the ``netns_pair`` fixture (``pytest_plugins =
["netns"]`` in the test module) or :class:`NetnsPair` as a context manager.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from conftest import need

IP = "ip"
NAME_RE = re.compile(r"^smn(\d+)-([0-9a-f]{4})-(srv|atk)$")
ECHO_PORT = 2222
PYTHON = sys.executable

# A dual-stack TCP echo server: one thread per connection, prints READY once listening.
ECHO_SERVER = r"""
import socket, sys, threading
s = socket.create_server(("::", int(sys.argv[1])), family=socket.AF_INET6, dualstack_ipv6=True)
print("READY", flush=True)
def serve(c):
    with c:
        while True:
            data = c.recv(65536)
            if not data:
                return
            c.sendall(data)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Connect from a chosen source address, send a line, expect it back: prints OK or FAIL.
CONNECT_CLIENT = r"""
import socket, sys
src, dst, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(timeout)
try:
    if src:
        s.bind((src, 0))
    s.connect((dst, port))
    s.sendall(b"ping\n")
    data = s.recv(100)
    print("OK" if data == b"ping\n" else "BAD %r" % data, flush=True)
except OSError as e:
    print("FAIL", type(e).__name__, e, flush=True)
"""

# A long-lived connection: connects, prints CONNECTED, then for each stdin line (a timeout
# in seconds) sends a line and waits for the echo: prints OK or FAIL.
SESSION_CLIENT = r"""
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
if src:
    s.bind((src, 0))
s.connect((dst, port))
print("CONNECTED", flush=True)
for line in sys.stdin:
    s.settimeout(float(line))
    try:
        s.sendall(b"x\n")
        print("OK" if s.recv(100) else "EOF", flush=True)
    except OSError as e:
        print("FAIL", type(e).__name__, flush=True)
"""


# ------------------------------------------------------------------------- process helpers


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child if the test process dies without cleaning up.
    (``ip netns exec`` execs the command, so the setting reaches it.)"""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0] not in ("Z", "X")


def stop(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate a child we started (its whole process group), then SIGKILL; always reap."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def run(
    argv: Sequence[str], *, timeout: float = 15.0, input: str | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run argv (no shell) in its own process group; on timeout kill the group and reap."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout}s: {argv}\n{out}\n{err}") from None
    res = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check and res.returncode != 0:
        raise AssertionError(f"{argv} failed ({res.returncode}):\n{out}\n{err}")
    return res


def read_line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The next stdout line of a text-mode child, or None on timeout / end of output."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            return line.rstrip("\n") if line else None


def wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = 10.0) -> str:
    """Read stdout lines until one contains ``needle``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = read_line(proc, deadline - time.monotonic())
        if line is None:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not printed within {timeout}s; got {seen}")


def list_netns() -> list[str]:
    out = run([IP, "netns", "list"], check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    res = run([IP, "netns", "pids", ns])
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def kill_netns_processes(ns: str) -> None:
    """SIGKILL what still runs inside one of *our* namespaces (bounded)."""
    for _ in range(5):
        pids = netns_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_stale() -> None:
    """Delete our namespaces whose creating test process is gone (SIGKILLed mid-test)."""
    for ns in list_netns():
        m = NAME_RE.match(ns)
        if m and not _pid_alive(int(m[1])):
            kill_netns_processes(ns)
            run([IP, "netns", "del", ns])


# ------------------------------------------------------------------------- the pair


class Session:
    """An established TCP connection from ``atk``, kept open by a client process."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def exchange(self, timeout: float = 1.0) -> bool:
        """Send one line and wait for the echo: True if it came back within ``timeout``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{timeout}\n")
        self.proc.stdin.flush()
        line = read_line(self.proc, timeout + 5)
        return line == "OK"

    def close(self) -> None:
        stop(self.proc)


class NetnsPair:
    def __init__(self) -> None:
        pid, tag = os.getpid(), secrets.token_hex(2)
        self.srv = f"smn{pid}-{tag}-srv"
        self.atk = f"smn{pid}-{tag}-atk"
        self.veth_srv = f"sm{pid}{tag}s"
        self.veth_atk = f"sm{pid}{tag}a"
        assert len(self.veth_srv) <= 15
        n = random.randint(16, 250)
        self.n = n
        self.srv4 = f"10.{n}.0.1"
        self.atk4 = (f"10.{n}.0.2", f"10.{n}.0.3")
        self.net4 = ipaddress.ip_network(f"10.{n}.0.0/24")
        self.net6 = ipaddress.ip_network(f"fd{n:02x}::/64")
        self.srv6 = f"fd{n:02x}::1"
        self.atk6 = (f"fd{n:02x}::2", f"fd{n:02x}::3")
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []
        self.echo_port: int | None = None

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> NetnsPair:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        try:
            for ns in (self.srv, self.atk):
                run([IP, "netns", "add", ns], check=True)
                self._created.append(ns)
            run(
                [IP, "link", "add", self.veth_srv, "netns", self.srv, "type", "veth",
                 "peer", "name", self.veth_atk, "netns", self.atk],
                check=True,
            )  # fmt: skip
            steps = [
                (self.srv, ["addr", "add", f"{self.srv4}/24", "dev", self.veth_srv]),
                (self.srv, ["addr", "add", f"{self.srv6}/64", "dev", self.veth_srv, "nodad"]),
                (self.srv, ["link", "set", "lo", "up"]),
                (self.srv, ["link", "set", self.veth_srv, "up"]),
                (self.atk, ["link", "set", "lo", "up"]),
                (self.atk, ["link", "set", self.veth_atk, "up"]),
            ]
            for a in self.atk4:
                steps.append((self.atk, ["addr", "add", f"{a}/24", "dev", self.veth_atk]))
            for a in self.atk6:
                steps.append((self.atk, ["addr", "add", f"{a}/64", "dev", self.veth_atk, "nodad"]))
            for ns, args in steps:
                run([IP, "-n", ns, *args], check=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill every process we started, then delete the namespaces. Never raises."""
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                stop(proc)
        self._procs.clear()
        for ns in self._created:
            with contextlib.suppress(Exception):
                kill_netns_processes(ns)
            with contextlib.suppress(Exception):
                run([IP, "netns", "del", ns])
        self._created.clear()

    # -------------------------------------------------------------- running things inside

    @staticmethod
    def wrapper(ns: str) -> list[str]:
        """The argv prefix that runs a command inside ``ns`` (a backend's ``wrapper``)."""
        return [IP, "netns", "exec", ns]

    def run_in(
        self, ns: str, argv: Sequence[str], *, timeout: float = 15.0, input: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        assert ns in (self.srv, self.atk), "only in the test's own namespaces"
        return run([*self.wrapper(ns), *argv], timeout=timeout, input=input, check=check)

    def nft_members(self, table: str, sets: Sequence[str] = ("banned4", "banned6")) -> set[str]:
        """What the daemon's nftables sets (``inet`` ``table``) in srv hold right now: single
        addresses bare, networks as ``addr/len``."""
        import json

        out: set[str] = set()
        for name in sets:
            res = self.run_in(self.srv, ["nft", "-j", "list", "set", "inet", table, name])
            if res.returncode != 0:
                continue
            for obj in json.loads(res.stdout)["nftables"]:
                for e in obj.get("set", {}).get("elem", []) or []:
                    v = e.get("elem", {}).get("val", e) if isinstance(e, dict) else e
                    if isinstance(v, dict) and "prefix" in v:
                        out.add(f"{v['prefix']['addr']}/{v['prefix']['len']}")
                    else:
                        out.add(str(v))
        return out

    def popen_in(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a background process inside ``ns``; it is killed and reaped at close()."""
        assert ns in (self.srv, self.atk), "only in the test's own namespaces"
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        proc = subprocess.Popen(
            [*self.wrapper(ns), *argv],
            start_new_session=True,
            preexec_fn=_die_with_parent,
            **kw,
        )
        self._procs.append(proc)
        return proc

    # -------------------------------------------------------------- traffic

    def start_echo_server(self, port: int = ECHO_PORT) -> subprocess.Popen[str]:
        """A TCP echo server in ``srv`` on every srv address (IPv4 and IPv6)."""
        proc = self.popen_in(self.srv, [PYTHON, "-c", ECHO_SERVER, str(port)])
        wait_line(proc, "READY", timeout=10)
        self.echo_port = port
        return proc

    def connect(
        self, src: str, dst: str | None = None, port: int | None = None, timeout: float = 1.0
    ) -> bool:
        """From ``atk``, bound to ``src``: connect, send a line, get it echoed back."""
        dst = dst or (self.srv6 if ":" in src else self.srv4)
        port = port or self.echo_port or ECHO_PORT
        res = self.run_in(
            self.atk, [PYTHON, "-c", CONNECT_CLIENT, src, dst, str(port), str(timeout)],
            timeout=timeout + 15,
        )  # fmt: skip
        return res.stdout.strip() == "OK"

    def open_session(self, src: str, dst: str | None = None, port: int | None = None) -> Session:
        """An established connection from ``atk`` (source ``src``) to the echo server."""
        dst = dst or (self.srv6 if ":" in src else self.srv4)
        port = port or self.echo_port or ECHO_PORT
        proc = self.popen_in(
            self.atk, [PYTHON, "-c", SESSION_CLIENT, src, dst, str(port)],
            stdin=subprocess.PIPE, bufsize=1,
        )  # fmt: skip
        wait_line(proc, "CONNECTED", timeout=10)
        return Session(proc)


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    """Poll ``pred`` until true or ``timeout`` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def need_netns() -> None:
    need(os.geteuid() == 0, "network namespaces need root")
    need(shutil.which(IP) is not None, "iproute2 (ip) is not installed")


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """A started :class:`NetnsPair`; always torn down (processes killed, namespaces deleted)."""
    need_netns()
    remove_stale()
    pair = NetnsPair()
    try:
        pair.start()
    except AssertionError as e:
        need(False, f"cannot create network namespaces here: {e}")
    try:
        yield pair
    finally:
        pair.close()
