"""A worker SIGKILLed in the middle of a fan-out: the rows it claimed but had not sent go
out once, after the lease, from the worker that takes over; of the prompts it had sent,
only the last unmarked group (sent in the second or so before the kill) can go twice.

The choice is at least once (see bot/scheduler.py): nobody misses their prompt because a
worker died, and the repeat is bounded by one group of marks.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.scheduler import SchedulerConfig
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.models import ScheduledJob
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram
from tests.helpers import Reader, migrated, wait_for
from tests.test_e2e_telegram import fake  # noqa: F401
from tests.test_fanout_batch import Person, add_people

pytestmark = pytest.mark.e2e

PEOPLE = 300
RATE = 20  # prompts a second: the fan-out takes 15 s, long enough to kill it half-way
FIRST_CHAT = 50_000


def prompts_by_chat(server: FakeTelegram) -> dict[int, list[str]]:
    sent: dict[int, list[str]] = {}
    for params in server.calls("sendMessage"):
        sent.setdefault(int(params["chat_id"]), []).append(str(params["text"]))
    return sent


async def test_a_worker_killed_mid_fan_out_leaves_its_claims_to_the_next(
    fake: FakeTelegram, database_url: str, tmp_path: Path  # noqa: F811
) -> None:
    cipher = cipher_from(read_or_create_key_file(key_file(tmp_path)))
    repository = await migrated(database_url, cipher)
    now = datetime.now(UTC)
    due_time = f"{now - timedelta(minutes=2):%H:%M}"  # due two minutes ago, in UTC
    chats = [FIRST_CHAT + n for n in range(PEOPLE)]
    await add_people(repository, [Person(chat, due_time, "UTC") for chat in chats],
                     now - timedelta(hours=1))
    for chat in chats:
        fake.user(chat)
    env = {"HAVEN_PROMPT_RATE_PER_SECOND": str(RATE), "HAVEN_SCHEDULER_POLL_SECONDS": "1",
           "HAVEN_SCHEDULER_LEASE_SECONDS": "10"}
    worker = BotProcess(fake, database_url, tmp_path, **env)
    try:
        await worker.start()
        # Not at a batch's end (batches of 50 here), where every send is marked.
        await wait_for(lambda: len(fake.calls("sendMessage")) >= 120,
                       "the fan-out to be well under way", timeout=60)
        await worker.kill()
        before_kill = prompts_by_chat(fake)
        jobs = await Reader(repository).query(select(ScheduledJob))
        today = [job for job in jobs if job.sent_at is not None or job.claimed_at is not None]
        marked = {job.user_id for job in today if job.state == "sent"}
        claimed_unsent = [job for job in today if job.state == "due" and job.claimed_at]
        assert 0 < len(marked) <= len(before_kill), "marked only once sent"
        # Sent but not yet marked: the last group (a second's sends; two, if a mark was
        # slow) and the sends in flight.
        unmarked_sends = len(before_kill) - len(marked)
        config = SchedulerConfig()
        assert unmarked_sends <= 2 * RATE * config.mark_seconds + config.concurrency
        assert claimed_unsent, "the dead worker held claims on rows it had not sent"

        successor = BotProcess(fake, database_url, tmp_path, **env)
        worker = successor
        await successor.start()
        await wait_for(lambda: len(prompts_by_chat(fake)) == PEOPLE,
                       "every person's prompt, after the lease", timeout=90)
        await wait_for(lambda: len(fake.calls("sendMessage")) >= PEOPLE + unmarked_sends,
                       "the unmarked group to be sent again")
        await asyncio.sleep(1.5)  # a scheduler round or so more: nothing else may follow
    finally:
        await worker.stop()
    sent = prompts_by_chat(fake)
    counts = Counter({chat: len(texts) for chat, texts in sent.items()})
    assert set(counts) == set(chats), "nobody missed their prompt"
    twice = {chat for chat, n in counts.items() if n == 2}
    assert max(counts.values()) <= 2
    assert len(twice) == unmarked_sends, "only the sent-but-unmarked prompts went again"
    assert twice <= set(before_kill), "a repeat only where the dead worker had sent"
    for chat in twice:
        assert sent[chat][0] == sent[chat][1], "the same prompt again, not another"
    jobs = await Reader(repository).query(select(ScheduledJob))
    states = Counter(job.state for job in jobs)
    assert states["sent"] == PEOPLE and states["due"] == PEOPLE, "sent once, tomorrow's planned"
    await repository.close()
