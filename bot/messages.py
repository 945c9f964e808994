"""Plain message objects passed between the engine and the adapters (no Telegram types here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # callback data: at most 64 bytes, see bot.callbacks


@dataclass(frozen=True)
class Document:
    file_name: str
    content: bytes
    mime_type: str


@dataclass(frozen=True)
class Message:
    text: str  # Telegram HTML: user-supplied parts are already escaped
    buttons: tuple[tuple[Button, ...], ...] = ()
    documents: tuple[Document, ...] = ()  # sent before the text


@dataclass(frozen=True)
class PendingImage:
    """A picture asked for inside a turn: drawn after it, off the event loop, and sent
    before the message that was number `before` in the reply when it was asked for."""

    file_name: str
    draw: Callable[[], bytes]
    before: int


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
    message_id: int | None = None  # the chat's id for this message, kept so /hide can remove it
    update_id: int | None = None  # Telegram's id for the update: a second delivery is ignored


@dataclass
class Reply:
    messages: list[Message] = field(default_factory=list)
    notice: str | None = None  # a short toast for a button press
    delete_message_ids: list[int] = field(default_factory=list)  # remove these first (/hide)
    remember_sent: bool = True  # False once the person's data is erased: keep no trace


def text(chat_id: int, value: str, **extra: Any) -> Incoming:
    """Build an incoming text or command the way adapters see it."""
    if value.startswith("/") and len(value) > 1:
        name = value[1:].split(maxsplit=1)[0].split("@", 1)[0].lower()
        return Incoming(chat_id=chat_id, kind=InputKind.COMMAND, text=name, **extra)
    return Incoming(chat_id=chat_id, kind=InputKind.TEXT, text=value, **extra)
