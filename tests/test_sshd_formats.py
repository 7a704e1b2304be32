"""sshd's messages from other platforms, older versions and OpenSSH 10.x (issue #13, section 3),
and the connection memory that gives address-less lines their connection's address.

Every wording here was taken from OpenSSH portable's source (auth.c, auth2.c, auth-pam.c,
monitor.c, packet.c, kex.c, serverloop.c, sshd.c, srclimit.c, auth2-pubkeyfile.c of 6.6, 7.4,
9.2 and 10.5), from libwrap's refuse() for tcp wrappers, or from lines this machine's sshd
(Debian 12, OpenSSH 9.2) wrote in tests/test_real_sshd.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sshmonitord import config
from sshmonitord.detect.engine import Engine, History
from sshmonitord.events import Event, Kind, Line
from sshmonitord.parse import Parser
from sshmonitord.parse.connections import LINGER, PREAUTH_MAX_AGE, Connections

REF = datetime(2026, 11, 25, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 21, 0, 0, tzinfo=UTC)
A4 = "203.0.113.9"
A6 = "2001:db8::9"

# (message after "sshd[1234]: ", kind, ip, port, user, detail subset)
CASES: list[tuple[str, Kind, str | None, int | None, str | None, dict[str, Any]]] = [
    # auth-pam.c: "PAM: %s for %s%.100s from %.100s", any PAM error text, any casing
    ("error: PAM: Authentication error for root from 203.0.113.9", Kind.AUTH_FAILURE, A4, None,
     "root", {"reason": "Authentication error"}),
    ("error: PAM: authentication error for root from 203.0.113.9", Kind.AUTH_FAILURE, A4, None,
     "root", {}),
    ("error: PAM: AUTHENTICATION FAILURE for alice from 203.0.113.9", Kind.AUTH_FAILURE, A4,
     None, "alice", {}),
    ("error: PAM: authentication failure for illegal user bob from 2001:db8::9",
     Kind.AUTH_FAILURE, A6, None, "bob", {"invalid_user": True}),
    ("PAM: User not known to the underlying authentication module for illegal user admin from "
     "203.0.113.9", Kind.AUTH_FAILURE, A4, None, "admin",
     {"invalid_user": True, "reason": "User not known to the underlying authentication module"}),
    ("error: PAM: User account has expired for carol from 203.0.113.9", Kind.AUTH_FAILURE, A4,
     None, "carol", {"reason": "User account has expired"}),
    ("error: PAM: Authentication failure for dave from host-9.example.net", Kind.AUTH_FAILURE,
     None, None, "dave", {"host": "host-9.example.net"}),
    # auth_log(): protocol 1 and hostbased
    ("Failed password for root from 203.0.113.9 port 4242 ssh1", Kind.AUTH_FAILURE, A4, 4242,
     "root", {"protocol": 1}),
    ("Failed rsa for invalid user x from 203.0.113.9 port 4242 ssh1", Kind.AUTH_FAILURE, A4,
     4242, "x", {"invalid_user": True}),
    ('Failed hostbased for alice from 203.0.113.9 port 4242 ssh2: ED25519 SHA256:abcDEF, client'
     ' user "alice", client host "ws1.example.net"', Kind.AUTH_FAILURE, A4, 4242, "alice",
     {"client_user": "alice", "client_host": "ws1.example.net", "key_type": "ED25519"}),
    ("Failed hostbased for alice from 203.0.113.9 port 4242 ssh2: RSA SHA256:abcDEF",
     Kind.AUTH_FAILURE, A4, 4242, "alice", {"key_type": "RSA"}),
    ("Partial publickey for alice from 203.0.113.9 port 4242 ssh2: ED25519 SHA256:abcDEF",
     Kind.IGNORED, A4, 4242, "alice", {}),
    # allowed_user()
    ("User bob from 203.0.113.9 not allowed because a group is listed in DenyGroups",
     Kind.NOT_ALLOWED, A4, None, "bob", {"reason": "a group is listed in DenyGroups"}),
    ("User bob from 2001:db8::9 not allowed because none of user's groups are listed in "
     "AllowGroups", Kind.NOT_ALLOWED, A6, None, "bob",
     {"reason": "none of user's groups are listed in AllowGroups"}),
    ("User bob not allowed because /etc/nologin exists", Kind.NOT_ALLOWED, None, None, "bob", {}),
    # tcp wrappers
    ("refused connect from host-9.example.net (203.0.113.9)", Kind.NOT_ALLOWED, A4, None, None,
     {"reason": "tcp_wrappers"}),
    ("refused connect from 2001:db8::9 (2001:db8::9)", Kind.NOT_ALLOWED, A6, None, None, {}),
    ("refused connect from 203.0.113.9", Kind.NOT_ALLOWED, A4, None, None, {}),
    # ssh_packet_disconnect(): "Disconnecting <preamble>A port P: <reason>"
    ("Disconnecting invalid user bob 203.0.113.9 port 4242: Change of username or service not "
     "allowed: (bob,ssh-connection) -> (alice,ssh-connection) [preauth]", Kind.PROTOCOL_ERROR,
     A4, 4242, "bob", {"invalid_user": True, "preauth": True}),
    ("Disconnecting invalid user bob 203.0.113.9 port 4242: Change of username or service not "
     "allowed [preauth]", Kind.PROTOCOL_ERROR, A4, 4242, "bob", {}),
    ("Disconnecting 203.0.113.9 port 4242: strict KEX violation: unexpected packet type 2 "
     "(seqnr 1)", Kind.PROTOCOL_ERROR, A4, 4242, None,
     {"reason": "strict KEX violation: unexpected packet type 2 (seqnr 1)"}),
    ("Disconnecting 2001:db8::9 port 4242: kex_input_kexinit: unexpected KEXINIT [preauth]",
     Kind.PROTOCOL_ERROR, A6, 4242, None, {}),
    ("Disconnecting authenticating user root 203.0.113.9 port 4242: bad service request "
     "ssh-userauthx [preauth]", Kind.PROTOCOL_ERROR, A4, 4242, "root", {}),
    ("Disconnecting authenticating user root 203.0.113.9 port 4242: Too many authentication "
     "failures [preauth]", Kind.MAX_AUTH_EXCEEDED, A4, 4242, "root", {}),
    ("Disconnecting user alice 203.0.113.9 port 4242: Protocol error: you already have a pty.",
     Kind.DISCONNECT, A4, 4242, "alice", {}),
    # Received disconnect without a port
    ("Received disconnect from 203.0.113.9: 3: com.jcraft.jsch.JSchException: Auth fail "
     "[preauth]", Kind.PREAUTH_DISCONNECT, A4, None, None, {"code": 3}),
    ("Received disconnect from 2001:db8::9: 3: com.jcraft.jsch.JSchException: Auth fail "
     "[preauth]", Kind.PREAUTH_DISCONNECT, A6, None, None, {"code": 3}),
    # sshd.c drop_connection(), every reason
    ("drop connection #4 from [203.0.113.9]:4242 on [192.0.2.1]:22 penalty: failed "
     "authentication", Kind.PENALTY, A4, 4242, None, {"reason": "failed authentication"}),
    ("drop connection #4 from [2001:db8::9]:4242 on [2001:db8::1]:22 penalty: connection "
     "prohibited by RefuseConnection", Kind.PENALTY, A6, 4242, None, {}),
    ("drop connection #11 from [203.0.113.9]:4242 on [192.0.2.1]:22 past Maxstartups",
     Kind.IGNORED, A4, 4242, None, {"reason": "past Maxstartups"}),
    ("drop connection #11 from [203.0.113.9]:4242 on [192.0.2.1]:22 Maxstartups",
     Kind.IGNORED, A4, 4242, None, {"reason": "Maxstartups"}),
    ("drop connection #0 from [203.0.113.9]:4242 on [192.0.2.1]:22 too many penalised addresses",
     Kind.IGNORED, A4, 4242, None, {"reason": "too many penalised addresses"}),
    ("drop connection #0 from [203.0.113.9]:4242 on [192.0.2.1]:22 PerSourcePenalties",
     Kind.IGNORED, A4, 4242, None, {}),
    # monitor.c, RefuseConnection
    ("administratively prohibited connection for alice from 203.0.113.9 port 4242",
     Kind.NOT_ALLOWED, A4, 4242, "alice", {"reason": "RefuseConnection"}),
    ("administratively prohibited connection for invalid user zz from 2001:db8::9 port 4242",
     Kind.NOT_ALLOWED, A6, 4242, "zz", {"invalid_user": True}),
    # kex.c
    ("probed from 203.0.113.9 port 4242 with SSH-2.0-probe-x.  Don't panic.",
     Kind.PROTOCOL_ERROR, A4, 4242, None, {"what": "probed"}),
    ("scanned from 2001:db8::9 port 4242 with SSH-2.0-ScannerX.  Don't panic.",
     Kind.PROTOCOL_ERROR, A6, 4242, None, {"what": "scanned"}),
    ("probed from 203.0.113.9 with SSH-2.0-probe-x.  Don't panic.", Kind.PROTOCOL_ERROR, A4,
     None, None, {}),
    ("error: Bad remote protocol version identification: 'GET / HTTP/1.1'",
     Kind.PROTOCOL_ERROR, None, None, None, {"reason": "bad protocol version"}),
    # sshpkt_fatal()'s general form, before and after authentication
    ("ssh_dispatch_run_fatal: Connection from 203.0.113.9 port 4242: message authentication "
     "code incorrect [preauth]", Kind.PROTOCOL_ERROR, A4, 4242, None, {}),
    ("ssh_packet_read_poll2: Connection from invalid user x 203.0.113.9 port 4242: Connection "
     "corrupted [preauth]", Kind.PROTOCOL_ERROR, A4, 4242, "x", {}),
    ("banner exchange: Connection from 2001:db8::9 port 4242: invalid format",
     Kind.PROTOCOL_ERROR, A6, 4242, None, {}),
    ("server_input_global_request: parse packet: Connection from user alice 203.0.113.9 port "
     "4242: incomplete message", Kind.DISCONNECT, A4, 4242, "alice", {}),
    ("fatal: ssh_dispatch_run_fatal: Connection from 203.0.113.9 port 4242: incomplete message "
     "[preauth]", Kind.PROTOCOL_ERROR, A4, 4242, None, {}),
    ("Connection from 203.0.113.9 port 4242 timed out [preauth]", Kind.PREAUTH_DISCONNECT, A4,
     4242, None, {}),
    # sshd.c child_reap(): the listener on a crashed per-connection process
    ("error: session process 4321 for connection from 203.0.113.9 to 192.0.2.1 killed by signal"
     " 11", Kind.PROTOCOL_ERROR, A4, None, None, {"child_pid": 4321, "listener": True}),
    ("session process 4321 for connection from 2001:db8::9 to 2001:db8::1 killed by signal 6 "
     "(early)", Kind.PROTOCOL_ERROR, A6, None, None, {"reason": "killed by signal 6"}),
    ("error: session process 4321 for connection from 203.0.113.9 to 192.0.2.1 terminated "
     "abnormally, status=0x86 (sending config)", Kind.PROTOCOL_ERROR, A4, None, None, {}),
    ("Session process 4321 unpriv child crash for connection from 203.0.113.9 to 192.0.2.1",
     Kind.PROTOCOL_ERROR, A4, None, None, {"reason": "crash"}),
    ("Timeout before authentication for connection from 203.0.113.9 to 192.0.2.1, pid = 4321 "
     "(early)", Kind.PREAUTH_DISCONNECT, A4, None, None, {"child_pid": 4321}),
    # auth2-pubkeyfile.c (10.x with the key file and required=) and auth-options.c (7.x)
    ("/home/alice/.ssh/authorized_keys:3: Authentication tried for alice with correct key but "
     "not from a permitted host (host=host-9.example.net, ip=203.0.113.9, required=10.0.0.0/8)."
     , Kind.AUTH_FAILURE, A4, None, "alice",
     {"reason": "key not from a permitted host", "key_file": "/home/alice/.ssh/authorized_keys:3"}),
    ("Authentication tried for alice with correct key but not from a permitted host "
     "(host=2001:db8::9, ip=2001:db8::9).", Kind.AUTH_FAILURE, A6, None, "alice", {}),
    ("/home/alice/.ssh/authorized_keys:1: Authentication tried for alice with valid certificate "
     "but not from a permitted source address (203.0.113.9).", Kind.AUTH_FAILURE, A4, None,
     "alice", {"reason": "certificate not from a permitted source address"}),
    # after login (serverloop.c): the user's own sshd process
    ("Timeout, client not responding from user alice 203.0.113.9 port 4242", Kind.DISCONNECT,
     A4, 4242, "alice", {"reason": "client not responding"}),
    ("Timeout, client not responding.", Kind.DISCONNECT, None, None, None, {}),
    ("terminating inactive connection from user alice 2001:db8::9 port 4242", Kind.DISCONNECT,
     A6, 4242, "alice", {"reason": "inactive"}),
    ("Read error from remote host 203.0.113.9 port 4242: Connection reset by peer",
     Kind.DISCONNECT, A4, 4242, None, {"reason": "Connection reset by peer"}),
    ("Connection closed by user alice 203.0.113.9 port 4242", Kind.DISCONNECT, A4, 4242,
     "alice", {}),
    # without an earlier line (no login seen): a pre-authentication close
    ("Connection closed by 203.0.113.9 port 4242", Kind.PREAUTH_DISCONNECT, A4, 4242, None, {}),
    # address-less lines of older sshd: recognised (the connection memory may add the address)
    ("Disconnecting: Too many authentication failures [preauth]", Kind.MAX_AUTH_EXCEEDED, None,
     None, None, {}),
    ("Disconnecting: Too many authentication failures for root [preauth]",
     Kind.MAX_AUTH_EXCEEDED, None, None, "root", {}),
    ("fatal: Read from socket failed: Connection reset by peer [preauth]",
     Kind.PREAUTH_DISCONNECT, None, None, None, {}),
    ("error: kex_exchange_identification: read: Connection reset by peer", Kind.PROTOCOL_ERROR,
     None, None, None, {}),
    ("fatal: Unable to negotiate a key exchange method [preauth]", Kind.PROTOCOL_ERROR, None,
     None, None, {"reason": "Unable to negotiate a key exchange method"}),
    ("fatal: no matching mac found: client hmac-md5 server hmac-sha2-256 [preauth]",
     Kind.PROTOCOL_ERROR, None, None, None, {}),
    ("fatal: no matching cipher found: client aes128-cbc server aes256-gcm@openssh.com "
     "[preauth]", Kind.PROTOCOL_ERROR, None, None, None, {}),
    # formats current OpenSSH no longer writes, still supported
    ("Did not receive identification string from 203.0.113.9", Kind.PREAUTH_DISCONNECT, A4,
     None, None, {}),
    ("Did not receive identification string from 203.0.113.9 port 4242",
     Kind.PREAUTH_DISCONNECT, A4, 4242, None, {}),
    ("Bad protocol version identification 'GET / HTTP/1.1' from 203.0.113.9 port 4242",
     Kind.PROTOCOL_ERROR, A4, 4242, None, {}),
    ("Bad protocol version identification '\\026\\003\\001' from 203.0.113.9",
     Kind.PROTOCOL_ERROR, A4, None, None, {}),
    ("input_userauth_request: invalid user admin [preauth]", Kind.INVALID_USER, None, None,
     "admin", {}),
    ("Connection from 203.0.113.9 port 4242", Kind.IGNORED, A4, 4242, None, {}),
    ("Illegal user oracle from 203.0.113.9", Kind.INVALID_USER, A4, None, "oracle", {}),
    ("Failed password for illegal user oracle from 203.0.113.9 port 4242 ssh2",
     Kind.AUTH_FAILURE, A4, 4242, "oracle", {"invalid_user": True}),
    ("input_userauth_request: illegal user oracle", Kind.INVALID_USER, None, None, "oracle", {}),
    ("Accepted publickey for alice from 203.0.113.9 port 4242 ssh2: RSA "
     "8f:3c:a1:5e:22:9b:7d:10:6e:4f:c2:91:0a:77:b3:58", Kind.AUTH_SUCCESS, A4, 4242, "alice",
     {"key_type": "RSA"}),
    ("Disconnecting: Too many authentication failures for invalid user x [preauth]",
     Kind.MAX_AUTH_EXCEEDED, None, None, "invalid user x", {}),
    # PAM_MAXTRIES: MaxAuthTries' PAM twin (Linux-PAM's text has a " for " of its own)
    ("error: PAM: Have exhausted maximum number of retries for service for root from "
     "203.0.113.9", Kind.MAX_AUTH_EXCEEDED, A4, None, "root", {}),
    ("error: PAM: Maximum number of tries exceeded for root from 203.0.113.9",
     Kind.MAX_AUTH_EXCEEDED, A4, None, "root", {}),
    # refusals by configuration
    ("Disconnecting authenticating user alice 203.0.113.9 port 4242: no authentication methods "
     "enabled [preauth]", Kind.NOT_ALLOWED, A4, 4242, "alice", {}),
    ("fatal: Access denied for user alice by PAM account configuration [preauth]",
     Kind.NOT_ALLOWED, None, None, "alice", {}),
    ("error: Authentication key RSA SHA256:abc revoked by file /etc/ssh/revoked_keys",
     Kind.NOT_ALLOWED, None, None, None, {"reason": "revoked key"}),
    ("error: WARNING: revoked key for 203.0.113.9 attempted authentication", Kind.NOT_ALLOWED,
     A4, None, None, {"reason": "revoked host key"}),
    # the peer went away: no misbehaviour
    ("ssh_dispatch_run_fatal: Connection from 203.0.113.9 port 4242: Broken pipe [preauth]",
     Kind.PREAUTH_DISCONNECT, A4, 4242, None, {}),
    ("banner exchange: Connection from 203.0.113.9 port 4242: Connection reset by peer "
     "[preauth]", Kind.PREAUTH_DISCONNECT, A4, 4242, None, {}),
    # address-less protocol violations (the connection memory adds the address)
    ("error: kex_protocol_error: type 90 seq 3 [preauth]", Kind.PROTOCOL_ERROR, None, None, None,
     {}),
    ("dispatch_protocol_error: type 100 seq 4 [preauth]", Kind.PROTOCOL_ERROR, None, None, None,
     {}),
    ("Bad packet length 1349676916. [preauth]", Kind.PROTOCOL_ERROR, None, None, None, {}),
    ("Corrupted MAC on input. [preauth]", Kind.PROTOCOL_ERROR, None, None, None, {}),
    ("padding error: need 45 block 8 mod 5 [preauth]", Kind.PROTOCOL_ERROR, None, None, None,
     {}),
    ("error: RekeyLimit exceeded before authentication completed [preauth]",
     Kind.PROTOCOL_ERROR, None, None, None, {}),
    # hostbased's VERBOSE lines and the listener's dumps: recorded with the address
    ("userauth_hostbased mismatch: client sends evil.example.net, but we resolve 203.0.113.9 to "
     "h.example.net", Kind.IGNORED, A4, None, None, {"client_host": "evil.example.net"}),
    ("Accepted ECDSA public key SHA256:abc from jdoe@203.0.113.9", Kind.IGNORED, A4, None, None,
     {"client_user": "jdoe"}),
    ('Accepted certificate ID "build-7" signed by ED25519 CA SHA256:abc from jdoe@2001:db8::9',
     Kind.IGNORED, A6, None, None, {}),
    ("child 3: fd=14 pid=4242 connection from 203.0.113.9 to 192.0.2.1 (early)", Kind.IGNORED,
     A4, None, None, {"listener": True}),
    ("error: beginning MaxStartups throttling", Kind.IGNORED, None, None, None, {}),
    ("Received request from 203.0.113.9 port 4242 to connect to host 10.0.0.5 port 3306, but "
     "the request was denied.", Kind.IGNORED, A4, 4242, None, {"postauth": True}),
    ("Connection: user alice 203.0.113.9 port 4242 (pid 4243)", Kind.IGNORED, A4, 4242, None,
     {}),
    # Tru64 SIA
    ("error: Couldn't authenticate oracle from 203.0.113.9", Kind.AUTH_FAILURE, A4, None,
     "oracle", {}),
    ("Starting session: shell on pts/0 for alice from 203.0.113.9 port 4242 id 0", Kind.IGNORED,
     A4, 4242, "alice", {}),
]  # fmt: skip


def _check(prog: str, msg: str, kind: Kind, ip: str | None, port: int | None, user: str | None,
           detail: dict[str, Any]) -> None:  # fmt: skip
    p = Parser(reference=REF)
    ev = p.parse_text(f"Nov 24 21:45:48 web1 {prog}[1234]: {msg}")
    assert p.stats.errors == 0, p.stats.error_samples
    assert ev is not None
    got = (ev.kind, None if ev.ip is None else str(ev.ip), ev.port, ev.user)
    assert got == (kind, ip, port, user), (msg, ev)
    for k, v in detail.items():
        assert ev.detail.get(k) == v, (k, ev.detail)
    assert ev.session == "1234" and ev.program == prog


@pytest.mark.parametrize("prog", ["sshd", "sshd-session"])
@pytest.mark.parametrize(("msg", "kind", "ip", "port", "user", "detail"), CASES)
def test_message(prog, msg, kind, ip, port, user, detail):
    _check(prog, msg, kind, ip, port, user, detail)


def test_an_ambiguous_disconnect_reason_gives_no_address():
    # The reason quotes the client's user and service: with a fake tail in both, the line
    # reads two ways, and so it gets no address of its own.
    msg = (
        "Disconnecting invalid user x 6.6.6.6 port 1: y 203.0.113.9 port 4242: Change of username"
        " or service not allowed: (x 6.6.6.6 port 1: y,ssh-connection) -> (z,ssh-connection)"
    )
    ev = Parser(reference=REF).parse_text(f"Nov 24 21:45:48 web1 sshd[1234]: {msg}")
    assert ev.kind is Kind.PROTOCOL_ERROR and ev.ip is None and ev.detail["ambiguous"] is True


def test_a_permitted_host_line_with_two_readings_gives_no_address():
    msg = (
        "Authentication tried for alice with correct key but not from a permitted host "
        "(host=x, ip=6.6.6.6, required=y, ip=203.0.113.9, required=10.0.0.0/8)."
    )
    ev = Parser(reference=REF).parse_text(f"Nov 24 21:45:48 web1 sshd[1234]: {msg}")
    assert ev.kind is Kind.AUTH_FAILURE and ev.ip is None and ev.detail["ambiguous"] is True


def test_the_general_form_only_takes_sshd_s_own_tags():
    # An unknown message whose attacker text poses as "<what>: Connection from A port P: x"
    # (here: hostbased's mismatch warning quoting the client's host name) is no protocol error
    # from that address.
    msg = (
        "userauth_hostbased mismatch: client sends a: Connection from 6.6.6.6 port 1: x, but we "
        "resolve 203.0.113.9 to h"
    )
    ev = Parser(reference=REF).parse_text(f"Nov 24 21:45:48 web1 sshd[1234]: {msg}")
    assert ev.kind is Kind.IGNORED and str(ev.ip) == A4
    assert ev.detail["client_host"] == "a: Connection from 6.6.6.6 port 1: x"
    msg = "error: foo: Connection from 6.6.6.6 port 1: bar"
    ev = Parser(reference=REF).parse_text(f"Nov 24 21:45:48 web1 sshd[1234]: {msg}")
    assert ev.ip is None


def test_unknown_fatal_without_preauth_stays_unrecognized():
    ev = Parser(reference=REF).parse_text(
        "Nov 24 21:45:48 web1 sshd[1234]: fatal: mm_request_receive: read: Connection reset by peer"
    )
    assert ev.kind is Kind.UNRECOGNIZED


# ------------------------------------------------------------------------ the connection memory


class Log:
    """Lines of one host, each a second after the last unless told otherwise."""

    def __init__(self, parser: Parser | None = None) -> None:
        self.p = parser or Parser(reference=REF)
        self.t = T0

    def line(self, pid: int, msg: str, dt: float = 1.0, prog: str = "sshd") -> Event:
        self.t += timedelta(seconds=dt)
        stamp = self.t.strftime("%b %d %H:%M:%S")
        ev = self.p.parse_text(f"{stamp} web1 {prog}[{pid}]: {msg}")
        assert ev is not None and self.p.stats.errors == 0
        return ev

    def journal(self, pid: int, msg: str, dt: float = 1.0, audit_user: str | None = None) -> Event:
        self.t += timedelta(seconds=dt)
        fields = {
            "MESSAGE": msg,
            "_PID": str(pid),
            "_COMM": "sshd",
            "SYSLOG_IDENTIFIER": "sshd",
            "_HOSTNAME": "web1",
            "__REALTIME_TIMESTAMP": str(int(self.t.timestamp() * 1_000_000)),
        }
        line = Line(text=msg, source="journal", fields=fields, audit_user=audit_user)
        ev = self.p.parse_line(line)
        assert ev is not None
        return ev


def ip(ev: Event) -> str | None:
    return None if ev.ip is None else str(ev.ip)


@pytest.mark.parametrize(
    "msg",
    [
        "Disconnecting: Too many authentication failures [preauth]",
        "Disconnecting: Too many authentication failures for root [preauth]",
        "fatal: Read from socket failed: Connection reset by peer [preauth]",
        "error: kex_exchange_identification: read: Connection reset by peer",
        "fatal: Unable to negotiate a key exchange method [preauth]",
        "fatal: no matching mac found: client hmac-md5 server hmac-sha2-256 [preauth]",
        "error: Bad remote protocol version identification: 'GET / HTTP/1.1'",
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost= "
        " user=root",
        "User bob not allowed because account is locked",
    ],
)
def test_an_addressless_line_gets_its_connection_s_address(msg):
    log = Log()
    log.line(501, "Connection from 203.0.113.9 port 4242 on 192.0.2.1 port 22")
    ev = log.line(501, msg)
    assert ip(ev) == A4 and ev.port == 4242
    assert ev.detail["address_from"] == "connection"
    assert log.p.connections.attributed == 1


def test_attribution_from_any_line_that_states_the_address():
    log = Log()
    log.line(502, "Failed password for root from 2001:db8::9 port 4242 ssh2")
    ev = log.line(502, "Disconnecting: Too many authentication failures for root [preauth]")
    assert ip(ev) == A6 and ev.kind is Kind.MAX_AUTH_EXCEEDED


def test_never_across_pids():
    log = Log()
    log.line(503, "Invalid user admin from 203.0.113.9 port 4242")
    ev = log.line(504, "fatal: Read from socket failed: Connection reset by peer [preauth]")
    assert ev.ip is None and "address_from" not in ev.detail
    # ... nor across hosts with the same pid
    ev = log.p.parse_text(
        "Nov 24 21:00:05 other sshd[503]: fatal: Unable to negotiate a key exchange method "
        "[preauth]"
    )
    assert ev.ip is None


def test_the_old_invalid_user_restatement_is_attributed_and_marked():
    # "Invalid user X from A" came first; "input_userauth_request: invalid user X" is the same
    # attempt again: it gets A, marked, so detection can count it as the follow-up it is.
    log = Log()
    log.line(505, "Invalid user admin from 203.0.113.9")
    ev = log.line(505, "input_userauth_request: invalid user admin [preauth]")
    assert ev.kind is Kind.INVALID_USER and ip(ev) == A4
    assert ev.detail["address_from"] == "connection" and ev.session == "505"


def test_interleaved_connections_keep_their_own_addresses():
    log = Log()
    log.line(601, "Connection from 203.0.113.9 port 1001 on 192.0.2.1 port 22")
    log.line(602, "Connection from 2001:db8::9 port 1002 on 192.0.2.1 port 22")
    log.line(603, "Connection from 198.51.100.7 port 1003 on 192.0.2.1 port 22")
    a = log.line(602, "fatal: no matching mac found: client a server b [preauth]")
    b = log.line(601, "error: kex_exchange_identification: read: Connection reset by peer")
    c = log.line(603, "Disconnecting: Too many authentication failures [preauth]")
    assert [(ip(x), x.port) for x in (a, b, c)] == [
        (A6, 1002),
        (A4, 1001),
        ("198.51.100.7", 1003),
    ]


def test_a_reused_pid_does_not_inherit_an_ended_connection_s_address():
    log = Log()
    log.line(700, "Connection from 203.0.113.9 port 4242 on 192.0.2.1 port 22")
    log.line(700, "Connection closed by 203.0.113.9 port 4242 [preauth]")
    # Within a few seconds the dying process's last words still belong to it ...
    ev = log.line(700, "fatal: Write failed: Broken pipe [preauth]", dt=LINGER / 2)
    assert ip(ev) == A4
    # ... a new connection on the same pid later does not.
    ev = log.line(700, "error: kex_exchange_identification: read: Connection reset by peer", 60)
    assert ev.ip is None


def test_a_reused_pid_stating_another_address_is_a_new_connection():
    log = Log()
    log.line(701, "Invalid user a from 203.0.113.9 port 1")
    log.line(701, "Connection from 198.51.100.7 port 2 on 192.0.2.1 port 22")  # no end seen
    ev = log.line(701, "fatal: Read from socket failed: Connection reset by peer [preauth]")
    assert ip(ev) == "198.51.100.7" and ev.port == 2


def test_a_connection_whose_end_was_never_seen_expires():
    log = Log()
    log.line(702, "Invalid user a from 203.0.113.9 port 1")
    ev = log.line(702, "fatal: Read from socket failed: Connection reset by peer [preauth]",
                  dt=PREAUTH_MAX_AGE + 1)  # fmt: skip
    assert ev.ip is None
    assert len(log.p.connections) == 0  # and it is gone


def test_the_listener_ends_a_child_s_connection_and_teaches_nothing():
    log = Log()
    log.line(703, "Invalid user a from 203.0.113.9 port 1", prog="sshd-session")
    # The listener (pid 1) names pid 703's connection: it ended, and the listener's own pid
    # learns no address from it.
    log.line(1, "Timeout before authentication for connection from 203.0.113.9 to 192.0.2.1, "
                "pid = 703")  # fmt: skip
    log.line(1, "drop connection #3 from [198.51.100.7]:4 on [192.0.2.1]:22 past Maxstartups")
    ev = log.line(703, "fatal: Write failed: Broken pipe [preauth]", prog="sshd-session")
    assert ev.ip is None
    ev = log.line(1, "fatal: Read from socket failed: Connection reset by peer [preauth]")
    assert ev.ip is None
    log.line(704, "Invalid user b from 203.0.113.9 port 5", prog="sshd-session")
    log.line(1, "error: session process 704 for connection from 203.0.113.9 to 192.0.2.1 "
                "killed by signal 11")  # fmt: skip
    ev = log.line(704, "fatal: Write failed: Broken pipe [preauth]", prog="sshd-session")
    assert ev.ip is None


def test_nothing_is_attributed_after_login():
    # The monitor that logged a login lives on for the session; after login its pid's lines
    # are not a pre-authentication connection's, and a later reuse of the pid inherits nothing.
    log = Log()
    log.line(800, "Connection from 203.0.113.9 port 4242 on 192.0.2.1 port 22")
    log.line(800, "Accepted password for alice from 203.0.113.9 port 4242 ssh2")
    ev = log.line(800, "error: kex_exchange_identification: read: Connection reset by peer", 5)
    assert ev.ip is None


def test_the_memory_is_bounded():
    c = Connections(max_connections=100)
    p = Parser(reference=REF)
    p.connections = c
    log = Log(p)
    for i in range(1000):
        log.line(10_000 + i, f"Invalid user u{i} from 203.0.113.{i % 250} port {i + 1}", dt=0.01)
        assert len(c) <= 100
    # The most recent connections are still known.
    ev = log.line(10_999, "fatal: Write failed: Broken pipe [preauth]", dt=0.01)
    assert ev.ip is not None


def test_journal_records_share_the_memory():
    log = Log()
    log.journal(900, "Connection from 203.0.113.9 port 4242 on 192.0.2.1 port 22")
    ev = log.journal(900, "error: kex_exchange_identification: read: Connection reset by peer")
    assert ip(ev) == A4 and ev.detail["address_from"] == "connection"
    # A file line of the same host and pid: the same memory (one Parser, one memory).
    ev = log.line(900, "fatal: Write failed: Broken pipe [preauth]", dt=0.5)
    assert ip(ev) == A4


def test_records_from_a_user_s_own_process_never_teach_the_memory():
    # Line.audit_user: a journal record the source can only prove came from some user's own
    # process (which could write any text): it must not plant an address on a pid.
    log = Log()
    log.journal(901, "Invalid user x from 198.51.100.66 port 1", audit_user="mallory")
    ev = log.journal(901, "fatal: Write failed: Broken pipe [preauth]")
    assert ev.ip is None
    log.journal(902, "Accepted password for alice from 198.51.100.66 port 7 ssh2",
                audit_user="mallory")  # fmt: skip
    ev = log.line(903, "Connection closed by 198.51.100.66 port 7")
    assert ev.kind is Kind.PREAUTH_DISCONNECT


def test_connection_closed_after_login_is_a_disconnect():
    # OpenSSH 9.2 (this machine, LogLevel VERBOSE) and 10.x (INFO): the monitor (pid 40) logs
    # the login; the user's own process (pid 46) logs the close, naming the same address and
    # port.
    log = Log()
    log.line(40, "Accepted publickey for alice from 203.0.113.9 port 57934 ssh2: ED25519 "
                 "SHA256:mPENTfkJiF6BkrcPM9IoCraBhSeVutXHMvlg13nbe3s")  # fmt: skip
    log.line(40, "User child is on pid 46")
    log.line(46, "Starting session: command for alice from 203.0.113.9 port 57934 id 0")
    ev = log.line(46, "Connection closed by 203.0.113.9 port 57934", dt=30)
    assert ev.kind is Kind.DISCONNECT and ip(ev) == A4
    # Another connection from the same address that never logged in: pre-auth.
    ev = log.line(50, "Connection closed by 203.0.113.9 port 57990")
    assert ev.kind is Kind.PREAUTH_DISCONNECT
    # The login is forgotten once its connection ended.
    ev = log.line(51, "Connection closed by 203.0.113.9 port 57934")
    assert ev.kind is Kind.PREAUTH_DISCONNECT


def test_connection_closed_after_login_in_the_journal_from_the_user_s_process():
    log = Log()
    log.journal(40, "Accepted password for alice from 203.0.113.9 port 4242 ssh2")
    ev = log.journal(46, "Connection closed by 203.0.113.9 port 4242", audit_user="alice")
    assert ev.kind is Kind.DISCONNECT


def test_a_scanner_at_the_default_log_level_is_one_attempt():
    # sshd <= 9.7 at LogLevel INFO: the first line has no address, the second has it; at
    # VERBOSE both have it (the first through the memory). Either way one connection is
    # counted once: bruteforce (5 in 10 minutes) fires on the 5th connection, not before.
    for verbose in (False, True):
        log = Log()
        cfg = config.DetectionConfig()
        r = dataclasses.replace(
            cfg.rules, success_after_failures=dataclasses.replace(
                cfg.rules.success_after_failures, enabled=False))  # fmt: skip
        engine = Engine(dataclasses.replace(cfg, rules=r), History(since=0.0), zone=UTC)
        fired = []
        for i in range(5):
            pid, port = 1000 + i, 40000 + i
            lines = []
            if verbose:
                lines.append(f"Connection from 203.0.113.9 port {port} on 192.0.2.1 port 22")
            lines.append("error: kex_exchange_identification: Connection closed by remote host")
            lines.append(f"Connection closed by 203.0.113.9 port {port}")
            for msg in lines:
                ev = log.line(pid, msg)
                if ev.kind is not Kind.IGNORED:
                    fired += [(i, f.rule) for f in engine.feed(ev)]
        assert fired == [(4, "bruteforce")], (verbose, fired)


def test_replay_and_the_daemon_s_line_path_share_the_memory():
    # Replay (parse_text over a file) and the daemon (parse_line of each Line) share the memory.
    text = [
        "Nov 24 21:45:48 web1 sshd[38]: Connection from 127.0.0.1 port 57918 on 127.0.0.1 port 22",
        "Nov 24 21:45:48 web1 sshd[38]: error: kex_exchange_identification: Connection closed by"
        " remote host",
        "Nov 24 21:45:48 web1 sshd[38]: Connection closed by 127.0.0.1 port 57918",
    ]
    a = Parser(reference=REF)
    b = Parser(reference=REF)
    ra = [a.parse_text(t) for t in text]
    rb = [b.parse_line(Line(text=t, source="/var/log/auth.log")) for t in text]
    assert [(e.kind, e.ip, e.port, e.detail) for e in ra] == [
        (e.kind, e.ip, e.port, e.detail) for e in rb
    ]
    assert ra[1].ip == ipaddress.ip_address("127.0.0.1")


def test_a_user_s_own_process_is_never_a_pre_authentication_connection():
    log = Log()
    log.line(40, "Accepted password for alice from 203.0.113.9 port 4242 ssh2")
    log.line(46, "Starting session: shell on pts/0 for alice from 203.0.113.9 port 4242 id 0")
    ev = log.line(46, "Disconnecting: Corrupted MAC on input.")
    assert ev.kind is Kind.PROTOCOL_ERROR and ev.ip is None


def test_old_connection_closed_without_a_port_after_login():
    # OpenSSH <= 7.3 (VERBOSE, post-auth): "Connection closed by A", no port.
    log = Log()
    log.line(40, "Accepted password for alice from 203.0.113.9 port 4242 ssh2")
    assert log.line(46, "Connection closed by 203.0.113.9").kind is Kind.DISCONNECT
    assert log.line(47, "Connection closed by 198.51.100.7").kind is Kind.PREAUTH_DISCONNECT


def test_address_less_protocol_errors_of_a_connection_count_as_its_own():
    log = Log()
    log.line(60, "Connection from 203.0.113.9 port 4242 on 192.0.2.1 port 22")
    for msg in ("Bad packet length 1349676916. [preauth]", "Corrupted MAC on input. [preauth]"):
        ev = log.line(60, msg, dt=0.1)
        assert ev.kind is Kind.PROTOCOL_ERROR and ip(ev) == A4


# ------------------------------------------------------------------------ a real sshd
# Which process writes which line (docs/events.md, "The connection memory"), seen on this
# machine's OpenSSH 9.2 at LogLevel VERBOSE: the monitor writes a connection's pre-auth lines
# and "Accepted", the user's own process (another pid) the end of a logged-in connection.

pytest_plugins = ["realsshd"]


@pytest.mark.real
def test_real_sshd_pids_and_the_connection_memory(real_sshd_factory):
    import signal
    import socket
    import subprocess
    import time

    from realsshd import stop_process

    sshd = real_sshd_factory(log_level="VERBOSE")
    # A scanner: takes the banner, leaves during the banner exchange.
    with socket.create_connection(("127.0.0.1", sshd.port), timeout=10) as c:
        c.recv(100)
    sshd.wait_for(r"Connection closed by 127\.0\.0\.1 port \d+$")
    # A key login whose client vanishes: the user's own sshd process logs the close.
    argv = ["ssh", *sshd._ssh_opts(), *sshd._key_opts(), f"{sshd.user}@127.0.0.1", "sleep 30"]
    client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        sshd.wait_for(r"Starting session: command for ")
        time.sleep(0.3)
    finally:
        stop_process(client, signal.SIGKILL)
    sshd.wait_for(r"Closing connection to 127\.0\.0\.1 port \d+")

    events = sshd.events()
    by_text = [(ev, ev.raw.split("]: ", 1)[1]) for ev in events if ev.program == "sshd"]
    kex = [ev for ev, m in by_text if m.startswith("error: kex_exchange_identification: ")]
    assert len(kex) == 1 and str(kex[0].ip) == "127.0.0.1", by_text
    assert kex[0].detail["address_from"] == "connection"
    accepted = next(ev for ev, _ in by_text if ev.kind is Kind.AUTH_SUCCESS)
    closes = [ev for ev, m in by_text if m.startswith("Connection closed by 127.0.0.1 port ")]
    scanner = next(ev for ev in closes if ev.pid == kex[0].pid)
    login_end = next(ev for ev in closes if ev.port == accepted.port)
    assert scanner.kind is Kind.PREAUTH_DISCONNECT
    # The finding of docs/events.md: another process (pid) closes the login's connection.
    assert login_end.pid != accepted.pid and login_end.kind is Kind.DISCONNECT
    child = next(m for _, m in by_text if m.startswith("User child is on pid "))
    assert int(child.rsplit(" ", 1)[1]) == login_end.pid
