"""Small helpers for reading what a person would see."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import MultiFernet

from bot.adapters.plain_text import html_to_text
from bot.app import Content
from bot.crisis.anchors import texts_in
from bot.engine import Engine
from bot.flood import FloodGuard
from bot.messages import Reply
from bot.storage.repository import Repository, open_repository, raw_rows

TEST_DATA = Path(__file__).resolve().parent / "data"


def crisis_test_messages() -> list[str]:
    """Every message of the crisis corpora and blind sets, and the coaching-style sentences."""
    return [text for path in sorted(TEST_DATA.glob("*.yaml"))
            for text in texts_in(yaml.safe_load(path.read_text(encoding="utf-8")))]


def texts(reply: Reply) -> str:
    """Everything in a reply as plain text, one message per paragraph."""
    return "\n\n".join(html_to_text(message.text) for message in reply.messages)


def labels(reply: Reply) -> list[str]:
    """The labels of the buttons under the reply's last message with buttons."""
    for message in reversed(reply.messages):
        if message.buttons:
            return [button.label for row in message.buttons for button in row]
    return []


def press_data(reply: Reply, label: str) -> str:
    for message in reversed(reply.messages):
        for row in message.buttons:
            for button in row:
                if button.label == label:
                    return button.data
    raise AssertionError(f"no button {label!r}; the reply has {labels(reply)}")


class Reader:
    """Reads for tests: `await reader.find_user(5)` runs one unit-of-work method in its own
    transaction; `query` and `raw` look at rows directly."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.repository.run(lambda unit: getattr(unit, name)(*args, **kwargs))

        return call

    async def query(self, statement: Any) -> list[Any]:
        return await self.repository.run(
            lambda unit: list(unit.session.execute(statement).scalars()))

    async def raw(self, sql: str) -> list[Any]:
        return await self.repository.run(lambda unit: raw_rows(unit, sql))


async def migrated(url: str, cipher: MultiFernet) -> Repository:
    repository = open_repository(url, cipher)
    await repository.migrate()
    return repository


class Clock:
    """A clock a test sets by hand: `Engine(clock=...)` reads it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Outbox:
    """Stands in for Telegram: records what the scheduler sends; chats in `unreachable`
    are people who blocked Haven."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Reply]] = []
        self.unreachable: set[int] = set()

    async def __call__(self, chat_id: int, reply: Reply) -> bool:
        if chat_id in self.unreachable:
            return False
        self.sent.append((chat_id, reply))
        return True


def make_engine(content: Content, repository: Repository,
                clock: Callable[[], datetime] | None = None) -> Engine:
    """The real engine; flood control is relaxed, since tests type far faster than people."""
    return Engine(content.flows, content.machines, content.renderer, repository,
                  flood=FloodGuard(burst=100_000), daily=content.daily,
                  **({"clock": clock} if clock is not None else {}))


async def wait_for(condition: Callable[[], bool], what: str,
                   timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Wait until `condition()` holds (checked every 50 ms); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.05)
