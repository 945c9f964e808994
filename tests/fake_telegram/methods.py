"""The Bot API methods the fake implements, registered in ``API`` by lower-cased name.

Each handler takes the FakeTelegram and the call's Params and returns the ``result`` or
raises ApiError. Methods that exist in the real API but not here answer 501, so a bot using
one fails loudly instead of getting a misleading 404.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import telegram

from .content import (
    caption_text,
    check_commands,
    check_reply_markup,
    image_size,
    message_text,
)
from .models import Chat, ChatMessage
from .params import ApiError, Params, UploadedFile, bad_request

THUMB_SUFFIX = "-s"  # file_id of a photo thumbnail = file_id of the photo + this

if TYPE_CHECKING:
    from .server import FakeTelegram

Handler = Callable[["FakeTelegram", Params], Any]
API: dict[str, Handler] = {}
KNOWN_METHODS = {
    name.lower() for name in dir(telegram.Bot) if name[:1].islower() and not name.islower()
}
CHAT_ACTIONS = {
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
}
DELETE_WINDOW = 48 * 3600
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"


def api(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        API[name.lower()] = handler
        return handler

    return register


# ---------------------------------------------------------------------- bot and updates


@api("getMe")
def get_me(fake: FakeTelegram, p: Params) -> dict:
    return {
        **fake.bot_user,
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


@api("getUpdates")
async def get_updates(fake: FakeTelegram, p: Params) -> list[dict]:
    fake.refuse_polling_with_webhook()
    fake.set_allowed_updates(p.json("allowed_updates"))
    limit = min(max(p.int("limit", 100) or 100, 1), 100)
    return await fake.get_updates(p.int("offset"), limit, p.float("timeout"))


@api("setWebhook")
async def set_webhook(fake: FakeTelegram, p: Params) -> bool:
    url = p.str("url", "") or ""
    if not url:
        await fake.delete_webhook(p.bool("drop_pending_updates"))
        return True
    if not url.startswith(("https://", "http://")):
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    secret = p.str("secret_token")
    if secret is not None and not _valid_secret(secret):
        raise bad_request("secret token contains unallowed characters")  # guess
    max_connections = p.int("max_connections", 40) or 40
    if not 1 <= max_connections <= 100:
        raise bad_request("bad webhook: max_connections must be between 1 and 100")  # guess
    allowed = p.json("allowed_updates")
    fake.set_allowed_updates(allowed)
    info = {"url": url, "has_custom_certificate": False, "max_connections": max_connections}
    if allowed is not None:
        info["allowed_updates"] = allowed
    if secret:
        info["secret_token"] = secret
    await fake.set_webhook(info, p.bool("drop_pending_updates"))
    return True


def _valid_secret(secret: str) -> bool:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    return 1 <= len(secret) <= 256 and set(secret) <= allowed


@api("deleteWebhook")
async def delete_webhook(fake: FakeTelegram, p: Params) -> bool:
    await fake.delete_webhook(p.bool("drop_pending_updates"))
    return True


@api("getWebhookInfo")
def get_webhook_info(fake: FakeTelegram, p: Params) -> dict:
    return fake.webhook_info()


@api("close")
@api("logOut")
def log_out(fake: FakeTelegram, p: Params) -> bool:
    return True


# ---------------------------------------------------------------------- commands, profile


@api("setMyCommands")
def set_my_commands(fake: FakeTelegram, p: Params) -> bool:
    commands = check_commands(p.json("commands"))
    fake._commands[fake.commands_key(p.json("scope"), p.str("language_code"))] = commands
    return True


@api("getMyCommands")
def get_my_commands(fake: FakeTelegram, p: Params) -> list[dict]:
    return fake.commands_for(p.json("scope"), p.str("language_code") or "")


@api("deleteMyCommands")
def delete_my_commands(fake: FakeTelegram, p: Params) -> bool:
    fake._commands.pop(fake.commands_key(p.json("scope"), p.str("language_code")), None)
    return True


def _profile_setter(field: str, limit: int) -> Handler:
    def setter(fake: FakeTelegram, p: Params) -> bool:
        value = p.str(field, "") or ""
        if len(value) > limit:
            raise bad_request(f"{field} is too long")  # guess
        fake.profile[(field, p.str("language_code") or "")] = value
        return True

    return setter


def _profile_getter(field: str) -> Handler:
    def getter(fake: FakeTelegram, p: Params) -> dict:
        return {field: fake.profile.get((field, p.str("language_code") or ""), "")}

    return getter


for _field, _limit, _suffix in (
    ("name", 64, "Name"),
    ("description", 512, "Description"),
    ("short_description", 120, "ShortDescription"),
):
    api(f"setMy{_suffix}")(_profile_setter(_field, _limit))
    api(f"getMy{_suffix}")(_profile_getter(_field))


@api("setChatMenuButton")
def set_chat_menu_button(fake: FakeTelegram, p: Params) -> bool:
    fake.profile["menu_button"] = p.json("menu_button") or {"type": "default"}
    return True


# ---------------------------------------------------------------------- sending


def _reply_to(chat: Chat, p: Params) -> dict[str, Any]:
    """``reply_to_message`` for reply_parameters / reply_to_message_id, if any."""
    reply = p.json("reply_parameters") or {}
    message_id = reply.get("message_id") or p.int("reply_to_message_id")
    if not message_id:
        return {}
    target = chat.messages.get(int(message_id))
    if target is None or target.deleted:
        if reply.get("allow_sending_without_reply") or p.bool("allow_sending_without_reply"):
            return {}
        raise bad_request("message to be replied not found")
    return {"reply_to_message": {k: v for k, v in target.raw.items() if k != "reply_to_message"}}


def _send(
    fake: FakeTelegram, chat: Chat, p: Params, message: ChatMessage, content: dict[str, Any]
) -> dict:
    """Common tail of the send* methods: markup, reply, storage; returns the Message."""
    keyboard = check_reply_markup(p.json("reply_markup"))
    content.update(_reply_to(chat, p))
    if keyboard:
        content["reply_markup"] = keyboard
    raw = fake.new_message_raw(chat, fake.bot_user, **content)
    message.message_id = raw["message_id"]
    message.raw = raw
    message.buttons = keyboard["inline_keyboard"] if keyboard else []
    fake.add_message(chat, message)
    return raw


def _with_entities(content: dict[str, Any], key: str, entities: list[dict]) -> dict[str, Any]:
    if entities:
        content[key] = entities
    return content


@api("sendMessage")
def send_message(fake: FakeTelegram, p: Params) -> dict:
    chat = fake.chat_for(p)
    if "text" not in p:
        raise bad_request("message text is empty")
    text, entities = message_text(
        p.str("text"),
        p.str("parse_mode"),
        p.json("entities"),
        strict_ampersand=fake.strict_ampersand,
    )
    message = ChatMessage(0, text, "text", p.str("parse_mode"), p.str("text"))
    content = _with_entities({"text": text}, "entities", entities)
    if "link_preview_options" in p:
        content["link_preview_options"] = p.json("link_preview_options")
    return _send(fake, chat, p, message, content)


def _upload(fake: FakeTelegram, p: Params, field: str, prefix: str, folder: str):
    """The file of a send* call: a new upload, a known file_id, or a URL (not fetched)."""
    given = p.file(field)
    if isinstance(given, UploadedFile):
        if not given.data:
            raise bad_request("file must be non-empty")
        mime = given.content_type
        if not mime or mime == "application/octet-stream":
            mime = mimetypes.guess_type(given.filename or "")[0] or "application/octet-stream"
        return fake.store_file(
            given.data, prefix=prefix, file_name=given.filename, mime_type=mime, folder=folder
        )
    if not given:
        raise bad_request(f"there is no {field} in the request")
    known = fake.find_file(given)
    if known:
        return known
    if given.startswith(("http://", "https://")):
        name = given.rstrip("/").rsplit("/", 1)[-1] or None
        return fake.store_file(
            None,
            prefix=prefix,
            file_name=name,
            mime_type=mimetypes.guess_type(given)[0],
            folder=folder,
        )
    raise bad_request("wrong file identifier/HTTP URL specified")


def _caption(fake: FakeTelegram, p: Params) -> tuple[str, dict[str, Any]]:
    caption, entities = caption_text(
        p.str("caption"),
        p.str("parse_mode"),
        p.json("caption_entities"),
        strict_ampersand=fake.strict_ampersand,
    )
    content: dict[str, Any] = {"caption": caption} if caption else {}
    return caption, _with_entities(content, "caption_entities", entities)


def photo_sizes(file_id: str, unique_id: str, data: bytes | None) -> list[dict]:
    """A thumbnail and the full size, as Telegram returns for a sent photo."""
    width, height = (image_size(data) if data else None) or (800, 600)
    scale = min(1.0, 90 / max(width, height, 1))
    size = len(data) if data else 0
    return [
        {
            "file_id": f"{file_id}{THUMB_SUFFIX}",
            "file_unique_id": f"{unique_id}s",
            "width": max(int(width * scale), 1),
            "height": max(int(height * scale), 1),
            "file_size": max(size // 10, 1),
        },
        {
            "file_id": file_id,
            "file_unique_id": unique_id,
            "width": width,
            "height": height,
            "file_size": size,
        },
    ]


@api("sendPhoto")
def send_photo(fake: FakeTelegram, p: Params) -> dict:
    chat = fake.chat_for(p)
    caption, content = _caption(fake, p)
    stored = _upload(fake, p, "photo", "AgACAgIAAxk", "photos")
    if isinstance(p.file("photo"), UploadedFile) and image_size(stored.data or b"") is None:
        raise bad_request("IMAGE_PROCESS_FAILED")
    content["photo"] = photo_sizes(stored.file_id, stored.file_unique_id, stored.data)
    message = ChatMessage(
        0,
        caption or None,
        "photo",
        p.str("parse_mode"),
        p.str("caption"),
        file_name=stored.file_name,
        file_bytes=stored.data,
    )
    return _send(fake, chat, p, message, content)


@api("sendDocument")
def send_document(fake: FakeTelegram, p: Params) -> dict:
    chat = fake.chat_for(p)
    caption, content = _caption(fake, p)
    stored = _upload(fake, p, "document", "BQACAgIAAxk", "documents")
    document = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": len(stored.data or b""),
    }
    if stored.file_name:
        document["file_name"] = stored.file_name
    if stored.mime_type:
        document["mime_type"] = stored.mime_type
    content["document"] = document
    message = ChatMessage(
        0,
        caption or None,
        "document",
        p.str("parse_mode"),
        p.str("caption"),
        file_name=stored.file_name,
        file_bytes=stored.data,
    )
    return _send(fake, chat, p, message, content)


@api("getFile")
def get_file(fake: FakeTelegram, p: Params) -> dict:
    stored = fake.find_file(p.str("file_id") or "")
    if stored is None:
        raise bad_request("invalid file_id")
    result = {
        "file_id": p.str("file_id"),
        "file_unique_id": stored.file_unique_id,
        "file_size": len(stored.data or b""),
        "file_path": stored.file_path,
    }
    return result


@api("sendChatAction")
def send_chat_action(fake: FakeTelegram, p: Params) -> bool:
    chat = fake.chat_for(p)
    action = p.str("action")
    if action not in CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    chat.chat_actions.append(action)
    return True


# ---------------------------------------------------------------------- editing, deleting


def _message_to_edit(fake: FakeTelegram, p: Params) -> tuple[Chat, ChatMessage]:
    if "inline_message_id" in p:
        raise bad_request("message to edit not found")  # no inline mode in the fake
    chat = fake.chat_for(p)
    message_id = p.int("message_id")
    message = chat.messages.get(message_id or 0)
    if message is None or message.deleted:
        raise bad_request("message to edit not found")
    if not message.from_bot:
        raise bad_request("message can't be edited")
    return chat, message


def _apply_edit(
    chat: Chat,
    message: ChatMessage,
    replaced: tuple[str, ...],
    changes: dict[str, Any],
    keyboard: dict | None,
) -> dict:
    """Swap the ``replaced`` fields for ``changes`` and set the keyboard (absent = removed).

    Refuses an edit that changes nothing, as Telegram does.
    """
    drop = {*replaced, "reply_markup", "edit_date"}
    new_raw = {k: v for k, v in message.raw.items() if k not in drop}
    new_raw.update(changes)
    if keyboard:
        new_raw["reply_markup"] = keyboard
    if new_raw == {k: v for k, v in message.raw.items() if k != "edit_date"}:
        raise bad_request(NOT_MODIFIED)
    new_raw["edit_date"] = int(time.time())
    message.raw = new_raw
    message.buttons = keyboard["inline_keyboard"] if keyboard else []
    message.edited = True
    chat.touch()
    return new_raw


@api("editMessageText")
def edit_message_text(fake: FakeTelegram, p: Params) -> dict:
    chat, message = _message_to_edit(fake, p)
    if message.kind != "text":
        raise bad_request("there is no text in the message to edit")
    if "text" not in p:
        raise bad_request("message text is empty")
    text, entities = message_text(
        p.str("text"),
        p.str("parse_mode"),
        p.json("entities"),
        strict_ampersand=fake.strict_ampersand,
        too_long="MESSAGE_TOO_LONG",
    )
    keyboard = check_reply_markup(p.json("reply_markup"))
    changes = _with_entities({"text": text}, "entities", entities)
    raw = _apply_edit(chat, message, ("text", "entities"), changes, keyboard)
    message.text, message.parse_mode, message.source = text, p.str("parse_mode"), p.str("text")
    return raw


@api("editMessageCaption")
def edit_message_caption(fake: FakeTelegram, p: Params) -> dict:
    chat, message = _message_to_edit(fake, p)
    if message.kind not in ("photo", "document"):
        raise bad_request("there is no caption in the message to edit")
    caption, changes = _caption(fake, p)
    keyboard = check_reply_markup(p.json("reply_markup"))
    raw = _apply_edit(chat, message, ("caption", "caption_entities"), changes, keyboard)
    message.text, message.parse_mode = caption or None, p.str("parse_mode")
    message.source = p.str("caption")
    return raw


@api("editMessageReplyMarkup")
def edit_message_reply_markup(fake: FakeTelegram, p: Params) -> dict:
    chat, message = _message_to_edit(fake, p)
    keyboard = check_reply_markup(p.json("reply_markup"))
    return _apply_edit(chat, message, (), {}, keyboard)


def _delete(chat: Chat, message_id: int | None) -> None:
    message = chat.messages.get(message_id or 0)
    if message is None or message.deleted:
        raise bad_request("message to delete not found")
    if time.time() - message.date > DELETE_WINDOW:
        raise bad_request("message can't be deleted")
    message.deleted = True
    chat.touch()


@api("deleteMessage")
def delete_message(fake: FakeTelegram, p: Params) -> bool:
    chat = fake.chat_for(p)
    _delete(chat, p.int("message_id"))
    return True


@api("deleteMessages")
def delete_messages(fake: FakeTelegram, p: Params) -> bool:
    """Messages that can't be found or deleted are skipped, as documented."""
    chat = fake.chat_for(p)
    ids = p.json("message_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        raise bad_request("message_ids must be a non-empty array of at most 100 identifiers")
    for message_id in ids:
        try:
            _delete(chat, int(message_id))
        except ApiError:
            continue
    return True


# ---------------------------------------------------------------------- callback queries


@api("answerCallbackQuery")
def answer_callback_query(fake: FakeTelegram, p: Params) -> bool:
    query = fake.callbacks.get(p.str("callback_query_id") or "")
    if query is None or query.answer is not None:
        raise bad_request(QUERY_TOO_OLD)
    text = p.str("text")
    if text is not None and len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    query.answer = {
        "callback_query_id": query.id,
        "text": text,
        "show_alert": p.bool("show_alert"),
        "url": p.str("url"),
    }
    return True
