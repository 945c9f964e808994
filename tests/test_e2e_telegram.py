"""The real bot process (`python -m bot`) against the fake Telegram Bot API, as a person uses it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import PROJECT_ROOT
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram, FakeUser
from tests.helpers import Reader, migrated

pytestmark = pytest.mark.e2e

TOKEN = "987654:E2E-secret-token-value"
ANSWERS = [
    "When I'm interrupted I feel dismissed & go cold.",
    "At home growing up, <quiet> meant trouble.",
    "I need time alone after a long day.",
    "I shut down and say 'fine'.",
    "I keep my promises, but I can be short with people when I'm tired.",
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as server:
        yield server
    assert server.internal_errors == [], "\n".join(server.internal_errors)


@pytest.fixture
async def bot(fake: FakeTelegram, database_url: str, tmp_path: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(fake, database_url, tmp_path)
    await process.start()
    yield process
    await process.stop()
    assert TOKEN not in process.log(), "the bot token reached the logs"
    # Injected outages (5xx, 429) and blocked users are Telegram's doing; a 400 is the bot's.
    refused = [error for error in fake.errors
               if error[2].startswith(("Bad Request", "Unauthorized", "Not Found"))]
    assert refused == [], f"Telegram would have refused these calls: {refused}"


def visible(messages: list) -> str:
    return "\n\n".join(message.text or "" for message in messages)


async def onboard(user: FakeUser, focus: str = "Friend") -> None:
    """Through /start in Telegram: keep reflections, `focus`, Ireland, no daily prompt."""
    await user.send("/start")
    replies = await user.replies()
    assert "not a crisis service" in visible(replies)
    assert user.last_keyboard() == [["Sounds good"], ["Tell me more"]]
    await user.press("Sounds good")
    assert "keep your reflections" in visible(await user.replies())
    await user.press("Yes, keep them")
    await user.replies()
    await user.press(focus)
    await user.replies()
    await user.press("Ireland")
    assert "daily prompt" in visible(await user.replies())
    await user.press("Not for now")
    assert "all set" in visible(await user.replies())


async def start_awareness(user: FakeUser) -> None:
    """Onboard, then open /aware and begin: the first reflection is waiting."""
    await onboard(user)
    await user.send("/aware")
    await user.replies()
    await user.press("Let's begin")
    await user.replies()


async def test_onboarding_and_self_awareness_through_telegram(
    fake: FakeTelegram, bot: BotProcess, database_url: str, tmp_path: Path
) -> None:
    user = fake.user(user_id=5001, first_name="Róisín")
    await onboard(user)
    assert {c["command"] for c in fake.commands} >= {"start", "menu", "aware", "help", "cancel"}

    await user.send("/aware")
    assert "Would you like to begin?" in visible(await user.replies())
    await user.press("Let's begin")
    await user.replies()
    for answer in ANSWERS:
        assert user.last_keyboard() == [["Skip"]]
        await user.send(answer)
        replies = await user.replies()
    summary = visible(replies)
    for answer in ANSWERS:
        assert answer in summary
    assert user.unanswered_callbacks() == []
    pressed = [m for m in user.chat if m.edited]
    assert pressed, "a pressed keyboard is taken away"
    assert all(not m.buttons for m in pressed)

    keys = read_or_create_key_file(key_file(tmp_path))  # the key the bot made on first run
    repository = await migrated(database_url, cipher_from(keys))
    try:
        unit = Reader(repository)
        person = await unit.find_user(5001)
        assert person is not None
        kept = await unit.reflections(person)
        assert (person.focus, person.country, person.first_name) == ("friend", "IE", "Róisín")
    finally:
        await repository.close()
    assert [row.text for row in kept] == ANSWERS
    assert ANSWERS[0] not in bot.log(), "what people write never reaches the logs"

    await user.send("/progress")
    replies = await user.replies()
    photos = [m for m in replies if m.kind == "photo"]
    assert len(photos) == 1 and photos[0].bytes and photos[0].bytes.startswith(b"\x89PNG")
    assert "You practised on one day" in visible(replies)
    assert "upload_photo" in user.chat_actions


async def test_a_killed_bot_continues_at_the_same_step(
    fake: FakeTelegram, bot: BotProcess
) -> None:
    user = fake.user(user_id=5002)
    await start_awareness(user)
    await user.send(ANSWERS[0])
    replies = await user.replies()
    assert "your past" in visible(replies)

    await bot.kill()
    await bot.start()

    await user.send(ANSWERS[1])
    assert "boundaries" in visible(await user.replies()).lower()
    for answer in ANSWERS[2:]:
        await user.send(answer)
        replies = await user.replies()
    for answer in ANSWERS:
        assert answer in visible(replies), "earlier answers survive the restart"


async def test_bad_input_through_telegram(fake: FakeTelegram, bot: BotProcess) -> None:
    user = fake.user(user_id=5003)
    await onboard(user)
    await user.send("/aware")
    await user.replies()
    old_keyboard = user.chat[-1].message_id
    await user.press("Let's begin")
    await user.replies()

    await user.send_sticker()
    reply = visible(await user.replies())
    assert "text" in reply.lower()

    query = await user.press_data("s:1:intro:begin", message_id=old_keyboard)
    answer = await user.answer_to(query)
    assert "earlier" in (answer.get("text") or "")
    await user.replies()

    await user.press_data("forged-data")
    await user.replies()
    await user.send("/unknowncommand")
    assert "/unknowncommand" in visible(await user.replies())
    await user.send("x" * 5000)
    assert "2,000" in visible(await user.replies())

    await user.send(ANSWERS[0])
    assert "your past" in visible(await user.replies()), "the flow was where it was"
    assert user.unanswered_callbacks() == []


async def test_a_burst_keeps_order(fake: FakeTelegram, bot: BotProcess) -> None:
    user = fake.user(user_id=5004)
    await start_awareness(user)
    for answer in ANSWERS:
        await user.send(answer)
    replies = await user.replies(timeout=20, quiet=1.0)
    summary = visible(replies)
    assert all(answer in summary for answer in ANSWERS)
    order = [summary.index(answer) for answer in ANSWERS]
    assert order == sorted(order), "answers were taken in the order they were sent"


def test_without_a_token_it_explains_and_exits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WEBHOOK_"))}
    env["HAVEN_DATA_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60,
                            input="")
    assert result.returncode == 2
    assert "@BotFather" in result.stderr
    assert "python -m bot console" in result.stderr
    assert PROJECT_ROOT.exists()


def test_bad_settings_are_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WEBHOOK_"))}
    env.update(TELEGRAM_BOT_TOKEN="not-a-token", PORT="99999", HAVEN_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr and "PORT" in result.stderr
    assert "not-a-token" not in result.stderr, "a bad token is not echoed back"


async def test_webhook_mode(fake: FakeTelegram, database_url: str, tmp_path: Path) -> None:
    import aiohttp

    from tests.bot_process import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-updates"
    process = BotProcess(fake, database_url, tmp_path, WEBHOOK_URL=url,
                         WEBHOOK_SECRET="s3cret-value_1", PORT=str(port))
    await process.start()
    try:
        assert fake.webhook is not None and fake.webhook["url"] == url
        user = fake.user(user_id=5005)
        await user.send("/start")
        await fake.deliver_pending()
        assert "not a crisis service" in visible(await user.replies())
        await user.press("Sounds good")
        await fake.deliver_pending()
        assert "keep your reflections" in visible(await user.replies())

        # A request without Telegram's secret is refused and changes nothing.
        forged = {"update_id": 1, "message": {
            "message_id": 99, "date": 0, "text": "/start",
            "chat": {"id": 5005, "type": "private", "first_name": "X"},
            "from": {"id": 5005, "is_bot": False, "first_name": "X"}}}
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
                            {"X-Telegram-Bot-Api-Secret-Token": "s3cret-value_"}):
                async with session.post(url, json=forged, headers=headers) as response:
                    assert response.status == 403
            # Telegram delivering the same update twice: one effect, one reply.
            sent_before = len(fake.calls("sendMessage"))
            again = {**forged, "update_id": 424242, "message": {**forged["message"],
                                                                "text": "/help"}}
            for _ in range(2):
                async with session.post(url, json=again, headers={
                        "X-Telegram-Bot-Api-Secret-Token": "s3cret-value_1"}) as response:
                    assert response.status == 200
            help_messages = fake.calls("sendMessage")[sent_before:]
            assert len(help_messages) == len({m["text"] for m in help_messages}) > 0
            await user.replies()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["database"] == "ok"
        await user.send("Yes, keep them")
        await fake.deliver_pending()
        assert "relationship" in visible(await user.replies()), "the forged /start changed nothing"
        assert ["Partner"] in (user.last_keyboard() or [])
    finally:
        await process.stop()
    assert fake.calls("getUpdates") == [], "webhook mode never polls"


def test_webhook_mode_needs_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WEBHOOK_"))}
    env.update(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL="http://127.0.0.1:9",
               WEBHOOK_URL="https://example.org/hook", HAVEN_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "WEBHOOK_SECRET" in result.stderr


def test_the_console_entry_point(tmp_path: Path) -> None:
    """`python -m bot console`, typed into, as a person would try Haven without a token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_"))}
    env["HAVEN_DATA_DIR"] = str(tmp_path)
    env["HAVEN_FLOOD_BURST"] = "1000"  # piped lines arrive faster than anyone types
    typed = ["1", "2", "1", "Germany", "2", "/aware", "1", *ANSWERS, "/quit"]
    result = subprocess.run([sys.executable, "-m", "bot", "console"], cwd=PROJECT_ROOT, env=env,
                            input="\n".join(typed) + "\n", capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "not a crisis service" in out
    assert "1) Sounds good" in out
    for answer in ANSWERS:
        assert answer in out
    assert (tmp_path / "haven.sqlite3").exists(), "the default database is a file in the data dir"
    again = subprocess.run([sys.executable, "-m", "bot", "console"], cwd=PROJECT_ROOT, env=env,
                           input="/help\n/quit\n", capture_output=True, text=True, timeout=120)
    assert "TelefonSeelsorge" in again.stdout, "the country chosen before is remembered"


async def test_export_hide_and_delete_through_telegram(
    fake: FakeTelegram, bot: BotProcess
) -> None:
    import json

    user = fake.user(user_id=5006)
    await start_awareness(user)
    await user.send(ANSWERS[0])
    await user.replies()

    await user.send("/export")
    replies = await user.replies()
    files = {m.file_name: m.bytes for m in replies if m.kind == "document"}
    assert len(files) == 2
    data = json.loads(next(body for name, body in files.items() if name.endswith(".json")))
    assert data["reflections"][0]["text"] == ANSWERS[0]
    assert "upload_document" in user.chat_actions

    await user.send("/hide")
    replies = await user.replies()
    assert "Chat cleared" in visible(replies)
    remaining = [m for m in user.chat if not m.deleted]
    assert [m.text for m in remaining if m.from_bot] == [replies[-1].text]
    assert not any(ANSWERS[0] in (m.text or "") for m in remaining)

    await user.send("/delete")
    await user.replies()
    await user.press("Yes, delete everything")
    assert "erased" in visible(await user.replies())
    await user.send("/journal")
    assert "not a crisis service" in visible(await user.replies()), "a new person now"


async def test_network_errors_and_blocking(
    fake: FakeTelegram, bot: BotProcess, database_url: str, tmp_path: Path
) -> None:
    user = fake.user(user_id=5007)
    fake.fail_next("sendMessage", status=502, count=2)  # Telegram hiccups twice
    await user.send("/start")
    assert "not a crisis service" in visible(await user.replies(timeout=20))
    fake.fail_next("sendMessage", status=429, retry_after=1)  # too many requests: wait 1 s
    await user.press("Sounds good")
    assert "keep your reflections" in visible(await user.replies(timeout=20))
    assert len([e for e in fake.errors if "Too Many Requests" in e[2]]) == 1
    # Telegram failing to take the press's answer and the old keyboard's removal: those are
    # niceties, and the next question still comes.
    fake.fail_next("answerCallbackQuery", status=502)
    fake.fail_next("editMessageReplyMarkup", status=502)
    await user.press("Yes, keep them")
    assert "Which relationship" in visible(await user.replies(timeout=20))

    user.block()  # Telegram tells the bot with a my_chat_member update
    keys = read_or_create_key_file(key_file(tmp_path))

    async def blocked_at() -> object:
        repository = await migrated(database_url, cipher_from(keys))
        try:
            person = await Reader(repository).find_user(5007)
            assert person is not None
            return person.blocked_at
        finally:
            await repository.close()

    for _ in range(100):
        if await blocked_at() is not None:
            break
        await asyncio.sleep(0.1)
    assert await blocked_at() is not None
    user.unblock()
    await user.send("Yes, keep them")
    await user.replies()
    assert await blocked_at() is None


async def test_logs_hold_no_words_and_no_token(fake: FakeTelegram, bot: BotProcess) -> None:
    """At DEBUG, through answers, commands, crisis, bad input and forged buttons."""
    import json

    sentinel = "Zq7-sentinel-words"
    user = fake.user(user_id=5008)
    await start_awareness(user)
    for text in (f"{sentinel} is how I feel", f"/{sentinel.lower().replace('-', '')}",
                 f"I want to kill myself {sentinel}", sentinel * 500,
                 f"<b>{sentinel}</b> & more"):
        await user.send(text)
        await user.replies()
    await user.press_data(f"s:1:{sentinel[:10]}:x")
    await user.replies()
    await user.send("/export")
    await user.replies()
    log = bot.log()
    assert sentinel not in log and sentinel.lower().replace("-", "") not in log
    assert TOKEN not in log and TOKEN.split(":")[1] not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines), "structured: JSON lines"


