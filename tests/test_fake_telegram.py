"""Tests of the fake Bot API itself, driven by python-telegram-bot's own ``telegram.Bot``.

They prove PTB can talk to the fake and that each refusal surfaces as the PTB exception a
bot would get from the real Telegram.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import socket
import time

import aiohttp
import pytest
import telegram
from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, Update
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from tests.fake_telegram import FakeTelegram, tiny_png
from tests.fake_telegram.html_check import parse_html

TOKEN = "123456:TEST-token"
USER_ID = 1001


@pytest.fixture
async def fake():
    async with FakeTelegram(token=TOKEN, bot_username="haven_test_bot") as server:
        yield server
    assert server.internal_errors == [], "the fake itself crashed:\n" + "\n".join(
        server.internal_errors
    )


@pytest.fixture
async def bot(fake):
    async with telegram.Bot(
        TOKEN, base_url=f"{fake.base_url}/bot", base_file_url=fake.base_file_url
    ) as ptb_bot:
        yield ptb_bot


@pytest.fixture
def user(fake):
    return fake.user(user_id=USER_ID, first_name="Sam", language_code="en")


def keyboard(*labels_and_data: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data)] for label, data in labels_and_data]
    )


def last_error(fake: FakeTelegram) -> str:
    return fake.errors[-1][2]


# ---------------------------------------------------------------------- basics


async def test_get_me_returns_the_bot_user(bot):
    me = await bot.get_me()
    assert me.id == 123456
    assert me.is_bot is True
    assert me.username == "haven_test_bot"
    assert me.first_name == "Haven"
    assert me.can_join_groups is True


async def test_wrong_token_raises_invalid_token(fake):
    wrong = telegram.Bot("123456:WRONG", base_url=f"{fake.base_url}/bot")
    with pytest.raises(InvalidToken):
        await wrong.initialize()
    assert fake.errors[-1][0] == "getMe"
    assert last_error(fake) == "Unauthorized"


async def test_unknown_method_is_404_and_known_unimplemented_is_501(fake):
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.api_url}/sendTeleportation") as response:
            assert response.status == 404
            assert await response.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found",
            }
        async with session.post(f"{fake.api_url}/sendPoll") as response:
            assert response.status == 501


async def test_method_names_are_case_insensitive_and_get_works(fake):
    async with aiohttp.ClientSession() as session, session.get(f"{fake.api_url}/GETME") as got:
        body = await got.json()
    assert body["ok"] is True
    assert body["result"]["username"] == "haven_test_bot"


# ---------------------------------------------------------------------- sendMessage


async def test_send_message_returns_a_full_message(bot, fake, user):
    sent = await bot.send_message(
        USER_ID,
        "<b>Hi</b> Sam &amp; welcome",
        parse_mode="HTML",
        reply_markup=keyboard(("Let's begin", "begin")),
    )
    assert sent.message_id == 1
    assert sent.text == "Hi Sam & welcome"
    assert sent.from_user.id == 123456 and sent.from_user.is_bot
    assert sent.chat.id == USER_ID and sent.chat.type == "private"
    assert isinstance(sent.date, dtm.datetime)
    assert sent.entities == (MessageEntity("bold", 0, 2),)
    assert sent.reply_markup.inline_keyboard[0][0].callback_data == "begin"

    [message] = user.chat
    assert message.text == "Hi Sam & welcome"
    assert message.source == "<b>Hi</b> Sam &amp; welcome"
    assert message.parse_mode == "HTML"
    assert message.buttons == [[{"text": "Let's begin", "callback_data": "begin"}]]
    assert user.last_keyboard() == [["Let's begin"]]
    assert fake.calls("sendMessage")[0]["chat_id"] == str(USER_ID)


async def test_message_ids_increase_per_chat_across_both_sides(bot, fake, user):
    other = fake.user(user_id=2002, first_name="Alex")
    await user.send("hello")
    first = await bot.send_message(USER_ID, "one")
    in_other_chat = await bot.send_message(2002, "one")
    assert first.message_id == 2  # the user's message took id 1
    assert in_other_chat.message_id == 1
    assert [m.text for m in other.chat] == ["one"]


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("", "Bad Request: message text is empty"),
        ("  \n ", "Bad Request: message text is empty"),
        ("<b></b>", "Bad Request: message text is empty"),
        ("x" * 4097, "Bad Request: message is too long"),
        ("😀" * 2049, "Bad Request: message is too long"),  # 4098 UTF-16 code units
        (
            "Hello<foo>x</foo>",
            'Bad Request: can\'t parse entities: Unsupported start tag "foo" at byte offset 5',
        ),
        (
            "<b>bold",
            "Bad Request: can't parse entities: Can't find end tag corresponding to "
            'start tag "b"',
        ),
        ("1 < 2", 'Bad Request: can\'t parse entities: Unsupported start tag "" at byte offset 2'),
        (
            "<b>x</i>",
            "Bad Request: can't parse entities: Unmatched end tag at byte offset 4, "
            'expected "</b>", found "</i>"',
        ),
        ("a <", "Bad Request: can't parse entities: Unclosed start tag at byte offset 2"),
        (
            "<span>x</span>",
            'Bad Request: can\'t parse entities: Tag "span" must have class '
            '"tg-spoiler" at byte offset 0',
        ),
    ],
)
async def test_send_message_refusals(bot, fake, user, text, description):
    with pytest.raises(BadRequest) as refused:
        await bot.send_message(USER_ID, text, parse_mode="HTML")
    assert last_error(fake) == description
    assert refused.value.message.lower() == description.removeprefix("Bad Request: ").lower()
    assert user.chat == []


async def test_bare_ampersand_is_refused(bot, fake, user):
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message(USER_ID, "Tom & Jerry", parse_mode="HTML")
    assert "byte offset 4" in last_error(fake)


async def test_limits_are_inclusive(bot, user):
    await bot.send_message(USER_ID, "x" * 4096)
    await bot.send_message(USER_ID, "😀" * 2048)
    await bot.send_message(USER_ID, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    assert [len(m.text) for m in user.chat] == [4096, 2048, 4096]


async def test_escaped_html_passes_and_is_unescaped(bot, user):
    sent = await bot.send_message(
        USER_ID,
        'a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#x27; > <i>e</i> <a href="https://x.org/?a=1&amp;b=2">'
        "link</a>",
        parse_mode="HTML",
    )
    assert sent.text == "a <b> & \"c\" 'd' > e link"
    assert [e.type for e in sent.entities] == ["italic", "text_link"]
    assert sent.entities[1].url == "https://x.org/?a=1&b=2"
    assert user.chat[0].text == sent.text


def test_html_parser_offsets_are_utf16_and_pre_code_merges():
    text, entities = parse_html('😀 <b>x</b><pre><code class="language-py">p</code></pre>')
    assert text == "😀 xp"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 1},
        {"type": "pre", "offset": 4, "length": 1, "language": "py"},
    ]


async def test_markdown_is_accepted_without_validation(bot, user):
    sent = await bot.send_message(USER_ID, "*bold*", parse_mode="MarkdownV2")
    assert sent.text == "*bold*"


async def test_unknown_chat_is_not_found(bot, fake):
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(4242, "hello")
    assert last_error(fake) == "Bad Request: chat not found"


# ---------------------------------------------------------------------- keyboards


async def test_callback_data_of_64_bytes_is_accepted_and_65_refused(bot, fake, user):
    await bot.send_message(USER_ID, "ok", reply_markup=keyboard(("A", "x" * 64)))
    await bot.send_message(USER_ID, "ok", reply_markup=keyboard(("A", "é" * 32)))  # 64 bytes
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(USER_ID, "no", reply_markup=keyboard(("A", "x" * 65)))
    assert last_error(fake) == "Bad Request: BUTTON_DATA_INVALID"
    with pytest.raises(BadRequest):
        await bot.send_message(USER_ID, "no", reply_markup=keyboard(("A", "é" * 33)))
    assert len(user.chat) == 2


async def test_button_without_action_is_refused(fake, user):
    markup = {"inline_keyboard": [[{"text": "Just text"}]]}
    body = await post_json(fake, "sendMessage", chat_id=USER_ID, text="x", reply_markup=markup)
    assert body["error_code"] == 400
    assert "Text buttons are unallowed" in body["description"]


async def test_press_unknown_label_lists_the_available_ones(bot, user):
    await bot.send_message(USER_ID, "Pick", reply_markup=keyboard(("Yes", "y"), ("No", "n")))
    with pytest.raises(AssertionError, match=r"\[\['Yes'\], \['No'\]\]"):
        await user.press("Maybe")


async def test_press_produces_a_callback_query_ptb_parses(bot, fake, user):
    sent = await bot.send_message(USER_ID, "Ready?", reply_markup=keyboard(("Let's begin", "go")))
    query_id = await user.press("Let's begin")
    [update] = await bot.get_updates(timeout=0)
    query = update.callback_query
    assert query.id == query_id
    assert query.data == "go"
    assert query.from_user.id == USER_ID and query.from_user.first_name == "Sam"
    assert query.message.message_id == sent.message_id
    assert query.message.text == "Ready?"
    assert query.chat_instance
    assert user.unanswered_callbacks() == [query_id]

    assert await query.answer("Noted") is True
    assert user.callback_answers == [
        {"callback_query_id": query_id, "text": "Noted", "show_alert": False, "url": None}
    ]
    assert user.unanswered_callbacks() == []
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(query_id)
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query("12345")


async def test_press_data_forges_a_callback(bot, user):
    await bot.send_message(USER_ID, "Ready?", reply_markup=keyboard(("Go", "go")))
    await user.press_data("forged:data")
    [update] = await bot.get_updates(timeout=0)
    assert update.callback_query.data == "forged:data"


# ---------------------------------------------------------------------- editing and deleting


async def test_edit_not_modified_and_unknown(bot, fake, user):
    sent = await bot.send_message(USER_ID, "Same", reply_markup=keyboard(("A", "a")))
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_text(
            "Same", USER_ID, sent.message_id, reply_markup=keyboard(("A", "a"))
        )
    assert last_error(fake).startswith("Bad Request: message is not modified: specified new")
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_reply_markup(
            USER_ID, sent.message_id, reply_markup=keyboard(("A", "a"))
        )
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("New", USER_ID, 999)
    assert user.chat[0].edited is False


async def test_edit_text_without_markup_removes_the_keyboard(bot, user):
    sent = await bot.send_message(USER_ID, "Question", reply_markup=keyboard(("A", "a")))
    edited = await bot.edit_message_text(
        "<i>Answered</i>", USER_ID, sent.message_id, parse_mode="HTML"
    )
    assert edited.text == "Answered"
    assert edited.reply_markup is None
    assert edited.edit_date is not None
    [message] = user.chat
    assert (message.text, message.buttons, message.edited) == ("Answered", [], True)
    assert user.last_keyboard() is None


async def test_edit_reply_markup_changes_buttons(bot, user):
    sent = await bot.send_message(USER_ID, "Q", reply_markup=keyboard(("A", "a")))
    await bot.edit_message_reply_markup(USER_ID, sent.message_id, reply_markup=keyboard(("B", "b")))
    assert user.last_keyboard() == [["B"]]
    assert user.chat[0].text == "Q"


async def test_delete_unknown_too_old_and_ok(bot, fake, user):
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await bot.delete_message(USER_ID, 77)
    old = await bot.send_message(USER_ID, "old")
    fake.age_messages(USER_ID, 49 * 3600)
    with pytest.raises(BadRequest, match="(?i)message can't be deleted"):
        await bot.delete_message(USER_ID, old.message_id)
    fresh = await bot.send_message(USER_ID, "fresh")
    assert await bot.delete_message(USER_ID, fresh.message_id) is True
    assert [(m.text, m.deleted) for m in user.chat] == [("old", False), ("fresh", True)]
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await bot.delete_message(USER_ID, fresh.message_id)
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("again", USER_ID, fresh.message_id)


async def test_delete_messages_skips_missing(bot, user):
    first = await bot.send_message(USER_ID, "1")
    second = await bot.send_message(USER_ID, "2")
    assert await bot.delete_messages(USER_ID, [first.message_id, 999]) is True
    assert [m.deleted for m in user.chat] == [True, False]
    assert second.message_id == 2


# ---------------------------------------------------------------------- getUpdates


async def test_get_updates_long_polls_and_respects_offset(bot, user):
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.3)
    assert not poll.done()  # held: nothing to deliver yet
    await user.send("/start welcome")
    updates = await asyncio.wait_for(poll, 3)
    assert time.monotonic() - started < 3
    [update] = updates
    assert update.message.text == "/start welcome"
    assert update.message.from_user.id == USER_ID
    assert update.message.entities == (MessageEntity(MessageEntity.BOT_COMMAND, 0, 6),)
    assert update.message.chat.type == "private"

    await user.send("second")
    again = await bot.get_updates(timeout=0)
    assert [u.message.text for u in again] == ["/start welcome", "second"]  # not confirmed
    rest = await bot.get_updates(offset=update.update_id + 1, timeout=0)
    assert [u.message.text for u in rest] == ["second"]
    assert rest[0].update_id > update.update_id
    assert await bot.get_updates(offset=rest[0].update_id + 1, timeout=0) == ()


async def test_get_updates_timeout_expires_empty(bot):
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert 0.9 <= time.monotonic() - started < 3


async def test_negative_offset_and_limit(bot, user):
    for text in ("a", "b", "c"):
        await user.send(text)
    assert [u.message.text for u in await bot.get_updates(limit=2, timeout=0)] == ["a", "b"]
    assert [u.message.text for u in await bot.get_updates(offset=-1, timeout=0)] == ["c"]
    assert [u.message.text for u in await bot.get_updates(timeout=0)] == ["c"]


async def test_allowed_updates_filters_new_updates(bot, user):
    await bot.get_updates(timeout=0, allowed_updates=["callback_query"])
    await user.send("ignored")
    assert await bot.get_updates(timeout=0) == ()


async def test_non_text_messages_parse(bot, user, monkeypatch):
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    await user.send_sticker()
    await user.send_photo(caption="look")
    await user.send_voice(duration=4)
    stickers, photos, voices = await bot.get_updates(timeout=0)
    assert stickers.message.sticker.emoji == "👍"
    assert photos.message.caption == "look"
    assert photos.message.photo[-1].width == 64
    assert voices.message.voice.duration == dtm.timedelta(seconds=4)
    photo_file = await bot.get_file(photos.message.photo[-1].file_id)
    assert bytes(await photo_file.download_as_bytearray()) == tiny_png(64, 48)


# ---------------------------------------------------------------------- failures


async def test_injected_429_raises_retry_after(bot, fake, user, monkeypatch):
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    fake.fail_next("sendMessage", status=429, retry_after=7)
    with pytest.raises(RetryAfter) as flood:
        await bot.send_message(USER_ID, "hi")
    assert flood.value.retry_after == dtm.timedelta(seconds=7)
    assert last_error(fake) == "Too Many Requests: retry after 7"
    await bot.send_message(USER_ID, "hi")  # only the next call failed
    assert [m.text for m in user.chat] == ["hi"]


async def test_injected_server_error_raises_network_error(bot, fake, user):
    fake.fail_next("sendMessage", status=500, count=2)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await bot.send_message(USER_ID, "hi")
    await bot.send_message(USER_ID, "hi")
    assert len(user.chat) == 1


async def test_blocked_user_gives_forbidden_and_member_updates(bot, fake, user):
    user.block()
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(USER_ID, "still there?")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(USER_ID, "typing")
    user.unblock()
    await bot.send_message(USER_ID, "welcome back")
    kicked, member = await bot.get_updates(timeout=0)
    assert kicked.my_chat_member.new_chat_member.status == "kicked"
    assert kicked.my_chat_member.old_chat_member.status == "member"
    assert kicked.my_chat_member.from_user.id == USER_ID
    assert member.my_chat_member.new_chat_member.status == "member"
    assert [m.text for m in user.chat] == ["welcome back"]


# ---------------------------------------------------------------------- files


async def test_send_document_multipart_keeps_bytes(bot, fake, user):
    data = b"line one\nline two\n\x00\xff"
    sent = await bot.send_document(USER_ID, document=data, filename="notes.txt", caption="Yours")
    assert sent.document.file_name == "notes.txt"
    assert sent.document.mime_type == "text/plain"
    assert sent.document.file_size == len(data)
    assert sent.caption == "Yours"
    [message] = user.chat
    assert (message.kind, message.file_name, message.bytes) == ("document", "notes.txt", data)
    again = await bot.send_document(USER_ID, document=sent.document.file_id)
    assert again.document.file_id == sent.document.file_id
    with pytest.raises(BadRequest, match="(?i)wrong file identifier"):
        await bot.send_document(USER_ID, document="not-a-file-id")


async def test_send_photo_needs_an_image(bot, user):
    sent = await bot.send_photo(
        USER_ID, photo=tiny_png(20, 10), caption="<b>pic</b>", parse_mode="HTML"
    )
    assert sent.photo[-1].width == 20 and sent.photo[-1].height == 10
    assert sent.caption == "pic"
    assert user.chat[0].kind == "photo" and user.chat[0].bytes == tiny_png(20, 10)
    with pytest.raises(BadRequest, match="(?i)image_process_failed"):
        await bot.send_photo(USER_ID, photo=b"not an image")
    with pytest.raises(BadRequest, match="(?i)caption is too long"):
        await bot.send_photo(USER_ID, photo=tiny_png(), caption="x" * 1025)


# ---------------------------------------------------------------------- commands


async def test_set_my_commands(bot, fake):
    await bot.set_my_commands([("start", "Begin"), ("help", "What I can do")])
    assert fake.commands == [
        {"command": "start", "description": "Begin"},
        {"command": "help", "description": "What I can do"},
    ]
    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    with pytest.raises(BadRequest, match="(?i)bot_command_invalid"):
        await bot.set_my_commands([("Start", "Begin")])
    with pytest.raises(BadRequest):
        await bot.set_my_commands([("start", "")])
    await bot.delete_my_commands()
    assert fake.commands == []


# ---------------------------------------------------------------------- parameter encodings


async def post_json(fake: FakeTelegram, method: str, **params) -> dict:
    url = f"{fake.api_url}/{method}"
    async with aiohttp.ClientSession() as session, session.post(url, json=params) as response:
        return await response.json()


async def test_json_body_with_nested_objects_and_query_string(fake, user):
    markup = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    body = await post_json(fake, "sendMessage", chat_id=USER_ID, text="json", reply_markup=markup)
    assert body["ok"] is True and body["result"]["reply_markup"] == markup
    body = await post_json(
        fake, "sendMessage", chat_id=str(USER_ID), text="json", reply_markup=json.dumps(markup)
    )
    assert body["ok"] is True
    async with aiohttp.ClientSession() as session:
        url = f"{fake.api_url}/sendMessage"
        async with session.get(url, params={"chat_id": USER_ID, "text": "query"}) as response:
            assert (await response.json())["result"]["text"] == "query"
        async with session.post(url, data={"chat_id": USER_ID, "text": "form"}) as response:
            assert (await response.json())["result"]["text"] == "form"
    assert [m.text for m in user.chat] == ["json", "json", "query", "form"]


# ---------------------------------------------------------------------- the test-side user


async def test_replies_waits_for_quiet_then_marks_read(bot, user):
    async def bot_turn():
        await bot.send_chat_action(USER_ID, "typing")
        await bot.send_message(USER_ID, "one")
        await asyncio.sleep(0.2)
        await bot.send_message(USER_ID, "two")

    turn = asyncio.create_task(bot_turn())
    replies = await user.replies(timeout=5, quiet=0.5)
    await turn
    assert [m.text for m in replies] == ["one", "two"]
    assert user.chat_actions == ["typing"]
    await bot.send_message(USER_ID, "three")
    assert (await user.next_reply(timeout=2)).text == "three"
    with pytest.raises(AssertionError, match="no new message from the bot"):
        await user.replies(timeout=0.3)


async def test_second_instance_polling_conflicts_with_the_first(bot, fake):
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    async with telegram.Bot(TOKEN, base_url=f"{fake.base_url}/bot") as second_instance:
        assert await second_instance.get_updates(timeout=0) == ()
    with pytest.raises(Conflict, match="terminated by other getUpdates request"):
        await asyncio.wait_for(first, 3)


# ---------------------------------------------------------------------- webhook


@pytest.fixture
async def receiver():
    """A tiny webhook endpoint; fails the first ``fail_first`` deliveries with 500."""
    seen: list[tuple[str | None, dict]] = []
    state = {"fail_first": 0}

    async def handle(request: web.Request) -> web.Response:
        if state["fail_first"] > 0:
            state["fail_first"] -= 1
            return web.Response(status=500)
        seen.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hook", seen, state
    await runner.cleanup()


async def test_webhook_delivery_and_get_updates_conflict(bot, fake, user, receiver):
    url, seen, state = receiver
    state["fail_first"] = 2
    await user.send("queued before")
    assert await bot.set_webhook(url, secret_token="s3cret-Token_1") is True
    await user.send("hello hook")
    await fake.deliver_pending(timeout=5)
    assert [secret for secret, _ in seen] == ["s3cret-Token_1", "s3cret-Token_1"]
    updates = [Update.de_json(body, bot) for _, body in seen]
    assert [u.message.text for u in updates] == ["queued before", "hello hook"]
    assert state["fail_first"] == 0  # the two failures were retried

    info = await bot.get_webhook_info()
    assert info.url == url and info.pending_update_count == 0
    assert info.last_error_message.startswith("Wrong response from the webhook: 500")
    with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
        await bot.get_updates(timeout=0)

    assert await bot.delete_webhook() is True
    assert fake.webhook is None
    await user.send("polling again")
    [update] = await bot.get_updates(timeout=0)
    assert update.message.text == "polling again"


# ---------------------------------------------------------------------- a whole PTB Application


def echo_application(fake: FakeTelegram) -> Application:
    """A minimal bot: /start offers a button; pressing it edits the message and answers."""

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_html(
            "<b>Welcome</b>, ready?", reply_markup=keyboard(("Let's begin", "begin"))
        )

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.callback_query.answer()
        await update.callback_query.edit_message_text("Begun.")
        await context.bot.send_message(update.effective_chat.id, "Step one")

    application = (
        Application.builder()
        .token(TOKEN)
        .base_url(f"{fake.base_url}/bot")
        .base_file_url(fake.base_file_url)
        .build()
    )
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CallbackQueryHandler(pressed))
    return application


async def converse(user) -> None:
    await user.send("/start")
    [welcome] = await user.replies(timeout=10)
    assert welcome.text == "Welcome, ready?"
    assert user.last_keyboard() == [["Let's begin"]]
    query_id = await user.press("Let's begin")
    [step] = await user.replies(timeout=10)
    assert step.text == "Step one"
    assert (user.chat[0].text, user.chat[0].edited, user.chat[0].buttons) == ("Begun.", True, [])
    assert (await user.answer_to(query_id))["callback_query_id"] == query_id
    assert user.unanswered_callbacks() == []


async def test_ptb_application_polling_end_to_end(fake, user):
    application = echo_application(fake)
    async with application:
        await application.start()
        await application.updater.start_polling(poll_interval=0, timeout=1)
        try:
            await converse(user)
        finally:
            await application.updater.stop()
            await application.stop()
    assert fake.calls("deleteWebhook")  # run_polling's bootstrap ran against the fake


async def test_ptb_application_webhook_end_to_end(fake, user):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    application = echo_application(fake)
    async with application:
        await application.start()
        await application.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="hook",
            webhook_url=f"http://127.0.0.1:{port}/hook",
            secret_token="hook-secret",
        )
        try:
            assert fake.webhook["secret_token"] == "hook-secret"
            await converse(user)
        finally:
            await application.updater.stop()
            await application.stop()
