"""Attacker-controlled text: never another IP, never a crash (hypothesis property tests)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshmonitord.events import Kind
from sshmonitord.parse import Parser
from sshmonitord.replay import event_json

REF = datetime(2026, 11, 25, tzinfo=UTC)
PREFIX = "Nov 24 21:45:48 web1 sshd[1234]: "

# What sshd itself may put around a user name; the user name is anything at all.
TEMPLATES = [
    "Failed password for {u} from {ip} port {port} ssh2",
    "Failed password for invalid user {u} from {ip} port {port} ssh2",
    "Failed publickey for {u} from {ip} port {port} ssh2: RSA SHA256:abcDEF123+/x",
    "Invalid user {u} from {ip} port {port}",
    "Accepted password for {u} from {ip} port {port} ssh2",
    "Connection closed by invalid user {u} {ip} port {port} [preauth]",
    "Connection closed by authenticating user {u} {ip} port {port} [preauth]",
    "Disconnected from invalid user {u} {ip} port {port} [preauth]",
    "Disconnecting invalid user {u} {ip} port {port}: Too many authentication failures [preauth]",
    "error: maximum authentication attempts exceeded for invalid user {u} from {ip} port {port}"
    " ssh2 [preauth]",
    "User {u} from {ip} not allowed because not listed in AllowUsers",
    "error: PAM: Authentication failure for illegal user {u} from {ip}",
    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
    "rhost={ip}  user={u}",
    "ssh_dispatch_run_fatal: Connection from invalid user {u} {ip} port {port}: "
    "message authentication code incorrect [preauth]",
]

# User names an attacker would pick to frame someone or break things.
EVIL = [
    "x from 6.6.6.6 port 1 ssh2",
    "x from 6.6.6.6 port 1",
    "root from 6.6.6.6",
    "6.6.6.6 port 1",
    "a 6.6.6.6 port 2",
    "admin from 6.6.6.6 port 22 ssh2: RSA SHA256:fake",
    "<script>alert(1)</script>",
    '"; rm -rf / #',
    "$(reboot)",
    "`id`",
    "\x1b[31mred",
    "ünïcødé 用户",
    "",
    " ",
    "x" * 10_000,
    "rhost=6.6.6.6 user=root",
    "alice\nNov 24 21:45:49 web1 sshd[1]: Accepted password for root from 6.6.6.6 port 1 ssh2",
]

ADDRS = ["203.0.113.9", "2001:db8::9", "::ffff:198.51.100.7", "2001:db8:0:0:0:0:0:a"]


def _norm(a: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(a)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _check(template: str, user: str, ip: str, port: int) -> None:
    p = Parser(reference=REF)
    line = PREFIX + template.format(u=user, ip=ip, port=port)
    ev = p.parse_text(line)
    assert p.stats.errors == 0, p.stats.error_samples
    if ev is None:
        return
    # Whatever the name, the event is either attributed to the real address or to none.
    assert ev.ip is None or ev.ip == _norm(ip), (line, ev)
    if ev.kind is not Kind.UNRECOGNIZED and "{port}" in template and "rhost" not in template:
        assert ev.port in (None, port)
    event_json(ev)  # serialisable


def test_the_issue_example_is_a_failure_from_the_real_address():
    p = Parser(reference=REF)
    ev = p.parse_text(
        PREFIX + "Failed password for invalid user x from 6.6.6.6 port 1 ssh2 "
        "from 1.2.3.4 port 22 ssh2"
    )
    assert ev.kind is Kind.AUTH_FAILURE
    assert ev.ip == ipaddress.ip_address("1.2.3.4") and ev.port == 22
    assert ev.user == "x from 6.6.6.6 port 1 ssh2"
    assert ev.detail["invalid_user"] is True


def test_every_template_with_every_evil_name():
    for t in TEMPLATES:
        for u in EVIL:
            for a in ADDRS:
                _check(t, u, a, 4242)


def test_evil_names_are_kept_verbatim_where_sshd_logs_them():
    p = Parser(reference=REF)
    for u in EVIL:
        if "\n" in u or not u.strip():
            continue
        ev = p.parse_text(PREFIX + f"Invalid user {u} from 203.0.113.9 port 5")
        assert ev.kind is Kind.INVALID_USER and ev.user == u


def test_certificate_key_id_cannot_move_the_address():
    # The key ID of a certificate is attacker text *after* the address.
    line = (
        PREFIX + "Failed publickey for root from 203.0.113.9 port 4 ssh2: ED25519-CERT "
        "SHA256:aaaa ID x from 6.6.6.6 port 2 ssh2: ED25519 SHA256:bbbb ID y (serial 1) "
        "CA ED25519 SHA256:cccc"
    )
    ev = Parser(reference=REF).parse_text(line)
    assert ev.kind is Kind.AUTH_FAILURE
    assert ev.ip is None and ev.detail.get("ambiguous") is True


def test_forged_line_inside_a_name_is_not_a_second_event():
    p = Parser(reference=REF)
    text = (
        PREFIX + "Invalid user a]: Accepted password for root from 6.6.6.6 port 1 ssh2 "
        "from 203.0.113.9 port 7"
    )
    ev = p.parse_text(text)
    assert ev.kind is Kind.INVALID_USER and ev.ip == ipaddress.ip_address("203.0.113.9")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user=st.text(max_size=300),
    t=st.sampled_from(TEMPLATES),
    a=st.sampled_from(ADDRS),
    port=st.integers(min_value=1, max_value=65535),
)
def test_random_user_names_never_frame_another_address(user, t, a, port):
    _check(t, user.replace("\n", " "), a, port)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes_never_crash(data):
    p = Parser(reference=REF)
    for text in (
        data.decode("utf-8", "replace"),
        PREFIX + data.decode("utf-8", "replace"),
        "<38>1 2026-11-24T21:45:48Z web1 sshd 1 - - " + data.decode("latin-1"),
    ):
        ev = p.parse_text(text)
        if ev is not None:
            event_json(ev)
    assert p.stats.errors == 0, p.stats.error_samples


@settings(max_examples=200, deadline=None)
@given(
    msg=st.text(max_size=200),
    prog=st.sampled_from(
        ["sshd", "sshd-session", "sudo", "su", "systemd-logind", "internal-sftp", "CRON"]
    ),
)
def test_random_messages_from_each_program_never_crash(msg, prog):
    p = Parser(reference=REF)
    p.parse_text(f"Nov 24 21:45:48 web1 {prog}[77]: {msg}")
    p.parse_fields(
        {
            "MESSAGE": msg,
            "_COMM": prog,
            "_PID": "77",
            "__REALTIME_TIMESTAMP": "1700000000000000",
            "_HOSTNAME": "h",
        }
    )
    assert p.stats.errors == 0, p.stats.error_samples


def test_malformed_lines_are_counted_not_dropped_silently():
    p = Parser(reference=REF)
    for text in [
        "garbage",
        "Nov 99 99:99:99 x sshd[1]: Failed password for a from 1.2.3.4 port 1 ssh2",
        "\x00\x00\x00",
        "2026-13-45T00:00:00Z h sshd[1]: x",
    ]:
        assert p.parse_text(text) is None
    assert p.stats.malformed == 4, p.stats.malformed_samples


# ---------------------------------------------------------------- every catalogue entry
# Each entry of sshd's catalogue carries example messages with the attacker's slots marked:
# {u} text before the address (user names), {x} text after it (banners, reasons, key IDs,
# client names), {a}/{p} the real address and port. A new entry without examples fails
# test_every_entry_has_examples_of_itself, so the injection tests below cover it.

FAKES = ["198.51.100.66", "2001:db8:dead::66"]
SHAPES = [
    "from {f} port 1 ssh2",
    "from {f} port 1 ssh2: RSA SHA256:fake",
    "{f} port 1",
    "{f} port 1: y",
    "[{f}]:1",
    "({f})",
    "for X from {f}",
    "for invalid user X from {f} port 1",
    "user X {f} port 1",
    "rhost={f} user=x",
    "host=x, ip={f}, required=y",
    "Connection from {f} port 1: x",
]
INJECTIONS = sorted(
    {
        variant
        for shape in SHAPES
        for f in FAKES
        for inj in [shape.format(f=f)]
        for variant in (inj, f"x {inj}", f"{inj} y", f"a: {inj}: b", f'x" {inj}')
    }
)
BENIGN = {"u": "alice", "x": "hello"}


def _entries():
    from sshmonitord.parse import sshd

    return sshd.ENTRIES


def _fill(example: str, u: str, x: str, a: str, p: int = 4242) -> str:
    # str.format would trip on braces in attacker text: replace the slots one by one.
    return example.replace("{u}", u).replace("{x}", x).replace("{a}", a).replace("{p}", str(p))


def _strip_tags(msg: str) -> str:
    for tag in (" [preauth]", " [net]", " [postauth]"):
        if msg.endswith(tag):
            return msg[: -len(tag)]
    return msg


def _real_or_none(ev, real: str) -> bool:
    """The event has the real address, the network sshd penalised it under, or none."""
    if ev.ip is None:
        return True
    want = _norm(real)
    if ev.ip == want:
        return True
    prefix = ev.detail.get("prefix")
    if prefix is not None:
        bits = int(prefix.rsplit("/", 1)[1])
        return want in ipaddress.ip_network(f"{ev.ip}/{bits}", strict=False)
    return False


def test_every_entry_has_examples_of_itself():
    from sshmonitord.parse import sshd

    registered = {id(pat) for lst in sshd.CATALOGUE.values() for pat, _ in lst}
    registered |= {id(pat) for pat, _ in sshd.FALLBACK}
    entries = _entries()
    assert registered == {id(e.pattern) for e in entries}
    for e in entries:
        assert e.examples, f"catalogue entry without examples: {e.pattern.pattern}"
        for ex in e.examples:
            msg = _strip_tags(_fill(ex, **BENIGN, a="203.0.113.9"))
            assert e.pattern.match(msg), (ex, e.pattern.pattern)
            if e.first is not None:
                # Filed under the key parse() looks it up by: its first word, or its first two
                # behind a level word ("error: kex_exchange_identification:").
                words = msg.split(" ")
                assert e.first in (words[0], " ".join(words[:2])), (ex, e.first)


def test_every_example_parses_with_the_real_address():
    for e in _entries():
        for ex in e.examples:
            for a in ADDRS:
                p = Parser(reference=REF)
                ev = p.parse_text(PREFIX + _fill(ex, **BENIGN, a=a))
                assert p.stats.errors == 0, p.stats.error_samples
                assert ev is not None and ev.kind is not Kind.UNRECOGNIZED, ex
                if "{a}" not in ex:
                    assert ev.ip is None, (ex, ev)
                    continue
                assert _real_or_none(ev, a), (ex, a, ev)
                # Where a name may stand in the address's place (UseDNS) it is no address.
                assert ev.ip is not None or ev.detail.get("host"), (ex, a, ev)


def _inject_all(slots: tuple[str, ...]) -> None:
    for e in _entries():
        for ex in e.examples:
            if not any("{" + s + "}" in ex for s in slots):
                continue
            for a in ADDRS:
                for inj in INJECTIONS:
                    fill = dict(BENIGN)
                    for s in slots:
                        fill[s] = inj
                    p = Parser(reference=REF)
                    line = PREFIX + _fill(ex, a=a, **fill)
                    ev = p.parse_text(line)
                    assert p.stats.errors == 0, p.stats.error_samples
                    assert ev is not None
                    assert _real_or_none(ev, a), (line, ev)
                    # ... and what the connection memory learnt from it is no fake either.
                    after = p.parse_text(PREFIX + "fatal: Write failed: Broken pipe [preauth]")
                    assert _real_or_none(after, a), (line, after)


def test_injection_before_the_address_in_every_entry():
    _inject_all(("u",))


def test_injection_after_the_address_in_every_entry():
    _inject_all(("x",))


def test_injection_on_both_sides_of_the_address_in_every_entry():
    _inject_all(("u", "x"))


_EXAMPLES = [ex for e in _entries() for ex in e.examples if "{u}" in ex or "{x}" in ex]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ex=st.sampled_from(_EXAMPLES),
    u=st.text(max_size=120).map(lambda s: s.replace("\n", " ")),
    x=st.text(max_size=120).map(lambda s: s.replace("\n", " ")),
    a=st.sampled_from(ADDRS),
    port=st.integers(min_value=1, max_value=65535),
)
def test_random_text_in_every_slot_never_frames_another_address(ex, u, x, a, port):
    p = Parser(reference=REF)
    ev = p.parse_text(PREFIX + _fill(ex, u, x, a, port))
    assert p.stats.errors == 0, p.stats.error_samples
    assert ev is not None and _real_or_none(ev, a), (ex, u, x, ev)
    event_json(ev)
