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


def configure_logging(level: str, token: str | None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactToken(token))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL (which holds the token) at INFO; PTB logs whole updates
    # (which hold people's messages) at DEBUG. Neither belongs in Haven's logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    for name in ("telegram", "telegram.ext", "apscheduler"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
