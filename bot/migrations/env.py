"""Alembic environment: migrations run on a connection handed over by bot.storage.database."""

from __future__ import annotations

from alembic import context

from bot.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only by mistake
    raise RuntimeError("Run migrations with `python -m bot migrate`, which opens the database.")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
