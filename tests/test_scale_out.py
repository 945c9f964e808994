"""Two webhook workers sharing PostgreSQL: one person's updates never interleave.

Two `python -m bot webhook` processes share one PostgreSQL database and one encryption key.
The test stands in for a load balancer: it posts 1,000 updates (50 people, 20 each: onboarding,
/aware and its five reflections, /boundaries) to the two workers, everyone at once, a person's
consecutive updates to alternating workers. Half the people are in a hurry: each update
follows the last a few milliseconds later, unanswered, so that two of their updates are
regularly in flight at both workers at once, and two of their updates go to both workers at
the same moment, as when Telegram delivers again. The other half wait for each answer, and
every other update of theirs goes to both workers at the same moment.

Afterwards, each person's `recent_updates` (the ids of their turns, in the order the turns
committed) must hold each of their 20 update ids exactly once. Replaying those updates one at
a time, in that order, through an in-process engine on an empty database must give exactly
the same person, flow runs, reflections and other rows, and the same replies as the fake
Telegram received (none lost, none twice, no "something went wrong").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import DateTime, select
from telegram import Update

from bot.adapters.splitting import split_html
from bot.adapters.telegram import coalesce, incoming_from
from bot.app import Content
from bot.storage.crypto import cipher_from
from bot.storage.models import CrisisEvent, FlowRun, Reflection, SafetyCheck, ScheduledJob
from bot.storage.repository import RECENT_UPDATES, Repository, UnitOfWork
from tests.bot_process import BotProcess, free_port
from tests.conftest import drop_postgres_database, fresh_postgres_database
from tests.fake_telegram import FakeTelegram, FakeUser
from tests.helpers import make_engine, migrated

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TOKEN = "987655:SCALE-out-token-value"
SECRET = "scale-out_secret-1"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
PEOPLE = 50
FIRST_CHAT = 7_100
FOCUSES = ["Partner", "Friend", "Work", "Child or parent"]
COUNTRIES = ["Ireland", "Germany", "Canada", "India", "New Zealand"]
AWARE = [
    "When plans change at the last minute, I go quiet",
    "Growing up, raised voices meant trouble & I learned to hide",
    "I need an hour alone after work before I can talk",
    "Under stress I say 'fine' and change the subject",
    "I keep my word, but I can be short with people when I'm tired",
]
BOUNDARIES = [
    "Not answering work messages after 8pm",
    "I'd like us to check before making plans for both of us",
    "If you say no, I'll thank you and let it go",
    "What would make this easier for you?",
]
# Templates whose words mean a turn failed or was refused (system/busy.j2, system/slow_down.j2).
FAILURE_WORDS = ("Something went wrong", "send your last message again",
                 "arriving faster than I can take them in")

# Per person: a table name -> its rows (plain values), and "user" -> the person's row.
State = dict[str, Any]


def script(n: int) -> list[str]:
    """Person n's 20 messages: onboarding, /aware with five reflections, then /boundaries."""
    keep = "No, don't keep them" if n % 5 == 0 else "Yes, keep them"
    onboarding = ["/start", "Sounds good", keep, FOCUSES[n % len(FOCUSES)],
                  COUNTRIES[n % len(COUNTRIES)], "Not for now"]
    aware = ["/aware", "Let's begin", *(f"{answer} ({n})" for answer in AWARE)]
    ours = [f"{answer} ({n})" for answer in BOUNDARIES]
    if n % 2:
        boundaries = ["/boundaries", "Let's begin", ours[0], ours[1], ours[2], "/cancel",
                      "/boundaries"]
    else:
        boundaries = ["/boundaries", "Let's begin", ours[0], "Skip", ours[2], ours[3], "/menu"]
    return onboarding + aware + boundaries


# ---- what is stored, as plain values ---------------------------------------------------

def plain(row: Any) -> dict[str, Any]:
    """A row's columns without ids and keys; a time only as whether it is set."""
    values: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.primary_key or column.foreign_keys:
            continue
        value = getattr(row, column.key)
        values[column.key] = (value is not None) if isinstance(column.type, DateTime) else value
    return values


def person_state(unit: UnitOfWork, chat_id: int) -> State:
    user = unit.find_user(chat_id)
    if user is None:
        return {"user": None}
    state: State = {"user": plain(user)}
    for model in (FlowRun, Reflection, ScheduledJob, SafetyCheck, CrisisEvent):
        rows = unit.session.execute(
            select(model).where(model.user_id == user.id).order_by(model.id)).scalars()
        state[model.__tablename__] = [plain(row) for row in rows]
    return state


