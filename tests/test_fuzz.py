"""Random text, buttons and update shapes through the real Application: it never crashes,
never leaves a person's state broken, and never sends what Telegram would refuse."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telegram import Update
from telegram.ext import Application

from bot.adapters.telegram import build_application
from bot.app import Content
from bot.settings import load_settings
from bot.storage.crypto import cipher_from
from tests.fake_telegram import FakeTelegram, FakeUser
from tests.helpers import Reader, make_engine, migrated

TOKEN = "424242:FUZZ-token"
KNOWN_WORDS = ["/start", "/menu", "/aware", "/help", "/cancel", "/settings", "/progress",
               "/journal", "/export", "/delete", "/hide", "/nonsense", "skip", "Skip", "1", "2",
               "Sounds good", "Yes, keep them", "Let's begin", "Yes, switch", "No, stay here",
               "Yes, delete everything", "No, keep it", "I'm safe, continue", "Not right now",
               "I want to kill myself", "my partner hits me", "<b>bold</b> & <i>", "&amp;",
               "France", "yes", "no"]

texts = st.one_of(
    st.sampled_from(KNOWN_WORDS),
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=3000, max_size=6000),
)
actions = st.lists(st.one_of(
    st.tuples(st.just("text"), texts),
    st.tuples(st.just("press"), st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("forged"), st.text(max_size=64)),
    st.tuples(st.just("media"), st.sampled_from(["sticker", "photo", "voice"])),
    st.tuples(st.just("odd"), st.sampled_from(["edited", "group", "inline_press", "member"])),
), min_size=1, max_size=10)


class Harness:
    """The real Application, its updates handed over directly, replies going to the fake."""

    def __init__(self, fake: FakeTelegram, application: Application[Any, Any, Any, Any, Any, Any],
                 reader: Reader, flows: dict[str, Any]) -> None:
        self.fake = fake
        self.application = application
        self.reader = reader
        self.flows = flows
        self.errors: list[BaseException] = []
        self.ids = itertools.count(9_000_000)

    async def handle_pending(self) -> None:
        for raw in self.fake.pending_updates:
            update = Update.de_json(raw, self.application.bot)
            assert update is not None
            await self.application.process_update(update)
        self.fake.drop_pending()

    async def play(self, steps: list[tuple[str, Any]]) -> None:
        user = self.fake.user(user_id=next(self.ids), first_name="Fuzz")
        for kind, value in steps:
            await self.act(user, kind, value)
            await self.handle_pending()
        await self.check(user)

    async def act(self, user: FakeUser, kind: str, value: Any) -> None:
        if kind == "text":
            await user.send(value)
        elif kind == "media":
            await {"sticker": user.send_sticker, "photo": user.send_photo,
                   "voice": user.send_voice}[value]()
        elif kind == "press":
            keyboard = [label for row in (user.last_keyboard() or []) for label in row]
            if keyboard:
                await user.press(keyboard[value % len(keyboard)])
        elif kind == "forged" and any(not m.deleted for m in user.chat):
            await user.press_data(value or "x")
        elif kind == "odd":
            self.odd_update(user, value)

    def odd_update(self, user: FakeUser, shape: str) -> None:
        person = {"id": user.id, "is_bot": False, "first_name": "Fuzz"}
        message = {"message_id": 1, "date": 0, "text": "hello", "from": person,
                   "chat": {"id": user.id, "type": "private", "first_name": "Fuzz"}}
        if shape == "edited":
            self.fake.enqueue_update("edited_message", {**message, "edit_date": 1})
        elif shape == "group":
            self.fake.enqueue_update("message", {**message, "chat": {"id": -100, "type": "group",
                                                                     "title": "g"}})
        elif shape == "inline_press":
            self.fake.enqueue_update("callback_query", {"id": "1", "from": person,
                                                        "chat_instance": "c", "data": "f:x",
                                                        "inline_message_id": "abc"})
        else:
            member = {"user": {**self.fake.bot_user}, "status": "member"}
            self.fake.enqueue_update("my_chat_member", {
                "chat": message["chat"], "from": person, "date": 0,
                "old_chat_member": member,
                "new_chat_member": {**member, "status": "kicked", "until_date": 0}})

    async def check(self, user: FakeUser) -> None:
        assert self.errors == [], f"an update raised: {self.errors!r}"
        refused = [e for e in self.fake.errors if e[2].startswith("Bad Request")]
        assert refused == [], f"Telegram would have refused: {refused}"
        assert user.unanswered_callbacks() == []
        person = await self.reader.find_user(user.id)
        if person is None:
            return  # never got past an odd update, or erased everything
        if person.active_flow is not None:
            flow = self.flows[person.active_flow]
            run = await self.reader.open_run(person, flow.name)
            assert run is not None and run.step in flow.steps, "the place in the flow is valid"


def test_random_input_never_breaks_anything(content: Content, tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()

    async def start() -> tuple[Harness, Any]:
        fake = await FakeTelegram(token=TOKEN).start()
        repository = await migrated(f"sqlite:///{tmp_path / 'fuzz.sqlite3'}",
                                    cipher_from([Fernet.generate_key()]))
        config = load_settings(telegram_bot_token=TOKEN, telegram_api_base_url=fake.base_url,
                               haven_data_dir=tmp_path)
        application = build_application(config, make_engine(content, repository),
                                        rate_limited=False, polling=False)
        await application.initialize()
        harness = Harness(fake, application, Reader(repository), content.flows)

        async def record(_update: object, context: Any) -> None:
            harness.errors.append(context.error)

        application.add_error_handler(record)
        return harness, repository

    harness, repository = loop.run_until_complete(start())

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(steps=actions)
    def play(steps: list[tuple[str, Any]]) -> None:
        loop.run_until_complete(harness.play(steps))

    try:
        play()
    finally:
        async def stop() -> None:
            assert len(harness.fake.calls("sendMessage")) > 100, "the fuzz reached the bot"
            await harness.application.shutdown()
            await repository.close()
            await harness.fake.stop()

        loop.run_until_complete(stop())
        loop.close()
