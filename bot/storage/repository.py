"""The only code that opens database sessions: one unit of work per incoming update.

A unit of work is plain synchronous code over a SQLAlchemy session. The repository
runs it in one go: on SQLite, straight through with the synchronous driver; on
PostgreSQL, through asyncpg in a greenlet, as `AsyncSession.run_sync` would. Either way a
turn is one transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from cryptography.fernet import MultiFernet
from sqlalchemy import (
    ARRAY,
    Connection,
    Engine,
    Integer,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    null,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import greenlet_spawn

from bot.storage.checkpoints import AUTOMATIC_CHECKPOINTS_OFF, Checkpointer
from bot.storage.crypto import forget_plain_text
from bot.storage.database import is_sqlite, postgres_engine, sqlite_engine, upgrade_schema
from bot.storage.direct import DirectWriter, DriverStatement, RowInsert, RowsDelete
from bot.storage.loading import LoadedInsert, ObjectsQuery
from bot.storage.models import (
    ChatMessage,
    CrisisEvent,
    FlowRun,
    Reflection,
    SafetyCheck,
    ScheduledJob,
    User,
    Worker,
    utcnow,
)
from bot.storage.run_states import ASIDE, DONE, OPEN, FlowStates, flow_states
from bot.storage.shelf import SessionShelf, let_go
from bot.storage.transaction import ConnectionWasGone, in_sqlite_transaction, in_transaction

log = logging.getLogger(__name__)
T = TypeVar("T")
HIDE_WINDOW = timedelta(hours=48)  # how long Telegram lets a bot delete a message
# Message ids are written in batches this often. On SQLite a batch runs on the event loop:
# at 400 replies/s, a half-second batch held every turn up for 4-8 ms (on a slow machine).
MESSAGE_IDS_EVERY_SECONDS = 0.1
RECENT_UPDATES = 32


_JOBS: Table = ScheduledJob.__table__  # type: ignore[assignment]
_USERS: Table = User.__table__  # type: ignore[assignment]
_RUNS: Table = FlowRun.__table__  # type: ignore[assignment]
_REFLECTIONS: Table = Reflection.__table__  # type: ignore[assignment]
_CHECKS: Table = SafetyCheck.__table__  # type: ignore[assignment]

# The statements of every turn, built once: building one, and SQLAlchemy's work for a
# statement it has not seen, cost several times running it. Those that return plain
# values name table columns, which keeps the ORM out of their execution.
_USER = ObjectsQuery((User,), select(*_USERS.c).where(_USERS.c.chat_id == bindparam("chat_id")))
_USER_WITH_ACTIVE_RUN = ObjectsQuery((User, FlowRun), (
    select(*_USERS.c, *_RUNS.c)
    .select_from(_USERS.outerjoin(_RUNS, and_(_RUNS.c.user_id == _USERS.c.id,
                                              _RUNS.c.flow == _USERS.c.active_flow,
                                              _RUNS.c.status == OPEN)))
    .where(_USERS.c.chat_id == bindparam("chat_id"))
    .order_by(_RUNS.c.id.desc())
    .limit(1)
))
_OPEN_RUN = ObjectsQuery((FlowRun,), (
    select(*_RUNS.c)
    .where(_RUNS.c.user_id == bindparam("user_id"), _RUNS.c.flow == bindparam("flow"),
           _RUNS.c.status == OPEN)
    .order_by(_RUNS.c.id.desc())
    .limit(1)
))
_NEW_RUN = LoadedInsert(FlowRun)
# A person's first contact, by database: a second message racing the first adds no one,
# and gets no row back. Every column with a default is given: the driver fills in none.
_NEW_USER_COLUMNS = ("chat_id", "first_name", "language", "onboarded", "recent_updates",
                     "daily_enabled", "paused", "discreet", "created_at", "updated_at")
_NEW_USER = {
    name: ObjectsQuery((User,), dialect.insert(_USERS)
                       .values({column: bindparam(column) for column in _NEW_USER_COLUMNS})
                       .on_conflict_do_nothing(index_elements=["chat_id"])
                       .returning(*_USERS.c),
                       {column: _USERS.c[column].type for column in _NEW_USER_COLUMNS})
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
_FORGET_MESSAGES = delete(ChatMessage).where(ChatMessage.at < bindparam("before"))
_OPEN_STEPS = (
    select(_RUNS.c.flow, _RUNS.c.step)
    .where(_RUNS.c.user_id == bindparam("user_id"), _RUNS.c.status == OPEN)
    .order_by(_RUNS.c.id)
)
# On the table, not the mapped class: the ORM's DELETE (which looks for matching objects
# in the session) cost six times the statement. Queued with the turn's other writes, after
# whatever the session holds for the table (every caller has already moved the job it
# holds out of "due").
_CANCEL_JOBS = RowsDelete(_JOBS, ("user_id", "kind"), {"state": "due"})
# When a person practised since a moment (reflections kept, then flows finished), each a
# (moment, NULL) row; then (NULL, how many reflections they keep in all). What /progress
# shows, in one round trip.
_MOMENT = _REFLECTIONS.c.created_at.type
_PRACTICE = DriverStatement(
    union_all(
        select(_REFLECTIONS.c.created_at.label("moment"),
               sql_cast(null(), Integer).label("kept")).where(
            _REFLECTIONS.c.user_id == bindparam("user_id"),
            _REFLECTIONS.c.created_at >= bindparam("since")),
        select(_RUNS.c.completed_at, sql_cast(null(), Integer)).where(
            _RUNS.c.user_id == bindparam("user_id"),
            _RUNS.c.completed_at >= bindparam("since")),
        select(sql_cast(null(), _MOMENT), func.count()).select_from(_REFLECTIONS).where(
            _REFLECTIONS.c.user_id == bindparam("user_id"))),
    {"since": _MOMENT}, results=(_MOMENT, None))


def _reflection_filter(flow: bool, theme: bool) -> list[Any]:
    """Whose reflections (parameter user_id), of which flow (`flow`) or daily theme (`theme`)."""
    conditions: list[Any] = [_REFLECTIONS.c.user_id == bindparam("user_id")]
    if flow:
        conditions.append(_REFLECTIONS.c.flow == bindparam("flow"))
    if theme:
        conditions += [_REFLECTIONS.c.flow == "daily", _REFLECTIONS.c.step == bindparam("theme")]
    return conditions


# Counting a person's reflections: all, a flow's, a theme's; by (flow given, theme given).
_REFLECTION_COUNTS = {
    (flow, theme): DriverStatement(select(func.count()).select_from(_REFLECTIONS)
                                   .where(*_reflection_filter(flow, theme)))
    for flow in (False, True) for theme in (False, True)
}
# A person's safety checks, oldest first: all, or (True) one relationship's.
_SAFETY_CHECKS_BY_RELATIONSHIP = {
    one: ObjectsQuery((SafetyCheck,), select(*_CHECKS.c)
                      .where(_CHECKS.c.user_id == bindparam("user_id"),
                             *([_CHECKS.c.relationship == bindparam("relationship")]
                               if one else []))
                      .order_by(_CHECKS.c.created_at, _CHECKS.c.id))
    for one in (False, True)
}


_INSERT_REFLECTION = RowInsert(
    _REFLECTIONS, ("user_id", "flow", "step", "question", "text", "created_at"))


class DueRow(NamedTuple):
    """A due job with what its daily prompt needs of the person (`UnitOfWork.due_batch`).
    The flags are as the driver gives them: on SQLite, 0 or 1."""

    id: int
    kind: str
    prompt_id: str | None
    in_grace: bool  # due no more than the grace window ago
    user_id: int
    chat_id: int
    language: str
    focus: str | None
    timezone: str | None
    daily_enabled: bool
    paused: bool
    blocked: bool  # Telegram said the person blocked Haven
    quiet_start: str | None
    quiet_end: str | None
    discreet: bool


def _sent(item: str) -> tuple[str, datetime]:
    """ "id@2026-06-02 07:00:00.000000" (UTC) -> (id, the aware time)."""
    prompt_id, _, when = item.partition("@")
    return prompt_id, datetime.fromisoformat(when).replace(tzinfo=UTC)


class SentPrompts(NamedTuple):
    """The ids of the prompts a person was sent lately (`UnitOfWork.sent_prompts_of`): those
    sent from a `late` moment on, those sent before an `early` one, and (id, when) for those
    in between."""

    late: list[str]
    early: list[str]
    between: list[tuple[str, datetime]]


class FinishRow(NamedTuple):
    """A job to mark, with what planning the person's next daily prompt needs."""

    id: int
    kind: str
    user_id: int
    local_date: date | None
    daily_enabled: bool
    daily_time: str | None
    timezone: str | None
    paused: bool


