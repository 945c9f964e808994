"""PostgreSQL sessions kept between units of work, each on a connection of its own.

Checking a connection out of SQLAlchemy's pool and back in, with a session made around it
and closed again, was about a third of an empty unit of work's CPU (about 100 of 300 us).
A session on the shelf is closed after each unit as before, so its objects and its
transaction go, but it stays bound to its connection, and the connection stays checked
out of the pool, ready for the next unit.

The shelf is the gate for units of work: at most `size` sessions exist at once, and a unit
that finds none free waits in line for the next one handed back (first come, first
served). A unit that fails gives its session back to no one: the session is closed and
its connection returned to the pool, which replaces it if it is broken; its place goes to
the next in line, who opens a new one. When a connection is found dead before its
transaction began (the server restarted), every idle session is let go: their connections
went with the same server.

`acquire` runs on the event loop; the rest inside a unit of work's greenlet, where
connecting and closing may wait on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

Held = tuple[Session, Connection]


class SessionShelf:
    """At most `size` sessions, each bound to a checked-out connection of `engine`.

    `size` should leave the pool some connections for anything that is not a unit of work
    (migrations, checks): the sessions' connections are checked out.
    """

    def __init__(self, sessions: sessionmaker[Session], engine: Engine, size: int,
                 timeout: float = 30.0) -> None:
        self._sessions = sessions
        self._engine = engine
        self._size = size
        self._timeout = timeout
        self._idle: list[Held] = []
        self._existing = 0  # sessions idle, in use, or being opened
        self._waiting: deque[asyncio.Future[Held | None]] = deque()

    def __len__(self) -> int:
        """The idle sessions."""
        return len(self._idle)

    def connections(self) -> list[Connection]:
        """The idle sessions' connections."""
        return [connection for _session, connection in self._idle]

    async def acquire(self) -> Held | None:
        """An idle session, or None: there is room for a new one, which the caller opens
        (`open`). With neither, waits for one handed back, for at most the pool's own
        timeout (then TimeoutError, as the pool would raise)."""
        if self._idle:
            return self._idle.pop()
        if self._existing < self._size and not self._waiting:
            self._existing += 1
            return None
        waiter: asyncio.Future[Held | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self._timeout):
                return await waiter
        except (asyncio.CancelledError, TimeoutError):
            if waiter.done() and not waiter.cancelled():
                self._hand_over(waiter.result())  # given just as it gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            raise

    def open(self) -> Held:
        """A new session on a connection from the pool, in the place `acquire` made."""
        try:
            connection = self._engine.connect()
        except BaseException:
            self._hand_over(None)
            raise
        return self._sessions(bind=connection), connection

    def put_back(self, held: Held) -> None:
        """After a unit that succeeded: close the session and keep it for the next one."""
        try:
            held[0].close()
        except Exception:  # noqa: BLE001 - the unit has committed; only this session is lost
            log.warning("a session could not be closed after its unit", exc_info=True)
            self.discard(held)
            return
        if held[1].invalidated:
            self.discard(held)
        else:
            self._hand_over(held)

    def discard(self, held: Held) -> None:
        """After a unit that failed: the session and its connection are let go (the pool
        sees whether the connection can serve again), and their place is free."""
        let_go(held)
        self._hand_over(None)

    def empty(self) -> None:
        """Let every idle session go (the server went away, or the repository closes)."""
        idle, self._idle = self._idle, []
        for held in idle:
            let_go(held)
            self._existing -= 1

    def _hand_over(self, held: Held | None) -> None:
        """Give a session, or with None a free place, to the first unit waiting; or keep it."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(held)
                return
        if held is None:
            self._existing -= 1
        else:
            self._idle.append(held)


def let_go(held: Held) -> None:
    """Close a session and return its connection to the pool, which replaces it if it is
    broken; whatever fails here has failed already."""
    session, connection = held
    with contextlib.suppress(Exception):
        session.close()
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - the pool has already dropped what failed
        log.debug("a failed unit's connection could not be returned", exc_info=True)
