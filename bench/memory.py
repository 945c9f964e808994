"""Memory: the bot's resident set with many people stored and 1,000 in the middle of flows.

Run: .venv/bin/python bench/memory.py [--sizes N ...] [--people N] [--arrivals PER_SECOND]
     [--postgres URL] [--serial] [--logs DIR] [--json PATH]

For each size (default 10,000, 50,000 and 100,000 people), a fresh database is filled directly
(setup, not measured: `bench/fanout.py`'s fill, onboarded people with the daily prompt on and
one scheduled row each, postponed to tomorrow). Then the real bot, `python -m bot polling`,
runs as a process against its own fake Telegram Bot API (tests/fake_telegram), and 1,000 of
those people type /aware, press "Let's begin" and answer the first question through real
updates, so that they sit in the middle of the flow. Once the traffic has settled, the
process's VmRSS and VmHWM (peak) are read from /proc. A bare python-telegram-bot bot that
replies "ok" (bench/startup.py) gets the same messages from the same 1,000 people, as the
baseline. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cryptography.fernet import Fernet, MultiFernet
from fanout import CHAT_BASE, build_database
from fanout import DAY as FILL_DAY
from sqlalchemy import Table, func, insert, select, text, update
from startup import (
    TOKEN,
    TimedTelegram,
    bare_command,
    bot_env,
    haven_command,
    proc_status,
    spawn,
    wait_until_polling,
)
from turns import ANSWERS, scratch_postgres

from bot.settings import SEND_RATE, load_settings
from bot.storage.crypto import cipher_from, parse_keys
from bot.storage.models import ScheduledJob, User
from bot.storage.repository import open_repository

if TYPE_CHECKING:
    from tests.fake_telegram import FakeUser

SIZES = [10_000, 50_000, 100_000]
TARGET_PEOPLE = 100_000
TARGET_RSS_MB = 150.0
# "Flat": at most 100 bytes more per person stored, i.e. 10 MB more per 100,000 people.
TARGET_SLOPE_MB_PER_1000 = 0.1
# People starting per second. Haven makes four rate-limited sends a person (the reply to
# /aware; on the press, the keyboard taken away and the first question; the second question):
# 6 a second use 0.82 of the 29.4 a second its rate limiter allows, so replies do not queue.
ARRIVALS = 6.0
BEHIND_S = 5.0  # answers slower than this at p99: the bot did not keep up with the arrivals
SAMPLES = 5  # RSS readings, a second apart, once the traffic has settled
MB = 1e6  # bytes; /proc reports kB of 1,024 bytes


# ---- the database ----------------------------------------------------------------------------


def postpone_dues(database_url: str, cipher: MultiFernet) -> None:
    """Move every due daily prompt forward by whole days, to tomorrow. The fill plans them for
    a day months ago (fanout.DAY), and the scheduler would let 100,000 missed prompts go while
    we measure. (Across a change of daylight saving time a prompt may then be due an hour
    off the person's local time; nobody's is due during the run either way.)"""
    days = (datetime.now(UTC).date() - FILL_DAY).days + 1
    repository = open_repository(database_url, cipher)
    engine = repository.engine  # type: ignore[attr-defined]
    jobs = cast(Table, ScheduledJob.__table__)
    with engine.begin() as connection:  # SQLite's date functions: the fill is always SQLite
        connection.execute(update(jobs).values(
            # in the format SQLAlchemy writes (the fill's times are whole minutes)
            due_at=func.strftime("%Y-%m-%d %H:%M:%S.000000", jobs.c.due_at, f"+{days} days"),
            local_date=func.date(jobs.c.local_date, f"+{days} days")))
    engine.dispose()


def fill_sqlite(data_dir: Path, people: int, key: str, seed: int) -> str:
    """A SQLite file holding `people` people (migrated schema, Fernet-encrypted columns)."""
    data_dir.mkdir()
    database = data_dir / "haven.sqlite3"
    url = f"sqlite:///{database}"
    settings = load_settings(database_url=url, telegram_bot_token=TOKEN,
                             haven_data_dir=data_dir, haven_encryption_keys=key)
    build_database(database, settings, people, 0, seed)
    postpone_dues(url, cipher_from(parse_keys(key)))
    return url


def _aware(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite hands datetimes back without their zone; everything stored is UTC."""
    return {name: value.replace(tzinfo=UTC)
            if isinstance(value, datetime) and value.tzinfo is None else value
            for name, value in row.items()}