async def states(repository: Repository, chat_ids: list[int]) -> dict[int, State]:
    return await repository.run(
        lambda unit: {chat_id: person_state(unit, chat_id) for chat_id in chat_ids})


def differences(expected: dict[int, State], actual: dict[int, State]) -> list[str]:
    """Where two sets of people differ: one line per person and table, with the first row
    that differs."""
    found: list[str] = []
    for chat_id in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(chat_id, {}), actual.get(chat_id, {})
        for table in sorted(want.keys() | got.keys()):
            rows_wanted, rows_got = want.get(table), got.get(table)
            if rows_wanted == rows_got:
                continue
            if isinstance(rows_wanted, list) and isinstance(rows_got, list):
                index = next((i for i, (a, b) in enumerate(zip(rows_wanted, rows_got,
                                                                strict=False)) if a != b),
                             min(len(rows_wanted), len(rows_got)))
                found.append(
                    f"person {chat_id}, {table}: {len(rows_wanted)} rows expected, "
                    f"{len(rows_got)} found; first difference at row {index}: "
                    f"expected {rows_wanted[index] if index < len(rows_wanted) else None}, "
                    f"found {rows_got[index] if index < len(rows_got) else None}")
            else:
                found.append(f"person {chat_id}, {table}: expected {rows_wanted}, "
                             f"found {rows_got}")
    return found


# ---- delivering, as a load balancer would ----------------------------------------------

@dataclass
class Person:
    user: FakeUser
    updates: list[dict[str, Any]]  # in the order they were written
    # In a hurry: each update follows the last a few ms later, unanswered. Otherwise each
    # waits for the answer to the one before.
    hurried: bool = True
    twice: set[int] = field(default_factory=set)  # indexes delivered to both workers at once


@dataclass(frozen=True)
class Delivery:
    chat_id: int
    update_id: int
    worker: int
    started: float
    finished: float
    status: int


