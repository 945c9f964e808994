"""Telegram: python-telegram-bot in front of the engine (long polling or a webhook).

Updates for different people are handled concurrently; updates for one chat are
handled one after another, replies included, so a person never sees answers out
of order.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter
from telegram import (
    Bot,
    BotCommand,
    CallbackQuery,
    InputFile,
    Update,
)
from telegram import Message as TelegramMessage
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    ContextTypes,
    ExtBot,
    TypeHandler,
)
from telegram.request import BaseRequest, HTTPXRequest
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from bot import metrics
from bot.adapters.splitting import fits, split_html
from bot.engine import Engine
from bot.logs import update_logged
from bot.messages import Document, Incoming, InputKind, Message, Reply, text
from bot.scheduler import Scheduler, scheduler_config
from bot.settings import PAID_BROADCAST_RATE, SEND_RATE, Settings
from bot.workers import HEARTBEAT, SharedLimit, WorkerShare

log = logging.getLogger(__name__)
T = TypeVar("T")


def _is_transient(error: BaseException) -> bool:
    """A network hiccup worth retrying; BadRequest is a NetworkError in PTB, but final."""
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


async def with_retries(call: Callable[[], Awaitable[T]], method: str | None = None) -> T:
    """Retry a Bot API call through network errors, with backoff, a few times at most.

    429s are retried by the rate limiter (honouring retry_after); a timed-out send may
    have arrived, so a retry can at worst repeat one message, never lose one silently.
    The first try is made directly: setting up the retry loop costs more than a send.
    A call still failing after its retries is logged and counted (`metrics.gave_up`) as
    `method` (by default the Bot API name of the called method), then raised.
    """
    try:
        return await call()
    except NetworkError as error:
        if not _is_transient(error):
            raise
        log.info("a Bot API call failed (%s); trying again", type(error).__name__)
    retrying = AsyncRetrying(
        retry=retry_if_exception(_is_transient), stop=stop_after_attempt(3),
        wait=wait_exponential_jitter(multiplier=0.5, max=8), reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                metrics.retrying("network")
                return await call()
    except NetworkError as error:
        if _is_transient(error):
            metrics.gave_up(method or _api_name(call), "network")
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _api_name(call: Callable[..., object]) -> str:
    """`partial(bot.delete_messages, ...)` -> "deleteMessages"."""
    name = getattr(getattr(call, "func", call), "__name__", "unknown")
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


MEDIA_KINDS = ("sticker", "photo", "voice", "video", "video_note", "animation", "audio",
               "document", "location", "contact", "poll", "dice")
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Concurrent across chats, strictly in order within one chat."""

    def __init__(self, max_concurrent_updates: int = 256) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        if not isinstance(update, Update) or update.effective_chat is None:
            await coroutine
            return
        chat = update.effective_chat
        lock = self._locks.get(chat.id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[chat.id] = lock
        # The update's id on every log line of its handling, the error handler's included.
        async with lock:
            with update_logged(update.update_id):
                await coroutine

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class HavenBot(ExtBot[Any]):
    """The bot, plus a way to send a message without parsing Telegram's answer into a
    `telegram.Message` (most of the cost of a send, and only the id is ever needed)."""

    async def send_html(self, chat_id: int, text: str, reply_markup: str | None = None,
                        paid_broadcast: bool = False) -> int:
        """Send Telegram HTML; `reply_markup` is already JSON. Returns the message id.

        With `paid_broadcast`, the message is sent with allow_paid_broadcast: Telegram takes
        up to 1,000 such messages a second (for a fee), and AIORateLimiter paces them at that
        rate instead of the usual 30 a second."""
        return await self._send_for_id("sendMessage", chat_id, paid_broadcast, {
            "text": text, "parse_mode": ParseMode.HTML, "reply_markup": reply_markup})

    async def send_upload(self, method: str, field: str, chat_id: int, upload: InputFile,
                          paid_broadcast: bool = False) -> int:
        """Send a file as `method` (sendPhoto, sendDocument) with it in `field`; returns the
        message id, as `send_html` does."""
        return await self._send_for_id(method, chat_id, paid_broadcast, {field: upload})

    async def _send_for_id(self, method: str, chat_id: int, paid_broadcast: bool,
                           data: dict[str, Any]) -> int:
        """Call `method` for `chat_id` with `data` (as a paid broadcast, if asked); the id of
        the message sent, read from Telegram's answer without parsing the rest."""
        result = await self._post(method, {
            "chat_id": chat_id, **data,
            "allow_paid_broadcast": True if paid_broadcast else None,
        })
        return int(result["message_id"])


# Set while a scheduled message (a daily prompt, a check-back) is being sent.
SCHEDULED: contextvars.ContextVar[bool] = contextvars.ContextVar("scheduled", default=False)


class HavenRateLimiter(AIORateLimiter):
    """AIORateLimiter, with replies to people who write ahead of scheduled messages.

    Both share the overall limit, which AIORateLimiter grants in arrival order. Scheduled
    messages take their turn one at a time, so that at most one of them waits for the
    shared limiter at any moment: a reply waits behind one scheduled message at most, never
    behind a fan-out's worth, and the scheduled ones still get all the capacity replies
    leave. Paid broadcasts have AIORateLimiter's own limiter and are not held back. 429s are
    handled by AIORateLimiter: every request waits out retry_after, then it is retried; here
    they are counted, and a request given up after its retries is logged.
    """

    def __init__(self, overall_max_rate: float, max_retries: int) -> None:
        super().__init__(overall_max_rate=overall_max_rate, max_retries=max_retries)
        self._scheduled_turn = asyncio.Lock()
        self.overall_max_rate = overall_max_rate

    def shared_limits(self) -> list[SharedLimit]:
        """The limits that are the bot's as a whole, to be split between workers."""
        limits = [SharedLimit(self._apb_limiter, PAID_BROADCAST_RATE)]
        if self._base_limiter is not None:
            limits.append(SharedLimit(self._base_limiter, self.overall_max_rate))
        return limits

    async def process_request(self, callback: Any, args: Any, kwargs: dict[str, Any],
                              endpoint: str, data: dict[str, Any],
                              rate_limit_args: int | None) -> Any:
        tries = 0

        async def counted(*call_args: Any, **call_kwargs: Any) -> Any:
            nonlocal tries
            tries += 1
            if tries > 1:
                metrics.retrying("rate_limited")
            try:
                return await callback(*call_args, **call_kwargs)
            except RetryAfter:
                metrics.rate_limited()
                raise

        try:
            return await super().process_request(counted, args, kwargs, endpoint, data,
                                                 rate_limit_args)
        except RetryAfter:
            metrics.gave_up(endpoint, "rate_limited")
            raise

    async def _run_request(self, chat: bool, group: str | int | bool,
                           allow_paid_broadcast: bool, callback: Any, args: Any,
                           kwargs: dict[str, Any]) -> Any:
        shared = self._base_limiter
        if chat and shared is not None and not allow_paid_broadcast and SCHEDULED.get():
            async with self._scheduled_turn:
                await shared.acquire()
            chat = False  # its share of the overall limit is taken already
        return await super()._run_request(chat, group, allow_paid_broadcast, callback, args,
                                          kwargs)


class TelegramAdapter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def install(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        application.add_handler(TypeHandler(Update, self.on_update))
        application.add_error_handler(self.on_error)

    async def set_commands(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        commands = [BotCommand(command, description[:256])
                    for command, description in self.engine.command_menu()]
        await application.bot.set_my_commands(commands)

    async def on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Handles one update, timed and counted (its log lines carry its update id: see
        PerChatUpdateProcessor)."""
        kind = update_kind(update)
        with metrics.handling_update(kind):
            await self._handle(kind, update, context)
            log.debug("update handled", extra={"kind": kind})

    async def _handle(self, kind: str, update: Update,
                      context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if kind == "other" or chat is None:
            # An edit of an earlier answer (taken as first sent), or anything outside a
            # private chat (Haven talks one to one only): nothing to do.
            return
        if kind == "press" and update.callback_query is not None:
            await self._on_press(update.callback_query, update.update_id, context)
        elif kind == "message" and update.message is not None:
            reply = await self.engine.handle(incoming_from(update.message, update.update_id))
            await self.send(context.bot, chat.id, reply)
        elif kind == "member" and update.my_chat_member is not None:
            status = update.my_chat_member.new_chat_member.status
            await self.engine.set_blocked(chat.id, status in ("kicked", "left"))

    async def _on_press(self, query: CallbackQuery, update_id: int,
                        context: ContextTypes.DEFAULT_TYPE) -> None:
        user = query.from_user
        reply = await self.engine.handle(Incoming(
            chat_id=query.message.chat.id if query.message else user.id,
            kind=InputKind.PRESS, text=query.data or "", first_name=user.first_name or "",
            language_code=user.language_code, update_id=update_id,
        ))
        # Answering the press and taking the old buttons away are niceties: if Telegram
        # refuses them or does not answer in time, the reply (the next step) still goes out.
        try:
            await query.answer(text=reply.notice)
        except TelegramError as error:
            log.info("a button press could not be answered: %s", type(error).__name__)
        if isinstance(query.message, TelegramMessage) and query.message.reply_markup:
            # The choice is made: take the buttons away so they cannot be pressed again.
            try:
                await query.message.edit_reply_markup(reply_markup=None)
            except TelegramError as error:
                log.info("could not remove an old keyboard: %s", type(error).__name__)
        chat_id = query.message.chat.id if query.message else user.id
        await self.send(context.bot, chat_id, reply)

    async def send(self, bot: Bot, chat_id: int, reply: Reply,
                   paid_broadcast: bool = False) -> bool:
        """Send a reply; False if the person has blocked Haven. Scheduled messages may go as
        paid broadcasts (see `HavenBot.send_html`); replies never do."""
        assert isinstance(bot, HavenBot)
        sent: list[int] = []
        try:
            await self._delete(bot, chat_id, reply.delete_message_ids)
            for message in coalesce(reply.messages):
                for document in message.documents:
                    sent.append(await self._send_file(bot, chat_id, document, paid_broadcast))
                if not message.text.strip():
                    continue
                parts = split_html(message.text)
                for index, part in enumerate(parts):
                    markup = _keyboard(message) if index == len(parts) - 1 else None
                    sent.append(await with_retries(partial(
                        bot.send_html, chat_id, part, markup, paid_broadcast), "sendMessage"))
        except Forbidden:
            log.info("the person has blocked Haven; nothing more is sent")
            await self.engine.set_blocked(chat_id, True)
            return False
        finally:
            metrics.messages_sent(len(sent), scheduled=SCHEDULED.get())
            if sent and reply.remember_sent:
                self.engine.remember_sent(chat_id, sent)
        return True

    async def _send_file(self, bot: HavenBot, chat_id: int, document: Document,
                         paid_broadcast: bool = False) -> int:
        """A picture as a photo, anything else as a document; returns its message id."""
        upload = InputFile(document.content, filename=document.file_name)
        if document.mime_type.startswith("image/"):
            action, method, field = ChatAction.UPLOAD_PHOTO, "sendPhoto", "photo"
        else:
            action, method, field = ChatAction.UPLOAD_DOCUMENT, "sendDocument", "document"
        await bot.send_chat_action(chat_id, action)
        return await with_retries(partial(
            bot.send_upload, method, field, chat_id, upload, paid_broadcast), method)

    async def _delete(self, bot: Bot, chat_id: int, message_ids: list[int]) -> None:
        """Delete what Telegram still lets a bot delete; ids it refuses are skipped."""
        for start in range(0, len(message_ids), 100):
            try:
                batch = message_ids[start : start + 100]
                await with_retries(partial(bot.delete_messages, chat_id, batch))
            except BadRequest as error:
                log.info("some messages could not be deleted: %s", error.message)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        # The update itself is never logged: it holds what the person wrote.
        if isinstance(error, TelegramError):
            log.warning("Telegram error while handling an update: %s", type(error).__name__)
        else:
            log.error("error while handling an update", exc_info=error)


def update_kind(update: Update) -> str:
    """What an update is, for handling and for the metrics: message, press, member, or other
    (edits, and anything outside a private chat, which Haven does not act on)."""
    chat = update.effective_chat
    if chat is None or chat.type != "private":
        return "other"
    if update.callback_query is not None:
        return "press"
    if update.message is not None:
        return "message"
    if update.my_chat_member is not None:
        return "member"
    return "other"


def incoming_from(message: TelegramMessage, update_id: int | None = None) -> Incoming:
    user = message.from_user
    extra: dict[str, Any] = {
        "first_name": (user.first_name if user else "") or "",
        "language_code": user.language_code if user else None,
    }
    extra["message_id"] = message.message_id
    extra["update_id"] = update_id
    if message.text is not None:
        return text(message.chat.id, message.text, **extra)
    media = next((kind for kind in MEDIA_KINDS if getattr(message, kind, None)), "other")
    return Incoming(chat_id=message.chat.id, kind=InputKind.OTHER, media=media, **extra)


def coalesce(messages: list[Message]) -> list[Message]:
    """Join a reply's messages into as few chat messages as fit.

    Templates split a reply into short messages, one idea each; on Telegram they go out
    as paragraphs of one message where possible, since Telegram allows a bot about one
    message a second per chat and each message is a notification. A message with
    buttons or files ends a group, so buttons stay under the words they belong to.
    """
    joined: list[Message] = []
    pending: list[str] = []
    for message in messages:
        text = "\n\n".join([*pending, message.text])
        if message.documents or not fits(text):
            if pending:
                joined.append(Message("\n\n".join(pending)))
            pending = []
            text = message.text
        if message.buttons or message.documents:
            joined.append(Message(text, message.buttons, message.documents))
            pending = []
        else:
            pending = [text]
    if pending:
        joined.append(Message("\n\n".join(pending)))
    return joined


def _keyboard(message: Message) -> str | None:
    """The inline keyboard as the Bot API's JSON (cheaper than building PTB objects)."""
    if not message.buttons:
        return None
    return json.dumps({"inline_keyboard": [
        [{"text": button.label, "callback_data": button.data} for button in row]
        for row in message.buttons
    ]}, ensure_ascii=False, separators=(",", ":"))


def build_application(
    settings: Settings, engine: Engine, rate_limited: bool = True,
    request: BaseRequest | None = None, polling: bool = True,
) -> Application[Any, Any, Any, Any, Any, Any]:
    """The python-telegram-bot Application for Haven; `request` replaces the HTTP client."""
    assert settings.telegram_bot_token is not None
    adapter = TelegramAdapter(engine)
    base = settings.telegram_api_base_url

    background: list[asyncio.Task[None]] = []
    # Scheduled messages go out through their own lane (a burst of one second's worth at
    # most), and then, like replies, through the rate limiter, which keeps everything under
    # Telegram's limits and, on a 429, holds every send for its retry_after (retrying a
    # send three times at most). Without paid broadcasts the lane and the replies share
    # SEND_RATE, replies first (see HavenRateLimiter); paid broadcasts have their own limit
    # of 1,000 a second, apart from the replies'.
    paid_broadcast = settings.haven_paid_broadcast
    lane = AsyncLimiter(settings.prompt_rate, 1)

    async def send_prompt(chat_id: int, reply: Reply) -> bool:
        async with lane:
            scheduled = SCHEDULED.set(True)
            try:
                return await adapter.send(application.bot, chat_id, reply, paid_broadcast)
            finally:
                SCHEDULED.reset(scheduled)

    rate_limiter = (HavenRateLimiter(overall_max_rate=SEND_RATE, max_retries=3)
                    if rate_limited else None)
    # Several workers sending for this bot split its limits (see bot.workers).
    share = WorkerShare(engine.repository, [
        SharedLimit(lane, settings.prompt_rate),
        *(rate_limiter.shared_limits() if rate_limiter is not None else []),
    ], engine.clock)

    async def post_init(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        await adapter.set_commands(application)
        others = False
        try:
            others = await share.beat() > 1  # before the first scheduled send
        except Exception:
            log.exception("could not count the workers; sending at the whole bot's rate")
        background.append(asyncio.create_task(share.run_forever(), name="worker share"))
        if engine.daily is not None:
            scheduler = Scheduler(engine, send_prompt, scheduler_config(settings),
                                  pace=lambda: lane.max_rate)
            # Joining running workers: wait until they have seen this one and taken their
            # smaller share, or together they would send over the limit for a moment.
            delay = HEARTBEAT.total_seconds() if others else 0.0
            background.append(asyncio.create_task(scheduler.run_forever(delay), name="scheduler"))

    async def post_stop(_application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        for task in background:
            task.cancel()
        await share.leave()

    async def post_shutdown(_application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        await engine.close()

    bot = HavenBot(
        settings.telegram_bot_token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
        request=request or HTTPXRequest(connection_pool_size=256),
        get_updates_request=request or HTTPXRequest(),
        rate_limiter=rate_limiter,
    )
    builder: ApplicationBuilder[Any, Any, Any, Any, Any, Any] = (
        ApplicationBuilder()
        .bot(bot)
        .concurrent_updates(PerChatUpdateProcessor())
        .post_init(post_init)
        .post_stop(post_stop)
        .post_shutdown(post_shutdown)
    )
    if not polling:
        builder = builder.updater(None)
    application = builder.build()
    adapter.install(application)
    return application


def run_telegram(settings: Settings, webhook: bool) -> int:
    from bot.app import build_engine, built

    if webhook and not (settings.webhook_url and settings.webhook_secret):
        log.error("Webhook mode needs WEBHOOK_URL (where Telegram should post updates) and "
                  "WEBHOOK_SECRET (so that Telegram's requests can be told apart)")
        return 2
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    engine = loop.run_until_complete(build_engine(settings))
    if webhook:
        from aiohttp import web

        from bot.adapters.webhook import build_webhook_app

        application = build_application(settings, engine, polling=False)
        built()
        web.run_app(build_webhook_app(settings, application, engine), host="0.0.0.0",
                    port=settings.port, loop=loop, print=None, access_log=None)
    else:
        log.info("Haven is starting (long polling)")
        application = build_application(settings, engine)
        built()
        application.run_polling(allowed_updates=ALLOWED_UPDATES)
    return 0
