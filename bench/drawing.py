"""How much drawing a chart holds up the event loop: in a thread, or in a child process.

Run: .venv/bin/python bench/drawing.py [--charts N] [--rate PER_SECOND]

A ticker on the event loop asks to wake every millisecond and notes how late each wake-up
is (the lag every other person's turn would feel), while `--charts` month calendars
(bot.charts, as /progress draws them) are drawn at `--rate` a second, first through
`ThreadDrawer`, then through `ProcessDrawer` (whose child is started and warmed first, as
it is after a bot's first picture). Prints the lag's p50, p99 and maximum for both, side by
side, and the resident memory of the bot's process and of the drawing process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.charts import CalendarRequest, draw_calendar  # noqa: E402
from bot.drawing import Drawer, ProcessDrawer, ThreadDrawer  # noqa: E402
from bot.messages import PendingImage  # noqa: E402

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
TICK = 0.001


def calendar(day: int) -> PendingImage:
    request = CalendarRequest(2026, 6, frozenset({1 + day % 28, 5, 9}), 14, "June 2026",
                              WEEKDAYS)
    return PendingImage("practice.png", partial(draw_calendar, request), 0)


def where() -> bytes:
    return str(os.getpid()).encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def lag_while_drawing(drawer: Drawer, charts: int, rate: float) -> list[float]:
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            began = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append(time.perf_counter() - began - TICK)

    ticking = asyncio.create_task(ticker())
    for index in range(charts):
        began = time.perf_counter()
        await drawer.draw(calendar(index))
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - began)))
    done.set()
    await ticking
    return sorted(lags)


def summary(lags: list[float]) -> tuple[float, float, float]:
    def at(share: float) -> float:
        return lags[min(len(lags) - 1, int(len(lags) * share))] * 1e3

    return at(0.5), at(0.99), lags[-1] * 1e3


async def main(args: argparse.Namespace) -> None:
    thread, process = ThreadDrawer(), ProcessDrawer()
    try:
        await thread.draw(calendar(0))  # matplotlib imported here, once, before measuring
        child = int(await process.draw(PendingImage("pid", where, 0)))
        await process.draw(calendar(0))
        results = {name: summary(await lag_while_drawing(drawer, args.charts, args.rate))
                   for name, drawer in (("thread", thread), ("process", process))}
        child_mb = rss_mb(child)
    finally:
        process.close()
    print(f"Haven drawing benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"{args.charts} month calendars at {args.rate:g} a second; a ticker asks to wake "
          f"every {TICK * 1e3:g} ms and notes how late it wakes (the event loop's lag)\n")
    print(f"{'drawn in':12} {'lag p50 ms':>11} {'p99 ms':>8} {'max ms':>8}")
    for name, (p50, p99, most) in results.items():
        print(f"{name:12} {p50:11.2f} {p99:8.2f} {most:8.1f}")
    thread_p99, process_p99 = results["thread"][1], results["process"][1]
    print(f"\nlag p99, process / thread: {process_p99 / thread_p99:.2f}x; max: "
          f"{results['process'][2] / results['thread'][2]:.2f}x")
    print(f"resident memory: this process {rss_mb(os.getpid()):.0f} MB (matplotlib loaded "
          f"for the thread run), the drawing process {child_mb:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charts", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0, help="charts a second")
    asyncio.run(main(parser.parse_args()))