async def copy_to_postgres(sqlite_url: str, postgres_url: str, cipher: MultiFernet) -> None:
    """The people and their scheduled rows of a filled SQLite file, into a fresh PostgreSQL
    database (schema by the migrations; encrypted columns encrypted again on the way in)."""
    source = open_repository(sqlite_url, cipher)
    target = open_repository(postgres_url, cipher)
    await target.migrate()
    try:
        for table in (cast(Table, User.__table__), cast(Table, ScheduledJob.__table__)):
            with source.engine.connect() as reading:  # type: ignore[attr-defined]
                rows = [_aware(dict(row._mapping)) for row in reading.execute(select(table))]
            async with target.engine.begin() as connection:  # type: ignore[attr-defined]
                for chunk in range(0, len(rows), 5_000):
                    await connection.execute(insert(table), rows[chunk:chunk + 5_000])
                top = (await connection.execute(select(func.max(table.c.id)))).scalar_one()
                await connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), :top)"),
                    {"top": top})
    finally:
        await target.close()
        await source.close()


# ---- what the people do ----------------------------------------------------------------------


@dataclass
class Step:
    """Something each person does, and how to tell that the bot has answered it."""

    what: str
    act: Callable[[FakeUser], Awaitable[Any]]
    answered: Callable[[FakeUser], bool]


def keyboard_has(label: str) -> Callable[[FakeUser], bool]:
    return lambda user: any(label in row for row in user.last_keyboard() or [])


def haven_steps(answer: str) -> list[Step]:
    """/aware, "Let's begin", the first answer: each person then waits at the second question."""
    return [
        Step("/aware", lambda user: user.send("/aware"), keyboard_has("Let's begin")),
        Step("press Let's begin", lambda user: user.press("Let's begin"), keyboard_has("Skip")),
        Step("an answer", lambda user: user.send(answer), keyboard_has("Skip")),
    ]


def bare_steps(answer: str) -> list[Step]:
    """The same messages, typed (the bare bot has no buttons); each is answered "ok"."""
    def typing(typed: str) -> Callable[[FakeUser], Awaitable[Any]]:
        return lambda user: user.send(typed)

    return [Step(what, typing(typed), lambda user: True)
            for what, typed in (("/aware", "/aware"), ("Let's begin", "Let's begin"),
                                ("an answer", answer))]


@dataclass
class Walker:
    """One person on their way through the steps."""

    user: FakeUser
    step: int = 0
    messages_before: int = 0  # bot messages in the chat before the current step
    acted_at: float = 0.0


@dataclass
class Walked:
    not_answered: dict[str, int]  # per step: people left without a fitting answer
    waits: list[float] = field(default_factory=list)  # seconds from each step to its answer
    stuck: list[str] = field(default_factory=list)  # the chat of one person left unanswered


async def walk(people: list[FakeUser], steps: list[Step], per_second: float,
               timeout: float) -> Walked:  # noqa: ASYNC109
    """Each person takes the steps in turn, the next one as soon as the bot has answered the
    last; a new person starts every 1/per_second seconds (with 0, everyone at once). A person
    whose step gets no fitting answer within `timeout` is left there."""
    walked = Walked({step.what: 0 for step in steps})
    active: list[Walker] = []

    def give_up(walker: Walker) -> None:
        walked.not_answered[steps[walker.step].what] += 1
        if not walked.stuck:
            walked.stuck = [message.describe() for message in walker.user.chat]

    async def act(walker: Walker) -> bool:
        step = steps[walker.step]
        walker.messages_before = len(walker.user.chat)
        walker.acted_at = time.monotonic()
        try:
            await step.act(walker.user)
        except AssertionError:  # the button to press is not there
            give_up(walker)
            return False
        return True

    began = time.monotonic()
    started = 0
    while started < len(people) or active:
        now = time.monotonic()
        due = len(people) if per_second <= 0 else min(len(people),
                                                       int((now - began) * per_second) + 1)
        for user in people[started:due]:
            walker = Walker(user)
            if await act(walker):
                active.append(walker)
        started = max(started, due)
        still: list[Walker] = []
        for walker in active:
            step = steps[walker.step]
            if len(walker.user.chat) > walker.messages_before and step.answered(walker.user):
                walked.waits.append(now - walker.acted_at)
                walker.step += 1
                if walker.step < len(steps) and await act(walker):
                    still.append(walker)
            elif now - walker.acted_at > timeout:
                give_up(walker)
            else:
                still.append(walker)
        active = still
        await asyncio.sleep(0.1)
    return walked


