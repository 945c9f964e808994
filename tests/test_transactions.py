"""Units of work on the real PostgreSQL, whose transactions bot.storage.transaction drives
itself: a failure or a cancellation leaves nothing written and the connection clean for
the next turn, and a chat's lock is held for exactly the length of its turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import MultiFernet
from sqlalchemy import text

from bot.storage.database import postgres_engine
from bot.storage.models import User
from bot.storage.repository import PostgresRepository, UnitOfWork
from bot.storage.transaction import begin_statements
from tests.conftest import drop_postgres_database, fresh_postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
async def one_connection(postgres_available: None,
                         cipher: MultiFernet) -> AsyncIterator[tuple[PostgresRepository, str]]:
    """A migrated repository whose pool holds a single connection, so every unit of work
    meets whatever the one before it left behind; and the database's driver URL."""
    name, url = await fresh_postgres_database()
    repository = PostgresRepository(postgres_engine(url, cipher, pool_size=1))
    try:
        await repository.migrate()
        yield repository, url.replace("postgresql+asyncpg://", "postgresql://")
    finally:
        await repository.close()
        await drop_postgres_database(name)


def scalar(unit: UnitOfWork, sql: str) -> Any:
    return unit.session.execute(text(sql)).scalar_one()


def chats_locked_by_me(unit: UnitOfWork) -> list[int]:
    """The keys of the advisory locks this connection holds (a bigint key shows in pg_locks
    as its high and low 32 bits)."""
    return list(unit.session.execute(text(
        "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid = pg_backend_pid()")).scalars())


class Refused(Exception):
    pass


async def still_waiting_then_cancelled(turn: asyncio.Future[Any]) -> None:
    """Check that `turn` has not finished after half a second, then cancel it."""
    done, _ = await asyncio.wait({turn}, timeout=0.5)
    assert not done, "the turn finished while it should still have been waiting"
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn


async def left_nothing_and_works_again(repository: PostgresRepository, chat_id: int,
                                       name: str) -> None:
    """Nothing of the broken turn is stored, and the next turn on the same (only)
    connection runs and leaves no lock behind."""
    assert await repository.run(lambda unit: unit.find_user(chat_id)) is None
    user = await repository.run(lambda unit: unit.user_for_chat(chat_id, name, "en"),
                                chat_id=chat_id)
    assert (user.chat_id, user.first_name) == (chat_id, name)
    assert await repository.run(chats_locked_by_me) == []


def add_person_then_fail(unit: UnitOfWork) -> None:
    unit.user_for_chat(31, "Ada", "en")
    unit.session.flush()
    raise Refused


async def test_work_that_fails_leaves_nothing_and_the_next_turn_a_clean_connection(
        one_connection: tuple[PostgresRepository, str]) -> None:
    repository, _ = one_connection
    with pytest.raises(Refused):
        await repository.run(add_person_then_fail, chat_id=31)
    assert await repository.run(lambda unit: unit.find_user(31)) is None
    # A transaction left open would have carried on into these: one id for both, and a
    # person the next turn could have committed.
    first = await repository.run(lambda unit: scalar(unit, "SELECT pg_current_xact_id()"))
    second = await repository.run(lambda unit: scalar(unit, "SELECT pg_current_xact_id()"))
    assert first != second
    assert await repository.run(chats_locked_by_me) == []


async def test_a_database_error_in_the_work_is_rolled_back(
        one_connection: tuple[PostgresRepository, str]) -> None:
    repository, _ = one_connection

    def break_a_statement(unit: UnitOfWork) -> None:
        unit.user_for_chat(32, "Bo", "en")
        unit.session.flush()
        scalar(unit, "SELECT 1 / 0")

    with pytest.raises(Exception, match="division by zero"):
        await repository.run(break_a_statement, chat_id=32)
    await left_nothing_and_works_again(repository, 32, "Bo")


async def test_an_error_of_a_statement_sent_straight_to_asyncpg_is_rolled_back(
        one_connection: tuple[PostgresRepository, str]) -> None:
    repository, _ = one_connection

    def start_a_run_for_no_one(unit: UnitOfWork) -> None:
        user = unit.user_for_chat(35, "Cy", "en")
        unit.start_run(user, "aware", "triggers")  # through the driver, not the ORM
        no_one = User(id=999_999)  # a person who does not exist: a foreign key is broken
        unit.start_run(no_one, "repair", "pause")

    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await repository.run(start_a_run_for_no_one, chat_id=35)
    await left_nothing_and_works_again(repository, 35, "Cy")


async def test_a_chats_lock_is_held_for_its_turn_only(
        one_connection: tuple[PostgresRepository, str]) -> None:
    repository, _ = one_connection
    assert await repository.run(chats_locked_by_me, chat_id=4242) == [4242]
    assert await repository.run(chats_locked_by_me) == []
    group_chat = -1001234567890
    assert await repository.run(chats_locked_by_me, chat_id=group_chat) == [group_chat]


async def test_a_turn_cancelled_while_waiting_for_its_chat_gives_the_connection_back_clean(
        one_connection: tuple[PostgresRepository, str]) -> None:
    repository, url = one_connection
    other_worker = await asyncpg.connect(url)
    try:
        await other_worker.execute(begin_statements(33))  # another worker's turn for chat 33
        await still_waiting_then_cancelled(asyncio.ensure_future(repository.run(
            lambda unit: unit.user_for_chat(33, "Cy", "en"), chat_id=33)))
        await other_worker.execute("ROLLBACK")
    finally:
        await other_worker.close()
    await left_nothing_and_works_again(repository, 33, "Cy")


async def test_a_turn_cancelled_in_the_middle_leaves_nothing_and_a_clean_connection(
        one_connection: tuple[PostgresRepository, str]) -> None:
    repository, _ = one_connection

    def add_person_then_wait(unit: UnitOfWork) -> None:
        unit.user_for_chat(35, "Eli", "en")
        unit.session.flush()
        scalar(unit, "SELECT pg_sleep(30)")

    await still_waiting_then_cancelled(
        asyncio.ensure_future(repository.run(add_person_then_wait, chat_id=35)))
    await left_nothing_and_works_again(repository, 35, "Eli")


async def test_a_second_worker_waits_for_the_chat_then_sees_the_first_ones_change(
        one_connection: tuple[PostgresRepository, str]) -> None:
    repository, url = one_connection
    await repository.run(lambda unit: unit.user_for_chat(34, "Di", "en"), chat_id=34)
    other_worker = await asyncpg.connect(url)
    try:
        await other_worker.execute(begin_statements(34))
        await other_worker.execute("UPDATE users SET focus = 'repair' WHERE chat_id = 34")
        reading = asyncio.ensure_future(repository.run(
            lambda unit: unit.user_for_chat(34, "Di", "en").focus, chat_id=34))
        done, _ = await asyncio.wait({reading}, timeout=0.5)
        assert not done
        await other_worker.execute("COMMIT")
        assert await reading == "repair"
    finally:
        await other_worker.close()


def test_only_an_integer_goes_into_the_lock() -> None:
    assert begin_statements(None) == "BEGIN ISOLATION LEVEL READ COMMITTED;"
    assert begin_statements(-5).endswith("SELECT pg_advisory_xact_lock(-5);")
    with pytest.raises(ValueError):
        begin_statements("1); DROP TABLE users; --")  # type: ignore[arg-type]
