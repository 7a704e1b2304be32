"""OpenSSH's own server messages, read from its source, through the parser (issue #13 §3).

tests/data/openssh/server-messages.tsv is the ground truth: every log call of openssh-portable's
server side (V_10_5_P1, plus older releases' formats) whose message names the client address,
instantiated with realistic values, and the kind, address and user the parser must give it.
Its header explains the columns. Each row is fed under both ``sshd[PID]:`` and
``sshd-session[PID]:``:

- ``conn`` rows carry no address: they are fed after an earlier line of the same pid that
  states it, and must be attributed to it (never across pids);
- ``ctx`` rows mean one thing after a login on the connection and another without one;
- rows naming attacker-controlled text are fed again with that text replaced by strings that
  look like another address: the address must stay the one in sshd's fixed position.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pytest

from sshmonitord.events import Event, IPAddress, Kind
from sshmonitord.parse import Parser

CORPUS = Path(__file__).parent / "data" / "openssh" / "server-messages.tsv"
COLUMNS = (
    "id",
    "source",
    "level",
    "preauth",
    "message",
    "kind",
    "address",
    "user",
    "context",
    "kind_after_login",
    "attacker",
    "note",
)
PROGRAMS = ("sshd", "sshd-session")
PID = 1234
OTHER_PID = 999
CHILD_PID = 1240  # the post-auth child of PID: sshd-session forks it after the login

# What an earlier line of the connection (same pid) says, for rows that omit the address.
CONN_ADDRESS = "198.51.100.23"
CONN_PRIMERS = {
    # LogLevel VERBOSE: sshd-session's first line for every connection.
    "verbose": f"Connection from {CONN_ADDRESS} port 51234 on 192.0.2.254 port 22",
    # Default level: what a connection states before giving up or being cut off.
    "info": f"Failed password for invalid user oracle from {CONN_ADDRESS} port 51234 ssh2",
}
# A banner-exchange dropout: what precedes "Connection closed by A port P" without a login.
KEX_ERROR = "error: kex_exchange_identification: Connection closed by remote host"

# Attacker-controlled text is replaced by these; neither address may ever come out.
FORBIDDEN = {ipaddress.ip_address("203.0.113.66"), ipaddress.ip_address("2001:db8:bad::66")}
PAYLOADS = {
    "from-port-ssh2": "x from 203.0.113.66 port 22 ssh2",
    "addr-port": "203.0.113.66 port 22",
    "invalid-user": "invalid user x 203.0.113.66 port 22",
    "keyinfo": "x from 203.0.113.66 port 22 ssh2: RSA SHA256:AAAA",
    "brackets": "[203.0.113.66]:22 on [192.0.2.254]:22",
    "parens": "x (203.0.113.66)",
    "ipv6": "x from 2001:db8:bad::66 port 22 ssh2",
}
# A client's PTR record reaches sshd through the resolver, which passes host-name characters
# only: an address-looking name is what an attacker can put there. sshd itself never logs a
# numeric name as the client's host name (it logs "Nasty PTR record" and uses the address), so
# a raw PTR ("ptr:") gets both, a name sshd resolved and checked ("dns:") only the second.
PTR_ONLY_PAYLOAD = "dns-address"
DNS_PAYLOADS = {
    PTR_ONLY_PAYLOAD: "203.0.113.66",
    "dns-name": "203.0.113.66.example.net",
}


@dataclass(frozen=True)
class Row:
    id: str
    source: str
    level: str
    preauth: bool
    message: str
    kind: Kind
    address: IPAddress | None
    user: str | None
    check_user: bool
    context: str  # "-", "conn" or "ctx"
    kind_after_login: Kind | None
    attacker: tuple[str, ...]  # free text the client sends
    attacker_dns: tuple[str, ...]  # host names sshd resolved and checked
    attacker_ptr: tuple[str, ...]  # raw PTR names
    note: str

    @property
    def port(self) -> int:
        m = re.search(r" port (\d+)", self.message)
        return int(m.group(1)) if m else 51234


def _attacker(cell: str, prefix: str) -> tuple[str, ...]:
    """The attacker texts of one sort: free text (no prefix), "dns:" or "ptr:" names."""
    out = []
    for item in filter(None, cell.split("|")):
        sort = item[:4] if item[:4] in ("dns:", "ptr:") else ""
        if sort == prefix:
            out.append(item[len(sort) :])
    return tuple(out)


def _load() -> list[Row]:
    rows: list[Row] = []
    header_seen = False
    for n, text in enumerate(CORPUS.read_text(encoding="utf-8").splitlines(), 1):
        if not text or text.startswith("#"):
            continue
        cells = text.split("\t")
        if not header_seen:
            assert tuple(cells) == COLUMNS, f"{CORPUS.name}:{n}: unexpected header"
            header_seen = True
            continue
        assert len(cells) == len(COLUMNS), f"{CORPUS.name}:{n}: {len(cells)} cells"
        c = dict(zip(COLUMNS, cells, strict=True))
        user = {"-": None, "<empty>": "", "*": None}.get(c["user"], c["user"])
        rows.append(
            Row(
                id=c["id"],
                source=c["source"],
                level=c["level"],
                preauth=c["preauth"] == "yes",
                message=c["message"],
                kind=Kind(c["kind"]),
                address=None if c["address"] == "-" else ipaddress.ip_address(c["address"]),
                user=user,
                check_user=c["user"] != "*",
                context=c["context"],
                kind_after_login=(
                    None if c["kind_after_login"] == "-" else Kind(c["kind_after_login"])
                ),
                attacker=_attacker(c["attacker"], ""),
                attacker_dns=_attacker(c["attacker"], "dns:"),
                attacker_ptr=_attacker(c["attacker"], "ptr:"),
                note=c["note"],
            )
        )
    return rows


ROWS = _load()


def _params(rows: list[Row]) -> list[object]:
    return [pytest.param(r, prog, id=f"{r.id}@{prog}") for r in rows for prog in PROGRAMS]


def _line(prog: str, msg: str, pid: int = PID, second: int = 56) -> str:
    return f"Jun  7 01:10:{second:02d} web1 {prog}[{pid}]: {msg}"


def _feed(*lines: str) -> Event | None:
    """Parse the lines in order with one Parser; the last line's event."""
    parser = Parser(zone=UTC)
    ev = None
    for text in lines:
        ev = parser.parse_text(text)
    return ev


