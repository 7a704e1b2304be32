"""The package's imports: no module imports itself back (no cycle), and imports point down the
layers (cli → daemon → stages → store → vocabulary), never up.

Every ``import``/``from ... import`` of a sshmonitord module counts, also the ones inside
functions: a late import hides a cycle from Python's start-up, not from the design.

Two kinds of edge are left out, on purpose:

* imports under ``if TYPE_CHECKING:`` never run; they exist for annotations only (e.g. the
  pipeline names the session tracker's type without importing the audit trail);
* the implicit import of a module's own package: ``import sshmonitord.notify.queue`` runs
  ``notify/__init__.py`` first, but counting that would make every package whose ``__init__``
  re-exports a submodule a "cycle". An explicit ``from .. import x`` of a package's
  ``__init__`` does count.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sshmonitord

PKG = "sshmonitord"
ROOT = Path(sshmonitord.__file__).parent

# The layers, top first. A unit is a top-level module or a subpackage of sshmonitord (its
# modules import each other freely, without cycles). A unit may import units of its own
# layer or below, never above. Within the stage layer, "stages" may use each other's
# vocabulary; the order that matters there is that no stage reaches up into the pipeline,
# the daemon or a command.
LAYERS: list[tuple[str, set[str]]] = [
    ("entry", {"__main__"}),
    ("commands", {"cli"}),
    ("wiring", {"daemon", "replay"}),
    ("pipeline", {"pipeline", "parse_worker"}),
    ("stages", {"sources", "parse", "detect", "respond", "notify", "audit"}),
    ("store", {"store"}),
    ("services", {"paths", "control", "systemd", "metrics"}),
    (
        "vocabulary",
        {"events", "config", "addresses", "timefmt", "log", "aio", "measure", "lazy", "__init__"},
    ),
]

# Cycles that live in modules another change of issue #12 is still rewriting, each with the
# issue it is tracked in. Empty when there are none; the test fails if one listed here is
# gone, so the list cannot go stale.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported sshmonitord module (or package __init__), dotted
    line: int
    type_only: bool


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node below ``node``, with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, type_only
                yield from _walk(stmt, type_only)
            continue
        yield child, type_only
        yield from _walk(child, type_only)


def imports(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """The sshmonitord modules ``name`` imports, wherever in the file."""
    is_pkg = path.name == "__init__.py"
    out: list[Import] = []
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node, type_only in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PKG or alias.name.startswith(PKG + "."):
                    out.append(Import(name, alias.name, node.lineno, type_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not (mod == PKG or mod.startswith(PKG + ".")):
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                # `from . import daemon` imports the module daemon; `from .x import y` the
                # module x (y being a name in it).
                out.append(Import(name, sub if sub in known else mod, node.lineno, type_only))
    return out


def all_imports() -> dict[str, list[Import]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def graph(include_type_only: bool = False) -> dict[str, list[Import]]:
    """Module → the modules it imports (unresolvable imports are test_every_import_resolves's
    business)."""
    known = modules()
    return {
        name: [
            i
            for i in edges
            if (include_type_only or not i.type_only) and i.target != name and i.target in known
        ]
        for name, edges in all_imports().items()
    }


def strongly_connected(g: dict[str, list[Import]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other (size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for e in g[v]:
            w = e.target
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def one_cycle(g: dict[str, list[Import]], group: list[str]) -> list[Import]:
    """A concrete cycle inside a strongly connected group, as the imports that make it."""
    members = set(group)
    start = group[0]
    # Breadth-first from start back to start, inside the group.
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in g[v]:
                if e.target not in members:
                    continue
                if e.target == start:
                    return [*paths[v], e]
                if e.target not in paths:
                    paths[e.target] = [*paths[v], e]
                    nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def describe(cycle: list[Import]) -> str:
    return " -> ".join(f"{e.source}:{e.line}" for e in cycle) + f" -> {cycle[0].source}"


def unit(module: str) -> str:
    """The layer unit a module belongs to: ``sshmonitord.notify.queue`` → ``notify``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(u: str) -> int:
    for i, (_name, units) in enumerate(LAYERS):
        if u in units:
            return i
    raise AssertionError(f"{u} is in no layer: add it to LAYERS in tests/test_imports.py")