# Claiming a batch: the due rows (as claim_due_jobs finds them) with their people, no ORM;
# the columns of a DueRow, in its order.
_CLAIM_BATCH = (
    select(_JOBS.c.id, _JOBS.c.kind, _JOBS.c.prompt_id,
           (_JOBS.c.due_at >= bindparam("missed_before")).label("in_grace"),
           _USERS.c.id.label("user_id"), _USERS.c.chat_id, _USERS.c.language, _USERS.c.focus,
           _USERS.c.timezone, _USERS.c.daily_enabled, _USERS.c.paused,
           _USERS.c.blocked_at.is_not(None).label("blocked"), _USERS.c.quiet_start,
           _USERS.c.quiet_end, _USERS.c.discreet)
    .join(_USERS, _USERS.c.id == _JOBS.c.user_id)
    .where(_JOBS.c.state == "due", _JOBS.c.due_at <= bindparam("now"),
           _JOBS.c.claimed_at.is_(None) | (_JOBS.c.claimed_at < bindparam("expired")))
    .order_by(_JOBS.c.due_at)
    .with_for_update(skip_locked=True, of=_JOBS)
)
# The columns of a FinishRow, in its order.
_TO_FINISH = (
    select(_JOBS.c.id, _JOBS.c.kind, _JOBS.c.user_id, _JOBS.c.local_date,
           _USERS.c.daily_enabled, _USERS.c.daily_time, _USERS.c.timezone, _USERS.c.paused)
    .join(_USERS, _USERS.c.id == _JOBS.c.user_id)
)


