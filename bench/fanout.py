"""Daily-prompt fan-out: 100,000 people, 7,500 due in one minute, through Haven's real scheduler.

Run: .venv/bin/python bench/fanout.py [--users N] [--peak N] [--limit N ...] [--history DAYS]
     [--paid auto|on|off] [--json PATH]

A fresh SQLite database is filled directly (setup, not measured): people with the daily prompt
on, each with one due `scheduled_jobs` row from `bot.schedule_times.next_daily_due` (and, with
--history, the prompts the peak minute's people were sent on the days before). Then the real
python-telegram-bot Application from `build_application` runs offline, with its real Scheduler
(started by post_init, as in production), its real prompt lane and its real rate limiter
(HavenRateLimiter, an AIORateLimiter), over the peak window; above 30/s with paid broadcasts
on. Every Bot API call is answered in memory by a model of Telegram's limits (a token bucket
that answers 429 with retry_after). A few simulated people write to Haven meanwhile, through
the update queue and Engine.handle, and their reply latency is measured. Time is simulated:
the event loop's clock is real time plus every idle wait, skipped. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import math
import os
import platform
import pstats
import random
import selectors
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

from offline_api import BOT_TOKEN, OfflineBotAPI
from sqlalchemy import insert
from telegram import Update
from telegram._utils.defaultvalue import DEFAULT_NONE
from telegram._utils.types import ODVInput
from telegram.ext import Application, ContextTypes, TypeHandler
from telegram.request import RequestData
from turns import ANSWERS, FirstFew, Updates

from bot.adapters.telegram import build_application
from bot.app import Content, built, load_content, open_settings_repository
from bot.drawing import ProcessDrawer
from bot.engine import Engine, EngineConfig
from bot.flood import FloodGuard
from bot.flows.spec import FOCUS_VALUES
from bot.schedule_times import next_daily_due
from bot.scheduler import SchedulerConfig
from bot.settings import SEND_RATE, TELEGRAM_RATE, Settings, load_settings
from bot.storage.models import ScheduledJob, User
from bot.storage.repository import Repository

App = Application[Any, Any, Any, Any, Any, Any]
PEAK_ZONE = "Europe/London"
PEAK_LOCAL = "08:00"
DAY = date(2026, 6, 2)  # summer time: 08:00 in London is 07:00 UTC
BEFORE_PEAK = timedelta(minutes=2)  # the simulation starts this long before the peak minute
WINDOW_AFTER = timedelta(minutes=10)  # every prompt due up to peak + this must go out
GIVE_UP_AFTER = timedelta(minutes=60)  # ...or the run stops at peak + this, reporting what is left
DELIVERY_WINDOW = timedelta(minutes=5)
CHAT_BASE = 10_000_000  # chat ids of the people in the database
PEOPLE_BASE = 900_000_000  # chat ids of the people writing during the fan-out
MARKER_GROUP = 1_000_000
# What each writer types: today's onboarding (declining the daily prompt), then /aware.
ONBOARDING = ["/start", "Sounds good", "Yes, keep them", "Partner", "new zealand", "Not for now"]
OTHER_ZONES = ("Europe/London", "America/New_York", "Europe/Berlin", "Asia/Kolkata",
               "America/Los_Angeles", "Australia/Sydney", "Asia/Tokyo", "America/Sao_Paulo",
               "Africa/Lagos", "Europe/Paris", "Asia/Singapore", "UTC")
BATCH = SchedulerConfig.batch  # rows per claim
TARGET_PLAN_MS = 100.0
TARGET_RATE_FRACTION = 0.95
TARGET_REPLY_P99_S = 1.0


# ---- simulated time ----------------------------------------------------------------------


class _IdleSkippingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Never sleeps while the loop is idle: a wait for the next timer is added to `skipped`
    instead. While a worker thread is busy (a chart drawn off the loop), waits are real: the
    thread's work takes real time, which the clock must not skip."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0.0
        self.threads_busy = 0

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None or self.threads_busy:  # only real I/O or real time can help
            return super().select(timeout)
        self.skipped += timeout
        return []


class SimulatedLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is real monotonic time plus every idle wait it skipped.

    CPU work (SQL, rendering, PTB) advances the clock by the real time it takes; waiting
    (asyncio.sleep, aiolimiter, retry_after) costs no real time, except while work handed to
    a thread (run_in_executor, asyncio.to_thread: charts) runs, when waits are real. Everything
    that reads loop.time() - aiolimiter, asyncio.sleep, the Telegram model, the engine's
    clock - agrees.
    """

    def __init__(self) -> None:
        self._skipper = _IdleSkippingSelector()
        super().__init__(self._skipper)

    def time(self) -> float:
        return time.monotonic() + self._skipper.skipped

    @property
    def skipped(self) -> float:
        return self._skipper.skipped

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        """As usual, counting the work in flight, so that waits while it runs are real."""
        future = super().run_in_executor(executor, func, *args)
        self._skipper.threads_busy += 1

        def finished(_future: asyncio.Future[Any]) -> None:
            self._skipper.threads_busy -= 1

        future.add_done_callback(finished)
        return future


