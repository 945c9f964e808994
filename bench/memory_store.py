"""An in-memory stand-in for bot.storage.repository, for measuring Haven without a database.

It offers the same `run(work)` entry point and the UnitOfWork methods the engine calls,
over dicts, using the real ORM classes (User, FlowRun, Reflection) as plain objects with
ids assigned here (message ids for /hide are kept as plain (id, time) pairs). It also
covers the other UnitOfWork and Repository methods (export, erase, hide) so that it keeps
working as the engine grows. Two honest differences from the real repository: nothing is rolled
back if a turn fails, and no call ever waits for I/O, so it measures everything in a turn
except the database.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bot.storage.models import FlowRun, Reflection, User, utcnow
from bot.storage.repository import DONE, HIDE_WINDOW, OPEN, Repository

T = TypeVar("T")


class MemoryRepository(Repository):
    dialect = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[int, User] = {}  # by chat id
        self.runs: defaultdict[int, list[FlowRun]] = defaultdict(list)  # by user id, oldest first
        self.kept: defaultdict[int, list[Reflection]] = defaultdict(list)  # by user id
        self.messages: defaultdict[int, list[tuple[int, datetime]]] = defaultdict(list)
        self.crisis: defaultdict[int, list[tuple[str, datetime]]] = defaultdict(list)
        self._user_ids = itertools.count(1)
        self._run_ids = itertools.count(1)
        self._reflection_ids = itertools.count(1)

    async def run(self, work: Callable[[Any], T], chat_id: int | None = None) -> T:
        return work(MemoryUnit(self))

    async def migrate(self) -> None:
        return None


class MemoryUnit:
    """The UnitOfWork methods the engine uses, with the same meaning as the SQL ones."""

    def __init__(self, store: MemoryRepository) -> None:
        self.store = store

    def user_for_chat(self, chat_id: int, first_name: str, language: str) -> User:
        user = self.store.users.get(chat_id)
        if user is None:
            now = utcnow()
            user = User(id=next(self.store._user_ids), chat_id=chat_id,
                        first_name=first_name[:128], language=language, onboarded=False,
                        created_at=now, updated_at=now)
            self.store.users[chat_id] = user
        return user

    def claim_update(self, user: User, update_id: int) -> bool:
        """True the first time `update_id` is seen; False for a repeated delivery."""
        recent = list(user.recent_updates or [])
        if update_id in recent:
            return False
        user.recent_updates = [*recent[-31:], update_id]
        return True

    def find_user(self, chat_id: int) -> User | None:
        return self.store.users.get(chat_id)

    def open_run(self, user: User, flow: str) -> FlowRun | None:
        for run in reversed(self.store.runs[user.id]):
            if run.flow == flow and run.status == OPEN:
                return run
        return None

    def open_steps(self, user: User) -> list[tuple[str, str]]:
        return [(run.flow, run.step) for run in self.store.runs[user.id] if run.status == OPEN]

    def start_run(self, user: User, flow: str, step: str) -> FlowRun:
        run = FlowRun(id=next(self.store._run_ids), user_id=user.id, flow=flow, step=step,
                      answers={}, status=OPEN, version=1, started_at=utcnow())
        self.store.runs[user.id].append(run)
        return run

    def finish_run(self, run: FlowRun) -> None:
        run.status = DONE
        run.completed_at = utcnow()
        run.answers = {}

    def keep_reflection(self, user: User, run: FlowRun, question: str, text: str) -> None:
        self.store.kept[user.id].append(Reflection(
            id=next(self.store._reflection_ids), user_id=user.id, flow=run.flow, step=run.step,
            question=question, text=text, created_at=utcnow()))

    def completed_counts(self, user: User) -> dict[str, int]:
        return dict(Counter(run.flow for run in self.store.runs[user.id] if run.status == DONE))

    def flow_states(self, user: User) -> tuple[list[tuple[str, str]], dict[str, int]]:
        return self.open_steps(user), self.completed_counts(user)

    def reflection_count(self, user: User, flow: str | None = None,
                         theme: str | None = None) -> int:
        return len(self._kept(user, flow, theme))

    def _kept(self, user: User, flow: str | None, theme: str | None) -> list[Reflection]:
        return [r for r in self.store.kept[user.id]
                if (flow is None or r.flow == flow)
                and (theme is None or (r.flow == "daily" and r.step == theme))]

    def reflection_kinds(self, user: User) -> list[tuple[str, str]]:
        return sorted({(r.flow, r.step) for r in self.store.kept[user.id]})

    def practice(self, user: User, since: datetime) -> tuple[list[datetime], int]:
        kept = [r.created_at for r in self.store.kept[user.id] if r.created_at >= since]
        done = [run.completed_at for run in self.store.runs[user.id]
                if run.completed_at is not None and run.completed_at >= since]
        return kept + done, self.reflection_count(user)

    def cancel_jobs(self, user: User, kind: str) -> None:
        """Scheduled work is not part of this benchmark: nothing is ever planned here."""

    def reflections(self, user: User) -> list[Reflection]:
        return list(self.store.kept[user.id])

    def reflections_page(self, user: User, offset: int, limit: int, flow: str | None = None,
                         theme: str | None = None) -> list[Reflection]:
        newest_first = sorted(self._kept(user, flow, theme), key=lambda r: (r.created_at, r.id),
                              reverse=True)
        return newest_first[offset : offset + limit]

    def all_runs(self, user: User) -> list[FlowRun]:
        return list(self.store.runs[user.id])

    def recent_message_ids(self, user: User, within: timedelta) -> list[int]:
        since = utcnow() - within
        return sorted(i for i, at in self.store.messages[user.id] if at >= since)

    def remember_messages(self, sent: dict[int, list[int]]) -> None:
        now = utcnow()
        for chat_id, message_ids in sent.items():
            user = self.store.users.get(chat_id)
            if user is not None:
                kept = [(i, at) for i, at in self.store.messages[user.id]
                        if at >= now - HIDE_WINDOW]
                self.store.messages[user.id] = kept + [(i, now) for i in message_ids]

    def record_crisis(self, user: User, category: str) -> None:
        self.store.crisis[user.id].append((category, utcnow()))

    def crisis_events(self, user: User) -> list[Any]:
        return []

    def safety_checks(self, user: User, relationship: str | None = None) -> list[Any]:
        return []  # the scripted people never take the safety check

    def heartbeat(self, worker_id: str, now: datetime, stale_before: datetime) -> int:
        return 1  # one process: the whole of Telegram's limits

    def leave(self, worker_id: str) -> None:
        return None

    def forget_messages(self, user: User) -> None:
        self.store.messages.pop(user.id, None)

    def erase(self, user: User) -> None:
        for table in (self.store.messages, self.store.kept, self.store.runs, self.store.crisis):
            table.pop(user.id, None)
        self.store.users.pop(user.chat_id, None)
