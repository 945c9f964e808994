"""Shared fixtures: content, databases (SQLite and the real PostgreSQL), engines and chats."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, MultiFernet

from bot.adapters.console import ConsoleChat
from bot.app import Content, load_content
from bot.engine import Engine
from bot.settings import PROJECT_ROOT
from bot.storage.crypto import cipher_from
from bot.storage.repository import Repository
from tests.helpers import make_engine, migrated

POSTGRES_ADMIN_URL = os.environ.get(
    "HAVEN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def content() -> Content:
    return load_content(PROJECT_ROOT / "dialogs", PROJECT_ROOT / "prompts")


def _postgres_reachable() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    import asyncpg

    async def probe() -> None:
        url = POSTGRES_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncio.wait_for(asyncpg.connect(url), timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as error:  # noqa: BLE001 - any failure to connect
        return f"{type(error).__name__}: {error}"
    return None


@pytest.fixture(scope="session")
def postgres_available() -> None:
    reason = _postgres_reachable()
    if reason is None:
        return
    message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({reason})"
    if IN_CI:
        pytest.fail(message + "; CI must run the PostgreSQL tests")
    pytest.skip(message + "; set HAVEN_TEST_POSTGRES_URL to run these tests")


async def fresh_postgres_database() -> tuple[str, str]:
    import asyncpg

    name = f"haven_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def drop_postgres_database(name: str) -> None:
    import asyncpg

    admin = POSTGRES_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'haven.sqlite3'}"
        return
    request.getfixturevalue("postgres_available")
    name, url = asyncio.run(fresh_postgres_database())
    try:
        yield url
    finally:
        asyncio.run(drop_postgres_database(name))


@pytest.fixture(scope="session")
def cipher() -> MultiFernet:
    return cipher_from([Fernet.generate_key()])


@pytest.fixture
async def repository(database_url: str, cipher: MultiFernet) -> AsyncIterator[Repository]:
    repo = await migrated(database_url, cipher)
    yield repo
    await repo.close()


@pytest.fixture
def engine(content: Content, repository: Repository) -> Engine:
    return make_engine(content, repository)


@pytest.fixture
def chat(engine: Engine) -> ConsoleChat:
    """A person chatting through the console adapter (what they see lands in chat.out)."""
    return ConsoleChat(engine, user_id=4242, out=io.StringIO(), first_name="Sam")
