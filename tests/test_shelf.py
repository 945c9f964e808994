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

POOL_SIZE = 5
SIZE = POOL_SIZE - 2  # sessions on the shelf: two of the pool's connections left free


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


async def test_units_beyond_the_shelfs_size_wait_their_turn_and_leave_the_pool_some(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    repository, admin, name = repository_and_admin
    order: list[int] = []  # the units, numbered, in the order they got a session
    acquire = repository.shelf.acquire

    async def noted() -> Any:
        held = await acquire()
        task = asyncio.current_task()
        assert task is not None
        order.append(int(task.get_name()))
        return held

    monkeypatch.setattr(repository.shelf, "acquire", noted)

    def wait_a_moment(unit: UnitOfWork) -> int:
        scalar(unit, "SELECT pg_sleep(0.1)")
        return backend(unit)

    units = [asyncio.create_task(repository.run(wait_a_moment), name=str(number))
             for number in range(4 * SIZE)]
    await asyncio.sleep(0.05)
    # The shelf's sessions are all busy; the pool still has connections for anything else.
    async with repository.engine.connect() as other:
        assert (await other.execute(text("SELECT 1"))).scalar_one() == 1
    backends = await asyncio.gather(*units)
    assert len(set(backends)) == SIZE  # never more at once than the shelf holds
    assert order == list(range(4 * SIZE))  # first come, first served
    assert len(repository.shelf) == SIZE
    assert repository.engine.sync_engine.pool.checkedout() == SIZE  # type: ignore[attr-defined]
    assert await bots_connections(admin, name) == SIZE + 1  # and the one used above


async def test_a_unit_that_gives_up_waiting_takes_no_place_with_it(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str]) -> None:
    repository, _, _ = repository_and_admin

    def wait_a_moment(unit: UnitOfWork) -> int:
        scalar(unit, "SELECT pg_sleep(0.1)")
        return backend(unit)

    busy = [asyncio.ensure_future(repository.run(wait_a_moment)) for _ in range(SIZE)]
    waiting = [asyncio.ensure_future(repository.run(wait_a_moment)) for _ in range(3)]
    await asyncio.sleep(0.02)
    waiting[0].cancel()
    waiting[2].cancel()
    await asyncio.gather(*busy, waiting[1])
    assert waiting[0].cancelled() and waiting[2].cancelled()
    # Every place is still there: SIZE units at once run side by side again.
    backends = await asyncio.gather(*(repository.run(wait_a_moment) for _ in range(SIZE)))
    assert len(set(backends)) == SIZE
    assert len(repository.shelf) == SIZE


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


async def every_session_busy(repository: PostgresRepository, seconds: float,
                             waits: float, monkeypatch: pytest.MonkeyPatch,
                             ) -> list[asyncio.Future[Any]]:
    """As many units as the shelf holds, each in the database for `seconds`, under way;
    any other unit waits for a session at most `waits` seconds."""
    monkeypatch.setattr(repository.shelf, "_timeout", waits)

    def wait(unit: UnitOfWork) -> None:
        scalar(unit, f"SELECT pg_sleep({float(seconds)})")

    busy = [asyncio.ensure_future(repository.run(wait)) for _ in range(SIZE)]
    await asyncio.sleep(0.1)
    return busy


async def test_a_unit_waits_no_longer_than_the_pool_would(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    repository, _, _ = repository_and_admin
    busy = await every_session_busy(repository, seconds=1, waits=0.2,
                                    monkeypatch=monkeypatch)
    with pytest.raises(TimeoutError):
        await repository.run(backend)
    await asyncio.gather(*busy)
    assert len(repository.shelf) == SIZE  # nothing lost: every place back on the shelf
    assert await repository.run(backend) > 0


async def test_the_health_check_does_not_wait_behind_busy_turns(
        repository_and_admin: tuple[PostgresRepository, asyncpg.Connection, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    repository, admin, name = repository_and_admin
    busy = await every_session_busy(repository, seconds=2, waits=0.5,
                                    monkeypatch=monkeypatch)
    assert await asyncio.wait_for(repository.ping(), timeout=1.5)  # before the turns end
    await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1"
        " AND pid <> pg_backend_pid() AND state = 'idle'", name)
    assert await repository.ping()  # the ended spare connection is replaced
    await asyncio.gather(*busy)
