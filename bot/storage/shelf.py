"""PostgreSQL sessions kept between units of work, each on a connection of its own.

Checking a connection out of SQLAlchemy's pool and back in, with a session made around it
and closed again, was about a third of an empty unit of work's CPU (about 100 of 300 us).
A session on the shelf is closed after each unit as before, so its objects and its
transaction go, but it stays bound to its connection, and the connection stays checked
out of the pool, ready for the next unit.

A unit that fails gives its session back to no one: the session is closed and its
connection returned to the pool, which replaces it if it is broken. When a connection is
found dead before its transaction began (the server restarted), every session on the shelf
is let go: their connections went with the same server.

Everything here runs inside a unit of work's greenlet, where connecting and closing may
wait on the network.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


class SessionShelf:
    """At most `keep` idle sessions, each bound to a checked-out connection of `engine`.

    `keep` should leave the pool some connections for anything that is not a unit of work
    (migrations, checks): connections on the shelf are checked out.
    """

    def __init__(self, sessions: sessionmaker[Session], engine: Engine, keep: int) -> None:
        self._sessions = sessions
        self._engine = engine
        self._keep = keep
        self._idle: list[tuple[Session, Connection]] = []

    def __len__(self) -> int:
        return len(self._idle)

    def connections(self) -> list[Connection]:
        """The idle sessions' connections."""
        return [connection for _session, connection in self._idle]

    def take(self) -> tuple[Session, Connection]:
        """An idle session, or a new one on a connection from the pool."""
        if self._idle:
            return self._idle.pop()
        connection = self._engine.connect()
        return self._sessions(bind=connection), connection

    def put_back(self, held: tuple[Session, Connection]) -> None:
        """After a unit that succeeded: close the session and keep it for the next one."""
        session, connection = held
        try:
            session.close()
        except Exception:  # noqa: BLE001 - the unit has committed; only this session is lost
            log.warning("a session could not be closed after its unit", exc_info=True)
            self.discard(held)
            return
        if len(self._idle) < self._keep and not connection.invalidated:
            self._idle.append(held)
        else:
            connection.close()

    def discard(self, held: tuple[Session, Connection]) -> None:
        """After a unit that failed: the session and its connection are let go; the pool
        sees whether the connection can serve again."""
        session, connection = held
        with contextlib.suppress(Exception):
            session.close()
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - the pool has already dropped what failed
            log.debug("a failed unit's connection could not be returned", exc_info=True)

    def empty(self) -> None:
        """Let every idle session go (the server went away, or the repository closes)."""
        idle, self._idle = self._idle, []
        for held in idle:
            self.discard(held)
