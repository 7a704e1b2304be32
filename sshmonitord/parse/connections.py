"""What the parser remembers of sshd's connections: a bounded memory per (host, sshd pid).

Parse functions are pure: one line in, one Event out. Some of sshd's lines name no address
although they belong to a connection whose address an earlier line of the same process stated
(``Disconnecting: Too many authentication failures [preauth]``, ``fatal: Read from socket
failed: Connection reset by peer [preauth]``, ``error: kex_exchange_identification: …`` after
a VERBOSE ``Connection from A port P``, ``fatal: no matching mac found: …``). And one message,
``Connection closed by A port P``, means a pre-authentication disconnect or the end of a
logged-in connection depending on what came before. :class:`Connections` is the small stateful
step after the parse functions that knows both. The :class:`~sshmonitord.parse.Parser` owns
one and applies it in ``Parser._finish`` to every sshd event, so ``replay`` (Parser.parse_text),
the daemon's file sources (Parser.parse_line) and its journal source (Parser.parse_fields) run
the same code and cannot disagree.

Rules (docs/events.md, "The connection memory"):

- A connection is (host, pid): every line sshd writes about one client connection before
  authentication comes from one process (the monitor relays its unprivileged child's lines,
  marked ``[preauth]``, under its own pid). It is never guessed across pids.
- The memory learns a connection's address from any line of that (host, pid) that states one,
  except the listener's lines about *other* processes' connections (``detail.listener``:
  ``drop connection``, ``Timeout before authentication for connection from A to B, pid = N``,
  ``session process N … killed by signal``, penalties), which instead end connection N.
- An address-less line of a remembered connection gets its address and port, marked
  ``detail.address_from = "connection"`` (:data:`ATTRIBUTED`: the kinds detection counts per
  address, and ``ignored``). Such a line often restates one the connection already stated
  with its address (older sshd's ``input_userauth_request: invalid user X`` after ``Invalid
  user X from A``; ``Disconnecting: Too many authentication failures`` after the failures):
  for detection it is a follow-up of its connection (``session``), never a new attempt
  (detect/engine.py counts a connection's follow-ups once).
- Pre-authentication only. A successful login (``Accepted …``) ends the pid's entry, and lines
  sshd writes only after authentication (``disconnect`` events, ``Starting session`` …) never
  create one: after login sshd's own address-less lines are not attacks, and the process that
  served a login can live for days, so a reused pid must never inherit its address.
- Ended: a line that ends the connection (a pre-auth disconnect, a protocol error, a
  MaxAuthTries line, a disconnect, PAM's session close, the listener reporting the process
  gone) starts a :data:`LINGER` of a few seconds for the dying process's last words; then the
  entry is gone. A pre-authentication connection lives at most LoginGraceTime (120 s by
  default), so an entry is also dropped :data:`PREAUTH_MAX_AGE` after the line that created
  it, whether or not its end was seen: a new connection on a reused pid cannot inherit an old
  address (pids are reused only after the whole pid space has been cycled through). A line
  stating a different address on a remembered pid starts a new connection.
- Bounded: at most :data:`MAX_CONNECTIONS` entries; when full, expired entries are swept and,
  if that is not enough, the oldest go.
- Logged in: the memory keeps the (host, address, port) of successful logins (bounded by
  :data:`MAX_LOGINS` and :data:`LOGIN_MAX_AGE`), because after login sshd's lines come from
  another process (the user's own, unprivileged sshd), whose pid the monitor names only at
  LogLevel VERBOSE (``User child is on pid N``). The TCP connection's address *and* port name
  it instead: ``Connection closed by A port P`` (no preamble, no ``[preauth]``) of a
  connection that logged in is a ``disconnect``; otherwise it stays a ``preauth_disconnect``
  (sshd <= 9.7 writes it during the banner exchange, after ``error: kex_exchange_identification:
  Connection closed by remote host``). A disconnect forgets the login.

Journal records a source only half trusts (``Line.audit_user``: written by a user's own
process) are classified with what the memory knows but never teach it anything.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..events import Event, Kind

# Seconds. LoginGraceTime defaults to 120 s; this leaves room for a server configured longer
# (a LoginGraceTime of more than 10 minutes only loses attribution, never misattributes).
PREAUTH_MAX_AGE = 600.0
# Seconds after a connection's end during which its process may still log (its last lines
# follow within milliseconds; a pid is not reused that fast).
LINGER = 10.0
MAX_CONNECTIONS = 16_384
MAX_LOGINS = 16_384
LOGIN_MAX_AGE = 30 * 86400.0

# Kinds that get a remembered address: what detection counts per address, and the lines that
# are recorded but never scored (so an operator sees whose they are).
ATTRIBUTED = frozenset(
    {
        Kind.IGNORED,
        Kind.AUTH_FAILURE,
        Kind.INVALID_USER,
        Kind.MAX_AUTH_EXCEEDED,
        Kind.NOT_ALLOWED,
        Kind.PREAUTH_DISCONNECT,
        Kind.PROTOCOL_ERROR,
    }
)
# Kinds that end a connection (its last line, or nearly: see LINGER).
ENDS = frozenset(
    {
        Kind.PREAUTH_DISCONNECT,
        Kind.PROTOCOL_ERROR,
        Kind.MAX_AUTH_EXCEEDED,
        Kind.DISCONNECT,
        Kind.SESSION_CLOSE,
    }
)
# What only a logged-in connection writes.
_POSTAUTH = frozenset({Kind.AUTH_SUCCESS, Kind.DISCONNECT, Kind.SESSION_OPEN, Kind.SESSION_CLOSE})
_ADDRESSLESS = ATTRIBUTED | ENDS
_CLOSED = ("closed", "reset")
# This is the hot path (every sshd line): Kind.X is a slow attribute lookup, a module global
# is not; times stay datetimes (comparing two is cheaper than datetime.timestamp()).
_PREAUTH_DISCONNECT = Kind.PREAUTH_DISCONNECT
_DISCONNECT = Kind.DISCONNECT
_AUTH_SUCCESS = Kind.AUTH_SUCCESS



class Connections:
    """The memory. :meth:`apply` one sshd event at a time, in log order."""

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        preauth_max_age: float = PREAUTH_MAX_AGE,
        linger: float = LINGER,
        max_logins: int = MAX_LOGINS,
        login_max_age: float = LOGIN_MAX_AGE,
    ) -> None:
        self.max_connections = max_connections
        self.max_logins = max_logins
        self._max_age = timedelta(seconds=preauth_max_age)
        self._linger = timedelta(seconds=linger)
        self._login_max_age = timedelta(seconds=login_max_age)
        # (host, pid) -> [ip, port, valid until (first seen + max age, or end + linger if
        # sooner), ended]
        self._conns: dict[tuple[str, int], list[Any]] = {}
        # (host, port) -> [[ip, when it logged in], ...]: keyed by the port, because an
        # ipaddress object hashes slowly and a client port is nearly unique on its own.
        self._logins: dict[tuple[str, int | None], list[list[Any]]] = {}
        # (host, ip) -> how many of those logins: for older sshd's close without a port.
        self._login_ips: dict[tuple[str, Any], int] = {}
        self.attributed = 0  # address-less lines given their connection's address

    def __len__(self) -> int:
        return len(self._conns)

    def apply(self, ev: Event, learn: bool = True) -> Event:
        """Attribute, classify and learn from one sshd event (in place; returned for ease).

        Every sshd line comes through here: the common cases cost a tuple, a dict lookup and
        a few comparisons; everything else sits behind them."""
        pid = ev.pid
        if pid is None:
            return ev
        kind = ev.kind
        ip = ev.ip
        conns = self._conns
        if ip is None:
            if kind in _ADDRESSLESS:
                key = (ev.host, pid)
                e = conns.get(key)
                if e is not None:
                    ts = ev.ts
                    if ts > e[2]:
                        if learn:
                            del conns[key]
                    elif learn:
                        if kind in ATTRIBUTED:
                            ev.ip = e[0]
                            ev.port = e[1]
                            ev.detail["address_from"] = "connection"
                            self.attributed += 1
                        if kind in ENDS and not e[3]:
                            self._end(e, ts)
            return ev
        d = ev.detail
        # Listener lines, post-auth lines and the ambiguous close are never [preauth]-tagged,
        # and most lines of an attack are: one test keeps them on the short path.
        if d and "preauth" not in d:
            if "listener" in d:
                # The listener speaks of another process's connection; if it ended, forget it.
                child = d.get("child_pid")
                if learn and child is not None:
                    conns.pop((ev.host, child), None)
                return ev
            if (
                kind is _PREAUTH_DISCONNECT
                and ev.user is None
                and d.get("what") in _CLOSED
                and ("postauth" in d or self._logged_in(ev.host, ip, ev.port))
            ):
                ev.kind = kind = _DISCONNECT
            if "postauth" in d and kind not in _POSTAUTH:
                # A line only a logged-in connection writes: never a pre-auth connection's.
                if learn:
                    conns.pop((ev.host, pid), None)
                return ev
        if not learn:
            return ev
        if kind in _POSTAUTH:
            conns.pop((ev.host, pid), None)
            if kind is _AUTH_SUCCESS:
                self._login(ev.host, ip, ev.port, ev.ts)
            elif kind is _DISCONNECT:
                self._logout(ev.host, ip, ev.port)
            return ev
        key = (ev.host, pid)
        e = conns.get(key)
        ts = ev.ts
        if e is not None and ts <= e[2] and (e[0] is ip or e[0] == ip):
            if e[1] is None:
                e[1] = ev.port
        else:
            if e is not None:
                del conns[key]  # re-inserted at the end: the dict's order is learning order
            elif len(conns) >= self.max_connections:
                self._sweep(ts)
            e = [ip, ev.port, ts + self._max_age, False]
            conns[key] = e
        if kind in ENDS and not e[3]:
            self._end(e, ts)
        return ev

    def _end(self, e: list[Any], ts: datetime) -> None:
        """The connection ended: its process may still log for a moment (LINGER)."""
        e[3] = True
        e[2] = min(e[2], ts + self._linger)

    def _logged_in(self, host: str, ip: Any, port: int | None) -> bool:
        if port is None:  # sshd <= 7.3: "Connection closed by A"
            return (host, ip) in self._login_ips
        seen = self._logins.get((host, port))
        return seen is not None and any(x[0] is ip or x[0] == ip for x in seen)

    def _login(self, host: str, ip: Any, port: int | None, ts: datetime) -> None:
        logins = self._logins
        key = (host, port)
        seen = logins.pop(key, None)  # re-inserted at the end: the dict's order is by time
        if seen is None:
            seen = []
            if len(logins) >= self.max_logins:
                old = ts - self._login_max_age
                for k in [k for k, v in logins.items() if v[-1][1] < old]:
                    self._drop_logins(k, logins.pop(k))
                if len(logins) >= self.max_logins:
                    for k in list(logins)[: len(logins) // 4 or 1]:
                        self._drop_logins(k, logins.pop(k))
        else:
            self._drop_logins(key, [x for x in seen if x[0] is ip or x[0] == ip])
            seen = [x for x in seen if not (x[0] is ip or x[0] == ip)]
        seen.append([ip, ts])
        logins[key] = seen
        ips = self._login_ips
        ips[(host, ip)] = ips.get((host, ip), 0) + 1

    def _logout(self, host: str, ip: Any, port: int | None) -> None:
        if port is None:
            return  # which of the address's logins ended is unknown: they age out
        seen = self._logins.get((host, port))
        if seen is not None:
            gone = [x for x in seen if x[0] is ip or x[0] == ip]
            if gone:
                self._drop_logins((host, port), gone)
                seen[:] = [x for x in seen if not (x[0] is ip or x[0] == ip)]
                if not seen:
                    del self._logins[(host, port)]

    def _drop_logins(self, key: tuple[str, int | None], gone: list[list[Any]]) -> None:
        ips = self._login_ips
        for x in gone:
            k = (key[0], x[0])
            n = ips.get(k, 0) - 1
            if n > 0:
                ips[k] = n
            else:
                ips.pop(k, None)

    def _sweep(self, ts: datetime) -> None:
        """Make room: drop what expired, then, if still nearly full, the oldest quarter (so a
        sweep happens at most every max/8 new connections)."""
        conns = self._conns
        for k in [k for k, e in conns.items() if ts > e[2]]:
            del conns[k]
        if len(conns) > self.max_connections * 7 // 8:
            for k in list(conns)[: len(conns) - self.max_connections * 3 // 4]:
                del conns[k]
