"""auditd: records → events (parse/audit.py) and the audit.log source (sources/auditd.py).

Samples in tests/data/audit/, each with the events it must give in the .json next to it
(every value checked by hand against the log lines):

* basic.log, interleaved.log, long_args.log, node_enriched.log, sessions.log — written by hand
  from the formats in the kernel (kernel/audit.c: untrusted strings quoted or upper-case hex;
  kernel/auditsc.c: SYSCALL/EXECVE/CWD/PATH/PROCTITLE/EOE, ``aN_len``/``aN[i]`` chunks over
  several EXECVE records, hex forced for an argument spanning buffers, PROCTITLE cut at 128
  bytes), libaudit (``audit_log_acct_message``: ``op= acct= exe= hostname= addr= terminal=
  res=``, and its pre-2.x parenthesised form) and auditd (``node=`` prefix, ENRICHED fields
  after 0x1D, no EOE written to the log).
* real_capture.log — what auditd 3.0.9 (Debian 12, kernel 6.18, ``log_format = ENRICHED``,
  ``name_format = hostname``) wrote on the development machine for commands run under a set
  loginuid and one real sshd password login (tests/realsshd.py): produced here, not copied.

No test needs a running auditd or the kernel audit subsystem.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshmonitord.events import AUDIT_SOURCE_PREFIX, Event, FilePosition, Kind, Line, Retired
from sshmonitord.parse.audit import (
    parse_audit,
    shell_join,
    split_record,
    untrusted,
)
from sshmonitord.sources.audit_records import AuditAssembler, AuditGrouper
from sshmonitord.sources.auditd import AuditSource

DATA = Path(__file__).parent / "data" / "audit"
SAMPLES = sorted(p.stem for p in DATA.glob("*.log"))


def event_json(ev: Event) -> dict[str, Any]:
    return {
        "ts": ev.ts.isoformat().replace("+00:00", "Z"),
        "host": ev.host,
        "program": ev.program,
        "pid": ev.pid,
        "kind": str(ev.kind),
        "user": ev.user,
        "ip": None if ev.ip is None else str(ev.ip),
        "session": ev.session,
        "detail": ev.detail,
    }


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace", newline="\n") as fh:
        return [line.rstrip("\n") for line in fh]


def assemble(lines: list[str], **kw: Any) -> list[Event]:
    a = AuditAssembler(AuditGrouper(**kw))
    out: list[Event] = []
    for line in lines:
        out += a.feed(line)
    out += a.flush()
    assert a.errors == 0
    return out


def file_lines(texts: list[str], path: str = "/var/log/audit/audit.log") -> list[Line]:
    """Lines as the tailer makes them: each with the file position after it."""
    out, off = [], 0
    for t in texts:
        off += len(t.encode()) + 1
        out.append(Line(t, path, FilePosition(path, 1, 42, "fp", off)))
    return out


def key(ev: Event) -> tuple[Any, ...]:
    return (ev.host, ev.ts, ev.pid, str(ev.kind), json.dumps(ev.detail, sort_keys=True))


# ------------------------------------------------------------------------ the samples


@pytest.mark.parametrize("name", SAMPLES)
def test_sample(name: str) -> None:
    got = [event_json(e) for e in assemble(read_lines(DATA / f"{name}.log"))]
    want = json.loads((DATA / f"{name}.json").read_text())
    assert got == want


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_fed_as_file_lines_gives_the_same(name: str) -> None:
    """The grouper on positioned Lines (the source's path) + parse_audit (the parser's)."""
    g = AuditGrouper()
    groups: list[Line] = []
    for line in file_lines(read_lines(DATA / f"{name}.log")):
        groups += g.feed(line)
    groups += g.flush()
    assert all(x.source == AUDIT_SOURCE_PREFIX + "/var/log/audit/audit.log" for x in groups)
    evs = [e for e in map(parse_audit, (x.text for x in groups)) if e is not None]
    assert [event_json(e) for e in evs] == json.loads((DATA / f"{name}.json").read_text())


def test_exec_event_shape() -> None:
    ev = assemble(read_lines(DATA / "basic.log"))[1]
    assert ev.kind is Kind.EXEC and ev.program == "audit" and ev.user is None
    assert ev.ts.tzinfo is not None and ev.ts.utcoffset().total_seconds() == 0
    assert ev.detail["argv"] == ["grep", "-r", "secret key", "/home/alice"]
    assert ev.detail["command"] == "grep -r 'secret key' /home/alice"
    assert ev.detail["cwd"] == "/home/alice/my docs"
    assert ev.raw.count("\n") == 5 and ev.raw.startswith("type=SYSCALL")


def test_host_for_records_without_node() -> None:
    lines = read_lines(DATA / "sessions.log")
    a = AuditAssembler(host="web1")
    evs = [e for line in lines for e in a.feed(line)] + a.flush()
    assert {e.host for e in evs} == {"web1"}
    # node= wins over the default
    a = AuditAssembler(host="web1")
    evs = [e for line in read_lines(DATA / "node_enriched.log") for e in a.feed(line)]
    assert {e.host for e in evs} == {"web1", "web2", "edge3"}


def test_unset_auid_and_ses() -> None:
    ev = next(e for e in assemble(read_lines(DATA / "basic.log")) if e.pid == 3101)
    assert ev.detail["auid"] is None and ev.detail["ses"] is None
    assert ev.detail["tty"] is None and ev.detail["key"] is None


def test_session_records_only_from_sshd() -> None:
    evs = assemble(read_lines(DATA / "sessions.log"))
    assert {e.detail["exe"] for e in evs} == {"/usr/sbin/sshd", "/usr/lib/openssh/sshd-session"}
    opened = [e for e in evs if e.kind is Kind.SESSION_OPEN]
    # PAM's session: the monitor's pid is the sshd pid auth.log shows for the login
    assert opened[0].pid == 2210 and opened[0].session == "2210"
    assert opened[0].detail["ses"] == "7" and opened[0].detail["auid"] == 1000
    # the host name field cannot stand in for the address; an encoded acct stays one value
    evil = next(e for e in evs if e.pid == 2620)
    assert str(evil.ip) == "203.0.113.77" and evil.user == "evil addr=6.6.6.6"


# -------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ('"/home/alice"', "/home/alice"),
        ("2F746D70", "/tmp"),
        ("2f746d70", "/tmp"),  # lower case is not what the kernel writes, but is hex
        ("2F746D7", "2F746D7"),  # odd length: kept as logged
        ("ZZ", "ZZ"),
        ("FFFE", "\ufffd\ufffd"),  # not UTF-8
        ("410042", "A\ufffdB"),  # a NUL never reaches a stored string
        ('"unterminated', "unterminated"),
        ('"', ""),
        ("(null)", None),
        ("(none)", None),
        ("?", None),
        (None, None),
    ],
)
def test_untrusted(raw: str | None, want: str | None) -> None:
    assert untrusted(raw) == want


def test_shell_join_escapes_controls() -> None:
    assert shell_join(["ls", "-la", "my file"]) == "ls -la 'my file'"
    assert shell_join(["echo", "a\nb"]) == "echo $'a\\nb'"
    assert shell_join(["printf", "\x1b[2J", "it's"]) == "printf $'\\E[2J' 'it'\"'\"'s'"
    assert shell_join(["x", "\u202eevil", "\x85"]) == "x $'\\u202eevil' $'\\u0085'"
    assert shell_join(["x", "a'b\\\x07"]) == "x $'a\\'b\\\\\\x07'"
    assert shell_join([]) == ""


def test_split_record() -> None:
    r = split_record(
        'node=web1 type=EXECVE msg=audit(1732483548.123:4567): argc=1 a0="ls"\x1dX="y"'
    )
    assert r is not None
    assert (r.node, r.type, r.stamp, r.body, r.interp) == (
        "web1",
        "EXECVE",
        "1732483548.123:4567",
        'argc=1 a0="ls"',
        'X="y"',
    )
    assert split_record("Nov 24 21:45:48 web1 sshd[1]: hello") is None
    assert split_record("type=SYSCALL msg=audit(99999999999999999:1): x") is None
    r = split_record("type=SYSCALL msg=audit(999999999999.999:1): syscall=59")
    assert r is not None and r.when() is None  # year 33658: no datetime, no crash


def test_argument_split_over_records_with_quoted_chunks() -> None:
    ev = next(e for e in assemble(read_lines(DATA / "long_args.log")) if e.pid == 2502)
    assert ev.detail["argv"][2] == "x=" + "ab" * 3499 and ev.detail["argv"][3] == "tail"
    assert not ev.detail["argv_truncated"]


def test_lost_execve_record_marks_truncation() -> None:
    ev = next(e for e in assemble(read_lines(DATA / "long_args.log")) if e.pid == 2503)
    assert ev.detail["argv_truncated"] and len(ev.detail["argv"][1]) == 3700


def test_proctitle_stands_in_for_a_lost_execve() -> None:
    lines = [x for x in read_lines(DATA / "basic.log") if ":4102)" in x and "EXECVE" not in x]
    (ev,) = assemble(lines)
    assert ev.detail["argv"] == ["grep", "-r", "secret key", "/home/alice"]
    assert ev.detail["argv_truncated"]  # PROCTITLE is cut at 128 bytes: never trusted whole


def test_huge_argument_is_cut() -> None:
    head = (
        "type=SYSCALL msg=audit(1732490000.000:1): arch=c000003e syscall=59 success=yes "
        'exit=0 pid=5 auid=1000 uid=1000 euid=1000 tty=pts0 ses=1 comm="x" exe="/x"'
    )
    big = "41" * 200_000
    lines = [head, f'type=EXECVE msg=audit(1732490000.000:1): argc=2 a0="x" a1={big}']
    lines.append("type=PROCTITLE msg=audit(1732490000.000:1): proctitle=78")
    (ev,) = assemble(lines, max_bytes=2_000_000)
    assert ev.detail["argv_truncated"]
    assert sum(map(len, ev.detail["argv"])) == 64 * 1024
    assert len(ev.raw) == 8192


# -------------------------------------------------------------------------- grouping


def test_events_leave_in_order_with_safe_positions() -> None:
    texts = read_lines(DATA / "interleaved.log")
    lines = file_lines(texts)
    g = AuditGrouper()
    emitted: list[tuple[int, Line]] = []
    for i, line in enumerate(lines):
        emitted += [(i, x) for x in g.feed(line)]
    # curl (5002) completes at line 12, but tar (5001, first record at line 3) began first
    # and is still open: curl waits. Both leave at tar's PROCTITLE (line 14).
    assert not [x for i, x in emitted if i == 12]
    (i1, tar), (i2, curl) = [(i, x) for i, x in emitted if ":5001)" in x.text or ":5002)" in x.text]
    assert ":5001)" in tar.text and i1 == i2 == 14
    assert tar.position == lines[3].position  # curl, begun at line 4, is not out yet
    assert curl.position == lines[14].position  # nothing held: all read is done
    offsets = [x.position.offset for _, x in emitted]
    assert offsets == sorted(offsets)


def test_resumed_mid_file_positions_are_known() -> None:
    # Resuming mid-file, the position before the first record is unknown. Nothing of the
    # file leaves before that event does, so no emitted Line needs it.
    lines = file_lines(read_lines(DATA / "interleaved.log"))[3:]
    g = AuditGrouper()
    out = [x for line in lines for x in g.feed(line)] + g.flush()
    assert ":5001)" in out[0].text
    assert all(x.position is not None for x in out)


def test_timeout_and_buffer_bound() -> None:
    def rec(t: float, serial: int, typ: str = "SYSCALL") -> Line:
        return Line(f"type={typ} msg=audit({t:.3f}:{serial}): arch=c000003e syscall=59", "f")

    g = AuditGrouper(timeout=2.0, max_pending=3)
    assert g.feed(rec(100.0, 1)) == []
    assert g.feed(rec(101.9, 2)) == []
    out = g.feed(rec(102.0, 3))  # 1 is two seconds old
    assert [x.text.split(":")[1][:1] for x in out] == ["1"]
    assert g.stats.timed_out == 1
    g.feed(rec(102.1, 4))
    out = g.feed(rec(102.2, 5))  # four open: the oldest goes
    assert len(out) == 1 and ":2)" in out[0].text and g.stats.evicted == 1
    assert len(g.flush()) == 3 and not g.pending


def test_retire_closes_events_of_that_file_only() -> None:
    a = file_lines(["type=SYSCALL msg=audit(1.000:1): x=1"], "/a")
    b = file_lines(["type=SYSCALL msg=audit(1.000:2): x=1"], "/b")
    g = AuditGrouper()
    g.feed(a[0])
    g.feed(b[0])
    out = g.retire("/a", 1, 42)
    assert [x.text for x in out] == ["type=SYSCALL msg=audit(1.000:1): x=1"]
    assert out[0].position == a[0].position
    assert list(g.pending) == [("", "1.000:2")]


def test_not_audit_lines_and_record_bounds() -> None:
    g = AuditGrouper(max_records=3, max_bytes=10_000)
    lines = file_lines(
        ["garbage", "", "type=SYSCALL msg=audit(5.000:9): syscall=59"]
        + ['type=PATH msg=audit(5.000:9): item=0 name="/x"'] * 5
        + ["type=PROCTITLE msg=audit(5.000:9): proctitle=78"]
    )
    out = [x for line in lines for x in g.feed(line)]
    assert g.stats.not_audit == 2
    assert len(out) == 1 and out[0].text.count("\n") == 2  # three records kept
    assert g.stats.dropped_records == 4 and out[0].position == lines[-1].position


def _crash_replay(texts: list[str]) -> None:
    """At every cut: commit what was emitted, "crash", resume at the commit. Every event
    comes out exactly once over the two runs: none lost, none repeated, none invented."""
    lines = file_lines(texts)
    full = sorted(map(key, assemble(texts)))
    for cut in range(len(lines) + 1):
        g = AuditGrouper()
        first: list[Event] = []
        committed: FilePosition | None = None
        for line in lines[:cut]:
            for x in g.feed(line):
                ev = parse_audit(x.text)
                if ev is not None:
                    first.append(ev)
                if x.position is not None:
                    committed = x.position
        start = 0 if committed is None else committed.offset
        rest = [line.text for line in lines if line.position.offset > start]
        second = assemble(rest)
        got = sorted(map(key, first + second))
        assert got == full, f"cut at line {cut}"


@pytest.mark.parametrize("name", ["interleaved", "basic", "sessions", "node_enriched"])
def test_crash_at_any_line_loses_and_repeats_nothing(name: str) -> None:
    _crash_replay(read_lines(DATA / f"{name}.log"))


# ------------------------------------------------------------ property tests (hypothesis)

TYPES = [
    "SYSCALL",
    "EXECVE",
    "CWD",
    "PATH",
    "PROCTITLE",
    "EOE",
    "USER_START",
    "USER_END",
    "USER_LOGIN",
    "USER_LOGOUT",
    "LOGIN",
    "BPRM_FCAPS",
    "DAEMON_START",
    "AVC",
    "UNKNOWN[1334]",
]
KEYS = [
    "arch", "syscall", "success", "exit", "pid", "ppid", "auid", "uid", "euid", "ses", "tty",
    "comm", "exe", "key", "argc", "a0", "a1", "a2", "a1_len", "a1[0]", "a1[1]", "a99999999",
    "cwd", "proctitle", "item", "name", "op", "acct", "id", "addr", "hostname", "terminal",
    "res",
]  # fmt: skip
# Mostly the characters the format gives meaning to, plus anything at all now and then.
_token = st.text(alphabet="\"'=()[],:aZ09Ab\x00\x01\u00e9\ufffd", max_size=12) | st.text(
    alphabet=st.characters(blacklist_characters=" \n\x1d"), max_size=8
)
_hex = st.binary(max_size=24).map(lambda b: b.hex().upper())
_value = st.one_of(
    _hex,
    _hex.map(lambda h: h + "A"),
    _token,
    _token.map(lambda t: f'"{t}"'),
    st.integers(-5, 2**40).map(str),
    st.sampled_from(["c000003e", "59", "322", "4294967295", "(null)", "(none)", "yes", "no"]),
)
_field = st.tuples(st.sampled_from(KEYS) | _token, _value).map(lambda kv: f"{kv[0]}={kv[1]}")


def _record(
    node: str, typ: str, sec: int, ms: int, serial: int, body: list[str], inner: Any, interp: Any
) -> str:
    text = " ".join(body)
    if inner is not None:
        text += f" msg='{' '.join(inner[0])}{inner[1]}"
    if interp is not None:
        text += "\x1d" + " ".join(interp)
    return f"{node}type={typ} msg=audit({sec}.{ms:03d}:{serial}): {text}"


records = st.builds(
    _record,
    st.sampled_from(["", "node=a ", "node=b "]),
    st.sampled_from(TYPES) | _token,
    st.sampled_from([1732483548, 1732483549, 1732483551, 999999999999]),
    st.integers(0, 999),
    st.integers(1, 6),
    st.lists(_field, max_size=10),
    st.none() | st.tuples(st.lists(_field, max_size=6), st.sampled_from(["'", "", "''"])),
    st.none() | st.lists(_field, max_size=4),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=30))
def test_random_records_never_crash(lines: list[str]) -> None:
    for ev in assemble(lines, max_pending=4):
        assert isinstance(ev, Event)
        assert ev.kind in (Kind.EXEC, Kind.SESSION_OPEN, Kind.SESSION_CLOSE)
        json.dumps(ev.detail, ensure_ascii=False)  # storable
        if ev.kind is Kind.EXEC:
            assert all(isinstance(a, str) and "\x00" not in a for a in ev.detail["argv"])
            assert "\n" not in ev.detail["command"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_crash(chunks: list[bytes]) -> None:
    lines = [c.decode("utf-8", "replace").replace("\n", " ") for c in chunks]
    lines += [f"type=EXECVE msg=audit(1.000:1): {x}" for x in lines]
    assemble(lines)


def encode_arg(i: int, b: bytes, chunk: int) -> list[str]:
    """One argument as the kernel logs it: quoted if plain printable ASCII, else hex; an
    argument longer than ``chunk`` bytes goes in pieces, hex-encoded (the kernel forces hex
    for an argument spanning buffers), announced by ``aN_len`` in hex digits."""
    plain = all(0x21 <= c <= 0x7E and c != 0x22 for c in b)
    if len(b) <= chunk:
        return [f'a{i}="{b.decode()}"' if plain and b else f"a{i}={b.hex().upper()}"]
    pieces = [b[j : j + chunk] for j in range(0, len(b), chunk)]
    out = [f"a{i}_len={2 * len(b)} a{i}[0]={pieces[0].hex().upper()}"]
    out += [f"a{i}[{k}]={p.hex().upper()}" for k, p in enumerate(pieces[1:], 1)]
    return out


@st.composite
def exec_events(draw: Any, serial: int) -> tuple[list[str], list[bytes]]:
    argv = draw(
        st.lists(
            st.one_of(
                st.binary(min_size=1, max_size=30).filter(lambda b: b"\x00" not in b),
                st.text(min_size=1, max_size=20).map(str.encode).filter(lambda b: b"\0" not in b),
                st.binary(min_size=40, max_size=120).filter(lambda b: b"\x00" not in b),
            ),
            min_size=1,
            max_size=6,
        )
    )
    chunk = draw(st.integers(8, 50))
    per_record = draw(st.integers(1, 4))
    stamp = f"1732483548.{serial % 1000:03d}:{serial}"
    out = [
        f"type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 "
        f'items=2 ppid=1 pid={serial} auid=1000 uid=1000 euid=1000 tty=pts0 ses=3 comm="x" '
        f'exe="/x" key="k"'
    ]
    pieces = [p for i, b in enumerate(argv) for p in encode_arg(i, b, chunk)]
    pieces[0] = f"argc={len(argv)} {pieces[0]}"
    for j in range(0, len(pieces), per_record):
        out.append(f"type=EXECVE msg=audit({stamp}): " + " ".join(pieces[j : j + per_record]))
    out.append(f'type=CWD msg=audit({stamp}): cwd="/"')
    out.append(f"type=PROCTITLE msg=audit({stamp}): proctitle={b'x'.hex()}")
    return out, argv


@st.composite
def interleaved_execs(draw: Any) -> tuple[list[str], dict[int, list[bytes]]]:
    n = draw(st.integers(1, 6))
    events = {s: draw(exec_events(s)) for s in range(1, n + 1)}
    queues = {s: list(lines) for s, (lines, _) in events.items()}
    rnd = random.Random(draw(st.integers(0, 2**32)))
    out: list[str] = []
    while queues:
        s = rnd.choice(sorted(queues))
        out.append(queues[s].pop(0))
        if not queues[s]:
            del queues[s]
    return out, {s: argv for s, (_, argv) in events.items()}


@settings(max_examples=150, deadline=None)
@given(interleaved_execs())
def test_interleaved_events_round_trip(case: tuple[list[str], dict[int, list[bytes]]]) -> None:
    lines, argvs = case
    evs = assemble(lines)
    assert sorted(e.pid for e in evs) == sorted(argvs)
    for ev in evs:
        want = [b.decode("utf-8", "replace") for b in argvs[ev.pid]]
        assert ev.detail["argv"] == want
        assert ev.detail["command"] == shell_join(want)
        assert ev.detail["argv_truncated"] is False
        assert ev.detail["argc"] == len(want)


@settings(max_examples=30, deadline=None)
@given(interleaved_execs())
def test_crash_anywhere_in_random_interleavings(
    case: tuple[list[str], dict[int, list[bytes]]],
) -> None:
    _crash_replay(case[0])


# -------------------------------------------------------------------------- the source


class Sink:
    """Stands in for the pipeline: collects batches, commits like it does."""

    def __init__(self) -> None:
        self.items: list[Line | Retired] = []

    async def emit(self, batch: list[Line | Retired]) -> None:
        self.items.extend(batch)

    def lines(self) -> list[Line]:
        return [i for i in self.items if isinstance(i, Line)]

    def events(self) -> list[Event]:
        return [e for e in (parse_audit(x.text) for x in self.lines()) if e is not None]

    def committed(self) -> dict[str, list[FilePosition]]:
        last: dict[tuple[str, int, int], FilePosition] = {}
        for i in self.items:
            if isinstance(i, Retired):
                last.pop((i.path, i.dev, i.inode), None)
            elif isinstance(i.position, FilePosition):
                p = i.position
                last[(p.path, p.dev, p.inode)] = p
        out: dict[str, list[FilePosition]] = {}
        for p in last.values():
            out.setdefault(p.path, []).append(p)
        return out


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def source(path: Path, sink: Sink, **kw: Any) -> AuditSource:
    kw.setdefault("start_at", "beginning")
    return AuditSource(str(path), sink.emit, poll_interval=0.05, use_inotify=False, **kw)


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(x + "\n" for x in lines))


def test_source_follows_and_groups(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    basic = read_lines(DATA / "basic.log")
    append(log, basic[:9])  # the first exec event's SYSCALL..PATH, not its PROCTITLE
    sink = Sink()

    async def go() -> None:
        src = source(log, sink)
        await src.start()
        try:
            await wait_for(lambda: src.grouper.stats.records == 9)
            assert sink.events() == []  # the event is not complete yet
            assert src.grouper.pending
            append(log, basic[9:])
            await wait_for(lambda: len(sink.events()) == 7)
            d = src.describe()
            assert d["name"] == "auditd" and d["stats"]["audit_records"] == len(basic)
            assert src.healthy()
        finally:
            await src.stop()

    asyncio.run(go())
    assert {x.source for x in sink.lines()} == {AUDIT_SOURCE_PREFIX + str(log)}
    assert [event_json(e) for e in sink.events()] == json.loads((DATA / "basic.json").read_text())
    assert sink.lines()[-1].position.offset == log.stat().st_size


def test_source_idle_flush_closes_an_unfinished_event(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    lines = read_lines(DATA / "interleaved.log")
    append(log, [x for x in lines if ":5005)" in x])  # no PROCTITLE will ever come
    sink = Sink()

    async def go() -> None:
        src = source(log, sink, end_of_event_timeout=0.3)
        await src.start()
        try:
            await wait_for(lambda: len(sink.events()) == 1)
        finally:
            await src.stop()

    asyncio.run(go())
    (ev,) = sink.events()
    assert ev.detail["argv"] == ["/tmp/p"] and ev.detail["cwd"] == "/home/bob"


def test_source_resume_reads_an_unfinished_event_again_whole(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    lines = read_lines(DATA / "interleaved.log")
    cut = 14  # 5002 done, 5001's PROCTITLE (line 14) not yet written
    append(log, lines[:cut])
    sink1 = Sink()

    async def run(sink: Sink, saved: dict[str, list[FilePosition]] | None) -> AuditSource:
        src = source(log, sink, saved=saved)
        await src.start()
        return src

    async def first() -> None:
        src = await run(sink1, None)
        try:
            await wait_for(lambda: src.grouper.stats.records == cut)
        finally:
            await src.stop()

    asyncio.run(first())
    assert sink1.events() == []  # curl is complete, but waits for tar, open at the stop
    saved = sink1.committed()
    (pos,) = saved[str(log)]
    assert pos.offset == sum(len(x.encode()) + 1 for x in lines[:3])  # before tar's SYSCALL

    append(log, lines[cut:])
    sink2 = Sink()

    async def second() -> None:
        src = await run(sink2, saved)
        try:
            await wait_for(lambda: src.grouper.stats.records == len(lines) - 3)
            await wait_for(lambda: not src.grouper.pending)
        finally:
            await src.stop()

    asyncio.run(second())
    # Every command exactly once: the stop neither lost nor repeated any.
    assert [key(e) for e in sink2.events()] == [key(e) for e in assemble(lines)]
    tar = next(e for e in sink2.events() if e.pid == 2301)
    assert tar.detail["argv"] == ["tar", "czf", "/tmp/x.tgz", "/srv/data"]
    assert tar.detail["cwd"] == "/srv"


def test_source_across_rotation(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    basic = read_lines(DATA / "basic.log")
    inter = read_lines(DATA / "interleaved.log")
    append(log, basic)
    sink = Sink()

    async def go() -> None:
        src = source(log, sink)
        for f in src.tailer.followers:
            f.drain_grace = 0.2
        await src.start()
        try:
            await wait_for(lambda: len(sink.events()) == 7)
            # auditd's own rotation: rename to audit.log.1, open a new audit.log
            os.rename(log, tmp_path / "audit.log.1")
            append(log, inter)
            await wait_for(lambda: any(isinstance(i, Retired) for i in sink.items))
            await wait_for(lambda: len(sink.events()) == 7 + 6)
        finally:
            await src.stop()

    asyncio.run(go())
    # The old file's events all come before its Retired marker; the new file's need not.
    retired = next(i for i, x in enumerate(sink.items) if isinstance(x, Retired))
    old = sink.items[retired].inode
    assert sink.lines()[0].position.inode == old
    later = [x.position for x in sink.items[retired:] if isinstance(x, Line)]
    assert not [p for p in later if isinstance(p, FilePosition) and p.inode == old]
    assert [e.pid for e in sink.events()][7:] == [2301, 2406, 2407, 2302, 2408, 2303]
