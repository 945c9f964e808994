"""Plain message objects passed between the engine and the adapters (no Telegram types here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # callback data: at most 64 bytes, see bot.callbacks


@dataclass(frozen=True)
class Message:
    text: str  # Telegram HTML: user-supplied parts are already escaped
    buttons: tuple[tuple[Button, ...], ...] = ()


class InputKind(StrEnum):
    TEXT = "text"
    COMMAND = "command"
    PRESS = "press"
    OTHER = "other"  # a sticker, photo, voice note... where Haven can only read text


@dataclass(frozen=True)
class Incoming:
    chat_id: int
    kind: InputKind
    text: str = ""  # the text, the command name (no slash), or the callback data
    first_name: str = ""
    language_code: str | None = None
    media: str = ""  # for OTHER: what was sent, e.g. "sticker"


@dataclass
class Reply:
    messages: list[Message] = field(default_factory=list)
    notice: str | None = None  # a short toast for a button press


def text(chat_id: int, value: str, **extra: str) -> Incoming:
    """Build an incoming text or command the way adapters see it."""
    if value.startswith("/") and len(value) > 1:
        name = value[1:].split(maxsplit=1)[0].split("@", 1)[0].lower()
        return Incoming(chat_id=chat_id, kind=InputKind.COMMAND, text=name, **extra)
    return Incoming(chat_id=chat_id, kind=InputKind.TEXT, text=value, **extra)
