"""Opening the database and bringing its schema up to date with Alembic.

SQLite goes through SQLAlchemy's synchronous driver, a whole turn at once. (Through
aiosqlite every statement is a hop to another thread; a turn-sized transaction
measured 3.1 ms that way against 0.14 ms in one go, too slow for the throughput Haven
promises.) PostgreSQL goes through asyncpg.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import MultiFernet
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.storage.crypto import attach_cipher

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The newest migration (bot/migrations/versions). tests/test_migrations.py checks that it
# is Alembic's head: update it with each new migration.
HEAD_REVISION = "0004"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_engine(url: str, cipher: MultiFernet, **options: Any) -> Engine:
    """A WAL file in an existing directory; deleted content is overwritten, not just unlinked."""
    parsed: URL = make_url(url).set(drivername="sqlite+pysqlite")
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # Errors and logs would otherwise quote SQL parameters: people's own words.
    options.setdefault("hide_parameters", True)
    engine = create_sync_engine(parsed, **options)

    @event.listens_for(engine, "connect")
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

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        # Handing back a connection used in autocommit mode, SQLAlchemy sets sqlite3's
        # `isolation_level` to "" (sqlite3 beginning transactions by itself); it stays None.
        if dbapi_connection is not None:
            dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Take the write lock up front, in case another process shares the file: two
        # deferred transactions that both upgrade to writing fail with "database is locked".
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    attach_cipher(engine, cipher)
    return engine


def postgres_engine(url: str, cipher: MultiFernet, **options: Any) -> AsyncEngine:
    options.setdefault("hide_parameters", True)
    # No ping before each use: it cost a round trip per turn. A connection found dead is
    # met at the transaction's first statement instead, and the transaction starts again
    # on a fresh one (PostgresRepository.run).
    options.setdefault("pool_pre_ping", False)
    # Twenty connections kept open, and no more: under load, connections opened beyond the
    # pool's size were closed again as soon as they were handed back, so busy moments paid
    # for connecting and for preparing each statement again on every new connection.
    options.setdefault("pool_size", 20)
    options.setdefault("max_overflow", 0)
    engine = create_async_engine(url, **options)
    attach_cipher(engine.sync_engine, cipher)
    return engine


def alembic_config() -> Config:
    from alembic.config import Config  # Alembic is imported only when there is work for it

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def schema_is_current(connection: Connection) -> bool:
    """Whether the database already stands at HEAD_REVISION. A restart usually finds it
    so, and then Alembic is not even imported: that was an eighth of a second of each
    start."""
    try:
        with connection.begin_nested():  # a missing table must not spoil the transaction
            found = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return False  # a new database: no alembic_version table yet
    return [row[0] for row in found] == [HEAD_REVISION]


def upgrade_schema(connection: Connection) -> None:
    """Apply every pending migration on `connection` (called at start-up)."""
    if schema_is_current(connection):
        return
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
