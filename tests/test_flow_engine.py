"""What the flow engine offers every flow: routes on a scale, choices kept as reflections,
timed check-backs that wait at a step or start a follow-up flow, and the mistakes in a flow
file that the loader refuses. Run on a small flow written for the purpose."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import MultiFernet
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.app import Content, load_content
from bot.checkbacks import check_back_due
from bot.engine import Engine
from bot.flows.loader import FlowError
from bot.scheduler import Scheduler
from bot.settings import PROJECT_ROOT
from bot.storage.models import FlowRun, Reflection, ScheduledJob
from bot.storage.repository import Repository
from tests.helpers import Clock, Outbox, Reader, labels, make_engine, migrated, texts

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

DEMO = """
name: demo
command: demo
title: Demo
order: 5
start: level
steps:
  level:
    expects: scale
    scale: {min: 1, max: 10}
    answer: level
    routes: [{min: 7, next: wait_for}]
    next: note
  wait_for:
    expects: choice
    answer: wait_for
    choices:
      - {value: m20, label: Twenty minutes}
      - {value: now, label: Go on now, next: note}
    check_back: {wait_at: waiting, template: demo/check_back.j2}
    next: waiting
  waiting:
    expects: choice
    choices:
      - {value: ready, label: Ready, next: note}
      - {value: more, label: More time, next: wait_for}
  note:
    expects: text
    answer: note
    keep: true
    label: A note
    skippable: true
    next: later
  later:
    expects: choice
    answer: later
    keep: true
    label: When to follow up
    choices:
      - {value: d3, label: In three days}
      - {value: none, label: No thanks}
      - {value: again, label: Write again, next: note}
    check_back: {start: follow}
    next: bye
  bye:
    end: true
"""

FOLLOW = """
name: follow
title: Follow-up
in_menu: false
start: ask
steps:
  ask:
    expects: choice
    choices:
      - {value: go, label: Look back, next: learned}
      - {value: stop, label: Not now, next: bye}
  learned:
    expects: text
    answer: learned
    keep: true
    label: What I learned
    next: bye
  bye:
    end: true
"""

OTHER = """
name: other
command: other
title: Other
order: 1
start: write
steps:
  write:
    expects: text
    answer: words
    next: bye
  bye:
    end: true