def _check(row: Row, ev: Event | None, kind: Kind, address: IPAddress | None) -> None:
    assert ev is not None, f"no event for {row.message!r}"
    want = (kind, address, row.user if row.check_user else None)
    got = (ev.kind, ev.ip, ev.user if row.check_user else None)
    assert got == want, (
        f"{row.message!r}: expected kind/address/user {want}, got {got} ({row.note})"
    )


# ------------------------------------------------------------------------------- the corpus


def test_corpus_is_consistent() -> None:
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for r in ROWS:
        assert r.context in ("-", "conn", "ctx"), r.id
        assert r.preauth == r.message.endswith(" [preauth]"), r.id
        if r.context == "conn":
            assert r.address is None, f"{r.id}: a conn row carries no address itself"
        assert (r.context == "ctx") == (r.kind_after_login is not None), r.id
        for text in r.attacker + r.attacker_dns + r.attacker_ptr:
            assert text in r.message, f"{r.id}: attacker text {text!r} not in the message"


# ------------------------------------------------------------------------------- one line


@pytest.mark.parametrize(("row", "prog"), _params([r for r in ROWS if r.context != "conn"]))
def test_message(row: Row, prog: str) -> None:
    """The line alone: its kind, the address in sshd's fixed position, the user."""
    _check(row, _feed(_line(prog, row.message)), row.kind, row.address)


@pytest.mark.parametrize("primer", sorted(CONN_PRIMERS))
@pytest.mark.parametrize(("row", "prog"), _params([r for r in ROWS if r.context == "conn"]))
def test_message_attributed_to_its_connection(row: Row, prog: str, primer: str) -> None:
    """An address-less line gets the address an earlier line of the same pid stated."""
    ev = _feed(_line(prog, CONN_PRIMERS[primer], second=55), _line(prog, row.message))
    _check(row, ev, row.kind, ipaddress.ip_address(CONN_ADDRESS))


