"""Where the pictures of /progress and the safety check are drawn.

A chart takes matplotlib about 50 ms of CPU, holding the interpreter's lock nearly all the
while: drawn in a thread, it stalls every other person's turn on the event loop for that
long. `ProcessDrawer` draws in a child process instead (started at the first picture, so a
bot nobody asks for a picture pays nothing), leaving the event loop free and using another
core. `ThreadDrawer` is the simple way, for tests and tools.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from bot.messages import PendingImage

log = logging.getLogger(__name__)
# How often the drawing process checks that the bot is still there.
PARENT_CHECK_SECONDS = 0.5


class Drawer(Protocol):
    async def draw(self, image: PendingImage) -> bytes: ...

    def close(self) -> None: ...


class ThreadDrawer:
    """Draws in a thread of this process."""

    async def draw(self, image: PendingImage) -> bytes:
        return await asyncio.to_thread(image.draw)

    def close(self) -> None:
        return None


class ProcessDrawer:
    """Draws in one child process, started when first needed.

    The child is spawned (not forked: the bot has threads running), so it imports only what
    drawing needs. If it dies, the next picture starts a new one; if that cannot be done, the
    picture is drawn in a thread, as `ThreadDrawer` would.
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def draw(self, image: PendingImage) -> bytes:
        loop = asyncio.get_running_loop()
        for _ in range(2):
            try:
                return await loop.run_in_executor(self._executor(), image.draw)
            except (BrokenProcessPool, OSError):
                log.warning("the drawing process stopped; starting another")
                self.close()
        log.warning("no drawing process could be started; drawing in a thread")
        return await asyncio.to_thread(image.draw)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_end_with_parent, initargs=(os.getpid(),))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _end_with_parent(parent: int) -> None:
    """In the child: end it when the bot is gone, even killed outright (SIGKILL), which
    would otherwise leave it waiting for work for ever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()

