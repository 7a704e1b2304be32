"""The delivery channels the config asks for: ``build_channels`` and ``make_channel``.

Its own module, above the channel types: the factory names every channel type and every
channel type imports the shared base in channels.py, so a factory in channels.py was an
import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import config
from .logchannel import LogChannel

if TYPE_CHECKING:
    from .channels import BaseChannel

__all__ = ["build_channels", "journal_channel", "make_channel"]


def build_channels(
    cfgs: Sequence[config.Channel], hostname: str, include_log: bool = False
) -> list[BaseChannel]:
    """The channels of ``notify.channels``, with unique names (two unnamed channels of one
    type get the list index appended). The daemon leaves out ``log``: the journal is
    always a channel there; ``sshmonitor test-alert`` keeps it."""
    out: list[BaseChannel] = []
    seen: set[str] = set()
    for i, c in enumerate(cfgs):
        if c.type == "log" and not include_log:
            continue
        ch = make_channel(c, hostname)
        if ch.name in seen:
            ch.name = f"{ch.name}{i}"
        seen.add(ch.name)
        out.append(ch)
    return out


def journal_channel(cfgs: Sequence[config.Channel], hostname: str) -> LogChannel:
    """The journal's alert line filters in the daemon: those of the first ``log`` channel
    listed in ``notify.channels`` (listing it only sets its filters), else every alert."""
    for c in cfgs:
        if c.type == "log":
            ch = make_channel(c, hostname)
            if isinstance(ch, LogChannel):
                return ch
    return LogChannel(name="journal")


def make_channel(cfg: config.Channel, hostname: str) -> BaseChannel:
    """Build the channel a config entry (``notify.channels[i]``) describes.

    ``hostname`` is this machine's name: the Message-ID domain (smtp, sendmail,
    forwardemail), the EHLO name, and the ``host`` of webhook payloads.
    """
    common: dict[str, Any] = {
        "name": cfg.name or cfg.type,
        "min_severity": cfg.min_severity,
        "include_rules": cfg.include_rules,
        "exclude_rules": cfg.exclude_rules,
    }
    if cfg.type == "forwardemail":
        from .forwardemail import ForwardEmailChannel

        return ForwardEmailChannel(
            api_key=cfg.api_key or "",
            base_url=cfg.base_url,
            sender=cfg.sender,
            to=cfg.to,
            timeout=float(cfg.timeout),
            hostname=hostname,
            **common,
        )
    if cfg.type == "smtp":
        from .smtp import SmtpChannel

        return SmtpChannel(
            host=cfg.host,
            port=cfg.port,
            tls=cfg.tls,
            username=cfg.username,
            password=cfg.password,
            sender=cfg.sender,
            to=cfg.to,
            timeout=float(cfg.timeout),
            hostname=hostname,
            # Newer config knobs, read defensively so an older config object still works.
            ca_file=getattr(cfg, "ca_file", None),
            tls_verify=getattr(cfg, "tls_verify", True),
            **common,
        )
    if cfg.type == "sendmail":
        from .sendmail import SendmailChannel

        return SendmailChannel(
            path=cfg.path, sender=cfg.sender, to=cfg.to, hostname=hostname, **common
        )
    if cfg.type == "webhook":
        from .webhook import WebhookChannel

        return WebhookChannel(
            url=cfg.url,
            format=cfg.format,
            token=cfg.token,
            headers=dict(cfg.headers),
            timeout=float(cfg.timeout),
            hostname=hostname,
            **common,
        )
    if cfg.type == "log":
        return LogChannel(**common)
    raise ValueError(f"unknown channel type {cfg.type!r}")
