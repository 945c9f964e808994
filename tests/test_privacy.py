"""What people own: /export gives them everything, /delete erases it, /hide clears the chat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.adapters.console import ConsoleChat
from bot.app import Content
from bot.engine import Engine
from bot.messages import Incoming, InputKind, Reply
from bot.storage.models import ChatMessage, CrisisEvent, FlowRun, Reflection, User
from bot.storage.repository import Repository, UnitOfWork
from tests.helpers import Reader, labels, make_engine, migrated, texts
from tests.test_console_flows import ANSWERS, onboard

SENTINEL = "Zebra-quartz-4411 is what I call the quiet after a fight"


def documents(reply: Reply) -> dict[str, bytes]:
    return {d.file_name: d.content for m in reply.messages for d in m.documents}


async def reflect(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/aware")
    await chat.send("Let's begin")
    await chat.send(SENTINEL)
    await chat.send(ANSWERS["past"])  # left open, mid-flow


async def test_export_holds_everything_kept(chat: ConsoleChat) -> None:
    await reflect(chat)
    reply = await chat.send("/export")
    files = documents(reply)
    json_name = next(name for name in files if name.endswith(".json"))
    markdown_name = next(name for name in files if name.endswith(".md"))
    data = json.loads(files[json_name])
    assert data["profile"]["focus_relationship"] == "partner"
    assert data["profile"]["country"] == "NZ"
    assert [r["text"] for r in data["reflections"]] == [SENTINEL, ANSWERS["past"]]
    assert data["reflections"][0]["question"] == "What sets off a strong reaction"
    open_runs = [run for run in data["flows"] if run["status"] == "in progress"]
    assert open_runs and open_runs[0]["answers_so_far"]["triggers"] == SENTINEL
    markdown = files[markdown_name].decode()
    assert f"> {SENTINEL}" in markdown
    assert "&amp;" not in markdown, "Markdown is not HTML-escaped"
    assert "safe" in texts(reply)


async def test_the_console_saves_exports_privately(content: Content, repository: Repository,
                                                   tmp_path: Path) -> None:
    engine = make_engine(content, repository)
    chat = ConsoleChat(engine, user_id=61, first_name="Sam", export_dir=tmp_path / "exports")
    await reflect(chat)
    await chat.send("/export")
    saved = sorted((tmp_path / "exports").iterdir())
    assert [path.suffix for path in saved] == [".json", ".md"]
    assert all(path.stat().st_mode & 0o077 == 0 for path in saved)
    assert SENTINEL in saved[1].read_text()


async def counts(repository: Repository) -> dict[str, int]:
    def count(unit: UnitOfWork) -> dict[str, int]:
        return {model.__tablename__: int(unit.session.execute(
            select(func.count()).select_from(model)).scalar_one())
            for model in (User, FlowRun, Reflection, ChatMessage, CrisisEvent)}

    return await repository.run(count)


async def test_delete_asks_first_and_no_keeps_everything(
    chat: ConsoleChat, repository: Repository
) -> None:
    await reflect(chat)
    before = await counts(repository)
    reply = await chat.send("/delete")
    assert "can't be undone" in texts(reply)
    assert labels(reply) == ["Yes, delete everything", "No, keep it"]
    reply = await chat.send("No, keep it")
    assert "nothing was deleted" in texts(reply)
    assert "Skip" in labels(reply), "back to where they were"
    assert await counts(repository) == before
    await chat.send("/delete")
    await chat.send("something else entirely")  # not an answer to the question: nothing erased
    assert (await counts(repository))["users"] == 1


async def test_delete_erases_every_row(chat: ConsoleChat, engine: Engine,
                                       repository: Repository) -> None:
    await reflect(chat)
    await engine.handle(Incoming(chat_id=chat.user_id, kind=InputKind.TEXT, text="hi",
                                 message_id=77))
    await chat.send("/delete")
    reply = await chat.send("Yes, delete everything")
    assert "erased" in texts(reply)
    assert await counts(repository) == {"users": 0, "flow_runs": 0, "reflections": 0,
                                        "chat_messages": 0, "crisis_events": 0}
    reply = await chat.send("/start")
    assert "not a crisis service" in texts(reply), "a fresh start, as a new person"


async def test_delete_leaves_no_decrypted_words_in_memory(
        chat: ConsoleChat, repository: Repository) -> None:
    """The cipher remembers what recent tokens decrypted to (bot.storage.crypto); erasing a
    person empties that memory too."""
    from bot.storage.crypto import RememberingCipher

    await reflect(chat)
    engine: Any = repository.engine  # type: ignore[attr-defined]
    cipher = getattr(engine, "sync_engine", engine).dialect.haven_cipher
    assert isinstance(cipher, RememberingCipher) and len(cipher) > 0
    await chat.send("/delete")
    await chat.send("Yes, delete everything")
    assert len(cipher) == 0


async def test_after_delete_the_sqlite_files_hold_no_trace(
    content: Content, tmp_path: Path, cipher
) -> None:
    from cryptography.fernet import Fernet

    from bot.storage.crypto import cipher_from

    url = f"sqlite:///{tmp_path / 'haven.sqlite3'}"
    # A key that is thrown away afterwards would hide the words anyway: look for the
    # ciphertext too, which is what the files would hold.
    repository = await migrated(url, cipher_from([Fernet.generate_key()]))
    chat = ConsoleChat(make_engine(content, repository),
                       user_id=62, first_name="Sam")
    try:
        await reflect(chat)
        tokens = [row[0] for row in await Reader(repository).raw("SELECT text FROM reflections")]
        assert tokens
        await chat.send("/delete")
        await chat.send("Yes, delete everything")
    finally:
        await repository.close()
    for path in tmp_path.glob("haven.sqlite3*"):
        data = path.read_bytes()
        assert SENTINEL.encode() not in data
        for token in tokens:
            assert token.encode() not in data, f"{path.name} still holds a deleted reflection"


async def test_hide_lists_recent_messages_for_deletion(
    chat: ConsoleChat, engine: Engine, repository: Repository
) -> None:
    await onboard(chat)
    for message_id in (10, 11, 12):
        await engine.handle(Incoming(chat_id=chat.user_id, kind=InputKind.TEXT, text="hello",
                                     message_id=message_id))
    engine.remember_sent(chat.user_id, [13, 14])
    reply = await engine.handle(Incoming(chat_id=chat.user_id, kind=InputKind.COMMAND,
                                         text="hide", message_id=15))
    assert reply.delete_message_ids == [10, 11, 12, 13, 14, 15]
    assert "cleared" in texts(reply).lower()
    assert not reply.remember_sent
    assert (await counts(repository))["chat_messages"] == 0
