"""Real servers on 127.0.0.1 for the notify channel tests.

* :class:`SmtpServer` — aiosmtpd, in its own thread: plain, STARTTLS (required) or implicit
  TLS, optional AUTH (PLAIN/LOGIN) with a fixed user; records every message it accepts and
  can be told to answer RCPT or DATA with a chosen reply.
* :class:`ScriptedHttpServer` — stdlib ``http.server`` in a thread: records every request
  and plays a script of replies (status, headers, body, a delay before answering).
* :func:`make_self_signed` — a certificate for localhost/127.0.0.1 made by ``openssl``.
* :func:`msmtp_wrapper` — a sendmail-compatible program: real msmtp, sending to a port.

Every server binds port 0 and is stopped by its fixture, pass or fail.
"""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import need

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:  # pragma: no cover - need() reports it
    Controller = None  # type: ignore[assignment,misc]

# --------------------------------------------------------------------------- TLS


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for CN=localhost, SAN DNS:localhost and IP:127.0.0.1."""
    need(shutil.which("openssl") is not None, "openssl not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


# --------------------------------------------------------------------------- SMTP


@dataclass
class Received:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    auth_user: str | None

    @property
    def msg(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


if Controller is not None:

    class _PortZeroController(Controller):
        """aiosmtpd's Controller, binding port 0 and learning the port it got.

        (The stock one connects to ``self.port`` to wake the server up, which must be real.)
        """

        def _create_server(self) -> Any:
            async def create() -> Any:
                srv = await self.loop.create_server(
                    self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
                )
                self.port = srv.sockets[0].getsockname()[1]
                return srv

            return create()


class SmtpServer:
    """aiosmtpd on 127.0.0.1:<random>. ``mode``: plain, starttls (required) or implicit."""

    def __init__(
        self,
        mode: str = "plain",
        cert: tuple[Path, Path] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        need(Controller is not None, "aiosmtpd not installed (pip install aiosmtpd)")
        self.mode = mode
        self.users = dict(users or {})
        self.received: list[Received] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        # Scripted answers: recipient → reply for RCPT; a reply for DATA.
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None
        self._got = threading.Condition()
        kw: dict[str, Any] = {"hostname": "127.0.0.1", "port": 0, "server_hostname": "mx.test"}
        if mode in ("starttls", "implicit"):
            assert cert is not None, f"{mode} needs a certificate"
            ctx = server_context(*cert)
            if mode == "starttls":
                kw.update(tls_context=ctx, require_starttls=True)
            else:
                kw.update(ssl_context=ctx)
        if self.users:
            kw.update(authenticator=self._authenticate, auth_require_tls=mode != "plain")
        self.controller = _PortZeroController(self, **kw)
        self.running = False

    # aiosmtpd handler hooks --------------------------------------------------
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None and not reply.startswith("250"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        user = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        with self._got:
            self.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=envelope.original_content or b"",
                    tls=session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None,
                    auth_user=user,
                )
            )
            self._got.notify_all()
        return f"250 2.0.0 Ok: queued as TEST{len(self.received)}"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
        self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

    # lifecycle ----------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> SmtpServer:
        self.controller.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.controller.stop()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        with self._got:
            self._got.wait_for(lambda: len(self.received) >= n, timeout)
        assert len(self.received) >= n, f"expected {n} messages, got {len(self.received)}"
        return self.received


@pytest.fixture
def smtp_servers(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory: ``smtp_servers(mode="plain", users=None) -> SmtpServer`` (started).

    The TLS certificate (openssl) is made only when a TLS mode asks for it.
    """
    started: list[SmtpServer] = []

    def start(mode: str = "plain", users: dict[str, str] | None = None) -> SmtpServer:
        cert = request.getfixturevalue("tls_cert") if mode != "plain" else None
        srv = SmtpServer(mode, cert=cert, users=users).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def free_port() -> int:
    """A port nothing listens on (bound and released): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections (backlog) and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


# --------------------------------------------------------------------------- HTTP


@dataclass
class Reply:
    """One scripted HTTP answer. ``body``: bytes, str, or a JSON-able dict/list."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (to cause client timeouts)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        reply = self.server.owner._record(req)
        if reply.delay and self.server.owner.stopping.wait(reply.delay):
            return
        data = reply.body
        ctype = "text/plain; charset=utf-8"
        if isinstance(data, dict | list):
            data, ctype = json.dumps(data).encode(), "application/json; charset=utf-8"
        elif isinstance(data, str):
            data = data.encode()
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": ctype, **reply.headers}
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            self.close_connection = True

    do_POST = do_GET = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: ScriptedHttpServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-reply is part of the tests


class ScriptedHttpServer:
    """HTTP on 127.0.0.1:<random>. Replies are played in order; then ``default`` forever."""

    def __init__(self, *replies: Reply, default: Reply | None = None) -> None:
        self.replies: list[Reply] = list(replies)
        self.default = default or Reply(200, {"id": "test-ok", "message": "queued"})
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def _record(self, req: Request) -> Reply:
        with self._lock:
            self.requests.append(req)
            return self.replies.pop(0) if self.replies else self.default

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedHttpServer]:
    # Loopback only: no proxy from the environment may see (or reroute) the test's requests.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    srv = ScriptedHttpServer()
    try:
        yield srv
    finally:
        srv.stop()


# --------------------------------------------------------------------------- sendmail


def script(directory: Path, name: str, body: str) -> str:
    """An executable ``/bin/sh`` script; returns its path."""
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def msmtp_wrapper(tmp_path: Path) -> Iterator[Any]:
    """``make(port, sender) -> path``: a sendmail-compatible script running real msmtp."""
    msmtp = shutil.which("msmtp")
    need(msmtp is not None, "msmtp not installed (apt-get install msmtp msmtp-mta)")

    def make(port: int, sender: str) -> str:
        conf = tmp_path / f"msmtprc-{port}"
        conf.write_text(
            f"account default\nhost 127.0.0.1\nport {port}\nauth off\ntls off\nfrom {sender}\n"
        )
        conf.chmod(0o600)
        return script(tmp_path, f"sendmail-{port}", f'exec {msmtp} -C {conf} "$@"\n')

    yield make
