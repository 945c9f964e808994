"""Operations: the Prometheus metrics at /metrics in webhook mode, the update id and the
scheduler round on every log line, and sends given up after their retries, logged and
counted rather than dropped silently."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from telegram.error import NetworkError, RetryAfter

from bot import metrics
from bot.adapters.telegram import HavenRateLimiter, build_application, with_retries
from bot.app import Content
from bot.logs import JsonFormatter, update_logged
from bot.messages import Reply
from bot.scheduler import Scheduler, SchedulerConfig
from bot.settings import load_settings
from bot.storage.crypto import cipher_from
from bot.storage.repository import Repository
from tests.bot_process import BotProcess, free_port
from tests.fake_telegram import FakeTelegram
from tests.helpers import Clock, Outbox, make_engine, migrated
from tests.test_e2e_telegram import fake, onboard, visible  # noqa: F401 - fixtures used below
from tests.test_fanout_batch import PEAK, TOKEN, Person, add_due_now, add_people

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(exposition: str) -> Samples:
    """Every sample of a Prometheus text page, by name and labels."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def current(name: str, labels: dict[str, str] | None = None, **more: str) -> float:
    """A sample of this process's registry (which other tests move too: compare deltas)."""
    return metrics.REGISTRY.get_sample_value(name, {**(labels or {}), **more}) or 0.0


