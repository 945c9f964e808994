"""Encryption at rest for everything people write (Fernet, with several keys for rotation).

Keys come from HAVEN_ENCRYPTION_KEYS (comma-separated, newest first) or, failing
that, from a key file in the data directory that is created on first run, readable
by its owner only. The newest key encrypts; every listed key can decrypt.

The cipher travels with the database engine (on its dialect), not in a global, so
two engines with different keys can live in one process.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Dialect, Engine, Text
from sqlalchemy.types import TypeDecorator

KEY_FILE_NAME = "haven.key"


class EncryptionKeyError(Exception):
    """The keys are missing or malformed; the message says which and how to fix it."""


def parse_keys(text: str) -> list[bytes]:
    keys = [part.strip().encode() for part in text.replace("\n", ",").split(",") if part.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise EncryptionKeyError("an encryption key is not a valid Fernet key "
                            "(32 url-safe base64-encoded bytes)") from None
    return keys


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE_NAME


def read_or_create_key_file(path: Path) -> list[bytes]:
    """The keys in `path`; on first run, a new key written with 0600 permissions."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_key_file(path, [Fernet.generate_key()], create=True)
    keys = parse_keys(path.read_text(encoding="ascii"))
    if not keys:
        raise EncryptionKeyError(f"{path} holds no keys")
    return keys


def write_key_file(path: Path, keys: list[bytes], create: bool = False) -> None:
    """Write keys (newest first) so that only the owner can read them, replacing atomically."""
    temporary = path.with_suffix(".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(temporary, flags, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write("\n".join(key.decode() for key in keys) + "\n")
    os.chmod(temporary, 0o600)
    if create and path.exists():
        temporary.unlink()
        return
    os.replace(temporary, path)


def cipher_from(keys: list[bytes]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


class RememberingCipher:
    """A MultiFernet that remembers the plain text of the tokens it last made or read.

    Nearly every turn reads back the person's name and their flow run's answers, both
    written by an earlier turn: decrypting them cost about 35 us a turn, a tenth of a
    turn's database work on SQLite. A token is immutable and authenticated, so what it
    decrypted to once stays true. Only the newest `size` tokens are kept (a few MB at
    most), per cipher, so a process holding other keys learns nothing from this one;
    `forget` empties it when a person's data is erased.
    """

    def __init__(self, cipher: MultiFernet, size: int = 2048) -> None:
        self.cipher = cipher
        self.size = size
        self._plain: OrderedDict[bytes, bytes] = OrderedDict()

    def encrypt(self, plain: bytes) -> bytes:
        token = self.cipher.encrypt(plain)
        self._remember(token, plain)
        return token

    def decrypt(self, token: bytes) -> bytes:
        plain = self._plain.get(token)
        if plain is None:
            plain = self.cipher.decrypt(token)
            self._remember(token, plain)
        return plain

    def forget(self) -> None:
        self._plain.clear()

    def __len__(self) -> int:
        """How many tokens' plain text is remembered."""
        return len(self._plain)

    def _remember(self, token: bytes, plain: bytes) -> None:
        self._plain[token] = plain
        if len(self._plain) > self.size:
            self._plain.popitem(last=False)


def attach_cipher(engine: Engine, cipher: MultiFernet) -> None:
    engine.dialect.haven_cipher = RememberingCipher(cipher)  # type: ignore[attr-defined]


def forget_plain_text(engine: Engine) -> None:
    """Drop every decrypted value this engine's cipher remembers (after an erasure)."""
    _cipher(engine.dialect).forget()


def _cipher(dialect: Dialect) -> RememberingCipher:
    cipher = getattr(dialect, "haven_cipher", None)
    if cipher is None:
        raise RuntimeError("no encryption key attached to this database engine")
    return cipher


class EncryptedText(TypeDecorator[str]):
    """A string stored as a Fernet token."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return _cipher(dialect).encrypt(value.encode("utf-8")).decode("ascii")

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        try:
            return _cipher(dialect).decrypt(value.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise RuntimeError("stored text cannot be decrypted with the keys given") from None


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON value stored as a Fernet token."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        plain = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return _cipher(dialect).encrypt(plain).decode("ascii")

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        try:
            return json.loads(_cipher(dialect).decrypt(value.encode("ascii")))
        except InvalidToken:
            raise RuntimeError("stored data cannot be decrypted with the keys given") from None
