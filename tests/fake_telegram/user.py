"""The person on the other side of a private chat, as a test drives them."""

from __future__ import annotations

import re
import secrets
import struct
import time
import zlib
from typing import TYPE_CHECKING, Any

from .html_check import utf16_len
from .methods import photo_sizes
from .models import Chat, ChatMessage
from .server import CallbackQuery

if TYPE_CHECKING:
    from .server import FakeTelegram

COMMAND_RE = re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")


def tiny_png(width: int = 2, height: int = 2) -> bytes:
    """A valid grey PNG image of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def command_entities(text: str) -> list[dict[str, Any]]:
    """bot_command entities, as Telegram adds them to "/start", "/help@bot" and the like."""
    return [
        {
            "type": "bot_command",
            "offset": utf16_len(text[: m.start()]),
            "length": utf16_len(m.group()),
        }
        for m in COMMAND_RE.finditer(text)
    ]


class FakeUser:
    """Sends messages and presses buttons; reads what the bot sent to this chat."""

    def __init__(self, fake: FakeTelegram, chat: Chat):
        self.fake = fake
        self._chat = chat
        self._read_up_to = 0  # message_id of the last bot message returned by replies()

    @property
    def id(self) -> int:
        return self._chat.id

    @property
    def profile(self) -> dict[str, Any]:
        """The Telegram User object of this person."""
        return dict(self._chat.user)

    # ------------------------------------------------------------------ acting

    async def send(self, text: str) -> dict[str, Any]:
        """Type and send ``text``; returns the Message dict the bot will receive."""
        content: dict[str, Any] = {"text": text}
        entities = command_entities(text)
        if entities:
            content["entities"] = entities
        return self._send(ChatMessage(0, text, "text", from_bot=False), content)

    def typed(self, text: str) -> dict[str, Any]:
        """The Message dict of ``text`` typed in this chat, without queuing it: for tests that
        post updates to the bot themselves (a load balancer in front of several workers)."""
        self._refuse_if_blocked()
        content: dict[str, Any] = {"text": text}
        entities = command_entities(text)
        if entities:
            content["entities"] = entities
        raw = self.fake.new_message_raw(self._chat, self._chat.user, **content)
        message = ChatMessage(raw["message_id"], text, "text", from_bot=False, raw=raw)
        self.fake.add_message(self._chat, message)
        return raw

    async def send_sticker(self, emoji: str = "👍") -> dict[str, Any]:
        stored = self.fake.store_file(
            b"RIFF\0\0\0\0WEBP", prefix="CAACAgIAAxk", folder="stickers", file_name="sticker.webp"
        )
        sticker = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
            "set_name": "HotCherry",
            "file_size": 24_000,
        }
        return self._send(ChatMessage(0, None, "sticker", from_bot=False), {"sticker": sticker})

    async def send_photo(self, caption: str | None = None, data: bytes | None = None) -> dict:
        data = data or tiny_png(64, 48)
        stored = self.fake.store_file(
            data,
            prefix="AgACAgIAAxk",
            folder="photos",
            file_name="photo.png",
            mime_type="image/png",
        )
        content: dict[str, Any] = {
            "photo": photo_sizes(stored.file_id, stored.file_unique_id, data)
        }
        if caption:
            content["caption"] = caption
        message = ChatMessage(0, caption, "photo", from_bot=False, file_bytes=data)
        return self._send(message, content)

    async def send_voice(self, duration: int = 3, data: bytes | None = None) -> dict:
        data = data or b"OggS" + bytes(200)
        stored = self.fake.store_file(
            data, prefix="AwACAgIAAxk", folder="voice", file_name="voice.oga", mime_type="audio/ogg"
        )
        voice = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_size": len(data),
        }
        message = ChatMessage(0, None, "voice", from_bot=False, file_bytes=data)
        return self._send(message, {"voice": voice})

    async def press(self, label: str, message_id: int | None = None) -> str:
        """Press the inline button labelled exactly ``label``; returns the callback query id.

        Looks on the newest bot message that still has an inline keyboard, or on
        ``message_id`` when given.
        """
        message = self._keyboard_message(message_id)
        for row in message.buttons:
            for button in row:
                if button["text"] != label:
                    continue
                if "callback_data" not in button:
                    raise AssertionError(f"button {label!r} is not a callback button: {button}")
                return await self.press_data(button["callback_data"], message.message_id)
        raise AssertionError(
            f"no button {label!r} on message #{message.message_id} "
            f"({message.text!r}); buttons there: {message.labels}"
        )

    async def press_data(self, data: str, message_id: int | None = None) -> str:
        """A callback query with any data (forged or stale buttons); returns its id."""
        self._refuse_if_blocked()
        if message_id is None:
            bot_messages = self._live_bot_messages()
            if not bot_messages:
                raise AssertionError("the bot has sent nothing to press on")
            message_id = bot_messages[-1].message_id
        message = self._chat.messages.get(message_id)
        if message is None or message.deleted:
            raise AssertionError(f"message #{message_id} does not exist (or was deleted)")
        query = CallbackQuery(str(secrets.randbits(62)), self.id, message_id, data)
        self.fake.callbacks[query.id] = query
        payload = {
            "id": query.id,
            "from": self.profile,
            "message": message.raw,
            "chat_instance": str(-(self.id * 7919 + 17)),
            "data": data,
        }
        self.fake.enqueue_update("callback_query", payload)
        return query.id

    def block(self) -> None:
        """Block the bot: its calls to this chat get 403; it receives my_chat_member "kicked"."""
        self._chat.blocked = True
        self._member_update("member", "kicked")

    def unblock(self) -> None:
        self._chat.blocked = False
        self._member_update("kicked", "member")

    # ------------------------------------------------------------------ reading

    @property
    def chat(self) -> list[ChatMessage]:
        """Everything the bot sent here, in order, with edits and deletions applied."""
        return self._chat.bot_messages()

    def last_keyboard(self) -> list[list[str]] | None:
        with_keyboard = [m for m in self._live_bot_messages() if m.buttons]
        return with_keyboard[-1].labels if with_keyboard else None

    @property
    def callback_answers(self) -> list[dict[str, Any]]:
        return [q.answer for q in self._queries() if q.answer is not None]

    def unanswered_callbacks(self) -> list[str]:
        return [q.id for q in self._queries() if q.answer is None]

    @property
    def chat_actions(self) -> list[str]:
        """Chat actions ("typing"...) the bot sent to this chat, in order."""
        return list(self._chat.chat_actions)

    async def replies(self, timeout: float = 10.0, quiet: float = 0.4) -> list[ChatMessage]:  # noqa: ASYNC109
        """New bot messages, once at least one arrived and the bot was then quiet for ``quiet``.

        Marks them read. Any bot activity in this chat (send, edit, delete, chat action)
        restarts the quiet period.
        """
        deadline = time.monotonic() + timeout
        while True:
            unread = self._unread()
            now = time.monotonic()
            idle = now - self._chat.last_activity
            if unread and (idle >= quiet or now >= deadline):
                self._read_up_to = unread[-1].message_id
                return unread
            if now >= deadline:
                raise AssertionError(self._timeout_report(timeout))
            wait = quiet - idle if unread else deadline - now
            await self.fake.wait_for_change(max(min(wait, deadline - now), 0.01))

    async def next_reply(self, timeout: float = 10.0) -> ChatMessage:  # noqa: ASYNC109
        """The next unread bot message (waiting for it), marked read."""
        deadline = time.monotonic() + timeout
        while not self._unread():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(timeout))
            await self.fake.wait_for_change(remaining)
        message = self._unread()[0]
        self._read_up_to = message.message_id
        return message

    async def answer_to(self, query_id: str, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait for the bot's answerCallbackQuery to ``query_id``."""
        deadline = time.monotonic() + timeout
        query = self.fake.callbacks[query_id]
        while query.answer is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"callback query {query_id} ({query.data!r}) never "
                    f"answered\n{self._timeout_report(timeout)}"
                )
            await self.fake.wait_for_change(remaining)
        return query.answer

    # ------------------------------------------------------------------ internals

    def _send(self, message: ChatMessage, content: dict[str, Any]) -> dict[str, Any]:
        self._refuse_if_blocked()
        raw = self.fake.new_message_raw(self._chat, self._chat.user, **content)
        message.message_id, message.raw = raw["message_id"], raw
        self.fake.add_message(self._chat, message)
        self.fake.enqueue_update("message", raw)
        return raw

    def _refuse_if_blocked(self) -> None:
        if self._chat.blocked:
            raise AssertionError(f"user {self.id} blocked the bot; call unblock() first")

    def _member_update(self, old: str, new: str) -> None:
        bot = dict(self.fake.bot_user)

        def member(status: str) -> dict[str, Any]:
            banned = {"until_date": 0} if status == "kicked" else {}
            return {"status": status, "user": bot, **banned}

        self.fake.enqueue_update(
            "my_chat_member",
            {
                "chat": self._chat.as_chat(),
                "from": self.profile,
                "date": int(time.time()),
                "old_chat_member": member(old),
                "new_chat_member": member(new),
            },
        )

    def _live_bot_messages(self) -> list[ChatMessage]:
        return [m for m in self._chat.bot_messages() if not m.deleted]

    def _keyboard_message(self, message_id: int | None) -> ChatMessage:
        if message_id is not None:
            message = self._chat.messages.get(message_id)
            if message is None or message.deleted or not message.buttons:
                raise AssertionError(f"message #{message_id} has no inline keyboard to press")
            return message
        with_keyboard = [m for m in self._live_bot_messages() if m.buttons]
        if not with_keyboard:
            raise AssertionError(
                "no bot message with an inline keyboard in this chat\n" + self._dump()
            )
        return with_keyboard[-1]

    def _queries(self) -> list[CallbackQuery]:
        return [q for q in self.fake.callbacks.values() if q.chat_id == self.id]

    def _unread(self) -> list[ChatMessage]:
        return [m for m in self._chat.bot_messages() if m.message_id > self._read_up_to]

    def _dump(self) -> str:
        lines = [f"chat {self.id} so far:"]
        lines += [f"  {m.describe()}" for m in self._chat.messages.values()] or ["  (empty)"]
        return "\n".join(lines)

    def _timeout_report(self, timeout: float) -> str:
        errors = [f"  {method}: {description}" for method, _, description in self.fake.errors]
        recent = [f"  {method}" for method, _ in self.fake.requests[-10:]]
        return "\n".join(
            [
                f"no new message from the bot in chat {self.id} within {timeout}s",
                self._dump(),
                "API errors returned to the bot:",
                *(errors[-10:] or ["  (none)"]),
                "last API calls:",
                *(recent or ["  (none)"]),
            ]
        )