# ---- Telegram's limits -----------------------------------------------------------------------


class TelegramModel(OfflineBotAPI):
    """OfflineBotAPI behind a token bucket: `limit` messages per second for the whole bot,
    with a burst of one second's worth. A send without a token is answered as Telegram does:
    HTTP 429, "Too Many Requests: retry after N", parameters.retry_after = N (whole seconds,
    at least 1). Only sendMessage/sendPhoto/sendDocument take tokens. `rtt` delays every
    answer."""

    LIMITED = ("sendMessage", "sendDocument", "sendPhoto")

    def __init__(self, limit: float, rtt: float, on_accept: Any) -> None:
        super().__init__()
        self.limit = limit
        self.rtt = rtt
        self.on_accept = on_accept
        self.tokens = limit
        self.last = 0.0
        self.rejected = 0
        self.accepted = 0

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = DEFAULT_NONE,
        write_timeout: ODVInput[float] = DEFAULT_NONE,
        connect_timeout: ODVInput[float] = DEFAULT_NONE,
        pool_timeout: ODVInput[float] = DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        endpoint = url.rsplit("/", 1)[-1]
        loop = asyncio.get_running_loop()
        if self.rtt:
            await asyncio.sleep(self.rtt / 2)  # on the way there
        if endpoint in self.LIMITED:
            now = loop.time()
            self.tokens = min(self.limit, self.tokens + (now - self.last) * self.limit)
            self.last = now
            if self.tokens < 1:
                self.rejected += 1
                retry_after = max(1, math.ceil((1 - self.tokens) / self.limit))
                body = {"ok": False, "error_code": 429,
                        "description": f"Too Many Requests: retry after {retry_after}",
                        "parameters": {"retry_after": retry_after}}
                if self.rtt:
                    await asyncio.sleep(self.rtt / 2)
                return 429, json.dumps(body).encode()
            self.tokens -= 1
            self.accepted += 1
            params = request_data.json_parameters if request_data else {}
            self.on_accept(int(params["chat_id"]), now,
                           params.get("allow_paid_broadcast") == "true")
        if endpoint in ("sendPhoto", "sendDocument"):  # a chart or an export
            self.calls[endpoint] += 1
            params = request_data.json_parameters if request_data else {}
            answer = 200, json.dumps({"ok": True, "result": self._message(params)}).encode()
        else:
            answer = await super().do_request(url, method, request_data, read_timeout,
                                              write_timeout, connect_timeout, pool_timeout)
        if self.rtt:
            await asyncio.sleep(self.rtt / 2)  # and back
        return answer


def writer_script(rng: random.Random) -> list[str]:
    typed = list(ONBOARDING)
    for _ in range(100):
        typed += ["/aware", "Let's begin", *(rng.choice(choices) for choices in ANSWERS),
                  "/progress", "/menu"]
    return typed


# ---- the database ----------------------------------------------------------------------------


@dataclass
class Population:
    start: datetime  # simulated time at which the run starts (UTC)
    peak: datetime  # the peak minute (UTC)
    due: dict[int, datetime]  # chat id -> due time, for everyone
    peak_chats: set[int]
    peak_jobs: set[int]
    setup_s: float = 0.0