class JsonLines(logging.Handler):
    """Formats records as Haven does, when they are logged (the ids are read then)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def with_message(self, message: str) -> list[dict[str, object]]:
        return [line for line in self.lines if line["message"] == message]


@pytest.fixture
def logged() -> Iterator[JsonLines]:
    handler = JsonLines()
    logger = logging.getLogger("bot")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ---------------------------------------------------------------- the real process


async def scrape(port: int) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())


def messages_out(server: FakeTelegram) -> int:
    return sum(len(server.calls(method))
               for method in ("sendMessage", "sendPhoto", "sendDocument"))


async def test_metrics_ask_for_the_token_when_one_is_set(
    fake: FakeTelegram, tmp_path: Path  # noqa: F811 - the fixture imported above
) -> None:
    port = free_port()
    token = "scrape-token-0123456789"
    process = BotProcess(fake, f"sqlite:///{tmp_path / 'haven.sqlite3'}", tmp_path,
                         WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram-updates",
                         WEBHOOK_SECRET="metrics-secret_2", PORT=str(port),
                         HAVEN_METRICS_TOKEN=token)
    await process.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            statuses = []
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                            {"Authorization": token}):
                async with session.get(f"{base}/metrics", headers=headers) as response:
                    statuses.append(response.status)
                    assert "haven_" not in await response.text()
            async with session.get(f"{base}/metrics",
                                   headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200
                assert "haven_updates_handled_total" in await response.text()
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200  # the load balancer needs no token
    finally:
        await process.stop()
    assert statuses == [401, 401, 401]


async def test_metrics_count_a_persons_turns_in_webhook_mode(
    fake: FakeTelegram, tmp_path: Path  # noqa: F811 - the fixture imported above
) -> None:
    port = free_port()
    process = BotProcess(fake, f"sqlite:///{tmp_path / 'haven.sqlite3'}", tmp_path,
                         WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram-updates",
                         WEBHOOK_SECRET="metrics-secret_1", PORT=str(port))
    await process.start()
    chat_id = 7_345_901
    try:
        before = await scrape(port)
        sent_before = messages_out(fake)
        user = fake.user(user_id=chat_id)
        await onboard(user)  # /start, then five presses
        await user.send("/help")
        help_update = fake.pending_updates[-1]["update_id"]
        assert "crisis" in visible(await user.replies()).lower()
        await fake.deliver_pending()
        after = await scrape(port)
        sent = messages_out(fake) - sent_before
    finally:
        await process.stop()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("haven_updates_handled_total", kind="message") == 2
    assert moved("haven_updates_handled_total", kind="press") == 5
    assert moved("haven_updates_handled_total", kind="member") == 0
    assert moved("haven_turn_seconds_count") == 7, "one timing per update"
    assert moved("haven_turn_seconds_sum") > 0
    assert moved("haven_turn_seconds_bucket", le="+Inf") == 7
    assert sent >= 7, "at least one message a turn"
    assert moved("haven_messages_sent_total", kind="reply") == sent
    assert moved("haven_messages_sent_total", kind="scheduled") == 0
    for reason in ("network", "rate_limited"):
        assert value(after, "haven_sends_given_up_total", reason=reason) == 0
    assert value(after, "haven_telegram_rate_limited_total") == 0
    assert value(after, "haven_scheduler_rounds_total") >= 1, "the first round starts at once"
    assert value(after, "haven_scheduled_rows_due") == 0
    assert value(after, "process_resident_memory_bytes") > 0

    lines = [json.loads(line) for line in process.log().splitlines() if line.startswith("{")]
    handled = [line for line in lines if line["message"] == "update handled"]
    assert len(handled) == 7
    assert [line["kind"] for line in handled if line["update"] == help_update] == ["message"]
    assert str(chat_id) not in process.log(), "a chat id reached the logs"


# ---------------------------------------------------------------- log lines


def test_log_lines_carry_the_update_and_only_allowed_extras(logged: JsonLines) -> None:
    log = logging.getLogger("bot.test")
    with update_logged(700_000_123):
        log.info("inside", extra={"method": "sendMessage", "text": "my words",
                                  "chat_id": 99, "reason": ["not", "a", "name"]})
    log.info("outside")
    inside, outside = logged.lines
    assert inside["update"] == 700_000_123
    assert inside["method"] == "sendMessage"
    assert not {"text", "chat_id", "reason"} & set(inside), "only allowed, plain extras"
    assert "update" not in outside


# ---------------------------------------------------------------- sends given up


async def test_a_send_failing_through_every_retry_is_logged_and_counted(
    logged: JsonLines
) -> None:
    calls = 0

    async def send_photo() -> None:
        nonlocal calls
        calls += 1
        raise NetworkError("connection reset")

    given_up = current("haven_sends_given_up_total", reason="network")
    retries = current("haven_send_retries_total", reason="network")
    with update_logged(700_000_321), pytest.raises(NetworkError):
        await with_retries(send_photo)  # waits out the real backoff: 1.5 to 3.5 s
    assert calls == 4, "the first try and three retries"
    assert current("haven_send_retries_total", reason="network") - retries == 3
    assert current("haven_sends_given_up_total", reason="network") - given_up == 1
    [line] = logged.with_message("gave up sending a message")
    assert line["level"] == "WARNING"
    assert (line["method"], line["reason"], line["update"]) == ("sendPhoto", "network",
                                                                700_000_321)


async def test_a_send_still_refused_with_429_is_logged_and_counted(logged: JsonLines) -> None:
    limiter = HavenRateLimiter(overall_max_rate=1000, max_retries=1)
    calls = 0

    async def too_many(*_args: object) -> bool:
        nonlocal calls
        calls += 1
        raise RetryAfter(0)

    counted = {name: current(name, **labels) for name, labels in (
        ("haven_telegram_rate_limited_total", {}),
        ("haven_send_retries_total", {"reason": "rate_limited"}),
        ("haven_sends_given_up_total", {"reason": "rate_limited"}))}
    with pytest.raises(RetryAfter):
        await limiter.process_request(too_many, (), {}, "sendMessage", {"chat_id": 5}, None)
    assert calls == 2, "the try and one retry"
    assert {name: current(name, **labels) - counted[name] for name, labels in (
        ("haven_telegram_rate_limited_total", {}),
        ("haven_send_retries_total", {"reason": "rate_limited"}),
        ("haven_sends_given_up_total", {"reason": "rate_limited"}))} == {
        "haven_telegram_rate_limited_total": 2, "haven_send_retries_total": 1,
        "haven_sends_given_up_total": 1}
    [line] = logged.with_message("gave up sending a message")
    assert (line["method"], line["reason"]) == ("sendMessage", "rate_limited")


async def test_a_429_then_success_is_counted_but_not_given_up(logged: JsonLines) -> None:
    limiter = HavenRateLimiter(overall_max_rate=1000, max_retries=3)
    answers: list[bool] = []

    async def once_too_many(*_args: object) -> bool:
        answers.append(True)
        if len(answers) == 1:
            raise RetryAfter(0)
        return True

    limited = current("haven_telegram_rate_limited_total")
    given_up = current("haven_sends_given_up_total", reason="rate_limited")
    assert await limiter.process_request(once_too_many, (), {}, "sendMessage", {"chat_id": 5},
                                         None) is True
    assert current("haven_telegram_rate_limited_total") - limited == 1
    assert current("haven_sends_given_up_total", reason="rate_limited") == given_up
    assert logged.with_message("gave up sending a message") == []


async def test_a_scheduled_prompt_through_a_429_is_counted_as_scheduled(
    content: Content, tmp_path: Path
) -> None:
    """Through the real Application and rate limiter, against the fake Bot API."""
    async with FakeTelegram(token=TOKEN) as server:
        repository = await migrated(f"sqlite:///{tmp_path / 'haven.sqlite3'}",
                                    cipher_from([Fernet.generate_key()]))
        settings = load_settings(telegram_bot_token=TOKEN, telegram_api_base_url=server.base_url,
                                 haven_data_dir=tmp_path, haven_scheduler_poll_seconds=0.05)
        server.user(4322)
        await add_due_now(repository, 4322)
        server.fail_next("sendMessage", status=429, retry_after=1)
        application = build_application(settings, make_engine(content, repository),
                                        polling=False)
        await application.initialize()
        assert application.post_init is not None and application.post_stop is not None
        names = [("haven_messages_sent_total", {"kind": "scheduled"}),
                 ("haven_messages_sent_total", {"kind": "reply"}),
                 ("haven_telegram_rate_limited_total", {}),
                 ("haven_send_retries_total", {"reason": "rate_limited"}),
                 ("haven_sends_given_up_total", {"reason": "rate_limited"})]
        before = [current(name, **labels) for name, labels in names]
        try:
            await application.post_init(application)
            async with asyncio.timeout(20):
                while current(*names[0]) == before[0]:  # noqa: ASYNC110 - no event to await
                    await asyncio.sleep(0.05)
        finally:
            await application.post_stop(application)
            await application.shutdown()
            await repository.close()
    moved = [current(name, **labels) - was for (name, labels), was in zip(names, before,
                                                                          strict=True)]
    assert moved == [1, 0, 1, 1, 0]
    assert len(server.calls("sendMessage")) == 2, "refused once, then sent"


# ---------------------------------------------------------------- the scheduler


async def test_scheduler_metrics_follow_the_due_rows(
    content: Content, repository: Repository, logged: JsonLines
) -> None:
    clock = Clock(PEAK - timedelta(days=1))
    engine = make_engine(content, repository, clock)
    people = [Person(9100 + n) for n in range(5)]
    await add_people(repository, people, clock.now)  # each due at PEAK
    unreachable_once = {9100}
    outbox = Outbox()

    async def send(chat_id: int, reply: Reply) -> bool:
        if chat_id in unreachable_once:
            unreachable_once.clear()
            raise NetworkError("connection reset")
        return await outbox(chat_id, reply)

    scheduler = Scheduler(engine, send, SchedulerConfig(poll_seconds=3600))
    round_over = asyncio.Event()
    one_round = scheduler.tick

    async def tick_and_tell(now: datetime | None = None) -> int:
        try:
            return await one_round(now)
        finally:
            round_over.set()

    scheduler.tick = tick_and_tell  # type: ignore[method-assign]
    clock.now = PEAK + timedelta(seconds=90)
    rounds = current("haven_scheduler_rounds_total")
    running = asyncio.create_task(scheduler.run_forever())
    try:
        async with asyncio.timeout(30):
            await round_over.wait()
    finally:
        running.cancel()
    scheduler.tick = one_round  # type: ignore[method-assign]
    assert len(outbox.sent) == 4
    assert current("haven_scheduler_rounds_total") - rounds == 1
    assert current("haven_scheduled_rows_due") == 5, "counted as the round began"
    assert current("haven_scheduler_lag_seconds") == 90
    [failed] = logged.with_message("a daily prompt could not be sent")
    assert isinstance(failed["round"], int)

    # The one not sent stays due (claimed) until its lease runs out; then it goes.
    clock.now = PEAK + timedelta(minutes=5)
    assert await scheduler.tick() == 1
    assert current("haven_scheduled_rows_due") == 1
    assert current("haven_scheduler_lag_seconds") == 300
    assert sorted(chat_id for chat_id, _ in outbox.sent) == [p.chat_id for p in people]

    assert await scheduler.tick() == 0
    assert current("haven_scheduled_rows_due") == 0
    assert current("haven_scheduler_lag_seconds") == 0
