"""Checks on what a bot sends: formatted text, inline keyboards, command lists, images.

Error descriptions are Telegram's where known. A few are best guesses (marked "guess"):
they are still 400 Bad Request, which is what a bot can rely on.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from .html_check import HtmlError, parse_html, trim, utf16_len
from .params import bad_request

BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
URL_SCHEMES = ("http://", "https://", "tg://")


def render_text(
    text: str | None, parse_mode: str | None, entities: Any, *, strict_ampersand: bool
) -> tuple[str, list[dict]]:
    """Visible text and entities of a text/caption, after parsing and trimming."""
    text = text or ""
    mode = (parse_mode or "").lower()
    if mode == "html":
        try:
            visible, found = parse_html(text, strict_ampersand=strict_ampersand)
        except HtmlError as exc:
            raise bad_request(f"can't parse entities: {exc}") from exc
    elif mode == "":
        visible, found = text, list(entities or [])
    elif mode in ("markdown", "markdownv2"):
        visible, found = text, []  # not parsed: the visible text keeps its markup characters
    else:
        raise bad_request("unsupported parse_mode")
    return trim(visible, found)


def message_text(
    params_text: str | None,
    parse_mode: str | None,
    entities: Any,
    *,
    strict_ampersand: bool,
    too_long: str = "message is too long",
) -> tuple[str, list[dict]]:
    """Text of sendMessage/editMessageText: 1..4096 UTF-16 units once parsed."""
    visible, found = render_text(
        params_text, parse_mode, entities, strict_ampersand=strict_ampersand
    )
    if not visible:
        raise bad_request("message text is empty")
    if utf16_len(visible) > 4096:
        raise bad_request(too_long)
    return visible, found


def caption_text(
    caption: str | None, parse_mode: str | None, entities: Any, *, strict_ampersand: bool
) -> tuple[str, list[dict]]:
    visible, found = render_text(caption, parse_mode, entities, strict_ampersand=strict_ampersand)
    if utf16_len(visible) > 1024:
        raise bad_request("message caption is too long")
    return visible, found


def check_reply_markup(markup: Any) -> dict | None:
    """Validate reply_markup; returns the inline keyboard to echo in the Message, if any."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        return {"inline_keyboard": _inline_rows(markup["inline_keyboard"])}
    if "keyboard" in markup:
        _reply_keyboard(markup["keyboard"])
    elif not (markup.get("remove_keyboard") or markup.get("force_reply")):
        raise bad_request("can't parse reply keyboard markup JSON object")
    return None


def _inline_rows(rows: Any) -> list[list[dict]]:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(
            'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
        )
    if sum(len(row) for row in rows) > 100:
        raise bad_request("reply markup is too long")  # guess
    return [[_inline_button(button) for button in row] for row in rows]


def _inline_button(button: Any) -> dict:
    prefix = "can't parse inline keyboard button: "
    if not isinstance(button, dict):
        raise bad_request(prefix + "InlineKeyboardButton must be an Object")
    if not isinstance(button.get("text"), str):
        raise bad_request(prefix + 'Field "text" must be of type String')
    if not button["text"].strip():
        raise bad_request("BUTTON_TEXT_INVALID")  # guess
    actions = [name for name in BUTTON_ACTIONS if name in button]
    if not actions:
        raise bad_request(prefix + "Text buttons are unallowed in the inline keyboard")
    if len(actions) > 1:
        raise bad_request(prefix + f"a button can have only one of {actions}")  # guess
    action = actions[0]
    value = button[action]
    if action == "callback_data":
        if not isinstance(value, str) or not 1 <= len(value.encode("utf-8")) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    elif action == "url" and (not isinstance(value, str) or not value.startswith(URL_SCHEMES)):
        raise bad_request("BUTTON_URL_INVALID")
    return {"text": button["text"], action: value}


def _reply_keyboard(rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request('field "keyboard" of the ReplyKeyboardMarkup must be an Array of Arrays')
    for row in rows:
        for button in row:
            text = button if isinstance(button, str) else (button or {}).get("text")
            if not isinstance(text, str) or not text:
                raise bad_request(
                    'can\'t parse keyboard button: Field "text" must be of type String'
                )


def check_commands(commands: Any) -> list[dict[str, str]]:
    """setMyCommands: 1-32 of [a-z0-9_] per command, description 1-256, at most 100."""
    if not isinstance(commands, list):
        raise bad_request("can't parse commands JSON object")
    if len(commands) > 100:
        raise bad_request("BOT_COMMANDS_TOO_MUCH")
    checked = []
    for item in commands:
        command = item.get("command") if isinstance(item, dict) else None
        description = item.get("description") if isinstance(item, dict) else None
        if not isinstance(command, str) or not COMMAND_RE.fullmatch(command):
            raise bad_request("BOT_COMMAND_INVALID")
        if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        checked.append({"command": command, "description": description})
    return checked


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG; None when the bytes are not such an image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data) or (800, 600)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return 512, 512
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None
