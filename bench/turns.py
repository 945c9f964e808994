"""Turns per second: the real python-telegram-bot Application, offline, with and without Haven.

Run: .venv/bin/python bench/turns.py [--updates N] [--rate R] [--postgres URL] [--json PATH]

Synthetic people walk Haven's real flows by typing (/start, onboarding, /aware and its five
questions, /progress, /menu, /aware again...). Each update is a real telegram.Update put on
the started Application's update_queue, exactly where the Updater puts what getUpdates
returns; the Application's own update fetcher hands it to the update processor. Every Bot
API call is answered in memory by bench/offline_api.py. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import json
import logging
import os
import platform
import pstats
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any

from memory_store import MemoryRepository
from offline_api import BOT_TOKEN, OfflineBotAPI
from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.adapters.telegram import PerChatUpdateProcessor, build_application
from bot.app import built, load_content, open_settings_repository
from bot.drawing import ProcessDrawer
from bot.engine import Engine, EngineConfig
from bot.flood import FloodGuard
from bot.settings import load_settings

App = Application[Any, Any, Any, Any, Any, Any]
USERS = 200  # people in each measured phase (--users)
WARMUP_USERS = 40
MARKER_GROUP = 1_000_000  # runs after every real handler of the update, in the same task
TARGET_RATIO = 0.7
TARGET_SQLITE_RATE = 400.0
TARGET_SQLITE_P99_MS = 10.0
TARGET_POSTGRES_RATE = 800.0
TARGET_POSTGRES_P99_MS = 25.0

ONBOARDING = ["/start", "Sounds good", "Yes, keep them", "Partner", "Skip", "Not for now"]
FLOW_STEPS = 9  # /aware, its first button, five answers, /progress, /menu
ANSWERS = [
    [  # triggers
        "When my partner goes quiet in the middle of an argument, my chest tightens and I start "
        "talking faster to fill the silence.",
        "When plans change at the last minute I feel a jolt of panic, and I get short with "
        "whoever is nearest.",
    ],
    [  # past
        "Growing up, silence at home usually meant someone was angry, so I learned to smooth "
        "things over before anyone said a word.",
        "My dad's moods decided how evenings went, and I still scan people's faces for trouble.",
    ],
    [  # boundaries
        "I need a few minutes alone after work before I can really listen to anyone.",
        "I need to be asked before my plans are made for me, even small ones like dinner.",
    ],
    [  # stress
        "I go quiet and busy myself with chores, and I tell everyone I'm fine when I'm not.",
        "I over-explain and keep talking, trying to fix it right away instead of pausing.",
    ],
    [  # impact
        "My partner says that when I shut down she feels locked out and alone with the problem.",
        "People close to me feel rushed, as if their feelings have to be sorted out on my clock.",
    ],
]


def script(length: int, rng: random.Random) -> list[str]:
    """What one person types: onboarding, then /aware with five answers, /progress, /menu..."""
    typed = list(ONBOARDING)
    while len(typed) < length:
        typed += ["/aware", "Let's begin", *(rng.choice(choices) for choices in ANSWERS),
                  "/progress", "/menu"]
    return typed[:length]


def scripts(first_chat: int, users: int, total: int, seed: int) -> dict[int, list[str]]:
    """`total` updates shared between `users` people (chat ids from `first_chat`)."""
    rng = random.Random(seed)
    each, extra = divmod(total, users)
    return {first_chat + i: script(each + (i < extra), rng) for i in range(users)}


def staggered(by_chat: dict[int, list[str]], seed: int) -> dict[int, int]:
    """Where each person is when the out-of-step phase starts: a random point of onboarding
    and their first flow (the messages before it are sent unmeasured)."""
    rng = random.Random(seed)
    return {chat: rng.randrange(len(ONBOARDING) + FLOW_STEPS) for chat in by_chat}


def interleaved(by_chat: dict[int, list[str]]) -> list[tuple[int, str]]:
    """Everyone's first message, then everyone's second... (one chat's updates stay in order)."""
    rounds = itertools.zip_longest(*by_chat.values())
    chats = list(by_chat)
    return [(chat, typed) for row in rounds for chat, typed in zip(chats, row, strict=True)
            if typed is not None]


# ---- measuring ------------------------------------------------------------------------------


@dataclass
class _Pending:
    enqueued: float
    done: asyncio.Future[None]
    step: str  # what kind of message it was (`step_of`)


def step_of(typed: str) -> str:
    """A command by its name, a long text as an answer, a short one as a button's label."""
    if typed.startswith("/"):
        return typed.split(maxsplit=1)[0]
    return "answer" if len(typed) > 40 else "button"


@dataclass
class Phase:
    updates: int = 0
    wall_s: float = 0.0
    updates_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    messages_per_update: float = 0.0  # sendMessage calls per update
    cpu_ms_per_update: float = 0.0  # this process's CPU time (all threads) per update
    silent: int = 0  # updates that sent no message: must stay 0
    p99_ms_by_step: dict[str, float] = field(default_factory=dict)  # by `step_of`
    cut_short: bool = False  # the time limit ended the phase before all its updates
    overloaded: bool = False  # paced only: arrivals outran the bot, so they were stopped


class Tracker:
    """Which sendMessage calls belong to which update.

    Updates of one chat are handled strictly one after another (PerChatUpdateProcessor),
    and a marker handler in the last handler group fires when an update is done, so the
    messages sent to a chat since its previous update finished are this update's.
    """

    def __init__(self) -> None:
        self.pending: dict[int, deque[_Pending]] = {}
        self.last_send: dict[int, float] = {}
        self.sends: Counter[int] = Counter()
        self.sends_when_done: Counter[int] = Counter()
        self.latencies: list[float] = []
        self.by_step: dict[str, list[float]] = {}
        self.silent = 0
        self.first = self.last = 0.0
        self.elapsed = 0.0  # set when the phase ran in slices: their time added up
        self.cpu = 0.0  # process CPU seconds over the slices
        self.cut_short = self.overloaded = False

    @property
    def finished_count(self) -> int:
        return len(self.latencies) + self.silent

    def enqueued(self, chat_id: int, typed: str) -> asyncio.Future[None]:
        now = perf_counter()
        if not self.first:
            self.first = now
        future = asyncio.get_running_loop().create_future()
        self.pending.setdefault(chat_id, deque()).append(_Pending(now, future, step_of(typed)))
        return future

    def sent(self, chat_id: int) -> None:
        self.last_send[chat_id] = perf_counter()
        self.sends[chat_id] += 1

    def finished(self, chat_id: int) -> None:
        queue = self.pending.get(chat_id)
        if not queue:
            return  # not one of ours
        item = queue.popleft()
        self.last = perf_counter()
        if self.sends[chat_id] > self.sends_when_done[chat_id]:
            self.latencies.append(self.last_send[chat_id] - item.enqueued)
            self.by_step.setdefault(item.step, []).append(self.latencies[-1])
        else:
            self.silent += 1
        self.sends_when_done[chat_id] = self.sends[chat_id]
        item.done.set_result(None)

    def result(self) -> Phase:
        ordered = sorted(self.latencies)
        count = len(ordered) + self.silent
        wall = self.elapsed or self.last - self.first
        at = partial(nearest_rank_ms, ordered)
        return Phase(updates=count, wall_s=wall, updates_per_s=count / wall if wall else 0.0,
                     p50_ms=at(0.50), p99_ms=at(0.99), max_ms=at(1.0),
                     messages_per_update=sum(self.sends.values()) / count if count else 0.0,
                     cpu_ms_per_update=self.cpu * 1e3 / count if count else 0.0,
                     silent=self.silent, cut_short=self.cut_short,
                     overloaded=self.overloaded,
                     p99_ms_by_step={step: nearest_rank_ms(sorted(latencies), 0.99)
                                     for step, latencies in self.by_step.items()})


def nearest_rank_ms(ordered: list[float], fraction: float) -> float:
    """The `fraction` quantile of sorted latencies in seconds, by nearest rank, in ms."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))] * 1e3


class Probe:
    """What the offline API and the marker handler report to: the current phase's tracker."""

    def __init__(self) -> None:
        self.tracker = Tracker()

    def sent(self, chat_id: int) -> None:
        self.tracker.sent(chat_id)

    async def marker(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_chat is not None:
            self.tracker.finished(update.effective_chat.id)


class Updates:
    """Telegram updates as getUpdates would deliver them, parsed by Update.de_json."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.update_ids = itertools.count(1)
        self.message_ids: Counter[int] = Counter()

    def make(self, chat_id: int, typed: str) -> Update:
        self.message_ids[chat_id] += 1
        person = {"id": chat_id, "is_bot": False, "first_name": "Sam", "language_code": "en"}
        message: dict[str, Any] = {
            "message_id": self.message_ids[chat_id], "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Sam"},
            "from": person, "text": typed,
        }
        if typed.startswith("/"):
            command = typed.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return Update.de_json({"update_id": next(self.update_ids), "message": message},
                              self.app.bot)

    async def put(self, tracker: Tracker, chat_id: int, typed: str) -> asyncio.Future[None]:
        update = self.make(chat_id, typed)
        done = tracker.enqueued(chat_id, typed)
        await self.app.update_queue.put(update)
        return done


async def closed_loop(updates: Updates, probe: Probe, by_chat: dict[int, list[str]],
                      seconds: float, tracker: Tracker | None = None) -> Phase:
    """Everyone at once; each person sends their next message as soon as the reply arrives.

    Nobody starts a new message after `seconds`, so a slow configuration is measured on
    fewer updates instead of running for minutes. With `tracker`, this is one slice of a
    longer phase: the slice's updates and time are added to it.
    """
    probe.tracker = tracker = tracker or Tracker()
    started, cpu_started = perf_counter(), time.process_time()
    deadline = started + seconds

    async def person(chat_id: int, typed: list[str]) -> None:
        for text in typed:
            if perf_counter() > deadline:
                tracker.cut_short = True
                return
            await await_done(await updates.put(tracker, chat_id, text))

    await asyncio.gather(*(person(chat, typed) for chat, typed in by_chat.items()))
    tracker.elapsed += perf_counter() - started
    tracker.cpu += time.process_time() - cpu_started
    return tracker.result()


async def arrivals(rate: float, seconds: float, rng: random.Random,
                   tracker: Tracker) -> AsyncIterator[int]:
    """0, 1, 2... each at its arrival time: `rate` per second on average (Poisson), until
    `seconds` have passed (the tracker's phase is then cut short)."""
    start = perf_counter()
    due = 0.0
    for count in itertools.count():
        due += rng.expovariate(rate)
        delay = start + due - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if perf_counter() - start > seconds:
            tracker.cut_short = True
            return
        yield count


async def paced(updates: Updates, probe: Probe, by_chat: dict[int, list[str]], rate: float,
                seconds: float, seed: int) -> Phase:
    """Open loop: updates arrive at `rate` per second on average (Poisson), whatever happens.

    Arrivals stop after `seconds`, or once more than a second's worth of them is waiting
    (the bot is not keeping up: the phase is marked overloaded; its latencies stand).
    """
    probe.tracker = tracker = Tracker()
    futures: list[asyncio.Future[None]] = []
    in_order = interleaved(by_chat)
    async for count in arrivals(rate, seconds, random.Random(seed), tracker):
        if count == len(in_order):
            break
        chat_id, typed = in_order[count]
        if len(futures) - tracker.finished_count > max(50.0, rate):
            tracker.overloaded = True
            break
        futures.append(await updates.put(tracker, chat_id, typed))
    for future in futures:
        await await_done(future)
    return tracker.result()


async def paced_out_of_step(updates: Updates, probe: Probe, by_chat: dict[int, list[str]],
                            start_at: dict[int, int], rate: float, seconds: float,
                            total: int, seed: int) -> Phase:
    """Open loop with people out of step, as independent people are: `total` updates
    arrive at `rate` per second on average (Poisson), each from someone picked at random
    among those not waiting for a reply, who sends the next message of their script (from
    `start_at`, where an unmeasured prelude left them).

    Arrivals stop after `seconds`, or once half the people are waiting for a reply (the
    bot is not keeping up: the phase is marked overloaded; its latencies stand).
    """
    probe.tracker = tracker = Tracker()
    rng = random.Random(seed)
    chats = list(by_chat)
    position = dict(start_at)
    waiting: set[int] = set()
    futures: list[asyncio.Future[None]] = []
    async for count in arrivals(rate, seconds, rng, tracker):
        if count == total:
            break
        if len(waiting) > len(chats) // 2:
            tracker.overloaded = True
            break
        chat = rng.choice(chats)
        while chat in waiting:
            chat = rng.choice(chats)
        typed = by_chat[chat][position[chat]]
        position[chat] += 1
        waiting.add(chat)
        future = await updates.put(tracker, chat, typed)
        future.add_done_callback(partial(_replied, waiting, chat))
        futures.append(future)
    for future in futures:
        await await_done(future)
    return tracker.result()


def _replied(waiting: set[int], chat: int, _done: asyncio.Future[None]) -> None:
    waiting.discard(chat)


async def await_done(future: asyncio.Future[None]) -> None:
    await asyncio.wait_for(future, timeout=60)


# ---- the configurations ---------------------------------------------------------------------


async def reply_ok(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    await update.message.reply_text("ok")


def bare_application(api: OfflineBotAPI) -> App:
    application = (
        ApplicationBuilder().token(BOT_TOKEN).request(api).get_updates_request(api)
        .concurrent_updates(PerChatUpdateProcessor()).build()
    )
    application.add_handler(MessageHandler(filters.ALL, reply_ok))
    return application


class NoCrisisCheck:
    """Stands in for the crisis detector, to show what that check costs per update."""

    def detect(self, text: str) -> None:
        return None


def haven_application(api: OfflineBotAPI, repository: Any, crisis_check: bool = True) -> App:
    settings = load_settings(telegram_bot_token=BOT_TOKEN)
    content = load_content(settings.haven_dialogs_dir, settings.haven_prompts_dir,
                           settings.haven_default_locale)
    # Simulated people answer the instant a reply lands, far faster than anyone types, so
    # per-person flood control is set out of the way (its cost per update is still paid).
    engine = Engine(content.flows, content.machines, content.renderer, repository,
                    EngineConfig(max_answer_chars=settings.haven_max_answer_chars),
                    flood=FloodGuard(burst=10**9),
                    detector=None if crisis_check else NoCrisisCheck(),
                    drawer=ProcessDrawer())  # as bot.app.build_engine draws pictures
    return build_application(settings, engine, rate_limited=False, request=api)


async def open_sql(url: str, data_dir: str) -> Any:
    """Haven's own repository; `data_dir` keeps anything it writes (e.g. a key file) temporary."""
    settings = load_settings(database_url=url, telegram_bot_token=BOT_TOKEN,
                             haven_data_dir=data_dir)
    return await open_settings_repository(settings)


@asynccontextmanager
async def scratch_postgres(admin_url: str) -> AsyncIterator[str]:
    """A new, empty database haven_bench_<random> on the server, dropped afterwards."""
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"haven_bench_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    try:
        yield admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False)
    finally:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


@dataclass
class Outcome:
    key: str
    label: str
    saturated: Phase
    paced: Phase  # people out of step: the latency target is judged here
    lockstep: Phase  # everyone's first message, then everyone's second...
    calls: dict[str, int] = field(default_factory=dict)
    trouble: dict[str, int] = field(default_factory=dict)


class Rig:
    """One configuration's started Application, its saturated phase run a slice at a time."""

    def __init__(self, key: str, label: str, build: Callable[[OfflineBotAPI], App]) -> None:
        self.key, self.label = key, label
        self.probe = Probe()
        self.api = OfflineBotAPI(on_send=self.probe.sent)
        self.app = build(self.api)
        self.app.add_handler(TypeHandler(Update, self.probe.marker), group=MARKER_GROUP)
        self.updates = Updates(self.app)
        self.saturated = Tracker()
        self.profiler: cProfile.Profile | None = None
        self.paced = self.lockstep = Phase()

    async def start(self, args: argparse.Namespace) -> None:
        """What run_polling does, minus the polling (the Updater would only feed
        update_queue), then the unmeasured warm-up."""
        await self.app.initialize()
        if self.app.post_init:
            await self.app.post_init(self.app)
        await self.app.start()
        await closed_loop(self.updates, self.probe,
                          scripts(1_000_000, WARMUP_USERS, args.warmup, 1), args.max_seconds)
        if args.profile == self.key:
            self.profiler = cProfile.Profile()

    async def saturated_slice(self, load: dict[int, list[str]], seconds: float) -> None:
        """The next few messages of everyone's script, added to the saturated phase."""
        if self.saturated.elapsed >= seconds:
            self.saturated.cut_short = True
            return
        if self.profiler:
            self.profiler.enable()
        await closed_loop(self.updates, self.probe, load, seconds - self.saturated.elapsed,
                          self.saturated)
        if self.profiler:
            self.profiler.disable()

    async def paced_phases(self, args: argparse.Namespace) -> None:
        """Lock-step, then out of step (each with people of its own)."""
        rate = offered_rate(self.key, args)
        load = scripts(3_000_000, args.users, args.updates, 3)
        self.lockstep = await paced(self.updates, self.probe, load, rate, args.max_seconds, 4)
        # Long enough for anyone's share of the phase, picked at random as they are.
        length = len(ONBOARDING) + FLOW_STEPS + 6 * args.updates // args.users + 30
        load = scripts(4_000_000, args.users, length * args.users, 5)
        start_at = staggered(load, 6)
        await closed_loop(self.updates, self.probe,
                          {chat: typed[:start_at[chat]] for chat, typed in load.items()},
                          args.max_seconds)
        self.paced = await paced_out_of_step(self.updates, self.probe, load, start_at, rate,
                                             args.max_seconds, args.updates, 7)

    async def stop(self) -> None:
        await self.app.stop()
        if self.app.post_stop:  # as run_polling does: stops the scheduler and the heartbeat
            await self.app.post_stop(self.app)
        await self.app.shutdown()
        if self.app.post_shutdown:
            await self.app.post_shutdown(self.app)

    def outcome(self) -> Outcome:
        if self.profiler:
            print_profile(self.profiler, self.key)
        return Outcome(self.key, self.label, self.saturated.result(), self.paced, self.lockstep,
                       dict(self.api.calls), dict(self.api.trouble))


def slices(by_chat: dict[int, list[str]], size: int) -> list[dict[int, list[str]]]:
    """Everyone's script cut into consecutive pieces of `size` messages."""
    longest = max(len(typed) for typed in by_chat.values())
    return [{chat: typed[start:start + size] for chat, typed in by_chat.items()
             if typed[start:start + size]} for start in range(0, longest, size)]


async def measure(rigs: list[Rig], args: argparse.Namespace) -> list[Outcome]:
    """The configurations started at once; their saturated phases then run in slices of a
    few messages per person, taking turns configuration by configuration. A shared
    machine's speed drifts over seconds (it was seen to halve and recover), and slices
    a fraction of a second long, side by side, meet the same drift in every
    configuration, so the ratios hold where whole phases run one after another did not."""
    # As `python -m bot` does once built: start-up's objects are frozen out of collection.
    built()
    started: list[Rig] = []
    try:
        for rig in rigs:
            await rig.start(args)
            started.append(rig)
        # The same people and words for every configuration.
        for load in slices(scripts(2_000_000, args.users, args.updates, 2), args.slice):
            for rig in rigs:
                await rig.saturated_slice(load, args.max_seconds)
        for rig in rigs:
            await rig.paced_phases(args)
    finally:
        for rig in reversed(started):
            await rig.stop()
    return [rig.outcome() for rig in rigs]


def print_profile(profiler: cProfile.Profile, key: str) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    path = Path(tempfile.gettempdir()) / f"haven-bench-{key}.pstats"
    stats.dump_stats(path)
    print(f"\n==== profile of {key}, saturated phase (full stats in {path}) ====")
    print(out.getvalue())


async def run_all(args: argparse.Namespace) -> list[Outcome]:
    """The bare handler and Haven without a database side by side (their ratio is the
    target); then each database configuration on its own, so that its objects, tasks and
    connections do not weigh on the others."""
    together = [Rig("bare", "bare PTB, reply 'ok'", bare_application)]
    if "memory" in args.only:
        together.append(Rig("memory", "Haven, no database",
                            lambda api: haven_application(api, MemoryRepository())))
    if "memory-no-crisis" in args.only:
        together.append(Rig("memory-no-crisis", "  ...without crisis check",
                            lambda api: haven_application(api, MemoryRepository(),
                                                          crisis_check=False)))
    outcomes = await measure(together, args)
    if "sqlite" in args.only:
        with tempfile.TemporaryDirectory(prefix="haven-bench-") as tmp:
            sqlite = await open_sql(f"sqlite:///{tmp}/bench.sqlite3", tmp)
            outcomes += await measure([Rig("sqlite", "Haven, SQLite",
                                           lambda api: haven_application(api, sqlite))], args)
    if args.postgres and "postgres" in args.only:
        with tempfile.TemporaryDirectory(prefix="haven-bench-") as tmp:
            async with scratch_postgres(args.postgres) as url:
                postgres = await open_sql(url, tmp)
                outcomes += await measure([Rig("postgres", "Haven, PostgreSQL",
                                               lambda api: haven_application(api, postgres))],
                                          args)
    return outcomes


# ---- reporting --------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    passed: bool
    detail: str


def offered_rate(key: str, args: argparse.Namespace) -> float:
    """Each database's paced phase is offered the throughput its target names."""
    return float(args.postgres_rate if key == "postgres" else args.rate)


def database_targets(outcome: Outcome, name: str, target_rate: float, target_p99_ms: float,
                     rate: float) -> list[Target]:
    """Throughput (saturated) and p99 latency (paced, at `rate` offered) against targets."""
    speed = outcome.saturated.updates_per_s
    p99 = outcome.paced.p99_ms
    detail = f"p99 {p99:.1f} ms at {rate:.0f} updates/s offered (p50 {outcome.paced.p50_ms:.1f} ms)"
    if outcome.paced.overloaded or (p99 > target_p99_ms and speed < rate):
        detail += f"; it cannot keep up with {rate:.0f}/s, so updates queue"
    if rate < target_rate:
        detail += f"; note: offered load is below the {target_rate:.0f}/s target"
    return [Target(f"Haven on {name} >= {target_rate:.0f} updates/s", speed >= target_rate,
                   f"{speed:.0f} updates/s"),
            Target(f"Haven on {name} p99 <= {target_p99_ms:.0f} ms", p99 <= target_p99_ms,
                   detail)]


def targets(outcomes: list[Outcome], rates: dict[str, float]) -> list[Target]:
    by_key = {outcome.key: outcome for outcome in outcomes}
    bare = by_key["bare"]
    result = []
    if "memory" in by_key:
        speed, bare_speed = by_key["memory"].saturated.updates_per_s, bare.saturated.updates_per_s
        result.append(Target(
            f"Haven without database >= {TARGET_RATIO}x bare throughput",
            speed >= TARGET_RATIO * bare_speed,
            f"{speed / bare_speed:.2f}x ({speed:.0f} vs {bare_speed:.0f} updates/s)"))
    if "sqlite" in by_key:
        result += database_targets(by_key["sqlite"], "SQLite", TARGET_SQLITE_RATE,
                                   TARGET_SQLITE_P99_MS, rates["sqlite"])
    if "postgres" in by_key:
        result += database_targets(by_key["postgres"], "PostgreSQL", TARGET_POSTGRES_RATE,
                                   TARGET_POSTGRES_P99_MS, rates["postgres"])
    for outcome in outcomes:
        problems = dict(outcome.trouble)
        silent = sum(phase.silent for phase in (outcome.saturated, outcome.paced,
                                                outcome.lockstep))
        if silent:
            problems["updates without a reply"] = silent
        if problems:
            result.append(Target(f"{outcome.label}: every turn went as scripted", False,
                                 ", ".join(f"{count} {kind}" for kind, count in problems.items())))
    return result


def report(outcomes: list[Outcome], args: argparse.Namespace, started: str) -> list[Target]:
    print(f"Haven turn benchmark, {started}")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{os.cpu_count()} CPUs, {platform.platform()}")
    print(f"Up to {args.updates} updates per phase (at most {args.max_seconds:.0f} s) from "
          f"{args.users} people, after {args.warmup} warm-up updates; fed to the update_queue "
          "of a started Application with PerChatUpdateProcessor(256)")
    print(f"Saturated phases in slices of {args.slice} messages a person, the configurations "
          "taking turns\n")
    head = ("", f"saturated: closed loop, {args.users} people",
            f"paced, out of step: {args.rate:.0f}/s offered (PostgreSQL "
            f"{args.postgres_rate:.0f}/s)")
    print(f"{head[0]:<24}{head[1]:<50}{head[2]}")
    columns = ("configuration", "updates/s", "vs bare", "p50 ms", "p99 ms", "CPU ms",
               "updates/s", "p50 ms", "p99 ms", "max ms", "msgs/update")
    print("{:<24}{:>10}{:>9}{:>9}{:>9}{:>8}     {:>10}{:>9}{:>9}{:>9}{:>13}".format(*columns))
    bare = outcomes[0].saturated.updates_per_s
    for outcome in outcomes:
        s, p = outcome.saturated, outcome.paced
        print(f"{outcome.label:<24}{s.updates_per_s:>10.0f}{s.updates_per_s / bare:>8.2f}x"
              f"{s.p50_ms:>9.1f}{s.p99_ms:>9.1f}{s.cpu_ms_per_update:>8.3f}"
              f"     {p.updates_per_s:>10.0f}{p.p50_ms:>9.2f}"
              f"{p.p99_ms:>9.2f}{p.max_ms:>9.1f}{s.messages_per_update:>13.2f}")
    for outcome in outcomes:
        phases = (("saturated", outcome.saturated), ("paced out-of-step", outcome.paced),
                  ("lock-step", outcome.lockstep))
        for name, phase in phases:
            if phase.overloaded:
                print(f"note: {outcome.label}: {name} phase overloaded (arrivals outran the "
                      f"bot), arrivals stopped after {phase.updates} updates")
            elif phase.cut_short:
                print(f"note: {outcome.label}: {name} phase hit the time limit after "
                      f"{phase.updates} updates")
    print("\nLock-step, at the same rates: everyone's first message, then everyone's second...,"
          " so the\nheavier steps (a flow's end, /progress) arrive together. Shown, not judged.")
    print("{:<24}{:>10}{:>9}{:>9}{:>9}   {}".format(
        "configuration", "updates/s", "p50 ms", "p99 ms", "max ms",
        "p99 ms by step, the slowest first"))
    for outcome in outcomes:
        p = outcome.lockstep
        steps = sorted(p.p99_ms_by_step.items(), key=lambda item: -item[1])
        print(f"{outcome.label:<24}{p.updates_per_s:>10.0f}{p.p50_ms:>9.2f}{p.p99_ms:>9.2f}"
              f"{p.max_ms:>9.1f}   " + ", ".join(f"{step} {p99:.1f}" for step, p99 in steps[:4]))
    print("\nCPU ms: this process's CPU time (all its threads) per update in the saturated "
          "phase; the database server's is not counted.")
    print("Latency: from update_queue.put to the last sendMessage of that update reaching the "
          "request object.\nSaturated latency is mostly queueing "
          f"({args.users} updates in flight); the p99 target is judged on the paced,\n"
          "out-of-step run: people at random points of their flows, each sending their next "
          "message\nwhen picked at random among those not waiting for a reply.\n")
    found = targets(outcomes, {key: offered_rate(key, args) for key in ("sqlite", "postgres")})
    for target in found:
        print(f"[{'PASS' if target.passed else 'FAIL'}] {target.name}: {target.detail}")
    return found


class FirstFew(logging.Filter):
    """Let the first few records of each logger through: one broken turn per update is
    enough to see what is wrong, and the FAIL lines count them all."""

    def __init__(self, limit: int = 3) -> None:
        super().__init__()
        self.limit = limit
        self.seen: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen[record.name] += 1
        return self.seen[record.name] <= self.limit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000, help="updates per measured phase")
    parser.add_argument("--slice", type=int, default=2,
                        help="messages a person sends in each configuration's turn")
    parser.add_argument("--users", type=int, default=USERS, help="people per measured phase")
    parser.add_argument("--warmup", type=int, default=600, help="unmeasured updates first")
    parser.add_argument("--rate", type=float, default=TARGET_SQLITE_RATE,
                        help="offered updates/s in the paced phase")
    parser.add_argument("--postgres-rate", type=float, default=TARGET_POSTGRES_RATE,
                        help="offered updates/s in PostgreSQL's paced phase")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="time limit per phase (a slow configuration does fewer updates)")
    parser.add_argument("--postgres", metavar="URL",
                        help="also run on a scratch database of this PostgreSQL server")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures here")
    parser.add_argument("--only", nargs="+",
                        choices=["memory", "memory-no-crisis", "sqlite", "postgres"],
                        default=["memory", "memory-no-crisis", "sqlite", "postgres"],
                        help="Haven configurations to run (bare always runs)")
    parser.add_argument("--profile", choices=["bare", "memory", "sqlite", "postgres"],
                        help="cProfile this configuration's saturated phase")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(FirstFew())
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    outcomes = asyncio.run(run_all(args))
    found = report(outcomes, args, started)
    if args.json:
        args.json.write_text(json.dumps({
            "date": started, "python": sys.version, "cpus": os.cpu_count(),
            "platform": platform.platform(), "updates_per_phase": args.updates,
            "warmup": args.warmup, "slice": args.slice, "paced_rate": args.rate,
            "postgres_paced_rate": args.postgres_rate,
            "users": args.users,
            "configurations": [asdict(outcome) for outcome in outcomes],
            "targets": [asdict(target) for target in found],
        }, indent=2) + "\n")
    return 0 if all(target.passed for target in found) else 1


if __name__ == "__main__":
    sys.exit(main())
