"""The Debian package (debian/, scripts/build-deb, scripts/install, scripts/gen-manpages).

Fast tests first (no root): the generated man pages cover every subcommand, option and config
key, compared with the real argparse parsers and the config dataclasses; the versions agree;
the old installer's units are the ones the postinst recognises.

Then the real thing, no mocks: the package is built once per session with scripts/build-deb
(dpkg-buildpackage, dh-python/pybuild), checked with lintian, and installed with apt into a
throwaway Debian 12 root made by mmdebstrap (minbase + python3, plus systemd and man-db so
the root's own `systemd-analyze verify` and `man` can check the unit and the pages). The root
is shared by the tests of this module, in file order; each test first puts the package in the
state it needs (installed or purged), so any one of them also runs alone. Every chroot
command runs in a private mount namespace with its own /proc mount (`unshare
--mount-proc`), so nothing stays mounted, and the root is removed in a finally. No systemd
runs in the root (and /usr/sbin/policy-rc.d says 101): the maintainer scripts enable the
unit (deb-systemd-helper's records, the wants link) but start nothing.

As root with mmdebstrap, dpkg-buildpackage and lintian installed (scripts/test's packages);
elsewhere they skip, and in CI (CI=true) they fail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from conftest import need

import sshmonitord
from sshmonitord import cli, config

REPO = Path(__file__).resolve().parent.parent
UNIT_PATH = "/lib/systemd/system/sshmonitor.service"
OLD_UNIT = "/etc/systemd/system/sshmonitor.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/sshmonitor.service"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# lintian warnings we accept, each with the reason (the lintian test runs last: the root
# fixture builds the package while mmdebstrap downloads). Empty: lintian reports none today (only
# the info tag package-supports-alternative-init-but-no-init.d-script: no sysvinit script).
EXPLAINED_LINTIAN_WARNINGS: dict[str, str] = {}


# --------------------------------------------------------------------------- fast tests


def gen_manpages() -> ModuleType:
    path = REPO / "scripts" / "gen-manpages"
    loader = importlib.machinery.SourceFileLoader("gen_manpages", str(path))
    spec = importlib.util.spec_from_loader("gen_manpages", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def roff_lit(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-")


def walk_commands(
    p: typing.Any, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], typing.Any]]:
    """Every subcommand of an argparse parser, by its path of names (independent of the
    generator's own walk)."""
    for action in p._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from walk_commands(sub, (*prefix, name))


def option_strings(p: typing.Any) -> list[str]:
    return [
        o
        for a in p._actions
        if a.help != "==SUPPRESS==" and a.dest != "help"
        for o in a.option_strings
    ]


def sections(page: str) -> dict[str, str]:
    """A page's text by .SS heading."""
    out: dict[str, str] = {}
    for chunk in re.split(r"^\.SS ", page, flags=re.M)[1:]:
        head, _, body = chunk.partition("\n")
        out[head.strip('"')] = body
    return out


def schema_keys(cls: typing.Any, prefix: str = "") -> list[tuple[str, bool]]:
    """Every YAML key of the config schema, dotted (``notify.channels[].port`` for the
    keys of each channel type), with whether it is a section; walked here independently
    of the generator."""
    keys: list[tuple[str, bool]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = prefix + f.name
        tp = hints[f.name]
        keys.append((key, dataclasses.is_dataclass(tp)))
        if dataclasses.is_dataclass(tp):
            keys.extend(schema_keys(tp, key + "."))
        elif typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            members = typing.get_args(item)
            if members and all(dataclasses.is_dataclass(m) for m in members):
                for chan in members:
                    keys.extend(
                        k for k in schema_keys(chan, key + "[].") if not k[0].endswith("[].type")
                    )
    return keys


def test_sshmonitor_page_covers_every_command_and_option() -> None:
    page = gen_manpages().pages("2026-01-01")["sshmonitor.8"]
    by_section = sections(page)
    commands = list(walk_commands(cli.parser()))
    assert len(commands) >= 10
    for path, sub in commands:
        head = roff_lit("sshmonitor " + " ".join(path))
        assert head in by_section, f"sshmonitor(8) has no section for {' '.join(path)}"
        body = by_section[head]
        for opt in option_strings(sub):
            assert f"\\fB{roff_lit(opt)}\\fR" in body, f"{' '.join(path)} {opt}: not in its section"
        for a in sub._actions:
            if not a.option_strings and a.__class__.__name__ != "_SubParsersAction":
                assert (a.metavar or a.dest) in body.replace("\\-", "-"), (path, a.dest)
    for opt in option_strings(cli.parser()):
        assert f"\\fB{roff_lit(opt)}\\fR" in page


def test_sshmonitord_page_covers_every_option() -> None:
    page = gen_manpages().pages("2026-01-01")["sshmonitord.8"]
    options = option_strings(cli.daemon_parser())
    assert "--config" in options and "--state-dir" in options
    for opt in options:
        assert f"\\fB{roff_lit(opt)}\\fR" in page, opt
    assert f".TP\n{cli.EX_CONFIG}\n" in page  # the exit status the unit does not restart on


def test_config_page_covers_every_key_with_its_default() -> None:
    page = gen_manpages().pages("2026-01-01")["sshmonitor.yaml.5"]
    keys = schema_keys(config.Config)
    names = [k for k, _ in keys]
    assert "sources.journal.trusted.sshd_exe" in names and "notify.channels[].port" in names
    by_section = sections(page)
    for key, is_section in keys:
        if is_section:
            assert roff_lit(key) in by_section, f"sshmonitor.yaml(5) has no section {key}"
        else:
            assert f".TP\n\\fB{roff_lit(key)}\\fR\n" in page, f"sshmonitor.yaml(5) lacks {key}"
    for f in dataclasses.fields(config.Config):  # a heading for every top-level key
        if not f.metadata.get("internal"):
            assert f.name in by_section, f"no section {f.name}"
    # Defaults are shown as YAML would say them: a sample of each kind.
    assert "default: 10m" in page  # rules.bruteforce.window, a Duration of 600 s
    assert "default: nftables" in page
    assert "integer 1-65535; default: 587" in page


def test_man_pages_lint_clean(tmp_path: Path) -> None:
    need(shutil.which("mandoc") is not None, "mandoc (apt-get install mandoc)")
    need(shutil.which("groff") is not None, "groff (apt-get install groff-base)")
    for name, text in gen_manpages().pages("2026-01-01").items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        lint = subprocess.run(
            ["mandoc", "-T", "lint", "-W", "warning", str(path)], capture_output=True, text=True
        )
        assert lint.stdout + lint.stderr == "", f"{name}:\n{lint.stdout}{lint.stderr}"
        render = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(path)], capture_output=True, text=True
        )
        assert render.returncode == 0 and render.stderr == "", f"{name}: {render.stderr}"