def unit_graph(g: dict[str, list[Import]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for v, edges in g.items():
        out.setdefault(unit(v), set())
        for e in edges:
            if unit(e.target) != unit(v):
                out[unit(v)].add(unit(e.target))
    return out


# --------------------------------------------------------------------------- the tests


def test_the_walk_sees_late_and_relative_imports() -> None:
    """The checker itself: a function-level import counts, a TYPE_CHECKING one does not."""
    g = graph(include_type_only=True)
    targets = {(e.target, e.type_only) for e in g[f"{PKG}.pipeline"]}
    assert (f"{PKG}.store", False) in targets
    # The session tracker is imported for annotations only.
    assert any(t == f"{PKG}.audit" and only for t, only in targets)
    assert all(not (t == f"{PKG}.audit" and not only) for t, only in targets)
    late = [e for e in graph()[f"{PKG}.cli.daemon"] if e.target == f"{PKG}.daemon"]
    assert late, "cli/daemon.py imports the daemon inside a function: the walk must see it"


def test_every_import_resolves() -> None:
    known = modules()
    missing = [
        f"{name}:{i.line} imports {i.target}"
        for name, edges in all_imports().items()
        for i in edges
        if i.target not in known
    ]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_no_import_cycles() -> None:
    g = graph()
    found = {frozenset(group): group for group in strongly_connected(g)}
    unexpected = [
        describe(one_cycle(g, group)) for key, group in found.items() if key not in KNOWN_CYCLES
    ]
    stale = [sorted(k) for k in KNOWN_CYCLES if k not in found]
    assert not unexpected, "import cycles (module:line of each import):\n" + "\n".join(unexpected)
    assert not stale, f"known cycles that are gone: remove them from KNOWN_CYCLES: {stale}"


def test_no_package_level_cycles() -> None:
    """Between units too: notify may use the store, the store never notify."""
    ug = unit_graph(graph())
    g = {u: [Import(u, t, 0, False) for t in sorted(ts)] for u, ts in ug.items()}
    cycles = [" -> ".join([*group, group[0]]) for group in strongly_connected(g)]
    assert not cycles, "package-level import cycles:\n" + "\n".join(cycles)


def test_imports_point_down_the_layers() -> None:
    up = []
    for v, edges in graph().items():
        for e in edges:
            src, dst = unit(v), unit(e.target)
            if layer_of(dst) < layer_of(src):
                up.append(
                    f"{v}:{e.line} ({LAYERS[layer_of(src)][0]}) imports {e.target} "
                    f"({LAYERS[layer_of(dst)][0]})"
                )
    assert not up, "imports pointing up a layer:\n" + "\n".join(up)


# SQL as this package writes it: a statement's opening words, at the start of a string.
SQL = re.compile(
    r"^\s*(SELECT\b.*\bFROM\b|SELECT\s+\d|INSERT\s+(OR\s+\w+\s+)?INTO\b|UPDATE\s+\w+\s+SET\b"
    r"|DELETE\s+FROM\b|(CREATE|DROP|ALTER)\s+(TABLE|INDEX|VIEW|TRIGGER)\b|PRAGMA\s"
    r"|(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b)",
    re.DOTALL,
)


def sql_outside_store() -> list[str]:
    """String constants (docstrings aside) shaped like SQL, and calls of a connection's
    execute methods, in modules outside store/."""
    out = []
    for name, path in modules().items():
        if unit(name) == "store":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        docs = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for n in ast.walk(tree):
            if (
                isinstance(n, ast.Constant)
                and isinstance(n.value, str)
                and id(n) not in docs
                and SQL.match(n.value)
            ):
                out.append(f"{name}:{n.lineno}: {n.value[:60]!r}")
            elif (
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr in ("execute", "executemany", "executescript")
            ):
                out.append(f"{name}:{n.lineno}: .{n.func.attr}()")
    return out


def test_sql_finder_sees_sql() -> None:
    assert SQL.match("SELECT net, COUNT(*) FROM bans GROUP BY net")
    assert SQL.match("INSERT INTO line_trace(source, text) VALUES (?, ?)")
    assert SQL.match("BEGIN IMMEDIATE")
    # iptables' target is not SQL.
    assert not SQL.match("DROP") and not SQL.match("select a channel")


def test_all_sql_is_under_store() -> None:
    """Issue #12: every SQL statement of the package lives in store/; stages call its
    typed methods."""
    found = sql_outside_store()
    assert not found, "SQL outside sshmonitord/store/:\n" + "\n".join(found)


def test_the_daemon_runs_no_sql_and_chooses_no_backend() -> None:
    """The daemon builds and wires: SQL lives in store/, backend and channel choice in
    respond/ and notify/ (issue #12)."""
    text = (ROOT / "daemon.py").read_text(encoding="utf-8")
    for word in ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", ".execute(", "make_backend("):
        assert word not in text, f"daemon.py still has {word.strip()!r}"
    text = (ROOT / "pipeline.py").read_text(encoding="utf-8")
    for word in ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE "):
        assert word not in text, f"pipeline.py still has {word.strip()!r}"


def test_the_daemon_wires_what_the_stages_choose(tmp_path: Path) -> None:
    """In process, the real stages on a real store: the backend is the one respond/ chooses
    for the config, the daily report goes through the alert queue's spool, and the status
    line summarises the source stages the daemon built."""
    import asyncio

    from sshmonitord import config, daemon
    from sshmonitord.respond.backend import NoneBackend

    log = tmp_path / "auth.log"
    log.write_text("")
    cfg_path = tmp_path / "sshmonitor.yaml"
    cfg_path.write_text(
        f"control: {{socket: {tmp_path / 'control.sock'}}}\n"
        f"sources: {{mode: file, files: [{log}]}}\n"
        "response: {backend: nftables}\n"
        "notify: {report: {enabled: true}}\n"
    )
    cfg = config.load_config(str(cfg_path))

    async def main() -> None:
        # --dry-run: the nftables the config names is never touched, the "none" backend is.
        d = daemon.Daemon(cfg, state_dir=str(tmp_path / "state"), dry_run=True)
        await d._open()
        try:
            assert d.bans is not None and isinstance(d.bans.backend, NoneBackend)
            assert d.report is not None and d.report.queue is d.alerts
            assert [type(s).__name__ for s in d.sources] == ["Tailer"]
            assert all(s in d.stages for s in d.sources)
            assert d.status_line().startswith(f"following {log}")
            assert await d._store_responds(timeout=5)
            # The ban manager answers its own control commands; the daemon only routes them.
            assert d.control.handlers["bans"] == d.bans.commands()["bans"]
            assert (await d.control.handlers["bans"]({}))["bans"] == []
        finally:
            await d._shutdown()

    asyncio.run(main())


# --------------------------------------------------------------------------- start-up cost

# What the daemon loads only for the configs that use it (issue #17: ~2 MB of its peak RSS
# was modules a default config never runs): channel libraries and modules, the fleet, the
# metrics endpoint, other firewall backends, the operator commands, test-only libraries.
# watchdog too on Linux: the tailer reads inotify itself and keeps watchdog as its fallback.
NOT_AT_START = (
    "httpx",
    "httpcore",
    "psycopg",
    "prometheus_client",
    "hypothesis",
    "email",
    "smtplib",
    "difflib",
    "gzip",
    "html",
    "watchdog",
    f"{PKG}.metrics",
    f"{PKG}.store.fleet",
    f"{PKG}.detect.fleet",
    f"{PKG}.notify.smtp",
    f"{PKG}.notify.sendmail",
    f"{PKG}.notify.webhook",
    f"{PKG}.notify.forwardemail",
    f"{PKG}.respond.nftables",
    f"{PKG}.respond.ipset",
    f"{PKG}.respond.command",
    f"{PKG}.cli.status",
    f"{PKG}.cli.bans",
    f"{PKG}.cli.replay",
    f"{PKG}.cli.fleet",
    f"{PKG}.cli.audit",
    f"{PKG}.cli.alerts",
)

STARTUP = """
import asyncio, json, sys
from sshmonitord.cli.daemon import daemon_main  # what `python -m sshmonitord` imports
from sshmonitord import config, daemon

cfg = config.load_config(sys.argv[1])

async def main():
    d = daemon.Daemon(cfg, state_dir=sys.argv[2], dry_run=True)
    await d._open()  # every stage built and started: sources, alerts, report, bans
    try:
        await asyncio.sleep(0.2)
        if len(sys.argv) > 3:  # a channel's send, to the closed port
            from sshmonitord.notify import Message
            try:
                webhook = d.alerts.channels["webhook"]
                await webhook.send(Message("s", "t", "", [], id="x"))
            except Exception as exc:
                print(type(exc).__name__, file=sys.stderr)
    finally:
        await d._shutdown()

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def _started_modules(tmp_path: Path, extra: str = "", send: bool = False) -> set[str]:
    import json
    import subprocess
    import sys

    log = tmp_path / "auth.log"
    log.write_text("")
    cfg = tmp_path / "sshmonitor.yaml"
    cfg.write_text(
        f"control: {{socket: {tmp_path / 'control.sock'}}}\n"
        f"sources: {{mode: file, files: [{log}]}}\n" + extra
    )
    argv = [sys.executable, "-c", STARTUP, str(cfg), str(tmp_path / "state")]
    out = subprocess.run(
        argv + (["send"] if send else []), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _loaded(mods: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in mods or any(m.startswith(n + ".") for m in mods))


def test_startup_leaves_the_optional_modules_unloaded(tmp_path: Path) -> None:
    """A daemon started (in a fresh interpreter, its stages running) with a config that
    names no channel, fleet, metrics or firewall: none of NOT_AT_START is imported."""
    mods = _started_modules(tmp_path, "response: {enabled: false}\n")
    assert f"{PKG}.sources.tailer" in mods and f"{PKG}.notify.queue" in mods  # it did start
    loaded = _loaded(mods, NOT_AT_START)
    assert not loaded, "start-up imports what it does not need (issue #17):\n" + "\n".join(loaded)


def test_a_configured_channel_and_backend_load_when_built(tmp_path: Path) -> None:
    """The lazy imports still happen where they are needed: a webhook channel and the
    nftables backend the config names are built at start (their modules loaded), and the
    webhook's httpx loads with its first send (which fails cleanly: nothing listens)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    extra = (
        "response: {backend: nftables}\n"
        f"notify: {{channels: [{{type: webhook, url: 'http://127.0.0.1:{port}/hook'}}, "
        "{type: smtp, host: 127.0.0.1, sender: a@example.org, to: [b@example.org]}]}\n"
    )
    mods = _started_modules(tmp_path, extra, send=True)
    assert f"{PKG}.notify.webhook" in mods and f"{PKG}.notify.smtp" in mods
    assert "smtplib" in mods and "httpx" in mods
    # --dry-run: the nftables the config names is never touched, so never imported.
    assert f"{PKG}.respond.nftables" not in mods
    assert not _loaded(mods, (f"{PKG}.notify.sendmail", f"{PKG}.notify.forwardemail"))


def test_make_backend_builds_every_kind() -> None:
    from sshmonitord.respond.backend import NoneBackend
    from sshmonitord.respond.backends import KINDS, make_backend

    built = {
        "nftables": {"table": "sshmonitor_test"},
        "ipset": {"set4": "a4", "set6": "a6"},
        "command": {"ban": ["true"], "unban": ["true"]},
        "none": {},
    }
    for kind in KINDS:
        b = make_backend(kind, **built[kind])
        assert type(b).__module__.endswith(kind if kind != "none" else "backend")
    assert isinstance(make_backend("none"), NoneBackend)
    import pytest

    with pytest.raises(ValueError, match="unknown firewall backend"):
        make_backend("iptables")
    with pytest.raises(ValueError, match="backend nftables"):
        make_backend("nftables", nonsense=1)


if __name__ == "__main__":  # `python tests/test_imports.py`: print the package-level graph
    for u, targets in sorted(unit_graph(graph()).items(), key=lambda kv: layer_of(kv[0])):
        print(f"{u:10} -> {', '.join(sorted(targets, key=layer_of)) or '-'}")
