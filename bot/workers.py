"""Sharing Telegram's limits between the workers that send for one bot.

Telegram counts messages per bot (about 30 a second, or 1,000 with paid broadcasts),
whatever the number of processes sending them. Each worker notes in the database that it
is alive every few seconds and takes an equal share of every limit: with two workers, each
sends at most half. A worker that joins counts itself at once; the others see it within a
heartbeat, so for a few seconds the total can be a little over (a 429 then makes every
worker wait, as it should). A worker that dies without leaving is forgotten after `STALE`,
during which the others keep to the smaller share: under the limit, never over.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiolimiter import AsyncLimiter

from bot.storage.models import utcnow
from bot.storage.repository import Repository

log = logging.getLogger(__name__)
HEARTBEAT = timedelta(seconds=5)
STALE = timedelta(seconds=20)


@dataclass(frozen=True)
class SharedLimit:
    """A limiter of this process and the rate, per second, it stands for across the bot."""

    limiter: AsyncLimiter
    whole: float


def set_rate(limiter: AsyncLimiter, per_second: float) -> None:
    """Change an AsyncLimiter's rate in place, keeping its burst at one period's worth.

    aiolimiter has no setter: its capacity is `max_rate` and its leak rate `_rate_per_sec`.
    Tasks already waiting are woken by the new rate as they are by the old."""
    limiter.max_rate = per_second * limiter.time_period
    limiter._rate_per_sec = per_second  # noqa: SLF001


class WorkerShare:
    """This process's share of the bot's limits, kept up to date by a heartbeat."""

    def __init__(self, repository: Repository, limits: list[SharedLimit],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.repository = repository
        self.limits = limits
        self.clock = clock
        self.id = str(uuid.uuid4())
        self.workers = 1

    async def beat(self) -> int:
        """Say this worker is alive; apply the share if the number of workers changed."""
        now = self.clock()
        alive = await self.repository.run(
            lambda unit: unit.heartbeat(self.id, now, now - STALE))
        alive = max(1, alive)
        if alive != self.workers:
            log.info("%d workers share the bot's limits; this one now sends its share", alive)
            self.workers = alive
            for limit in self.limits:
                set_rate(limit.limiter, limit.whole / alive)
        return alive

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT.total_seconds())
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database is away: keep the last share until it answers again.
                log.exception("could not note this worker's heartbeat")

    async def leave(self) -> None:
        """On a clean stop: the others may take this worker's share at their next beat."""
        try:
            await self.repository.run(lambda unit: unit.leave(self.id))
        except Exception:
            log.exception("could not remove this worker from the database")
