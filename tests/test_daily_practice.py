"""The daily prompt: opting in, arriving once at local time, answering, skipping, snoozing,
pausing, catching up after downtime, and never twice for one day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.app import Content
from bot.engine import Engine
from bot.flood import FloodGuard
from bot.messages import Incoming, InputKind, Reply
from bot.scheduler import Scheduler, SchedulerConfig
from bot.storage.models import ScheduledJob
from bot.storage.repository import Repository
from tests.helpers import Clock, Outbox, Reader, labels, make_engine, texts
from tests.test_console_flows import onboard

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # 13:00 in London (summer time)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def daily_engine(content: Content, repository: Repository, clock: Clock) -> Engine:
    return make_engine(content, repository, clock)


@pytest.fixture
def person(daily_engine: Engine) -> ConsoleChat:
    return ConsoleChat(daily_engine, user_id=3131, first_name="Sam")


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
def scheduler(daily_engine: Engine, outbox: Outbox) -> Scheduler:
    return Scheduler(daily_engine, outbox, SchedulerConfig(poll_seconds=0.01))


async def jobs(repository: Repository) -> list[ScheduledJob]:
    return await Reader(repository).query(select(ScheduledJob).order_by(ScheduledJob.id))


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def test_opting_in_plans_the_first_prompt_at_local_time(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person, daily=("8:00", "London"))
    user = await Reader(repository).find_user(person.user_id)
    assert user is not None
    assert (user.daily_enabled, user.daily_time, user.timezone) == (True, "08:00", "Europe/London")
    planned = await jobs(repository)
    assert [(j.kind, j.state, utc(j.due_at)) for j in planned] == [
        ("daily", "due", datetime(2026, 6, 2, 7, 0, tzinfo=UTC))]  # 08:00 BST tomorrow


async def test_the_prompt_arrives_once_and_the_answer_is_kept(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    clock.now = datetime(2026, 6, 2, 6, 59, tzinfo=UTC)
    assert await scheduler.tick() == 0, "not yet due"
    clock.now = datetime(2026, 6, 2, 7, 0, 20, tzinfo=UTC)
    assert await scheduler.tick() == 1
    assert await scheduler.tick() == 0, "once only"
    [(chat_id, reply)] = outbox.sent
    assert chat_id == person.user_id
    assert labels(reply) == ["Answer", "Skip today", "Ask me in an hour", "Pause prompts"]
    states = [(j.state, utc(j.due_at)) for j in await jobs(repository)]
    assert states == [("sent", datetime(2026, 6, 2, 7, 0, tzinfo=UTC)),
                      ("due", datetime(2026, 6, 3, 7, 0, tzinfo=UTC))]

    answer = "I noticed I went quiet when plans changed, and that's alright."
    reply = await person.send(answer)
    assert "journal" in texts(reply)
    unit = Reader(repository)
    user = await unit.find_user(person.user_id)
    assert user is not None
    kept = await unit.reflections(user)
    assert [(r.flow, r.text) for r in kept] == [("daily", answer)]
    reply = await person.send("/journal")
    assert "Daily practice" in texts(reply) and answer in texts(reply)


async def test_checkin_gives_today_and_the_scheduled_one_does_not_follow(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    clock.now = datetime(2026, 6, 2, 5, 0, tzinfo=UTC)  # 06:00 in London, before the prompt
    reply = await person.send("/checkin")
    assert "today's question" in texts(reply)
    clock.now = datetime(2026, 6, 2, 7, 1, tzinfo=UTC)
    assert await scheduler.tick() == 0
    assert outbox.sent == []
    due = [utc(j.due_at) for j in await jobs(repository) if j.state == "due"]
    assert due == [datetime(2026, 6, 3, 7, 0, tzinfo=UTC)]


async def test_skip_today_then_pause_and_resume(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    await scheduler.tick()
    skipped = await person.engine.handle(Incoming(chat_id=person.user_id, kind=InputKind.PRESS,
                                                  text="d:skip"))
    assert "no question today" in texts(skipped)
    reply = await person.send("just chatting")
    assert "journal" not in texts(reply), "after a skip, text is not taken as an answer"

    paused = await person.send("/pause")
    assert "paused" in texts(paused).lower()
    clock.now = datetime(2026, 6, 3, 7, 5, tzinfo=UTC)
    assert await scheduler.tick() == 0
    assert len(outbox.sent) == 1
    assert not [j for j in await jobs(repository) if j.state == "due"]
    resumed = await person.send("/resume")
    assert "08:00" in texts(resumed)
    assert len([j for j in await jobs(repository) if j.state == "due"]) == 1


async def test_snoozing_asks_the_same_question_an_hour_later(
    person: ConsoleChat, scheduler: Scheduler, outbox: Outbox, clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    await scheduler.tick()
    question = texts(outbox.sent[-1][1]).split("\n\n")[1]
    reply = await person.engine.handle(Incoming(chat_id=person.user_id, kind=InputKind.PRESS,
                                                text="d:snooze"))
    assert "in about an hour" in texts(reply)
    clock.now = datetime(2026, 6, 2, 7, 30, tzinfo=UTC)
    assert await scheduler.tick() == 0
    clock.now = datetime(2026, 6, 2, 8, 0, 30, tzinfo=UTC)
    assert await scheduler.tick() == 1
    assert question in texts(outbox.sent[-1][1])


async def test_catch_up_inside_the_grace_window_and_not_after(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    clock.now = datetime(2026, 6, 2, 9, 30, tzinfo=UTC)  # down from 07:00 until 09:30 UTC
    assert await scheduler.tick() == 1
    assert len(outbox.sent) == 1, "2.5 hours late is within the 3-hour grace"
    clock.now = datetime(2026, 6, 3, 11, 0, tzinfo=UTC)  # 4 hours late: let go
    assert await scheduler.tick() == 1
    assert len(outbox.sent) == 1
    states = [j.state for j in await jobs(repository)]
    assert states == ["sent", "skipped", "due"]


async def test_a_person_who_blocked_haven_gets_nothing(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    await person.engine.set_blocked(person.user_id, True)
    clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    await scheduler.tick()
    assert outbox.sent == []
    assert [j.state for j in await jobs(repository)] == ["skipped"], "and nothing planned"
    await person.engine.set_blocked(person.user_id, False)  # they unblocked Haven
    assert [j.state for j in await jobs(repository)] == ["skipped", "due"]
    outbox.unreachable.add(person.user_id)  # Telegram answers 403 at the moment of sending
    clock.now = datetime(2026, 6, 3, 7, 0, tzinfo=UTC)
    await scheduler.tick()
    assert outbox.sent == []
    assert [j.state for j in await jobs(repository)][:2] == ["skipped", "skipped"]


async def test_no_prompt_repeats_within_thirty_days(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    for day in range(31):
        clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC) + timedelta(days=day)
        assert await scheduler.tick() == 1
    prompts = [job.prompt_id for job in await jobs(repository) if job.state == "sent"]
    assert len(prompts) == len(outbox.sent) == 31
    assert len(set(prompts[:30])) == 30
    library = person.engine.daily
    assert library is not None
    for prompt_id, (_, reply) in zip(prompts, outbox.sent, strict=True):
        assert library.by_id[prompt_id].text in texts(reply)


async def test_time_zone_from_the_local_time_now(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    clock.now = datetime(2026, 6, 1, 20, 40, tzinfo=UTC)
    await onboard(person)
    await person.send("/settings")
    await person.send("Daily prompt")
    await person.send("Yes, once a day")
    await person.send("9pm")
    reply = await person.send("it's 9:40 pm here")  # UTC+1 in summer: several places
    assert "Which one is yours?" in texts(reply)
    assert labels(reply)[0] == "Europe/London"
    reply = await person.send("1")  # the first button
    assert "21:00 (Europe/London)" in texts(reply)
    user = await Reader(repository).find_user(person.user_id)
    assert user is not None and user.timezone is not None
    from zoneinfo import ZoneInfo

    offset = clock.now.astimezone(ZoneInfo(user.timezone)).utcoffset()
    assert offset == timedelta(hours=1)


@pytest.mark.postgres
async def test_two_schedulers_never_send_the_same_prompt(
    content: Content, postgres_available: None, cipher, clock: Clock
) -> None:
    from tests.conftest import drop_postgres_database, fresh_postgres_database
    from tests.helpers import migrated

    name, url = await fresh_postgres_database()
    first, second = await migrated(url, cipher), await migrated(url, cipher)
    try:
        engines = [Engine(content.flows, content.machines, content.renderer, repo,
                          flood=FloodGuard(burst=100_000), daily=content.daily, clock=clock)
                   for repo in (first, second)]
        for user_id in range(40):
            await onboard(ConsoleChat(engines[0], user_id=7000 + user_id),
                          daily=("8:00", "London"))
        outbox = Outbox()
        clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
        schedulers = [Scheduler(engine, outbox, SchedulerConfig(batch=7)) for engine in engines]
        for _ in range(8):
            await asyncio.gather(*(scheduler.tick() for scheduler in schedulers))
        sent_to = [chat_id for chat_id, _ in outbox.sent]
        assert sorted(sent_to) == [7000 + n for n in range(40)], "each person exactly once"
    finally:
        await first.close()
        await second.close()
        await drop_postgres_database(name)


async def settings_choice(person: ConsoleChat, option: str, *answers: str) -> Reply:
    await person.send("/settings")
    reply = await person.send(option)
    for answer in answers:
        reply = await person.send(answer)
    return reply


async def test_quiet_hours_hold_a_prompt_until_they_end(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, daily=("23:30", "London"))  # 22:30 UTC in summer
    reply = await settings_choice(person, "Quiet hours", "23:00", "7:00")
    assert "23:00 to 07:00" in texts(reply)
    clock.now = datetime(2026, 6, 1, 22, 30, 5, tzinfo=UTC)
    assert await scheduler.tick() == 1
    assert outbox.sent == [], "nothing during quiet hours"
    held = [j for j in await jobs(repository) if j.state == "due"]
    assert [utc(j.due_at) for j in held] == [datetime(2026, 6, 2, 6, 0, tzinfo=UTC)]
    clock.now = datetime(2026, 6, 2, 6, 0, 10, tzinfo=UTC)  # 07:00 in London
    assert await scheduler.tick() == 1
    assert len(outbox.sent) == 1, "sent when the quiet hours end"


async def test_weekly_reflection_quotes_the_week(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    await settings_choice(person, "Weekly reflection", "Sunday")
    weekly = [j for j in await jobs(repository) if j.kind == "weekly"]
    assert [utc(j.due_at) for j in weekly] == [datetime(2026, 6, 7, 7, 0, tzinfo=UTC)]
    clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    await scheduler.tick()
    await person.send("We cooked together and it felt easy.")
    clock.now = datetime(2026, 6, 7, 7, 0, 5, tzinfo=UTC)
    await scheduler.tick()
    weekly_messages = [texts(reply) for _, reply in outbox.sent if "your week" in texts(reply)]
    assert len(weekly_messages) == 1
    assert "We cooked together and it felt easy." in weekly_messages[0]
    assert "week ahead" in weekly_messages[0]
    nxt = [j for j in await jobs(repository) if j.kind == "weekly" and j.state == "due"]
    assert [utc(j.due_at) for j in nxt] == [datetime(2026, 6, 14, 7, 0, tzinfo=UTC)]


async def test_discreet_reminders_say_nothing_personal(
    person: ConsoleChat, scheduler: Scheduler, outbox: Outbox, clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    await settings_choice(person, "Discreet reminders", "Yes, keep reminders discreet")
    clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    await scheduler.tick()
    [(_, reply)] = outbox.sent
    library = person.engine.daily
    assert library is not None
    assert not any(prompt.text in texts(reply) for prompt in library.prompts)
    assert "Show it" in labels(reply)
    shown = await person.engine.handle(Incoming(chat_id=person.user_id, kind=InputKind.PRESS,
                                                text="d:show"))
    assert any(prompt.text in texts(shown) for prompt in library.prompts)


async def test_the_journal_filters_by_flow_and_by_theme(
    person: ConsoleChat, scheduler: Scheduler, outbox: Outbox, clock: Clock
) -> None:
    await onboard(person, daily=("8:00", "London"))
    await person.send("/aware")
    await person.send("Let's begin")
    await person.send("An answer about my triggers.")
    await person.send("/cancel")
    clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    await scheduler.tick()
    await person.send("An answer to today's question.")
    library = person.engine.daily
    assert library is not None
    reply = await person.send("/journal")
    assert "An answer about my triggers." in texts(reply)
    assert "An answer to today's question." in texts(reply)
    options = labels(reply)
    assert "Self-awareness" in options and "Daily practice" in options
    only_daily = await person.send(str(options.index("Daily practice") + 1))
    assert "Your journal: Daily practice" in texts(only_daily)
    assert "An answer to today's question." in texts(only_daily)
    assert "An answer about my triggers." not in texts(only_daily)
    assert "Everything" in labels(only_daily)


async def test_a_restart_in_the_middle_of_a_fan_out_loses_and_repeats_nothing(
    daily_engine: Engine, repository: Repository, outbox: Outbox, clock: Clock
) -> None:
    for offset in range(10):
        await onboard(ConsoleChat(daily_engine, user_id=9100 + offset), daily=("8:00", "London"))
    clock.now = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    lease = SchedulerConfig().lease
    # A worker claims half the due prompts and dies before sending any of them.
    dead = await repository.run(lambda unit: unit.claim_due_jobs(clock.now, lease, 5))
    assert len(dead) == 5
    restarted = Scheduler(daily_engine, outbox)
    clock.now += timedelta(seconds=30)
    await restarted.tick()
    assert len(outbox.sent) == 5, "live claims are left alone"
    clock.now += lease
    await restarted.tick()
    assert sorted(chat for chat, _ in outbox.sent) == [9100 + n for n in range(10)]
    assert await restarted.tick() == 0
