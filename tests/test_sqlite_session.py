"""SQLite's units of work share one session on one connection kept out of the pool
(SqliteRepository): each unit still starts with an empty session in a transaction of its
own, a unit that fails takes nothing with it, and closing lets the connection go."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import MultiFernet
from sqlalchemy import event, inspect, text

from bot.storage.models import User
from bot.storage.repository import SqliteRepository, UnitOfWork
from tests.conftest import migrated


@pytest.fixture
async def repository(tmp_path: Path, cipher: MultiFernet) -> AsyncIterator[SqliteRepository]:
    repo = await migrated(f"sqlite:///{tmp_path / 'haven.sqlite3'}", cipher)
    assert isinstance(repo, SqliteRepository)
    yield repo
    await repo.close()


def connection_of(unit: UnitOfWork) -> object:
    return unit.session.connection().connection.driver_connection


def in_transaction(unit: UnitOfWork) -> bool:
    return bool(connection_of(unit).in_transaction)  # type: ignore[attr-defined]


async def test_units_reuse_one_connection_without_the_pool(
        repository: SqliteRepository) -> None:
    first = await repository.run(connection_of)
    checkouts: list[object] = []
    event.listen(repository.engine.pool, "checkout", lambda *_: checkouts.append(object()))
    later = [await repository.run(connection_of) for _ in range(5)]
    assert later == [first] * 5
    assert checkouts == []
    assert [kept.connection.driver_connection
            for kept in repository.kept_connections()] == [first]


async def test_each_unit_starts_with_an_empty_session_in_a_transaction_of_its_own(
        repository: SqliteRepository) -> None:
    await repository.run(lambda unit: unit.user_for_chat(5, "Sam", "en"))

    def look(unit: UnitOfWork) -> tuple[int, bool, User]:
        held = len(unit.session.identity_map)
        user = unit.find_user(5)
        assert user is not None
        user.first_name += "!"  # changed in this unit, and committed with it
        return held, in_transaction(unit), user

    # The people returned stay referenced here, so a session left holding them would show.
    seen = [await repository.run(look) for _ in range(3)]
    assert [held for held, _, _ in seen] == [0, 0, 0]
    assert all(began for _, began, _ in seen)
    assert [user.first_name for _, _, user in seen] == ["Sam!", "Sam!!", "Sam!!!"]
    assert all(inspect(user).detached for _, _, user in seen)
    # Between units, nothing is left open on the kept connection.
    (kept,) = repository.kept_connections()
    assert not kept.connection.driver_connection.in_transaction  # type: ignore[union-attr]


async def test_a_unit_that_fails_is_rolled_back_and_its_connection_goes_back_to_the_pool(
        repository: SqliteRepository) -> None:
    await repository.run(lambda unit: unit.user_for_chat(6, "Kai", "en"))

    def rename_then_fail(unit: UnitOfWork) -> None:
        user = unit.find_user(6)
        assert user is not None
        user.first_name = "Changed"
        unit.session.flush()  # written in the transaction, then taken back
        raise RuntimeError("the turn failed")

    with pytest.raises(RuntimeError):
        await repository.run(rename_then_fail)
    assert repository.kept_connections() == []
    assert repository.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    checkouts: list[object] = []
    event.listen(repository.engine.pool, "checkout", lambda *_: checkouts.append(object()))
    found = await repository.run(lambda unit: unit.find_user(6))
    assert found is not None and found.first_name == "Kai"
    assert len(checkouts) == 1  # the next unit took one from the pool (which checks it)
    assert len(repository.kept_connections()) == 1


async def test_the_database_can_be_read_from_elsewhere_between_units(
        repository: SqliteRepository) -> None:
    await repository.run(lambda unit: unit.user_for_chat(7, "Ana", "en"))
    with repository.engine.begin() as other:  # another connection from the pool writes
        other.execute(text("UPDATE users SET discreet = 1 WHERE chat_id = 7"))
    found = await repository.run(lambda unit: unit.find_user(7))
    assert found is not None and found.discreet is True


async def test_closing_lets_the_kept_connection_go(
        tmp_path: Path, cipher: MultiFernet) -> None:
    repo = await migrated(f"sqlite:///{tmp_path / 'haven.sqlite3'}", cipher)
    assert isinstance(repo, SqliteRepository)
    driver = await repo.run(connection_of)
    assert repo.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await repo.close()
    assert repo.kept_connections() == []
    with pytest.raises(Exception, match="closed"):
        driver.execute("SELECT 1")  # type: ignore[attr-defined]
