"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL,
and the newest migration can be undone and done again."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.fernet import MultiFernet
from sqlalchemy import text

from bot.storage.database import HEAD_REVISION, alembic_config
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


def step_back_one(unit: UnitOfWork) -> None:
    config = alembic_config()
    config.attributes["connection"] = unit.session.connection()
    command.downgrade(config, "-1")


def test_the_head_revision_named_in_the_code_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


async def test_a_restart_on_a_current_schema_leaves_alembic_alone_and_an_old_one_upgrades(
        database_url: str, cipher: MultiFernet, monkeypatch: pytest.MonkeyPatch) -> None:
    repository = await migrated(database_url, cipher)
    upgrades: list[str] = []
    real_upgrade = command.upgrade

    def upgrade(config: Any, revision: str) -> None:
        upgrades.append(revision)
        real_upgrade(config, revision)

    monkeypatch.setattr(command, "upgrade", upgrade)
    try:
        await repository.migrate()
        assert upgrades == []
        await repository.run(step_back_one)
        await repository.migrate()
        assert upgrades == ["head"]
        assert await repository.run(lambda unit: unit.session.execute(
            text("SELECT version_num FROM alembic_version")).scalar_one()) == HEAD_REVISION
        assert await repository.run(differences) == []
    finally:
        await repository.close()
