"""Opening the database and bringing its schema up to date with Alembic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from cryptography.fernet import MultiFernet
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from bot.storage.crypto import attach_cipher

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def create_engine(url: str, cipher: MultiFernet, **options: Any) -> AsyncEngine:
    """An async engine that encrypts people's words with `cipher`.

    For SQLite: a WAL file in an existing directory, one writer at a time, deleted
    content overwritten.
    """
    parsed = make_url(url)
    # Errors and logs would otherwise quote SQL parameters: people's own words.
    options.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, parsed.database, **options)
    else:
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_size", 10)
        options.setdefault("max_overflow", 10)
        engine = create_async_engine(url, **options)
    attach_cipher(engine, cipher)
    return engine


def _sqlite_engine(url: str, database: str | None, **options: Any) -> AsyncEngine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA secure_delete=ON")  # erased rows leave zeros, not words
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Take the write lock up front: two deferred transactions that both try to
        # upgrade to writing would fail at once with "database is locked".
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration (called at start-up)."""

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