def build_database(path: Path, settings: Settings, users: int, peak: int, seed: int,
                   history: int = 0, prompt_ids: list[str] | None = None) -> Population:
    """`users` people with the daily prompt on, `peak` of them at 08:00 in London, the rest at
    random local minutes in a dozen zones (never in the peak minute); one due job each. With
    `history`, each of the peak minute's people also had a prompt (from `prompt_ids`, none
    twice) on each of the `history` days before, as sent rows."""
    started = perf_counter()
    rng = random.Random(seed)
    peak_at, _ = next_daily_due(datetime.combine(DAY, datetime.min.time(), UTC),
                                datetime.strptime(PEAK_LOCAL, "%H:%M").time(), PEAK_ZONE)
    start = peak_at - BEFORE_PEAK
    cache: dict[tuple[str, str], tuple[datetime, date]] = {}

    def due_of(local: str, zone: str) -> tuple[datetime, date]:
        if (local, zone) not in cache:
            cache[(local, zone)] = next_daily_due(
                start, datetime.strptime(local, "%H:%M").time(), zone)
        return cache[(local, zone)]

    user_rows: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    due: dict[int, datetime] = {}
    for index in range(users):
        if index < peak:
            zone, local = PEAK_ZONE, PEAK_LOCAL
        else:
            zone = rng.choice(OTHER_ZONES)
            minute = rng.randrange(24 * 60)
            local = f"{minute // 60:02d}:{minute % 60:02d}"
            if peak_at <= due_of(local, zone)[0] < peak_at + timedelta(minutes=1):
                minute = (minute + 1) % (24 * 60)
                local = f"{minute // 60:02d}:{minute % 60:02d}"
        when, day = due_of(local, zone)
        user_id, chat_id = index + 1, CHAT_BASE + index
        user_rows.append({
            "id": user_id, "chat_id": chat_id, "first_name": "", "language": "en",
            "focus": rng.choice(FOCUS_VALUES), "country": "GB", "timezone": zone,
            "keep_reflections": True, "onboarded": True, "recent_updates": [],
            "daily_enabled": True, "daily_time": local, "paused": False,
            "created_at": start, "updated_at": start,
        })
        job_rows.append({"id": user_id, "user_id": user_id, "kind": "daily", "due_at": when,
                         "local_date": day, "state": "due", "sent_at": None,
                         "claimed_at": None, "prompt_id": None})
        due[chat_id] = when

    for index in range(peak if history else 0):
        user_id = index + 1
        for days_ago, prompt_id in enumerate(rng.sample(prompt_ids or [], history), 1):
            sent = peak_at - timedelta(days=days_ago) + timedelta(seconds=rng.randrange(300))
            job_rows.append({"id": len(job_rows) + 1, "user_id": user_id, "kind": "daily",
                             "due_at": sent,
                             "sent_at": sent, "claimed_at": sent, "prompt_id": prompt_id,
                             "local_date": DAY - timedelta(days=days_ago), "state": "sent"})

    async def create() -> Repository:
        return await open_settings_repository(settings)

    repository = asyncio.run(create())
    engine = repository.engine  # type: ignore[attr-defined]
    with engine.begin() as connection:
        for chunk in range(0, users, 20_000):
            connection.execute(insert(User.__table__), user_rows[chunk:chunk + 20_000])
        for chunk in range(0, len(job_rows), 20_000):
            connection.execute(insert(ScheduledJob.__table__), job_rows[chunk:chunk + 20_000])
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return Population(start=start, peak=peak_at, due=due,
                      peak_chats={CHAT_BASE + i for i in range(peak)},
                      peak_jobs=set(range(1, peak + 1)), setup_s=perf_counter() - started)


# ---- one run ---------------------------------------------------------------------------------


@dataclass
class PlanTimes:
    """Real time of the scheduler's database work, split by what it was for.

    A batch claim (`Engine.claim_batch`) claims the due rows and readies the daily prompts
    among them in one unit of work; the rest go through `Engine.prepare_job`. A batch finish
    (`Engine.finish_batch`) marks the batch's daily prompts sent and plans tomorrow's rows.
    Batch times are counted for the peak minute pro rata to its rows in each batch."""

    claims: int = 0
    claim_s: float = 0.0
    claim_batch_ms: list[float] = field(default_factory=list)
    claimed: int = 0
    peak_claim_s: float = 0.0  # claim + prepare, pro rata to the peak minute's rows
    peak_claimed: int = 0
    prepare_s: float = 0.0  # rows readied one at a time (prepare_job)
    prepared: int = 0
    peak_prepare_s: float = 0.0
    peak_prepared: int = 0
    finish_s: float = 0.0  # finish_batch + finish_job
    finish_batch_ms: list[float] = field(default_factory=list)
    finished: int = 0
    peak_finish_s: float = 0.0
    peak_finished: int = 0
    paid_broadcasts: int = 0  # sends that carried allow_paid_broadcast

    @property
    def peak_rows(self) -> int:
        return self.peak_claimed


