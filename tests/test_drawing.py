"""Pictures drawn in a child process: off the event loop's interpreter lock, recovered when the
child dies, and gone with the bot when it is killed."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from functools import partial
from pathlib import Path

import pytest

from bot.adapters.console import ConsoleChat
from bot.charts import CalendarRequest, draw_calendar
from bot.drawing import Drawer, ProcessDrawer, ThreadDrawer
from bot.engine import Engine
from bot.messages import PendingImage
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram
from tests.helpers import texts, wait_for
from tests.test_console_flows import onboard as onboard_in_console
from tests.test_e2e_telegram import bot, fake, onboard  # noqa: F401 - fixtures used below

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def drawn_where() -> bytes:
    return str(os.getpid()).encode()


def die_in_a_child() -> bytes:
    """Ends the process drawing it, unless that is this test's own process."""
    if multiprocessing.parent_process() is not None:
        os._exit(1)
    return b"drawn here"


def image(draw: object) -> PendingImage:
    return PendingImage("picture.png", draw, 0)  # type: ignore[arg-type]


async def test_a_picture_is_drawn_in_another_process_and_comes_back_whole() -> None:
    drawer = ProcessDrawer()
    try:
        calendar = CalendarRequest(2026, 6, frozenset({2, 3, 10}), 14, "June 2026", WEEKDAYS)
        png = await drawer.draw(image(partial(draw_calendar, calendar)))
        assert png.startswith(b"\x89PNG") and png == draw_calendar(calendar)
        first = await drawer.draw(image(drawn_where))
        assert int(first) != os.getpid()
        assert await drawer.draw(image(drawn_where)) == first, "one child, started once"
    finally:
        drawer.close()


async def test_a_child_that_dies_is_replaced_and_nothing_is_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    drawer = ProcessDrawer()
    try:
        before = int(await drawer.draw(image(drawn_where)))
        with caplog.at_level(logging.WARNING, logger="bot.drawing"):
            # Every child asked to draw this dies: after a second try it is drawn here.
            assert await drawer.draw(image(die_in_a_child)) == b"drawn here"
        assert caplog.text.count("the drawing process stopped") == 2
        assert "drawing in a thread" in caplog.text
        after = int(await drawer.draw(image(drawn_where)))
        assert after not in (before, os.getpid()), "a new child draws the next picture"
    finally:
        drawer.close()


async def test_the_thread_drawer_draws_here() -> None:
    assert int(await ThreadDrawer().draw(image(drawn_where))) == os.getpid()


DRAWN: list[str] = []


def counted(name: str) -> bytes:
    DRAWN.append(name)
    return name.encode()


async def test_the_same_picture_asked_for_again_is_not_drawn_again() -> None:
    thread = ThreadDrawer()
    for name in ("a", "b", "a", "a", "b"):
        assert await thread.draw(image(partial(counted, name))) == name.encode()
    assert DRAWN == ["a", "b"]
    process = ProcessDrawer()
    try:
        calendar = CalendarRequest(2026, 7, frozenset({1}), 2, "July 2026", WEEKDAYS)
        first = await process.draw(image(partial(draw_calendar, calendar)))
        assert await process.draw(image(partial(draw_calendar, calendar))) is first
        other = CalendarRequest(2026, 7, frozenset({1, 2}), 2, "July 2026", WEEKDAYS)
        assert await process.draw(image(partial(draw_calendar, other))) != first
    finally:
        process.close()


class BrokenDrawer(Drawer):
    async def _draw(self, image: PendingImage) -> bytes:
        raise RuntimeError("no pictures today")


async def test_a_picture_that_cannot_be_drawn_leaves_the_words(
        engine: Engine, chat: ConsoleChat, caplog: pytest.LogCaptureFixture) -> None:
    engine.drawer = BrokenDrawer()
    await onboard_in_console(chat)
    with caplog.at_level(logging.ERROR, logger="bot.engine"):
        reply = await chat.send("/progress")
    assert "a picture could not be drawn" in caplog.text
    assert [d for m in reply.messages for d in m.documents] == []
    assert "Nothing is marked for" in texts(reply) or "You practised on" in texts(reply)
    assert "something went wrong" not in texts(reply).lower()
    assert "send your last message again" not in texts(reply)


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
async def test_the_bots_drawing_process_ends_when_the_bot_is_killed(
    fake: FakeTelegram, bot: BotProcess  # noqa: F811 - the fixtures imported above
) -> None:
    assert bot.process is not None
    assert children_of(bot.process.pid) == set(), "no drawing process before a picture"
    user = fake.user(user_id=5060)
    await onboard(user)
    await user.send("/progress")
    replies = await user.replies()
    assert any(m.kind == "photo" and m.bytes and m.bytes.startswith(b"\x89PNG")
               for m in replies)
    children = children_of(bot.process.pid)
    assert children, "the picture was drawn in a child process"
    await bot.kill()
    await wait_for(lambda: not any(alive(child) for child in children),
                   "the drawing process to end with the bot", timeout=20)


class SlowDrawer(Drawer):
    """Draws after a moment, counting what it was asked to draw; fails while told to."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.failing = False

    async def _draw(self, image: PendingImage) -> bytes:
        name = image.draw.args[0]  # type: ignore[attr-defined]
        self.asked.append(name)
        await asyncio.sleep(0.05)
        if self.failing:
            raise RuntimeError("no pictures today")
        return name.encode()


async def test_a_picture_asked_for_while_it_is_drawn_is_drawn_once() -> None:
    drawer = SlowDrawer()
    same = [drawer.draw(image(partial(counted, "calendar"))) for _ in range(50)]
    other = drawer.draw(image(partial(counted, "profile")))
    pictures = await asyncio.gather(*same, other)
    assert pictures == [b"calendar"] * 50 + [b"profile"]
    assert sorted(drawer.asked) == ["calendar", "profile"]
    assert await drawer.draw(image(partial(counted, "calendar"))) == b"calendar"
    assert sorted(drawer.asked) == ["calendar", "profile"]  # kept, not drawn again


async def test_one_person_giving_up_on_a_picture_leaves_it_to_the_others() -> None:
    drawer = SlowDrawer()
    first = asyncio.ensure_future(drawer.draw(image(partial(counted, "calendar"))))
    second = asyncio.ensure_future(drawer.draw(image(partial(counted, "calendar"))))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == b"calendar"
    assert first.cancelled()
    assert drawer.asked == ["calendar"]


async def test_a_picture_that_failed_is_tried_again_next_time() -> None:
    drawer = SlowDrawer()
    drawer.failing = True
    failed = await asyncio.gather(*(drawer.draw(image(partial(counted, "calendar")))
                                    for _ in range(3)), return_exceptions=True)
    assert all(isinstance(error, RuntimeError) for error in failed)
    assert drawer.asked == ["calendar"]  # one drawing, its failure shared
    drawer.failing = False
    assert await drawer.draw(image(partial(counted, "calendar"))) == b"calendar"
    assert drawer.asked == ["calendar", "calendar"]