async def quiet(fake: TimedTelegram, seconds: float = 3.0, limit: float = 60.0) -> None:
    """Wait until the bot has made no call but getUpdates for `seconds` (at most `limit`)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        last = max((at for method, at in fake.arrivals if method.lower() != "getupdates"),
                   default=0.0)
        if time.monotonic() - last >= seconds:
            return
        await asyncio.sleep(0.5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- one bot ---------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    label: str
    argv: list[str]
    data_dir: Path
    database_url: str
    stored: int | None  # people in the database (None: the bare bot has none)


@dataclass
class Measured:
    name: str
    label: str
    stored: int | None
    start_s: float = 0.0
    idle_kb: int = 0  # VmRSS once started, before any traffic
    rss_kb: int = 0  # VmRSS once the traffic has settled (median of the samples)
    peak_kb: int = 0  # VmHWM at the end: the largest RSS the process ever had
    anon_kb: int = 0  # RssAnon once settled: the process's own memory, without mapped files
    samples_kb: list[int] = field(default_factory=list)
    traffic_s: float = 0.0
    cpu_s: float = 0.0  # the process's CPU time (user + system) during the traffic
    calls: dict[str, int] = field(default_factory=dict)
    not_answered: dict[str, int] = field(default_factory=dict)
    wait_p50_s: float = 0.0  # from a step to the bot's answer, as seen by the people (0.1 s)
    wait_p99_s: float = 0.0
    stuck: list[str] = field(default_factory=list)  # the chat of one person left unanswered
    refused: list[str] = field(default_factory=list)


async def measure(setup: Setup, key: str, chat_ids: list[int], answer: str,
                  arrivals: float) -> Measured:
    """Start the bot, take a reading, walk the people into the flow, take the readings."""
    result = Measured(setup.name, setup.label, setup.stored)
    steps = haven_steps(answer) if setup.stored is not None else bare_steps(answer)
    fake = TimedTelegram()
    await fake.start()
    try:
        env = bot_env(fake.base_url, setup.data_dir, setup.database_url, key)
        bot = await spawn(setup.argv, env, setup.data_dir / "bot.log")
        try:
            result.start_s = await wait_until_polling(fake, bot, timeout=180)
            await quiet(fake)
            result.idle_kb = proc_status(bot.pid)["VmRSS"]
            people = [fake.user(chat_id, "Sam") for chat_id in chat_ids]
            began, cpu_before = time.monotonic(), cpu_seconds(bot.pid)
            # With everyone at once, replies queue behind the rate limiter, SEND_RATE a second.
            timeout = 120 + (4 * len(people) / SEND_RATE if arrivals <= 0 else 0)
            walked = await walk(people, steps, arrivals, timeout)
            result.not_answered, result.stuck = walked.not_answered, walked.stuck
            if walked.waits:
                cuts = statistics.quantiles(walked.waits, n=100, method="inclusive")
                result.wait_p50_s, result.wait_p99_s = cuts[49], cuts[98]
            result.traffic_s = time.monotonic() - began
            result.cpu_s = cpu_seconds(bot.pid) - cpu_before
            await quiet(fake)
            readings = []
            for _ in range(SAMPLES):
                readings.append(proc_status(bot.pid))
                await asyncio.sleep(1.0)
            result.samples_kb = [reading["VmRSS"] for reading in readings]
            result.rss_kb = int(statistics.median(result.samples_kb))
            result.anon_kb = readings[-1].get("RssAnon", 0)
            result.peak_kb = proc_status(bot.pid)["VmHWM"]
        finally:
            await bot.stop()
        for method, _ in fake.requests:
            result.calls[method] = result.calls.get(method, 0) + 1
        result.refused = [f"{method}: {description}" for method, _, description in fake.errors]
        result.refused += [f"fake Telegram: {error.splitlines()[-1]}"
                           for error in fake.internal_errors]
    finally:
        await fake.stop()
    return result


# ---- report ----------------------------------------------------------------------------------


def mb(kb: int) -> float:
    return kb * 1024 / MB


def slope_per_1000(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of MB against people, per 1,000 people."""
    if len({x for x, _ in points}) < 2:
        return None
    xs = [x / 1000 for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
            / sum((x - mean_x) ** 2 for x in xs))


@dataclass
class Target:
    name: str
    passed: bool
    detail: str


