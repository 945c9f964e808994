"""/boundaries: name a boundary, say it clearly and kindly, plan for hearing "no", and a
check-in question, through the console adapter (SQLite and PostgreSQL) and once through the
fake Telegram Bot API with the real bot process."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.engine import Engine
from bot.messages import Incoming, InputKind
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.models import FlowRun, Reflection
from bot.storage.repository import Repository
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram
from tests.helpers import Reader, labels, migrated, press_data, texts
from tests.test_console_flows import onboard
from tests.test_e2e_telegram import bot, fake, visible  # noqa: F401 - fixtures used below
from tests.test_e2e_telegram import onboard as onboard_on_telegram

ANSWERS = {
    "boundary": "An hour to myself after work & before dinner.",
    "phrasing": "I'd like an hour to myself when I get in. It matters to me because I'm "
                "kinder after a break. What I'll do is <come and find you> afterwards.",
    "their_no": "Say 'okay, thanks for telling me' and not sulk about it.",
    "check_in": "Would you rather talk now, or after you've eaten?",
}
LABELS = [
    "A boundary that matters to you",
    "How you'd say it, clearly and kindly",
    "Taking someone else's no gracefully",
    "A question to check in about their preferences",
]
# One example per focus, from the step that names a boundary.
PARTNER_EXAMPLE = "Some time alone after work, before we talk about the day."
WORK_EXAMPLE = "No work messages after 7pm."
FRIEND_EXAMPLE = "I don't lend money, even to close friends."


async def kept(repository: Repository, chat_id: int) -> list[Reflection]:
    reader = Reader(repository)
    user = await reader.find_user(chat_id)
    assert user is not None
    return await reader.query(
        select(Reflection).where(Reflection.user_id == user.id).order_by(Reflection.id))


async def begin(chat: ConsoleChat) -> str:
    """Open /boundaries and begin; returns what the first question says."""
    reply = await chat.send("/boundaries")
    assert "closeness doesn't mean entitlement" in texts(reply)
    assert labels(reply) == ["Let's begin", "Not now"]
    reply = await chat.send("Let's begin")
    assert labels(reply) == ["Skip"]
    return texts(reply)


async def test_boundaries_end_to_end(chat: ConsoleChat, repository: Repository) -> None:
    await onboard(chat)
    first = await begin(chat)
    assert "What's one boundary that matters to you in this relationship?" in first
    reply = await chat.send(ANSWERS["boundary"])
    assert "I'd like…" in texts(reply) and "What I'll do is…" in texts(reply)
    reply = await chat.send(ANSWERS["phrasing"])
    assert "without punishment or pressure" in texts(reply)
    reply = await chat.send(ANSWERS["their_no"])
    assert "check in about their preferences" in texts(reply)
    reply = await chat.send(ANSWERS["check_in"])

    summary = texts(reply)
    for answer in ANSWERS.values():
        assert answer in summary, f"the summary should quote {answer!r}"
    order = [summary.index(answer) for answer in ANSWERS.values()]
    assert order == sorted(order), "boundary, phrasing, their no, check-in question"
    html = [message.text for message in reply.messages]
    # The phrasing stands in a message of its own, in a quote that is easy to copy.
    [phrasing] = [text for text in html if "How you'd say it" in text]
    assert "<blockquote>I&#39;d like an hour" in phrasing
    assert "&lt;come and find you&gt;" in phrasing and "&amp; before dinner" in "".join(html)
    assert ANSWERS["boundary"] not in phrasing
    assert "/journal" in summary
    assert "Boundaries" in labels(reply), "the menu follows"

    rows = await kept(repository, chat.user_id)
    assert [(row.flow, row.question, row.text) for row in rows] == [
        ("boundaries", name, text) for name, text in ANSWERS.items()]
    reader = Reader(repository)
    user = await reader.find_user(chat.user_id)
    assert user is not None and user.active_flow is None
    runs = await reader.query(select(FlowRun).where(FlowRun.flow == "boundaries"))
    assert [(run.status, run.answers) for run in runs] == [("done", {})]

    journal = texts(await chat.send("/journal"))
    positions = [journal.index(label) for label in LABELS]
    assert positions == sorted(positions, reverse=True), "newest first, each with its label"
    assert ANSWERS["check_in"] in journal


async def test_skipped_answers_are_neither_quoted_nor_kept(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await begin(chat)
    await chat.send("skip")
    reply = await chat.send(ANSWERS["phrasing"])
    assert "Thank you for putting it into words." in texts(reply)
    reply = await chat.send("Skip")
    assert "Taking a no well" not in texts(reply), "nothing to thank for a skipped answer"
    reply = await chat.send(ANSWERS["check_in"])
    summary = texts(reply)
    assert ANSWERS["phrasing"] in summary and ANSWERS["check_in"] in summary
    assert ANSWERS["boundary"] not in summary and "A boundary that matters" not in summary
    assert "When someone says no to you" not in summary
    rows = await kept(repository, chat.user_id)
    assert [(row.question, row.text) for row in rows] == [
        ("phrasing", ANSWERS["phrasing"]), ("check_in", ANSWERS["check_in"])]


async def test_skipping_everything_keeps_nothing(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await begin(chat)
    for _ in range(3):
        await chat.send("skip")
    reply = await chat.send("skip")
    assert "You skipped all four questions" in texts(reply)
    assert "Nothing from this was saved." in texts(reply)
    assert await kept(repository, chat.user_id) == []


async def test_not_now_leaves_it_for_later(chat: ConsoleChat, repository: Repository) -> None:
    await onboard(chat)
    await chat.send("/boundaries")
    reply = await chat.send("Not now")
    assert "/boundaries" in texts(reply)
    user = await Reader(repository).find_user(chat.user_id)
    assert user is not None and user.active_flow is None


async def test_examples_follow_the_focus_relationship(engine: Engine) -> None:
    seen: dict[str, str] = {}
    for user_id, focus in ((601, "Partner"), (602, "Work"), (603, "Friend")):
        person = ConsoleChat(engine, user_id=user_id, out=io.StringIO())
        await onboard(person, focus=focus)
        await person.send("/boundaries")
        seen[focus] = texts(await person.send("Let's begin"))
    assert PARTNER_EXAMPLE in seen["Partner"]
    assert "independence and togetherness" in seen["Partner"]
    assert WORK_EXAMPLE in seen["Work"] and "professional boundaries" in seen["Work"]
    assert FRIEND_EXAMPLE in seen["Friend"]
    assert WORK_EXAMPLE not in seen["Partner"] and FRIEND_EXAMPLE not in seen["Partner"]
    assert PARTNER_EXAMPLE not in seen["Work"] and FRIEND_EXAMPLE not in seen["Work"]
    assert PARTNER_EXAMPLE not in seen["Friend"] and WORK_EXAMPLE not in seen["Friend"]


async def test_typing_a_label_and_pressing_its_button_reach_the_same_step(
    engine: Engine, repository: Repository
) -> None:
    typing = ConsoleChat(engine, user_id=611, out=io.StringIO())
    pressing = ConsoleChat(engine, user_id=612, out=io.StringIO())
    for person in (typing, pressing):
        await onboard(person)
    await typing.send("/boundaries")
    unclear = await typing.send("maybe")  # not one of the labels: asked again, nothing moves
    assert "not sure which option" in texts(unclear)
    assert labels(unclear) == ["Let's begin", "Not now"]
    typed = await typing.send("let's")  # the start of "Let's begin"
    shown = await pressing.send("/boundaries")
    pressed = await pressing.engine.handle(Incoming(
        chat_id=pressing.user_id, kind=InputKind.PRESS, text=press_data(shown, "Let's begin")))
    assert "What's one boundary that matters to you" in texts(typed)
    assert texts(typed) == texts(pressed)


async def test_cancel_and_resume_at_the_same_step(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await begin(chat)
    await chat.send(ANSWERS["boundary"])
    await chat.send(ANSWERS["phrasing"])
    reply = await chat.send("/cancel")
    assert "You've left Boundaries" in texts(reply) and "/boundaries" in texts(reply)
    user = await Reader(repository).find_user(chat.user_id)
    assert user is not None and user.active_flow is None

    reply = await chat.send("/boundaries")
    assert "where you left off" in texts(reply)
    assert "says no to you" in texts(reply), "back at the step about hearing no"
    assert "closeness doesn't mean entitlement" not in texts(reply), "not from the start"
    await chat.send(ANSWERS["their_no"])
    reply = await chat.send(ANSWERS["check_in"])
    for answer in ANSWERS.values():
        assert answer in texts(reply), "answers from before /cancel are still there"
    assert len(await kept(repository, chat.user_id)) == 4


@pytest.mark.e2e
async def test_boundaries_through_telegram(
    fake: FakeTelegram, bot: BotProcess, database_url: str, tmp_path: Path  # noqa: F811
) -> None:
    user = fake.user(user_id=5101)
    await onboard_on_telegram(user)  # focus: friend
    assert "boundaries" in {c["command"] for c in fake.commands}
    await user.send("/boundaries")
    assert "Would you like to begin?" in visible(await user.replies())
    assert user.last_keyboard() == [["Let's begin"], ["Not now"]]
    await user.press("Let's begin")
    first = visible(await user.replies())
    assert FRIEND_EXAMPLE in first
    for answer in ANSWERS.values():
        assert user.last_keyboard() == [["Skip"]]
        await user.send(answer)
        replies = await user.replies()
    summary = visible(replies)
    for answer in ANSWERS.values():
        assert answer in summary
    assert user.unanswered_callbacks() == []

    keys = read_or_create_key_file(key_file(tmp_path))
    repository = await migrated(database_url, cipher_from(keys))
    try:
        rows = await kept(repository, 5101)
    finally:
        await repository.close()
    assert [(row.question, row.text) for row in rows] == list(ANSWERS.items())
    assert ANSWERS["boundary"] not in bot.log(), "what people write never reaches the logs"
