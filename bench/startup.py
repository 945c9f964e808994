"""Start-up time: from spawning the bot to its first getUpdates call at a fake Bot API.

Run: .venv/bin/python bench/startup.py [--runs N] [--warmup N] [--profile] [--json PATH]

Each run spawns a process against a fresh fake Telegram Bot API (tests/fake_telegram, HTTP on
127.0.0.1) and times, on the fake's side, when each Bot API call arrives. Three
configurations, one after another in each round: `python -m bot polling` on a SQLite file
whose migrations were already applied (a restart), the same on a brand-new database (the
first start: the file and schema are created), and a bare python-telegram-bot bot that
replies "ok" (the baseline), started the same way. With --profile, Haven's start-up is then
taken apart: each step timed for real in one process, `-X importtime`, and cProfile up to the
first getUpdates. See bench/README.md.

`bench/memory.py` starts its bots with the helpers here (`spawn`, `TimedTelegram`, `BARE_BOT`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from bot.settings import PROJECT_ROOT, SEND_RATE

sys.path.insert(0, str(PROJECT_ROOT))  # for tests.fake_telegram
from tests.bot_process import terminate  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402

TOKEN = "987654:bench-startup-token"
TARGET_S = 1.5
# Bot API calls on the way to polling, in the order python-telegram-bot makes them.
MILESTONES = ("getMe", "setMyCommands", "deleteWebhook", "getUpdates")

# The baseline: python-telegram-bot alone, polling and answering every message with "ok".
# It runs with `python -c`, so that it imports nothing but python-telegram-bot (and the
# aiolimiter behind its AIORateLimiter). Its replies are held to the rate Haven keeps to,
# as any bot answering a thousand people at once must be, and it handles up to 256
# updates at once, as Haven does.
BARE_BOT = """\
import os, sys
from telegram.ext import AIORateLimiter, ApplicationBuilder, MessageHandler, filters

async def reply(update, context):
    await context.bot.send_message(update.effective_chat.id, "ok")

base = os.environ["TELEGRAM_API_BASE_URL"]
application = (
    ApplicationBuilder()
    .token(os.environ["TELEGRAM_BOT_TOKEN"])
    .base_url(base + "/bot")
    .base_file_url(base + "/file/bot")
    .concurrent_updates(256)
    .rate_limiter(AIORateLimiter(overall_max_rate=float(sys.argv[1]), max_retries=3))
    .build()
)
application.add_handler(MessageHandler(filters.ALL, reply))
application.run_polling()
"""


def haven_command() -> list[str]:
    return [sys.executable, "-m", "bot", "polling"]


def bare_command() -> list[str]:
    return [sys.executable, "-c", BARE_BOT, str(SEND_RATE)]


class TimedTelegram(FakeTelegram):
    """The fake Bot API, noting when each call arrives (time.monotonic())."""

    def __init__(self) -> None:
        super().__init__(token=TOKEN)
        self.arrivals: list[tuple[str, float]] = []
        self.polled = asyncio.Event()  # set at the first getUpdates

    async def _call(self, token: str, method: str, params: Any) -> Any:
        self.arrivals.append((method, time.monotonic()))
        if method.lower() == "getupdates":
            self.polled.set()
        return await super()._call(token, method, params)

    def first(self, method: str) -> float | None:
        return next((at for name, at in self.arrivals if name.lower() == method.lower()), None)


def bot_env(api_url: str, data_dir: Path, database_url: str, key: str) -> dict[str, str]:
    """The environment of a bot under test: this one's, without any Haven or Telegram setting
    of the caller's, pointed at a (fake) Bot API, a data directory and a database."""
    kept = {name: value for name, value in os.environ.items()
            if not name.startswith(("TELEGRAM_", "HAVEN_", "WEBHOOK_"))
            and name not in ("DATABASE_URL", "PORT")}
    return {**kept, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": api_url,
            "DATABASE_URL": database_url, "HAVEN_DATA_DIR": str(data_dir),
            "HAVEN_ENCRYPTION_KEYS": key, "HAVEN_LOG_LEVEL": "INFO"}


@dataclass
class Spawned:
    process: asyncio.subprocess.Process
    spawned_at: float  # time.monotonic() just before the process was created
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self) -> int | None:
        """SIGTERM, as a platform does on a deploy; SIGKILL after 15 seconds."""
        return await terminate(self.process)


async def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> Spawned:
    """Start a bot with its output in `log_path`, noting the moment just before."""
    with log_path.open("ab") as log:
        spawned_at = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log,
            stdin=asyncio.subprocess.DEVNULL)
    return Spawned(process, spawned_at, log_path)


