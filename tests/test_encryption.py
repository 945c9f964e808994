"""People's words are encrypted at rest, keys are kept safely, and keys can be rotated."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from bot.adapters.console import ConsoleChat
from bot.app import Content
from bot.settings import load_settings
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.repository import Repository
from bot.storage.rotation import rotate_keys
from tests.helpers import Reader, make_engine, migrated
from tests.test_console_flows import onboard

SECRET_WORDS = "Sentinel-7f3a: I am afraid of how loud it gets at home"
SECOND_WORDS = "Half-way sentinel-9c1d, and the run is still open"


async def write_a_reflection(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/aware")
    await chat.send("Let's begin")
    await chat.send(SECRET_WORDS)  # kept as a reflection, and in the open run's answers
    await chat.send(SECOND_WORDS)


async def raw_values(repository: Repository) -> str:
    rows = []
    for table, column in (("users", "first_name"), ("flow_runs", "answers"),
                          ("reflections", "text")):
        rows += [str(value) for (value,) in await Reader(repository).raw(
            f"SELECT {column} FROM {table}")]
    return "\n".join(rows)


async def test_stored_words_are_ciphertext(chat: ConsoleChat, repository: Repository) -> None:
    await write_a_reflection(chat)
    stored = await raw_values(repository)
    assert stored, "the query found the rows"
    for plain in ("Sentinel-7f3a", "sentinel-9c1d", "Sam"):
        assert plain not in stored
    unit = Reader(repository)
    user = await unit.find_user(chat.user_id)
    assert user is not None
    assert [r.text for r in await unit.reflections(user)] == [SECRET_WORDS, SECOND_WORDS]
    assert user.first_name == "Sam"


async def test_sqlite_files_never_hold_plain_text(
    content: Content, tmp_path: Path, cipher
) -> None:
    url = f"sqlite:///{tmp_path / 'haven.sqlite3'}"
    repository = await migrated(url, cipher)
    chat = ConsoleChat(make_engine(content, repository),
                       user_id=31, first_name="Sam")
    try:
        await write_a_reflection(chat)
    finally:
        await repository.close()
    files = list(tmp_path.glob("haven.sqlite3*"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert b"Sentinel-7f3a" not in data and b"sentinel-9c1d" not in data, path.name


def test_the_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = key_file(tmp_path / "data")
    first = read_or_create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_key_file(path) == first


def test_bad_keys_in_the_environment_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.settings import SettingsError

    monkeypatch.setenv("HAVEN_ENCRYPTION_KEYS", "not-a-key")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "HAVEN_ENCRYPTION_KEYS" in str(raised.value)
    assert "not-a-key" not in str(raised.value)


async def test_rotation_reencrypts_everything(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HAVEN_ENCRYPTION_KEYS", raising=False)
    settings = load_settings(haven_data_dir=tmp_path, database_url=None)
    old_keys = settings.encryption_keys()
    repository = await migrated(settings.effective_database_url, cipher_from(old_keys))
    chat = ConsoleChat(make_engine(content, repository),
                       user_id=32, first_name="Sam")
    await write_a_reflection(chat)
    before = await raw_values(repository)
    await repository.close()

    message = await rotate_keys(settings)
    assert "Re-encrypted" in message
    new_keys = read_or_create_key_file(key_file(tmp_path))
    assert len(new_keys) == 1 and new_keys[0] not in old_keys

    rotated = await migrated(settings.effective_database_url, cipher_from(new_keys))
    try:
        after = await raw_values(rotated)
        assert after != before
        unit = Reader(rotated)
        user = await unit.find_user(32)
        assert user is not None
        assert [r.text for r in await unit.reflections(user)] == [SECRET_WORDS, SECOND_WORDS]
    finally:
        await rotated.close()
    with pytest.raises(Exception):  # noqa: B017 - the old key no longer opens anything
        cipher_from(old_keys).decrypt(after.splitlines()[0].encode())
    assert Fernet  # the library in use


def test_the_cipher_remembers_a_bounded_number_of_recent_tokens() -> None:
    from bot.storage.crypto import RememberingCipher

    cipher = RememberingCipher(cipher_from([Fernet.generate_key()]), size=3)
    tokens = [cipher.encrypt(f"words {n}".encode()) for n in range(5)]
    assert len(cipher) == 3, "only the newest three are remembered"
    assert [cipher.decrypt(token) for token in tokens] == [f"words {n}".encode()
                                                          for n in range(5)]
    assert len(cipher) == 3
    other = RememberingCipher(cipher_from([Fernet.generate_key()]))
    with pytest.raises(InvalidToken):
        other.decrypt(tokens[-1])  # what one key's cipher remembers, another's does not know
