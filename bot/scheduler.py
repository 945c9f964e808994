"""The loop that sends scheduled work: daily prompts and snoozed ones.

Every few seconds it claims the rows that are due (on PostgreSQL with FOR UPDATE SKIP
LOCKED, so several workers never take the same row), asks the engine for each
message, sends it through its own rate-limited lane, and marks the row sent.

Delivery is at least once: a row is marked sent after Telegram accepted the message,
so a worker that dies in between leaves a claim that runs out (the lease) and the row
is sent again by another worker. The window is the time of one send. Rows missed
while nothing ran are still sent within the grace window, and let go after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.engine import Engine
from bot.messages import Reply
from bot.settings import Settings

log = logging.getLogger(__name__)

# Sends one reply to one chat; False if the person can no longer be reached.
Sender = Callable[[int, Reply], Awaitable[bool]]


@dataclass(frozen=True)
class SchedulerConfig:
    poll_seconds: float = 15.0
    grace: timedelta = timedelta(hours=3)
    lease: timedelta = timedelta(minutes=2)
    batch: int = 200
    concurrency: int = 8


def scheduler_config(settings: Settings) -> SchedulerConfig:
    return SchedulerConfig(poll_seconds=settings.haven_scheduler_poll_seconds,
                           grace=timedelta(hours=settings.haven_catch_up_hours))


class Scheduler:
    def __init__(self, engine: Engine, send: Sender, config: SchedulerConfig | None = None) -> None:
        self.engine = engine
        self.send = send
        self.config = config or SchedulerConfig()

    async def run_forever(self) -> None:
        while True:
            try:
                while await self.tick() == self.config.batch:
                    pass  # a full batch: there may be more due right now
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a scheduler round failed; trying again next round")
            await asyncio.sleep(self.config.poll_seconds)

    async def tick(self, now: datetime | None = None) -> int:
        """One round: claim what is due, send it, mark it. Returns how many were claimed."""
        now = now or self.engine.clock()
        config = self.config
        claimed = await self.engine.repository.run(
            lambda unit: unit.claim_due_jobs(now, config.lease, config.batch))
        # A few sends in flight at once, so a network round trip does not set the pace;
        # the send lane still sets the rate.
        in_flight = asyncio.Semaphore(config.concurrency)

        async def deliver(job_id: int) -> None:
            async with in_flight:
                try:
                    prepared = await self.engine.prepare_job(job_id, now, config.grace)
                    if prepared is None:
                        return
                    chat_id, reply = prepared
                    delivered = await self.send(chat_id, reply)
                    await self.engine.finish_job(job_id, self.engine.clock(), delivered)
                except Exception:
                    # Left claimed: after the lease it is tried again, by this or another worker.
                    log.exception("a scheduled message could not be sent")

        await asyncio.gather(*(deliver(job_id) for job_id in claimed))
        return len(claimed)
