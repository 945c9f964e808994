"""Logging that never carries the bot token or what people write."""

from __future__ import annotations

import logging
import sys


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
QUIET_LIBRARIES = ("httpx", "httpcore", "aiosqlite", "sqlalchemy", "asyncpg", "alembic",
                   "transitions", "apscheduler", "aiohttp.access")


def configure_logging(level: str, token: str | None) -> None:
    """Haven's own loggers at `level`; every library at INFO at most, some at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactToken(token))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level)
    # python-telegram-bot logs whole updates, with people's messages, at DEBUG.
    root.setLevel(max(logging.INFO, numeric))
    logging.getLogger("bot").setLevel(numeric)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
