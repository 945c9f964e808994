"""Run the real entry point, `python -m bot`, as a separate process for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from bot.settings import PROJECT_ROOT
from tests.fake_telegram import FakeTelegram


class BotProcess:
    def __init__(self, fake: FakeTelegram, database_url: str, data_dir: Path,
                 **extra_env: str) -> None:
        self.fake = fake
        self.log_path = data_dir / "bot.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "HAVEN_"))},
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_API_BASE_URL": fake.base_url,
            "DATABASE_URL": database_url,
            "HAVEN_DATA_DIR": str(data_dir),
            "HAVEN_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
            "HAVEN_FLOOD_BURST": "1000",  # tests type faster than people; one test sets it
            **extra_env,
        }
        if "WEBHOOK_URL" not in extra_env:
            self.env.pop("WEBHOOK_URL", None)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Start the bot and wait until it listens: long-polling, or its webhook set and
        its server answering."""
        webhook = "WEBHOOK_URL" in self.env
        method = "setWebhook" if webhook else "getUpdates"
        polls_before = len(self.fake.calls(method))
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=PROJECT_ROOT, env=self.env,
            stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while len(self.fake.calls(method)) <= polls_before:
            self._still_starting(deadline, f"the bot did not start polling in {timeout}s")
            await asyncio.sleep(0.05)
        if webhook:  # the webhook is set before the server listens
            await self.wait_healthy(max(deadline - time.monotonic(), 1.0))

    async def wait_healthy(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """In webhook mode: wait until the server on PORT answers /healthz with 200 (it sets
        its webhook before it listens, so `start` can return a moment too early)."""
        import aiohttp

        url = f"http://127.0.0.1:{self.env['PORT']}/healthz"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                self._still_starting(deadline, f"{url} did not answer 200 in {timeout}s")
                await asyncio.sleep(0.05)

    def _still_starting(self, deadline: float, late: str) -> None:
        """Fail, with the bot's log, if it exited or `deadline` (monotonic) has passed."""
        if self.process is not None and self.process.returncode is not None:
            raise AssertionError(f"the bot exited with {self.process.returncode}:\n"
                                 + self.log())
        if time.monotonic() > deadline:
            raise AssertionError(f"{late}:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: no chance to tidy up, as when a machine dies."""
        if self.process and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> int | None:
        """SIGTERM, as a platform does on a deploy; SIGKILL after 15 seconds."""
        return await terminate(self.process) if self.process is not None else None


async def terminate(process: asyncio.subprocess.Process) -> int | None:
    """SIGTERM, as a platform does on a deploy; SIGKILL after 15 seconds. The exit status."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    return process.returncode


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
