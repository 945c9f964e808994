"""Settings from the environment (and an optional `.env` file), validated at start-up."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Telegram's limits for a bot: about 30 messages a second in all, or up to 1,000 a second for
# messages sent with allow_paid_broadcast.
TELEGRAM_RATE = 30.0
PAID_BROADCAST_RATE = 1000.0
# What Haven sends at most without paid broadcasts: a little under Telegram's 30, so that
# Haven's count and Telegram's never disagree by a message (each 429 stops every send for
# a second or more).
SEND_RATE = 29.4


class SettingsError(Exception):
    """Raised with one readable line per bad value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    telegram_bot_token: str | None = Field(default=None, repr=False)
    telegram_api_base_url: str = "https://api.telegram.org"
    database_url: str | None = None
    haven_data_dir: Path = PROJECT_ROOT / "data"
    webhook_url: str | None = None
    webhook_secret: str | None = Field(default=None, repr=False)
    port: int = Field(default=8080, ge=1, le=65535)
    # How many connections Telegram may open at once to deliver updates (1-100).
    webhook_max_connections: int = Field(default=40, ge=1, le=100)
    # Set: /metrics answers only requests with "Authorization: Bearer <this token>".
    haven_metrics_token: str | None = Field(default=None, repr=False, min_length=16)
    haven_dialogs_dir: Path = PROJECT_ROOT / "dialogs"
    haven_prompts_dir: Path = PROJECT_ROOT / "prompts"
    haven_default_locale: str = "en"
    haven_log_level: str = "INFO"
    haven_console_user_id: int = 1
    haven_max_answer_chars: int = Field(default=2000, ge=100, le=4000)
    haven_encryption_keys: str | None = Field(default=None, repr=False)
    # Scheduled messages (daily prompts, check-backs) per second; unset: what the mode
    # allows (see `prompt_rate`).
    haven_prompt_rate_per_second: float | None = Field(default=None, gt=0, le=1000)
    # Send scheduled messages as paid broadcasts (Telegram charges Stars for each), which
    # Telegram lets through at up to 1,000 a second instead of about 30.
    haven_paid_broadcast: bool = False
    haven_scheduler_poll_seconds: float = Field(default=15.0, gt=0, le=30)
    haven_catch_up_hours: float = Field(default=3.0, ge=0)
    # How long a worker's claim on due rows holds before another worker may take them.
    haven_scheduler_lease_seconds: float = Field(default=120.0, ge=10, le=3600)
    haven_flood_burst: int = Field(default=10, ge=1)
    haven_flood_period_seconds: float = Field(default=10.0, gt=0)

    @field_validator("telegram_bot_token")
    @classmethod
    def _token_shape(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        number, _, secret = value.partition(":")
        if not number.isdigit() or not secret:
            raise ValueError("should look like 123456789:AA... as given by @BotFather")
        return value

    @field_validator("telegram_api_base_url", "webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("should start with http:// or https://")
        return value.rstrip("/")

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
        if not 1 <= len(value) <= 256 or set(value) - allowed:
            raise ValueError("should be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("haven_log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("should be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("haven_encryption_keys")
    @classmethod
    def _keys_shape(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from bot.storage.crypto import EncryptionKeyError, parse_keys

        try:
            parse_keys(value)
        except EncryptionKeyError as error:
            raise ValueError(str(error)) from None
        return value

    @property
    def prompt_rate(self) -> float:
        """The scheduled messages' lane, per second: as set, or else all the mode allows.

        Without paid broadcasts, scheduled messages and replies share `SEND_RATE` (the rate
        limiter's), so the lane takes what replies leave. With them, the lane's paid messages
        leave Telegram's ordinary 30 a second of the 1,000 to the replies."""
        if self.haven_prompt_rate_per_second is not None:
            return self.haven_prompt_rate_per_second
        if self.haven_paid_broadcast:
            return PAID_BROADCAST_RATE - TELEGRAM_RATE
        return SEND_RATE

    def encryption_keys(self) -> list[bytes]:
        """The keys from the environment, or from the key file (made on first run)."""
        from bot.storage.crypto import key_file, parse_keys, read_or_create_key_file

        if self.haven_encryption_keys:
            return parse_keys(self.haven_encryption_keys)
        return read_or_create_key_file(key_file(self.haven_data_dir))

    @cached_property
    def effective_database_url(self) -> str:
        """The configured database, or a SQLite file in the data directory."""
        if self.database_url:
            url = self.database_url
            # Hosting platforms hand out postgres:// URLs; SQLAlchemy wants the async driver named.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+asyncpg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{self.haven_data_dir / 'haven.sqlite3'}"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, turning pydantic's errors into plain sentences."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"]).upper() or "settings"
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {message}")
        raise SettingsError("\n".join(lines)) from None