"""

TEMPLATES = {
    "demo/level.j2": "How activated are you, 1 to 10?",
    "demo/wait_for.j2": "Let's pause. How long?",
    "demo/check_back.j2": "Checking back, as you asked.",
    "demo/waiting.j2": "Breathe out slowly. Ready when you are.",
    "demo/note.j2": "Write a note.",
    "demo/later.j2": "When shall I follow up?",
    "demo/bye.j2": "Done.",
    "follow/ask.j2": "{% if answers.note is defined %}You wrote: {{ answers.note }}{% else %}"
                     "Hello again.{% endif %}",
    "follow/learned.j2": "What did you learn?",
    "follow/bye.j2": "Thank you.",
    "other/write.j2": "Write anything.",
    "other/bye.j2": "Bye.",
}


def write_content(root: Path, flows: dict[str, str], templates: dict[str, str]) -> Path:
    dialogs = root / "dialogs"
    prompts = root / "prompts" / "en"
    dialogs.mkdir(parents=True)
    prompts.mkdir(parents=True)
    for name, body in flows.items():
        (dialogs / f"{name}.yaml").write_text(textwrap.dedent(body))
    for path, body in templates.items():
        (prompts / path).parent.mkdir(parents=True, exist_ok=True)
        (prompts / path).write_text(body)
    for shared in ("system", "daily", "onboarding", "export"):
        (prompts / shared).symlink_to(PROJECT_ROOT / "prompts" / "en" / shared)
    (dialogs / "onboarding.yaml").symlink_to(PROJECT_ROOT / "dialogs" / "onboarding.yaml")
    return root


def load(root: Path) -> Content:
    return load_content(root / "dialogs", root / "prompts")


@pytest.fixture
def demo(tmp_path: Path) -> Content:
    return load(write_content(tmp_path / "content",
                              {"demo": DEMO, "follow": FOLLOW, "other": OTHER}, TEMPLATES))


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


def engine_for(demo: Content, repository: Repository, clock: Clock) -> Engine:
    return make_engine(demo, repository, clock)


@pytest.fixture
async def person(demo: Content, repository: Repository, clock: Clock) -> ConsoleChat:
    def set_up(unit):  # type: ignore[no-untyped-def]
        user = unit.user_for_chat(77, "Sam", "en")
        user.onboarded, user.keep_reflections = True, True
        user.timezone, user.daily_time = "Europe/London", "08:00"

    await repository.run(set_up)
    return ConsoleChat(engine_for(demo, repository, clock), user_id=77, first_name="Sam")


async def jobs(repository: Repository) -> list[ScheduledJob]:
    return await Reader(repository).query(select(ScheduledJob).order_by(ScheduledJob.id))


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def test_flows_come_in_their_order(demo: Content, person: ConsoleChat) -> None:
    assert [name for name, flow in demo.flows.items() if flow.in_menu] == ["other", "demo"]
    reply = await person.send("/menu")
    assert labels(reply) == ["Other", "Demo"]


async def test_a_low_answer_takes_the_steps_own_next(person: ConsoleChat,
                                                     repository: Repository) -> None:
    reply = await person.send("/demo")
    assert labels(reply) == [str(n) for n in range(1, 11)]
    rows = reply.messages[-1].buttons
    assert [len(row) for row in rows] == [5, 5], "Telegram allows at most eight in a row"
    reply = await person.send("3")
    assert "Write a note." in texts(reply)
    assert await jobs(repository) == []


async def test_a_high_answer_routes_to_a_pause_that_checks_back(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await person.send("/demo")
    reply = await person.send("9")
    assert "How long?" in texts(reply)
    reply = await person.send("Twenty minutes")
    assert "Ready when you are" in texts(reply)
    [job] = await jobs(repository)
    assert (job.kind, job.target, job.state) == ("checkback", "waiting", "due")
    assert utc(job.due_at) == START + timedelta(minutes=20)

    outbox = Outbox()
    scheduler = Scheduler(person.engine, outbox)
    await scheduler.tick(START + timedelta(minutes=10))
    assert outbox.sent == [], "nothing before it is due"
    clock.now = START + timedelta(minutes=20)
    await scheduler.tick(clock.now)
    [(chat_id, sent)] = outbox.sent
    assert chat_id == 77
    assert "Checking back, as you asked." in texts(sent)
    assert labels(sent) == ["Ready", "More time"]
    person.show(sent)  # the buttons under the check-back are the ones the person presses
    reply = await person.send("1")
    assert "Write a note." in texts(reply)
    assert (await jobs(repository))[0].state == "sent"


async def test_picking_again_moves_the_check_back(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await person.send("/demo")
    await person.send("8")
    await person.send("Twenty minutes")
    clock.now = START + timedelta(minutes=5)
    await person.send("More time")
    await person.send("Twenty minutes")
    due = [(j.state, utc(j.due_at)) for j in await jobs(repository)]
    assert due == [("due", START + timedelta(minutes=25))], "one check-back, moved"


async def test_no_check_back_once_the_person_moved_on(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await person.send("/demo")
    await person.send("10")
    await person.send("Twenty minutes")
    await person.send("Ready")
    outbox = Outbox()
    clock.now = START + timedelta(minutes=21)
    await Scheduler(person.engine, outbox).tick(clock.now)
    assert outbox.sent == []
    assert [j.state for j in await jobs(repository)] == ["skipped"]


async def test_a_follow_up_flow_starts_days_later_and_its_buttons_work_from_another_flow(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await person.send("/demo")
    await person.send("2")
    await person.send("I rushed & <interrupted> them")
    reply = await person.send("In three days")
    assert "Done." in texts(reply)
    [job] = await jobs(repository)
    assert (job.kind, job.target) == ("checkback", "follow")
    # Three local days later, at the person's daily time (08:00 in London is 07:00 UTC).
    assert utc(job.due_at) == datetime(2026, 6, 4, 7, 0, tzinfo=UTC)
    assert job.answers == {"level": 2, "note": "I rushed & <interrupted> them", "later": "d3"}

    await person.send("/other")  # in the middle of another flow when the follow-up comes
    outbox = Outbox()
    clock.now = datetime(2026, 6, 4, 7, 0, 30, tzinfo=UTC)
    await Scheduler(person.engine, outbox).tick(clock.now)
    [(_, sent)] = outbox.sent
    assert "You wrote: I rushed &amp; &lt;interrupted&gt; them" in sent.messages[0].text
    user = await Reader(repository).find_user(77)
    assert user is not None and user.active_flow == "other", "the flow they are in stays"
    [job] = await jobs(repository)
    assert (job.state, job.answers) == ("sent", None), "a sent row keeps no copy of the words"

    person.show(sent)
    reply = await person.send("1")  # "Look back", pressed under the follow-up
    assert "What did you learn?" in texts(reply)
    reply = await person.send("To slow down.")
    assert "Thank you." in texts(reply)
    reader = Reader(repository)
    runs = await reader.query(select(FlowRun).order_by(FlowRun.id))
    assert [(run.flow, run.status) for run in runs] == [
        ("demo", "done"), ("other", "open"), ("follow", "done")]
    kept = await reader.query(select(Reflection).order_by(Reflection.id))
    assert [(row.flow, row.question, row.text) for row in kept] == [
        ("demo", "note", "I rushed & <interrupted> them"),
        ("demo", "later", "In three days"),  # a kept choice is kept as the words picked
        ("follow", "learned", "To slow down."),
    ]
    reply = await person.send("/other")
    assert "Write anything." in texts(reply), "the other flow waits where it was"


async def test_no_thanks_plans_nothing(person: ConsoleChat, repository: Repository) -> None:
    await person.send("/demo")
    await person.send("1")
    await person.send("skip")
    await person.send("No thanks")
    assert await jobs(repository) == []


async def test_a_skipped_step_drops_its_answer_from_an_earlier_pass(
    person: ConsoleChat, repository: Repository
) -> None:
    await person.send("/demo")
    await person.send("1")
    await person.send("A first note")
    await person.send("Write again")
    await person.send("Skip")
    await person.send("In three days")
    [job] = await jobs(repository)
    assert job.answers == {"level": 1, "later": "d3"}


async def test_a_check_back_survives_a_restart(
    demo: Content, person: ConsoleChat, repository: Repository, database_url: str,
    cipher: MultiFernet, clock: Clock
) -> None:
    await person.send("/demo")
    await person.send("7")
    await person.send("Twenty minutes")
    await repository.close()
    reopened = await migrated(database_url, cipher)
    try:
        outbox = Outbox()
        clock.now = START + timedelta(hours=1)
        engine = engine_for(demo, reopened, clock)
        await Scheduler(engine, outbox).tick(clock.now)
        await Scheduler(engine, outbox).tick(clock.now)
        assert len(outbox.sent) == 1
        assert "Checking back" in texts(outbox.sent[0][1])
    finally:
        await reopened.close()


def test_check_back_times() -> None:
    now = datetime(2026, 3, 27, 21, 15, tzinfo=UTC)  # a Friday evening, before the clocks change
    assert check_back_due(now, "m20", "Europe/London", None) == now + timedelta(minutes=20)
    assert check_back_due(now, "h1", None, None) == now + timedelta(hours=1)
    # Monday 08:00 in London is summer time by then: 07:00 UTC.
    assert check_back_due(now, "d3", "Europe/London", "08:00") == datetime(
        2026, 3, 30, 7, 0, tzinfo=UTC)
    # Without a daily time: the same time of day, three local days on.
    assert check_back_due(now, "d3", "Europe/London", None) == datetime(
        2026, 3, 30, 20, 15, tzinfo=UTC)
    assert check_back_due(now, "d1", None, None) == now + timedelta(days=1)
    assert check_back_due(now, "none", "Europe/London", "08:00") is None
    assert check_back_due(now, "m0", "Europe/London", "08:00") is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("    answer: note\n    keep: true", "    answer: note\n    routes: [{min: 1, next: bye}]"
                                              "\n    keep: true"),
         "step 'note': routes are for scale steps"),
        (("    answer: level\n", "    answer: level\n    action: nonsense\n"),
         "step 'level': action 'nonsense' is not one of"),
        (("{value: m20, label: Twenty minutes}", "{value: soon, label: Twenty minutes}"),
         "step 'wait_for': check_back is for a choice step whose values are delays"),
        (("{wait_at: waiting,", "{wait_at: elsewhere,"),
         "step 'wait_for': check_back waits at an unknown step 'elsewhere'"),
        (("check_back: {start: follow}", "check_back: {start: nowhere}"),
         "step 'later': check_back starts an unknown flow 'nowhere'"),
        (("check_back: {start: follow}", "check_back: {start: follow, wait_at: bye}"),
         "step 'later': check_back needs either wait_at with a template, or start"),
        (("template: demo/check_back.j2", "template: demo/missing.j2"),
         "step 'wait_for': no template (looked for demo/missing.j2)"),
        (("    answer: level\n", "    answer: level\n    keep: true\n    label: Level\n"),
         "step 'level': keep is for free-text answers and choices"),
    ],
)
def test_mistakes_with_the_newer_keys_are_refused(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in DEMO
    root = write_content(tmp_path, {"demo": DEMO.replace(old, new), "follow": FOLLOW,
                                    "other": OTHER}, TEMPLATES)
    with pytest.raises(FlowError) as raised:
        load(root)
    assert f"dialogs/demo.yaml, {expected}" in str(raised.value)


async def test_a_choice_can_be_typed_in_other_words(chat: ConsoleChat,
                                                    repository: Repository) -> None:
    await chat.send("/start")
    await chat.send("Sounds good")
    await chat.send("Yes, keep them")
    reply = await chat.send("My Mum")
    assert "Which country" in texts(reply), "\"my mum\" picks Child or parent"
    user = await Reader(repository).find_user(chat.user_id)
    assert user is not None and user.focus == "family"
    await chat.send("Skip")
    await chat.send("Not for now")
    await chat.send("/safety")
    await chat.send("Begin")
    reply = await chat.send("my ex")
    assert "1 of 16" in texts(reply)
    run = (await Reader(repository).query(select(FlowRun).where(FlowRun.flow == "safety")))[0]
    assert run.answers["relationship"] == "past"
    await chat.send("/cancel")
    await chat.send("/settings")
    await chat.send("Focus relationship")
    reply = await chat.send("banana")
    assert "Partner" in labels(reply), "words that fit no choice get the choices again"


async def test_each_person_sees_a_menu_of_their_own_progress(
    demo: Content, repository: Repository, clock: Clock,
) -> None:
    def set_up(unit):  # type: ignore[no-untyped-def]
        for chat in (77, 78):
            unit.user_for_chat(chat, "Sam", "en").onboarded = True

    await repository.run(set_up)
    engine = engine_for(demo, repository, clock)
    sam, kim = (ConsoleChat(engine, user_id=chat, first_name="Sam") for chat in (77, 78))
    untouched = texts(await sam.send("/menu"))
    assert "In progress" not in untouched
    assert texts(await kim.send("/menu")) == untouched  # the same state, the same menu

    await kim.send("/demo")
    at_first_step = texts(await kim.send("/menu"))
    assert "In progress: step 1 of" in at_first_step
    await kim.send("/demo")
    await kim.send("3")  # on to the note
    further = texts(await kim.send("/menu"))
    assert "In progress: step" in further and further != at_first_step
    assert texts(await sam.send("/menu")) == untouched  # nothing Kim did shows for Sam
    assert len(engine.menus) == 3  # each state's menu was rendered once


async def test_rendered_menus_kept_are_bounded(
    demo: Content, repository: Repository, clock: Clock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bot.turn.MENUS_KEPT", 2)

    def set_up(unit):  # type: ignore[no-untyped-def]
        unit.user_for_chat(77, "Sam", "en").onboarded = True

    await repository.run(set_up)
    engine = engine_for(demo, repository, clock)
    sam = ConsoleChat(engine, user_id=77, first_name="Sam")
    menus = []
    for typed in ("/menu", "/demo", "/menu", "3", "/menu"):  # three states, three menus
        reply = await sam.send(typed)
        if typed == "/menu":
            menus.append(texts(reply))
            assert len(engine.menus) <= 2
    assert len({tuple(menu) for menu in menus}) == 3  # each still right after a clear
