"""A python-telegram-bot request class that answers like the Bot API, without any network.

Every call python-telegram-bot makes ends in `do_request`; here it is answered from
memory. The parameters are encoded the way `HTTPXRequest` encodes them and the answer is
a JSON body that python-telegram-bot parses as usual, so only the socket is missing.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from telegram._utils.defaultvalue import DEFAULT_NONE
from telegram._utils.types import ODVInput
from telegram.request import BaseRequest, RequestData

BOT_ID = 123
BOT_TOKEN = f"{BOT_ID}:bench"
BOT_USER = {
    "id": BOT_ID, "is_bot": True, "first_name": "Haven", "username": "haven_bench_bot",
    "can_join_groups": False, "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
# Texts that mean a turn did not go as scripted (see prompts/en/system/).
TROUBLE = {
    "Something went wrong on Haven's side": "failed turns (system/busy)",
    "I'm not sure which option you meant": "unmatched choices",
    "I couldn't recognise that country": "unmatched countries",
    "Sorry, I don't know the command": "unknown commands",
}


class OfflineBotAPI(BaseRequest):
    """Answers getMe, sendMessage, answerCallbackQuery... from memory.

    `on_send(chat_id)` is called the moment a sendMessage reaches this object.
    """

    def __init__(self, on_send: Callable[[int], None] = lambda _chat_id: None) -> None:
        self.on_send = on_send
        self.calls: Counter[str] = Counter()
        self.trouble: Counter[str] = Counter()
        self._message_ids = itertools.count(1)

    @property
    def read_timeout(self) -> float | None:
        return None

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = DEFAULT_NONE,
        write_timeout: ODVInput[float] = DEFAULT_NONE,
        connect_timeout: ODVInput[float] = DEFAULT_NONE,
        pool_timeout: ODVInput[float] = DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        endpoint = url.rsplit("/", 1)[-1]
        self.calls[endpoint] += 1
        # What HTTPXRequest hands to httpx: every value JSON-encoded.
        params = request_data.json_parameters if request_data else {}
        if endpoint == "sendMessage":
            self.on_send(int(params["chat_id"]))
            result: Any = self._message(params)
        elif endpoint == "getMe":
            result = BOT_USER
        elif endpoint == "getUpdates":
            result = []
        elif endpoint in ("editMessageReplyMarkup", "sendPhoto", "sendDocument"):
            result = self._message(params)
        elif endpoint in ("setMyCommands", "deleteWebhook", "answerCallbackQuery", "setWebhook",
                          "deleteMyCommands", "sendChatAction", "close", "logOut"):
            result = True
        else:
            body = {"ok": False, "error_code": 404, "description": f"Not Found: {endpoint}"}
            return 404, json.dumps(body).encode()
        return 200, json.dumps({"ok": True, "result": result}).encode()

    def _message(self, params: dict[str, str]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        text = params.get("text", "")
        for start, kind in TROUBLE.items():
            if text.startswith(start):
                self.trouble[kind] += 1
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Sam"},
            "from": BOT_USER,
            "text": text,
        }
        if "reply_markup" in params:
            message["reply_markup"] = json.loads(params["reply_markup"])
        return message
