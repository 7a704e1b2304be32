"""SMTP delivery (stdlib ``smtplib`` in a worker thread) and the MIME message it and
sendmail share.

The message is ``multipart/alternative`` (text/plain, then text/html; UTF-8, quoted-printable
so no 8BITMIME is needed) with ``From``, ``To``, ``Subject`` (RFC 2047-encoded when not
ASCII), ``Date``, ``Message-ID`` (our host name as its domain) and
``Auto-Submitted: auto-generated`` so vacation responders stay quiet.

``Subject`` (and the alert id list) are folded here, not by the ``email`` package: its
folder puts a value that fits on a line of its own but not after the header name on the next
line ("Subject:" alone, then the text), and its parser decodes RFC 2047 encoded words found
in the text — so a user name like ``=?utf-8?q?a=0D=0ABcc:_x?=`` would come out as a raw CR LF
and a forged ``Bcc:`` header. :class:`FoldedHeader` keeps the text as given: printable ASCII
words stay as they are, anything else (non-ASCII, control characters, a word that looks like
an encoded word, a word too long for a line) becomes UTF-8 encoded words, and lines break only
between words, at most 78 characters long, the first one right after the header name.

The Message-ID is ``<ID@HOST>`` with the message's stable id (:func:`~.channels.msgid`): a
message sent again after a crash carries the same one, so the receiving side can tell.
``X-Sshmonitor-Alert-Ids`` lists the ids of the alerts inside (one alert may travel in
different digests).

TLS: ``starttls`` (refuses to continue in clear text when the server offers no STARTTLS),
``implicit`` (SMTPS, port 465) or ``none``. Certificates are verified against the system
store; ``ca_file`` trusts a private CA (or a self-signed certificate) instead, and
``tls_verify=False`` turns verification off (not recommended).

Errors: an SMTP 4xx reply, a refused or dropped connection, a timeout → transient; a 5xx
reply (bad password, recipient rejected), a certificate that does not verify, a server
without STARTTLS or without AUTH when credentials are configured → permanent.
"""

from __future__ import annotations

import asyncio
import binascii
import random
import re
import smtplib
import ssl
import sys
import time
from datetime import datetime
from email.utils import format_datetime  # smtplib loads email.utils anyway
from typing import TYPE_CHECKING, Any, Literal

from .alert import DeliveryError, Message, is_id
from .channels import BaseChannel, answer, check_address, msgid, msgid_domain

if TYPE_CHECKING:
    from email.message import EmailMessage

__all__ = [
    "FoldedHeader",
    "SmtpChannel",
    "build_email",
    "email_bytes",
    "fold_header",
    "msgid_domain",
]

MAX_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters (CRLF excluded)
_EW_HEAD, _EW_TAIL = "=?utf-8?q?", "?="
_EW_MAX = 75  # RFC 2047 2: an encoded word is at most 75 characters
# Q-encoding: what may stay as it is inside an encoded word anywhere (RFC 2047 5 (3)).
_Q_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def _plain_word(word: str, room: int) -> bool:
    """May ``word`` appear in a header as it is? Printable ASCII, not mistakable for an
    encoded word by a reader's decoder, and short enough for a line of its own."""
    return (
        len(word) <= room
        and word.isascii()
        and word.isprintable()
        and "=?" not in word
        and "?=" not in word
    )


