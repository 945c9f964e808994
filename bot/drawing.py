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
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from bot.messages import PendingImage

log = logging.getLogger(__name__)
# How often the drawing process checks that the bot is still there.
PARENT_CHECK_SECONDS = 0.5
# Pictures kept after drawing (about 40 KB each).
KEPT_PICTURES = 256


class Pictures:
    """The pictures drawn lately, by what was asked for: the same picture asked for twice
    (a person's calendar seen again, or everyone's who practised on the same days) is drawn
    once. Only a picture asked for as `partial(function, hashable arguments...)` is kept."""

    def __init__(self, size: int = KEPT_PICTURES) -> None:
        self._size = size
        self._kept: OrderedDict[Hashable, bytes] = OrderedDict()

    @staticmethod
    def key(image: PendingImage) -> Hashable | None:
        draw = image.draw
        if not isinstance(draw, partial) or draw.keywords:
            return None
        try:
            hash(draw.args)
        except TypeError:
            return None
        return (draw.func, draw.args)

    def get(self, key: Hashable | None) -> bytes | None:
        found = self._kept.get(key) if key is not None else None
        if found is not None:
            self._kept.move_to_end(key)
        return found

    def keep(self, key: Hashable | None, png: bytes) -> None:
        if key is not None:
            self._kept[key] = png
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)


class Drawer:
    """Draws a turn's pictures; one asked for again comes from `Pictures`, not drawn twice.

    A picture asked for while the same one is being drawn waits for that drawing instead of
    queueing another: when many people reach /progress together with the same days
    practised, it is drawn once, not once each, one after another in the drawing process.
    """

    def __init__(self) -> None:
        self._pictures = Pictures()
        self._drawing: dict[Hashable, asyncio.Future[bytes]] = {}

    async def draw(self, image: PendingImage) -> bytes:
        key = self._pictures.key(image)
        png = self._pictures.get(key)
        if png is not None:
            return png
        if key is None:
            return await self._draw(image)
        drawing = self._drawing.get(key)
        if drawing is None:
            # A task of its own: a person who gives up waiting (their turn cancelled) does
            # not cancel the picture for the others waiting for it.
            drawing = asyncio.ensure_future(self._draw(image))
            self._drawing[key] = drawing
            drawing.add_done_callback(partial(self._drawn, key))
        return await asyncio.shield(drawing)

    def _drawn(self, key: Hashable, drawing: asyncio.Future[bytes]) -> None:
        del self._drawing[key]
        if not drawing.cancelled() and drawing.exception() is None:
            self._pictures.keep(key, drawing.result())

    async def _draw(self, image: PendingImage) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        return None


class ThreadDrawer(Drawer):
    """Draws in a thread of this process."""

    async def _draw(self, image: PendingImage) -> bytes:
        return await asyncio.to_thread(image.draw)


class ProcessDrawer(Drawer):
    """Draws in one child process, started when first needed.

    The child is spawned (not forked: the bot has threads running), so it imports only what
    drawing needs. If it dies, the next picture starts a new one; if that cannot be done, the
    picture is drawn in a thread, as `ThreadDrawer` would.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool: ProcessPoolExecutor | None = None

    async def _draw(self, image: PendingImage) -> bytes:
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