class _BatchSQL:
    """The fan-out's statements for one database dialect, built once.

    A batch's ids are one parameter, `ids`: a JSON array read by json_each on SQLite, an
    array compared with = ANY on PostgreSQL (SQLAlchemy's IN would render and bind each id
    anew for every statement). The executemany statements are plain SQL in the driver's
    own parameter style, with values converted as the column types would.
    """

    def __init__(self, dialect: Any) -> None:
        postgres = dialect.name == "postgresql"

        def among(column: Any) -> Any:
            if postgres:
                return column == any_(bindparam("ids", type_=ARRAY(Integer)))
            return column.in_(select(func.json_each(bindparam("ids", type_=String))
                                     .table_valued("value").c.value))

        def driver_sql(sql: str) -> str:
            if dialect.paramstyle == "qmark":
                return sql
            if dialect.paramstyle == "numeric_dollar":
                parts = sql.split("?")
                return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]
            if dialect.paramstyle == "format":
                return sql.replace("?", "%s")
            raise NotImplementedError(f"no positional parameters in style {dialect.paramstyle}")

        def converter(column: Any) -> Callable[[Any], Any]:
            convert = column.type.dialect_impl(dialect).bind_processor(dialect)
            return convert if convert is not None else (lambda value: value)

        self.ids: Callable[[list[int]], Any] = (lambda ids: ids) if postgres else json.dumps
        self.timestamp = converter(_JOBS.c.due_at)
        self.day = converter(_JOBS.c.local_date)
        self.claim = (update(_JOBS).where(among(_JOBS.c.id))
                      .values(claimed_at=bindparam("now")))
        self.skip = (update(_JOBS).where(among(_JOBS.c.id))
                     .values(state="skipped", claimed_at=bindparam("now")))
        # `state || ''`: SQLite keeps no statistics here and would look such rows up through
        # the (state, due_at) index, reading every row in that state, instead of through
        # each person's (user_id, kind, local_date) entries.
        sent = (_JOBS.c.state.concat("") == "sent", _JOBS.c.sent_at >= bindparam("since"),
                _JOBS.c.prompt_id.is_not(None))
        columns = (_JOBS.c.user_id, _JOBS.c.prompt_id, _JOBS.c.sent_at)
        sent_rows = union_all(
            select(*columns).where(among(_JOBS.c.user_id),
                                   _JOBS.c.kind == bindparam("dated_kind"),
                                   _JOBS.c.local_date >= bindparam("since_day"), *sent),
            select(*columns).where(among(_JOBS.c.user_id),
                                   _JOBS.c.kind == bindparam("other_kind"), *sent),
        ).subquery()
        # Per person, one row: the ids sent from `late` on, those sent before `early`, and
        # "id@when" (UTC, ISO) for the few in between, each list as one string: no row, and
        # no time to convert, per prompt.
        late = sent_rows.c.sent_at >= bindparam("late")
        early = sent_rows.c.sent_at < bindparam("early")
        if postgres:
            sent_text: Any = func.to_char(func.timezone("UTC", sent_rows.c.sent_at),
                                          'YYYY-MM-DD"T"HH24:MI:SS.US')
        else:  # kept as ISO text in UTC already
            sent_text = sql_cast(sent_rows.c.sent_at, String)
        joined = func.string_agg if postgres else func.group_concat
        comma: Any = literal_column("','")
        # Run straight through the driver (at the busiest minute SQLAlchemy's work around
        # each call and each row costs more than the query): values go in as the driver
        # takes them (see `timestamp`), rows come back as it gives them (SQLite: booleans
        # as 0 or 1, times as text).
        self.history = DriverStatement(select(
            sent_rows.c.user_id,
            joined(case((late, sent_rows.c.prompt_id)), comma),
            joined(case((early, sent_rows.c.prompt_id)), comma),
            joined(case((~late & ~early, sent_rows.c.prompt_id.concat("@").concat(sent_text))),
                   comma),
        ).group_by(sent_rows.c.user_id))
        self.open_flows = DriverStatement(select(_RUNS.c.user_id, _RUNS.c.flow).where(
            among(_RUNS.c.user_id), _RUNS.c.status == OPEN))
        self.due = DriverStatement(_CLAIM_BATCH.limit(bindparam("limit", type_=Integer)))
        self.users = select(User).where(among(User.id))
        self.to_finish = _TO_FINISH.where(among(_JOBS.c.id))
        self.cancel = delete(_JOBS).where(among(_JOBS.c.user_id),
                                          _JOBS.c.kind == bindparam("kind"),
                                          _JOBS.c.local_date >= bindparam("since"),
                                          _JOBS.c.state.concat("") == "due")
        self.days_done = select(_JOBS.c.user_id, _JOBS.c.local_date).where(
            among(_JOBS.c.user_id), _JOBS.c.kind == bindparam("kind"),
            _JOBS.c.local_date >= bindparam("since"), _JOBS.c.state != "due")
        self.set_prompt = driver_sql(
            "UPDATE scheduled_jobs SET claimed_at = ?, prompt_id = ? WHERE id = ?")
        self.set_open_prompt = (  # from the jobs just given their prompt
            update(_USERS).where(_USERS.c.id == _JOBS.c.user_id, among(_JOBS.c.id))
            .values(open_prompt=_JOBS.c.prompt_id, updated_at=bindparam("now")))
        self.mark = driver_sql(
            "UPDATE scheduled_jobs SET state = ?, sent_at = ?, answers = NULL WHERE id = ?")
        self.plan = driver_sql(
            "INSERT INTO scheduled_jobs (user_id, kind, due_at, local_date, state) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
        # (message id, when, chat id): a chat unknown here (erased meanwhile) adds nothing.
        self.remember = driver_sql(
            "INSERT INTO chat_messages (user_id, message_id, at) "
            "SELECT id, ?, ? FROM users WHERE chat_id = ?")


_BATCH_SQL: dict[str, _BatchSQL] = {}


_MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(7468727) -- 'haven' migrations")


class UnitOfWork:
    """Reads and writes for one turn; everything commits together or not at all."""

    def __init__(self, session: Session) -> None:
        self.session = session
        # Open runs already looked up in this transaction, by (user id, flow).
        self._open_runs: dict[tuple[int, str], FlowRun | None] = {}
        # People added in this transaction: they have no runs but those started since.
        self._new_people: set[int] = set()

    def user_for_chat(self, chat_id: int, first_name: str, language: str) -> User:
        """The person behind `chat_id`, created on first contact (safely, if two arrive at once).

        The run of the flow they are in comes back in the same query, since nearly every
        turn needs it.
        """
        row = _USER_WITH_ACTIVE_RUN.first(self.session, {"chat_id": chat_id})
        if row is not None:
            found: User = row[0]
            if found.active_flow:
                self._open_runs[(found.id, found.active_flow)] = row[1]
            return found
        now = utcnow()
        row = _NEW_USER[self._dialect()].first(self.session, {
            "chat_id": chat_id, "first_name": first_name[:128], "language": language,
            "onboarded": False, "recent_updates": [], "daily_enabled": False, "paused": False,
            "discreet": False, "created_at": now, "updated_at": now})
        if row is None:  # another first message got there first
            row = _USER.first(self.session, {"chat_id": chat_id})
            assert row is not None
        else:
            self._new_people.add(row[0].id)
        created: User = row[0]
        return created

    def _dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def _dialect_insert(self) -> Callable[..., Any]:
        """The database's own INSERT construct, which has ON CONFLICT DO NOTHING."""
        return postgresql.insert if self._dialect() == "postgresql" else sqlite.insert

    def claim_update(self, user: User, update_id: int) -> bool:
        """True the first time `update_id` is seen for this person; False for a repeat.

        Telegram redelivers an update within minutes if it was not acknowledged, so
        the person's last few update ids are enough to recognise a second delivery.
        """
        recent = list(user.recent_updates or [])
        if update_id in recent:
            return False
        user.recent_updates = [*recent[-(RECENT_UPDATES - 1):], update_id]
        return True

    def find_user(self, chat_id: int) -> User | None:
        return self._user(chat_id)

    def _user(self, chat_id: int) -> User | None:
        row = _USER.first(self.session, {"chat_id": chat_id})
        return row[0] if row is not None else None

    def open_run(self, user: User, flow: str) -> FlowRun | None:
        key = (user.id, flow)
        if key not in self._open_runs:
            if user.id in self._new_people:
                return None
            row = _OPEN_RUN.first(self.session, {"user_id": user.id, "flow": flow})
            self._open_runs[key] = row[0] if row is not None else None
        return self._open_runs[key]

    def open_steps(self, user: User) -> list[tuple[str, str]]:
        """(flow, step) of each flow the person has open, oldest first: what the menu and
        /progress show, without loading (and decrypting) the runs themselves."""
        rows = self.session.execute(_OPEN_STEPS, {"user_id": user.id})
        return [(flow, step) for flow, step in rows]

    def start_run(self, user: User, flow: str, step: str) -> FlowRun:
        # Written at once: the run's id goes into its buttons.
        now = utcnow()
        run: FlowRun = _NEW_RUN.add(self.session, {
            "user_id": user.id, "flow": flow, "step": step, "answers": {}, "status": OPEN,
            "version": 1, "started_at": now, "updated_at": now, "completed_at": None})
        self._open_runs[(user.id, flow)] = run
        return run

    def start_run_with(self, user: User, flow: str, step: str,
                       answers: dict[str, Any]) -> FlowRun:
        """A new run of `flow` carrying `answers`; an older open run of it is set aside."""
        older = self.open_run(user, flow)
        if older is not None:
            older.status = ASIDE
        run = self.start_run(user, flow, step)
        run.answers = answers_copy(answers)
        return run

    def run_by_id(self, run_id: int) -> FlowRun | None:
        return self.session.get(FlowRun, run_id)

    def finish_run(self, run: FlowRun) -> None:
        self._open_runs[(run.user_id, run.flow)] = None
        run.status = DONE
        run.completed_at = utcnow()
        run.answers = {}  # what was worth keeping is in reflections; the rest ends with the flow

    def keep_reflection(self, user: User, run: FlowRun, question: str, text: str) -> None:
        self._insert_reflection(user, run.flow, run.step, question, text)

    def _insert_reflection(self, user: User, flow: str, step: str, question: str,
                           text: str) -> None:
        # Through the driver, with the turn's other writes: the ORM's flush of a new object
        # costs several times the statement, and nothing in a turn needs the object itself.
        _INSERT_REFLECTION.queue(self.session, {
            "user_id": user.id, "flow": flow, "step": step, "question": question,
            "text": text, "created_at": utcnow()})

    def flow_states(self, user: User) -> FlowStates:
        """`open_steps` and `completed_counts` together, in one query (see run_states)."""
        return flow_states(self.session, user.id)

    def completed_counts(self, user: User) -> dict[str, int]:
        return self.flow_states(user)[1]

    def reflection_count(self, user: User, flow: str | None = None,
                         theme: str | None = None) -> int:
        statement = _REFLECTION_COUNTS[(flow is not None, theme is not None)]
        values = {"user_id": user.id, "flow": flow, "theme": theme}
        return int(statement.rows(self.session, values)[0][0])

    def reflections_page(self, user: User, offset: int, limit: int, flow: str | None = None,
                         theme: str | None = None) -> list[Reflection]:
        """Reflections newest first, `limit` of them after skipping `offset`; a flow's only,
        or (for daily prompts, whose step is the theme) a theme's only, if asked."""
        result = self.session.execute(
            select(Reflection).where(*_reflection_filter(flow is not None, theme is not None))
            .order_by(Reflection.created_at.desc(), Reflection.id.desc())
            .offset(offset).limit(limit),
            {"user_id": user.id, "flow": flow, "theme": theme})
        return list(result.scalars())

    def practice(self, user: User, since: datetime) -> tuple[list[datetime], int]:
        """When the person practised since `since` (reflections kept and flows finished),
        and how many reflections they keep in all."""
        rows = _PRACTICE.rows(self.session, {"user_id": user.id, "since": since})
        moments = [moment for moment, kept in rows if kept is None and moment is not None]
        (kept,) = (kept for _moment, kept in rows if kept is not None)  # the one count row
        return moments, int(kept)

    def reflection_kinds(self, user: User) -> list[tuple[str, str]]:
        """(flow, step) pairs the person has reflections for."""
        return [(flow, step) for flow, step in self.session.execute(
            select(Reflection.flow, Reflection.step).where(Reflection.user_id == user.id)
            .distinct().order_by(Reflection.flow, Reflection.step)).all()]

    def reflections(self, user: User) -> list[Reflection]:
        result = self.session.execute(
            select(Reflection).where(Reflection.user_id == user.id).order_by(Reflection.id)
        )
        return list(result.scalars())

    def all_runs(self, user: User) -> list[FlowRun]:
        result = self.session.execute(
            select(FlowRun).where(FlowRun.user_id == user.id).order_by(FlowRun.id)
        )
        return list(result.scalars())

    def record_crisis(self, user: User, category: str) -> None:
        self.session.add(CrisisEvent(user_id=user.id, category=category))

    def crisis_events(self, user: User) -> list[CrisisEvent]:
        result = self.session.execute(
            select(CrisisEvent).where(CrisisEvent.user_id == user.id).order_by(CrisisEvent.id)
        )
        return list(result.scalars())

    def recent_message_ids(self, user: User, within: timedelta) -> list[int]:
        """Ids of messages in the chat from the last `within` (what Telegram still deletes)."""
        result = self.session.execute(
            select(ChatMessage.message_id)
            .where(ChatMessage.user_id == user.id, ChatMessage.at >= utcnow() - within)
            .order_by(ChatMessage.message_id)
        )
        return list(result.scalars())

    def remember_messages(self, sent: dict[int, list[int]]) -> None:
        """Record the ids of messages in each chat; forget those too old to delete."""
        now = utcnow()
        # Hundreds of ids arrive at once when many people write: one executemany handed
        # to the driver, which looks each person up itself. (An ORM object per id held
        # the event loop for tens of milliseconds; a multi-row INSERT, for about 4 ms.)
        sql = self._batch
        at = sql.timestamp(now)
        self._executemany(sql.remember, [
            (message_id, at, chat_id)
            for chat_id, message_ids in sent.items() for message_id in message_ids])
        self.session.execute(_FORGET_MESSAGES, {"before": now - HIDE_WINDOW})

    def forget_messages(self, user: User) -> None:
        self.session.execute(delete(ChatMessage).where(ChatMessage.user_id == user.id))

    # ---- scheduled work ------------------------------------------------------------

    def due_job(self, user: User, kind: str) -> ScheduledJob | None:
        return self.session.execute(
            select(ScheduledJob).where(ScheduledJob.user_id == user.id, ScheduledJob.kind == kind,
                                       ScheduledJob.state == "due")
            .order_by(ScheduledJob.due_at).limit(1)
        ).scalar_one_or_none()

    def plan_job(self, user: User, kind: str, due_at: datetime, local_date: date | None = None,
                 prompt_id: str | None = None) -> None:
        """Add a job; a second daily prompt for the same local day is quietly not added."""
        self.session.execute(
            self._dialect_insert()(ScheduledJob)
            .values(user_id=user.id, kind=kind, due_at=due_at, local_date=local_date,
                    state="due", prompt_id=prompt_id)
            .on_conflict_do_nothing()
        )

    def plan_check_back(self, user: User, run: FlowRun, due_at: datetime, target: str,
                        answers: dict[str, Any] | None = None) -> None:
        """A flow's timed check-back; planning it again for the same run and target moves it."""
        self.cancel_check_back(run, target)
        self.session.add(ScheduledJob(user_id=user.id, kind="checkback", due_at=due_at,
                                      state="due", run_id=run.id, target=target,
                                      answers=answers_copy(answers) if answers else None))

    def planned_check_backs(self, user: User) -> list[ScheduledJob]:
        return list(self.session.execute(
            select(ScheduledJob).where(ScheduledJob.user_id == user.id,
                                       ScheduledJob.kind == "checkback",
                                       ScheduledJob.state == "due")
            .order_by(ScheduledJob.due_at)).scalars())

    def cancel_check_back(self, run: FlowRun, target: str) -> None:
        self.session.execute(delete(ScheduledJob).where(
            ScheduledJob.run_id == run.id, ScheduledJob.target == target,
            ScheduledJob.state == "due"))

    def job_done_on(self, user: User, kind: str, day: date) -> bool:
        """Whether the `kind` job for local `day` was already sent (or let go)."""
        return self.session.execute(
            select(ScheduledJob.id).where(ScheduledJob.user_id == user.id,
                                          ScheduledJob.kind == kind,
                                          ScheduledJob.local_date == day,
                                          ScheduledJob.state != "due").limit(1)
        ).first() is not None

    def reflections_since(self, user: User, since: datetime) -> list[Reflection]:
        return list(self.session.execute(
            select(Reflection).where(Reflection.user_id == user.id,
                                     Reflection.created_at >= since)
            .order_by(Reflection.created_at.desc(), Reflection.id.desc())
        ).scalars())

    def record_daily_sent(self, user: User, day: date, prompt_id: str, now: datetime) -> None:
        """Today's prompt was given now (by /checkin): record it as the day's one prompt."""
        job = self.session.execute(
            select(ScheduledJob).where(ScheduledJob.user_id == user.id,
                                       ScheduledJob.kind == "daily", ScheduledJob.local_date == day)
        ).scalar_one_or_none()
        if job is None:
            job = ScheduledJob(user_id=user.id, kind="daily", due_at=now, local_date=day)
            self.session.add(job)
        job.state, job.sent_at, job.prompt_id = "sent", now, prompt_id

    def keep_daily_reflection(self, user: User, theme: str, prompt_id: str, text: str) -> None:
        self._insert_reflection(user, "daily", theme, prompt_id, text)

    def cancel_jobs(self, user: User, kind: str) -> None:
        # Queued, to go with the turn's other writes (bot.storage.direct).
        _CANCEL_JOBS.queue(self.session, {"user_id": user.id, "kind": kind})

    def claim_due_jobs(self, now: datetime, lease: timedelta, limit: int) -> list[int]:
        """Claim up to `limit` due jobs; another worker's live claims are skipped, not waited on."""
        rows = self.session.execute(
            select(ScheduledJob)
            .where(ScheduledJob.state == "due", ScheduledJob.due_at <= now,
                   (ScheduledJob.claimed_at.is_(None)) | (ScheduledJob.claimed_at < now - lease))
            .order_by(ScheduledJob.due_at).limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars().all()
        for job in rows:
            job.claimed_at = now
        return [job.id for job in rows]

    def due_rows_waiting(self, now: datetime) -> tuple[int, datetime | None]:
        """How many rows are due by `now` and not yet sent, and the earliest due time among
        them (naive on SQLite): one query over the index on (state, due_at)."""
        count, earliest = self.session.execute(
            select(func.count(), func.min(ScheduledJob.due_at))
            .where(ScheduledJob.state == "due", ScheduledJob.due_at <= now)
        ).one()
        return int(count), earliest

    # ---- scheduled work, a batch at a time (the daily fan-out) ------------------------
    #
    # At the busiest minute thousands of people are due at once: these read and write a
    # batch of them in a few statements (`_BatchSQL`), with no ORM objects.

    @property
    def _batch(self) -> _BatchSQL:
        dialect = self.session.get_bind().dialect
        found = _BATCH_SQL.get(dialect.name)
        if found is None:
            found = _BATCH_SQL[dialect.name] = _BatchSQL(dialect)
        return found

    def due_batch(self, now: datetime, lease: timedelta, limit: int,
                  grace: timedelta) -> list[DueRow]:
        """Up to `limit` of the jobs `claim_due_jobs` would claim, each with what its daily
        prompt needs of the person (not their name, which would cost a decryption each), in
        one query. On PostgreSQL they are locked (FOR UPDATE SKIP LOCKED): the caller claims
        every one of them in this same unit of work, through `claim_jobs`, `skip_jobs` or
        `set_prompts`."""
        sql = self._batch
        return [DueRow(*row) for row in sql.due.run(self.session, {
            "now": sql.timestamp(now), "expired": sql.timestamp(now - lease),
            "missed_before": sql.timestamp(now - grace), "limit": limit}).all()]

    def claim_jobs(self, job_ids: list[int], now: datetime) -> None:
        """Claim jobs found by `due_batch`, as `claim_due_jobs` does."""
        if job_ids:
            sql = self._batch
            self.session.execute(sql.claim, {"ids": sql.ids(job_ids), "now": now})

    def skip_jobs(self, job_ids: list[int], now: datetime) -> None:
        """Claim jobs found by `due_batch` and let them go without sending them."""
        if job_ids:
            sql = self._batch
            self.session.execute(sql.skip, {"ids": sql.ids(job_ids), "now": now})

    def sent_prompts_of(self, user_ids: list[int], since: datetime, early: datetime,
                        late: datetime, dated_kind: str, other_kind: str) -> dict[int, SentPrompts]:
        """`sent_prompts` for many people, in two queries: per person, the ids of the prompts
        sent from `since` on, split by when (see `SentPrompts`).

        Only jobs of the kinds that carry a prompt are read: `dated_kind` (one a day, with
        its local date, read from the day before `since` on) and `other_kind`, each found
        through the person's (user_id, kind, local_date) entries rather than every sent row.
        """
        found: dict[int, SentPrompts] = {}
        if not user_ids:
            return found
        sql = self._batch
        rows = sql.history.run(self.session, {
            "ids": sql.ids(user_ids), "since": sql.timestamp(since),
            "since_day": sql.day((since - timedelta(days=1)).date()), "dated_kind": dated_kind,
            "other_kind": other_kind, "early": sql.timestamp(early),
            "late": sql.timestamp(late)}).all()
        for user_id, late_ids, early_ids, between in rows:
            found[user_id] = SentPrompts(
                late_ids.split(",") if late_ids else [], early_ids.split(",") if early_ids else [],
                [_sent(item) for item in between.split(",")] if between else [])
        return found

    def open_flows_of(self, user_ids: list[int]) -> dict[int, list[str]]:
        """The flows each person has open, for many people in one query (no answers read)."""
        found: dict[int, list[str]] = {}
        if not user_ids:
            return found
        sql = self._batch
        for user_id, flow in sql.open_flows.run(self.session, {"ids": sql.ids(user_ids)}):
            found.setdefault(user_id, []).append(flow)
        return found

    def users_by_ids(self, user_ids: list[int]) -> dict[int, User]:
        """Several people as ORM objects, in one query."""
        if not user_ids:
            return {}
        sql = self._batch
        return {user.id: user for user in self.session.execute(
            sql.users, {"ids": sql.ids(user_ids)}).scalars()}

    def set_prompts(self, chosen: list[tuple[int, int, str]], now: datetime) -> None:
        """Claim each job (job id, user id, prompt id) found by `due_batch` as sending that
        prompt, which becomes the person's open prompt (what a typed reply answers), as of
        `now`: an executemany handed straight to the driver (SQLAlchemy's work per row would
        cost more than the database's), then one UPDATE ... FROM for the people."""
        if not chosen:
            return
        sql = self._batch
        stamp = sql.timestamp(now)
        self._executemany(sql.set_prompt,
                          [(stamp, prompt_id, job_id) for job_id, _, prompt_id in chosen])
        self.session.execute(sql.set_open_prompt, {
            "ids": sql.ids([job_id for job_id, _, _ in chosen]), "now": now})

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.session.connection().exec_driver_sql(sql, rows)

    def jobs_to_finish(self, job_ids: list[int]) -> list[FinishRow]:
        """The jobs among `job_ids` that still exist, with what planning the person's next
        daily prompt needs."""
        if not job_ids:
            return []
        sql = self._batch
        return [FinishRow(*row) for row in self.session.execute(
            sql.to_finish, {"ids": sql.ids(job_ids)})]

    def mark_jobs(self, outcomes: list[tuple[int, str, datetime]]) -> None:
        """Set each (job id, state, when) as `finish_job` does (a check-back's copy of
        answers goes too), in one executemany handed straight to the driver."""
        if outcomes:
            sql = self._batch
            self._executemany(sql.mark, [(state, sql.timestamp(at), job_id)
                                         for job_id, state, at in outcomes])

    def cancel_jobs_of(self, user_ids: list[int], kind: str, since: date) -> None:
        """`cancel_jobs` for many people in one statement, for the local days from `since`
        on (each person's rows of other days are not read: a year of them would be)."""
        if user_ids:
            sql = self._batch
            self.session.execute(sql.cancel, {"ids": sql.ids(user_ids), "kind": kind,
                                              "since": since})

    def days_done(self, user_ids: list[int], kind: str, since: date) -> set[tuple[int, date]]:
        """(user id, local date) of every `kind` job from `since` on that was sent or let go:
        `job_done_on` for many people in one query."""
        if not user_ids:
            return set()
        sql = self._batch
        rows = self.session.execute(sql.days_done, {"ids": sql.ids(user_ids), "kind": kind,
                                                     "since": since})
        return {(user_id, day) for user_id, day in rows}

    def plan_jobs(self, kind: str, planned: list[tuple[int, datetime, date]]) -> None:
        """`plan_job` for many (user id, due at, local date) in one INSERT ... ON CONFLICT DO
        NOTHING: a second daily prompt for the same local day is quietly not added."""
        if not planned:
            return
        sql = self._batch
        self._executemany(sql.plan, [
            (user_id, kind, sql.timestamp(due_at), sql.day(day), "due")
            for user_id, due_at, day in planned])

    def job(self, job_id: int) -> ScheduledJob | None:
        return self.session.get(ScheduledJob, job_id)

    def user_by_id(self, user_id: int) -> User | None:
        return self.session.get(User, user_id)

    def sent_prompts(self, user: User, since: datetime) -> list[tuple[str, datetime]]:
        rows = self.session.execute(
            select(ScheduledJob.prompt_id, ScheduledJob.sent_at)
            .where(ScheduledJob.user_id == user.id, ScheduledJob.state == "sent",
                   ScheduledJob.sent_at >= since, ScheduledJob.prompt_id.is_not(None))
        ).all()
        return [(str(prompt_id), sent_at) for prompt_id, sent_at in rows if sent_at is not None]

    def add_safety_check(self, user: User, relationship: str, scores: dict[str, Any],
                         when: datetime) -> SafetyCheck:
        check = SafetyCheck(user_id=user.id, relationship=relationship, scores=scores,
                            created_at=when)
        self.session.add(check)
        return check

    def safety_checks(self, user: User, relationship: str | None = None) -> list[SafetyCheck]:
        """The person's safety checks, oldest first; one relationship's only, if asked."""
        query = _SAFETY_CHECKS_BY_RELATIONSHIP[relationship is not None]
        return [check for (check,) in query.rows(
            self.session, {"user_id": user.id, "relationship": relationship})]

    def erase(self, user: User) -> None:
        """Remove the person and everything of theirs (every table cascades from users)."""
        for table in (ChatMessage, CrisisEvent, Reflection, ScheduledJob, SafetyCheck, FlowRun):
            self.session.execute(delete(table).where(table.user_id == user.id))
        self.session.execute(delete(User).where(User.id == user.id))
        self.session.expunge_all()  # nothing of theirs may be written back

    def heartbeat(self, worker_id: str, now: datetime, stale_before: datetime) -> int:
        """Note that this worker is alive, forget those not seen since `stale_before`, and
        return how many are alive (this one included)."""
        if self.session.get(Worker, worker_id) is None:
            self.session.add(Worker(id=worker_id, seen_at=now))
        else:
            self.session.execute(update(Worker).where(Worker.id == worker_id).values(seen_at=now))
        self.session.execute(delete(Worker).where(Worker.seen_at < stale_before))
        self.session.flush()
        return int(self.session.execute(select(func.count()).select_from(Worker)).scalar_one())

    def leave(self, worker_id: str) -> None:
        self.session.execute(delete(Worker).where(Worker.id == worker_id))


class Repository:
    """Runs units of work; subclasses decide how (SQLite on the event loop's own thread,
    PostgreSQL through asyncpg)."""

    dialect = ""

    def __init__(self) -> None:
        self._sent: dict[int, list[int]] = {}
        self._flush_task: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[UnitOfWork], T], chat_id: int | None = None) -> T:
        """Run `work` in one transaction; it commits if `work` returns, rolls back if it raises.

        With `chat_id`, no other process runs work for the same chat at the same time.
        """
        raise NotImplementedError

    async def migrate(self) -> None:
        raise NotImplementedError

    def kept_connections(self) -> list[Connection]:
        """The connections kept out of the pool between units of work, idle now."""
        return []

    async def close(self) -> None:
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()
        await self.flush_messages()

    async def ping(self) -> bool:
        try:
            await self.run(lambda unit: unit.session.execute(select(1)).scalar_one())
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return True

    def remember_messages(self, chat_id: int, message_ids: list[int]) -> None:
        """Note the ids of messages in a chat (never their text), for /hide.

        They are written in batches a moment later, not in a transaction per message:
        a crash can lose the last tenth of a second of ids, never anything a person wrote.
        """
        if not message_ids:
            return
        self._sent.setdefault(chat_id, []).extend(message_ids)
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(MESSAGE_IDS_EVERY_SECONDS)
        try:
            await self.flush_messages()
        except Exception:
            log.exception("could not record message ids")

    async def flush_messages(self) -> None:
        pending, self._sent = self._sent, {}
        if pending:
            await self.run(lambda unit: unit.remember_messages(pending))

    async def after_erase(self) -> None:
        """Make sure erased rows leave no bytes behind, on disk or in memory."""


