"""Reads that answer several questions in one query, on SQLite and the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.storage.models import as_utc
from bot.storage.repository import ASIDE, Repository, UnitOfWork


async def test_flow_states_give_open_steps_oldest_first_and_completions(
        repository: Repository) -> None:
    def lived(unit: UnitOfWork) -> None:
        user = unit.user_for_chat(88, "Sam", "en")
        for _ in range(2):
            unit.finish_run(unit.start_run(user, "aware", "triggers"))
        unit.finish_run(unit.start_run(user, "repair", "pause"))
        unit.start_run(user, "repair", "listen")
        unit.start_run(user, "aware", "past")
        unit.start_run(user, "boundaries", "notice").status = ASIDE

    await repository.run(lived)

    def states(unit: UnitOfWork) -> tuple[object, ...]:
        user = unit.user_for_chat(88, "Sam", "en")
        return unit.flow_states(user), unit.open_steps(user), unit.completed_counts(user)

    (open_steps, completed), alone_open, alone_completed = await repository.run(states)
    assert open_steps == [("repair", "listen"), ("aware", "past")]
    assert completed == {"aware": 2, "repair": 1}
    assert (open_steps, completed) == (alone_open, alone_completed)


async def test_flow_states_of_someone_new_are_empty(repository: Repository) -> None:
    assert await repository.run(
        lambda unit: unit.flow_states(unit.user_for_chat(89, "Ari", "en"))) == ([], {})


async def test_practice_is_reflections_kept_and_flows_finished_since_a_moment(
        repository: Repository) -> None:
    def lived(unit: UnitOfWork) -> None:
        user = unit.user_for_chat(90, "Sam", "en")
        run = unit.start_run(user, "aware", "triggers")
        unit.keep_reflection(user, run, "triggers", "When plans change I tense up.")
        unit.finish_run(run)
        unit.keep_daily_reflection(user, "pause", "p1", "I paused before answering.")
        unit.start_run(user, "repair", "pause")  # open: not practice yet

    before = datetime.now(UTC)
    await repository.run(lived)
    after = datetime.now(UTC)

    def practice(unit: UnitOfWork) -> tuple[object, object]:
        user = unit.user_for_chat(90, "Sam", "en")
        return (unit.practice(user, before - timedelta(days=1)),
                unit.practice(user, after + timedelta(seconds=1)))

    (recent, kept), (later, kept_in_all) = await repository.run(practice)
    assert isinstance(recent, list) and len(recent) == 3  # two reflections and one flow
    # Times, not text (on SQLite, without their zone, as every time read there is).
    assert all(before - timedelta(seconds=1) <= as_utc(moment) <= after for moment in recent)
    assert later == []
    assert kept == kept_in_all == 2  # every reflection kept, whenever
    assert await repository.run(
        lambda unit: unit.practice(unit.user_for_chat(96, "Ari", "en"), before)) == ([], 0)


async def test_reflections_are_counted_all_by_flow_and_by_daily_theme(
        repository: Repository) -> None:
    def lived(unit: UnitOfWork) -> tuple[int, int, int, int, int]:
        user = unit.user_for_chat(91, "Sam", "en")
        run = unit.start_run(user, "aware", "triggers")
        unit.keep_reflection(user, run, "triggers", "one")
        unit.keep_reflection(user, run, "triggers", "two")
        unit.keep_daily_reflection(user, "pause", "p1", "three")
        unit.keep_daily_reflection(user, "listen", "p2", "four")
        # Counted in the same turn as they were kept: the count sees the turn's own writes.
        return (unit.reflection_count(user), unit.reflection_count(user, "aware"),
                unit.reflection_count(user, "daily"), unit.reflection_count(user, theme="pause"),
                unit.reflection_count(user, "repair"))

    assert await repository.run(lived) == (4, 2, 2, 1, 0)
    assert await repository.run(
        lambda unit: unit.reflection_count(unit.user_for_chat(92, "Ari", "en"))) == 0


async def test_safety_checks_come_back_oldest_first_decrypted_and_by_relationship(
        repository: Repository) -> None:
    start = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

    def checked(unit: UnitOfWork) -> list[str]:
        user = unit.user_for_chat(93, "Sam", "en")
        day = timedelta(days=1)
        unit.add_safety_check(user, "partner", {"elements": {"trust": 2}}, start + 2 * day)
        unit.add_safety_check(user, "friend", {"elements": {"trust": 4}}, start + day)
        unit.add_safety_check(user, "partner", {"elements": {"trust": 3}}, start)
        # Seen in the same turn they were added in.
        return [check.relationship for check in unit.safety_checks(user)]

    assert await repository.run(checked) == ["partner", "friend", "partner"]

    def read(unit: UnitOfWork) -> tuple[list[tuple[str, object, datetime]], list[object]]:
        user = unit.user_for_chat(93, "Sam", "en")
        every = [(check.relationship, check.scores, as_utc(check.created_at))
                 for check in unit.safety_checks(user)]
        partner = [check.scores for check in unit.safety_checks(user, "partner")]
        return every, partner

    every, partner = await repository.run(read)
    assert every == [("partner", {"elements": {"trust": 3}}, start),
                     ("friend", {"elements": {"trust": 4}}, start + timedelta(days=1)),
                     ("partner", {"elements": {"trust": 2}}, start + timedelta(days=2))]
    assert partner == [{"elements": {"trust": 3}}, {"elements": {"trust": 2}}]
    assert await repository.run(
        lambda unit: unit.safety_checks(unit.user_for_chat(94, "Ari", "en"))) == []


async def test_flow_states_read_in_the_turn_that_changes_runs_are_as_stored_after_it(
        repository: Repository) -> None:
    """The menu after a flow ends is read in the same turn as the run's change, which is
    laid over what the read finds (bot.storage.run_states): it must match the stored state."""
    def before(unit: UnitOfWork) -> dict[str, int]:
        user = unit.user_for_chat(95, "Sam", "en")
        unit.finish_run(unit.start_run(user, "aware", "triggers"))
        unit.finish_run(unit.start_run(user, "repair", "pause"))
        return {"aware": unit.start_run(user, "aware", "triggers").id,
                "heal": unit.start_run(user, "heal", "notice").id,
                "talk": unit.start_run(user, "talk", "intent").id}

    ids = await repository.run(before)

    def changed(unit: UnitOfWork) -> tuple[object, object]:
        user = unit.user_for_chat(95, "Sam", "en")
        unit.start_run(user, "boundaries", "notice")  # written at once
        runs = {name: unit.run_by_id(run_id) for name, run_id in ids.items()}
        first = unit.flow_states(user)
        unit.finish_run(runs["aware"])  # a second time, now after repair's
        runs["heal"].step = "grieve"  # moved on
        runs["talk"].status = ASIDE
        return first, unit.flow_states(user)

    first, same_turn = await repository.run(changed)
    assert first == ([("aware", "triggers"), ("heal", "notice"), ("talk", "intent"),
                      ("boundaries", "notice")], {"aware": 1, "repair": 1})
    assert list(first[1]) == ["aware", "repair"]
    stored = await repository.run(
        lambda unit: unit.flow_states(unit.user_for_chat(95, "Sam", "en")))
    assert same_turn == stored
    assert stored == ([("heal", "grieve"), ("boundaries", "notice")], {"aware": 2, "repair": 1})
    assert list(same_turn[1]) == list(stored[1]) == ["repair", "aware"]