async def wait_until_polling(fake: TimedTelegram, bot: Spawned, timeout: float = 60.0) -> float:  # noqa: ASYNC109
    """Seconds from the spawn to the first getUpdates; raises if the bot exits or is late."""
    polled = asyncio.create_task(fake.polled.wait())
    exited = asyncio.create_task(bot.process.wait())
    done, _ = await asyncio.wait({polled, exited}, timeout=timeout,
                                 return_when=asyncio.FIRST_COMPLETED)
    for task in (polled, exited):
        task.cancel()
    first = fake.first("getUpdates")
    if first is None:
        why = (f"exited with {bot.process.returncode}" if exited in done
               else f"did not poll within {timeout:.0f} s")
        await bot.stop()
        raise RuntimeError(f"the bot {why}; its output:\n{bot.log()[-3000:]}")
    return first - bot.spawned_at


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and the like from /proc/<pid>/status, in kB."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            figures[name] = int(value.split()[0])
    return figures


def migrate(database_url: str, data_dir: Path, key: str) -> None:
    """`python -m bot migrate`: the schema of a new database brought up to date."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("TELEGRAM_", "HAVEN_", "WEBHOOK_"))}
    env.update(DATABASE_URL=database_url, HAVEN_DATA_DIR=str(data_dir), HAVEN_ENCRYPTION_KEYS=key)
    subprocess.run([sys.executable, "-m", "bot", "migrate"], cwd=PROJECT_ROOT, env=env,
                   check=True, capture_output=True)


# ---- the runs --------------------------------------------------------------------------------


@dataclass
class Configuration:
    name: str
    label: str
    argv: list[str]
    migrated: bool  # start from a copy of the migrated database (else from nothing)


@dataclass
class Start:
    seconds: float  # spawn to the first getUpdates
    milestones: dict[str, float]  # Bot API call -> seconds from the spawn to its first arrival


@dataclass
class Series:
    name: str
    label: str
    starts: list[Start] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return [start.seconds for start in self.starts]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def worst(self) -> float:
        return max(self.times)

    def milestone_median(self, method: str) -> float | None:
        values = [s.milestones[method] for s in self.starts if method in s.milestones]
        return statistics.median(values) if values else None


async def start_once(configuration: Configuration, template: Path, key: str,
                     extra_argv: list[str] | None = None) -> tuple[Start, str]:
    """One start in a fresh data directory against a fresh fake; returns it and the output."""
    with tempfile.TemporaryDirectory(prefix="haven-startup-") as tmp:
        data_dir = Path(tmp)
        database = data_dir / "haven.sqlite3"
        if configuration.migrated:
            shutil.copyfile(template, database)
        fake = TimedTelegram()
        await fake.start()
        try:
            argv = configuration.argv[:1] + (extra_argv or []) + configuration.argv[1:]
            env = bot_env(fake.base_url, data_dir, f"sqlite:///{database}", key)
            bot = await spawn(argv, env, data_dir / "bot.log")
            try:
                seconds = await wait_until_polling(fake, bot)
            finally:
                await bot.stop()
            milestones = {method: at - bot.spawned_at for method in MILESTONES
                          if (at := fake.first(method)) is not None}
            return Start(seconds, milestones), bot.log()
        finally:
            await fake.stop()


async def python_floor(runs: int) -> float:
    """Median seconds for `python -c pass`: what any Python process costs to start and end."""
    times = []
    for _ in range(runs):
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await process.wait()
        times.append(time.monotonic() - began)
    return statistics.median(times)


# ---- profile ---------------------------------------------------------------------------------

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)")
# `python -m bot polling` under cProfile, up to its first getUpdates: there the profiler stops
# and writes its stats to argv[1], and the bot goes on as usual.
PROFILED_HAVEN = """\
import cProfile, sys
profiler = cProfile.Profile()
profiler.enable()
from telegram.ext import ExtBot
first_get_updates = ExtBot.get_updates

async def get_updates(self, *args, **kwargs):
    profiler.disable()
    profiler.dump_stats(sys.argv[1])
    ExtBot.get_updates = first_get_updates
    return await first_get_updates(self, *args, **kwargs)

ExtBot.get_updates = get_updates
from bot.__main__ import main
sys.exit(main(["polling"]))
"""


# The steps of `python -m bot polling` before its first Bot API call, each timed for real in
# one fresh process: the imports in a fixed order (each line is what that import adds), then
# build_engine with its three big parts timed by wrappers, then build_application. Prints
# one JSON list of [step, seconds].
STEP_TIMER = """\
import json, sys, time
steps, last = [], time.perf_counter()

def mark(name):
    global last
    now = time.perf_counter()
    steps.append((name, now - last))
    last = now

