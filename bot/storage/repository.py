"""The only code that opens database sessions: one unit of work per incoming update."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.storage.database import sessionmaker
from bot.storage.models import FlowRun, Reflection, User, utcnow

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


class Repository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine)

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[UnitOfWork]:
        async with self._sessions() as session, session.begin():
            yield UnitOfWork(session)

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
