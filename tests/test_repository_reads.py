"""Reads that answer several questions in one query, on SQLite and the real PostgreSQL."""

from __future__ import annotations

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
