"""Onboarding and self-awareness walked through the console adapter, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.storage.models import FlowRun, Reflection, User
from bot.storage.repository import Repository
from tests.conftest import drop_postgres_database, fresh_postgres_database
from tests.helpers import Reader, labels, make_engine, migrated, texts

ANSWERS = {
    "triggers": "When plans change at the last minute my chest gets tight.",
    "past": "Growing up, arguments were loud, so I go quiet to keep the peace.",
    "boundaries": "I need an hour to myself after work before we talk.",
    "stress": "I go silent & leave the room <then feel bad>.",
    "impact": "I listen well, but I sometimes roll my eyes when I'm tired.",
}


async def onboard(chat: ConsoleChat, keep: str = "Yes, keep them", focus: str = "Partner",
                  daily: tuple[str, str] | None = None) -> None:
    """Through /start; `daily` = (time, place) opts in to the daily prompt."""
    reply = await chat.send("/start")
    assert "not therapy" in texts(reply)
    assert "not a crisis service" in texts(reply)
    assert "/help" in texts(reply)
    reply = await chat.send("Sounds good")
    assert "keep your reflections" in texts(reply)
    assert labels(reply) == ["Yes, keep them", "No, don't keep them"]
    reply = await chat.send(keep)
    assert "Partner" in labels(reply)
    reply = await chat.send(focus)
    assert "United Kingdom" in labels(reply)
    reply = await chat.send("new zealand")
    assert "daily prompt" in texts(reply)
    if daily is None:
        reply = await chat.send("Not for now")
    else:
        await chat.send("Yes, once a day")
        await chat.send(daily[0])
        reply = await chat.send(daily[1])
    assert "all set" in texts(reply)
    assert "/aware" in texts(reply)


async def stored_user(repository: Repository, chat_id: int) -> User:
    user = await Reader(repository).find_user(chat_id)
    assert user is not None
    return user


async def test_onboarding_saves_the_profile(chat: ConsoleChat, repository: Repository) -> None:
    await onboard(chat)
    user = await stored_user(repository, chat.user_id)
    assert user.onboarded is True
    assert user.keep_reflections is True
    assert user.focus == "partner"
    assert user.country == "NZ"
    assert user.first_name == "Sam"
    assert user.active_flow is None


async def test_self_awareness_end_to_end(chat: ConsoleChat, repository: Repository) -> None:
    await onboard(chat)
    reply = await chat.send("/aware")
    assert "five short reflections" in texts(reply).lower()
    reply = await chat.send("Let's begin")
    assert "Skip" in labels(reply)
    for name in ("triggers", "past", "boundaries", "stress"):
        reply = await chat.send(ANSWERS[name])
    reply = await chat.send(ANSWERS["impact"])
    summary = texts(reply)
    for answer in ANSWERS.values():
        assert answer in summary, f"the summary should quote {answer!r}"
    # The person's words are escaped, not interpreted, in Telegram HTML.
    assert "&amp; leave the room &lt;then feel bad&gt;" in "".join(m.text for m in reply.messages)

    unit = Reader(repository)
    user = await unit.find_user(chat.user_id)
    assert user is not None
    rows = await unit.query(
        select(Reflection).where(Reflection.user_id == user.id).order_by(Reflection.id))
    runs = await unit.query(
        select(FlowRun).where(FlowRun.user_id == user.id, FlowRun.flow == "self_awareness"))
    assert [(row.question, row.text) for row in rows] == list(ANSWERS.items())
    assert all(row.flow == "self_awareness" for row in rows)
    assert [(run.status, run.answers) for run in runs] == [("done", {})]
    assert user.active_flow is None

    reply = await chat.send("/progress")
    assert "5 reflections" in texts(reply)
    assert "Self-awareness" in texts(reply)
    [image] = [d for m in reply.messages for d in m.documents]
    assert image.mime_type == "image/png" and image.content.startswith(b"\x89PNG")
    today = datetime.now(UTC).day
    assert "You practised on one day" in texts(reply) and f"{today}" in texts(reply)


async def test_skipped_reflections_are_not_quoted_or_kept(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await chat.send("/aware")
    await chat.send("Let's begin")
    await chat.send("skip")
    await chat.send(ANSWERS["past"])
    await chat.send("Skip")
    await chat.send("skip")
    reply = await chat.send("skip")
    assert ANSWERS["past"] in texts(reply)
    assert ANSWERS["triggers"] not in texts(reply)
    unit = Reader(repository)
    user = await unit.find_user(chat.user_id)
    assert user is not None
    kept = await unit.reflections(user)
    assert [(row.question, row.text) for row in kept] == [("past", ANSWERS["past"])]


async def test_nothing_is_kept_without_consent(chat: ConsoleChat, repository: Repository) -> None:
    await onboard(chat, keep="No, don't keep them")
    await chat.send("/aware")
    await chat.send("Let's begin")
    reply = None
    for name in ("triggers", "past", "boundaries", "stress", "impact"):
        reply = await chat.send(ANSWERS[name])
    assert reply is not None
    assert ANSWERS["impact"] in texts(reply), "the summary still quotes this run's answers"
    unit = Reader(repository)
    user = await unit.find_user(chat.user_id)
    assert user is not None
    assert await unit.reflection_count(user) == 0
    runs = await unit.query(select(FlowRun).where(FlowRun.user_id == user.id))
    assert runs and all(run.answers == {} for run in runs)


async def test_buttons_and_typing_reach_the_same_place(
    chat: ConsoleChat, repository: Repository
) -> None:
    await chat.send("/start")
    reply = await chat.send("1")  # the first button, by its number
    assert "keep your reflections" in texts(reply)
    reply = await chat.send("yes, keep")  # the start of a label
    assert "Partner" in labels(reply)
    reply = await chat.send("3")  # Friend
    reply = await chat.send("Skip")
    reply = await chat.send("no")  # typing the start of "Not for now"
    assert "all set" in texts(reply)
    user = await stored_user(repository, chat.user_id)
    assert (user.focus, user.country, user.keep_reflections) == ("friend", None, True)


async def test_resume_after_restart_continues_at_the_same_step(
    chat: ConsoleChat, repository: Repository, content, database_url: str, cipher
) -> None:
    """A new engine (as after a restart) on the same database continues mid-flow."""

    await onboard(chat)
    await chat.send("/aware")
    await chat.send("Let's begin")
    await chat.send(ANSWERS["triggers"])
    await chat.send(ANSWERS["past"])

    fresh = await migrated(database_url, cipher)
    try:
        restarted = ConsoleChat(make_engine(content, fresh),
                                user_id=chat.user_id, out=chat.out)
        reply = await restarted.send("/aware")
        assert "where you left off" in texts(reply).lower()
        assert "boundaries" in texts(reply).lower()
        await restarted.send(ANSWERS["boundaries"])
        await restarted.send(ANSWERS["stress"])
        reply = await restarted.send(ANSWERS["impact"])
    finally:
        await fresh.close()
    for answer in ANSWERS.values():
        assert answer in texts(reply)


async def test_journal_pages_through_reflections_newest_first(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    reply = await chat.send("/journal")
    assert "empty" in texts(reply)
    for round_number in (1, 2):
        await chat.send("/aware")
        await chat.send("Let's begin")
        for name in ("triggers", "past", "boundaries", "stress", "impact"):
            await chat.send(f"Round {round_number}: {ANSWERS[name]}")
    reply = await chat.send("/journal")
    first_page = texts(reply)
    assert "(1 of 2)" in first_page
    assert f"Round 2: {ANSWERS['impact']}" in first_page
    assert f"Round 1: {ANSWERS['triggers']}" not in first_page
    assert first_page.index("Your impact on others") < first_page.index("What you tend to do")
    assert labels(reply) == ["Older"]
    reply = await chat.send("1")  # press "Older"
    second_page = texts(reply)
    assert "(2 of 2)" in second_page
    assert f"Round 1: {ANSWERS['triggers']}" in second_page
    assert labels(reply) == ["Newer"]


@pytest.mark.postgres
async def test_two_workers_on_one_database_take_turns_per_person(
    content, postgres_available, cipher
) -> None:
    """Two engines with their own connection pools (as two worker processes would have),
    answering the same person at the same time: every answer is taken exactly once."""
    name, url = await fresh_postgres_database()
    first, second = await migrated(url, cipher), await migrated(url, cipher)
    try:
        one = ConsoleChat(make_engine(content, first), user_id=808, first_name="Sam")
        other = ConsoleChat(make_engine(content, second), user_id=808, first_name="Sam")
        await onboard(one)
        await one.send("/aware")
        await other.send("Let's begin")
        answers = [f"Answer number {n} in my own words" for n in range(5)]
        replies = await asyncio.gather(*[
            (one if n % 2 else other).send(answer) for n, answer in enumerate(answers)])
        assert not any("send it again" in texts(reply) for reply in replies)
        unit = Reader(first)
        user = await unit.find_user(808)
        assert user is not None
        kept = sorted(r.text for r in await unit.reflections(user))
        assert kept == sorted(answers)
        assert user.active_flow is None, "the fifth answer finished the flow"
    finally:
        await first.close()
        await second.close()
        await drop_postgres_database(name)
