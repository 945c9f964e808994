"""SQLite's WAL checkpoints, made from a thread instead of inside a turn's COMMIT.

In WAL mode SQLite appends each transaction to the log and, once the log passes 1,000
pages, copies it back into the database file (a checkpoint, with an fsync) inside the
COMMIT that crossed the line. Units of work run on the event loop's own thread, so that
COMMIT stopped every person's turn for as long as the checkpoint took: 8-19 ms on the
development machine, about once every 300 turns, against 0.04 ms for a usual COMMIT.

So the connection that runs units of work turns automatic checkpoints off
(`AUTOMATIC_CHECKPOINTS_OFF`), and `Checkpointer` makes PASSIVE checkpoints from a thread
of its own, on a connection of its own. sqlite3 lets go of the interpreter's lock while
SQLite works, and a passive checkpoint neither waits for the writer nor holds it up.

A passive checkpoint copies what it can; the log starts again from its beginning at the
next write once everything in it has been copied. Under a load that never pauses for the
few milliseconds that takes, the log would keep growing, so once it holds more than
`WRITER_CHECKPOINT_PAGES` the writer makes one checkpoint itself after its next unit
(`after_writer_commit`), as SQLite would have: a rare stall instead of a log without end.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

AUTOMATIC_CHECKPOINTS_OFF = "PRAGMA wal_autocheckpoint=0"
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
# How often the thread looks at the log; at 400 turns/s it gains a few hundred pages in
# that time, about what SQLite's own 1,000-page trigger would copy at once.
EVERY_SECONDS = 0.25
WRITER_CHECKPOINT_PAGES = 20_000  # about 80 MB of log


class Checkpointer:
    """PASSIVE checkpoints of one SQLite file, every `every` seconds, from a daemon thread
    started by `start` and ended by `stop`."""

    def __init__(self, path: str, every: float = EVERY_SECONDS,
                 writer_pages: int = WRITER_CHECKPOINT_PAGES) -> None:
        self.path, self.every, self.writer_pages = path, every, writer_pages
        self.checkpoints = 0  # made by the thread, whether or not they copied anything
        self.writer_should_checkpoint = False
        self._failing = False  # the last checkpoint failed (logged once, until one works)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoints",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None,
                                     check_same_thread=False)
        try:
            while not self._stopping.wait(self.every):
                self.checkpoint(connection)
        finally:
            connection.close()

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        """One passive checkpoint. A failure is logged when it starts and when it ends, not
        at every try; the next one is tried in turn."""
        try:
            _busy, log_pages, _copied = connection.execute(CHECKPOINT).fetchone()
        except sqlite3.Error:
            if not self._failing:
                log.warning("could not checkpoint the SQLite log; trying again every %.2f s",
                            self.every, exc_info=True)
            self._failing = True
            return
        if self._failing:
            log.warning("the SQLite log is checkpointed again")
            self._failing = False
        self.checkpoints += 1
        self.writer_should_checkpoint = log_pages > self.writer_pages

    def after_writer_commit(self, driver: sqlite3.Connection) -> None:
        """The writer's own checkpoint, if the thread found the log past its limit. Outside
        any transaction nothing else writes meanwhile, so it copies the whole log, and the
        next write starts the log again. It comes after a unit has committed, so a failure
        is logged, never raised: the unit's work is done."""
        if not self.writer_should_checkpoint:
            return
        self.writer_should_checkpoint = False
        try:
            driver.execute(CHECKPOINT).fetchone()
        except sqlite3.Error:
            log.warning("the writer could not checkpoint the SQLite log", exc_info=True)
