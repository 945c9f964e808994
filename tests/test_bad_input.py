"""Bad input gets a short, kind reply, and the person's place and answers are untouched."""

from __future__ import annotations

import pytest

from bot.adapters.console import ConsoleChat
from bot.engine import Engine
from bot.messages import Incoming, InputKind, Reply
from bot.storage.repository import Repository
from tests.helpers import Reader, labels, press_data, texts
from tests.test_console_flows import onboard


async def position(repository: Repository, chat_id: int) -> tuple[str | None, str | None, dict]:
    unit = Reader(repository)
    user = await unit.find_user(chat_id)
    assert user is not None
    run = await unit.open_run(user, user.active_flow) if user.active_flow else None
    return user.active_flow, run.step if run else None, dict(run.answers) if run else {}


async def in_the_middle_of_awareness(chat: ConsoleChat) -> Reply:
    await onboard(chat)
    await chat.send("/aware")
    await chat.send("Let's begin")
    return await chat.send("I tense up when I'm interrupted.")


async def send_media(engine: Engine, chat_id: int, media: str) -> Reply:
    return await engine.handle(Incoming(chat_id=chat_id, kind=InputKind.OTHER, media=media))


@pytest.mark.parametrize("media", ["sticker", "photo", "voice"])
async def test_media_where_text_is_expected(
    chat: ConsoleChat, engine: Engine, repository: Repository, media: str
) -> None:
    await in_the_middle_of_awareness(chat)
    before = await position(repository, chat.user_id)
    reply = await send_media(engine, chat.user_id, media)
    assert "text" in texts(reply).lower()
    assert "Skip" in labels(reply), "the reply offers the way on"
    assert await position(repository, chat.user_id) == before


async def test_empty_message(chat: ConsoleChat, repository: Repository) -> None:
    await in_the_middle_of_awareness(chat)
    before = await position(repository, chat.user_id)
    reply = await chat.send("   ")
    assert "empty" in texts(reply).lower()
    assert await position(repository, chat.user_id) == before


async def test_a_10000_character_message(chat: ConsoleChat, repository: Repository) -> None:
    await in_the_middle_of_awareness(chat)
    before = await position(repository, chat.user_id)
    reply = await chat.send("x" * 10_000)
    assert "2,000" in texts(reply) or "2000" in texts(reply)
    assert all(len(message.text) < 4096 for message in reply.messages)
    assert await position(repository, chat.user_id) == before


async def test_unknown_command_mid_flow(chat: ConsoleChat, repository: Repository) -> None:
    await in_the_middle_of_awareness(chat)
    before = await position(repository, chat.user_id)
    reply = await chat.send("/dance")
    assert "/dance" in texts(reply)
    assert "Skip" in labels(reply), "and the current question is shown again"
    assert await position(repository, chat.user_id) == before


async def test_help_mid_flow_keeps_the_place(chat: ConsoleChat, repository: Repository) -> None:
    await in_the_middle_of_awareness(chat)
    before = await position(repository, chat.user_id)
    reply = await chat.send("/help")
    assert "116 123" not in texts(reply)  # New Zealand, not the UK
    assert "1737" in texts(reply)
    assert await position(repository, chat.user_id) == before


async def test_typed_text_that_is_not_a_choice(chat: ConsoleChat, repository: Repository) -> None:
    await chat.send("/start")
    before = await position(repository, chat.user_id)
    reply = await chat.send("what is this?")
    assert "Sounds good" in texts(reply)
    assert labels(reply) == ["Sounds good", "Tell me more"]
    assert await position(repository, chat.user_id) == before


async def test_an_old_button_changes_nothing(
    chat: ConsoleChat, engine: Engine, repository: Repository
) -> None:
    await onboard(chat)
    first = await chat.send("/aware")
    old_begin = press_data(first, "Let's begin")
    await chat.send("Let's begin")
    before = await position(repository, chat.user_id)
    reply = await engine.handle(Incoming(chat_id=chat.user_id, kind=InputKind.PRESS,
                                         text=old_begin))
    assert reply.notice and "earlier" in reply.notice
    assert "Skip" in labels(reply), "the current step is shown again"
    assert await position(repository, chat.user_id) == before


@pytest.mark.parametrize("data", ["s:999999:triggers:x", "garbage", "f:nonexistent",
                                  "s:1:intro:begin' OR 1=1", "w:maybe", ""])
async def test_forged_buttons_change_nothing(
    chat: ConsoleChat, engine: Engine, repository: Repository, data: str
) -> None:
    await in_the_middle_of_awareness(chat)
    before = await position(repository, chat.user_id)
    reply = await engine.handle(Incoming(chat_id=chat.user_id, kind=InputKind.PRESS, text=data))
    assert reply.notice
    assert await position(repository, chat.user_id) == before


async def test_cancel_keeps_progress(chat: ConsoleChat, repository: Repository) -> None:
    await in_the_middle_of_awareness(chat)
    _, step, answers = await position(repository, chat.user_id)
    reply = await chat.send("/cancel")
    assert "kept" in texts(reply)
    assert (await position(repository, chat.user_id))[0] is None
    reply = await chat.send("/aware")
    assert "left off" in texts(reply)
    assert await position(repository, chat.user_id) == ("self_awareness", step, answers)


async def test_commands_before_setup_lead_back_to_setup(
    chat: ConsoleChat, repository: Repository
) -> None:
    await chat.send("/start")
    reply = await chat.send("/aware")
    assert "setting up" in texts(reply).lower() or "set up" in texts(reply).lower()
    assert labels(reply) == ["Sounds good", "Tell me more"]
    assert (await position(repository, chat.user_id))[:2] == ("onboarding", "welcome")


async def test_switching_flows_asks_first(chat: ConsoleChat, repository: Repository) -> None:
    await in_the_middle_of_awareness(chat)
    before = await position(repository, chat.user_id)
    reply = await chat.send("/settings")
    assert labels(reply) == ["Yes, switch", "No, stay here"]
    reply = await chat.send("No, stay here")
    assert await position(repository, chat.user_id) == before
    await chat.send("/settings")
    reply = await chat.send("yes")
    assert (await position(repository, chat.user_id))[0] == "settings"
    await chat.send("/aware")
    await chat.send("yes")
    assert await position(repository, chat.user_id) == before


async def test_an_update_delivered_twice_has_one_effect(
    chat: ConsoleChat, engine: Engine, repository: Repository
) -> None:
    await in_the_middle_of_awareness(chat)
    answer = Incoming(chat_id=chat.user_id, kind=InputKind.TEXT, text="Twice-sent answer",
                      update_id=90001)
    first = await engine.handle(answer)
    after_first = await position(repository, chat.user_id)
    second = await engine.handle(answer)
    assert first.messages and not second.messages
    assert await position(repository, chat.user_id) == after_first
    unit = Reader(repository)
    user = await unit.find_user(chat.user_id)
    assert user is not None
    kept = [r.text for r in await unit.reflections(user)]
    assert kept.count("Twice-sent answer") == 1