import asyncio
from bot.settings import load_settings
mark("import asyncio and bot.settings (pydantic, pydantic-settings)")
settings = load_settings()
mark("load_settings (checking the keys imports bot.storage.crypto: SQLAlchemy core)")
import telegram.ext
mark("import telegram.ext (python-telegram-bot, httpx)")
import alembic.command, alembic.config
mark("import alembic")
import bot.adapters.telegram, bot.app, bot.engine
mark("import the rest of Haven (SQLAlchemy ORM and models, jinja2, yaml, metrics...)")
spent = {}

def timed(name, function, consume=False):
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            result = function(*args, **kwargs)
            return list(result) if consume else result
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - began
    return wrapper

def timed_async(name, function):
    async def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - began
    return wrapper

CONTENT = "load_content: flows and templates"
CHECKS = "  of which: rendering every template once with sample values (the check)"
DATABASE = "open the database, check the migrations"
DETECTOR = "compile the crisis detector"
for name in ("render_errors", "system_render_errors"):
    setattr(bot.app, name, timed(CHECKS, getattr(bot.app, name), consume=True))
bot.app.load_content = timed(CONTENT, bot.app.load_content)
bot.app.open_settings_repository = timed_async(DATABASE, bot.app.open_settings_repository)
bot.engine.default_detector = timed(DETECTOR, bot.engine.default_detector)
began = time.perf_counter()
engine = asyncio.run(bot.app.build_engine(settings))
total = time.perf_counter() - began
parts = [(name, spent[name]) for name in (CONTENT, CHECKS, DATABASE, DETECTOR) if name in spent]
steps.extend(parts)
steps.append(("the rest of build_engine", total - sum(s for n, s in parts if n != CHECKS)))
last = time.perf_counter()
bot.adapters.telegram.build_application(settings, engine)
mark("build_application")
print(json.dumps(steps))
"""


def import_summary(output: str, top: int = 12) -> tuple[float, list[tuple[str, float]],
                                                      list[tuple[str, float]]]:
    """From `-X importtime` output: all imports' time (ms), their self time summed per
    top-level package, and the slowest single modules by self time (module-level code)."""
    lines = [(name, int(self_us) / 1e3)
             for self_us, _cumulative, _indent, name in IMPORT_LINE.findall(output)]
    by_package: dict[str, float] = defaultdict(float)
    for name, self_ms in lines:
        by_package[name.split(".")[0]] += self_ms
    slowest = sorted(lines, key=lambda line: -line[1])[:top]
    packages = sorted(by_package.items(), key=lambda item: -item[1])[:top]
    return sum(ms for _, ms in lines), packages, slowest


def step_summary(stats_path: Path, top: int = 25) -> tuple[float, float, str]:
    """The profile's total and import time (s), and its slowest functions of Haven's and
    python-telegram-bot's start-up by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(str(stats_path), stream=out)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    imports = sum(cumulative for (_file, _line, name), (_cc, _nc, _tt, cumulative, _callers)
                  in table.items() if name == "_find_and_load")
    stats.sort_stats("cumulative").print_stats(r"/bot/|telegram/ext/_application", top)
    return stats.total_tt, imports, out.getvalue()  # type: ignore[attr-defined]


async def time_steps(template: Path, key: str) -> list[tuple[str, float]]:
    """STEP_TIMER in a fresh process, on a copy of the migrated database."""
    with tempfile.TemporaryDirectory(prefix="haven-startup-") as tmp:
        data_dir = Path(tmp)
        database = data_dir / "haven.sqlite3"
        shutil.copyfile(template, database)
        env = bot_env("http://127.0.0.1:9", data_dir, f"sqlite:///{database}", key)  # no calls
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", STEP_TIMER, cwd=PROJECT_ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"the step timer failed:\n{err.decode(errors='replace')[-3000:]}")
        return [(name, seconds) for name, seconds in json.loads(out.decode().splitlines()[-1])]


