"""The daily fan-out a batch at a time: many people due at once each get one prompt, chosen
by the same rules as one at a time; tomorrow's rows follow each person's zone (across a
daylight-saving change too); people who paused or blocked Haven are let go; a crash between
the sends and their marking resends that batch only, after the lease; and with paid
broadcasts on, the scheduled prompts (and only they) carry allow_paid_broadcast."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.adapters.telegram import SCHEDULED, HavenRateLimiter, build_application
from bot.app import Content
from bot.engine import Engine
from bot.messages import Incoming, InputKind, Message, Reply
from bot.practice import DAILY, SNOOZE, plan_next_daily
from bot.schedule_times import local_day, next_daily_due
from bot.scheduler import Scheduler, SchedulerConfig, scheduler_config
from bot.settings import PAID_BROADCAST_RATE, TELEGRAM_RATE, load_settings
from bot.storage.crypto import cipher_from
from bot.storage.models import FlowRun, ScheduledJob, User, as_utc
from bot.storage.repository import Repository, UnitOfWork
from tests.fake_telegram import FakeTelegram
from tests.helpers import Clock, Outbox, Reader, labels, make_engine, migrated, texts
from tests.test_console_flows import onboard

PEAK = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)  # 08:00 in London (summer time)
TOKEN = "777777:FANOUT-token"


@dataclass(frozen=True)
class Person:
    chat_id: int
    daily_time: str = "08:00"
    zone: str = "Europe/London"
    focus: str = "partner"
    paused: bool = False
    blocked: bool = False
    daily_enabled: bool = True
    discreet: bool = False


async def add_people(repository: Repository, people: list[Person], now: datetime) -> None:
    """People with the daily prompt on, written straight to the database, each with their
    next daily row planned after `now` by the one-at-a-time code."""

    def add(unit: UnitOfWork) -> None:
        for person in people:
            user = User(chat_id=person.chat_id, first_name="Sam", language="en",
                        focus=person.focus, country="GB", timezone=person.zone,
                        keep_reflections=True, onboarded=True, recent_updates=[],
                        daily_enabled=True, daily_time=person.daily_time,
                        discreet=person.discreet)
            unit.session.add(user)
            unit.session.flush()
            plan_next_daily(unit, user, now)
            user.paused = person.paused
            user.daily_enabled = person.daily_enabled
            user.blocked_at = now if person.blocked else None

    await repository.run(add)


async def add_due_now(repository: Repository, chat_id: int) -> None:
    """Someone whose daily prompt (in UTC) was due two minutes ago, by the real clock."""
    now = datetime.now(UTC)
    await add_people(repository, [Person(chat_id, f"{now - timedelta(minutes=2):%H:%M}", "UTC")],
                     now - timedelta(hours=1))


async def all_jobs(repository: Repository) -> list[ScheduledJob]:
    return await Reader(repository).query(select(ScheduledJob).order_by(ScheduledJob.id))


async def users_by_chat(repository: Repository) -> dict[int, User]:
    return {user.chat_id: user for user in await Reader(repository).query(select(User))}


async def drain(scheduler: Scheduler) -> int:
    """Tick until nothing more is claimed; how many rows were claimed in all."""
    total = 0
    while claimed := await scheduler.tick():
        total += claimed
    return total


@pytest.fixture
def clock() -> Clock:
    return Clock(PEAK - timedelta(days=1))


@pytest.fixture
def daily_engine(content: Content, repository: Repository, clock: Clock) -> Engine:
    return make_engine(content, repository, clock)


async def test_a_batch_of_many_people_each_get_exactly_one_prompt(
    daily_engine: Engine, repository: Repository, clock: Clock
) -> None:
    people = [Person(5000 + n, focus=("partner", "family", "friend", "work", "healing")[n % 5],
                     discreet=n % 7 == 0) for n in range(230)]
    await add_people(repository, people, clock.now)
    outbox = Outbox()
    scheduler = Scheduler(daily_engine, outbox, SchedulerConfig(batch=100))
    clock.now = PEAK + timedelta(seconds=20)
    assert await drain(scheduler) == 230
    assert await drain(scheduler) == 0, "once only"
    sent_to = Counter(chat_id for chat_id, _ in outbox.sent)
    assert sorted(sent_to) == [person.chat_id for person in people]
    assert set(sent_to.values()) == {1}

    library = daily_engine.daily
    assert library is not None
    users = await users_by_chat(repository)
    by_user = {user.id: user for user in users.values()}
    sent = {by_user[job.user_id].chat_id: job for job in await all_jobs(repository)
            if job.state == "sent"}
    for chat_id, reply in outbox.sent:
        job, user = sent[chat_id], users[chat_id]
        prompt = library.by_id[job.prompt_id or ""]
        assert user.open_prompt == prompt.id, "a typed reply answers the prompt just sent"
        assert prompt.suits(user.focus)
        assert as_utc(job.sent_at or PEAK) >= PEAK
        if user.discreet:
            assert prompt.text not in texts(reply)
            assert labels(reply)[0] == "Show it"
        else:
            assert prompt.text in texts(reply)
            assert labels(reply) == ["Answer", "Skip today", "Ask me in an hour",
                                     "Pause prompts"]
    assert len({job.prompt_id for job in sent.values()}) > 20, "people do not march in step"


async def test_the_batch_chooses_as_one_at_a_time_and_never_repeats_within_30_days(
    daily_engine: Engine, repository: Repository, clock: Clock
) -> None:
    """Each person's history (kept prompts, snoozed ones, an open flow) steers their choice
    exactly as `DailyPractice.choose` would; over 31 days nobody sees a prompt twice."""
    people = [Person(6000 + n, focus=("partner", "healing", "work")[n % 3]) for n in range(12)]
    await add_people(repository, people, clock.now)
    library = daily_engine.daily
    assert library is not None
    users = await users_by_chat(repository)

    def history(unit: UnitOfWork) -> None:
        # Some people already had prompts in the last weeks (some of them snoozed), and
        # one has the self-awareness flow open.
        for n, person in enumerate(people[:6]):
            user_id = users[person.chat_id].id
            for days_ago in range(1, 3 + 6 * n):
                prompt = library.prompts[(7 * n + days_ago) % len(library.prompts)]
                sent_at = PEAK - timedelta(days=days_ago, minutes=n)
                unit.session.add(ScheduledJob(
                    user_id=user_id, kind=DAILY, due_at=sent_at, state="sent", sent_at=sent_at,
                    local_date=local_day(sent_at, person.zone), prompt_id=prompt.id))
                if days_ago % 4 == 0:
                    unit.session.add(ScheduledJob(
                        user_id=user_id, kind=SNOOZE, due_at=sent_at, state="sent",
                        sent_at=sent_at + timedelta(hours=1), prompt_id=prompt.id))
        unit.session.add(FlowRun(user_id=users[people[1].chat_id].id, flow="self_awareness",
                                 step="intro", answers={}, status="open"))

    await repository.run(history)
    outbox = Outbox()
    scheduler = Scheduler(daily_engine, outbox, SchedulerConfig(batch=5))
    for day in range(31):
        clock.now = PEAK + timedelta(days=day, seconds=30)

        def expected(unit: UnitOfWork) -> dict[int, str]:
            """What one-at-a-time would choose for each person now."""
            chosen = {}
            for person in people:
                user = unit.find_user(person.chat_id)
                assert user is not None
                zone = user.timezone or "UTC"
                recent = [(pid, local_day(as_utc(at), zone))
                          for pid, at in unit.sent_prompts(user, clock.now - timedelta(days=45))]
                flows = [flow for flow, _ in unit.open_steps(user)]
                chosen[person.chat_id] = library.choose(
                    user.id, local_day(clock.now, zone), user.focus, recent, flows).id
            return chosen

        want = await repository.run(expected)
        before = len(outbox.sent)
        assert await drain(scheduler) == len(people)
        got = {chat_id: reply for chat_id, reply in outbox.sent[before:]}
        assert {chat_id: next(p.id for p in library.prompts if p.text in texts(reply))
                for chat_id, reply in got.items()} == want
    by_user: dict[int, list[str]] = {}
    for job in await all_jobs(repository):
        if job.kind == DAILY and job.state == "sent" and as_utc(job.sent_at or PEAK) >= PEAK:
            by_user.setdefault(job.user_id, []).append(job.prompt_id or "")
    assert len(by_user) == len(people)
    for prompts in by_user.values():
        assert len(prompts) == 31
        assert len(set(prompts[:30])) == 30, "no repeat within 30 days"


async def test_tomorrows_rows_follow_each_zone_across_a_daylight_saving_change(
    daily_engine: Engine, repository: Repository, clock: Clock
) -> None:
    # 2027-03-13: the night before New York springs forward (02:00 -> 03:00 on the 14th),
    # and London and Sydney on ordinary days.
    start = datetime(2027, 3, 12, 12, 0, tzinfo=UTC)
    clock.now = start
    people = [Person(7100, "02:30", "America/New_York"),  # tomorrow's 02:30 does not exist
              Person(7101, "08:00", "Europe/London"),
              Person(7102, "08:00", "Europe/London"),
              Person(7103, "19:15", "Australia/Sydney")]
    await add_people(repository, people, clock.now)
    outbox = Outbox()
    scheduler = Scheduler(daily_engine, outbox)
    clock.now = datetime(2027, 3, 13, 8, 45, tzinfo=UTC)  # everyone's 13 March time has come
    assert await drain(scheduler) == 4
    assert sorted(chat_id for chat_id, _ in outbox.sent) == [p.chat_id for p in people]
    users = await users_by_chat(repository)
    due = {job.user_id: job for job in await all_jobs(repository) if job.state == "due"}
    sent = {job.user_id: job for job in await all_jobs(repository) if job.state == "sent"}
    for person in people:
        user_id = users[person.chat_id].id
        hours, minutes = map(int, person.daily_time.split(":"))
        want, day = next_daily_due(as_utc(sent[user_id].sent_at or start), time(hours, minutes),
                                   person.zone)
        assert (as_utc(due[user_id].due_at), due[user_id].local_date) == (want, day)
    new_york = due[users[7100].id]
    assert new_york.local_date == date(2027, 3, 14)
    assert as_utc(new_york.due_at) == datetime(2027, 3, 14, 7, 0, tzinfo=UTC), \
        "02:30 is in the gap: due at 03:00 EDT, the first minute after it"
    assert as_utc(due[users[7101].id].due_at) == datetime(2027, 3, 14, 8, 0, tzinfo=UTC)
    clock.now = datetime(2027, 3, 14, 7, 0, 5, tzinfo=UTC)
    assert await drain(scheduler) == 1
    assert outbox.sent[-1][0] == 7100, "and it arrives then, once"


async def test_people_who_paused_blocked_or_turned_it_off_are_let_go(
    daily_engine: Engine, repository: Repository, clock: Clock
) -> None:
    people = [Person(8000), Person(8001, paused=True), Person(8002, blocked=True),
              Person(8003, daily_enabled=False), Person(8004)]
    await add_people(repository, people, clock.now)
    outbox = Outbox()
    outbox.unreachable.add(8004)  # Telegram answers 403 when the prompt is sent
    scheduler = Scheduler(daily_engine, outbox)
    clock.now = PEAK + timedelta(seconds=10)
    assert await drain(scheduler) == 5
    assert [chat_id for chat_id, _ in outbox.sent] == [8000]
    users = await users_by_chat(repository)
    states: dict[int, list[str]] = {}
    for job in await all_jobs(repository):
        states.setdefault(job.user_id, []).append(job.state)
    assert states[users[8000].id] == ["sent", "due"]
    for chat_id in (8001, 8002, 8003):
        assert states[users[chat_id].id] == ["skipped"], "let go, and nothing planned"
        assert users[chat_id].open_prompt is None
    assert states[users[8004].id] == ["skipped", "due"], "unreachable: as finish_job does"


async def test_a_crash_between_sending_and_marking_resends_that_batch_only(
    daily_engine: Engine, repository: Repository, clock: Clock
) -> None:
    people = [Person(9000 + n) for n in range(12)]
    await add_people(repository, people, clock.now)
    outbox = Outbox()
    config = SchedulerConfig(batch=5)
    scheduler = Scheduler(daily_engine, outbox, config)
    clock.now = PEAK + timedelta(seconds=5)
    finish_batch = daily_engine.finish_batch

    async def crash(_deliveries: Any) -> None:
        raise RuntimeError("the worker died before marking its batch")

    daily_engine.finish_batch = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await scheduler.tick()
    daily_engine.finish_batch = finish_batch  # type: ignore[method-assign]
    crashed = [chat_id for chat_id, _ in outbox.sent]
    assert len(crashed) == 5
    first_sends = {chat_id: texts(reply) for chat_id, reply in outbox.sent}
    clock.now += timedelta(seconds=30)
    assert await drain(scheduler) == 7, "the crashed batch's claims are left alone"
    assert len(outbox.sent) == 12
    clock.now += config.lease
    assert await drain(scheduler) == 5, "after the lease, that batch is claimed again"
    counts = Counter(chat_id for chat_id, _ in outbox.sent)
    assert {chat_id for chat_id, n in counts.items() if n == 2} == set(crashed)
    assert set(counts) == {p.chat_id for p in people} and max(counts.values()) == 2
    for chat_id, reply in outbox.sent[12:]:
        assert texts(reply) == first_sends[chat_id], "sent again with the same prompt"
    assert await drain(scheduler) == 0
    due = [job for job in await all_jobs(repository) if job.state == "due"]
    assert len(due) == 12 and {job.local_date for job in due} == {date(2026, 6, 3)}


async def test_a_scheduler_stopped_mid_batch_marks_what_went_out(
    daily_engine: Engine, repository: Repository, clock: Clock
) -> None:
    people = [Person(9500 + n) for n in range(6)]
    await add_people(repository, people, clock.now)
    sent: list[int] = []
    three_sent, never = asyncio.Event(), asyncio.Event()

    async def slow(chat_id: int, _reply: Reply) -> bool:
        if len(sent) >= 3:
            three_sent.set()
            await never.wait()  # the rest are still on their way when the worker stops
        sent.append(chat_id)
        return True

    scheduler = Scheduler(daily_engine, slow, SchedulerConfig(concurrency=1))
    clock.now = PEAK + timedelta(seconds=5)
    task = asyncio.create_task(scheduler.tick())
    await three_sent.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    states = Counter(job.state for job in await all_jobs(repository))
    assert states["sent"] == 3, "what went out is marked and not sent again"
    assert states["due"] == 3 + 3, "the rest wait for the lease; tomorrow is planned for 3"


async def test_checkin_and_snooze_around_a_batch(
    daily_engine: Engine, repository: Repository, clock: Clock
) -> None:
    """/checkin before the batch means no scheduled prompt that day; a snooze from a batch
    prompt comes back through the one-at-a-time path with the same question."""
    first, second = (ConsoleChat(daily_engine, user_id=9900 + n, first_name="Sam")
                     for n in range(2))
    clock.now = PEAK - timedelta(hours=20)
    for chat in (first, second):
        await onboard(chat, daily=("8:00", "London"))
    clock.now = PEAK - timedelta(hours=1)
    await first.send("/checkin")
    outbox = Outbox()
    scheduler = Scheduler(daily_engine, outbox)
    clock.now = PEAK + timedelta(seconds=5)
    assert await drain(scheduler) == 1
    assert [chat_id for chat_id, _ in outbox.sent] == [second.user_id]
    question = texts(outbox.sent[0][1]).split("\n\n")[1]
    snoozed = await daily_engine.handle(Incoming(chat_id=second.user_id, kind=InputKind.PRESS,
                                                  text="d:snooze"))
    assert "in about an hour" in texts(snoozed)
    clock.now = PEAK + timedelta(hours=1, seconds=5)
    assert await drain(scheduler) == 1
    assert question in texts(outbox.sent[-1][1])
    reply = await second.send("I said thank you and meant it.")
    assert "journal" in texts(reply), "a typed reply answers the prompt"


def test_the_prompt_lane_defaults_to_the_limit_of_the_mode(tmp_path: Path) -> None:
    free = load_settings(haven_data_dir=tmp_path)
    paid = load_settings(haven_data_dir=tmp_path, haven_paid_broadcast=True)
    assert not free.haven_paid_broadcast
    assert free.prompt_rate <= TELEGRAM_RATE
    assert paid.prompt_rate + TELEGRAM_RATE <= PAID_BROADCAST_RATE
    assert paid.prompt_rate >= 0.95 * PAID_BROADCAST_RATE
    assert load_settings(haven_data_dir=tmp_path, haven_paid_broadcast=True,
                         haven_prompt_rate_per_second=200).prompt_rate == 200
    assert scheduler_config(paid).concurrency > scheduler_config(free).concurrency


@pytest.mark.parametrize("paid", [True, False])
async def test_paid_broadcast_reaches_the_prompts_and_only_them(
    content: Content, tmp_path: Path, paid: bool
) -> None:
    async with FakeTelegram(token=TOKEN) as fake:
        repository = await migrated(f"sqlite:///{tmp_path / 'paid.sqlite3'}",
                                    cipher_from([Fernet.generate_key()]))
        settings = load_settings(telegram_bot_token=TOKEN, telegram_api_base_url=fake.base_url,
                                 haven_data_dir=tmp_path, haven_paid_broadcast=paid,
                                 haven_scheduler_poll_seconds=0.05)
        engine = make_engine(content, repository)
        fake.user(4321)
        await add_due_now(repository, 4321)
        application = build_application(settings, engine, rate_limited=True, polling=False)
        await application.initialize()
        assert application.post_init is not None and application.post_stop is not None
        try:
            await application.post_init(application)  # starts the scheduler
            for _ in range(200):
                if fake.calls("sendMessage"):
                    break
                await asyncio.sleep(0.05)
            [prompt] = fake.calls("sendMessage")
            assert str(prompt["chat_id"]) == "4321"
            assert "Your question for today" in prompt["text"]
            assert (str(prompt.get("allow_paid_broadcast")).lower() == "true") is paid
            # A reply to someone who writes is never a paid broadcast.
            from bot.adapters.telegram import TelegramAdapter

            await TelegramAdapter(engine).send(application.bot, 4321,
                                               Reply([Message("Thank you.")]))
            reply = fake.calls("sendMessage")[-1]
            assert reply["text"] == "Thank you." and "allow_paid_broadcast" not in reply
            assert fake.errors == []
        finally:
            await application.post_stop(application)
            await application.shutdown()
            await repository.close()


async def test_a_429_is_waited_out_and_the_prompt_goes_once(
    content: Content, tmp_path: Path
) -> None:
    async with FakeTelegram(token=TOKEN) as fake:
        repository = await migrated(f"sqlite:///{tmp_path / 'flood.sqlite3'}",
                                    cipher_from([Fernet.generate_key()]))
        settings = load_settings(telegram_bot_token=TOKEN, telegram_api_base_url=fake.base_url,
                                 haven_data_dir=tmp_path, haven_scheduler_poll_seconds=0.05)
        engine = make_engine(content, repository)
        fake.user(4322)
        await add_due_now(repository, 4322)
        fake.fail_next("sendMessage", status=429, retry_after=1)
        application = build_application(settings, engine, rate_limited=True, polling=False)
        await application.initialize()
        assert application.post_init is not None and application.post_stop is not None
        try:
            began = asyncio.get_running_loop().time()
            await application.post_init(application)
            while len(fake.calls("sendMessage")) < 2:
                assert asyncio.get_running_loop().time() - began < 10, "never retried"
                await asyncio.sleep(0.05)
            waited = asyncio.get_running_loop().time() - began
            assert waited >= 1.0, "retry_after is honoured"
            await asyncio.sleep(0.3)
            assert len(fake.calls("sendMessage")) == 2, "one refused, then sent once"
            assert [e[2] for e in fake.errors] == ["Too Many Requests: retry after 1"]
        finally:
            await application.post_stop(application)
            await application.shutdown()
            await repository.close()


async def test_replies_wait_behind_one_scheduled_message_at_most() -> None:
    """Without paid broadcasts, scheduled messages and replies share one limit; a reply is
    not queued behind the whole lane's worth of scheduled messages waiting for it."""
    limiter = HavenRateLimiter(overall_max_rate=10, max_retries=0)
    order: list[str] = []

    async def send(name: str) -> bool:
        order.append(name)
        return True

    async def request(name: str, scheduled: bool) -> None:
        token = SCHEDULED.set(scheduled)
        try:
            await limiter.process_request(send, (name,), {}, "sendMessage", {"chat_id": 1},
                                          None)
        finally:
            SCHEDULED.reset(token)

    prompts = [asyncio.create_task(request(f"prompt {n}", True)) for n in range(14)]
    await asyncio.sleep(0.01)  # ten go at once (the burst); the rest wait for the limit
    await request("reply", False)
    assert order.index("reply") <= 11, f"the reply waited behind {order.index('reply')}"
    await asyncio.gather(*prompts)
    assert len(order) == 15
