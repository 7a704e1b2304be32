"""Talking to systemd: sd_notify states and the watchdog interval."""

from __future__ import annotations

import os
import time

import sdnotify


class Notifier:
    """sd_notify(3) through the sdnotify package; silent when not under systemd."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if self.enabled else None
        self.watchdog_usec = watchdog_usec()
        # Children (journalctl, nft, sendmail) must not inherit our notify socket or
        # watchdog: a child that sends READY=1 or WATCHDOG=1 would lie for us.
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(var, None)

    def send(self, *states: str) -> None:
        if self._n is not None:
            self._n.notify("\n".join(states))

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def watchdog_usec() -> int | None:
    """WATCHDOG_USEC if it is meant for this process (WATCHDOG_PID unset or ours)."""
    raw = os.environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec if usec > 0 else None
