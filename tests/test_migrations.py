"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL,
and the newest migration can be undone and done again."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.fernet import MultiFernet

from bot.storage.database import alembic_config
from bot.storage.models import Base
from bot.storage.repository import UnitOfWork
from tests.helpers import migrated


def differences(unit: UnitOfWork) -> list[Any]:
    context = MigrationContext.configure(unit.session.connection())
    return list(compare_metadata(context, Base.metadata))


def step_back_and_forth(unit: UnitOfWork) -> list[str]:
    config = alembic_config()
    config.attributes["connection"] = unit.session.connection()
    command.downgrade(config, "0001")  # undoes every later migration
    command.upgrade(config, "head")
    return differences(unit)


async def test_the_migrated_schema_matches_the_models(database_url: str,
                                                      cipher: MultiFernet) -> None:
    repository = await migrated(database_url, cipher)
    try:
        assert await repository.run(differences) == []
        assert await repository.run(step_back_and_forth) == []
    finally:
        await repository.close()