def test_versions_agree() -> None:
    changelog = (REPO / "debian" / "changelog").read_text().split("\n", 1)[0]
    m = re.match(r"sshmonitord \(([^)]+)\)", changelog)
    assert m, changelog
    assert m.group(1) == sshmonitord.__version__, (
        "debian/changelog's newest entry must be the package's version (scripts/build-deb "
        "refuses otherwise): add an entry"
    )
    pyproject = (REPO / "pyproject.toml").read_text()
    static = re.search(r'^\[project\][^\[]*?^version = "([^"]+)"', pyproject, re.M | re.S)
    if static:
        assert static.group(1) == sshmonitord.__version__


def test_repo_unit_is_the_packaged_unit() -> None:
    unit = (REPO / "systemd" / "sshmonitor.service").read_text()
    assert "ExecStart=/usr/bin/sshmonitord --config /etc/sshmonitor.yaml\n" in unit
    assert "Documentation=man:sshmonitord(8)" in unit
    assert "Documentation=file:/usr/share/doc/sshmonitord/systemd.md\n" in unit
    assert "/opt/" not in unit and "/usr/local/bin" not in unit
    install = (REPO / "debian" / "sshmonitord.install").read_text()
    assert "systemd/sshmonitor.service lib/systemd/system/" in install


def old_installer_units() -> list[bytes]:
    """Every version of systemd/sshmonitor.service in git history that the old installer
    copied to /etc/systemd/system (its ExecStart is /usr/local/bin/sshmonitord), newest
    first."""
    need(shutil.which("git") is not None and (REPO / ".git").exists(), "a git checkout")
    revs = subprocess.run(
        ["git", "-C", str(REPO), "rev-list", "HEAD", "--", "systemd/sshmonitor.service"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    units = []
    for rev in revs:
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:systemd/sshmonitor.service"],
            capture_output=True,
            check=True,
        ).stdout
        if b"ExecStart=/usr/local/bin/sshmonitord" in text and text not in units:
            units.append(text)
    need(bool(units), "the old installer's unit in git history")
    return units


def test_postinst_knows_every_old_installer_unit() -> None:
    postinst = (REPO / "debian" / "sshmonitord.postinst").read_text()
    block = postinst.split('OLD_INSTALLER_UNITS="', 1)[1].split('"', 1)[0]
    known = set(block.split())
    for unit in old_installer_units():
        assert hashlib.sha256(unit).hexdigest() in known


def test_scripts_parse() -> None:
    for script in (
        "scripts/install",
        "scripts/build-deb",
        "debian/sshmonitord.postinst",
        "debian/sshmonitord.postrm",
    ):
        r = subprocess.run(["sh", "-n", str(REPO / script)], capture_output=True, text=True)
        assert r.returncode == 0, f"{script}: {r.stderr}"
    assert "#DEBHELPER#" in (REPO / "debian" / "sshmonitord.postinst").read_text()


# --------------------------------------------------------------------------- the package


def _build_ready() -> bool:
    if shutil.which("dpkg-buildpackage") is None:
        return os.geteuid() == 0 and shutil.which("apt-get") is not None
    if os.geteuid() == 0:
        return True  # build-deb installs what is missing
    r = subprocess.run(["dpkg-checkbuilddeps"], cwd=REPO, capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="session")
def deb() -> Path:
    """dist/sshmonitord_<version>_all.deb, built once per session by scripts/build-deb."""
    need(_build_ready(), "dpkg-buildpackage and the build dependencies (or root to install them)")
    t0 = time.monotonic()
    r = subprocess.run(
        [str(REPO / "scripts" / "build-deb")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, f"build-deb failed:\n{r.stdout}\n{r.stderr}"
    path = REPO / r.stdout.strip().splitlines()[-1]
    assert path.name == f"sshmonitord_{sshmonitord.__version__}_all.deb", path
    assert path.is_file()
    print(f"built {path} in {time.monotonic() - t0:.1f} s")
    return path


def deb_files(deb: Path) -> list[str]:
    """The files (not directories) the package ships, as absolute paths."""
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    names = subprocess.run(
        ["tar", "-t", "-v"], input=listing, capture_output=True, check=True
    ).stdout.decode()
    out = []
    for line in names.splitlines():
        if line.startswith("d"):
            continue
        name = line.split()[5]
        out.append(name.removeprefix("."))
    return out


class Root:
    """A throwaway Debian 12 root. Commands run chrooted, each in its own mount namespace
    with a private /proc (gone when the command ends)."""

    ENV: typing.ClassVar[dict[str, str]] = {
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "DEBIAN_FRONTEND": "noninteractive",
        "TERM": "dumb",
    }

    def __init__(self, path: Path) -> None:
        self.path = path

    def p(self, inner: str) -> Path:
        return self.path / inner.lstrip("/")

    def run(
        self, *argv: str, check: bool = True, timeout: float = 300, merge: bool = False
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            f"--mount-proc={self.p('proc')}",
            "chroot",
            str(self.path),
            *argv,
        ]
        r = subprocess.run(
            cmd,
            env=self.ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"in the root: {' '.join(argv)} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
            )
        return r

    def status(self) -> str:
        r = self.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "sshmonitord", check=False)
        return r.stdout.strip() if r.returncode == 0 else "unknown"

    def copy_in(self, src: Path, inner: str) -> str:
        shutil.copy(src, self.p(inner))
        return inner

    def install(self, deb: Path, *extra: str) -> str:
        self.copy_in(deb, "/tmp/" + deb.name)
        r = self.run(
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *extra,
            "/tmp/" + deb.name,
            merge=True,
            timeout=600,
        )
        return r.stdout

    def purge(self) -> str:
        if self.status() == "unknown":
            return ""
        return self.run("apt-get", "purge", "-y", "-q", "sshmonitord", merge=True).stdout

    def ensure_installed(self, deb: Path) -> None:
        if self.status() != "ii":
            self.install(deb)

    def mounts(self) -> list[str]:
        prefix = str(self.path) + "/"
        with open("/proc/self/mountinfo") as f:
            return [ln.split()[4] for ln in f if ln.split()[4].startswith(prefix)]


def _bootstrap(target: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3,systemd,man-db",
            "--skip=cleanup/apt/lists",
            "bookworm",
            str(target),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PATH": SYSTEM_PATH},
    )


@pytest.fixture(scope="module")
def root(request: pytest.FixtureRequest) -> Iterator[Root]:
    need(os.geteuid() == 0, "root (chroot, mmdebstrap)")
    need(shutil.which("mmdebstrap") is not None, "mmdebstrap (apt-get install mmdebstrap)")
    need(shutil.which("unshare") is not None, "unshare (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="sshmonitord-pkgtest-"))
    target = base / "root"
    log = base / "mmdebstrap.log"
    proc = _bootstrap(target, log)
    r = Root(target)
    try:
        t0 = time.monotonic()
        request.getfixturevalue("deb")  # builds while mmdebstrap downloads
        rc = proc.wait(timeout=900)
        assert rc == 0, f"mmdebstrap failed:\n{log.read_text()[-3000:]}"
        print(f"root ready after {time.monotonic() - t0:.1f} s")
        policy = r.p("/usr/sbin/policy-rc.d")
        policy.write_text("#!/bin/sh\n# tests: start no services\nexit 101\n")
        policy.chmod(0o755)
        yield r
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = r.mounts()
        for m in sorted(left, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        if r.mounts():
            raise AssertionError(f"still mounted under {target}, not removing it: {r.mounts()}")
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


AUTH_LOG = """\
Nov 24 21:49:20 vm sshd[6222]: Failed password for root from 203.0.113.7 port 45554 ssh2
Nov 24 21:49:22 vm sshd[6222]: Failed password for root from 203.0.113.7 port 45554 ssh2
Nov 24 21:49:25 vm sshd[6222]: Failed password for root from 203.0.113.7 port 45554 ssh2
Nov 24 21:49:27 vm sshd[6223]: Failed password for invalid user admin from 203.0.113.7 port 45560 ssh2
Nov 24 21:49:29 vm sshd[6223]: Failed password for invalid user admin from 203.0.113.7 port 45560 ssh2
Nov 24 21:49:31 vm sshd[6224]: Failed password for invalid user oracle from 203.0.113.7 port 45562 ssh2
"""


def test_install_brings_dependencies_and_runs_on_system_python(root: Root, deb: Path) -> None:
    root.purge()
    out = root.install(deb)
    assert root.status() == "ii", out
    # apt resolved the dependencies from Debian: none was in the bare root.
    for dep in (
        "python3-httpx",
        "python3-yaml",
        "python3-structlog",
        "python3-sdnotify",
        "python3-watchdog",
        "python3-prometheus-client",
    ):
        assert root.run("dpkg-query", "-W", "-f=${Status}", dep).stdout == "install ok installed"
    for cmd in ("sshmonitor", "sshmonitord"):
        assert root.p(f"/usr/bin/{cmd}").read_text().splitlines()[0] == "#!/usr/bin/python3"
        help_text = root.run(f"/usr/bin/{cmd}", "--help").stdout
        assert help_text.startswith(f"usage: {cmd}"), help_text
    version = root.run("sshmonitor", "--version").stdout.strip()
    assert version == f"sshmonitor {sshmonitord.__version__}"
    where = root.run("python3", "-c", "import sshmonitord; print(sshmonitord.__file__)").stdout
    assert where.strip() == "/usr/lib/python3/dist-packages/sshmonitord/__init__.py"
    # Byte code compiled at install time (the unit's /usr is read-only).
    assert list(root.p("/usr/lib/python3/dist-packages/sshmonitord/__pycache__").glob("*.pyc"))


def test_shipped_config_passes_check_config(root: Root, deb: Path) -> None:
    root.ensure_installed(deb)
    r = root.run("sshmonitor", "check-config", "/etc/sshmonitor.yaml")
    assert r.stdout.strip() == "ok", r.stdout + r.stderr
    assert (
        root.p("/etc/sshmonitor.yaml").read_bytes() == (REPO / "etc/sshmonitor.yaml").read_bytes()
    )
    conffiles = root.p("/var/lib/dpkg/info/sshmonitord.conffiles").read_text().split()
    assert conffiles == ["/etc/sshmonitor.yaml"]
    # 0640 root:sshmonitor through a statoverride; sshmonitor is a system user with no home.
    user = root.run("getent", "passwd", "sshmonitor").stdout.strip().split(":")
    assert int(user[2]) < 1000 and user[5] == "/nonexistent" and user[6] == "/usr/sbin/nologin"
    override = root.run("dpkg-statoverride", "--list", "/etc/sshmonitor.yaml").stdout.split()
    assert override == ["root", "sshmonitor", "640", "/etc/sshmonitor.yaml"]
    st = root.p("/etc/sshmonitor.yaml").stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, int(user[3]))


def test_replay_on_a_sample_auth_log(root: Root, deb: Path) -> None:
    root.ensure_installed(deb)
    root.p("/tmp/auth.log").write_text(AUTH_LOG)
    out = root.run("sshmonitor", "replay", "--timezone", "UTC", "/tmp/auth.log").stdout
    assert "Events: 6" in out, out
    assert "auth_failure" in out and "203.0.113.7" in out, out
    assert "bruteforce" in out, out  # the finding the rules would raise (5 failures in 10m)
    j = root.run("sshmonitor", "replay", "--format", "json", "--timezone", "UTC", "/tmp/auth.log")
    assert len(j.stdout.splitlines()) == 6


def test_unit_verifies_and_is_enabled(root: Root, deb: Path) -> None:
    root.ensure_installed(deb)
    unit = root.p(UNIT_PATH).read_bytes()
    assert unit == (REPO / "systemd/sshmonitor.service").read_bytes()
    # systemd 252's verify, run by the root's own systemd-analyze: it resolves ExecStart
    # in the root and runs the root's `man` for each Documentation=man: page.
    v = root.run("systemd-analyze", "verify", UNIT_PATH, check=False)
    assert v.returncode == 0 and v.stdout + v.stderr == "", v.stdout + v.stderr
    doc = re.search(r"^Documentation=file:(\S+)$", unit.decode(), re.M)
    assert doc and root.p(doc.group(1)).is_file(), "Documentation= file is missing"
    # What the maintainer scripts recorded (no systemd runs here, so nothing started).
    link = root.p(WANTS)
    assert link.is_symlink() and os.readlink(link) == UNIT_PATH
    state = root.p("/var/lib/systemd/deb-systemd-helper-enabled/sshmonitor.service.dsh-also")
    assert WANTS in state.read_text().split()
    assert root.p(
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/sshmonitor.service"
    ).exists()
    assert root.run("systemctl", "is-enabled", "sshmonitor.service").stdout.strip() == "enabled"


def test_man_pages_installed_and_render(root: Root, deb: Path) -> None:
    root.ensure_installed(deb)
    for page, section in (("sshmonitor", 8), ("sshmonitord", 8), ("sshmonitor.yaml", 5)):
        path = root.p(f"/usr/share/man/man{section}/{page}.{section}.gz")
        assert path.is_file(), path
        r = root.run("man", "--warnings", "-P", "cat", f"{section}", page, check=False)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert page.upper() in r.stdout.splitlines()[0]
    text = root.run("man", "-P", "cat", "8", "sshmonitor").stdout
    assert "sshmonitor check-config" in text and "sshmonitor fleet init" in text
    assert "notify.channels[].port" in root.run("man", "-P", "cat", "5", "sshmonitor.yaml").stdout


def test_docs_installed_uncompressed(root: Root, deb: Path) -> None:
    root.ensure_installed(deb)
    doc = root.p("/usr/share/doc/sshmonitord")
    for md in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert (doc / md.name).read_bytes() == md.read_bytes(), md.name
    example = doc / "examples" / "sshmonitor.yaml"
    assert example.read_bytes() == (REPO / "etc/sshmonitor.yaml").read_bytes()
    assert (doc / "copyright").is_file() and (doc / "changelog.gz").is_file()


def _reversion(deb: Path, work: Path, version: str, new_default: bool) -> Path:
    """A copy of the built package with another version (and optionally another default
    config), made with dpkg-deb: no second build."""
    tree = work / version
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    control.write_text(re.sub(r"^Version: .*$", f"Version: {version}", text, flags=re.M))
    if new_default:
        conf = tree / "etc" / "sshmonitor.yaml"
        conf.write_text(conf.read_text() + "\n# a new default in " + version + "\n")
    out = work / f"sshmonitord_{version}_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(tree), str(out)], check=True, capture_output=True)
    return out


def test_conffile_edit_survives_upgrades(root: Root, deb: Path, tmp_path: Path) -> None:
    root.ensure_installed(deb)
    conf = root.p("/etc/sshmonitor.yaml")
    edited = conf.read_text().replace("  level: info", "  level: debug", 1)
    edited += "\n# operator's note: kept across upgrades\n"
    assert edited != conf.read_text()
    conf.write_text(edited)
    v = sshmonitord.__version__
    # 1. same default config in the new version: dpkg keeps the edit without asking.
    same = _reversion(deb, tmp_path, f"{v}+test1", new_default=False)
    root.copy_in(same, "/tmp/" + same.name)
    out = root.run("dpkg", "-i", "/tmp/" + same.name, merge=True).stdout
    assert conf.read_text() == edited, out
    # 2. a changed default: the operator's file stays, the new one lands beside it.
    changed = _reversion(deb, tmp_path, f"{v}+test2", new_default=True)
    root.copy_in(changed, "/tmp/" + changed.name)
    out = root.run(
        "dpkg", "-i", "--force-confdef", "--force-confold", "/tmp/" + changed.name, merge=True
    ).stdout
    assert conf.read_text() == edited, out
    assert "# a new default in" in root.p("/etc/sshmonitor.yaml.dpkg-dist").read_text()
    assert root.run("dpkg-query", "-W", "-f=${Version}", "sshmonitord").stdout == f"{v}+test2"
    assert root.run("sshmonitor", "check-config", "/etc/sshmonitor.yaml").stdout.strip() == "ok"
    st = conf.stat()
    assert st.st_mode & 0o777 == 0o640  # the statoverride holds across upgrades


def _make_state(root: Root) -> None:
    """State as systemd makes it for DynamicUser=yes + StateDirectory=sshmonitor."""
    user = root.run("getent", "passwd", "sshmonitor").stdout.strip().split(":")
    uid, gid = int(user[2]), int(user[3])
    private = root.p("/var/lib/private")
    private.mkdir(mode=0o700, exist_ok=True)
    state = private / "sshmonitor"
    state.mkdir(mode=0o700, exist_ok=True)
    for name in ("sshmonitor.db", "sshmonitor.db-wal"):
        (state / name).write_bytes(b"SQLite format 3\0")
        os.chown(state / name, uid, gid)
    os.chown(state, uid, gid)
    link = root.p("/var/lib/sshmonitor")
    if not link.is_symlink():
        link.symlink_to("private/sshmonitor")
    run_dir = root.p("/run/sshmonitor")
    run_dir.mkdir(mode=0o700, exist_ok=True)
    (run_dir / "control.sock").write_bytes(b"")


def test_remove_keeps_config_and_state_purge_removes_everything(root: Root, deb: Path) -> None:
    root.ensure_installed(deb)
    _make_state(root)
    conf_text = root.p("/etc/sshmonitor.yaml").read_text()
    shipped = deb_files(deb)
    assert "/usr/bin/sshmonitord" in shipped and UNIT_PATH in shipped

    out = root.run("apt-get", "remove", "-y", "-q", "sshmonitord", merge=True).stdout
    assert root.status() == "rc", out
    assert root.p("/etc/sshmonitor.yaml").read_text() == conf_text
    assert (root.p("/var/lib/sshmonitor") / "sshmonitor.db").is_file()
    assert root.run("getent", "passwd", "sshmonitor", check=False).returncode == 0

    out = root.purge()
    assert root.status() == "unknown", out
    leftovers = [
        path
        for path in [
            *shipped,
            "/etc/sshmonitor.yaml",
            "/etc/sshmonitor.yaml.dpkg-dist",
            "/etc/sshmonitor.yaml.dpkg-old",
            "/var/lib/sshmonitor",
            "/var/lib/private/sshmonitor",
            "/run/sshmonitor",
            WANTS,
            "/var/lib/systemd/deb-systemd-helper-enabled/sshmonitor.service.dsh-also",
            "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/sshmonitor.service",
            "/var/lib/systemd/deb-systemd-helper-masked/sshmonitor.service",
            "/usr/share/doc/sshmonitord",
            "/usr/lib/python3/dist-packages/sshmonitord",
        ]
        if os.path.lexists(root.p(path))
    ]
    assert not leftovers, f"left behind by purge: {leftovers}\n{out}"
    assert "sshmonitor" not in root.p("/var/lib/dpkg/statoverride").read_text()
    assert root.run("getent", "passwd", "sshmonitor", check=False).returncode == 2
    assert root.run("getent", "group", "sshmonitor", check=False).returncode == 2
    assert not list(root.p("/var/lib/dpkg/info").glob("sshmonitord.*"))


def _plant_old_installer(root: Root, unit: bytes) -> None:
    """What the old scripts/install left: a venv in /opt, links in /usr/local/bin, the unit
    in /etc/systemd/system (enabled), the static user, the config and its .dist."""
    root.run("userdel", "sshmonitor", check=False)  # left by an earlier test's purge
    root.run(
        "useradd",
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "sshmonitor",
    )
    venv_bin = root.p("/opt/sshmonitor/bin")
    venv_bin.mkdir(parents=True)
    root.p("/opt/sshmonitor/pyvenv.cfg").write_text("home = /usr/bin\n")
    for name in ("sshmonitor", "sshmonitord"):
        (venv_bin / name).write_text("#!/opt/sshmonitor/bin/python\n")
        (venv_bin / name).chmod(0o755)
        link = root.p(f"/usr/local/bin/{name}")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"/opt/sshmonitor/bin/{name}")
    root.p(OLD_UNIT).parent.mkdir(parents=True, exist_ok=True)
    root.p(OLD_UNIT).write_bytes(unit)
    wants = root.p(WANTS)
    wants.parent.mkdir(parents=True, exist_ok=True)
    wants.symlink_to(OLD_UNIT)
    conf = (REPO / "etc/sshmonitor.yaml").read_text().replace("  level: info", "  level: debug", 1)
    for path in ("/etc/sshmonitor.yaml", "/etc/sshmonitor.yaml.dist"):
        root.p(path).write_text(conf if path.endswith(".yaml") else conf + "# dist\n")
        root.run("chown", "root:sshmonitor", path)
        root.run("chmod", "0640", path)


def test_moves_from_the_old_installer(root: Root, deb: Path) -> None:
    unit = old_installer_units()[0]
    root.purge()
    _plant_old_installer(root, unit)
    uid = root.run("id", "-u", "sshmonitor").stdout.strip()
    conf_before = root.p("/etc/sshmonitor.yaml").read_text()
    src = root.p("/src/scripts")
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "scripts" / "install", src / "install")
    root.copy_in(deb, "/tmp/" + deb.name)
    try:
        # No systemd in the root: scripts/install must say how to run the daemon and return.
        r = root.run("/src/scripts/install", "--deb", "/tmp/" + deb.name, merge=True, timeout=600)
        out = r.stdout
        assert root.status() == "ii", out
        assert (
            "/usr/bin/sshmonitord --config /etc/sshmonitor.yaml --state-dir /var/lib/sshmonitor"
            in out
        ), out
        # The old unit: moved aside (byte for byte), its enable link replaced by the package's.
        assert not os.path.lexists(root.p(OLD_UNIT)), out
        assert root.p(OLD_UNIT + ".old-installer").read_bytes() == unit
        assert f"{OLD_UNIT} -> {OLD_UNIT}.old-installer" in out, out
        assert os.readlink(root.p(WANTS)) == UNIT_PATH
        # The links into /opt are gone; /opt itself stays, with the advice to remove it.
        for name in ("sshmonitor", "sshmonitord"):
            assert not os.path.lexists(root.p(f"/usr/local/bin/{name}"))
            assert f"removed the old installer's link /usr/local/bin/{name}" in out
        assert root.p("/opt/sshmonitor/pyvenv.cfg").is_file()
        assert "rm -rf /opt/sshmonitor" in out, out
        # The operator's config, the user and its uid are kept; the new default lies beside.
        assert root.p("/etc/sshmonitor.yaml").read_text() == conf_before
        assert root.p("/etc/sshmonitor.yaml.dpkg-dist").is_file()
        assert root.run("id", "-u", "sshmonitor").stdout.strip() == uid
        assert root.run("sh", "-c", "command -v sshmonitor").stdout.strip() == "/usr/bin/sshmonitor"
        assert "WARNING" not in out, out
        # Purge: the old installer's .dist still belongs to the user, so the user is kept
        # (its uid must not pass to another account) and the operator is told.
        out = root.purge()
        assert root.status() == "unknown", out
        assert not os.path.lexists(root.p(OLD_UNIT + ".old-installer"))
        assert "kept the system user sshmonitor" in out and "/etc/sshmonitor.yaml.dist" in out, out
        assert root.run("id", "-u", "sshmonitor", check=False).returncode == 0
    finally:
        root.purge()
        for path in (
            "/opt/sshmonitor",
            "/src",
            "/usr/local/bin/sshmonitor",
            "/usr/local/bin/sshmonitord",
            OLD_UNIT,
            OLD_UNIT + ".old-installer",
            WANTS,
            "/etc/sshmonitor.yaml.dist",
        ):
            root.run("rm", "-rf", path)
        root.run("userdel", "sshmonitor", check=False)
        root.run("groupdel", "sshmonitor", check=False)


def test_hand_written_unit_is_left_alone_with_a_warning(root: Root, deb: Path) -> None:
    unit = old_installer_units()[0].replace(
        b"[Service]\n", b"[Service]\n# local change\nEnvironment=SITE=lab\n", 1
    )
    root.purge()
    # The old installation under it: the edited unit still runs /usr/local/bin/sshmonitord.
    # And its user was made by hand without a sshmonitor group (adduser --system: nogroup).
    _plant_old_installer(root, unit)
    # (Its config aside: an edited conffile is test_conffile_edit_survives_upgrades's.)
    root.run("rm", "-f", "/etc/sshmonitor.yaml", "/etc/sshmonitor.yaml.dist")
    root.run("groupdel", "sshmonitor", check=False)
    root.run("usermod", "-g", "nogroup", "sshmonitor")
    root.run("groupdel", "sshmonitor", check=False)
    assert root.run("getent", "group", "sshmonitor", check=False).returncode != 0
    try:
        out = root.install(deb)
        assert root.status() == "ii", out
        assert root.p(OLD_UNIT).read_bytes() == unit
        assert not os.path.lexists(root.p(OLD_UNIT + ".old-installer"))
        assert f"WARNING: {OLD_UNIT} overrides the packaged unit {UNIT_PATH}" in out, out
        assert (
            f"mv {OLD_UNIT} /root/sshmonitor.service.mine && systemctl daemon-reload && "
            "systemctl restart sshmonitor" in out
        ), out
        assert out.count("WARNING") == 1, out
        # Its links are kept while it runs them (removed, the service would fail with
        # 203/EXEC at its next start), and the operator is told why.
        assert "links are kept until you remove it" in out, out
        for name in ("sshmonitor", "sshmonitord"):
            assert os.readlink(root.p(f"/usr/local/bin/{name}")) == f"/opt/sshmonitor/bin/{name}"
        # The group the config's statoverride names exists, and the user is in it.
        assert "sshmonitor" in root.run("id", "-nG", "sshmonitor").stdout.split(), out
        stat = root.run("stat", "-c", "%U:%G %a", "/etc/sshmonitor.yaml").stdout.strip()
        assert stat == "root:sshmonitor 640", out
    finally:
        root.purge()
        for path in (
            "/opt/sshmonitor",
            "/usr/local/bin/sshmonitor",
            "/usr/local/bin/sshmonitord",
            OLD_UNIT,
            WANTS,
            "/etc/sshmonitor.yaml.dist",
        ):
            root.run("rm", "-rf", path)
        root.run("userdel", "sshmonitor", check=False)
        root.run("groupdel", "sshmonitor", check=False)


def test_lintian_reports_no_errors(deb: Path) -> None:
    need(shutil.which("lintian") is not None, "lintian (apt-get install lintian)")
    r = subprocess.run(
        ["lintian", "--display-level", ">=warning", "--tag-display-limit", "0", str(deb)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    tags = [ln for ln in r.stdout.splitlines() if re.match(r"^[EW]: ", ln)]
    errors = [t for t in tags if t.startswith("E: ")]
    assert not errors, "lintian errors:\n" + "\n".join(errors)
    unexplained = [t for t in tags if t.split()[2] not in EXPLAINED_LINTIAN_WARNINGS]
    assert not unexplained, (
        "lintian warnings: fix them, or explain each in EXPLAINED_LINTIAN_WARNINGS "
        "(and debian/sshmonitord.lintian-overrides with a comment):\n" + "\n".join(unexplained)
    )
    assert r.returncode == 0, r.stdout + r.stderr