@pytest.mark.parametrize(("row", "prog"), _params([r for r in ROWS if r.context == "conn"]))
def test_no_attribution_across_pids(row: Row, prog: str) -> None:
    """Another pid's connection says nothing about this one: no address is guessed."""
    ev = _feed(
        _line(prog, CONN_PRIMERS["verbose"], pid=OTHER_PID, second=55), _line(prog, row.message)
    )
    _check(row, ev, row.kind, None)


# ------------------------------------------------------------------------------- context


CTX = [r for r in ROWS if r.context == "ctx"]


def _accepted(row: Row) -> str:
    return f"Accepted password for alice from {row.address} port {row.port} ssh2"


@pytest.mark.parametrize(("row", "prog"), _params(CTX))
def test_ctx_after_login(row: Row, prog: str) -> None:
    """After a login on the same pid the line ends an authenticated connection."""
    ev = _feed(_line(prog, _accepted(row), second=50), _line(prog, row.message))
    assert row.kind_after_login is not None
    _check(row, ev, row.kind_after_login, row.address)


@pytest.mark.parametrize(("row", "prog"), _params(CTX))
def test_ctx_after_banner_exchange_error(row: Row, prog: str) -> None:
    """After a banner-exchange error on the same pid it is a pre-auth dropout."""
    ev = _feed(_line(prog, KEX_ERROR, second=55), _line(prog, row.message))
    _check(row, ev, row.kind, row.address)


@pytest.mark.parametrize(("row", "prog"), _params(CTX))
def test_ctx_after_login_on_the_post_auth_child(row: Row, prog: str) -> None:
    """As real logs have it: the monitor logs "Accepted" under its pid, the post-auth child
    (another pid, announced only at VERBOSE) logs the end, with the same address and port."""
    ev = _feed(_line(prog, _accepted(row), second=50), _line(prog, row.message, pid=CHILD_PID))
    assert row.kind_after_login is not None
    _check(row, ev, row.kind_after_login, row.address)


# ------------------------------------------------------------------------------- injection


def _inject(texts: tuple[str, ...], msg: str, payload: str) -> str:
    for text in sorted(texts, key=len, reverse=True):  # "oracle-cert" before "oracle"
        msg = msg.replace(text, payload)
    return msg


def _injections() -> list[object]:
    out: list[object] = []
    for r in ROWS:
        keys = sorted(PAYLOADS) if r.attacker else []
        if r.attacker_ptr:
            keys += sorted(DNS_PAYLOADS)
        elif r.attacker_dns:
            keys += sorted(set(DNS_PAYLOADS) - {PTR_ONLY_PAYLOAD})
        out += [
            pytest.param(r, prog, key, id=f"{r.id}@{prog}-{key}")
            for prog in PROGRAMS
            for key in keys
        ]
    return out


@pytest.mark.parametrize(("row", "prog", "payload"), _injections())
def test_injection_keeps_the_address(row: Row, prog: str, payload: str) -> None:
    """Client text that looks like another address never moves the address."""
    if payload in PAYLOADS:
        text = PAYLOADS[payload]
        msg = _inject(row.attacker, row.message, text)
    else:
        text = DNS_PAYLOADS[payload]
        names = row.attacker_ptr
        if payload != PTR_ONLY_PAYLOAD:
            names += row.attacker_dns
        msg = _inject(names, row.message, text)
    lines = [_line(prog, msg)]
    expected = row.address
    if row.context == "conn":
        lines.insert(0, _line(prog, CONN_PRIMERS["verbose"], second=55))
        expected = ipaddress.ip_address(CONN_ADDRESS)
    ev = _feed(*lines)
    assert ev is not None, f"no event for {msg!r}"
    assert ev.ip not in FORBIDDEN, f"{msg!r}: took the injected address {ev.ip}"
    # An event may drop an address it cannot tell apart (detail.ambiguous), never take another.
    assert ev.ip == expected or (ev.ip is None and ev.detail.get("ambiguous")), (
        f"{msg!r}: expected {expected}, got {ev.ip}"
    )
    assert ev.kind == row.kind, f"{msg!r}: expected {row.kind}, got {ev.kind}"
    if payload in PAYLOADS and row.check_user and row.user in row.attacker:
        assert ev.user == text, f"{msg!r}: expected user {text!r}, got {ev.user!r}"