def _q(ch: str) -> str:
    if ch in _Q_PLAIN:
        return ch
    if ch == " ":
        return "_"
    return "".join(f"={b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def fold_header(name: str, value: str, maxlen: int = MAX_LINE) -> list[str]:
    """The lines of ``name: value``, folded (the first line starts with ``name: ``, each
    further one with a space). Whitespace runs become one space; a run of words that cannot
    stay plain becomes encoded words (the spaces inside it encoded too, since a decoder
    drops the whitespace between two encoded words), split between characters as the line
    needs. Every line is ASCII and at most ``maxlen`` long; no line is empty."""
    words = value.replace("\0", " ").split()
    lines = [f"{name}:"]
    first_room = maxlen - len(name) - 2
    # Runs: (plain?, text); adjacent words that need encoding travel as one run.
    runs: list[tuple[bool, str]] = []
    for w in words:
        plain = _plain_word(w, maxlen - 1 if runs else first_room)
        if not plain and runs and not runs[-1][0]:
            runs[-1] = (False, runs[-1][1] + " " + w)
        else:
            runs.append((plain, w))
    for plain, text in runs:
        if plain:
            if len(lines[-1]) + 1 + len(text) > maxlen and lines[-1] != f"{name}:":
                lines.append("")
            lines[-1] += " " + text
            continue
        chunk = ""
        for ch in text:
            piece = _q(ch)
            room = min(_EW_MAX, maxlen - len(lines[-1]) - 1) - len(_EW_HEAD) - len(_EW_TAIL)
            if len(chunk) + len(piece) > room:
                if chunk:
                    lines[-1] += " " + _EW_HEAD + chunk + _EW_TAIL
                    chunk = ""
                # A new line, unless this one is still empty (then the piece fits anyway).
                if lines[-1] != f"{name}:" or room < len(piece):
                    lines.append("")
            chunk += piece
        if chunk:
            lines[-1] += " " + _EW_HEAD + chunk + _EW_TAIL
    return lines


class FoldedHeader(str):
    """A header value :func:`email_bytes` folds itself (see the module docstring), never
    the ``email`` package: it is neither parsed (no encoded-word decoding) nor refolded."""

    name: str

    def __new__(cls, name: str, value: str) -> FoldedHeader:
        self = super().__new__(cls, " ".join(value.split()))
        self.name = name
        return self

    def fold(self, linesep: str) -> str:
        lines = fold_header(self.name, str(self), MAX_LINE)
        if lines == [f"{self.name}:"]:
            return f"{self.name}: {linesep}"  # an empty value
        return linesep.join(lines) + linesep


def email_bytes(
    message: Message,
    sender: str,
    to: tuple[str, ...] | list[str],
    hostname: str,
    now: float | None = None,
    linesep: str = "\r\n",
) -> bytes:
    """The MIME message for ``message`` as bytes with ``linesep`` line ends (SMTP: CRLF; LF
    for a local sendmail): multipart/alternative, text then HTML, each quoted-printable.

    Written here rather than through ``EmailMessage.set_content`` and the generator: those
    cost ~5-8 ms a message (a pure-Python quoted-printable encoder, a content manager, a
    second pass to serialise), more than parsing and detecting the attack the message
    reports. Each header is written as the email package's policy (``SMTP``; ``default``
    for LF) writes it (:func:`_header_line`) or folded by :class:`FoldedHeader`; the bodies are
    encoded by ``binascii.b2a_qp`` (C: lines of at most 76, ``=``, trailing blanks and 8-bit
    bytes encoded). A quoted-printable body never holds ``==``-ended runs of ``=``, so the
    boundary can never occur in it."""
    nl = linesep
    ids = [i for i in message.alert_ids if is_id(i)]
    when = datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    boundary = "=" * 15 + str(random.randrange(sys.maxsize)) + "=="
    headers: list[tuple[str, Any]] = [
        ("From", check_address("sender", sender)),
        ("To", ", ".join(check_address("to", t) for t in to)),
        # render() already made the subject one printable line; FoldedHeader is the last
        # line of defence (no raw control character, no encoded word from the text is ever
        # decoded).
        ("Subject", FoldedHeader("Subject", message.subject.replace("\0", " "))),
        ("Date", format_datetime(when)),
        ("Message-ID", msgid(message, hostname)),
    ]
    if ids:
        headers.append(
            ("X-Sshmonitor-Alert-Ids", FoldedHeader("X-Sshmonitor-Alert-Ids", " ".join(ids)))
        )
    headers += [
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "All"),
        ("X-Mailer", "sshmonitord"),
        ("MIME-Version", "1.0"),
    ]
    out = [_header_line(name, value, nl) for name, value in headers]
    # What the email package folds this to (the line is longer than 78).
    out.append(f'Content-Type: multipart/alternative;{nl} boundary="{boundary}"{nl}')
    out.append(nl)
    for i, (subtype, text) in enumerate((("plain", message.text), ("html", message.html))):
        out.append(f"--{boundary}{nl}" if i == 0 else f"{nl}--{boundary}{nl}")
        out.append(f'Content-Type: text/{subtype}; charset="utf-8"{nl}')
        out.append(f"Content-Transfer-Encoding: quoted-printable{nl}{nl}")
        out.append(_qp(text, nl))
    out.append(f"{nl}--{boundary}--{nl}")
    return "".join(out).encode("ascii")


