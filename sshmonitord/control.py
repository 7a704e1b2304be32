"""The control socket: newline-delimited JSON between ``sshmonitor`` and the running daemon.

Request: ``{"cmd": "status", ...args}``. Reply: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "...", "usage": bool}``. One request per line; a connection may send
several. The socket is created mode 0600: only root (or the daemon's own user) may talk to it.

A handler raises :class:`~sshmonitord.addresses.OperatorError` for a request it refuses or
carries out only in part (a bad address, an allowlisted one, a full store): the daemon logs one
line (INFO for refusals) and the CLI prints one line. Any other exception is a bug: logged with
its traceback, and still one line for the operator.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .addresses import OperatorError
from .config import DEFAULT_RUNTIME_DIR

if TYPE_CHECKING:
    import asyncio

# The server (the daemon's) imports asyncio and the log where it runs: every `sshmonitor`
# command loads this module for its client and its socket rule (paths.py), and asyncio
# (ssl with it) and structlog were ~7 MB of each of replay's two processes (issue #17).

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
MAX_REQUEST = 64 * 1024
DEFAULT_SOCKET = DEFAULT_RUNTIME_DIR + "/control.sock"  # control.socket's default


class ControlError(Exception):
    """The daemon could not be reached or refused the request."""


class NotRunning(ControlError):
    """No daemon is listening on the socket."""


class Refused(ControlError):
    """The daemon answered with an error. ``usage``: the request was wrong or refused (the
    CLI exits 2), else it failed (exit 1)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def resolve_socket(configured: str | None = None) -> str:
    """The control socket: ``control.socket`` (default /run/sshmonitor/control.sock), moved
    into systemd's RUNTIME_DIRECTORY when left at the default. Needs no valid config, so the
    CLI reaches the daemon when the file on disk is broken (exactly when ``reload`` is
    needed)."""
    configured = configured or DEFAULT_SOCKET
    env = os.environ.get("RUNTIME_DIRECTORY")
    if env and configured == DEFAULT_SOCKET:
        return os.path.join(env.split(":")[0], "control.sock")
    return configured


def one_line(text: str, limit: int = 500) -> str:
    """An error message as one bounded line (exception texts may span several)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ControlServer:
    """Serves registered commands on a Unix stream socket."""

    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.base_events.Server | None = None
        from . import log

        self._log = log.get("control")

    async def start(self) -> None:
        """Bind the socket (replacing a stale one, refusing a live one)."""
        import asyncio

        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if os.path.lexists(self.path):
            st = os.lstat(self.path)
            if not stat.S_ISSOCK(st.st_mode):
                raise ControlError(f"{self.path} exists and is not a socket; not replacing it")
            if _alive(self.path):
                raise ControlError(f"another sshmonitord is already listening on {self.path}")
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=self.path, limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        import asyncio

        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        try:
            while True:
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, {"ok": False, "error": "request too long", "usage": True})
                    return
                if not raw:
                    return
                reply = await self._dispatch(raw)
                await _send(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, raw: bytes) -> dict[str, Any]:
        try:
            req = json.loads(raw)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError("expected an object with a 'cmd' string")
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}", "usage": True}
        handler = self.handlers.get(req["cmd"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {
                "ok": False,
                "error": f"unknown command {one_line(req['cmd'], 60)!r} (known: {known})",
                "usage": True,
            }
        try:
            return {"ok": True, "result": await handler(req)}
        except OperatorError as exc:
            # The operator's mistake, or a refusal: one line, no traceback.
            message = one_line(str(exc))
            if exc.usage:
                self._log.info("control command refused", cmd=req["cmd"], error=message)
            else:
                self._log.error("control command failed", cmd=req["cmd"], error=message)
            return {"ok": False, "error": message, "usage": exc.usage}
        except Exception as exc:  # a bug; a bad request must never take the daemon down
            self._log.exception("control command failed", cmd=req["cmd"])
            return {"ok": False, "error": one_line(f"{type(exc).__name__}: {exc}"), "usage": False}


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(json.dumps(obj, default=str).encode() + b"\n")
    await writer.drain()


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def request(path: str, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
    """Send one command to the daemon and return its result (synchronous, for the CLI)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except FileNotFoundError:
            raise NotRunning(f"sshmonitord is not running (no control socket at {path})") from None
        except ConnectionRefusedError:
            raise NotRunning(
                f"sshmonitord is not running (stale control socket at {path})"
            ) from None
        except PermissionError:
            raise ControlError(
                f"permission denied on {path}; run as root (the socket is mode 0600)"
            ) from None
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ControlError("the daemon closed the connection without answering")
            buf += chunk
    except TimeoutError:
        raise ControlError(f"no answer from sshmonitord on {path} within {timeout:g}s") from None
    finally:
        s.close()
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlError(f"garbled answer from sshmonitord on {path}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"garbled answer from sshmonitord on {path}")
    if not reply.get("ok"):
        raise Refused(one_line(str(reply.get("error", "unknown error"))), bool(reply.get("usage")))
    return reply.get("result")
