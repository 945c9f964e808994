"""The loop that sends scheduled work: daily prompts, snoozed ones, weekly reflections and
check-backs.

Every few seconds it claims a batch of the rows that are due (on PostgreSQL with FOR UPDATE
SKIP LOCKED, so several workers never take the same row), readies their messages, sends
them through its own rate-limited lane, and marks the rows sent. While batches come full,
the next follows at once, after whatever else waits on the event loop.

Delivery is at least once: rows are marked sent after Telegram accepted their messages, so
a worker that dies in between leaves claims that run out (the lease) and those rows are
sent again by another worker. The window is small: a batch's daily prompts are marked as
they go out, a group at a time (every `mark_seconds`), so a worker killed mid-batch
repeats at most its last second or so of sends, and the rows it had claimed but not yet
sent go out once, after the lease. Losing a prompt whose send may
have happened would be the other choice; a repeated prompt costs a person less than a
missing check-back. Rows missed while nothing ran are still sent within the grace window,
and let go after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot import metrics
from bot.engine import Engine
from bot.messages import Reply
from bot.practice import Delivery, DuePrompt
from bot.settings import Settings

log = logging.getLogger(__name__)

# Sends one reply to one chat; False if the person can no longer be reached.
Sender = Callable[[int, Reply], Awaitable[bool]]


# About 8.5 s of sends: one worker at Telegram's 29.4/s claims the full 250 at once.
BATCH_SECONDS = 8.5
MIN_BATCH = 10


@dataclass(frozen=True)
class SchedulerConfig:
    poll_seconds: float = 15.0
    grace: timedelta = timedelta(hours=3)
    lease: timedelta = timedelta(minutes=2)
    batch: int = 250
    concurrency: int = 8
    mark_seconds: float = 1.0


def scheduler_config(settings: Settings) -> SchedulerConfig:
    # Enough sends in flight for the lane's rate with round trips of up to 1/8 s or so.
    concurrency = max(SchedulerConfig.concurrency, min(128, math.ceil(settings.prompt_rate / 8)))
    return SchedulerConfig(poll_seconds=settings.haven_scheduler_poll_seconds,
                           grace=timedelta(hours=settings.haven_catch_up_hours),
                           lease=timedelta(seconds=settings.haven_scheduler_lease_seconds),
                           concurrency=concurrency)


class Scheduler:
    def __init__(self, engine: Engine, send: Sender, config: SchedulerConfig | None = None,
                 pace: Callable[[], float] | None = None) -> None:
        """`pace` gives the sends a second this worker may make now (its lane's rate)."""
        self.engine = engine
        self.send = send
        self.config = config or SchedulerConfig()
        self.pace = pace

    def batch_size(self) -> int:
        """Rows to claim at once: at most `config.batch`, and no more than this worker sends in
        `BATCH_SECONDS`, so that workers share a fan-out in small parts and a batch is out
        well within the lease."""
        if self.pace is None:
            return self.config.batch
        return max(MIN_BATCH, min(self.config.batch, int(self.pace() * BATCH_SECONDS)))

    async def run_forever(self, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        while True:
            full = False
            with metrics.scheduler_round():
                try:
                    full = await self.tick() >= self.batch_size()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("a scheduler round failed; trying again next round")
            # After a full batch there may be more due right now: go on, once everything else
            # waiting on the event loop (people writing) has had its turn.
            await asyncio.sleep(0 if full else self.config.poll_seconds)

    async def tick(self, now: datetime | None = None) -> int:
        """One round: claim what is due, send it, mark it. Returns how many were claimed.

        The daily prompts of the batch are readied together when they are claimed, and marked
        a group at a time as they go out (`Engine.claim_batch`, `DeliveryMarks`); other
        rows (weekly, snooze, check-backs) go one at a time through `Engine.prepare_job`.
        """
        now = now or self.engine.clock()
        await metrics.count_due_rows(self.engine.repository, now)
        config = self.config
        batch = await self.engine.claim_batch(now, config.lease, self.batch_size(), config.grace)
        # A few sends in flight at once, so a network round trip does not set the pace;
        # the send lane still sets the rate.
        in_flight = asyncio.Semaphore(config.concurrency)
        marks = DeliveryMarks(self.engine, config)

        async def deliver_prompt(prompt: DuePrompt) -> None:
            async with in_flight:
                try:
                    reached = await self.send(prompt.chat_id, prompt.reply())
                except Exception:
                    # Left claimed: after the lease it is tried again, by this or another worker.
                    log.exception("a daily prompt could not be sent")
                    return
                await marks.add(Delivery(prompt.job_id, reached, self.engine.clock()))

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
            # sent after the lease.
            await marks.flush()
        if marks.delivered:
            log.info("a batch of daily prompts went out")
        return batch.claimed


class DeliveryMarks:
    """Marks a batch's sent prompts a group at a time while the rest are still going out."""

    def __init__(self, engine: Engine, config: SchedulerConfig) -> None:
        self.engine = engine
        self.config = config
        self.pending: list[Delivery] = []
        self.delivered = 0  # prompts Telegram accepted (not counting people out of reach)
        self.last_marked = engine.clock()
        self._marking = asyncio.Lock()

    async def add(self, delivery: Delivery) -> None:
        self.pending.append(delivery)
        self.delivered += delivery.delivered
        waited = (delivery.at - self.last_marked).total_seconds()
        if waited >= self.config.mark_seconds:
            try:
                await self.flush()
            except Exception:
                # Kept in `pending`: the batch's last flush tries them again.
                log.exception("could not mark sent prompts yet; trying again at the batch's end")

    async def flush(self) -> None:
        async with self._marking:
            group, self.pending = self.pending, []
            self.last_marked = self.engine.clock()
            try:
                await self.engine.finish_batch(group)
            except BaseException:
                self.pending = group + self.pending
                raise
