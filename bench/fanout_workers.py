"""The daily fan-out with real worker processes sharing one PostgreSQL and one bot's limit.

Run: .venv/bin/python bench/fanout_workers.py [--people N] [--workers N] [--limit N]
     [--postgres URL] [--people-first] [--logs DIR] [--json PATH]

Two phases, one after the other: a baseline with one worker, then `--workers` (2) workers. Each
phase gets a scratch PostgreSQL database, migrated, and its own fake Telegram Bot API
(tests/fake_telegram, HTTP on 127.0.0.1) that keeps Telegram's limit for the whole bot: a
token bucket of `--limit` messages/s with a burst of one second's worth, over the sends of all
workers together; a send without a token gets HTTP 429 with parameters.retry_after. The
workers are the real `python -m bot webhook` (two long-polling processes would take each
other's getUpdates away), as separate processes with a shared encryption key. Once they run
(and count each other), `--people` people are written, each with a daily row due a minute
ago, and the workers share the backlog. Time is REAL: the default run takes about two and a
half minutes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from cryptography.fernet import Fernet
from fanout import quantile
from sqlalchemy import select
from turns import scratch_postgres

from bot.engine import Engine
from bot.scheduler import Scheduler, SchedulerConfig, Sender
from bot.settings import PROJECT_ROOT, SEND_RATE, TELEGRAM_RATE
from bot.storage.crypto import cipher_from, parse_keys
from bot.storage.models import ScheduledJob, User, as_utc
from bot.storage.repository import Repository, UnitOfWork

sys.path.insert(0, str(PROJECT_ROOT))  # for tests.*
from tests.bot_process import BotProcess, free_port  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402
from tests.fake_telegram.params import ApiError, Params  # noqa: E402
from tests.helpers import migrated  # noqa: E402
from tests.test_fanout_batch import Person, add_people  # noqa: E402

TOKEN = "525252:bench-fanout-workers-token"
CHAT_BASE = 80_000_000
DEFAULT_POSTGRES = os.environ.get("HAVEN_TEST_POSTGRES_URL",
                                  "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BURST_S = 1.0  # Telegram's bucket, and Haven's limiters, hold one second's worth of sends
WINDOW_S = 10.0
SETTLE_S = 3.0  # after the last prompt: three scheduler rounds in which nothing may follow
TARGET_RATE_FRACTION = 1.0  # of the limit, over the backlog and over any 10 s window of it
TARGET_RATIO = 0.9  # the workers' rate over the one worker's: the limit is the bot's


# ---- Telegram's limit, for the whole bot ------------------------------------------------------


@dataclass(frozen=True)
class Send:
    at: float  # time.monotonic() when Telegram took it
    wall: float  # time.time(), the same moment
    chat: int
    worker: int  # 1, 2, ...: the worker whose address it came to


class LimitedTelegram(FakeTelegram):
    """The fake Bot API behind one token bucket for the whole bot: `limit` messages/s, a
    burst of one second's worth, over sendMessage/sendPhoto/sendDocument from every worker.
    A send without a token is answered as Telegram does: 429 "Too Many Requests: retry after
    N", parameters.retry_after = N (whole seconds, at least 1).

    Each worker is given its own address (`worker_url(n)`, a second listening port that
    hands every call to the same fake), so that each accepted send is known by its worker."""

    LIMITED = ("sendmessage", "sendphoto", "senddocument")

    def __init__(self, limit: float, token: str = TOKEN) -> None:
        super().__init__(token=token)
        self.limit = limit
        self.tokens = limit
        self.refilled = time.monotonic()
        self.sends: list[Send] = []
        self.refused: list[tuple[float, int]] = []  # (time.monotonic(), worker) of each 429
        self._worker: contextvars.ContextVar[int] = contextvars.ContextVar("worker", default=0)
        self._front: web.AppRunner | None = None
        self.front_url = ""

    async def start(self) -> LimitedTelegram:
        await super().start()
        front = web.Application(client_max_size=60 * 1024 * 1024)
        front.router.add_route("*", "/worker{worker:[0-9]+}/bot{token}/{method}", self._by_worker)
        self._front = web.AppRunner(front, shutdown_timeout=1.0, handler_cancellation=True)
        await self._front.setup()
        await web.TCPSite(self._front, "127.0.0.1", 0).start()
        self.front_url = f"http://127.0.0.1:{self._front.addresses[0][1]}"
        return self

    async def __aenter__(self) -> LimitedTelegram:
        return await self.start()

    async def stop(self) -> None:
        if self._front:
            await self._front.cleanup()
        await super().stop()

    def worker_url(self, worker: int) -> str:
        """TELEGRAM_API_BASE_URL for worker `worker`."""
        return f"{self.front_url}/worker{worker}"

    async def _by_worker(self, request: web.Request) -> web.Response:
        marked = self._worker.set(int(request.match_info["worker"]))
        try:
            return await self._handle_api(request)
        finally:
            self._worker.reset(marked)

    async def _call(self, token: str, method: str, params: Params) -> Any:
        if method.lower() not in self.LIMITED:
            return await super()._call(token, method, params)
        now = time.monotonic()
        self.tokens = min(self.limit, self.tokens + (now - self.refilled) * self.limit)
        self.refilled = now
        if self.tokens < 1:
            self.refused.append((now, self._worker.get()))
            retry_after = max(1, math.ceil((1 - self.tokens) / self.limit))
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}",
                           {"retry_after": retry_after})
        self.tokens -= 1
        result = await super()._call(token, method, params)
        self.sends.append(Send(now, time.time(), int(params.raw("chat_id")), self._worker.get()))
        return result


# ---- one phase --------------------------------------------------------------------------------


@dataclass
class Phase:
    workers: int
    people: int
    limit: float
    delivered: int = 0
    duplicates: int = 0
    undelivered: int = 0
    rows_after: dict[str, int] = field(default_factory=dict)  # scheduled_jobs by state
    sends_by_worker: list[int] = field(default_factory=list)
    share_by_worker: list[float] = field(default_factory=list)
    batches_by_worker: list[int] = field(default_factory=list)  # "a batch ... went out" lines
    errors_by_worker: list[int] = field(default_factory=list)  # ERROR lines in each log
    # when each worker logged that it shares the limits with the others, in seconds from the
    # first prompt (negative: before it)
    counted_at_s: list[float | None] = field(default_factory=list)
    refused_429: int = 0
    refused_by_worker: list[int] = field(default_factory=list)
    backlog_s: float = 0.0  # first to last prompt
    burst_sends: int = 0  # the burst left out of the rate: one second's worth of the limit
    rate_per_s: float = 0.0  # accepted sends a second over the backlog, burst left out
    rate_fraction: float = 0.0
    burst_fraction: float = 0.0  # the same with the burst
    max_window_fraction: float = 0.0  # busiest 10 s of the backlog, burst left out
    max_window_at_s: float = 0.0  # where it begins, from the first prompt
    # the longest pauses between two accepted sends: (from the first prompt, seconds)
    longest_pauses: list[tuple[float, float]] = field(default_factory=list)
    batch_rows: int = 0  # rows each worker claims at once (Scheduler.batch_size at its rate)
    max_window_with_burst_fraction: float = 0.0  # busiest 10 s of all
    written_after_due_s: float = 0.0  # rows were due this long when they were written
    write_s: float = 0.0  # add_people for everyone, one transaction
    first_prompt_after_write_s: float = 0.0
    delay_p50_s: float = float("nan")  # accepted by Telegram, from the due time
    delay_p99_s: float = float("nan")
    delay_max_s: float = float("nan")
    queued_p50_s: float = float("nan")  # accepted by Telegram, from the rows' commit
    queued_p99_s: float = float("nan")
    # accepted sends in each second of the backlog, by worker: [[worker 1, worker 2], ...]
    timeline: list[list[int]] = field(default_factory=list)
    wall_s: float = 0.0  # the whole phase, database and processes included
    exit_codes: list[int | None] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)


async def wait_until(condition: Callable[[], bool], timeout: float) -> bool:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def write_people(repository: Repository, chats: list[int]) -> tuple[dict[int, datetime],
                                                                             datetime]:
    """Everyone's daily row due a minute ago, written as tests.test_fanout_batch.add_people
    does, in one transaction; their due times by chat, and when it committed. Daily times are
    whole minutes: the rows are due at the start of the minute before this one, 60 to 120 s
    before now."""
    now = datetime.now(UTC)
    daily_time = f"{now - timedelta(minutes=1):%H:%M}"
    await add_people(repository, [Person(chat, daily_time, "UTC") for chat in chats],
                     now - timedelta(hours=1))
    written = datetime.now(UTC)

    def read(unit: UnitOfWork) -> dict[int, datetime]:
        rows = unit.session.execute(
            select(User.chat_id, ScheduledJob.due_at).join(User, User.id == ScheduledJob.user_id)
            .where(ScheduledJob.kind == "daily", ScheduledJob.due_at <= written))
        return {chat: as_utc(due) for chat, due in rows}

    return await repository.run(read), written


async def run_phase(args: argparse.Namespace, workers: int, key: str, tmp: Path) -> Phase:
    started = time.monotonic()
    phase = Phase(workers=workers, people=args.people, limit=args.limit,
                  batch_rows=batch_rows(SEND_RATE / workers))
    chats = [CHAT_BASE + n for n in range(args.people)]
    async with scratch_postgres(args.postgres) as url, LimitedTelegram(args.limit) as fake:
        repository = await migrated(url, cipher_from(parse_keys(key)))
        for chat in chats:
            fake.user(chat)
        processes = []
        for n in range(1, workers + 1):
            data_dir = tmp / f"phase{workers}-worker{n}"
            data_dir.mkdir()
            port = free_port()
            processes.append(BotProcess(
                fake, url, data_dir, TELEGRAM_API_BASE_URL=fake.worker_url(n),
                HAVEN_ENCRYPTION_KEYS=key, HAVEN_SCHEDULER_POLL_SECONDS="1",
                HAVEN_LOG_LEVEL="INFO", WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram-updates",
                WEBHOOK_SECRET="bench-fanout-workers_1", PORT=str(port)))
        due: dict[int, datetime] = {}
        written = datetime.now(UTC)
        try:
            if args.people_first:
                began = time.monotonic()
                due, written = await write_people(repository, chats)
                phase.write_s = time.monotonic() - began
            for process in processes:
                await process.start()
            if workers > 1:  # each says so once it counts the others (bot.workers)
                together = f"{workers} workers share the bot's limits"
                await wait_until(lambda: all(together in p.log() for p in processes), 30)
            if not args.people_first:
                began = time.monotonic()
                due, written = await write_people(repository, chats)
                phase.write_s = time.monotonic() - began
            backlog = args.people / min(args.limit, SEND_RATE)
            await wait_until(lambda: len({send.chat for send in fake.sends}) >= len(chats),
                             3 * backlog + 60)
            await asyncio.sleep(SETTLE_S)
        finally:
            phase.exit_codes = [await process.stop() for process in processes]
        phase.logs = [process.log() for process in processes]
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for n, log in enumerate(phase.logs, 1):
                (args.logs / f"phase{workers}-worker{n}.log").write_text(log)

        def states(unit: UnitOfWork) -> dict[str, int]:
            rows = unit.session.execute(select(ScheduledJob.state, ScheduledJob.due_at))
            return dict(Counter(f"{state}, {'today' if as_utc(at) <= written else 'tomorrow'}"
                                for state, at in rows))

        phase.rows_after = await repository.run(states)
        await repository.close()
    measure(phase, fake, due, written)
    phase.wall_s = time.monotonic() - started
    return phase


def batch_rows(lane: float) -> int:
    """What the real scheduler claims at once when its lane runs at `lane` a second."""
    scheduler = Scheduler(cast(Engine, None), cast(Sender, None), SchedulerConfig(),
                          pace=lambda: lane)
    return scheduler.batch_size()


def measure(phase: Phase, fake: LimitedTelegram, due: dict[int, datetime],
            written: datetime) -> None:
    sends = sorted(fake.sends, key=lambda send: send.at)
    per_chat = Counter(send.chat for send in sends)
    phase.delivered = sum(1 for chat in due if per_chat[chat] >= 1)
    phase.undelivered = len(due) - phase.delivered
    phase.duplicates = sum(count - 1 for count in per_chat.values() if count > 1)
    total = max(1, len(sends))
    phase.sends_by_worker = [sum(send.worker == n for send in sends)
                             for n in range(1, phase.workers + 1)]
    phase.share_by_worker = [count / total for count in phase.sends_by_worker]
    phase.refused_429 = len(fake.refused)
    phase.refused_by_worker = [sum(worker == n for _, worker in fake.refused)
                               for n in range(1, phase.workers + 1)]
    phase.batches_by_worker = [log.count('"a batch of daily prompts went out"')
                               for log in phase.logs]
    phase.errors_by_worker = [log.count('"level": "ERROR"') for log in phase.logs]
    phase.counted_at_s = [counted_at(log, phase.workers, sends[0].wall if sends else None)
                          for log in phase.logs]
    if due:
        phase.written_after_due_s = (written - max(due.values())).total_seconds()
    delays = [send.wall - due[send.chat].timestamp() for send in sends if send.chat in due]
    phase.delay_p50_s = quantile(delays, 0.5)
    phase.delay_p99_s = quantile(delays, 0.99)
    phase.delay_max_s = max(delays, default=float("nan"))
    queued = [send.wall - written.timestamp() for send in sends if send.chat in due]
    phase.queued_p50_s = quantile(queued, 0.5)
    phase.queued_p99_s = quantile(queued, 0.99)
    if not sends:
        return
    phase.first_prompt_after_write_s = sends[0].wall - written.timestamp()

    # The rate while the backlog lasts, first to last prompt. The burst of one second's worth
    # that Telegram's bucket holds when the backlog starts is not rate: its sends are left
    # out. (fanout.py leaves out the first second instead; in real time, on a busy machine,
    # the burst does not always go out within the first second, and what spills over would
    # count as rate.)
    times = [send.at for send in sends]
    first, last = times[0], times[-1]
    phase.timeline = [[0] * phase.workers for _ in range(int(last - first) + 1)]
    for send in sends:
        phase.timeline[int(send.at - first)][send.worker - 1] += 1
    phase.backlog_s = last - first
    pauses = sorted(((later - earlier, earlier - first)
                     for earlier, later in zip(times, times[1:], strict=False)), reverse=True)
    phase.longest_pauses = [(round(at, 2), round(pause, 3)) for pause, at in pauses[:3]]
    burst = int(phase.limit * BURST_S)
    if phase.backlog_s > 2 * BURST_S and len(times) > 2 * burst:
        phase.burst_sends = burst
        in_backlog = times[burst:]
        phase.rate_per_s = len(in_backlog) / phase.backlog_s
        phase.rate_fraction = phase.rate_per_s / phase.limit
        phase.burst_fraction = len(times) / phase.backlog_s / phase.limit
        busiest, busiest_at = busiest_window(in_backlog)
        phase.max_window_fraction = busiest / WINDOW_S / phase.limit
        phase.max_window_at_s = busiest_at - first
        phase.max_window_with_burst_fraction = (busiest_window(times)[0] / WINDOW_S
                                                / phase.limit)


def counted_at(log: str, workers: int, first_prompt: float | None) -> float | None:
    """When a worker's log first says that `workers` workers share the limits, in seconds
    from `first_prompt` (time.time())."""
    together = f"{workers} workers share the bot's limits"
    for line in log.splitlines():
        if together in line and first_prompt is not None:
            at = datetime.fromisoformat(json.loads(line)["time"]).timestamp()
            return round(at - first_prompt, 2)
    return None


def busiest_window(times: list[float]) -> tuple[int, float]:
    """The most sends in any WINDOW_S seconds, [t, t + WINDOW_S) from a send's time t, and
    that t."""
    busiest, busiest_at, end = 0, times[0] if times else 0.0, 0
    for begin, at in enumerate(times):
        while end < len(times) and times[end] < at + WINDOW_S:
            end += 1
        if end - begin > busiest:
            busiest, busiest_at = end - begin, at
    return busiest, busiest_at


# ---- report -----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    passed: bool
    detail: str


def targets(phases: list[Phase]) -> list[Target]:
    found: list[Target] = []
    for phase in phases:
        tag = f"[{phase.workers} worker{'s' if phase.workers > 1 else ''}]"
        found += [
            Target(f"{tag} every prompt delivered, none twice",
                   phase.delivered == phase.people and phase.duplicates == 0,
                   f"{phase.delivered:,} of {phase.people:,} delivered, "
                   f"{phase.undelivered:,} not, {phase.duplicates} sent twice"),
            Target(f"{tag} send rate <= {TARGET_RATE_FRACTION:g} of the limit over the backlog "
                   f"and over any {WINDOW_S:g} s of it (the burst left out)",
                   phase.rate_fraction <= TARGET_RATE_FRACTION
                   and phase.max_window_fraction <= TARGET_RATE_FRACTION,
                   f"{phase.rate_fraction:.3f} over {phase.backlog_s:.1f} s, busiest "
                   f"{WINDOW_S:g} s {phase.max_window_fraction:.3f}"),
        ]
    if len(phases) == 2 and phases[0].rate_per_s:
        base, shared = phases
        ratio = shared.rate_per_s / base.rate_per_s
        found.append(Target(
            f"{shared.workers} workers' send rate / 1 worker's >= {TARGET_RATIO:g} (the limit "
            "is the bot's: they share it, not add to it)", ratio >= TARGET_RATIO,
            f"{ratio:.3f} ({shared.rate_per_s:.2f}/s over {base.rate_per_s:.2f}/s)"))
    return found


def print_phase(phase: Phase) -> None:
    lane = SEND_RATE / phase.workers
    who = (f"{phase.workers} workers (python -m bot webhook), each at 1/{phase.workers} of the "
           "limits" if phase.workers > 1 else "1 worker (python -m bot webhook), all the limits")
    print(f"\n== {who}: prompt lane and rate limiter {lane:.1f}/s; Telegram limit "
          f"{phase.limit:g}/s for the bot ==")
    if phase.workers > 1:
        counted = ", ".join("never" if at is None else f"{at:+.1f} s"
                            for at in phase.counted_at_s)
        print(f"each worker counted {phase.workers} workers at (from the first prompt): "
              f"{counted}")
    print(f"people written in {phase.write_s:.1f} s (one transaction), their rows due "
          f"{phase.written_after_due_s:.0f} s by then; first prompt "
          f"{phase.first_prompt_after_write_s:.2f} s after the commit")
    print(f"prompts delivered {phase.delivered:,} / {phase.people:,}; not delivered "
          f"{phase.undelivered:,}; sent twice {phase.duplicates}; 429 answers "
          f"{phase.refused_429} (by worker {phase.refused_by_worker}); ERROR lines in the "
          f"workers' logs {phase.errors_by_worker}")
    shares = ", ".join(f"worker {n} {count:,} ({share:.1%}, {batches} batches)"
                       for n, (count, share, batches) in enumerate(
                           zip(phase.sends_by_worker, phase.share_by_worker,
                               phase.batches_by_worker, strict=True), 1))
    print(f"sends by worker: {shares}; each claims {phase.batch_rows} rows at once")
    print(f"send rate over the backlog ({phase.backlog_s:.1f} s, first to last prompt; the "
          f"first {phase.burst_sends} sends, the burst, left out): {phase.rate_per_s:.2f}/s = "
          f"{phase.rate_fraction:.3f} of the limit ({phase.burst_fraction:.3f} with the burst); "
          f"busiest {WINDOW_S:g} s: {phase.max_window_fraction:.3f} (from "
          f"{phase.max_window_at_s:.1f} s) "
          f"({phase.max_window_with_burst_fraction:.3f} with the burst); longest pauses "
          + ", ".join(f"{pause * 1e3:.0f} ms at {at:.1f} s" for at, pause in phase.longest_pauses))
    print(f"delay from the due time to Telegram accepting the prompt: p50 "
          f"{phase.delay_p50_s:.1f} s, p99 {phase.delay_p99_s:.1f} s, max "
          f"{phase.delay_max_s:.1f} s (the first {phase.written_after_due_s:.0f} s of it before "
          f"the rows were written); from the rows' commit: p50 {phase.queued_p50_s:.1f} s, "
          f"p99 {phase.queued_p99_s:.1f} s")
    print(f"scheduled_jobs afterwards: {dict(sorted(phase.rows_after.items()))}; workers' exit "
          f"codes {phase.exit_codes}; phase took {phase.wall_s:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_500,
                        help="people with a daily row due a minute ago (default 1,500)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes in the second phase (default 2)")
    parser.add_argument("--limit", type=float, default=TELEGRAM_RATE,
                        help="Telegram's limit for the bot, messages/s (default 30)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, metavar="URL",
                        help="the PostgreSQL server for the scratch databases "
                             f"(default {DEFAULT_POSTGRES})")
    parser.add_argument("--people-first", action="store_true",
                        help="write the people before starting the workers, so that the "
                             "backlog is there while they learn of each other (a deploy)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures here")
    parser.add_argument("--logs", metavar="DIR", type=Path,
                        help="keep the workers' logs here (phase<N>-worker<n>.log)")
    args = parser.parse_args()
    if args.people < 1 or args.workers < 2:
        parser.error("--people must be at least 1 and --workers at least 2")
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Haven fan-out with worker processes sharing PostgreSQL, {started}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    when = ("written before the workers start" if args.people_first
            else "written once the workers run and count each other")
    print(f"{args.people:,} people, each with a daily row due a minute ago (real clock); {when}."
          "\nClock: REAL. Workers: python -m bot webhook (nobody writes to them), "
          "HAVEN_SCHEDULER_POLL_SECONDS=1, default rates, one encryption key.")
    key = Fernet.generate_key().decode()
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="haven-fanout-workers-") as tmp:
        for workers in (1, args.workers):
            phase = asyncio.run(run_phase(args, workers, key, Path(tmp)))
            phases.append(phase)
            print_phase(phase)

    print()
    found = targets(phases)
    for target in found:
        print(f"[{'PASS' if target.passed else 'FAIL'}] {target.name}: {target.detail}")
    for phase in phases:
        print(f"[info] [{phase.workers} worker(s)] 429 answers {phase.refused_429}; delay from "
              f"due p50 {phase.delay_p50_s:.1f} s, p99 {phase.delay_p99_s:.1f} s; shares "
              + ", ".join(f"{share:.1%}" for share in phase.share_by_worker))
    if args.json:
        args.json.write_text(json.dumps({
            "date": started, "python": sys.version, "cpus": os.cpu_count(),
            "platform": platform.platform(), "people": args.people, "limit": args.limit,
            "people_first": args.people_first, "clock": "real",
            "phases": [{k: v for k, v in asdict(phase).items() if k != "logs"}
                       for phase in phases],
            "targets": [asdict(target) for target in found],
        }, indent=2, default=str) + "\n")
    return 0 if all(target.passed for target in found) else 1


if __name__ == "__main__":
    sys.exit(main())
