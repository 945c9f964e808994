"""The loop that sends scheduled work: daily prompts, snoozed ones, weekly reflections and
check-backs.

Every few seconds it claims a batch of the rows that are due (on PostgreSQL with FOR UPDATE
SKIP LOCKED, so several workers never take the same row), readies their messages, sends
them through its own rate-limited lane, and marks the rows sent. While batches come full,
the next follows at once, after whatever else waits on the event loop.

Delivery is at least once: rows are marked sent after Telegram accepted their messages, so
a worker that dies in between leaves claims that run out (the lease) and those rows are
sent again by another worker. The window is one batch's sends: a batch's daily prompts
are marked together once they are all out (or when the worker is stopped). Rows missed
while nothing ran are still sent within the grace window, and let go after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.engine import Engine
from bot.messages import Reply
from bot.practice import Delivery, DuePrompt
from bot.settings import Settings

log = logging.getLogger(__name__)

# Sends one reply to one chat; False if the person can no longer be reached.
Sender = Callable[[int, Reply], Awaitable[bool]]


@dataclass(frozen=True)
class SchedulerConfig:
    poll_seconds: float = 15.0
    grace: timedelta = timedelta(hours=3)
    lease: timedelta = timedelta(minutes=2)
    batch: int = 250
    concurrency: int = 8


def scheduler_config(settings: Settings) -> SchedulerConfig:
    # Enough sends in flight for the lane's rate with round trips of up to 1/8 s or so.
    concurrency = max(SchedulerConfig.concurrency, min(128, math.ceil(settings.prompt_rate / 8)))
    return SchedulerConfig(poll_seconds=settings.haven_scheduler_poll_seconds,
                           grace=timedelta(hours=settings.haven_catch_up_hours),
                           concurrency=concurrency)


class Scheduler:
    def __init__(self, engine: Engine, send: Sender, config: SchedulerConfig | None = None) -> None:
        self.engine = engine
        self.send = send
        self.config = config or SchedulerConfig()

    async def run_forever(self) -> None:
        while True:
            full = False
            try:
                full = await self.tick() == self.config.batch
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a scheduler round failed; trying again next round")
            # After a full batch there may be more due right now: go on, once everything else
            # waiting on the event loop (people writing) has had its turn.
            await asyncio.sleep(0 if full else self.config.poll_seconds)

    async def tick(self, now: datetime | None = None) -> int:
        """One round: claim what is due, send it, mark it. Returns how many were claimed.

        The daily prompts of the batch are readied together when they are claimed and marked
        together once they are all sent (`Engine.claim_batch`, `Engine.finish_batch`); other
        rows (weekly, snooze, check-backs) go one at a time through `Engine.prepare_job`.
        """
        now = now or self.engine.clock()
        config = self.config
        batch = await self.engine.claim_batch(now, config.lease, config.batch, config.grace)
        # A few sends in flight at once, so a network round trip does not set the pace;
        # the send lane still sets the rate.
        in_flight = asyncio.Semaphore(config.concurrency)
        delivered: list[Delivery] = []

        async def deliver_prompt(prompt: DuePrompt) -> None:
            async with in_flight:
                try:
                    reached = await self.send(prompt.chat_id, prompt.reply())
                except Exception:
                    # Left claimed: after the lease it is tried again, by this or another worker.
                    log.exception("a daily prompt could not be sent")
                    return
                delivered.append(Delivery(prompt.job_id, reached, self.engine.clock()))

        async def deliver(job_id: int) -> None:
            async with in_flight:
                try:
                    prepared = await self.engine.prepare_job(job_id, now, config.grace)
                    if prepared is None:
                        return
                    chat_id, reply = prepared
                    reached = await self.send(chat_id, reply)
                    await self.engine.finish_job(job_id, self.engine.clock(), reached)
                except Exception:
                    # Left claimed: after the lease it is tried again, by this or another worker.
                    log.exception("a scheduled message could not be sent")

        try:
            await asyncio.gather(*(deliver_prompt(prompt) for prompt in batch.prompts),
                                 *(deliver(job_id) for job_id in batch.others))
        finally:
            # Also when stopped half-way: what went out is marked, so only what did not is
            # sent after the lease. A crash before this line sends the batch again (at least
            # once); nothing else can.
            await self.engine.finish_batch(delivered)
        return batch.claimed
