"""The only code that opens database sessions: one unit of work per incoming update."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.storage.database import sessionmaker
from bot.storage.models import ChatMessage, FlowRun, HandledUpdate, Reflection, User, utcnow

OPEN = "open"
DONE = "done"


class UnitOfWork:
    """Reads and writes for one turn; everything commits together or not at all."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def user_for_chat(self, chat_id: int, first_name: str, language: str) -> User:
        """The person behind `chat_id`, created on first contact (safely, if two arrive at once)."""
        user = await self._user(chat_id)
        if user is not None:
            return user
        values = {"chat_id": chat_id, "first_name": first_name[:128], "language": language,
                  "onboarded": False, "created_at": utcnow(), "updated_at": utcnow()}
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(User).values(**values).on_conflict_do_nothing(index_elements=["chat_id"])
        await self.session.execute(statement)
        user = await self._user(chat_id)
        assert user is not None
        return user

    async def claim_update(self, update_id: int) -> bool:
        """True the first time `update_id` is seen; False for a repeated delivery."""
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        result = await self.session.execute(
            insert(HandledUpdate).values(update_id=update_id, at=utcnow())
            .on_conflict_do_nothing(index_elements=["update_id"])
        )
        if update_id % 500 == 0:  # now and then, forget ids too old to be delivered again
            await self.session.execute(delete(HandledUpdate).where(
                HandledUpdate.at < utcnow() - timedelta(days=2)))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def find_user(self, chat_id: int) -> User | None:
        return await self._user(chat_id)

    async def _user(self, chat_id: int) -> User | None:
        result = await self.session.execute(select(User).where(User.chat_id == chat_id))
        return result.scalar_one_or_none()

    async def open_run(self, user: User, flow: str) -> FlowRun | None:
        result = await self.session.execute(
            select(FlowRun)
            .where(FlowRun.user_id == user.id, FlowRun.flow == flow, FlowRun.status == OPEN)
            .order_by(FlowRun.id.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def open_runs(self, user: User) -> list[FlowRun]:
        result = await self.session.execute(
            select(FlowRun).where(FlowRun.user_id == user.id, FlowRun.status == OPEN)
        )
        return list(result.scalars())

    async def start_run(self, user: User, flow: str, step: str) -> FlowRun:
        run = FlowRun(user_id=user.id, flow=flow, step=step, answers={}, status=OPEN)
        self.session.add(run)
        await self.session.flush()  # the run's id goes into its buttons
        return run

    def finish_run(self, run: FlowRun) -> None:
        run.status = DONE
        run.completed_at = utcnow()
        run.answers = {}  # what was worth keeping is in reflections; the rest ends with the flow

    def keep_reflection(self, user: User, run: FlowRun, question: str, text: str) -> None:
        self.session.add(Reflection(user_id=user.id, flow=run.flow, step=run.step,
                                    question=question, text=text))

    async def completed_counts(self, user: User) -> dict[str, int]:
        result = await self.session.execute(
            select(FlowRun.flow, func.count())
            .where(FlowRun.user_id == user.id, FlowRun.status == DONE)
            .group_by(FlowRun.flow)
        )
        return {flow: count for flow, count in result.all()}

    async def reflection_count(self, user: User) -> int:
        result = await self.session.execute(
            select(func.count()).select_from(Reflection).where(Reflection.user_id == user.id)
        )
        return int(result.scalar_one())

    async def reflections_page(self, user: User, offset: int, limit: int) -> list[Reflection]:
        """Reflections newest first, `limit` of them after skipping `offset`."""
        result = await self.session.execute(
            select(Reflection).where(Reflection.user_id == user.id)
            .order_by(Reflection.created_at.desc(), Reflection.id.desc())
            .offset(offset).limit(limit)
        )
        return list(result.scalars())

    async def reflections(self, user: User) -> list[Reflection]:
        result = await self.session.execute(
            select(Reflection).where(Reflection.user_id == user.id).order_by(Reflection.id)
        )
        return list(result.scalars())


    async def all_runs(self, user: User) -> list[FlowRun]:
        result = await self.session.execute(
            select(FlowRun).where(FlowRun.user_id == user.id).order_by(FlowRun.id)
        )
        return list(result.scalars())

    def remember_message(self, user: User, message_id: int) -> None:
        self.session.add(ChatMessage(user_id=user.id, message_id=message_id))

    async def recent_message_ids(self, user: User, within: timedelta) -> list[int]:
        """Ids of messages in the chat from the last `within` (what Telegram still deletes)."""
        result = await self.session.execute(
            select(ChatMessage.message_id)
            .where(ChatMessage.user_id == user.id, ChatMessage.at >= utcnow() - within)
            .order_by(ChatMessage.message_id)
        )
        return list(result.scalars())

    async def forget_messages(self, user: User) -> None:
        await self.session.execute(delete(ChatMessage).where(ChatMessage.user_id == user.id))

    async def erase(self, user: User) -> None:
        """Remove the person and everything of theirs (every table cascades from users)."""
        for table in (ChatMessage, Reflection, FlowRun):
            await self.session.execute(delete(table).where(table.user_id == user.id))
        await self.session.execute(delete(User).where(User.id == user.id))
        self.session.expunge_all()  # nothing of theirs may be written back


class Repository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine)

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[UnitOfWork]:
        async with self._sessions() as session, session.begin():
            yield UnitOfWork(session)

    async def remember_sent(self, chat_id: int, message_ids: list[int]) -> None:
        """Keep the ids of messages just sent (never their text), for /hide."""
        if not message_ids:
            return
        async with self.unit() as unit:
            user = await unit.find_user(chat_id)
            if user is None:
                return
            for message_id in message_ids:
                unit.remember_message(user, message_id)
            # Telegram lets a bot delete messages for 48 hours; older ids are of no use.
            await unit.session.execute(delete(ChatMessage).where(
                ChatMessage.user_id == user.id, ChatMessage.at < utcnow() - timedelta(hours=48)
            ))

    async def set_blocked(self, chat_id: int, blocked: bool) -> None:
        async with self.unit() as unit:
            user = await unit.find_user(chat_id)
            if user is not None:
                user.blocked_at = utcnow() if blocked else None

    async def after_erase(self) -> None:
        """Make sure erased rows leave no bytes behind (SQLite: fold the WAL into the file)."""
        if self.engine.dialect.name != "sqlite":
            return
        async with self.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> bool:
        try:
            async with self.unit() as unit:
                await unit.session.execute(select(1))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return True


def answers_copy(answers: dict[str, Any]) -> dict[str, Any]:
    """A fresh dict, so SQLAlchemy sees the JSON column as changed when it is reassigned."""
    return dict(answers)
