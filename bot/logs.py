"""Logging that never carries the bot token or what people write.

Each line is one JSON object. Haven's own code never passes people's words to a
logger; libraries that would (SQL parameters, whole updates, request URLs holding
the token) are held at WARNING; exceptions are logged as their type and where
they happened, never their message, which could quote a person's words; and the
token is redacted from anything that slips through anyway.

Lines logged while an update is handled carry its Telegram update id (`"update"`), and
lines of one scheduler round its number (`"round"`), so one turn's or one round's lines
can be picked out of many workers' interleaved output. Of the `extra` fields a call
passes, only the names in LOGGED_EXTRAS are written, and only as plain values.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

# The Telegram update being handled, and the scheduler round running, if any.
UPDATE_ID: ContextVar[int | None] = ContextVar("update_id", default=None)
ROUND: ContextVar[int | None] = ContextVar("scheduler_round", default=None)
_round_numbers = itertools.count(1)

# The `extra` fields a log line may carry: names of things, never chat ids or people's words.
LOGGED_EXTRAS = ("method", "reason", "kind", "chat_kind", "attempts", "error_type")


@contextmanager
def update_logged(update_id: int) -> Iterator[None]:
    """Lines logged inside carry `"update": update_id`."""
    token = UPDATE_ID.set(update_id)
    try:
        yield
    finally:
        UPDATE_ID.reset(token)


@contextmanager
def round_logged() -> Iterator[int]:
    """Lines logged inside carry `"round": n`, n counting this process's scheduler rounds."""
    number = next(_round_numbers)
    token = ROUND.set(number)
    try:
        yield number
    finally:
        ROUND.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        update_id = UPDATE_ID.get()
        if update_id is not None:
            entry["update"] = update_id
        round_number = ROUND.get()
        if round_number is not None:
            entry["round"] = round_number
        fields = record.__dict__
        for name in LOGGED_EXTRAS:
            value = fields.get(name)
            if isinstance(value, str):
                entry[name] = value[:64]
            elif isinstance(value, int | float):  # bool is an int
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            kind, _error, trace = record.exc_info
            entry["error"] = kind.__name__
            entry["where"] = [f"{frame.filename}:{frame.lineno} {frame.name}"
                              for frame in traceback.extract_tb(trace)][-8:]
        return json.dumps(entry, ensure_ascii=False)


class RedactToken(logging.Filter):
    """Replace the bot token wherever it would appear in a log line."""

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if self.token:
            message = record.getMessage()
            if self.token in message:
                record.msg = message.replace(self.token, "<token>")
                record.args = None
        return True


# Libraries that would log what people write (SQL parameters, whole updates) or the token
# (request URLs) below WARNING. They stay at WARNING whatever Haven's own level is.
QUIET_LIBRARIES = ("httpx", "httpcore", "sqlalchemy", "asyncpg", "alembic",
                   "transitions", "apscheduler", "aiohttp.access")


def configure_logging(level: str, token: str | None) -> None:
    """Haven's own loggers at `level`; every library at INFO at most, some at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactToken(token))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level)
    # python-telegram-bot logs whole updates, with people's messages, at DEBUG.
    root.setLevel(max(logging.INFO, numeric))
    logging.getLogger("bot").setLevel(numeric)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
