"""Re-encrypting every stored value under the newest key (`python -m bot rotate-keys`)."""

from __future__ import annotations

from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import text

from bot.settings import Settings
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file, write_key_file
from bot.storage.repository import UnitOfWork, open_repository

# (table, column) pairs that hold Fernet tokens.
ENCRYPTED_COLUMNS = (("users", "first_name"), ("flow_runs", "answers"), ("reflections", "text"))


def reencrypt(unit: UnitOfWork, cipher: MultiFernet) -> int:
    """Rewrite every token so that the first key of `cipher` encrypts it; returns the count."""
    changed = 0
    session = unit.session
    for table, column in ENCRYPTED_COLUMNS:
        rows = session.execute(text(f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL"))
        for row_id, token in rows.all():
            fresh = cipher.rotate(token.encode("ascii")).decode("ascii")
            session.execute(text(f"UPDATE {table} SET {column} = :value WHERE id = :id"),
                            {"value": fresh, "id": row_id})
            changed += 1
    return changed


async def _reencrypt_all(settings: Settings, keys: list[bytes]) -> int:
    cipher = cipher_from(keys)
    repository = open_repository(settings.effective_database_url, cipher)
    try:
        await repository.migrate()
        return await repository.run(lambda unit: reencrypt(unit, cipher))
    finally:
        await repository.close()


async def rotate_keys(settings: Settings) -> str:
    """Rotate to a new key and re-encrypt; returns what the operator should know."""
    if settings.haven_encryption_keys:
        count = await _reencrypt_all(settings, settings.encryption_keys())
        return (f"Re-encrypted {count} values with the first key in HAVEN_ENCRYPTION_KEYS. "
                "To rotate, put a new key first (python -c 'from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())') and run this again; after it "
                "finishes, the older keys can be removed.")
    path = key_file(settings.haven_data_dir)
    old = read_or_create_key_file(path)
    keys = [Fernet.generate_key(), *old]
    write_key_file(path, keys)  # both until every value is re-encrypted: a crash loses nothing
    count = await _reencrypt_all(settings, keys)
    write_key_file(path, keys[:1])
    return f"Re-encrypted {count} values under a new key; {path} now holds only the new key."