@dataclass
class Run:
    limit: float
    lane: float
    rtt_ms: float
    paid_broadcast: bool = False
    simulated_s: float = 0.0
    real_s: float = 0.0
    cpu_s: float = 0.0
    window_prompts: int = 0
    delivered: int = 0
    undelivered: int = 0
    duplicates: int = 0
    peak_rows: int = 0
    plan_ms: float = 0.0  # claim + prepare of the peak minute's rows, real
    finish_ms: float = 0.0  # marking them sent and planning tomorrow's rows, real
    plan: PlanTimes = field(default_factory=PlanTimes)
    backlog_s: float = 0.0
    backlog_prompts: int = 0
    backlog_sends: int = 0
    prompt_rate: float = 0.0
    rate_fraction: float = 0.0
    all_send_fraction: float = 0.0
    burst_send_fraction: float = 0.0  # the same over the whole backlog, first second included
    within_5min: float = 0.0
    peak_within_5min: float = 0.0
    delay_p50_s: float = 0.0
    delay_p99_s: float = 0.0
    delay_max_s: float = 0.0
    rejected_429: int = 0
    replies: int = 0
    silent_replies: int = 0
    reply_p50_s: float = 0.0
    reply_p99_s: float = 0.0
    reply_max_s: float = 0.0
    trouble: dict[str, int] = field(default_factory=dict)
    scheduler_errors: int = 0


