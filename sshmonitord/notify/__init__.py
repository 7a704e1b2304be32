"""Alerts: rendering (render.py) and delivery channels (channels.py, one module per channel
type, and build.py, which builds them from the config). The queue — spool, dedup/throttle,
digest, retries — builds on these.

The contract::

    Alert.from_finding(finding, host, ban=None) -> Alert      # to_dict()/from_dict() spool
    render(alerts, host, suppressed=0, now=None) -> Message   # worst first, escaped
    make_channel(cfg, hostname) -> Channel                    # from a config channel entry
    build_channels(cfgs, hostname) -> [Channel]               # notify.channels, unique names
    channel.accepts(alert) -> bool                            # severity + rule filters
    await channel.send(message) -> str                        # or raises DeliveryError
    await channel.close()
"""

from typing import TYPE_CHECKING

from ..lazy import exports
from .alert import SEVERITIES, Alert, DeliveryError, Message, severity_rank
from .render import render, test_message

if TYPE_CHECKING:
    from .build import build_channels, make_channel
    from .channels import BaseChannel, Channel, parse_retry_after

# The channels load with their first use (sshmonitord/lazy.py): replay needs render.py only.
__getattr__ = exports(
    __name__,
    {
        "build_channels": "build",
        "make_channel": "build",
        "BaseChannel": "channels",
        "Channel": "channels",
        "parse_retry_after": "channels",
    },
)

__all__ = [
    "SEVERITIES",
    "Alert",
    "BaseChannel",
    "Channel",
    "DeliveryError",
    "Message",
    "build_channels",
    "make_channel",
    "parse_retry_after",
    "render",
    "severity_rank",
    "test_message",
]
