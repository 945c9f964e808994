"""/commit: one small commitment, and Haven's check-in on the day the person chose (done,
partly, not yet), through the console adapter with a fixed clock and the real scheduler
(SQLite and PostgreSQL), and once through the fake Telegram Bot API with the real bot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.app import Content
from bot.engine import Engine
from bot.messages import Incoming, InputKind, Reply
from bot.scheduler import Scheduler
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.models import FlowRun, Reflection, ScheduledJob
from bot.storage.repository import Repository
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram
from tests.helpers import Clock, Outbox, Reader, labels, make_engine, migrated, press_data, texts
from tests.test_console_flows import onboard
from tests.test_e2e_telegram import bot, fake, visible  # noqa: F401 - fixtures used below
from tests.test_e2e_telegram import onboard as onboard_on_telegram

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # 13:00 in London (summer time)
PRACTICES = [
    "Do one thing I said I'd do",
    "Be honest, even when it's uncomfortable",
    "Admit a mistake, not cover it up",
    "Keep private what was shared with me",
    "Show up when I said I would",
    "In my own words",
]
WHEN = ["Tomorrow", "In 2 days", "In 3 days", "In a week", "No check-in, thanks"]
OUTCOMES = ["Done", "Partly", "Not yet", "Skip"]
CONCRETE = "Fix Ana's bike by Saturday & tell her <honestly> if I can't."
OWN_WORDS = "Put my phone away when Ana is talking to me."


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def timed_engine(content: Content, repository: Repository, clock: Clock) -> Engine:
    return make_engine(content, repository, clock)


@pytest.fixture
async def person(timed_engine: Engine) -> ConsoleChat:
    """Onboarded, keeping reflections, with a daily prompt at 08:00 in London."""
    chat = ConsoleChat(timed_engine, user_id=3232, first_name="Sam")
    await onboard(chat, daily=("8:00", "London"))
    return chat


async def check_backs(repository: Repository) -> list[ScheduledJob]:
    return await Reader(repository).query(
        select(ScheduledJob).where(ScheduledJob.kind == "checkback").order_by(ScheduledJob.id))


async def kept(repository: Repository) -> list[tuple[str, str, str]]:
    rows = await Reader(repository).query(select(Reflection).order_by(Reflection.id))
    return [(row.flow, row.question, row.text) for row in rows]


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_ins(outbox: Outbox) -> list[Reply]:
    """What the scheduler sent that is a commitment check-in (not a daily prompt)."""
    return [reply for _, reply in outbox.sent if labels(reply) == OUTCOMES]


async def commit_to(person: ConsoleChat, practice: str, when: str,
                    concrete: str | None = CONCRETE) -> Reply:
    """Walk /commit with a listed practice; returns the summary."""
    reply = await person.send("/commit")
    assert "Being trustworthy in small ways" in texts(reply)
    assert labels(reply) == ["Let's begin", "Not now"]
    reply = await person.send("Let's begin")
    assert labels(reply) == PRACTICES
    reply = await person.send(practice)
    assert "You chose:" in texts(reply) and practice in texts(reply)
    assert "what exactly will you do, with whom, and by when?" in texts(reply)
    reply = await person.send(concrete if concrete is not None else "skip")
    assert labels(reply) == WHEN
    assert "at 08:00, your daily prompt time" in texts(reply)
    return await person.send(when)


async def test_a_listed_practice_is_quoted_kept_and_checked_on_that_day(
    person: ConsoleChat, repository: Repository
) -> None:
    summary = await commit_to(person, "Keep private what was shared with me", "In 3 days")
    assert "Keep private what was shared with me" in texts(summary)
    assert CONCRETE in texts(summary)
    assert "&amp; tell her &lt;honestly&gt;" in "".join(m.text for m in summary.messages)
    assert "I'll check in with you in three days, at 08:00" in texts(summary)

    [job] = await check_backs(repository)
    assert (job.kind, job.target, job.state) == ("checkback", "commit_checkin", "due")
    # Three local days later at the daily time: 08:00 in London is 07:00 UTC in June.
    assert utc(job.due_at) == datetime(2026, 6, 4, 7, 0, tzinfo=UTC)
    assert job.answers == {"choose": "private", "concrete": CONCRETE, "when": "d3"}
    assert await kept(repository) == [
        ("commit", "choose", "Keep private what was shared with me"),
        ("commit", "concrete", CONCRETE),
    ]
    runs = await Reader(repository).query(select(FlowRun).where(FlowRun.flow == "commit"))
    assert [(run.status, run.answers) for run in runs] == [("done", {})]


async def test_a_commitment_in_their_own_words(
    person: ConsoleChat, repository: Repository
) -> None:
    await person.send("/commit")
    await person.send("Let's begin")
    reply = await person.send("In my own words")
    assert "In your own words, what's one small thing" in texts(reply)
    assert "Ask about my partner's day over dinner" in texts(reply), "partner's example"
    assert labels(reply) == ["Skip"]
    reply = await person.send(OWN_WORDS)
    assert OWN_WORDS in texts(reply)
    await person.send("skip")
    summary = await person.send("Tomorrow")
    assert OWN_WORDS in texts(summary)
    assert not any(practice in texts(summary) for practice in PRACTICES[:5])
    assert "I'll check in with you tomorrow, at 08:00" in texts(summary)
    [job] = await check_backs(repository)
    assert utc(job.due_at) == datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    assert await kept(repository) == [
        ("commit", "choose", "In my own words"),
        ("commit", "own_words", OWN_WORDS),
    ]


async def test_no_check_in_plans_nothing(person: ConsoleChat, repository: Repository) -> None:
    summary = await commit_to(person, "Do one thing I said I'd do", "No check-in, thanks")
    assert "You chose no check-in." in texts(summary)
    assert "I'll check in" not in texts(summary)
    assert await check_backs(repository) == []


async def test_done_on_the_day_quotes_the_commitment_and_keeps_the_outcome(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await commit_to(person, "Do one thing I said I'd do", "In 3 days")
    outbox = Outbox()
    scheduler = Scheduler(person.engine, outbox)
    await scheduler.tick(datetime(2026, 6, 4, 6, 59, tzinfo=UTC))
    assert check_ins(outbox) == [], "not before 08:00 in London on the day"

    clock.now = datetime(2026, 6, 4, 7, 0, 20, tzinfo=UTC)
    await scheduler.tick(clock.now)
    [check_in] = check_ins(outbox)
    shown = texts(check_in)
    assert "Checking in, as you asked, on the small commitment you chose" in shown
    assert "Do one thing I said I'd do" in shown and CONCRETE in shown
    assert "How did it go?" in shown
    assert [job.state for job in await check_backs(repository)] == ["sent"]
    user = await Reader(repository).find_user(person.user_id)
    assert user is not None and user.active_flow == "commit_checkin"

    reply = await person.engine.handle(Incoming(  # the button under the check-in
        chat_id=person.user_id, kind=InputKind.PRESS, text=press_data(check_in, "Done")))
    assert "You did what you said you'd do" in texts(reply)
    assert "following through on commitments consistently" in texts(reply)
    assert labels(reply) == ["Skip"]
    note = "Ana was surprised. It felt good to just do it."
    reply = await person.send(note)
    assert "I've noted how it went: done." in texts(reply)
    assert "/journal" in texts(reply)
    assert (await kept(repository))[-2:] == [
        ("commit_checkin", "how", "Done"),
        ("commit_checkin", "note", note),
    ]
    journal = texts(await person.send("/journal"))
    assert "Commitment check-in" in journal and "How the commitment went" in journal
    assert note in journal
    runs = await Reader(repository).query(
        select(FlowRun).where(FlowRun.flow == "commit_checkin"))
    assert [(run.status, run.answers) for run in runs] == [("done", {})]


async def test_partly_asks_what_helped_and_a_skipped_note_is_not_kept(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await commit_to(person, "Admit a mistake, not cover it up", "Tomorrow")
    outbox = Outbox()
    clock.now = datetime(2026, 6, 2, 7, 0, 5, tzinfo=UTC)
    await Scheduler(person.engine, outbox).tick(clock.now)
    [check_in] = check_ins(outbox)
    assert "Admit a mistake, not cover it up" in texts(check_in)
    person.show(check_in)
    reply = await person.send("partly")  # typed, not pressed
    assert "What helped, and what got in the way?" in texts(reply)
    reply = await person.send("skip")
    assert "I've noted how it went: partly done." in texts(reply)
    assert [row for row in await kept(repository) if row[0] == "commit_checkin"] == [
        ("commit_checkin", "how", "Partly")]


async def test_not_yet_is_met_without_shame_and_can_check_in_again(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await commit_to(person, "Show up when I said I would", "In a week")
    [first] = await check_backs(repository)
    assert utc(first.due_at) == datetime(2026, 6, 8, 7, 0, tzinfo=UTC)
    outbox = Outbox()
    scheduler = Scheduler(person.engine, outbox)
    clock.now = datetime(2026, 6, 8, 7, 0, 5, tzinfo=UTC)
    await scheduler.tick(clock.now)
    [check_in] = check_ins(outbox)
    person.show(check_in)
    reply = await person.send("3")  # "Not yet", by its number
    assert "no shame" in texts(reply)
    assert "recommitment to safety practices after difficult periods" in texts(reply)
    assert "!" not in texts(reply)
    reply = await person.send("The week ran away from me.")
    assert "another go" in texts(reply)
    assert labels(reply) == ["Check in again in a few days", "No, that's all for now"]
    reply = await person.send("Check in again in a few days")
    assert "I've noted how it went: not yet." in texts(reply)
    assert "I'll check in again in three days, at 08:00." in texts(reply)

    jobs = await check_backs(repository)
    assert [(job.state, job.target, utc(job.due_at)) for job in jobs] == [
        ("sent", "commit_checkin", datetime(2026, 6, 8, 7, 0, tzinfo=UTC)),
        ("due", "commit_checkin", datetime(2026, 6, 11, 7, 0, tzinfo=UTC)),
    ]
    clock.now = datetime(2026, 6, 11, 7, 0, 5, tzinfo=UTC)
    await scheduler.tick(clock.now)
    [_, again] = check_ins(outbox)
    assert "Checking in again, as you asked" in texts(again)
    assert "Show up when I said I would" in texts(again) and CONCRETE in texts(again)
    person.show(again)
    reply = await person.send("Done")
    assert "You did what you said you'd do" in texts(reply)
    reply = await person.send("skip")
    assert "I've noted how it went: done." in texts(reply)
    assert "check in again" not in texts(reply)
    outcomes = [row[2] for row in await kept(repository) if row[1] == "how"]
    assert outcomes == ["Not yet", "Done"]


async def test_not_yet_without_another_check_in_plans_nothing_more(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await commit_to(person, "Do one thing I said I'd do", "In 2 days", concrete=None)
    outbox = Outbox()
    clock.now = datetime(2026, 6, 3, 7, 0, 5, tzinfo=UTC)
    await Scheduler(person.engine, outbox).tick(clock.now)
    [check_in] = check_ins(outbox)
    assert "Do one thing I said I'd do" in texts(check_in)
    person.show(check_in)
    await person.send("Not yet")
    await person.send("skip")
    reply = await person.send("No, that's all for now")
    assert "I've noted how it went: not yet." in texts(reply)
    assert "check in again" not in texts(reply)
    assert [job.state for job in await check_backs(repository)] == ["sent"]


async def test_a_discreet_check_in_says_nothing_personal_until_opened(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await person.send("/settings")
    await person.send("Discreet reminders")
    await person.send("Yes, keep reminders discreet")
    summary = await commit_to(person, "Be honest, even when it's uncomfortable", "Tomorrow")
    assert CONCRETE in texts(summary), "the summary answers the person, so it may quote"
    outbox = Outbox()
    clock.now = datetime(2026, 6, 2, 7, 0, 5, tzinfo=UTC)
    await Scheduler(person.engine, outbox).tick(clock.now)
    [check_in] = check_ins(outbox)
    shown = texts(check_in)
    assert shown.startswith("Checking in, as you asked.")
    for personal in (CONCRETE, "Ana", "honest", "commitment", "relationship", "promise"):
        assert personal.lower() not in shown.lower(), personal
    person.show(check_in)
    reply = await person.send("Done")
    assert "Be honest, even when it's uncomfortable" in texts(reply), "shown once opened"
    assert CONCRETE in texts(reply)


@pytest.mark.e2e
async def test_commit_through_telegram(
    fake: FakeTelegram, bot: BotProcess, database_url: str, tmp_path: Path  # noqa: F811
) -> None:
    user = fake.user(user_id=5201)
    await onboard_on_telegram(user)  # focus: friend; no daily prompt, no time zone
    assert "commit" in {c["command"] for c in fake.commands}
    await user.send("/commit")
    assert "Would you like to choose one?" in visible(await user.replies())
    await user.press("Let's begin")
    await user.replies()
    assert user.last_keyboard() == [[label] for label in PRACTICES]
    await user.press("Keep private what was shared with me")
    asked = visible(await user.replies())
    assert "Give Jo her book back by Saturday" in asked, "the friend's example"
    assert user.last_keyboard() == [["Skip"]]
    await user.send(CONCRETE)
    assert "at about this time of day" in visible(await user.replies())
    assert user.last_keyboard() == [[label] for label in WHEN]
    planned_at = datetime.now(UTC)
    await user.press("In a week")
    summary = visible(await user.replies())
    assert "Keep private what was shared with me" in summary and CONCRETE in summary
    assert "I'll check in with you in a week" in summary
    assert user.unanswered_callbacks() == []

    keys = read_or_create_key_file(key_file(tmp_path))
    repository = await migrated(database_url, cipher_from(keys))
    try:
        [job] = await check_backs(repository)
    finally:
        await repository.close()
    assert (job.target, job.state) == ("commit_checkin", "due")
    assert abs(utc(job.due_at) - (planned_at + timedelta(days=7))) < timedelta(minutes=1)
    assert CONCRETE not in bot.log(), "what people write never reaches the logs"