def quantile(values: list[float], fraction: float) -> float:
    """Nearest rank; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def run_once(content: Content, population: Population, db: Path, data_dir: Path,
                   args: argparse.Namespace, limit: float, lane: float | None,
                   paid: bool) -> Run:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, SimulatedLoop)
    settings = load_settings(database_url=f"sqlite:///{db}", telegram_bot_token=BOT_TOKEN,
                             haven_data_dir=data_dir, haven_prompt_rate_per_second=lane,
                             haven_paid_broadcast=paid)
    result = Run(limit=limit, lane=settings.prompt_rate, rtt_ms=args.rtt, paid_broadcast=paid)
    repository = await open_settings_repository(settings)
    t0 = loop.time()

    def sim(at: float) -> datetime:
        return population.start + timedelta(seconds=at - t0)

    def clock() -> datetime:
        return sim(loop.time())

    engine = Engine(content.flows, content.machines, content.renderer, repository,
                    EngineConfig(max_answer_chars=settings.haven_max_answer_chars),
                    flood=FloodGuard(settings.haven_flood_burst,
                                     settings.haven_flood_period_seconds),
                    daily=content.daily, clock=clock,
                    drawer=ProcessDrawer())  # as bot.app.build_engine draws pictures

    # Time the scheduler's own calls on this engine (the code itself is untouched).
    plan = result.plan
    claim_batch, finish_batch = engine.claim_batch, engine.finish_batch
    prepare_job, finish_job = engine.prepare_job, engine.finish_job

    async def timed_claim(now: datetime, lease: timedelta, limit: int,
                          grace: timedelta) -> Any:
        began = perf_counter()
        batch = await claim_batch(now, lease, limit, grace)
        took = perf_counter() - began
        plan.claims += 1
        plan.claim_s += took
        if batch.claimed:
            plan.claim_batch_ms.append(took * 1e3)
            plan.claimed += batch.claimed
            ids = [prompt.job_id for prompt in batch.prompts] + batch.others
            peak = sum(1 for job_id in ids if job_id in population.peak_jobs)
            plan.peak_claim_s += took * peak / batch.claimed
            plan.peak_claimed += peak
        return batch

    async def timed_prepare(job_id: int, now: datetime, grace: timedelta) -> Any:
        began = perf_counter()
        prepared = await prepare_job(job_id, now, grace)
        took = perf_counter() - began
        plan.prepare_s += took
        plan.prepared += 1
        if job_id in population.peak_jobs:
            plan.peak_prepare_s += took
            plan.peak_prepared += 1
        return prepared

    async def timed_finish_batch(deliveries: list[Any]) -> None:
        began = perf_counter()
        await finish_batch(deliveries)
        took = perf_counter() - began
        if deliveries:
            plan.finish_s += took
            plan.finish_batch_ms.append(took * 1e3)
            plan.finished += len(deliveries)
            peak = sum(1 for d in deliveries if d.job_id in population.peak_jobs)
            plan.peak_finish_s += took * peak / len(deliveries)
            plan.peak_finished += peak

    async def timed_finish(job_id: int, now: datetime, delivered: bool) -> None:
        began = perf_counter()
        await finish_job(job_id, now, delivered)
        took = perf_counter() - began
        plan.finish_s += took
        plan.finished += 1
        if job_id in population.peak_jobs:
            plan.peak_finish_s += took
            plan.peak_finished += 1

    engine.claim_batch = timed_claim  # type: ignore[method-assign]
    engine.finish_batch = timed_finish_batch  # type: ignore[method-assign]
    engine.prepare_job = timed_prepare  # type: ignore[method-assign]
    engine.finish_job = timed_finish  # type: ignore[method-assign]

    # What reaches Telegram.
    prompt_sent: dict[int, float] = {}
    duplicates = 0
    all_sends: list[float] = []
    last_reply_send: dict[int, float] = {}

    def on_accept(chat_id: int, at: float, paid: bool) -> None:
        nonlocal duplicates
        all_sends.append(at)
        plan.paid_broadcasts += paid
        if chat_id in population.due:
            if chat_id in prompt_sent:
                duplicates += 1
            else:
                prompt_sent[chat_id] = at
        else:
            last_reply_send[chat_id] = at

    api = TelegramModel(limit, args.rtt / 1e3, on_accept)
    app = build_application(settings, engine, rate_limited=True, request=api)
    # As `python -m bot` does once it is built: what start-up made (content, and here the
    # bench's own setup) is frozen out of garbage collection, so a full collection during
    # the run looks only at what the run made, as in a running bot.
    built()
    done: dict[int, asyncio.Future[None]] = {}

    async def marker(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if chat is not None and chat.id in done and not done[chat.id].done():
            done[chat.id].set_result(None)

    app.add_handler(TypeHandler(Update, marker), group=MARKER_GROUP)
    errors = ErrorCounter()
    logging.getLogger("bot").addHandler(errors)

    window_end = population.peak + WINDOW_AFTER
    in_window = [chat for chat, due in population.due.items() if due < window_end]
    result.window_prompts = len(in_window)
    stop = asyncio.Event()
    latencies: list[float] = []
    silent = 0
    updates = Updates(app)

    async def person(chat_id: int, rng: random.Random) -> None:
        nonlocal silent
        for typed in writer_script(rng):
            await asyncio.sleep(rng.expovariate(1 / args.think))
            if stop.is_set():
                return
            done[chat_id] = loop.create_future()
            put_at = loop.time()
            await app.update_queue.put(updates.make(chat_id, typed))
            await done[chat_id]
            if last_reply_send.get(chat_id, -1.0) >= put_at:
                latencies.append(last_reply_send[chat_id] - put_at)
            else:
                silent += 1

    profiler = cProfile.Profile() if args.profile else None
    real_began, cpu_began = perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    await app.initialize()
    assert app.post_init is not None
    await app.post_init(app)  # starts the Scheduler with the real prompt lane
    await app.start()
    people = [asyncio.create_task(person(PEOPLE_BASE + i, random.Random(100 + i)))
              for i in range(args.people)]
    give_up = population.peak + GIVE_UP_AFTER
    while clock() < give_up:
        await asyncio.sleep(1.0)
        if clock() >= window_end and all(chat in prompt_sent for chat in in_window):
            break
    stop.set()
    for task in people:
        task.cancel()
    await asyncio.gather(*people, return_exceptions=True)
    await app.stop()
    if app.post_stop:
        await app.post_stop(app)
    await app.shutdown()
    if app.post_shutdown:
        await app.post_shutdown(app)
    if profiler:
        profiler.disable()
        print_profile(profiler, limit)
    logging.getLogger("bot").removeHandler(errors)
    result.real_s = perf_counter() - real_began
    result.cpu_s = time.process_time() - cpu_began
    result.simulated_s = loop.time() - t0
    result.scheduler_errors = errors.count
    result.trouble = dict(api.trouble)
    result.rejected_429 = api.rejected
    result.duplicates = duplicates

    # Prompts: delay from each person's due time, simulated.
    delays = {chat: (sim(prompt_sent[chat]) - population.due[chat]).total_seconds()
              for chat in in_window if chat in prompt_sent}
    result.delivered = len(delays)
    result.undelivered = len(in_window) - len(delays)
    limit_s = DELIVERY_WINDOW.total_seconds()
    result.within_5min = sum(d <= limit_s for d in delays.values()) / max(1, len(in_window))
    peak_delays = [delays.get(chat, math.inf) for chat in population.peak_chats]
    result.peak_rows = len(peak_delays)
    result.peak_within_5min = sum(d <= limit_s for d in peak_delays) / max(1, len(peak_delays))
    result.delay_p50_s = quantile(list(delays.values()), 0.5)
    result.delay_p99_s = quantile(list(delays.values()), 0.99)
    result.delay_max_s = max(delays.values(), default=float("nan"))

    # Rate while the peak backlog lasts: first to last send of a peak-minute prompt, leaving
    # out its first second, when the one-second burst Telegram allows goes out (at 1,000/s
    # the backlog lasts only seconds, and the burst would count as rate).
    peak_sends = [prompt_sent[chat] for chat in population.peak_chats if chat in prompt_sent]
    if len(peak_sends) > 1:
        first, last = min(peak_sends), max(peak_sends)
        result.backlog_s = last - first
        start = first + 1.0 if last - first > 2.0 else first
        span = last - start
        result.backlog_prompts = sum(start < at <= last for at in prompt_sent.values())
        result.backlog_sends = sum(start < at <= last for at in all_sends)
        result.prompt_rate = result.backlog_prompts / span
        result.rate_fraction = result.prompt_rate / limit
        result.all_send_fraction = result.backlog_sends / span / limit
        whole = sum(first <= at <= last for at in all_sends)
        result.burst_send_fraction = whole / result.backlog_s / limit
    result.plan_ms = (plan.peak_claim_s + plan.peak_prepare_s) * 1e3
    result.finish_ms = plan.peak_finish_s * 1e3

    result.replies = len(latencies)
    result.silent_replies = silent
    result.reply_p50_s = quantile(latencies, 0.5)
    result.reply_p99_s = quantile(latencies, 0.99)
    result.reply_max_s = max(latencies, default=float("nan"))
    return result


def print_profile(profiler: cProfile.Profile, limit: float) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(45)
    path = Path(tempfile.gettempdir()) / f"haven-fanout-{limit:g}.pstats"
    stats.dump_stats(path)
    print(f"\n==== profile of the run at {limit:g}/s (full stats in {path}) ====")
    print(out.getvalue())


# ---- report ----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    passed: bool
    detail: str


def targets(run: Run) -> list[Target]:
    plan = run.plan
    per_row = run.plan_ms / max(1, plan.peak_claimed) * 1e3
    tag = f"{run.limit:g}/s"
    return [
        Target(f"[{tag}] select + plan the peak minute's rows <= {TARGET_PLAN_MS:.0f} ms (real)",
               run.plan_ms <= TARGET_PLAN_MS and plan.peak_claimed == run.peak_rows,
               f"{run.plan_ms:.0f} ms for {plan.peak_claimed:,} rows ({per_row:.1f} us/row; "
               f"{per_row * BATCH / 1e3:.1f} ms per claim batch of {BATCH}); marking them sent and "
               f"planning tomorrow's rows after the sends: {run.finish_ms:.0f} ms more"),
        Target(f"[{tag}] send rate >= {TARGET_RATE_FRACTION} of the limit while the peak "
               "backlog lasts (simulated)",
               run.all_send_fraction >= TARGET_RATE_FRACTION,
               f"{run.all_send_fraction:.3f} of {run.limit:g}/s sent (prompts and replies): "
               f"prompts {run.prompt_rate:.1f}/s = {run.rate_fraction:.3f}, replies the rest"),
        Target(f"[{tag}] interactive reply p99 < {TARGET_REPLY_P99_S:.0f} s during the fan-out",
               run.reply_p99_s < TARGET_REPLY_P99_S and run.replies > 0,
               f"p99 {run.reply_p99_s * 1e3:.0f} ms over {run.replies} replies"),
    ]


def print_run(run: Run, population: Population) -> None:
    plan = run.plan
    peak = population.peak
    mode = ("paid broadcasts (HAVEN_PAID_BROADCAST=true: prompts carry allow_paid_broadcast "
            "and take the rate limiter's 1,000/s for them)" if run.paid_broadcast
            else f"no paid broadcasts (prompts and replies share {SEND_RATE:g}/s, replies "
                 "first)")
    print(f"\n== Telegram limit {run.limit:g} messages/s; Haven's prompt lane {run.lane:g}/s; "
          f"{mode}; rate limiter HavenRateLimiter (PTB's AIORateLimiter, overall_max_rate="
          f"{SEND_RATE:g}, max_retries=3); round trip {run.rtt_ms:g} ms ==")
    end = population.start + timedelta(seconds=run.simulated_s)
    print(f"simulated {population.start:%H:%M:%S}-{end:%H:%M:%S} UTC ({run.simulated_s:.0f} s "
          f"simulated) in {run.real_s:.1f} s real, {run.cpu_s:.1f} s CPU")
    print(f"prompts due {population.start:%H:%M}-{peak + WINDOW_AFTER:%H:%M} UTC: "
          f"{run.window_prompts:,}; delivered {run.delivered:,}, not delivered "
          f"{run.undelivered:,}, sent twice {run.duplicates}; 429 answers: {run.rejected_429}; "
          f"errors logged: {run.scheduler_errors}; sent as paid broadcasts: "
          f"{plan.paid_broadcasts:,}")
    batches = plan.claim_batch_ms
    print(f"select + plan, real time: the peak minute's {plan.peak_claimed:,} rows took "
          f"{plan.peak_claim_s * 1e3:.1f} ms in batch claims (claim + ready the prompts) + "
          f"{plan.peak_prepare_s * 1e3:.1f} ms in prepare_job ({plan.peak_prepared} rows) = "
          f"{run.plan_ms:.1f} ms; marking them sent and planning tomorrow's rows: "
          f"{run.finish_ms:.1f} ms")
    if batches:
        finishes = plan.finish_batch_ms or [0.0]
        print(f"  per batch claim of up to {BATCH} rows: mean "
              f"{sum(batches) / len(batches):.2f} ms, "
              f"max {max(batches):.2f} ms ({len(batches)} non-empty of {plan.claims} claims, "
              f"{plan.claimed:,} rows); per batch finish: mean "
              f"{sum(finishes) / len(finishes):.2f} ms, max {max(finishes):.2f} ms; "
              f"prepare_job {plan.prepare_s * 1e3 / max(1, plan.prepared):.2f} ms/row "
              f"({plan.prepared} rows)")
    print(f"send rate while the peak backlog lasted ({run.backlog_s:.1f} s simulated; its "
          f"first second left out): {run.prompt_rate:.1f} prompts/s = {run.rate_fraction:.3f} "
          f"of the limit; all messages incl. replies {run.all_send_fraction:.3f} of the limit "
          f"({run.burst_send_fraction:.3f} with the first second's burst)")
    print(f"delivered within 5 min of local due time (simulated): {run.within_5min:.1%} of "
          f"the window, {run.peak_within_5min:.1%} of the peak minute; delay p50 "
          f"{run.delay_p50_s:.0f} s, p99 {run.delay_p99_s:.0f} s, max {run.delay_max_s:.0f} s")
    print(f"interactive replies: {run.replies} (+{run.silent_replies} without a reply) from "
          f"the writers; latency p50 {run.reply_p50_s * 1e3:.0f} ms, p99 "
          f"{run.reply_p99_s * 1e3:.0f} ms, max {run.reply_max_s * 1e3:.0f} ms")
    if run.trouble:
        print(f"note: turns that did not go as scripted: {run.trouble}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="people with the prompt on")
    parser.add_argument("--peak", type=int, default=7_500,
                        help=f"of them, due in the peak minute ({PEAK_LOCAL} {PEAK_ZONE})")
    parser.add_argument("--limit", type=float, nargs="+", default=[30.0, 1000.0],
                        help="Telegram's limit in messages/s, one run each")
    parser.add_argument("--lane", type=float,
                        help="Haven's prompt lane in messages/s (HAVEN_PROMPT_RATE_PER_SECOND); "
                             "default: the setting's default for the mode")
    parser.add_argument("--paid", choices=("auto", "on", "off"), default="auto",
                        help="HAVEN_PAID_BROADCAST: auto (the default) turns it on for a limit "
                             "above Telegram's usual 30/s")
    parser.add_argument("--people", type=int, default=10, help="people writing meanwhile")
    parser.add_argument("--think", type=float, default=5.0,
                        help="their mean pause before each message, simulated seconds")
    parser.add_argument("--rtt", type=float, default=0.0,
                        help="simulated Bot API round trip per call, ms (default 0)")
    parser.add_argument("--history", type=int, default=0, metavar="DAYS",
                        help="give each of the peak minute's people a prompt on each of the "
                             "DAYS days before (default 0: none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile each run")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not 0 < args.peak <= args.users:
        parser.error("--peak must be between 1 and --users")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(FirstFew())
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    with tempfile.TemporaryDirectory(prefix="haven-fanout-") as tmp:
        data_dir = Path(tmp)
        base = data_dir / "base.sqlite3"
        settings = load_settings(database_url=f"sqlite:///{base}", telegram_bot_token=BOT_TOKEN,
                                 haven_data_dir=data_dir)
        content = load_content(settings.haven_dialogs_dir, settings.haven_prompts_dir,
                               settings.haven_default_locale)
        assert content.daily is not None
        population = build_database(base, settings, args.users, args.peak, args.seed,
                                    args.history, [p.id for p in content.daily.prompts])
        print(f"Haven daily-prompt fan-out benchmark, {started}")
        print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
              f"{os.cpu_count()} CPUs, {platform.platform()}")
        print(f"{args.users:,} people with the daily prompt on, {args.peak:,} of them at "
              f"{PEAK_LOCAL} {PEAK_ZONE} ({population.peak:%Y-%m-%d %H:%M} UTC), the rest at "
              f"random local minutes in {len(OTHER_ZONES)} zones; one due job each, from "
              f"next_daily_due. SQLite in a temp dir; setup {population.setup_s:.1f} s "
              "(not measured).")
        print(f"History: the peak minute's people each had a prompt on each of the {args.history} "
              "days before." if args.history else "History: none (nobody was sent a prompt "
              "before; see --history).")
        print("Clock: SIMULATED. The event loop's clock is real monotonic time plus every idle "
              "wait, which is skipped\ninstead of slept: CPU work counts at its real cost, "
              "waiting (rate limiters, retry_after, the\nscheduler's 15 s poll, people's "
              "pauses) costs no real time. Engine.clock reads the same clock.")
        print(f"Writers: {args.people} people typing onboarding and /aware answers through "
              f"update_queue -> Engine.handle,\na pause of {args.think:g} s (mean, exponential) "
              "before each message; their replies take the rate limiter but not the lane.")
        runs: list[Run] = []
        for limit in args.limit:
            db = data_dir / f"run-{limit:g}.sqlite3"
            shutil.copyfile(base, db)
            paid = args.paid == "on" or (args.paid == "auto" and limit > TELEGRAM_RATE)
            with asyncio.Runner(loop_factory=SimulatedLoop) as runner:
                run = runner.run(run_once(content, population, db, data_dir, args, limit,
                                          args.lane, paid))
            runs.append(run)
            print_run(run, population)

    print()
    found = [target for run in runs for target in targets(run)]
    for target in found:
        print(f"[{'PASS' if target.passed else 'FAIL'}] {target.name}: {target.detail}")
    for run in runs:
        print(f"[info] [{run.limit:g}/s] delivered within 5 min of local due time: "
              f"{run.within_5min:.1%} (peak minute {run.peak_within_5min:.1%})")
    if args.json:
        args.json.write_text(json.dumps({
            "date": started, "python": sys.version, "cpus": os.cpu_count(),
            "platform": platform.platform(), "users": args.users, "peak": args.peak,
            "peak_minute_utc": population.peak.isoformat(), "people": args.people,
            "think_s": args.think, "rtt_ms": args.rtt, "setup_s": population.setup_s,
            "clock": "simulated: real monotonic time plus skipped idle waits",
            "runs": [asdict(run) for run in runs],
            "targets": [asdict(target) for target in found],
        }, indent=2, default=str) + "\n")
    return 0 if all(target.passed for target in found) else 1


if __name__ == "__main__":
    sys.exit(main())
