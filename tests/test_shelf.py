"""Sessions kept between units of work on the real PostgreSQL (bot.storage.shelf): the next
unit reuses the last one's connection without going through the pool, yet starts with an
empty session in a transaction of its own; the shelf keeps no more than it may; and when
the server has ended every kept connection, the next turn still succeeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import MultiFernet
from sqlalchemy import event, inspect, text

from bot.storage.database import postgres_engine
from bot.storage.models import User
from bot.storage.repository import PostgresRepository, UnitOfWork
from tests.conftest import drop_postgres_database, fresh_postgres_database

pytestmark = pytest.mark.postgres

POOL_SIZE = 5  # so the shelf keeps at most 3, leaving 2 for anything else


@pytest.fixture
async def repository_and_admin(
        postgres_available: None,
        cipher: MultiFernet) -> AsyncIterator[tuple[PostgresRepository, asyncpg.Connection, str]]:
    name, url = await fresh_postgres_database()
    repository = PostgresRepository(postgres_engine(url, cipher, pool_size=POOL_SIZE))
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await repository.migrate()
        yield repository, admin, name
    finally:
        await repository.close()
        await admin.close()
        await drop_postgres_database(name)


def scalar(unit: UnitOfWork, sql: str) -> Any:
    return unit.session.execute(text(sql)).scalar_one()


def backend(unit: UnitOfWork) -> int:
    return int(scalar(unit, "SELECT pg_backend_pid()"))


async def bots_connections(admin: asyncpg.Connection, name: str) -> int:
    return int(await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        name))


async def test_the_next_unit_reuses_the_connection_without_the_pool(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str]) -> None:
    repository, _, _ = repository_and_admin
    checkouts: list[object] = []
    pool = repository.engine.sync_engine.pool
    first = await repository.run(backend)
    event.listen(pool, "checkout", lambda *_: checkouts.append(object()))
    later = [await repository.run(backend, chat_id=7) for _ in range(5)]
    assert later == [first] * 5
    assert checkouts == []


async def test_each_unit_starts_with_an_empty_session_in_a_transaction_of_its_own(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str]) -> None:
    repository, _, _ = repository_and_admin
    await repository.run(lambda unit: unit.user_for_chat(5, "Sam", "en"), chat_id=5)

    def look(unit: UnitOfWork) -> tuple[int, int, User]:
        held = len(unit.session.identity_map)
        user = unit.find_user(5)
        assert user is not None
        user.first_name += "!"  # changed in this unit, and committed with it
        return held, int(scalar(unit, "SELECT pg_current_xact_id()::text::bigint")), user

    # The people returned stay referenced here, so a session left holding them would show.
    seen = [await repository.run(look, chat_id=5) for _ in range(3)]
    assert [held for held, _, _ in seen] == [0, 0, 0]
    assert len({transaction for _, transaction, _ in seen}) == 3
    assert [user.first_name for _, _, user in seen] == ["Sam!", "Sam!!", "Sam!!!"]
    assert all(inspect(user).detached for _, _, user in seen)


async def test_the_shelf_keeps_no_more_than_its_share_of_the_pool(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str]) -> None:
    repository, admin, name = repository_and_admin

    def wait_a_moment(unit: UnitOfWork) -> int:
        scalar(unit, "SELECT pg_sleep(0.3)")
        return backend(unit)

    backends = await asyncio.gather(*(repository.run(wait_a_moment) for _ in range(POOL_SIZE)))
    assert len(set(backends)) == POOL_SIZE  # all five at once, each on its own connection
    assert len(repository.shelf) == POOL_SIZE - 2
    assert repository.engine.sync_engine.pool.checkedout() == POOL_SIZE - 2  # type: ignore[attr-defined]
    # Two went back to the pool, which keeps them open: the shelf took none of them away.
    assert await bots_connections(admin, name) == POOL_SIZE


async def test_a_failed_unit_leaves_its_session_off_the_shelf(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str]) -> None:
    repository, _, _ = repository_and_admin
    await repository.run(backend)
    assert len(repository.shelf) == 1

    def fail(unit: UnitOfWork) -> None:
        unit.user_for_chat(9, "Ada", "en")
        scalar(unit, "SELECT 1 / 0")

    with pytest.raises(Exception, match="division by zero"):
        await repository.run(fail, chat_id=9)
    assert len(repository.shelf) == 0
    assert await repository.run(lambda unit: unit.find_user(9)) is None
    assert len(repository.shelf) == 1


async def test_every_kept_connection_ended_by_the_server_and_the_next_turn_succeeds(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str]) -> None:
    repository, admin, name = repository_and_admin

    def wait_a_moment(unit: UnitOfWork) -> None:
        scalar(unit, "SELECT pg_sleep(0.2)")

    await asyncio.gather(*(repository.run(wait_a_moment) for _ in range(3)))
    await repository.run(lambda unit: unit.user_for_chat(5, "Sam", "en").id, chat_id=5)
    assert len(repository.shelf) == 3
    ended = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    assert ended == 3
    # One dead connection met at BEGIN lets every kept one go, and the turn runs again on
    # a fresh connection: no one is asked to send anything again.
    assert await repository.run(lambda unit: unit.find_user(5) is not None, chat_id=5)
    assert len(repository.shelf) == 1
    assert await repository.run(lambda unit: unit.find_user(5) is not None, chat_id=5)


async def test_closing_the_repository_lets_every_kept_connection_go(
        postgres_available: None, cipher: MultiFernet) -> None:
    name, url = await fresh_postgres_database()
    repository = PostgresRepository(postgres_engine(url, cipher, pool_size=POOL_SIZE))
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await repository.migrate()
        await repository.run(backend)
        assert await bots_connections(admin, name) >= 1
        await repository.close()
        for _ in range(50):  # the server notices a closed connection a moment later
            if await bots_connections(admin, name) == 0:
                break
            await asyncio.sleep(0.05)
        assert await bots_connections(admin, name) == 0
    finally:
        await admin.close()
        await drop_postgres_database(name)