def people_with_updates(fake: FakeTelegram) -> list[Person]:
    """50 people, each with 20 updates; update ids rise across everyone, as on Telegram."""
    people = [Person(fake.user(FIRST_CHAT + n, first_name=f"Person {n}"), [])
              for n in range(PEOPLE)]
    scripts = [script(n) for n in range(PEOPLE)]
    assert len(scripts[0]) <= RECENT_UPDATES, "recent_updates must hold all of a person's"
    next_id = 800_000_001
    for step in range(len(scripts[0])):  # people write at the same time: ids interleave
        for n, person in enumerate(people):
            message = person.user.typed(scripts[n][step])
            person.updates.append({"update_id": next_id, "message": message})
            next_id += 1
    for n, person in enumerate(people):
        person.hurried = n < PEOPLE // 2
        count = len(person.updates)
        person.twice = ({(n * 7) % count, (n * 7 + count // 2) % count} if person.hurried
                        else set(range(0, count, 2)))
    return people


async def deliver(urls: list[str], people: list[Person], seed: int) -> list[Delivery]:
    """Post every update of everyone at once, a person's consecutive updates to alternating
    workers, as a load balancer would."""
    rng = random.Random(seed)
    deliveries: list[Delivery] = []
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def post(chat_id: int, update: dict[str, Any], worker: int) -> None:
            started = time.monotonic()
            async with session.post(urls[worker], json=update,
                                    headers={SECRET_HEADER: SECRET}) as response:
                await response.read()
                status = response.status
            deliveries.append(Delivery(chat_id, update["update_id"], worker, started,
                                       time.monotonic(), status))

        async def write(n: int, person: Person) -> None:
            posts: list[asyncio.Task[None]] = []
            for index, update in enumerate(person.updates):
                workers = [0, 1] if index in person.twice else [(n + index) % 2]
                posts += [asyncio.create_task(post(person.user.id, update, worker))
                          for worker in workers]
                if person.hurried:  # a few ms, mostly a little more, never the answer
                    await asyncio.sleep(rng.uniform(0.001, 0.01) if rng.random() < 0.25
                                        else rng.uniform(0.04, 0.15))
                else:
                    await asyncio.gather(*posts)
            await asyncio.gather(*posts)

        await asyncio.gather(*(write(n, person) for n, person in enumerate(people)))
    return deliveries


def overlapping_pairs(deliveries: list[Delivery]) -> Counter[int]:
    """Per person: pairs of different updates in flight at both workers at the same time."""
    by_person: dict[int, list[Delivery]] = {}
    for delivery in deliveries:
        by_person.setdefault(delivery.chat_id, []).append(delivery)
    pairs: Counter[int] = Counter()
    for chat_id, theirs in by_person.items():
        for i, first in enumerate(theirs):
            for second in theirs[i + 1:]:
                if (first.worker != second.worker and first.update_id != second.update_id
                        and first.started < second.finished and second.started < first.finished):
                    pairs[chat_id] += 1
    return pairs


# ---- replaying, one update at a time ---------------------------------------------------

Sent = tuple[str, tuple[tuple[str, ...], ...]]  # a chat message's HTML and its button labels


async def replay(content: Content, repository: Repository, person: Person,
                 order: list[int]) -> list[Sent]:
    """Handle the person's updates one by one in `order`; what Telegram would receive."""
    engine = make_engine(content, repository)
    by_id = {update["update_id"]: update for update in person.updates}
    sent: list[Sent] = []
    for update_id in order:
        update = Update.de_json(by_id[update_id], None)
        assert update is not None and update.message is not None
        reply = await engine.handle(incoming_from(update.message, update.update_id))
        messages = coalesce(reply.messages)
        assert messages, f"update {update_id} of person {person.user.id} had no reply"
        for message in messages:
            parts = split_html(message.text)
            labels = tuple(tuple(button.label for button in row) for row in message.buttons)
            sent += [(part, labels if index == len(parts) - 1 else ())
                     for index, part in enumerate(parts)]
    return sent


def received(user: FakeUser) -> list[Sent]:
    return [(message.source or "", tuple(tuple(row) for row in message.labels))
            for message in user.chat]


# ---- the test --------------------------------------------------------------------------

def webhook_workers(fake: FakeTelegram, database_url: str, key: bytes,
                    tmp_path: Path) -> tuple[list[BotProcess], list[str]]:
    """Two webhook workers on one database with one encryption key (each must read what the
    other wrote), and the URLs they listen on."""
    workers: list[BotProcess] = []
    urls: list[str] = []
    for name in ("a", "b"):
        port = free_port()
        urls.append(f"http://127.0.0.1:{port}/telegram-updates")
        data_dir = tmp_path / f"worker-{name}"
        data_dir.mkdir()
        workers.append(BotProcess(fake, database_url, data_dir, WEBHOOK_URL=urls[-1],
                                  WEBHOOK_SECRET=SECRET, PORT=str(port),
                                  HAVEN_ENCRYPTION_KEYS=key.decode()))
    return workers, urls


@pytest.fixture
async def shared_database(postgres_available: None) -> AsyncIterator[str]:
    """A fresh database on the real PostgreSQL, for the workers to share."""
    name, url = await fresh_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(name)


async def test_two_workers_take_one_persons_updates_one_at_a_time(
    content: Content, shared_database: str, tmp_path: Path
) -> None:
    key = Fernet.generate_key()
    async with FakeTelegram(token=TOKEN) as fake:
        people = people_with_updates(fake)
        workers, urls = webhook_workers(fake, shared_database, key, tmp_path)
        try:
            # Started together: `start` returns at the first setWebhook, and the health
            # check tells when each one listens.
            await asyncio.gather(*(worker.start() for worker in workers))
            await asyncio.gather(*(worker.wait_healthy() for worker in workers))
            began = time.monotonic()
            deliveries = await deliver(urls, people, seed=20_240_611)
            took = time.monotonic() - began
        finally:
            for worker in workers:
                await worker.stop()
        assert fake.internal_errors == [], "\n".join(fake.internal_errors)

    for worker in workers:
        log = worker.log()
        assert "Haven is listening" in log and "turn failed" not in log, log[-3000:]
    assert [d for d in deliveries if d.status != 200] == []
    assert len({d.update_id for d in deliveries}) == PEOPLE * len(people[0].updates)
    assert fake.errors == [], f"Telegram refused calls: {fake.errors[:5]}"
    overlaps = overlapping_pairs(deliveries)
    assert {p.user.id for p in people if p.hurried} <= set(overlaps), (
        "every person in a hurry had two different updates at both workers at once")

    cipher = cipher_from([key])
    chat_ids = [person.user.id for person in people]
    shared = await migrated(shared_database, cipher)
    try:
        after = await states(shared, chat_ids)
    finally:
        await shared.close()

    # The order the turns took: each update once, none lost, none twice.
    orders: dict[int, list[int]] = {}
    for person in people:
        user = after[person.user.id]["user"]
        assert user is not None, f"person {person.user.id} was never stored"
        orders[person.user.id] = order = list(user["recent_updates"])
        written = [update["update_id"] for update in person.updates]
        assert sorted(order) == written, f"person {person.user.id}: turns took {order}"
        if not person.hurried:
            assert order == written, "one who waits for each answer is taken in order"
        for text, _labels in received(person.user):
            assert not any(words in text for words in FAILURE_WORDS), (
                f"person {person.user.id} was told: {text}")

    # Those turns, one at a time in that order, on an empty database (SQLite: the same
    # turns give the same rows on either, and it replays them several times faster).
    replay_began = time.monotonic()
    repository = await migrated(f"sqlite:///{tmp_path / 'replay.sqlite3'}", cipher)
    try:
        expected_replies = await asyncio.gather(*(
            replay(content, repository, person, orders[person.user.id]) for person in people))
        expected = await states(repository, chat_ids)
    finally:
        await repository.close()
    replay_took = time.monotonic() - replay_began

    assert differences(expected, after) == []
    replies_out_of_order = 0
    for person, replies in zip(people, expected_replies, strict=True):
        got = received(person.user)
        assert Counter(got) == Counter(replies), (
            f"person {person.user.id}: the replies sent are not those of the turns taken "
            f"(missing {list((Counter(replies) - Counter(got)).elements())[:2]}, "
            f"extra {list((Counter(got) - Counter(replies)).elements())[:2]})")
        if not person.hurried:
            assert got == replies, f"person {person.user.id}: replies in another order"
        replies_out_of_order += got != replies

    # Real work was done: those who waited for answers went through onboarding and /aware.
    for person in people:
        if person.hurried:
            continue
        state = after[person.user.id]
        assert state["user"]["onboarded"]
        assert any(run["flow"] == "self_awareness" and run["status"] == "done"
                   for run in state["flow_runs"])
        kept = [row["text"] for row in state["reflections"] if row["flow"] == "self_awareness"]
        assert kept == ([] if state["user"]["keep_reflections"] is False
                        else [m["message"]["text"] for m in person.updates[8:13]])
    reordered = sum(orders[p.user.id] != [u["update_id"] for u in p.updates] for p in people)
    print(f"\n{len(deliveries)} posts in {took:.1f}s, replayed in {replay_took:.1f}s; pairs "
          f"of one person's different updates at both workers at once: "
          f"{sum(overlaps.values())}; people whose turns were taken in another order than "
          f"written: {reordered}; who saw replies in another order than the turns: "
          f"{replies_out_of_order}; reflections kept: "
          f"{sum(len(state['reflections']) for state in after.values())}")


def test_the_comparison_sees_a_changed_answer() -> None:
    """`differences` is what the test above relies on: it must see a one-word change."""
    reflection = {"flow": "self_awareness", "step": "triggers", "question": "triggers",
                  "text": "When plans change, I go quiet", "created_at": True}
    person: State = {"user": {"onboarded": True, "recent_updates": [1, 2, 3]},
                     "flow_runs": [{"flow": "self_awareness", "step": "past",
                                    "answers": {"triggers": reflection["text"]}}],
                     "reflections": [reflection]}
    assert differences({1: person}, {1: person}) == []
    changed = {**person, "reflections": [{**reflection, "text": "When plans change, I go loud"}]}
    assert len(differences({1: person}, {1: changed})) == 1
    other_answer = {**person, "flow_runs": [{**person["flow_runs"][0],
                                             "answers": {"triggers": "When plans change"}}]}
    assert differences({1: person}, {1: other_answer}) != []
    one_more = {**person, "reflections": [reflection, reflection]}
    assert "1 rows expected, 2 found" in differences({1: person}, {1: one_more})[0]
    other_order = {**person, "user": {"onboarded": True, "recent_updates": [1, 3, 2]}}
    assert differences({1: person}, {1: other_order}) != []
    assert differences({1: person}, {}) != [], "a person missing altogether"
