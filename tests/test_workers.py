"""Workers sharing one bot split Telegram's limits between them, and share the fan-out.

Telegram's limits are per bot, so two workers each sending at the whole rate would send
at twice what Telegram allows. Each worker notes in the database that it is alive and
takes an equal share (bot/workers.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiolimiter import AsyncLimiter
from sqlalchemy import select

from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.models import ScheduledJob, Worker
from bot.storage.repository import Repository
from bot.workers import STALE, SharedLimit, WorkerShare, set_rate
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram
from tests.helpers import Clock, Reader, migrated, wait_for
from tests.test_e2e_telegram import fake  # noqa: F401
from tests.test_fanout_batch import Person, add_people

NOW = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)


def share_of(repository: Repository, clock: Clock, whole: float = 30.0) -> WorkerShare:
    return WorkerShare(repository, [SharedLimit(AsyncLimiter(whole, 1), whole)], clock)


def rate(share: WorkerShare) -> float:
    return share.limits[0].limiter.max_rate


async def test_each_worker_takes_an_equal_share_and_gets_it_back(repository: Repository) -> None:
    clock = Clock(NOW)
    first, second = share_of(repository, clock), share_of(repository, clock)
    assert await first.beat() == 1 and rate(first) == 30.0, "alone: the whole rate"
    assert await second.beat() == 2 and rate(second) == 15.0, "counts the other at once"
    assert await first.beat() == 2 and rate(first) == 15.0, "the other learns at its beat"

    await second.leave()
    assert await first.beat() == 1 and rate(first) == 30.0, "a clean stop gives the share back"


async def test_a_worker_that_died_is_forgotten_after_a_while(repository: Repository) -> None:
    clock = Clock(NOW)
    survivor, dead = share_of(repository, clock), share_of(repository, clock)
    await dead.beat()
    assert await survivor.beat() == 2
    clock.now += STALE - timedelta(seconds=1)
    assert await survivor.beat() == 2, "kept to the smaller share while it may be alive"
    clock.now += timedelta(seconds=2)
    assert await survivor.beat() == 1 and rate(survivor) == 30.0
    ids = [worker.id for worker in await Reader(repository).query(select(Worker))]
    assert ids == [survivor.id]


async def test_a_changed_rate_paces_a_live_limiter() -> None:
    limiter = AsyncLimiter(10, 1)
    set_rate(limiter, 5)
    granted = 0
    while limiter.has_capacity() and granted < 20:
        await limiter.acquire()
        granted += 1
    assert granted == 5, "a burst of one second's worth at the new rate"


# ---------------------------------------------------------------- two real worker processes

PEOPLE = 200


@pytest.mark.e2e
@pytest.mark.postgres
async def test_two_workers_share_the_fan_out_and_send_each_prompt_once(
    fake: FakeTelegram, tmp_path: Path, postgres_available: None  # noqa: F811
) -> None:
    from tests.conftest import drop_postgres_database, fresh_postgres_database

    name, url = await fresh_postgres_database()
    cipher = cipher_from(read_or_create_key_file(key_file(tmp_path)))
    repository = await migrated(url, cipher)
    env = {"HAVEN_PROMPT_RATE_PER_SECOND": "40", "HAVEN_SCHEDULER_POLL_SECONDS": "1",
           "HAVEN_SCHEDULER_LEASE_SECONDS": "20"}
    workers = [BotProcess(fake, url, tmp_path / f"worker{n}", **env) for n in (1, 2)]
    for n in (1, 2):
        (tmp_path / f"worker{n}").mkdir()
        key_file(tmp_path / f"worker{n}").write_bytes(key_file(tmp_path).read_bytes())
    try:
        for worker in workers:
            await worker.start()
        await wait_for(lambda: all("2 workers share" in w.log() for w in workers),
                       "both workers to count each other")
        now = datetime.now(UTC)
        chats = [60_000 + n for n in range(PEOPLE)]
        for chat in chats:
            fake.user(chat)
        await add_people(repository, [Person(chat, f"{now - timedelta(minutes=2):%H:%M}", "UTC")
                                      for chat in chats], now - timedelta(hours=1))
        await wait_for(lambda: len({int(p["chat_id"]) for p in fake.calls("sendMessage")})
                       == PEOPLE, "every person's prompt", timeout=60)
        await asyncio.sleep(2)  # a round or two more: nothing else may follow
    finally:
        for worker in workers:
            await worker.stop()
    counts = Counter(int(params["chat_id"]) for params in fake.calls("sendMessage"))
    assert set(counts) == set(chats) and max(counts.values()) == 1, "each prompt once"
    jobs = await Reader(repository).query(select(ScheduledJob))
    assert Counter(job.state for job in jobs) == {"sent": PEOPLE, "due": PEOPLE}
    sent_by = [worker.log().count('"a batch of daily prompts went out"') for worker in workers]
    assert all(sent_by), f"both workers took part in the fan-out: {sent_by}"
    await repository.close()
    await drop_postgres_database(name)