def targets(haven: list[Measured], bare: Measured) -> list[Target]:
    found = []
    points = [(item.stored or 0, mb(item.rss_kb)) for item in haven]
    slope = slope_per_1000(points)
    at_target = next((item for item in haven if item.stored == TARGET_PEOPLE), None)
    if at_target is not None:
        rss = mb(at_target.rss_kb)
        detail = (f"{rss:.1f} MB with {TARGET_PEOPLE:,} people stored ({mb(at_target.peak_kb):.1f}"
                  f" MB at the peak), {rss / mb(bare.rss_kb):.2f}x the bare bot")
    elif slope is not None:
        largest = max(points)
        rss = largest[1] + slope * (TARGET_PEOPLE - largest[0]) / 1000
        detail = (f"{rss:.1f} MB at {TARGET_PEOPLE:,} people, EXTRAPOLATED from the sizes run "
                  "(add 100000 to --sizes to measure it)")
    else:
        rss, detail = float("inf"), f"not measured: add {TARGET_PEOPLE} to --sizes"
    found.append(Target(f"RSS with {TARGET_PEOPLE:,} people stored and the people in flows "
                        f"<= {TARGET_RSS_MB:.0f} MB", rss <= TARGET_RSS_MB, detail))
    if slope is not None:
        found.append(Target(
            f"flat as people grow: slope <= {TARGET_SLOPE_MB_PER_1000} MB per 1,000 people",
            slope <= TARGET_SLOPE_MB_PER_1000,
            f"{slope:+.3f} MB per 1,000 people ({slope * MB / 1000:+.0f} bytes a person; "
            f"least squares over {len(points)} sizes)"))
    for item in [*haven, bare]:
        missed = sum(item.not_answered.values())
        found.append(Target(
            f"[{item.label}] every person was answered at every step, no call refused",
            missed == 0 and not item.refused,
            f"not answered: {item.not_answered}; refused calls: {len(item.refused)}"
            + (f" (first: {item.refused[0]})" if item.refused else "")))
    return found


def print_report(results: list[Measured], bare: Measured, args: argparse.Namespace,
                 database: str, started: str, setup_s: float, load: list[float]) -> None:
    print(f"\nHaven memory benchmark, {started}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}; "
          f"load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"Database: {database}, filled directly in {setup_s:.0f} s (not measured): onboarded "
          "people with consent, focus, country, zone, the daily prompt on and one scheduled "
          "row each, due tomorrow.")
    print(f"Traffic: {args.people:,} of them each type /aware, press \"Let's begin\" and answer "
          "the first question (the bare bot gets the same three messages, typed), each step as "
          "soon as the last was answered; "
          + (f"{args.arrivals:g} people start a second" if args.arrivals > 0
             else "everyone at once")
          + f"; replies are held to {SEND_RATE:g}/s by each bot's rate limiter. "
          + ("One bot at a time." if args.serial else
             "All bots run side by side, each with its own fake Bot API."))
    print("MB = 10^6 bytes. RSS: VmRSS; 'settled' is the median of "
          f"{SAMPLES} readings a second apart once the bot has been quiet for 3 s; peak: VmHWM.")
    header = (f"{'configuration':34} {'people stored':>13} {'start':>7} {'RSS idle':>9} "
              f"{'RSS settled':>12} {'peak':>8} {'ratio to bare':>14} {'traffic':>8} {'CPU':>7} "
              f"{'answer p50/p99':>14}")
    print("\n" + header)
    for item in [bare, *results]:
        stored = f"{item.stored:,}" if item.stored is not None else "-"
        print(f"{item.label:34} {stored:>13} {item.start_s:6.2f}s {mb(item.idle_kb):6.1f} MB "
              f"{mb(item.rss_kb):9.1f} MB {mb(item.peak_kb):5.1f} MB "
              f"{item.rss_kb / bare.rss_kb:13.2f}x {item.traffic_s:7.0f}s {item.cpu_s:6.1f}s "
              f"{item.wait_p50_s:5.1f}/{item.wait_p99_s:4.1f}s")
    for what, pick in (("idle", "idle_kb"), ("settled", "rss_kb"), ("peak", "peak_kb")):
        slope = slope_per_1000([(item.stored or 0, mb(getattr(item, pick))) for item in results])
        if slope is not None:
            print(f"slope of RSS {what} per 1,000 people stored: {slope:+.3f} MB")
    print("start: spawn to first getUpdates" + ("" if args.serial else
          ", all bots starting at once") + "; traffic: first message to last answer; CPU: the "
          "bot's CPU time meanwhile; answer: from a person's step to the bot's answer (0.1 s "
          "resolution).")
    for item in [bare, *results]:
        if args.arrivals > 0 and item.wait_p99_s > BEHIND_S:
            print(f"NOTE: [{item.label}] fell behind the arrivals (answers p50 "
                  f"{item.wait_p50_s:.1f} s, p99 {item.wait_p99_s:.1f} s): its RSS includes "
                  "the backlog. Is the machine busy? Try --serial or fewer --arrivals.")
        if item.stuck:
            print(f"[{item.label}] the chat of one person left unanswered:\n  "
                  + "\n  ".join(item.stuck))