_ADDRESS_HEADERS = frozenset({"From", "To"})
# A bare addr-spec the email package writes back exactly as given: a dot-atom local part
# (RFC 5322 3.2.3 atext) at a dot-separated ASCII host name. Anything else in From or To
# (a display name, quoting, a comment, a non-ASCII name) goes through the package itself.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _header_line(name: str, value: Any, linesep: str) -> str:
    """``name: value`` folded as the email package folds it. A short printable ASCII value
    of a header that is not an address list, and a short list of bare addresses, stay as
    they are there too, so they are written directly: the package's header classes cost
    ~30 µs each, and their modules (``email.policy``, ``email.headerregistry`` and its
    parser, ~0.6 MB) then load only for a configuration that needs them."""
    if isinstance(value, FoldedHeader):
        return value.fold(linesep)
    if len(name) + 2 + len(value) <= MAX_LINE:
        if name in _ADDRESS_HEADERS:
            if all(_PLAIN_ADDRESS.fullmatch(a) for a in value.split(", ")):
                return f"{name}: {value}{linesep}"
        elif (
            value.isascii() and value.isprintable() and value == value.strip() and "  " not in value
        ):
            return f"{name}: {value}{linesep}"
    policy = _email_policy(linesep)
    return str(policy.header_factory(name, value).fold(policy=policy))


def _email_policy(linesep: str) -> Any:
    """The email package's policy with ``linesep`` line ends, imported on first need."""
    import email.policy

    return email.policy.SMTP if linesep == "\r\n" else email.policy.default


def _qp(text: str, nl: str) -> str:
    """``text`` as a quoted-printable body: UTF-8, its line ends made ``nl``, ending in one."""
    lines = text.encode("utf-8", "surrogateescape").splitlines()
    encoded = binascii.b2a_qp(b"\n".join(lines) + b"\n").decode("ascii")
    return encoded if nl == "\n" else encoded.replace("\n", nl)


def build_email(
    message: Message,
    sender: str,
    to: tuple[str, ...] | list[str],
    hostname: str,
    now: float | None = None,
) -> EmailMessage:
    """:func:`email_bytes`'s message, parsed (to look at; the channels send the bytes)."""
    import email
    from email.message import EmailMessage

    data = email_bytes(message, sender, to, hostname, now, "\n")
    msg = email.message_from_bytes(data, policy=_email_policy("\n"))
    assert isinstance(msg, EmailMessage)
    return msg


class _SMTP(smtplib.SMTP):
    def _get_socket(self, host: Any, port: int, timeout: float) -> Any:
        # socket.getaddrinfo() runs every str host name through the "idna" codec, even an
        # ASCII one, and that codec's import (encodings.idna, stringprep, unicodedata) costs
        # ~0.4 MB for the daemon's life. An ASCII name resolves the same as bytes. (TLS
        # still loads it: ssl encodes the server name with it.)
        if isinstance(host, str) and host.isascii():
            host = host.encode("ascii")
        return super()._get_socket(host, port, timeout)  # type: ignore[misc]


class _SMTP_SSL(smtplib.SMTP_SSL, _SMTP):
    pass


