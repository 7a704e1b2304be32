"""Local delivery through a sendmail-compatible program (Postfix, Exim, msmtp, nullmailer).

The same MIME message the SMTP channel sends is piped to ``[path, "-t", "-oi"]`` (recipients
from the headers; a lone ``.`` line is not the end) — no shell, argv only. Exit status 0 is
success; ``EX_TEMPFAIL`` (75) or death by a signal (including our time limit) is transient;
anything else is permanent, reported with the program's stderr.

msmtp needs an envelope sender: ``from`` (or ``auto_from``) in its configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from .alert import DeliveryError, Message
from .channels import BaseChannel, answer, check_address
from .smtp import email_bytes, msgid_domain

EX_TEMPFAIL = 75


class SendmailChannel(BaseChannel):
    type = "sendmail"

    def __init__(
        self,
        *,
        path: str = "/usr/sbin/sendmail",
        sender: str,
        to: tuple[str, ...] | list[str],
        hostname: str = "localhost",
        timeout: float = 60.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if not to:
            raise ValueError("sendmail: at least one recipient (to) is required")
        self.path = path
        self.sender = check_address("sender", sender)
        self.to = tuple(check_address("to", t) for t in to)
        self.hostname = msgid_domain(hostname)
        self.timeout = float(timeout)

    def argv(self) -> list[str]:
        return [self.path, "-t", "-oi"]

    async def send(self, message: Message) -> str:
        # Local programs expect local (LF) line endings; they add CRLF on the wire.
        data = email_bytes(message, self.sender, self.to, self.hostname, linesep="\n")
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # our own process group: killable as a whole
            )
        except OSError as exc:  # not found, not executable: configuration
            raise DeliveryError(
                f"{self.path}: cannot run: {answer(exc.strerror or str(exc))}", permanent=True
            ) from None
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(data)
        except TimeoutError:
            _kill(proc)
            await proc.wait()
            raise DeliveryError(
                f"{self.path}: no exit within {self.timeout:g}s (killed)", permanent=False
            ) from None
        except BaseException:  # cancelled: do not leave a child behind
            _kill(proc)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        said = answer((err or b"") + (b" " if err and out else b"") + (out or b""))
        rc = proc.returncode
        if rc == 0:
            return f"{os.path.basename(self.path)} exited 0" + (f": {said}" if said else "")
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            detail = f"{self.path}: killed by {name}" + (f": {said}" if said else "")
            raise DeliveryError(detail, permanent=False)
        detail = f"{self.path}: exit status {rc}" + (f": {said}" if said else "")
        raise DeliveryError(detail, permanent=rc != EX_TEMPFAIL)

    def __repr__(self) -> str:
        return f"<SendmailChannel {self.name!r} {self.path} to={list(self.to)}>"


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