# ---- main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = list(os.getloadavg())
    key = Fernet.generate_key().decode()
    cipher = cipher_from(parse_keys(key))
    sizes = sorted(set(args.sizes))
    rng = random.Random(args.seed)
    answer = rng.choice(ANSWERS[0])
    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="haven-memory-")))
        began = time.monotonic()
        data_dirs = [tmp / f"people-{size}" for size in sizes]
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:  # the fills are CPU-bound
            urls = await asyncio.gather(*(
                loop.run_in_executor(pool, fill_sqlite, data_dir, size, key, args.seed)
                for data_dir, size in zip(data_dirs, sizes, strict=True)))
        setups: list[Setup] = []
        for size, data_dir, url in zip(sizes, data_dirs, urls, strict=True):
            label = f"Haven, SQLite, {size:,} people"
            if args.postgres:
                url_pg = await stack.enter_async_context(scratch_postgres(args.postgres))
                await copy_to_postgres(url, url_pg, cipher)
                url, label = url_pg, f"Haven, PostgreSQL, {size:,} people"
            setups.append(Setup(f"haven_{size}", label, haven_command(), data_dir, url, size))
        setup_s = time.monotonic() - began
        bare_dir = tmp / "bare"
        bare_dir.mkdir()
        bare_setup = Setup("bare", "bare python-telegram-bot", bare_command(), bare_dir,
                           f"sqlite:///{bare_dir / 'unused.sqlite3'}", None)
        # The same people (by chat id) in every configuration: spread over the smallest size.
        chat_ids = [CHAT_BASE + index for index in rng.sample(range(sizes[0]), args.people)]
        everything = [bare_setup, *setups]
        if args.serial:
            measured = [await measure(setup, key, chat_ids, answer, args.arrivals)
                        for setup in everything]
        else:
            measured = list(await asyncio.gather(
                *(measure(setup, key, chat_ids, answer, args.arrivals) for setup in everything)))
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for setup in everything:
                shutil.copyfile(setup.data_dir / "bot.log", args.logs / f"bot-{setup.name}.log")
    bare, results = measured[0], measured[1:]
    database = "PostgreSQL (a scratch database per size)" if args.postgres else \
        "SQLite (a file per size, in a temp directory)"
    print_report(results, bare, args, database, started, setup_s, load)
    found = targets(results, bare)
    print()
    for target in found:
        print(f"[{'PASS' if target.passed else 'FAIL'}] {target.name}: {target.detail}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": started, "python": sys.version, "cpus": os.cpu_count(),
            "platform": platform.platform(), "load_average": [load[0], os.getloadavg()[0]],
            "database": database, "sizes": sizes,
            "people_in_flows": args.people, "arrivals_per_s": args.arrivals,
            "serial": args.serial, "setup_s": setup_s,
            "send_rate": SEND_RATE, "mb": "10^6 bytes",
            "bare": asdict(bare), "haven": [asdict(item) for item in results],
            "slope_mb_per_1000": {
                pick: slope_per_1000([(item.stored or 0, mb(getattr(item, pick)))
                                      for item in results])
                for pick in ("idle_kb", "rss_kb", "peak_kb")},
            "targets": [asdict(target) for target in found],
        }, indent=2) + "\n")
    return 0 if all(target.passed for target in found) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES,
                        help="people in the database, one bot per size (default: %(default)s)")
    parser.add_argument("--people", type=int, default=1000,
                        help="of them, people walked into the middle of a flow")
    parser.add_argument("--arrivals", type=float, default=ARRIVALS, metavar="PER_SECOND",
                        help="people starting their steps per second (default %(default)s: "
                             "Haven's four sends a person then use 0.82 of its rate limit; "
                             "0: everyone at once)")
    parser.add_argument("--postgres", metavar="URL",
                        help="use a scratch PostgreSQL database per size on this server "
                             "(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)")
    parser.add_argument("--serial", action="store_true",
                        help="run the bots one after another instead of side by side "
                             "(about four times as long)")
    parser.add_argument("--logs", metavar="DIR", type=Path,
                        help="copy each bot's output (bot-<configuration>.log) here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not 0 < args.people <= min(args.sizes):
        parser.error("--people must be between 1 and the smallest of --sizes")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