async def test_the_daily_prompt_arrives_once_at_local_time_across_a_restart(
    fake: FakeTelegram, tmp_path: Path
) -> None:
    """A new user picks a time a minute ahead; the bot restarts before it; it arrives once."""
    from datetime import UTC, datetime, timedelta

    process = BotProcess(fake, f"sqlite:///{tmp_path / 'haven.sqlite3'}", tmp_path,
                         HAVEN_SCHEDULER_POLL_SECONDS="0.5")
    await process.start()
    try:
        user = fake.user(user_id=5009)
        await user.send("/start")
        await user.replies()
        for label in ("Sounds good", "Yes, keep them", "Friend", "Skip", "Yes, once a day"):
            await user.press(label)
            await user.replies()
        # The next minute, unless it starts within 20 s: then the bot could claim the prompt
        # just before it is killed, and the prompt would wait out the claim's lease (2 min).
        now = datetime.now(UTC)
        due = now + timedelta(minutes=2 if now.second >= 40 else 1)
        await user.send(due.strftime("%H:%M"))
        await user.replies()
        await user.send("Reykjavik")  # UTC all year round
        assert "all set" in visible(await user.replies())

        await process.kill()
        await process.start()
        prompt = None
        for _ in range(300):  # the prompt is due within two minutes
            prompts = [m for m in user.chat if m.text and "question for today" in m.text]
            if prompts:
                prompt = prompts[0]
                break
            await asyncio.sleep(0.5)
        assert prompt is not None, "the prompt arrived"
        arrived = datetime.fromtimestamp(prompt.date, UTC)
        assert arrived >= due.replace(second=0, microsecond=0)
        assert prompt.labels == [["Answer", "Skip today"], ["Ask me in an hour", "Pause prompts"]]
        await asyncio.sleep(2)
        assert len([m for m in user.chat if m.text and "question for today" in m.text]) == 1

        await user.press("Answer")
        await user.replies()
        await user.send("We laughed together at dinner.")
        assert "journal" in visible(await user.replies())
    finally:
        await process.stop()