class SmtpChannel(BaseChannel):
    type = "smtp"

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 587,
        tls: Literal["starttls", "implicit", "none"] = "starttls",
        username: str | None = None,
        password: str | None = None,
        sender: str,
        to: tuple[str, ...] | list[str],
        timeout: float = 30.0,
        hostname: str = "localhost",
        ca_file: str | None = None,
        tls_verify: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if tls not in ("starttls", "implicit", "none"):
            raise ValueError(f"smtp: tls must be starttls, implicit or none, not {tls!r}")
        if not to:
            raise ValueError("smtp: at least one recipient (to) is required")
        self.host = host
        self.port = int(port)
        self.tls = tls
        self.username = username
        self._password = password
        self.sender = check_address("sender", sender)
        self.to = tuple(check_address("to", t) for t in to)
        self.timeout = float(timeout)
        self.hostname = msgid_domain(hostname)
        self.ca_file = ca_file
        self.tls_verify = tls_verify

    def ssl_context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(
                f"smtp: cannot load CA file {self.ca_file!r}: {answer(str(exc))}", permanent=True
            ) from None
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def send(self, message: Message) -> str:
        # CRLF line endings: smtplib sends bytes as they are.
        data = email_bytes(message, self.sender, self.to, self.hostname)
        return await asyncio.to_thread(self._deliver, data)

    # ---------------------------------------------------------------- worker thread

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _deliver(self, data: bytes) -> str:
        try:
            return self._session(data)
        except DeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            raise _refused(self._where(), exc.recipients) from None
        except smtplib.SMTPResponseException as exc:  # auth, sender, data, helo...
            raise _reply_error(self._where(), exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPServerDisconnected as exc:
            reason = answer(str(exc) or "connection closed")
            raise DeliveryError(f"{self._where()}: {reason}", permanent=False) from None
        except smtplib.SMTPException as exc:
            # No AUTH extension, no usable AUTH mechanism...: configuration, not weather.
            raise DeliveryError(f"{self._where()}: {answer(str(exc))}", permanent=True) from None
        except ssl.SSLCertVerificationError as exc:
            detail = answer(exc.verify_message or str(exc))
            raise DeliveryError(
                f"{self._where()}: TLS certificate not trusted: {detail}", permanent=True
            ) from None
        except OSError as exc:
            # Connection refused/reset, DNS failure, TLS handshake trouble, a timeout
            # (TimeoutError is an OSError): the next attempt may well work.
            reason = answer(str(exc) or type(exc).__name__)
            if isinstance(exc, TimeoutError):
                reason = f"timed out after {self.timeout:g}s ({reason})"
            raise DeliveryError(f"{self._where()}: {reason}", permanent=False) from None

    def _session(self, data: bytes) -> str:
        ctx = self.ssl_context() if self.tls != "none" else None
        smtp: smtplib.SMTP
        if self.tls == "implicit":
            smtp = _SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self.hostname,
                timeout=self.timeout,
                context=ctx,
            )
        else:
            smtp = _SMTP(self.host, self.port, local_hostname=self.hostname, timeout=self.timeout)
        try:
            code, resp = smtp.ehlo()
            if not 200 <= code < 300:
                code, resp = smtp.helo()
                if not 200 <= code < 300:
                    raise _reply_error(self._where(), code, resp)
            if self.tls == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{self._where()}: the server does not offer STARTTLS; refusing to "
                        "send in clear text (set tls: none to allow it)",
                        permanent=True,
                    )
                code, resp = smtp.starttls(context=ctx)
                if code != 220:
                    raise _reply_error(self._where(), code, resp)
                smtp.ehlo()
            if self.username:
                if not smtp.has_extn("auth"):
                    raise DeliveryError(
                        f"{self._where()}: the server offers no AUTH but a username is set",
                        permanent=True,
                    )
                smtp.login(self.username, self._password or "")
            result = self._transaction(smtp, data)
        except BaseException:
            smtp.close()  # no polite QUIT to a server that just failed us: it may hang
            raise
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
        return result

    def _transaction(self, smtp: smtplib.SMTP, data: bytes) -> str:
        code, resp = smtp.mail(self.sender)
        if code != 250:
            smtp.rset()
            raise _reply_error(self._where(), code, resp, "MAIL FROM")
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in self.to:
            code, resp = smtp.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = (code, resp)
        if len(refused) == len(self.to):
            smtp.rset()
            raise _refused(self._where(), refused)
        code, resp = smtp.data(data)
        if code != 250:
            raise _reply_error(self._where(), code, resp, "DATA")
        out = f"{code} {answer(resp)}"
        if refused:
            # Some recipients took it: a retry would duplicate it for them. Report the rest.
            out += "; refused: " + "; ".join(
                f"{r}: {c} {answer(m, 200)}" for r, (c, m) in refused.items()
            )
        return out


def _reply_error(where: str, code: int, resp: bytes | str, step: str = "") -> DeliveryError:
    step = f" ({step})" if step else ""
    text = f"{where}{step}: {code} {answer(resp)}".rstrip()
    # 4xx: "try again later". 5xx: "this will not work". Anything else is a protocol
    # surprise (-1: the connection dropped mid-reply) and worth another try.
    return DeliveryError(text, permanent=500 <= code < 600)


def _refused(where: str, recipients: dict[str, tuple[int, bytes]]) -> DeliveryError:
    parts = [f"{r}: {c} {answer(m, 200)}" for r, (c, m) in recipients.items()]
    permanent = any(500 <= c < 600 for c, _ in recipients.values())
    return DeliveryError(f"{where}: recipients refused: " + "; ".join(parts), permanent=permanent)
