"""/settings changes the focus, the crisis-line country and whether reflections are kept."""

from __future__ import annotations

from bot.adapters.console import ConsoleChat
from bot.storage.repository import Repository
from tests.helpers import labels, texts
from tests.test_console_flows import onboard, stored_user


async def test_settings_change_focus_country_and_keeping(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    reply = await chat.send("/settings")
    assert "Focus: a partner" in texts(reply)
    options = labels(reply)
    assert len(options) >= 4

    reply = await chat.send(options[0])  # the focus relationship
    reply = await chat.send("Work")
    assert "Saved" in texts(reply)
    user = await stored_user(repository, chat.user_id)
    assert user.focus == "work"

    await chat.send("/settings")
    await chat.send(options[1])  # the country
    reply = await chat.send("Deutschland")
    assert "Germany" in texts(reply)
    reply = await chat.send("/help")
    assert "TelefonSeelsorge" in texts(reply) and "1737" not in texts(reply)

    await chat.send("/settings")
    await chat.send(options[2])  # keeping reflections
    await chat.send("No, don't keep them")
    user = await stored_user(repository, chat.user_id)
    assert user.keep_reflections is False
    assert (user.focus, user.country) == ("work", "DE")


async def test_an_unknown_country_gets_a_kind_answer(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await chat.send("/settings")
    reply = await chat.send("2")
    reply = await chat.send("Narnia")
    assert "couldn't recognise that country" in texts(reply)
    assert "Skip" in labels(reply)
    user = await stored_user(repository, chat.user_id)
    assert user.country == "NZ", "the earlier choice stands"


async def test_start_again_returns_to_the_current_step(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/aware")
    await chat.send("Let's begin")
    reply = await chat.send("/start")
    assert "left off" in texts(reply)
    assert labels(reply) == ["Skip"]
