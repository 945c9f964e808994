"""Haven's Prometheus metrics, on a registry of their own (served at /metrics in webhook mode).

Instrumented code calls one function per event. The numbers are per process: with several
workers, Prometheus scrapes each one and the queries add them up. No metric is labelled
with anything about a person.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from bot.logs import round_logged
from bot.storage.models import as_utc

if TYPE_CHECKING:
    from bot.storage.repository import Repository

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # resident memory, CPU seconds, open files (on Linux)

UPDATE_KINDS = ("message", "press", "member", "other")
SEND_KINDS = ("reply", "scheduled")
GIVE_UP_REASONS = ("network", "rate_limited")
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

UPDATES_HANDLED = Counter(
    "haven_updates_handled_total", "Telegram updates handled, by kind (other: not acted on)",
    ["kind"], registry=REGISTRY)
TURN_SECONDS = Histogram(
    "haven_turn_seconds", "Time to handle one Telegram update, its replies' sending included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY)
MESSAGES_SENT = Counter(
    "haven_messages_sent_total",
    "Messages (texts, pictures, files) Telegram accepted: replies, or scheduled ones",
    ["kind"], registry=REGISTRY)
RATE_LIMITED = Counter(
    "haven_telegram_rate_limited_total", "429 (Too Many Requests) answers from Telegram",
    registry=REGISTRY)
RETRIES = Counter(
    "haven_send_retries_total", "Bot API calls tried again, by reason (network or rate_limited)",
    ["reason"], registry=REGISTRY)
SENDS_GIVEN_UP = Counter(
    "haven_sends_given_up_total", "Bot API calls given up after their retries, by reason",
    ["reason"], registry=REGISTRY)
SCHEDULER_ROUNDS = Counter(
    "haven_scheduler_rounds_total", "Scheduler rounds started", registry=REGISTRY)
DUE_ROWS = Gauge(
    "haven_scheduled_rows_due",
    "Scheduled rows due and not yet sent, counted at the start of the latest scheduler round",
    registry=REGISTRY)
SCHEDULER_LAG = Gauge(
    "haven_scheduler_lag_seconds",
    "How far past its due time the earliest due row was at the start of the latest scheduler "
    "round (the first row that round claims); 0 when nothing was due", registry=REGISTRY)

# The labelled series exist (at 0) from the start, and are looked up once.
_UPDATES = {kind: UPDATES_HANDLED.labels(kind) for kind in UPDATE_KINDS}
_SENT = {kind: MESSAGES_SENT.labels(kind) for kind in SEND_KINDS}
_RETRIES = {reason: RETRIES.labels(reason) for reason in GIVE_UP_REASONS}
_GIVEN_UP = {reason: SENDS_GIVEN_UP.labels(reason) for reason in GIVE_UP_REASONS}


@contextmanager
def handling_update(kind: str) -> Iterator[None]:
    """Around the handling of one update: counts it by kind and times it."""
    started = perf_counter()
    try:
        yield
    finally:
        TURN_SECONDS.observe(perf_counter() - started)
        _UPDATES[kind].inc()


def messages_sent(count: int, scheduled: bool) -> None:
    if count:
        _SENT["scheduled" if scheduled else "reply"].inc(count)


def rate_limited() -> None:
    """Telegram answered 429."""
    RATE_LIMITED.inc()


def retrying(reason: str) -> None:
    """A Bot API call is being tried again, after a network error or a 429."""
    _RETRIES[reason].inc()


def gave_up(method: str, reason: str) -> None:
    """A Bot API call failed after its last retry: logged and counted, never silent."""
    log.warning("gave up sending a message", extra={"method": method, "reason": reason})
    _GIVEN_UP[reason].inc()


@contextmanager
def scheduler_round() -> Iterator[None]:
    """Around one scheduler round: counts it, and its log lines carry `"round": n`."""
    SCHEDULER_ROUNDS.inc()
    with round_logged():
        yield


async def count_due_rows(repository: Repository, now: datetime) -> None:
    """Sets the due-rows gauge and the scheduler lag, with one COUNT query."""
    try:
        waiting, earliest = await repository.run(lambda unit: unit.due_rows_waiting(now))
    except Exception as error:  # noqa: BLE001 - a metric never stops a round
        log.warning("could not count the due rows", extra={"error_type": type(error).__name__})
        return
    DUE_ROWS.set(waiting)
    late = (as_utc(now) - as_utc(earliest)).total_seconds() if earliest is not None else 0.0
    SCHEDULER_LAG.set(max(0.0, late))


def exposition() -> bytes:
    """Every metric in Prometheus' text format (served with CONTENT_TYPE)."""
    return generate_latest(REGISTRY)
