"""SQLite's units of work share one session on one connection kept out of the pool
(SqliteRepository), their transactions begun and ended by sqlite3 itself
(bot.storage.transaction): each unit still starts with an empty session in a transaction
of its own that holds the write lock from its start, a unit that fails (or whose commit
fails) takes nothing with it, and closing lets the connection go."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import MultiFernet
from sqlalchemy import event, inspect, text

from bot.storage.checkpoints import Checkpointer
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


async def test_a_unit_holds_the_write_lock_from_its_start(
        repository: SqliteRepository, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "haven.sqlite3", timeout=0, isolation_level=None)

    def try_to_write_meanwhile(unit: UnitOfWork) -> str:
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            return str(error)
        other.execute("ROLLBACK")
        return "no lock"

    try:
        assert await repository.run(try_to_write_meanwhile) == "database is locked"
        other.execute("BEGIN IMMEDIATE")  # free again once the unit is over
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_commit_that_fails_is_rolled_back(repository: SqliteRepository) -> None:
    await repository.run(lambda unit: unit.user_for_chat(8, "Noor", "en"))

    def rename_and_break_a_rule_checked_at_commit(unit: UnitOfWork) -> None:
        user = unit.find_user(8)
        assert user is not None
        user.first_name = "Changed"
        unit.session.execute(text("PRAGMA defer_foreign_keys = ON"))
        unit.session.execute(text(  # nobody has id 999999: the commit refuses it
            "INSERT INTO chat_messages (user_id, message_id, at) "
            "VALUES (999999, 1, '2026-11-25 10:00:00')"))

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        await repository.run(rename_and_break_a_rule_checked_at_commit)
    found = await repository.run(lambda unit: unit.find_user(8))
    assert found is not None and found.first_name == "Noor"
    count = await repository.run(
        lambda unit: unit.session.execute(text("SELECT count(*) FROM chat_messages")).scalar())
    assert count == 0


async def test_pooled_connections_leave_transactions_to_sqlalchemy_after_autocommit_use(
        repository: SqliteRepository) -> None:
    def fail(_unit: UnitOfWork) -> None:
        raise RuntimeError("the turn failed")

    await repository.run(connection_of)
    with pytest.raises(RuntimeError):
        await repository.run(fail)  # the kept (autocommit) connection goes back to the pool
    with repository.engine.connect() as pooled:
        assert pooled.connection.driver_connection.isolation_level is None  # type: ignore[union-attr]


def kept_driver(repository: SqliteRepository) -> sqlite3.Connection:
    (kept,) = repository.kept_connections()
    driver = kept.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


async def write_megabytes(repository: SqliteRepository, megabytes: int) -> None:
    """Well over SQLite's 1,000-page trigger for a checkpoint (4 MB of 4 KB pages)."""
    await repository.run(lambda unit: unit.session.execute(
        text("CREATE TABLE IF NOT EXISTS ballast (x BLOB)")))
    for _ in range(megabytes):
        await repository.run(lambda unit: unit.session.execute(
            text("INSERT INTO ballast VALUES (randomblob(1000000))")))


async def test_turns_commit_without_checkpointing_and_a_thread_checkpoints_instead(
        repository: SqliteRepository, tmp_path: Path) -> None:
    """A checkpoint inside a turn's COMMIT held up every turn (bot.storage.checkpoints).
    Until a checkpoint copies the log into it, the database file does not grow."""
    database = tmp_path / "haven.sqlite3"
    checkpoints = repository.checkpoints
    assert checkpoints is not None
    await repository.run(lambda unit: unit.find_user(1))
    assert checkpoints.running
    checkpoints.stop()  # the test takes the thread's steps itself
    assert kept_driver(repository).execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    size_before = database.stat().st_size

    await write_megabytes(repository, 6)
    assert database.stat().st_size == size_before  # all of it still in the log

    with sqlite3.connect(database, isolation_level=None) as own:
        checkpoints.checkpoint(own)
    assert database.stat().st_size > size_before + 6_000_000
    assert checkpoints.checkpoints == 1 and not checkpoints.writer_should_checkpoint
    # Everything was copied, so the next write starts the log again from its beginning.
    log_size = database.with_name(database.name + "-wal").stat().st_size
    await write_megabytes(repository, 1)
    assert database.with_name(database.name + "-wal").stat().st_size == log_size


async def test_the_thread_checkpoints_by_itself(repository: SqliteRepository,
                                                 tmp_path: Path) -> None:
    database = tmp_path / "haven.sqlite3"
    checkpoints = repository.checkpoints
    assert checkpoints is not None
    await write_megabytes(repository, 5)
    done = checkpoints.checkpoints
    for _ in range(200):  # one whole checkpoint after the writes, counted when it returns
        if checkpoints.checkpoints > done + 1:
            break
        await asyncio.sleep(0.05)
    assert database.stat().st_size > 5_000_000
    await repository.close()
    assert not checkpoints.running


async def test_a_log_that_keeps_growing_is_checkpointed_by_the_writer_itself(
        repository: SqliteRepository, tmp_path: Path) -> None:
    """If the load never pauses long enough for a passive checkpoint to copy everything,
    the writer makes one itself once the log is past the limit."""
    database = tmp_path / "haven.sqlite3"
    checkpoints = repository.checkpoints
    assert checkpoints is not None
    await repository.run(lambda unit: unit.find_user(1))
    checkpoints.stop()
    checkpoints.writer_pages = 500
    await write_megabytes(repository, 3)
    with sqlite3.connect(database, isolation_level=None) as own:
        checkpoints.checkpoint(own)  # all copied: the log starts again at the next write
    size_before = database.stat().st_size
    with (sqlite3.connect(database, isolation_level=None) as reader,
          sqlite3.connect(database, isolation_level=None) as own):
        # A reader in the middle of a transaction keeps the thread's checkpoint from
        # copying what came after its snapshot.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM ballast").fetchone()
        await write_megabytes(repository, 3)
        checkpoints.checkpoint(own)
        reader.execute("COMMIT")
    assert database.stat().st_size == size_before
    assert checkpoints.writer_should_checkpoint
    await repository.run(lambda unit: unit.find_user(1))  # the writer checkpoints after it
    assert not checkpoints.writer_should_checkpoint
    assert database.stat().st_size > size_before + 3_000_000


def test_a_checkpoint_that_keeps_failing_is_logged_once_until_it_works(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = tmp_path / "haven.sqlite3"
    with sqlite3.connect(database) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
    checkpoints = Checkpointer(str(database))
    broken = sqlite3.connect(database)
    broken.close()  # every statement on it fails
    for _ in range(5):
        checkpoints.checkpoint(broken)
    with sqlite3.connect(database, isolation_level=None) as working:
        checkpoints.checkpoint(working)
    messages = [record.getMessage() for record in caplog.records
                if record.name == "bot.storage.checkpoints"]
    assert len(messages) == 2
    assert messages[0].startswith("could not checkpoint")
    assert messages[1] == "the SQLite log is checkpointed again"
    assert checkpoints.checkpoints == 1


def test_a_writer_checkpoint_that_fails_does_not_undo_the_committed_unit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    checkpoints = Checkpointer(str(tmp_path / "haven.sqlite3"))
    checkpoints.writer_should_checkpoint = True
    broken = sqlite3.connect(tmp_path / "haven.sqlite3")
    broken.close()
    checkpoints.after_writer_commit(broken)  # does not raise
    assert not checkpoints.writer_should_checkpoint
    assert [record.getMessage() for record in caplog.records] == [
        "the writer could not checkpoint the SQLite log"]
