"""State kept by the fake: messages as the user sees them, and private chats."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatMessage:
    """One message in a private chat, as the person would see it now.

    ``text`` is the visible text (tags stripped, entities unescaped), or the caption of a
    photo/document; ``source`` is the string the bot sent, before parsing.
    """

    message_id: int
    text: str | None
    kind: str = "text"  # "text", "photo", "document", "sticker", "voice"
    parse_mode: str | None = None
    source: str | None = None
    buttons: list[list[dict[str, Any]]] = field(default_factory=list)
    file_name: str | None = None
    file_bytes: bytes | None = None
    from_bot: bool = True
    deleted: bool = False
    edited: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> bytes | None:
        """Contents of the photo or document the bot sent."""
        return self.file_bytes

    @property
    def labels(self) -> list[list[str]]:
        """Button labels, row by row."""
        return [[button["text"] for button in row] for row in self.buttons]

    @property
    def date(self) -> int:
        return int(self.raw.get("date", 0))

    def describe(self) -> str:
        """One line for failure dumps."""
        flags = "".join(
            f" [{name}]" for name, on in (("deleted", self.deleted), ("edited", self.edited)) if on
        )
        who = "bot" if self.from_bot else "user"
        line = f"#{self.message_id} {who} {self.kind}{flags}: {self.text!r}"
        if self.buttons:
            line += f" buttons={self.labels}"
        return line


@dataclass
class Chat:
    """A private chat between the bot and one user; message ids are shared by both sides."""

    user: dict[str, Any]
    messages: dict[int, ChatMessage] = field(default_factory=dict)
    last_message_id: int = 0
    blocked: bool = False
    last_activity: float = field(default_factory=time.monotonic)
    chat_actions: list[str] = field(default_factory=list)

    @property
    def id(self) -> int:
        return int(self.user["id"])

    def as_chat(self) -> dict[str, Any]:
        chat = {"id": self.id, "type": "private", "first_name": self.user["first_name"]}
        for key in ("last_name", "username"):
            if self.user.get(key):
                chat[key] = self.user[key]
        return chat

    def next_message_id(self) -> int:
        self.last_message_id += 1
        return self.last_message_id

    def bot_messages(self) -> list[ChatMessage]:
        return [m for m in self.messages.values() if m.from_bot]

    def touch(self) -> None:
        self.last_activity = time.monotonic()
