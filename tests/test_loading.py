"""People and runs read, and runs started, through the driver (bot.storage.loading): the
objects are what the ORM would load, in the session as loaded, and a read sees what the
turn has yet to write. On SQLite and on the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect, select

from bot.storage.loading import LoadedInsert, ObjectsQuery
from bot.storage.models import FlowRun, Reflection, User, as_utc
from bot.storage.repository import _USER_WITH_ACTIVE_RUN, Repository, UnitOfWork


def columns_of(obj: Any) -> dict[str, Any]:
    return {attribute.key: getattr(obj, attribute.key)
            for attribute in inspect(type(obj)).column_attrs}


async def someone_in_a_flow(repository: Repository) -> None:
    def create(unit: UnitOfWork) -> None:
        user = unit.user_for_chat(61, "Noor ✨", "en")
        run = unit.start_run(user, "aware", "triggers")
        user.active_flow = "aware"
        user.keep_reflections = True
        user.recent_updates = [7, 8]
        user.blocked_at = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
        run.answers = {"triggers": "When plans change, I tense up"}

    await repository.run(create)


async def test_a_person_and_their_run_are_what_the_orm_loads(repository: Repository) -> None:
    await someone_in_a_flow(repository)

    def both_ways(unit: UnitOfWork) -> tuple[dict[str, Any], ...]:
        user = unit.user_for_chat(61, "Noor ✨", "en")
        run = unit.open_run(user, "aware")
        fast = (columns_of(user), columns_of(run))
        unit.session.expunge_all()
        orm_user = unit.session.execute(select(User).where(User.chat_id == 61)).scalar_one()
        orm_run = unit.session.get(FlowRun, fast[1]["id"])
        return (*fast, columns_of(orm_user), columns_of(orm_run))

    user, run, orm_user, orm_run = await repository.run(both_ways)
    assert user == orm_user and run == orm_run
    assert user["first_name"] == "Noor ✨" and user["recent_updates"] == [7, 8]
    assert user["keep_reflections"] is True and user["onboarded"] is False  # not 1 and 0
    assert as_utc(user["blocked_at"]) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert run["answers"] == {"triggers": "When plans change, I tense up"}


async def test_loaded_objects_are_in_the_session_unchanged_and_their_changes_are_kept(
        repository: Repository) -> None:
    await someone_in_a_flow(repository)

    def change(unit: UnitOfWork) -> tuple[Any, ...]:
        user = unit.user_for_chat(61, "Noor ✨", "en")
        run = unit.open_run(user, "aware")
        assert run is not None
        states = inspect(user), inspect(run)
        seen = (all(state.persistent for state in states), user in unit.session.dirty,
                unit.find_user(61) is user, run.version)
        user.focus = "partner"
        run.step = "past"
        return seen

    persistent, dirty, same, version = await repository.run(change)
    assert persistent and not dirty and same

    def read(unit: UnitOfWork) -> tuple[Any, ...]:
        user = unit.user_for_chat(61, "Noor ✨", "en")
        run = unit.open_run(user, "aware")
        assert run is not None
        return user.focus, run.step, run.version

    assert await repository.run(read) == ("partner", "past", version + 1)


async def test_a_read_sees_what_the_turn_has_not_yet_written(repository: Repository) -> None:
    def start(unit: UnitOfWork) -> tuple[bool, bool]:
        user = unit.user_for_chat(62, "Ari", "en")
        alone = _USER_WITH_ACTIVE_RUN.first(unit.session, {"chat_id": 62})
        run = unit.start_run(user, "repair", "pause")
        user.active_flow = "repair"  # still in memory only: the query must write it first
        row = _USER_WITH_ACTIVE_RUN.first(unit.session, {"chat_id": 62})
        assert alone is not None and row is not None
        return alone[1] is None, row[0] is user and row[1] is run

    assert await repository.run(start) == (True, True)


async def test_a_new_run_is_stored_as_given_and_gets_its_key(repository: Repository) -> None:
    def start(unit: UnitOfWork) -> tuple[int, bool, bool]:
        user = unit.user_for_chat(63, "Sam", "en")
        run = unit.start_run(user, "boundaries", "notice")
        return run.id, inspect(run).persistent, run in unit.session.dirty

    run_id, persistent, dirty = await repository.run(start)
    assert persistent and not dirty

    def stored(unit: UnitOfWork) -> tuple[Any, ...]:
        run = unit.session.get(FlowRun, run_id)
        assert run is not None
        return run.flow, run.step, run.answers, run.status, run.version, run.completed_at

    assert await repository.run(stored) == ("boundaries", "notice", {}, "open", 1, None)


def test_a_query_must_select_whole_tables_in_order() -> None:
    users, runs = User.__table__.c, FlowRun.__table__.c  # type: ignore[attr-defined]
    ObjectsQuery((User,), select(*users))
    with pytest.raises(ValueError, match="each table's columns, in order"):
        ObjectsQuery((User,), select(users.id, users.chat_id))
    with pytest.raises(ValueError, match="each table's columns, in order"):
        ObjectsQuery((User, FlowRun), select(*runs, *users))


def test_a_new_row_gives_every_column_but_its_key() -> None:
    insert_reflection = LoadedInsert(Reflection)
    with pytest.raises(ValueError, match="gives"):
        insert_reflection.add(None, {"user_id": 1, "flow": "aware"})  # type: ignore[arg-type]


def test_first_contact_gives_every_column_with_a_default() -> None:
    """Through the driver, no default is filled in: a column with one that first contact
    leaves out would be NULL (or refused)."""
    from bot.storage.repository import _NEW_USER, _NEW_USER_COLUMNS

    defaulted = {column.key for column in User.__table__.columns  # type: ignore[attr-defined]
                 if column.default is not None}
    assert defaulted <= set(_NEW_USER_COLUMNS)
    for query in _NEW_USER.values():
        assert set(query.statement.statement.compile().params) == set(_NEW_USER_COLUMNS)