class SqliteRepository(Repository):
    """SQLite: a unit of work runs straight through, on the event loop's own thread.

    A turn's statements take well under a millisecond together (WAL, no fsync per
    commit), less than handing them to another thread costs. The price: a second
    process writing the same file would make this one wait, so SQLite is for one
    process; several workers share PostgreSQL.

    Units of work never overlap (nothing in one awaits), so they all use one session,
    bound to one connection kept out of the pool: each unit begins and ends its own
    transaction in it (through sqlite3 itself, bot.storage.transaction), and the session
    is closed after it, its objects gone. Making a session and checking a connection out
    and back in for every unit was about a sixth of a turn's CPU. A unit that fails lets
    both go; the next opens new ones.

    The log's checkpoints are made from a thread (bot.storage.checkpoints), not inside a
    unit's COMMIT, where they held up every turn.
    """

    dialect = "sqlite"

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        DirectWriter().listen(self._sessions)
        self._kept: tuple[Session, Connection] | None = None
        database = engine.url.database
        self.checkpoints = (Checkpointer(database)
                            if database and database != ":memory:" else None)

    async def run(self, work: Callable[[UnitOfWork], T], chat_id: int | None = None) -> T:
        # One process per SQLite file: the engine's per-chat lock is all the ordering needed.
        if self._kept is None:
            # Transactions on it are begun and ended by bot.storage.transaction.
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if self.checkpoints is not None:
                connection.exec_driver_sql(AUTOMATIC_CHECKPOINTS_OFF)
                self.checkpoints.start()
            self._kept = (self._sessions(bind=connection), connection)
        session, connection = self._kept
        try:
            result = in_sqlite_transaction(session, lambda kept: work(UnitOfWork(kept)))
        except BaseException:
            self._let_go()
            raise
        session.close()
        if self.checkpoints is not None:
            driver: Any = connection.connection.driver_connection  # the sqlite3 Connection
            self.checkpoints.after_writer_commit(driver)
        return result

    def kept_connections(self) -> list[Connection]:
        return [self._kept[1]] if self._kept is not None else []

    def _let_go(self) -> None:
        """Close the kept session and return its connection to the pool."""
        kept, self._kept = self._kept, None
        if kept is not None:
            let_go(kept)

    async def migrate(self) -> None:
        with self.engine.begin() as connection:
            upgrade_schema(connection)

    async def after_erase(self) -> None:
        """Forget decrypted values; fold the write-ahead log into the (securely deleted)
        file and empty it."""
        forget_plain_text(self.engine)
        with self.engine.connect() as connection:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            autocommit.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        await super().close()
        if self.checkpoints is not None:
            self.checkpoints.stop()
        self._let_go()
        self.engine.dispose()


