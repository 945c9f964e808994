"""A fake Telegram Bot API server (aiohttp) holding the state of private chats.

Routes, as on api.telegram.org:
    /bot{token}/{method}         Bot API calls (GET or POST; method names case-insensitive)
    /file/bot{token}/{file_path} downloads of files returned by getFile

The Bot API methods themselves live in ``methods.py``; this module holds the state, the
update queue (getUpdates long polling or webhook delivery) and the test hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import secrets
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .methods import API, KNOWN_METHODS, THUMB_SUFFIX
from .models import Chat, ChatMessage
from .params import ApiError, Params, bad_request, read_request

if TYPE_CHECKING:
    from .user import FakeUser

NOT_BY_DEFAULT = {"chat_member", "message_reaction", "message_reaction_count"}
SERVER_ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class Signal:
    """Wakes every waiter whenever the fake's state changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes | None
    file_name: str | None = None
    mime_type: str | None = None
    file_path: str | None = None


@dataclass
class Failure:
    status: int
    retry_after: int | None
    description: str | None


@dataclass
class CallbackQuery:
    id: str
    chat_id: int
    message_id: int
    data: str
    answer: dict[str, Any] | None = None


class FakeTelegram:
    """The fake Bot API. ``await start()``, point the bot at ``base_url``, drive with users."""

    def __init__(
        self,
        token: str = "123456:TEST-token",
        bot_username: str = "haven_test_bot",
        *,
        strict_ampersand: bool = True,
        webhook_max_attempts: int = 6,
    ):
        self.token = token
        self.bot_username = bot_username
        self.strict_ampersand = strict_ampersand
        self.webhook_max_attempts = webhook_max_attempts
        self.bot_user = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": "Haven",
            "username": bot_username,
        }
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[tuple[str, dict[str, Any], str]] = []
        self.chats: dict[int, Chat] = {}
        self.users: dict[int, FakeUser] = {}
        self.files: dict[str, StoredFile] = {}
        self.callbacks: dict[str, CallbackQuery] = {}
        self.profile: dict[str, Any] = {}
        self.internal_errors: list[str] = []  # tracebacks of bugs in the fake itself
        self.dropped_updates: list[dict[str, Any]] = []
        self.base_url = ""
        self._commands: dict[str, list[dict[str, str]]] = {}
        self._failures: dict[str, list[Failure]] = {}
        self._outages: dict[str, tuple[float, Failure]] = {}  # method -> (until, failure)
        self._pending: list[dict[str, Any]] = []
        self._update_ids = itertools.count(700_000_001)
        self._allowed_updates: list[str] | None = None  # None or []: the default set
        self._poll_generation = 0
        self._webhook: dict[str, Any] | None = None
        self._webhook_task: asyncio.Task | None = None
        self._webhook_error: tuple[int, str] | None = None
        self._signal = Signal()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        # handler_cancellation: a long poll whose client went away must not linger.
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        self._closing = True
        self._signal.fire()
        await self._stop_webhook_task()
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """``{base_url}/bot{token}``: where the bot's calls go."""
        return f"{self.base_url}/bot{self.token}"

    @property
    def base_file_url(self) -> str:
        return f"{self.base_url}/file/bot"

    # ------------------------------------------------------------------ test hooks

    def user(
        self, user_id: int = 1001, first_name: str = "Sam", language_code: str = "en", **extra: Any
    ) -> FakeUser:
        """The person in the private chat ``user_id`` (created on first use)."""
        from .user import FakeUser

        if user_id not in self.users:
            person = {
                "id": user_id,
                "is_bot": False,
                "first_name": first_name,
                "language_code": language_code,
                **extra,
            }
            self.chats[user_id] = Chat(user=person)
            self.users[user_id] = FakeUser(self, self.chats[user_id])
        return self.users[user_id]

    def fail_next(
        self,
        method: str,
        status: int = 429,
        retry_after: int | None = 2,
        count: int = 1,
        description: str | None = None,
    ) -> None:
        """Make the next ``count`` calls of ``method`` fail (429 flood wait, 5xx, or any)."""
        failure = Failure(status, retry_after if status == 429 else None, description)
        self._failures.setdefault(method.lower(), []).extend([failure] * count)

    def fail_for(
        self,
        method: str,
        seconds: float,
        status: int = 429,
        retry_after: int | None = 2,
        description: str | None = None,
    ) -> None:
        """Make every call of ``method`` fail for the next ``seconds`` (Telegram down, or
        rate limiting, for a while); calls queued by ``fail_next`` fail first."""
        failure = Failure(status, retry_after if status == 429 else None, description)
        self._outages[method.lower()] = (time.monotonic() + seconds, failure)

    def failing(self, method: str) -> bool:
        """True while an outage of ``method`` set by ``fail_for`` lasts."""
        outage = self._outages.get(method.lower())
        return outage is not None and time.monotonic() < outage[0]

    def age_messages(self, chat_id: int, seconds: int) -> None:
        """Pretend every message of the chat was sent ``seconds`` earlier."""
        for message in self.chats[chat_id].messages.values():
            message.raw["date"] -= seconds

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Parameters of every call of ``method`` (case-insensitive), in order."""
        return [params for name, params in self.requests if name.lower() == method.lower()]

    @property
    def commands(self) -> list[dict[str, str]]:
        """Commands set with setMyCommands for the default scope and no language."""
        return self.commands_for()

    def commands_for(self, scope: dict | None = None, language_code: str = "") -> list[dict]:
        return list(self._commands.get(self.commands_key(scope, language_code), []))

    @staticmethod
    def commands_key(scope: dict | None, language_code: str | None) -> str:
        scope = scope or {"type": "default"}
        return json.dumps([scope, language_code or ""], sort_keys=True)

    @property
    def webhook(self) -> dict[str, Any] | None:
        return dict(self._webhook) if self._webhook else None

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        return list(self._pending)

    async def deliver_pending(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the webhook has taken every queued update (or they were dropped)."""
        if not self._webhook:
            raise AssertionError("deliver_pending() needs a webhook; the bot never set one")
        deadline = time.monotonic() + timeout
        while self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(self._pending)} update(s) not delivered to {self._webhook['url']} "
                    f"within {timeout}s; last error: {self._webhook_error}"
                )
            await self._signal.wait(remaining)

    # ------------------------------------------------------------------ HTTP

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            values, files = await read_request(request)
        except ApiError as exc:
            return self._error_response(method, {}, exc)
        self.requests.append((method, {**values, **files}))
        try:
            result = await self._call(request.match_info["token"], method, Params(values, files))
        except ApiError as exc:
            return self._error_response(method, {**values, **files}, exc)
        except Exception as exc:  # a bug in the fake: make it visible in test failures
            self.internal_errors.append(traceback.format_exc())
            error = ApiError(500, f"Internal Server Error (fake Telegram bug: {exc!r})")
            return self._error_response(method, {**values, **files}, error)
        return web.json_response({"ok": True, "result": result})

    def _error_response(self, method: str, params: dict, error: ApiError) -> web.Response:
        self.errors.append((method, params, error.description))
        body: dict[str, Any] = {
            "ok": False,
            "error_code": error.code,
            "description": error.description,
        }
        if error.parameters:
            body["parameters"] = error.parameters
        return web.json_response(body, status=error.code)

    async def _call(self, token: str, method: str, params: Params) -> Any:
        self._check_token(token)
        name = method.lower()
        handler = API.get(name)
        if handler is None:
            if name in KNOWN_METHODS:
                raise ApiError(501, f"Not Implemented: the fake Telegram has no {method}")
            raise ApiError(404, "Not Found")
        self._inject_failure(name)
        result = handler(self, params)
        if inspect.isawaitable(result):
            result = await result
        self._signal.fire()
        return result

    def _check_token(self, token: str) -> None:
        bot_id, _, secret = token.partition(":")
        if not bot_id.isdigit() or not secret:
            raise ApiError(404, "Not Found")
        if token != self.token:
            raise ApiError(401, "Unauthorized")

    def _inject_failure(self, name: str) -> None:
        queue = self._failures.get(name)
        if queue:
            failure = queue.pop(0)
        elif self.failing(name):
            failure = self._outages[name][1]
        else:
            return
        if failure.status == 429:
            retry = failure.retry_after or 1
            raise ApiError(
                429,
                failure.description or f"Too Many Requests: retry after {retry}",
                {"retry_after": retry},
            )
        text = failure.description or SERVER_ERRORS.get(failure.status, "Internal Server Error")
        raise ApiError(failure.status, text)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        path = request.match_info["path"]
        for stored in self.files.values():
            if stored.file_path == path and stored.data is not None:
                return web.Response(body=stored.data)
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    # ------------------------------------------------------------------ chats and files

    def chat_for(self, params: Params, *, required: bool = True) -> Chat:
        """The chat named by chat_id; refuses unknown chats and chats that blocked the bot."""
        raw = params.raw("chat_id")
        if raw is None or raw == "":
            raise bad_request("chat_id is empty")
        try:
            chat = self.chats.get(int(raw))
        except (TypeError, ValueError):
            chat = None
        if chat is None:
            raise bad_request("chat not found")
        if chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        chat.touch()
        return chat

    def store_file(
        self,
        data: bytes | None,
        *,
        prefix: str,
        file_name: str | None = None,
        mime_type: str | None = None,
        folder: str = "documents",
    ) -> StoredFile:
        number = len(self.files) + 1
        extension = f".{file_name.rsplit('.', 1)[1]}" if file_name and "." in file_name else ""
        stored = StoredFile(
            file_id=f"{prefix}{secrets.token_urlsafe(40)}",
            file_unique_id=f"AQAD{secrets.token_urlsafe(8)}",
            data=data,
            file_name=file_name,
            mime_type=mime_type,
            file_path=f"{folder}/file_{number}{extension}",
        )
        self.files[stored.file_id] = stored
        return stored

    def find_file(self, file_id: str) -> StoredFile | None:
        """A stored file by its file_id, or by the id of its photo thumbnail."""
        return self.files.get(file_id) or self.files.get(file_id.removesuffix(THUMB_SUFFIX))

    async def wait_for_change(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """Sleep until the state changes (a call, an update, a delivery) or ``timeout``."""
        await self._signal.wait(timeout)

    def new_message_raw(self, chat: Chat, sender: dict[str, Any], **content: Any) -> dict:
        return {
            "message_id": chat.next_message_id(),
            "from": dict(sender),
            "chat": chat.as_chat(),
            "date": int(time.time()),
            **content,
        }

    def add_message(self, chat: Chat, message: ChatMessage) -> ChatMessage:
        chat.messages[message.message_id] = message
        chat.touch()
        self._signal.fire()
        return message

    # ------------------------------------------------------------------ updates

    def enqueue_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Queue an update unless allowed_updates excludes its type."""
        allowed = self._allowed_updates
        if (allowed and kind not in allowed) or (not allowed and kind in NOT_BY_DEFAULT):
            return None
        update = {"update_id": next(self._update_ids), kind: payload}
        self._pending.append(update)
        self._signal.fire()
        return update

    def set_allowed_updates(self, allowed: list[str] | None) -> None:
        if allowed is not None:
            self._allowed_updates = list(allowed)

    def drop_pending(self) -> None:
        self._pending.clear()

    async def get_updates(self, offset: int | None, limit: int, timeout: float) -> list[dict]:  # noqa: ASYNC109
        """Long polling; a newer getUpdates ends an older one with 409, as on Telegram."""
        self._poll_generation += 1
        generation = self._poll_generation
        self._confirm(offset)
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            if generation != self._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            self.refuse_polling_with_webhook()
            remaining = deadline - time.monotonic()
            if self._pending or remaining <= 0 or self._closing:
                return self._pending[:limit]
            await self._signal.wait(remaining)

    def refuse_polling_with_webhook(self) -> None:
        if self._webhook:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )

    def _confirm(self, offset: int | None) -> None:
        if offset is None or offset == 0:
            return
        if offset < 0:
            self._pending = self._pending[offset:]
        else:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]

    # ------------------------------------------------------------------ webhook

    async def set_webhook(self, info: dict[str, Any], drop_pending: bool) -> None:
        await self._stop_webhook_task()
        if drop_pending:
            self.drop_pending()
        self._webhook = info
        self._webhook_error = None
        self._poll_generation += 1  # a held getUpdates now answers 409
        self._webhook_task = asyncio.create_task(self._deliver_forever())
        self._signal.fire()

    async def delete_webhook(self, drop_pending: bool) -> bool:
        """Returns whether a webhook was set."""
        was_set = self._webhook is not None
        await self._stop_webhook_task()
        self._webhook = None
        if drop_pending:
            self.drop_pending()
        return was_set

    def webhook_info(self) -> dict[str, Any]:
        if not self._webhook:
            return {
                "url": "",
                "has_custom_certificate": False,
                "pending_update_count": len(self._pending),
            }
        info = {**self._webhook, "pending_update_count": len(self._pending)}
        info.pop("secret_token", None)
        if self._webhook_error:
            info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    async def _stop_webhook_task(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver_forever(self) -> None:
        attempts = 0
        while True:
            if not self._pending:
                await self._signal.wait(None)
                continue
            update = self._pending[0]
            error = await self._post_update(update)
            if error is None:
                attempts = 0
            else:
                attempts += 1
                self._webhook_error = (int(time.time()), error)
                if attempts < self.webhook_max_attempts:
                    await asyncio.sleep(min(0.05 * 2**attempts, 1.0))
                    continue
                self.dropped_updates.append(update)
                attempts = 0
            if self._pending and self._pending[0] is update:
                self._pending.pop(0)
            self._signal.fire()

    async def _post_update(self, update: dict[str, Any]) -> str | None:
        """POST one update to the webhook; returns an error text, or None on a 2xx answer."""
        assert self._webhook and self._session
        headers = {}
        if self._webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = self._webhook["secret_token"]
        try:
            async with self._session.post(
                self._webhook["url"],
                json=update,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"Wrong response from the webhook: {response.status} {response.reason}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"Connection failed: {exc!r}"
