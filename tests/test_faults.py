"""Faults around the real bot process: PostgreSQL going away mid-run, Telegram refusing sends.

The bot's own restart (SIGKILL mid-flow) is `test_a_killed_bot_continues_at_the_same_step`
in tests/test_e2e_telegram.py, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bot import engine as engine_module
from bot.app import Content
from bot.messages import text as incoming_text
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.models import FlowRun, ScheduledJob
from bot.storage.repository import Repository, UnitOfWork
from tests.bot_process import BotProcess, free_port
from tests.conftest import drop_postgres_database, fresh_postgres_database
from tests.fake_telegram import ChatMessage, FakeTelegram, FakeUser
from tests.helpers import Reader, make_engine, migrated, texts, wait_for
from tests.pg_proxy import PostgresProxy, chat_marker
from tests.test_e2e_telegram import ANSWERS, fake, start_awareness, visible  # noqa: F401

pytestmark = pytest.mark.e2e

# /aware's questions in order, and words of the reply that shows each one: the reply to an
# accepted answer shows the next question.
STEPS = ["triggers", "past", "boundaries", "stress", "impact"]
SHOWS = {"past": "Next, your past", "boundaries": "Now, boundaries",
         "stress": "what you tend to do when things get tense",
         "impact": "The last reflection turns things around",
         "summary": "Here is what you noticed"}
BUSY = "Could you send your last message again"
CRISIS_TEXT = "I want to kill myself"


async def replies_to(user: FakeUser, count: int, timeout: float = 30.0) -> list[ChatMessage]:  # noqa: ASYNC109
    """The next `count` messages from the bot (each of the person's messages gets one)."""
    got: list[ChatMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got += await user.replies(timeout=max(deadline - time.monotonic(), 0.1))
    assert len(got) == count, f"expected {count} replies, got {visible(got)!r}"
    return got


class Conversation:
    """A person answering /aware, and the answers they saw accepted (in order)."""

    def __init__(self, user: FakeUser) -> None:
        self.user = user
        self.accepted: list[str] = []

    @property
    def step(self) -> str:
        return STEPS[len(self.accepted)]

    def judge(self, answer: str, reply: ChatMessage) -> bool:
        """True if the reply took `answer` (it shows the next question), False if it asked
        for it again; anything else (silence, an error, the wrong question) fails."""
        shown = reply.text or ""
        expected = SHOWS[STEPS[len(self.accepted) + 1]
                         if len(self.accepted) + 1 < len(STEPS) else "summary"]
        if BUSY in shown and expected not in shown:
            return False
        assert expected in shown and BUSY not in shown, (
            f"at {self.step!r}, {answer!r} got neither the next question nor 'send that "
            f"again': {shown!r}")
        self.accepted.append(answer)
        return True

    async def answer(self, text: str) -> bool:
        await self.user.send(text)
        (reply,) = await replies_to(self.user, 1)
        return self.judge(text, reply)


async def stored_awareness(database_url: str, data_dir: Path,
                           chat_id: int) -> tuple[str, dict[str, str], list[str]]:
    """What the database holds of the person's /aware: the run's step and answers, and the
    texts of their kept reflections, oldest first."""
    keys = read_or_create_key_file(key_file(data_dir))
    repository = await migrated(database_url, cipher_from(keys))
    try:
        reader = Reader(repository)
        person = await reader.find_user(chat_id)
        assert person is not None
        runs = await reader.query(select(FlowRun).where(
            FlowRun.user_id == person.id, FlowRun.flow == "self_awareness"))
        kept = await reader.reflections(person)
    finally:
        await repository.close()
    assert len(runs) == 1, "one run of /aware, however many times the database went away"
    return runs[0].step, dict(runs[0].answers), [row.text for row in kept]


def expected_store(accepted: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """The step, answers and reflections the database should hold after `accepted` (a
    finished run keeps no answers: the reflections are their kept copy)."""
    if len(accepted) == len(STEPS):
        return "summary", {}, accepted
    return STEPS[len(accepted)], dict(zip(STEPS, accepted, strict=False)), accepted


class ProxiedBot:
    """The bot process on a fresh PostgreSQL database, through a `PostgresProxy`."""

    def __init__(self, bot: BotProcess, proxy: PostgresProxy, database_url: str) -> None:
        self.bot = bot
        self.proxy = proxy
        self.database_url = database_url  # straight to the server, for the test's own reads

    async def quiet(self, for_seconds: float = 1.0) -> None:
        """Wait until the bot has committed nothing for a moment. The ids of the messages it
        sent are written a moment after a reply, in a transaction that names the chat
        too: after this, the next transaction naming the chat is the next message's turn."""
        proxy = self.proxy
        last, since = proxy.commits, time.monotonic()
        deadline = since + 30
        while time.monotonic() - since < for_seconds:
            assert time.monotonic() < deadline, "the bot never stopped writing"
            await asyncio.sleep(0.05)
            if proxy.commits != last:
                last, since = proxy.commits, time.monotonic()

    async def second_answer_cut_at_commit(self, user: FakeUser,
                                          forward: bool) -> tuple[Conversation, ChatMessage]:
        """/aware begun and its first answer taken; then the connection goes as the second
        answer's turn commits, its COMMIT passed on to the server first (`forward`) or not.
        Returns the conversation and the reply to the second answer, not yet judged."""
        await start_awareness(user)
        talk = Conversation(user)
        assert await talk.answer(ANSWERS[0])
        await self.quiet()
        went = self.proxy.outage_at_commit(forward=forward, of=chat_marker(user.id))
        await user.send(ANSWERS[1])
        await asyncio.wait_for(went.wait(), 30)
        (reply,) = await replies_to(user, 1)
        return talk, reply


@pytest.fixture
async def proxied_bot(fake: FakeTelegram, postgres_available: None,  # noqa: F811
                      tmp_path: Path) -> AsyncIterator[ProxiedBot]:
    name, url = await fresh_postgres_database()
    server = make_url(url)
    try:
        async with PostgresProxy(server.host or "127.0.0.1", server.port or 5432) as proxy:
            bot = BotProcess(fake, proxy.url(url), tmp_path)
            await bot.start()
            try:
                yield ProxiedBot(bot, proxy, url)
                assert bot.process is not None and bot.process.returncode is None, "no crash"
            finally:
                await bot.stop()
    finally:
        await drop_postgres_database(name)


@pytest.mark.postgres
async def test_postgres_going_away_mid_flow(
    fake: FakeTelegram, proxied_bot: ProxiedBot, tmp_path: Path  # noqa: F811
) -> None:
    """PostgreSQL restarts while a person is half-way through /aware: each message gets its
    next question or a kind "send that again", crisis lines still come, the bot reconnects
    by itself, and the database holds exactly the answers the person saw taken."""
    proxy, database_url = proxied_bot.proxy, proxied_bot.database_url
    user = fake.user(user_id=6001)
    # The database goes at the moment the second answer's turn commits: the COMMIT never
    # reaches the server, so the turn is rolled back there.
    talk, reply = await proxied_bot.second_answer_cut_at_commit(user, forward=False)
    assert not talk.judge(ANSWERS[1], reply), "a turn cut at its commit was not taken"

    # While it is down: the same answer again, the next one and a third, in a burst; then
    # words of crisis.
    burst = [ANSWERS[1], ANSWERS[2], "Something else entirely."]
    for text in burst:
        await user.send(text)
    for text, reply in zip(burst, await replies_to(user, len(burst)), strict=True):
        assert not talk.judge(text, reply)
    await user.send(CRISIS_TEXT)
    crisis = visible(await user.replies(timeout=20))
    assert "findahelpline.com" in crisis and "emergency" in crisis, crisis
    assert proxy.refused > 0, "the bot tried to reach the database during the outage"

    # Back, without restarting the bot: nothing of the outage was written, and the answers
    # asked for again are taken now.
    connections_before = proxy.connections
    proxy.restore()
    assert await stored_awareness(database_url, tmp_path, user.id) == \
        expected_store(talk.accepted)
    for text in ANSWERS[1:4]:
        assert await talk.answer(text), f"{text!r} is taken once the database is back"
    assert proxy.connections > connections_before, "the bot reconnected by itself"
    assert await stored_awareness(database_url, tmp_path, user.id) == \
        expected_store(ANSWERS[:4])


@pytest.mark.postgres
async def test_a_turn_committed_but_unconfirmed(
    fake: FakeTelegram, proxied_bot: ProxiedBot, tmp_path: Path  # noqa: F811
) -> None:
    """The connection drops just after the server took a turn's COMMIT, before its answer
    reached the bot. The person is asked to send it again (nobody can tell yet whether it
    was kept); when they do, the answer is found kept and they get the next question, and the
    resent answer is not taken a second time."""
    proxy, database_url = proxied_bot.proxy, proxied_bot.database_url
    user = fake.user(user_id=6003)
    talk, reply = await proxied_bot.second_answer_cut_at_commit(user, forward=True)
    talk.judge(ANSWERS[1], reply)
    proxy.restore()
    assert talk.step == "past", "asked to send it again: nobody could tell if it was kept"
    assert await talk.answer(ANSWERS[1]), "resent: found kept, and the next question follows"
    assert await talk.answer(ANSWERS[2])
    assert await stored_awareness(database_url, tmp_path, user.id) == \
        expected_store(ANSWERS[:3])


@pytest.mark.postgres
async def test_postgres_backends_terminated_mid_turn(
    fake: FakeTelegram, postgres_available: None, tmp_path: Path  # noqa: F811
) -> None:
    """The server ends every connection of the bot (pg_terminate_backend), one of them while
    a turn waits for its chat's lock. Nothing of that turn was done yet, so it starts again
    on a fresh connection and the answer is taken, once; the next ones work at once."""
    name, database_url = await fresh_postgres_database()
    # In the bot's database: advisory locks are per database.
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    bot = BotProcess(fake, database_url, tmp_path)
    try:
        await bot.start()
        user = fake.user(user_id=6002)
        await start_awareness(user)
        talk = Conversation(user)
        assert await talk.answer(ANSWERS[0])

        # Hold the person's turn inside its transaction (it waits for the chat's lock), then
        # end every connection the bot has, that one included.
        await admin.execute("SELECT pg_advisory_lock($1)", user.id)
        await user.send(ANSWERS[1])

        async def turn_waiting() -> bool:
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                "AND wait_event = 'advisory'", name))

        deadline = time.monotonic() + 30
        while not await turn_waiting():
            assert time.monotonic() < deadline, "the turn never reached the database"
            await asyncio.sleep(0.05)
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await admin.execute("SELECT pg_advisory_unlock($1)", user.id)
        assert ended >= 1
        (reply,) = await replies_to(user, 1)
        assert talk.judge(ANSWERS[1], reply), "the turn started again and was taken"

        for text in ANSWERS[2:4]:
            assert await talk.answer(text), f"{text!r} is taken: the bot reconnected by itself"
        assert await stored_awareness(database_url, tmp_path, user.id) == \
            expected_store(ANSWERS[:4])
    finally:
        await bot.stop()
        await admin.close()
        await drop_postgres_database(name)


@pytest.mark.postgres
async def test_connections_ended_while_idle_are_replaced_unnoticed(
    postgres_available: None, cipher: Any  # noqa: F811
) -> None:
    """Pooled connections are not pinged before each use. When the server has ended them
    while they sat idle, the next turn and the next background work still succeed: the dead
    connection is met at the first statement, before anything was done, and replaced."""
    name, database_url = await fresh_postgres_database()
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    repository = await migrated(database_url, cipher)

    async def end_the_bots_connections() -> None:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        assert ended >= 1

    try:
        await repository.run(lambda unit: unit.user_for_chat(5, "Sam", "en").id, 5)
        await end_the_bots_connections()
        assert await repository.run(lambda unit: unit.find_user(5) is not None, 5)
        await end_the_bots_connections()
        assert await repository.run(lambda unit: unit.find_user(5) is not None)
    finally:
        await repository.close()
        await admin.close()
        await drop_postgres_database(name)


async def test_turns_of_unknown_fate_are_remembered_within_a_bound(
    content: Content, repository: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every commit goes unanswered (a long outage): the engine remembers one such turn per
    chat, the newest, and no more than MAX_UNCONFIRMED in all, so memory stays bounded."""
    monkeypatch.setattr(engine_module, "MAX_UNCONFIRMED", 5)
    engine = make_engine(content, repository)
    commit = repository.run

    async def commit_unanswered(work: Any, chat_id: int | None = None) -> Any:
        await commit(work, chat_id)
        raise OperationalError("COMMIT", {}, ConnectionError("the answer never came"))

    monkeypatch.setattr(repository, "run", commit_unanswered)
    for chat_id in range(1, 9):
        reply = await engine.handle(incoming_text(chat_id, "/start", update_id=100 + chat_id))
        assert "send your last message again" in texts(reply), "the kind please-resend"
    assert list(engine._unconfirmed) == [4, 5, 6, 7, 8]
    # A chat's newest turn replaces its last one, and counts as the newest.
    await engine.handle(incoming_text(5, "/menu", update_id=200))
    await engine.handle(incoming_text(9, "/start", update_id=201))
    assert list(engine._unconfirmed) == [6, 7, 8, 5, 9]
    assert engine._unconfirmed[5].update_id == 200


# ---- Telegram refusing sends for a while -------------------------------------------------

TELEGRAM_OUTAGE_SECONDS = 12
SEND_TRIES = 4  # a Bot API call and its three retries (rate limiter, or network retries)


def log_lines(bot: BotProcess, message: str) -> list[dict[str, object]]:
    return [line for line in map(json.loads, filter(None, bot.log().splitlines()))
            if line["message"] == message]


async def metric(port: int, name: str) -> float:
    """The sum of a counter's series on the bot's /metrics page."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        page = await response.text()
    values = [float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", page,
                                                    re.MULTILINE)]
    assert values, f"{name} is not on /metrics"
    return sum(values)


async def onboard_with_a_daily_prompt(user: FakeUser) -> None:
    """Through /start: keep reflections, a friend, no country, a daily prompt at 09:00 UTC."""
    await user.send("/start")
    await user.replies()
    for label in ("Sounds good", "Yes, keep them", "Friend", "Skip", "Yes, once a day"):
        await user.press(label)
        await user.replies()
    await user.send("09:00")
    await user.replies()
    await user.send("Reykjavik")  # UTC all year round
    assert "all set" in visible(await user.replies())


def is_prompt(message: ChatMessage) -> bool:
    return any("Skip today" in row for row in message.labels)


async def make_prompt_due(database_url: str, data_dir: Path, chat_id: int) -> None:
    """Bring the person's next daily prompt forward to a minute ago."""
    keys = read_or_create_key_file(key_file(data_dir))
    repository = await migrated(database_url, cipher_from(keys))
    due = datetime.now(UTC) - timedelta(minutes=1)

    def bring_forward(unit: UnitOfWork) -> int:
        person = unit.find_user(chat_id)
        assert person is not None
        moved = unit.session.execute(
            update(ScheduledJob)
            .where(ScheduledJob.user_id == person.id, ScheduledJob.kind == "daily",
                   ScheduledJob.state == "due")
            .values(due_at=due))
        return int(moved.rowcount)  # type: ignore[attr-defined]

    try:
        assert await repository.run(bring_forward) == 1
    finally:
        await repository.close()


async def prompt_state(database_url: str, data_dir: Path, chat_id: int) -> list[str]:
    keys = read_or_create_key_file(key_file(data_dir))
    repository = await migrated(database_url, cipher_from(keys))
    try:
        reader = Reader(repository)
        person = await reader.find_user(chat_id)
        assert person is not None
        jobs = await reader.query(select(ScheduledJob).where(
            ScheduledJob.user_id == person.id, ScheduledJob.kind == "daily")
            .order_by(ScheduledJob.id))
    finally:
        await repository.close()
    return [job.state for job in jobs]


@pytest.mark.parametrize("status", [429, 502])
async def test_telegram_refusing_sends_for_a_while(
    fake: FakeTelegram, tmp_path: Path, status: int  # noqa: F811
) -> None:
    """Telegram answers every sendMessage with 429 (retry after 1 s) or 502 for a while.

    The issue's outage lasts a minute; this one lasts TELEGRAM_OUTAGE_SECONDS, long enough
    for a reply's every try to fail and for a scheduled prompt's claim to run out (the
    lease is set to its 10 s minimum). A send is tried SEND_TRIES times whatever the
    outage's length, and a prompt is claimed again once per lease, so a longer outage adds
    nothing but more of the same; a busy loop would show as hundreds of tries here too.

    The person answers three questions during the outage and carries on after it; a daily
    prompt falls due during it. Each send is tried a bounded number of times; every reply
    that never arrived is named by a "gave up sending a message" line and counted in
    haven_sends_given_up_total; the answers are kept once; the prompt arrives once.
    """
    port = free_port()
    database_url = f"sqlite:///{tmp_path / 'haven.sqlite3'}"
    bot = BotProcess(fake, database_url, tmp_path,
                     WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram-updates",
                     WEBHOOK_SECRET="s3cret-value_1", PORT=str(port),
                     HAVEN_SCHEDULER_POLL_SECONDS="0.5", HAVEN_SCHEDULER_LEASE_SECONDS="10")
    await bot.start()
    try:
        user = fake.user(user_id=6101)
        await onboard_with_a_daily_prompt(user)
        await user.send("/aware")
        await user.replies()
        await user.press("Let's begin")
        assert "about triggers" in visible(await user.replies())

        fake.fail_for("sendMessage", TELEGRAM_OUTAGE_SECONDS, status=status, retry_after=1)
        await make_prompt_due(database_url, tmp_path, user.id)
        during = dict(zip(ANSWERS[:3], ["past", "boundaries", "stress"], strict=True))
        updates: dict[int, str] = {}
        for answer in during:
            await user.send(answer)
            updates[fake.pending_updates[-1]["update_id"]] = answer
        await fake.deliver_pending(timeout=120)  # each handled: its reply sent or given up
        replies_seen = visible(user.chat)
        await wait_for(lambda: not fake.failing("sendMessage"), "the outage to end")

        # After it: back where they were, and on to the end.
        await user.send("/start")
        assert SHOWS["stress"] in visible(await user.replies(timeout=30))
        await user.send(ANSWERS[3])
        assert SHOWS["impact"] in visible(await user.replies(timeout=30))
        await user.send(ANSWERS[4])
        summary = visible(await user.replies(timeout=30))
        assert all(answer in summary for answer in ANSWERS), "answers sent in the outage kept"
        assert await stored_awareness(database_url, tmp_path, user.id) == \
            expected_store(ANSWERS), "each kept once"

        # The prompt due in the outage arrives once its claim has run out, and only once.
        await wait_for(lambda: any(is_prompt(m) for m in user.chat), "the daily prompt", 90)
        assert "sent" in await prompt_state(database_url, tmp_path, user.id)
        assert len([m for m in user.chat if is_prompt(m)]) == 1

        # What never arrived is exactly what was given up, by log line and by counter.
        missing = {update_id for update_id, answer in updates.items()
                   if SHOWS[during[answer]] not in replies_seen}
        given_up = log_lines(bot, "gave up sending a message")
        reason = "rate_limited" if status == 429 else "network"
        assert all(line["method"] == "sendMessage" and line["reason"] == reason
                   for line in given_up), given_up
        assert {line.get("update") for line in given_up if "update" in line} == missing
        assert len([line for line in given_up if "update" in line]) == len(missing) >= 1
        prompt_given_up = [line for line in given_up if "round" in line]
        assert len(prompt_given_up) >= 1, "the prompt's first claim fell in the outage"
        assert len(prompt_given_up) + len(missing) == len(given_up)
        assert await metric(port, "haven_sends_given_up_total") == len(given_up)

        # Bounded: each reply tried SEND_TRIES times at most, the prompt as often per claim.
        failed = [params for method, params, _ in fake.errors if method == "sendMessage"]
        assert failed, "the outage was seen"
        per_text = Counter(params["text"] for params in failed)
        for text, tries in per_text.items():
            claims = len(prompt_given_up) + 1 if "Reply with a sentence" in text else 1
            assert tries <= SEND_TRIES * claims, f"{tries} tries of one message"
        assert len(failed) <= SEND_TRIES * (len(during) + len(prompt_given_up) + 1)
        assert len(prompt_given_up) <= TELEGRAM_OUTAGE_SECONDS // 10 + 1, "once per lease"
    finally:
        await bot.stop()