class PostgresRepository(Repository):
    dialect = "postgresql"

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self.engine = engine
        # Units of work begin and commit through bot.storage.transaction, on connections
        # the adapter leaves alone (autocommit). `engine` itself keeps ordinary transactions.
        # The sessions are the synchronous ones an AsyncSession would wrap, used inside the
        # unit of work's greenlet: the AsyncSession around them cost a tenth of a turn (its
        # setup, and a task of its own to close it). They are kept between units, each on
        # its connection (bot.storage.shelf), leaving two of the pool's connections free.
        autocommit = engine.sync_engine.execution_options(isolation_level="AUTOCOMMIT")
        sessions = sessionmaker(autocommit, expire_on_commit=False)
        DirectWriter().listen(sessions)
        pool: Any = engine.sync_engine.pool  # a QueuePool, unless the engine was given another
        size = pool.size() if hasattr(pool, "size") else 1
        timeout = pool.timeout() if hasattr(pool, "timeout") else 30.0
        self.shelf = SessionShelf(sessions, autocommit, size=max(size - 2, 1), timeout=timeout)

    async def run(self, work: Callable[[UnitOfWork], T], chat_id: int | None = None) -> T:
        try:
            return await self._run(work, chat_id)
        except ConnectionWasGone:
            # Found dead before the transaction began (the server restarted while it sat
            # idle): the pool and the shelf have been emptied, so once more on a fresh one.
            return await self._run(work, chat_id)

    async def _run(self, work: Callable[[UnitOfWork], T], chat_id: int | None) -> T:
        # The whole transaction in one hop into synchronous code, as AsyncSession.run_sync
        # makes it: every await of the async session's own begin, execute and commit is
        # another (the turn is the same).
        def unit_of_work(session: Session) -> T:
            return work(UnitOfWork(session))

        kept = await self.shelf.acquire()

        def in_session() -> T:
            held = kept if kept is not None else self.shelf.open()
            try:
                result = in_transaction(held[0], unit_of_work, chat_id)
            except ConnectionWasGone:
                self.shelf.discard(held)
                self.shelf.empty()
                raise
            except BaseException:
                self.shelf.discard(held)
                raise
            self.shelf.put_back(held)
            return result

        return await greenlet_spawn(in_session)

    def kept_connections(self) -> list[Connection]:
        return self.shelf.connections()

    async def ping(self) -> bool:
        """Whether the database answers, on one of the pool's connections the shelf leaves
        free: a health check does not wait in line behind people's turns. A connection the
        server ended while it sat in the pool is met once and replaced, so it is asked
        twice before the answer is no."""
        for _attempt in range(2):
            try:
                async with self.engine.connect() as connection:
                    await connection.execute(select(1))
            except Exception:  # noqa: BLE001 - any failure means "not ready"
                continue
            return True
        return False

    async def after_erase(self) -> None:
        forget_plain_text(self.engine.sync_engine)

    async def migrate(self) -> None:
        """Upgrade the schema; workers starting together wait for the first to finish."""
        async with self.engine.begin() as connection:
            await connection.execute(_MIGRATION_LOCK)
            await connection.run_sync(upgrade_schema)

    async def close(self) -> None:
        await super().close()
        await greenlet_spawn(self.shelf.empty)
        await self.engine.dispose()


def open_repository(url: str, cipher: MultiFernet) -> Repository:
    """The repository for a database URL (SQLite file, or PostgreSQL via asyncpg)."""
    if is_sqlite(url):
        return SqliteRepository(sqlite_engine(url, cipher))
    if url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return PostgresRepository(postgres_engine(url, cipher))


def raw_rows(unit: UnitOfWork, sql: str) -> list[Any]:
    """Rows of a raw query, for checks that must look past encryption."""
    return list(unit.session.execute(text(sql)).all())


def answers_copy(answers: dict[str, Any]) -> dict[str, Any]:
    """A fresh dict, so SQLAlchemy sees the JSON column as changed when it is reassigned."""
    return dict(answers)
