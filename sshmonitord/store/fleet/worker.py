"""What every fleet worker shares: its own PostgreSQL connection(s), kept open across
outages with a backoff, and one log line per distinct failure (not one per retry)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ... import log

RETRY_MIN, RETRY_MAX = 1.0, 30.0


class Worker:
    """Runs :meth:`serve` on ``connections`` fresh connections; when it fails (the database
    went away, a statement failed), logs ``down_message`` once per distinct error, waits
    (1 s doubling to 30 s) and connects again."""

    name = "fleet-worker"
    connections = 1
    down_message = "fleet database unavailable"
    up_message: str | None = None  # logged when connected again after a failure

    def __init__(self, conninfo: str, host: str) -> None:
        self.conninfo = conninfo
        self.host = host
        self.connected = False
        self.last_error: str | None = None
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self.log = log.get("fleet")

    async def serve(self, *conns: Any) -> None:
        raise NotImplementedError

    def retry_after(self, exc: Exception, delay: float) -> float:
        """Seconds to wait before connecting again after ``exc``."""
        return delay

    def lost(self) -> None:
        """Called each time the connection is gone (or could not be made)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        import psycopg

        delay = RETRY_MIN
        while True:
            wait = delay
            try:
                async with contextlib.AsyncExitStack() as stack:
                    conns = [
                        await stack.enter_async_context(
                            await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                        )
                        for _ in range(self.connections)
                    ]
                    delay = RETRY_MIN
                    await self.serve(*conns)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed(f"{type(exc).__name__}: {exc}")
                wait = self.retry_after(exc, delay)
            self.connected = False
            self.lost()
            await asyncio.sleep(wait)
            delay = min(wait * 2, RETRY_MAX)

    def up(self, **info: Any) -> None:
        """``serve`` is connected and ready."""
        if self.up_message and (not self.connected or self.last_error is not None):
            self.log.info(self.up_message, host=self.host, **info)
        self.connected = True
        self.last_error = None

    def failed(self, error: str) -> None:
        error = (error.strip().splitlines() or [""])[0]
        self.errors += 1
        if error != self.last_error:
            self.log.error(self.down_message, host=self.host, error=error)
        self.last_error = error