async def profile(template: Path, key: str) -> dict[str, Any]:
    """One start with -X importtime, the steps timed, one start under cProfile: prints where
    the time goes."""
    haven = Configuration("haven", "Haven", haven_command(), migrated=True)
    start, output = await start_once(haven, template, key, ["-X", "importtime"])
    total_ms, packages, slowest = import_summary(output)
    print(f"\n== profile: -X importtime, one start of Haven ({start.seconds:.2f} s with the "
          "tracing) ==")
    print(f"imports take {total_ms:.0f} ms in all; self time by top-level package (ms): "
          + ", ".join(f"{name} {ms:.0f}" for name, ms in packages))
    print("slowest single modules, self time (ms): "
          + ", ".join(f"{name} {ms:.0f}" for name, ms in slowest))
    steps = await time_steps(template, key)
    print("\n== profile: the steps before the first Bot API call, timed for real in one fresh "
          "process (bench/startup.py STEP_TIMER) ==")
    for name, seconds in steps:
        print(f"{seconds * 1e3:8.0f} ms  {name}")
    stats_path = Path(tempfile.gettempdir()) / "haven-startup.pstats"
    with contextlib.suppress(FileNotFoundError):
        stats_path.unlink()
    profiled = Configuration("haven", "Haven", [sys.executable, "-c", PROFILED_HAVEN,
                                                str(stats_path)], migrated=True)
    start, _ = await start_once(profiled, template, key)
    found: dict[str, Any] = {"steps_s": steps, "import_ms": total_ms,
                             "import_self_ms_by_package": dict(packages),
                             "slowest_modules_self_ms": dict(slowest)}
    if stats_path.exists():
        profile_s, import_s, table = step_summary(stats_path)
        print(f"\n== profile: cProfile of one start of Haven up to its first getUpdates "
              f"({start.seconds:.2f} s with the profiler; stats in {stats_path}) ==")
        print(f"profiled {profile_s:.2f} s, of which imports {import_s:.2f} s; cProfile slows "
              "pure-Python work (regex compiling, template rendering) far more than C code, so "
              "read the order, not the seconds")
        print(table)
        found.update(cprofile_total_s=profile_s, cprofile_import_s=import_s,
                     cprofile_stats=str(stats_path))
    return found


# ---- report ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured starts per configuration")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured starts per configuration first (page cache, .pyc files)")
    parser.add_argument("--profile", action="store_true",
                        help="then take Haven's start-up apart: -X importtime, each step "
                             "timed, and cProfile up to the first getUpdates")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures here")
    args = parser.parse_args()
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    key = Fernet.generate_key().decode()
    configurations = [
        Configuration("haven_migrated", "Haven, migrated SQLite database", haven_command(),
                      migrated=True),
        Configuration("haven_new", "Haven, brand-new database", haven_command(),
                      migrated=False),
        Configuration("bare", "bare python-telegram-bot", bare_command(), migrated=False),
    ]
    series = {c.name: Series(c.name, c.label) for c in configurations}
    with tempfile.TemporaryDirectory(prefix="haven-startup-template-") as tmp:
        template = Path(tmp) / "haven.sqlite3"
        await asyncio.to_thread(migrate, f"sqlite:///{template}", Path(tmp), key)
        for _ in range(args.warmup):
            for configuration in configurations:
                await start_once(configuration, template, key)
        for _ in range(args.runs):  # rounds, so that drift on the machine hits all alike
            for configuration in configurations:
                start, _output = await start_once(configuration, template, key)
                series[configuration.name].starts.append(start)
        floor = await python_floor(args.runs)
        profiled = await profile(template, key) if args.profile else None

    bare = series["bare"]
    print(f"\nHaven start-up benchmark, {started}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}; "
          f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
          f"{args.runs} runs per configuration after {args.warmup} unmeasured")
    print("time from spawning the process to its first getUpdates at the fake Bot API "
          "(median / max), and to its first calls on the way (medians):")
    for item in series.values():
        steps = ", ".join(f"{method} {value:.2f} s" for method in MILESTONES
                          if (value := item.milestone_median(method)) is not None)
        print(f"  {item.label:34} {item.median:6.2f} s / {item.worst:5.2f} s  "
              f"({item.median / bare.median:.2f}x bare)   [{steps}]")
    print(f"  (for scale: `python -c pass` takes {floor * 1e3:.0f} ms)")
    targets = [(f"{item.label}: median start-up < {TARGET_S} s", item.median < TARGET_S,
                f"median {item.median:.2f} s, max {item.worst:.2f} s, "
                f"{item.median / bare.median:.2f}x the bare bot ({bare.median:.2f} s)")
               for item in series.values() if item.name != "bare"]
    print()
    for name, passed, detail in targets:
        print(f"[{'PASS' if passed else 'FAIL'}] {name}: {detail}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": started, "python": sys.version, "cpus": os.cpu_count(),
            "platform": platform.platform(), "load_average": [load, os.getloadavg()[0]],
            "runs": args.runs, "warmup": args.warmup,
            "python_floor_s": floor, "target_s": TARGET_S,
            "series": {name: {**asdict(item), "median_s": item.median, "max_s": item.worst,
                              "ratio_to_bare": item.median / bare.median}
                       for name, item in series.items()},
            "targets": [{"name": n, "passed": p, "detail": d} for n, p, d in targets],
            "profile": profiled,
        }, indent=2) + "\n")
    return 0 if all(passed for _, passed, _ in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
