"""Units of work's transactions, begun and ended by the driver itself.

On SQLite (`in_sqlite_transaction`), SQLAlchemy's transaction around the driver's (its
begin and commit, through the session's) cost about an eighth of a turn's CPU, for
nothing the unit of work uses: the kept connection is in SQLAlchemy's autocommit mode,
and BEGIN IMMEDIATE and COMMIT go to sqlite3 directly.

On PostgreSQL (`in_transaction`), BEGIN and the chat's lock go in one round trip.

Through SQLAlchemy's asyncpg adapter, BEGIN is a round trip of its own before the first
statement, and the chat's lock another. A round trip cost this process about 40 us of CPU
through the driver and 60 us through the adapter (one at a time, on a local connection),
and a turn had seven. So the connections that run units of work are in the adapter's
autocommit mode, where it sends no BEGIN or COMMIT, and the transaction is driven here
through the driver's simple query protocol, which takes several statements in one
message: `BEGIN ...; SELECT pg_advisory_xact_lock(<chat id>)`.

A connection must never go back to the pool inside a transaction: the next unit of work
would run in it. Whatever goes wrong, the transaction is rolled back, and if even that
fails, the connection is closed and the pool opens a new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from bot.storage.direct import write_all

T = TypeVar("T")

BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED;"
COMMIT = "COMMIT;"
ROLLBACK = "ROLLBACK;"


class ConnectionWasGone(Exception):
    """A pooled connection turned out dead before its transaction began."""


def begin_statements(chat_id: int | None) -> str:
    """BEGIN, and with `chat_id` the chat's lock, held until the transaction ends: workers
    sharing the database take turns per chat."""
    if chat_id is None:
        return BEGIN
    # An integer written into the SQL, never text: int() refuses anything else.
    return f"{BEGIN} SELECT pg_advisory_xact_lock({int(chat_id)});"


def in_transaction(session: Session, work: Callable[[Session], T], chat_id: int | None) -> T:
    """Run `work(session)` in one transaction on the session's (autocommit) connection.

    It commits if `work` returns and rolls back if it raises. Raises `ConnectionWasGone`
    if the connection is found dead at BEGIN, before anything was done: the caller may
    simply try again on a fresh connection.
    """
    connection = session.connection()
    driver: Any = connection.connection.driver_connection  # the asyncpg Connection
    try:
        await_only(driver.execute(begin_statements(chat_id)))
    except BaseException as error:
        _abandon(connection, driver, error)
        if isinstance(error, Exception) and driver.is_closed():
            raise ConnectionWasGone from error
        raise
    try:
        result = work(session)
        write_all(session)
        await_only(driver.execute(COMMIT))
    except BaseException as error:
        _abandon(connection, driver, error)
        raise
    # The database has committed; the session's own transaction ends when it closes, where
    # its commit() would repeat a second time what was just done.
    return result


def _abandon(connection: Connection, driver: Any, error: BaseException) -> None:
    """Roll back whatever is open, or see that the connection is closed if that cannot be
    done."""
    if connection.invalidated:
        return  # SQLAlchemy met the failure itself and has closed the connection
    if not isinstance(error, Exception):
        # Cancelled, possibly in the middle of a statement: what the server is still doing
        # on this connection is unknown, so it is closed rather than reused.
        connection.invalidate()
        return
    if not driver.is_closed() and driver.is_in_transaction():
        # Whatever the failure, the check below sees the connection still in a transaction.
        with contextlib.suppress(BaseException):
            await_only(driver.execute(ROLLBACK))
    if driver.is_closed():
        _show_dead(connection)
    elif driver.is_in_transaction():
        connection.invalidate()


def _show_dead(connection: Connection) -> None:
    """Let SQLAlchemy meet a dead connection through its own adapter, as it would have at
    a statement: it then closes this connection and every other one the pool opened
    before it (they went with the same server), so the next turn gets a live one."""
    with contextlib.suppress(DBAPIError):
        connection.exec_driver_sql("SELECT 1")


def in_sqlite_transaction(session: Session, work: Callable[[Session], T]) -> T:
    """Run `work(session)` in one transaction on the session's (autocommit) SQLite
    connection: it commits if `work` returns and rolls back if it raises (or if the commit
    itself fails). BEGIN IMMEDIATE takes the write lock up front: in case another process
    shares the file, two transactions that both upgrade to writing would fail."""
    driver: Any = session.connection().connection.driver_connection  # the sqlite3 Connection
    driver.execute("BEGIN IMMEDIATE")
    try:
        result = work(session)
        write_all(session)
        driver.execute("COMMIT")
    finally:
        if driver.in_transaction:  # not committed: nothing of it is kept
            driver.execute("ROLLBACK")
    return result
