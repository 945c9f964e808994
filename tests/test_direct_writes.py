"""A turn's changes to people and runs, written by bot.storage.direct instead of the ORM's
flush: the same rows result, the optimistic lock on runs still holds, and nothing changed
means nothing written. On SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm.exc import StaleDataError

from bot.storage.crypto import cipher_from
from bot.storage.direct import DriverStatement, RowInsert
from bot.storage.models import FlowRun, Reflection, User
from bot.storage.repository import Repository, UnitOfWork
from tests.helpers import migrated


def sync_engine(repository: Repository) -> Engine:
    engine: Any = repository.engine  # type: ignore[attr-defined]
    return engine.sync_engine if hasattr(engine, "sync_engine") else engine


@contextmanager
def statements(repository: Repository) -> Iterator[list[str]]:
    """The SQL sent to the database meanwhile, one line each. On SQLite, whatever its
    connections run (sqlite3's trace, values written in). On PostgreSQL, through
    SQLAlchemy, and straight to asyncpg, whose query loggers see what its connection runs
    other than through a prepared statement (SQLAlchemy's way). asyncpg reports each a
    moment after it ran (call_soon), so `seen` is to be read once the turn is over."""
    seen: list[str] = []
    watched: list[Any] = []  # driver connections given the logger or trace
    sqlite = repository.dialect == "sqlite"

    def note(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(" ".join(statement.split()))

    def log(query: Any) -> None:
        seen.append(" ".join(query.query.split()))

    def watch(_dbapi: Any, record: Any, _proxy: Any) -> None:
        driver = record.driver_connection
        if driver not in watched:
            if sqlite:
                driver.set_trace_callback(lambda statement: note(None, None, statement))
            else:
                driver.add_query_logger(log)
            watched.append(driver)

    engine = sync_engine(repository)
    if not sqlite:
        event.listen(engine, "before_cursor_execute", note)
    event.listen(engine.pool, "checkout", watch)
    for connection in repository.kept_connections():  # checked out before, and kept
        watch(None, connection.connection, None)
    try:
        yield seen
    finally:
        if not sqlite:
            event.remove(engine, "before_cursor_execute", note)
        event.remove(engine.pool, "checkout", watch)
        for driver in watched:
            if sqlite:
                driver.set_trace_callback(None)
            else:
                driver.remove_query_logger(log)


def updates_of(seen: list[str], table: str) -> list[str]:
    """Each UPDATE of `table`, alone or among the writes of one combined statement."""
    return [part for line in seen for part in line.split("(UPDATE ")[1:] or [line]
            if part.startswith(f"UPDATE {table} ") or part.startswith(f"{table} ")]


def writes_in(seen: list[str]) -> list[str]:
    return [line for line in seen if line.startswith(("UPDATE ", "INSERT ", "WITH "))]


async def person_in_a_flow(repository: Repository) -> tuple[int, int]:
    def create(unit: UnitOfWork) -> tuple[int, int]:
        user = unit.user_for_chat(77, "Sam", "en")
        run = unit.start_run(user, "aware", "triggers")
        user.active_flow = "aware"
        return user.id, run.id

    return await repository.run(create)


def load(unit: UnitOfWork, run_id: int) -> tuple[User, FlowRun]:
    user = unit.user_for_chat(77, "Sam", "en")
    run = unit.run_by_id(run_id)
    assert run is not None
    return user, run


async def test_changes_are_stored_with_one_update_per_row(repository: Repository) -> None:
    _, run_id = await person_in_a_flow(repository)

    def read(unit: UnitOfWork) -> tuple[Any, ...]:
        user, run = load(unit, run_id)
        return (run.version, run.updated_at, user.updated_at)

    version, run_updated, user_updated = await repository.run(read)

    def advance(unit: UnitOfWork) -> None:
        user, run = load(unit, run_id)
        user.focus = "partner"
        user.recent_updates = [*user.recent_updates, 501]
        run.step = "past"
        run.answers = {"triggers": "When plans change, I tense up ✨"}

    with statements(repository) as seen:
        await repository.run(advance)
    assert len(updates_of(seen, "users")) == 1
    assert len(updates_of(seen, "flow_runs")) == 1
    assert "version" in updates_of(seen, "flow_runs")[0]
    # On PostgreSQL, one statement (one round trip) for both rows.
    assert len(writes_in(seen)) == (1 if repository.dialect == "postgresql" else 2)

    def reread(unit: UnitOfWork) -> tuple[Any, ...]:
        user, run = load(unit, run_id)
        return (user.focus, user.recent_updates, run.step, run.answers, run.version,
                run.updated_at, user.updated_at)

    focus, recent, step, answers, new_version, run_now, user_now = await repository.run(reread)
    assert (focus, recent, step) == ("partner", [501], "past")
    assert answers == {"triggers": "When plans change, I tense up ✨"}
    assert new_version == version + 1
    assert run_now > run_updated and user_now > user_updated


async def test_the_answers_are_stored_encrypted(repository: Repository) -> None:
    _, run_id = await person_in_a_flow(repository)

    def answer(unit: UnitOfWork) -> None:
        _, run = load(unit, run_id)
        run.answers = {"triggers": "Sentinel-4b2e words"}

    await repository.run(answer)
    stored = await repository.run(lambda unit: unit.session.execute(
        text("SELECT answers FROM flow_runs WHERE id = :id"), {"id": run_id}).scalar_one())
    assert "Sentinel-4b2e" not in stored and stored.startswith("gAAAAA")


async def test_a_run_changed_since_it_was_read_is_not_overwritten(
        repository: Repository) -> None:
    _, run_id = await person_in_a_flow(repository)

    def write_over_a_newer_version(unit: UnitOfWork) -> None:
        _, run = load(unit, run_id)
        # Another worker moves the run on after this one read it.
        unit.session.execute(text("UPDATE flow_runs SET step = 'stress', version = version + 1 "
                                  "WHERE id = :id"), {"id": run_id})
        run.step = "past"

    with pytest.raises(StaleDataError):
        await repository.run(write_over_a_newer_version)

    def step(unit: UnitOfWork) -> str:
        return load(unit, run_id)[1].step

    assert await repository.run(step) == "triggers"  # the whole turn was rolled back


async def test_setting_the_same_values_writes_nothing(repository: Repository) -> None:
    _, run_id = await person_in_a_flow(repository)

    def same_again(unit: UnitOfWork) -> None:
        user, run = load(unit, run_id)
        user.focus = user.focus
        user.active_flow = "aware"
        run.step = "triggers"
        run.answers = dict(run.answers)

    with statements(repository) as seen:
        await repository.run(same_again)
    assert updates_of(seen, "users") == [] and updates_of(seen, "flow_runs") == []


async def test_later_changes_in_the_same_turn_are_written_too(repository: Repository) -> None:
    """A query in the middle of a turn flushes what changed so far; what changes after it
    must still reach the database at commit."""
    _, run_id = await person_in_a_flow(repository)

    def two_flushes(unit: UnitOfWork) -> None:
        user, run = load(unit, run_id)
        run.step = "past"
        assert [each.step for each in unit.all_runs(user)] == ["past"]  # flushed first
        run.step = "boundaries"
        user.country = "GB"

    await repository.run(two_flushes)

    def reread(unit: UnitOfWork) -> tuple[str, str | None, int]:
        user, run = load(unit, run_id)
        return run.step, user.country, run.version

    step, country, version = await repository.run(reread)
    assert (step, country) == ("boundaries", "GB")
    assert version == 3  # written at the query and again at commit


async def test_two_databases_with_their_own_keys_each_read_their_reflections(
        tmp_path: Path) -> None:
    """Statements are compiled once, but the key travels with each database's engine."""
    repositories = [await migrated(f"sqlite:///{tmp_path / f'haven{n}.sqlite3'}",
                                   cipher_from([Fernet.generate_key()])) for n in (1, 2)]
    try:
        for n, repository in enumerate(repositories):
            def keep(unit: UnitOfWork, words: str = f"Words of database {n}") -> None:
                user = unit.user_for_chat(77, "Sam", "en")
                unit.keep_reflection(user, unit.start_run(user, "aware", "triggers"),
                                     "triggers", words)

            await repository.run(keep)
        for n, repository in enumerate(repositories):
            kept = await repository.run(lambda unit: [
                reflection.text for reflection in
                unit.reflections(unit.user_for_chat(77, "Sam", "en"))])
            assert kept == [f"Words of database {n}"]
    finally:
        for repository in repositories:
            await repository.close()


async def test_a_kept_reflection_goes_with_the_turns_other_writes(
        repository: Repository) -> None:
    _, run_id = await person_in_a_flow(repository)

    def answer(unit: UnitOfWork) -> None:
        user, run = load(unit, run_id)
        unit.keep_reflection(user, run, "triggers", "When plans change, I tense up")
        user.recent_updates = [*user.recent_updates, 502]
        run.step = "past"

    with statements(repository) as seen:
        await repository.run(answer)
    if repository.dialect == "postgresql":
        assert len(writes_in(seen)) == 1
        assert "INSERT INTO reflections" in writes_in(seen)[0]
    else:
        assert len(writes_in(seen)) == 3

    def reread(unit: UnitOfWork) -> tuple[list[str], str, list[int]]:
        user, run = load(unit, run_id)
        return [kept.text for kept in unit.reflections(user)], run.step, user.recent_updates

    assert await repository.run(reread) == (["When plans change, I tense up"], "past", [502])


async def test_a_kept_reflection_is_there_for_the_turns_own_queries(
        repository: Repository) -> None:
    _, run_id = await person_in_a_flow(repository)

    def keep_then_count(unit: UnitOfWork) -> tuple[int, int]:
        user, run = load(unit, run_id)
        unit.keep_reflection(user, run, "triggers", "First words")
        first = unit.reflection_count(user)
        unit.keep_reflection(user, run, "past", "Second words")
        return first, len(unit.reflections(user))

    assert await repository.run(keep_then_count) == (1, 2)


async def test_a_reflection_kept_with_nothing_else_changed_is_stored(
        repository: Repository) -> None:
    _, run_id = await person_in_a_flow(repository)

    def keep_only(unit: UnitOfWork) -> None:
        user, run = load(unit, run_id)
        unit.keep_reflection(user, run, "triggers", "Only this")

    await repository.run(keep_only)
    texts = await repository.run(lambda unit: [
        kept.text for kept in unit.reflections(load(unit, run_id)[0])])
    assert texts == ["Only this"]


async def test_a_stale_run_undoes_the_whole_combined_write(repository: Repository) -> None:
    _, run_id = await person_in_a_flow(repository)

    def answer_over_a_newer_version(unit: UnitOfWork) -> None:
        user, run = load(unit, run_id)
        unit.session.execute(text("UPDATE flow_runs SET version = version + 1 WHERE id = :id"),
                             {"id": run_id})
        unit.keep_reflection(user, run, "triggers", "Lost with the turn")
        user.recent_updates = [503]
        run.step = "past"

    with pytest.raises(StaleDataError):
        await repository.run(answer_over_a_newer_version)

    def reread(unit: UnitOfWork) -> tuple[int, str, list[int]]:
        user, run = load(unit, run_id)
        return unit.reflection_count(user), run.step, user.recent_updates

    assert await repository.run(reread) == (0, "triggers", [])


def test_a_queued_insert_must_give_every_column_with_a_default() -> None:
    reflections: Any = Reflection.__table__
    with pytest.raises(ValueError, match="created_at"):
        RowInsert(reflections, ("user_id", "flow", "step", "question", "text"))


def reads_in(seen: list[str]) -> list[str]:
    return [line for line in seen if line.startswith("SELECT ")]


async def test_a_read_of_runs_goes_before_changes_to_people_and_runs_it_can_lay_over(
        repository: Repository) -> None:
    """A change to the person, and a run's change of step or status, wait past a read of
    the person's flow states, which lays the run's change over what it found (each write
    before a read is a round trip on PostgreSQL); both go in one write afterwards."""
    _, run_id = await person_in_a_flow(repository)

    def turn(unit: UnitOfWork) -> list[tuple[str, str]]:
        user, run = load(unit, run_id)
        user.country = "NZ"
        before = unit.flow_states(user)[0]
        run.step = "past"
        return [*before, *unit.flow_states(user)[0]]

    with statements(repository) as seen:
        assert await repository.run(turn) == [("aware", "triggers"), ("aware", "past")]
    assert len(updates_of(seen, "users")) == 1 and len(updates_of(seen, "flow_runs")) == 1
    if repository.dialect == "postgresql":
        (write,) = [index for index, line in enumerate(seen) if line in writes_in(seen)]
        reads = [index for index, line in enumerate(seen)
                 if line.startswith("SELECT flow_runs.flow")]
        assert len(reads) == 2 and write > max(reads)
    assert await repository.run(lambda unit: load(unit, run_id)[0].country) == "NZ"
    assert await repository.run(lambda unit: load(unit, run_id)[1].step) == "past"


async def test_a_new_run_the_orm_is_to_insert_is_written_before_a_read_of_runs(
        repository: Repository) -> None:
    user_id, _ = await person_in_a_flow(repository)

    def turn(unit: UnitOfWork) -> list[tuple[str, str]]:
        user = unit.user_for_chat(77, "Sam", "en")
        now = datetime.now(UTC)
        unit.session.add(FlowRun(user_id=user_id, flow="repair", step="pause", answers={},
                                 status="open", version=1, started_at=now, updated_at=now))
        return unit.flow_states(user)[0]

    with statements(repository) as seen:
        assert await repository.run(turn) == [("aware", "triggers"), ("repair", "pause")]
    inserts = [index for index, line in enumerate(seen) if "INSERT INTO flow_runs" in line]
    reads = [index for index, line in enumerate(seen) if line.startswith("SELECT flow_runs.flow")]
    assert len(inserts) == 1 and len(reads) == 1 and inserts[0] < reads[0]


async def jobs_of(repository: Repository, user_id: int) -> list[tuple[str, str]]:
    return await repository.run(lambda unit: sorted(
        (kind, state) for kind, state in unit.session.execute(text(
            "SELECT kind, state FROM scheduled_jobs WHERE user_id = :id"), {"id": user_id})))


async def test_cancelled_jobs_go_with_the_turns_other_writes(repository: Repository) -> None:
    user_id, _ = await person_in_a_flow(repository)

    def plan(unit: UnitOfWork) -> None:
        user = unit.user_for_chat(77, "Sam", "en")
        for day, kind in ((1, "daily"), (2, "daily"), (1, "weekly"), (3, "snooze")):
            unit.plan_job(user, kind, datetime(2026, 6, day, 7, tzinfo=UTC),
                          local_date=date(2026, 6, day))

    await repository.run(plan)

    def stop_the_daily_and_weekly(unit: UnitOfWork) -> None:
        user = unit.user_for_chat(77, "Sam", "en")
        user.daily_enabled = False
        unit.cancel_jobs(user, "daily")
        unit.cancel_jobs(user, "weekly")

    with statements(repository) as seen:
        await repository.run(stop_the_daily_and_weekly)
    deletes = [line for line in seen if "DELETE FROM scheduled_jobs" in line]
    if repository.dialect == "postgresql":
        assert len(writes_in(seen)) == 1 and len(deletes) == 1
        assert deletes[0].count("DELETE FROM scheduled_jobs") == 2
    else:
        assert len(deletes) == 2
    assert await jobs_of(repository, user_id) == [("snooze", "due")]


async def test_a_job_moved_out_of_due_before_a_cancel_is_kept(repository: Repository) -> None:
    """The cancel is queued, but whatever the turn did to the jobs before it is written
    first: the job it holds, no longer due, is not deleted with the due ones."""
    user_id, _ = await person_in_a_flow(repository)

    def plan(unit: UnitOfWork) -> list[int]:
        user = unit.user_for_chat(77, "Sam", "en")
        for day in (1, 2):
            unit.plan_job(user, "daily", datetime(2026, 6, day, 7, tzinfo=UTC),
                          local_date=date(2026, 6, day))
        return list(unit.session.execute(text(
            "SELECT id FROM scheduled_jobs ORDER BY due_at")).scalars())

    first, _ = await repository.run(plan)

    def send_then_replan(unit: UnitOfWork) -> None:
        user = unit.user_for_chat(77, "Sam", "en")
        job = unit.job(first)
        assert job is not None
        job.state = "sent"
        unit.cancel_jobs(user, "daily")

    await repository.run(send_then_replan)
    assert await jobs_of(repository, user_id) == [("daily", "sent")]


async def test_first_contact_adds_the_person_in_one_statement(repository: Repository) -> None:
    def first_contact(unit: UnitOfWork) -> tuple[Any, ...]:
        user = unit.user_for_chat(64, "Lee", "en")
        return (user.first_name, user.language, user.onboarded, user.recent_updates,
                user.daily_enabled, user.paused, user.discreet, user.created_at is not None,
                unit.open_run(user, "onboarding"))

    with statements(repository) as seen:
        added = await repository.run(first_contact)
    assert added == ("Lee", "en", False, [], False, False, False, True, None)
    inserts = [line for line in seen if line.startswith("INSERT INTO users")]
    assert len(inserts) == 1 and "RETURNING" in inserts[0]
    # The read before it found no one; no runs were looked for, as there can be none.
    assert len(reads_in(seen)) == 1 and reads_in(seen)[0].startswith("SELECT users.id")


async def test_a_second_first_contact_adds_no_one(repository: Repository) -> None:
    from bot.storage.repository import _NEW_USER

    await repository.run(lambda unit: unit.user_for_chat(65, "Kai", "en"))

    def add_again(unit: UnitOfWork) -> Any:
        now = datetime.now(UTC)
        return _NEW_USER[repository.dialect].first(unit.session, {
            "chat_id": 65, "first_name": "Kai", "language": "en", "onboarded": False,
            "recent_updates": [], "daily_enabled": False, "paused": False, "discreet": False,
            "created_at": now, "updated_at": now})

    assert await repository.run(add_again) is None
    assert await repository.run(lambda unit: unit.find_user(65).first_name) == "Kai"


def test_a_statement_knows_the_tables_it_reads_through_aliases_and_subqueries() -> None:
    users: Any = User.__table__
    runs: Any = FlowRun.__table__
    aliased_runs = runs.alias()
    joined = select(users.c.id, aliased_runs.c.step).select_from(
        users.join(aliased_runs, aliased_runs.c.user_id == users.c.id))
    assert DriverStatement(joined).tables == {users, runs}
    inner = select(runs.c.id).subquery()
    assert DriverStatement(select(inner.c.id)).tables == {runs}
    # Nothing it can name: any pending change is written before it.
    assert DriverStatement(select(func.json_each("[1]").table_valued("value").c.value)
                           ).tables is None
