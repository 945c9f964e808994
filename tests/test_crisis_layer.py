"""Crisis language is answered first, with the right lines, in every state; the flow waits."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.adapters.console import ConsoleChat
from bot.app import Content
from bot.engine import Engine
from bot.flood import FloodGuard
from bot.messages import Incoming, InputKind, Reply
from bot.storage.repository import Repository
from tests.helpers import Reader, labels, texts
from tests.test_bad_input import position
from tests.test_console_flows import onboard

SELF_HARM = "honestly everyone would be better off without me"
ABUSE = "my husband hit me again last night and took my phone"


async def crisis_events(repository: Repository, chat_id: int) -> list[str]:
    unit = Reader(repository)
    user = await unit.find_user(chat_id)
    assert user is not None
    return [event.category for event in await unit.crisis_events(user)]


async def at_welcome(chat: ConsoleChat) -> None:
    await chat.send("/start")


async def at_consent(chat: ConsoleChat) -> None:
    await chat.send("/start")
    await chat.send("Sounds good")


async def mid_awareness(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/aware")
    await chat.send("Let's begin")
    await chat.send("I tense up when I'm interrupted.")


async def outside_any_flow(chat: ConsoleChat) -> None:
    await onboard(chat)


async def asked_to_switch(chat: ConsoleChat) -> None:
    await mid_awareness(chat)
    await chat.send("/settings")


async def asked_to_delete(chat: ConsoleChat) -> None:
    await mid_awareness(chat)
    await chat.send("/delete")


async def in_settings(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/settings")
    await chat.send("2")


STATES: dict[str, Callable[[ConsoleChat], Awaitable[None]]] = {
    "welcome": at_welcome, "consent": at_consent, "awareness": mid_awareness,
    "no flow": outside_any_flow, "switch question": asked_to_switch,
    "delete question": asked_to_delete, "settings": in_settings,
}


@pytest.mark.parametrize("state", list(STATES))
async def test_crisis_in_every_state(
    chat: ConsoleChat, repository: Repository, state: str
) -> None:
    await STATES[state](chat)
    before = await position(repository, chat.user_id)
    reply = await chat.send(SELF_HARM)
    first = texts(reply).split("\n\n")[0]
    assert "heavy" in first, "the first words answer the crisis"
    assert "call" in texts(reply)
    assert labels(reply) == ["I'm safe, continue"]
    assert await position(repository, chat.user_id) == before, "the flow stays where it was"
    assert await crisis_events(repository, chat.user_id) == ["self_harm"]
    unit = Reader(repository)
    user = await unit.find_user(chat.user_id)
    assert user is not None
    kept = [r.text for r in await unit.reflections(user)]
    assert SELF_HARM not in kept and SELF_HARM not in str(before)

    reply = await chat.send("I'm safe, continue")
    assert "carry on" in texts(reply)
    assert await position(repository, chat.user_id) == before


async def test_lines_follow_the_country(chat: ConsoleChat) -> None:
    await onboard(chat)  # New Zealand
    reply = await chat.send("I want to kill myself")
    assert "1737" in texts(reply) and "111" in texts(reply)
    assert "988" not in texts(reply)


async def test_a_country_without_a_line_for_the_topic_still_gets_lines(
    chat: ConsoleChat
) -> None:
    await onboard(chat)
    await chat.send("/settings")
    await chat.send("2")
    await chat.send("Canada")  # the table has no abuse line for Canada
    await chat.send(ABUSE)
    reply = await chat.send("Yes, I can read it")
    assert "988" in texts(reply) and "911" in texts(reply)


async def test_no_country_gets_the_international_directory(chat: ConsoleChat) -> None:
    await chat.send("/start")
    reply = await chat.send("i just want to die")
    assert "findahelpline.com" in texts(reply)
    assert "911" not in texts(reply) and "988" not in texts(reply)


async def test_abuse_asks_whether_it_is_safe_to_read_first(
    chat: ConsoleChat, repository: Repository
) -> None:
    await mid_awareness(chat)
    before = await position(repository, chat.user_id)
    reply = await chat.send(ABUSE)
    assert "Are you safe to read this right now?" in texts(reply)
    assert "0800 733 843" not in texts(reply), "resources wait for the answer"
    assert labels(reply) == ["Yes, I can read it", "Not right now"]
    reply = await chat.send("Yes, I can read it")
    assert "isn't your fault" in texts(reply)
    assert "Women's Refuge" in texts(reply) and "0800 733 843" in texts(reply)
    assert "/hide" in texts(reply)
    assert await position(repository, chat.user_id) == before
    assert await crisis_events(repository, chat.user_id) == ["abuse"]

    await chat.send(ABUSE)
    reply = await chat.send("Not right now")
    assert "Nothing more is needed" in texts(reply)
    assert labels(reply) == []


async def test_hard_negatives_are_answered_as_usual(
    chat: ConsoleChat, repository: Repository
) -> None:
    await mid_awareness(chat)
    reply = await chat.send("This deadline is killing me, so I snap at everyone.")
    assert "heavy" not in texts(reply)
    assert await crisis_events(repository, chat.user_id) == []


class BrokenRepository(Repository):
    async def run(self, work: Callable[[Any], Any], chat_id: int | None = None) -> Any:
        raise ConnectionError("the database is down")


async def test_crisis_is_answered_when_the_database_is_down(content: Content) -> None:
    engine = Engine(content.flows, content.machines, content.renderer, BrokenRepository())
    reply = await engine.handle(Incoming(chat_id=9, kind=InputKind.TEXT,
                                         text="I'm going to end my life tonight"))
    assert "heavy" in texts(reply)
    assert "findahelpline.com" in texts(reply)
    ordinary = await engine.handle(Incoming(chat_id=9, kind=InputKind.TEXT, text="hello"))
    assert "send it again" in texts(ordinary) or "again" in texts(ordinary)


async def test_a_burst_gets_one_warning_and_a_crisis_inside_it_is_answered(
    content: Content, repository: Repository
) -> None:
    engine = Engine(content.flows, content.machines, content.renderer, repository,
                    flood=FloodGuard(burst=5, period_seconds=60))
    replies: list[Reply] = []
    for number in range(50):
        message = SELF_HARM if number == 30 else f"message {number}"
        replies.append(await engine.handle(Incoming(chat_id=77, kind=InputKind.TEXT,
                                                    text=message)))
    answered = [reply for reply in replies if reply.messages]
    warnings = [reply for reply in answered if "faster than I can" in texts(reply)]
    assert len(warnings) == 1
    assert "heavy" in texts(replies[30]), "the crisis message is never held back"
    assert len(answered) == 5 + 1 + 1
    other = await engine.handle(Incoming(chat_id=78, kind=InputKind.TEXT, text="/start"))
    assert other.messages, "one person's burst does not hold back anyone else"


class BrokenCheck:
    def detect(self, text: str) -> None:
        raise RuntimeError("a fault in the crisis check")


async def test_a_failing_crisis_check_still_leaves_an_answer(
        chat: ConsoleChat, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    await onboard(chat)
    engine.detector = BrokenCheck()  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR):
        reply = await chat.send("/aware")
        reply = await chat.send("Let's begin")
        reply = await chat.send("I tense up when I'm interrupted.")
    assert texts(reply), "an answer all the same"
    assert "the crisis check failed" in caplog.text
    assert "interrupted" not in caplog.text, "never the person's words in the logs"
