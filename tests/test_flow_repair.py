"""The repair walkthrough (/repair) and its follow-up days later, through the console adapter
with a fixed clock and the scheduler, on SQLite and PostgreSQL; and once through the fake
Telegram Bot API with the real bot process."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import MultiFernet
from markupsafe import escape
from sqlalchemy import select, update

from bot.adapters.console import ConsoleChat
from bot.app import Content
from bot.engine import Engine
from bot.messages import Incoming, InputKind, Reply
from bot.scheduler import Scheduler
from bot.storage.models import FlowRun, Reflection, ScheduledJob, User
from bot.storage.repository import Repository
from tests.fake_telegram import FakeTelegram
from tests.helpers import Clock, Outbox, Reader, labels, make_engine, migrated, press_data, texts
from tests.test_console_flows import onboard

START = datetime(2026, 6, 1, 22, 30, tzinfo=UTC)  # late in the evening, after a fight

ANSWERS = {
    "what_happened": "She asked about the bills & I said 'you never plan <anything>' and left.",
    "their_side": "She felt blamed for something we share, and went quiet all evening.",
    "your_part": "I used 'never', and walking out left her alone with the worry.",
    "what_will_change": "When money comes up, I'll ask for ten minutes instead of walking out.",
}
RITUAL = "A walk by the canal on Saturday morning."
HOW_IT_WENT = "It was awkward at first, then she thanked me for coming back to it."
LEARNED = "Saying sorry first made it easier for both of us to talk."
SCALE = [str(n) for n in range(1, 11)]
COOL_LABELS = ["20 minutes", "An hour", "A few hours", "Tomorrow", "I'd rather go on now"]
WAITING_LABELS = ["I'm ready to go on", "I need more time"]
FOLLOW_UP_LABELS = ["In 2 days", "In 3 days", "In a week", "No follow-up, thanks"]
ASK_LABELS = ["Yes", "Not yet", "I decided not to"]


def engine_for(content: Content, repository: Repository, clock: Clock) -> Engine:
    return make_engine(content, repository, clock)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def timed_engine(content: Content, repository: Repository, clock: Clock) -> Engine:
    return engine_for(content, repository, clock)


@pytest.fixture
def person(timed_engine: Engine) -> ConsoleChat:
    return ConsoleChat(timed_engine, user_id=6161, out=io.StringIO(), first_name="Sam")


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
def scheduler(timed_engine: Engine, outbox: Outbox) -> Scheduler:
    return Scheduler(timed_engine, outbox)


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def check_backs(repository: Repository) -> list[ScheduledJob]:
    return await Reader(repository).query(
        select(ScheduledJob).where(ScheduledJob.kind == "checkback").order_by(ScheduledJob.id))


async def due_check_backs(repository: Repository) -> list[tuple[str | None, datetime]]:
    return [(job.target, utc(job.due_at)) for job in await check_backs(repository)
            if job.state == "due"]


async def stored_user(repository: Repository, chat_id: int) -> User:
    user = await Reader(repository).find_user(chat_id)
    assert user is not None
    return user


async def kept(repository: Repository, chat_id: int, flow: str) -> list[tuple[str, str]]:
    user = await stored_user(repository, chat_id)
    rows = await Reader(repository).query(
        select(Reflection).where(Reflection.user_id == user.id, Reflection.flow == flow)
        .order_by(Reflection.id))
    return [(row.question, row.text) for row in rows]


async def press(chat: ConsoleChat, reply: Reply, label: str) -> Reply:
    """Tap a button under `reply`, wherever it came from (a turn or the scheduler)."""
    pressed = await chat.engine.handle(Incoming(chat_id=chat.user_id, kind=InputKind.PRESS,
                                                text=press_data(reply, label)))
    chat.show(pressed)
    return pressed


async def begin(chat: ConsoleChat, activation: str) -> Reply:
    reply = await chat.send("/repair")
    assert "not the absence of conflict but how ruptures are handled" in texts(reply)
    assert labels(reply) == ["Begin", "Not now"]
    reply = await chat.send("Begin")
    assert "How activated do you feel right now, from 1 to 10?" in texts(reply)
    assert "1 means calm, 10 means very activated" in texts(reply)
    assert labels(reply) == [*SCALE, "Skip"]
    return await chat.send(activation)


async def reflect_and_plan(chat: ConsoleChat, follow_up: str = "In 3 days") -> Reply:
    """From the first question (what happened) through to the summary."""
    reply = None
    for name in ("what_happened", "their_side", "your_part", "what_will_change"):
        reply = await chat.send(ANSWERS[name])
    assert reply is not None
    assert labels(reply) == ["Go on", "Write my own version"]
    reply = await chat.send("Go on")
    assert "rituals of reconnection" in texts(reply)
    await chat.send(RITUAL)
    return await chat.send(follow_up)


async def test_repair_end_to_end_then_the_follow_up_days_later(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox
) -> None:
    await onboard(person, focus="Partner")
    reply = await begin(person, "3")
    assert "what happened" in texts(reply).lower()
    assert "the way a camera would have recorded it" in texts(reply)
    assert "you always nag me" in texts(reply), "a partner's example"
    assert labels(reply) == ["Skip"]
    assert await due_check_backs(repository) == [], "a calm person gets no cooling-off"

    reply = await person.send(ANSWERS["what_happened"])
    assert "listening to understand" in texts(reply)
    reply = await person.send(ANSWERS["their_side"])
    assert "taking appropriate responsibility rather than becoming defensive" in texts(reply)
    reply = await person.send(ANSWERS["your_part"])
    assert "demonstrating changed behavior" in texts(reply)
    apology = await person.send(ANSWERS["what_will_change"])
    [quoted] = [m.text for m in apology.messages if m.text.startswith("<blockquote>")]
    for answer in ANSWERS.values():
        assert str(escape(answer)) in quoted, f"the apology is built from {answer!r}"
    assert "I'm sorry. I can see that I hurt you" in texts(apology)
    assert "specific apologies rather than generic ones" in texts(apology)
    assert "reword" in texts(apology)

    reply = await person.send("Go on")
    assert "A walk together" in texts(reply), "a partner's reconnection ideas"
    reply = await person.send(RITUAL)
    assert labels(reply) == FOLLOW_UP_LABELS
    summary = await person.send("In 3 days")
    shown = texts(summary)
    assert "your repair plan, in your own words" in shown
    for answer in (*ANSWERS.values(), RITUAL):
        assert answer in shown
    assert "check in with you in 3 days, at about this time of day" in shown
    assert "kept in /journal" in shown
    assert "Self-awareness" in shown, "the menu follows"

    # Reflections, each under its own label; the run's answers are gone.
    assert await kept(repository, person.user_id, "repair") == [
        *ANSWERS.items(), ("ritual", RITUAL)]
    user = await stored_user(repository, person.user_id)
    runs = await Reader(repository).query(select(FlowRun).where(FlowRun.user_id == user.id,
                                                                FlowRun.flow == "repair"))
    assert [(run.status, run.answers) for run in runs] == [("done", {})]
    journal = texts(await person.send("/journal"))
    for label in ("What happened", "Their side, and the impact on them", "Your part in it",
                  "What you'll do differently", "A way to reconnect"):
        assert label in journal
    assert ANSWERS["their_side"] in journal

    # The follow-up: a row in the database, due three days later.
    due = START + timedelta(days=3)
    [job] = await check_backs(repository)
    assert (job.kind, job.target, job.state, utc(job.due_at)) == (
        "checkback", "repair_followup", "due", due)
    assert job.answers is not None and job.answers["what_happened"] == ANSWERS["what_happened"]

    assert await scheduler.tick(now=due - timedelta(minutes=1)) == 0
    assert await scheduler.tick(now=due + timedelta(seconds=5)) == 1
    assert await scheduler.tick(now=due + timedelta(seconds=10)) == 0, "once only"
    [(chat_id, follow_up)] = outbox.sent
    assert chat_id == person.user_id
    assert "A few days ago, you worked on a repair, after this:" in texts(follow_up)
    assert ANSWERS["what_happened"] in texts(follow_up)
    assert "Did the conversation happen?" in texts(follow_up)
    assert labels(follow_up) == ASK_LABELS

    reply = await person.send("yes")  # typed, not pressed
    assert "How did it go?" in texts(reply)
    reply = await person.send(HOW_IT_WENT)
    assert "learning from mistakes rather than repeating them" in texts(reply)
    assert "came back after ten minutes" in texts(reply), "a partner's example"
    done = await person.send(LEARNED)
    assert LEARNED in texts(done)
    assert ANSWERS["what_will_change"] in texts(done), "the change they committed to"
    assert "Self-awareness" in texts(done), "the menu follows"
    assert await kept(repository, person.user_id, "repair_followup") == [
        ("how_it_went", HOW_IT_WENT), ("learned", LEARNED)]
    user = await stored_user(repository, person.user_id)
    assert user.active_flow is None
    journal = texts(await person.send("/journal"))
    assert "How the repair conversation went" in journal
    assert "What you learned from the repair" in journal


async def test_high_activation_cools_off_and_haven_checks_back(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, focus="Friend")
    reply = await begin(person, "9")
    assert "You said 9 out of 10" in texts(reply)
    assert "stress response" in texts(reply)
    assert "taking cooling-off periods when needed" in texts(reply)
    assert labels(reply) == COOL_LABELS
    assert await due_check_backs(repository) == []

    reply = await person.send("20 minutes")
    assert "breathe in slowly" in texts(reply), "one grounding suggestion"
    assert "short walk" not in texts(reply)
    assert "check back in about 20 minutes" in texts(reply)
    assert labels(reply) == WAITING_LABELS
    due = START + timedelta(minutes=20)
    assert await due_check_backs(repository) == [("cooling", due)]

    assert await scheduler.tick(now=due - timedelta(minutes=1)) == 0
    assert outbox.sent == [], "nothing before the time they chose"
    clock.now = due + timedelta(seconds=3)
    assert await scheduler.tick(now=clock.now) == 1
    [(chat_id, checked)] = outbox.sent
    assert chat_id == person.user_id
    assert texts(checked).startswith("Checking back, as you asked.")
    assert "How are you feeling now?" in texts(checked)
    assert labels(checked) == WAITING_LABELS
    assert await scheduler.tick(now=clock.now + timedelta(minutes=1)) == 0

    reply = await press(person, checked, "I'm ready to go on")
    assert "Welcome back" in texts(reply)
    assert "What happened?" in texts(reply)
    assert "missed her birthday dinner" in texts(reply), "a friend's example"
    await person.send(ANSWERS["what_happened"])
    assert await kept(repository, person.user_id, "repair") == [
        ("what_happened", ANSWERS["what_happened"])]


async def test_typing_the_label_of_a_check_back_button_goes_on(
    person: ConsoleChat, scheduler: Scheduler, outbox: Outbox
) -> None:
    await onboard(person)
    await begin(person, "8")
    await person.send("an hour")  # typed, in lower case
    due = START + timedelta(hours=1)
    await scheduler.tick(now=due)
    [(_, checked)] = outbox.sent
    assert "short walk" in texts(checked), "the hour's grounding suggestion comes again"
    reply = await person.send("I'm ready")  # the start of a label
    assert "What happened?" in texts(reply)


async def test_a_check_back_after_they_moved_on_sends_nothing(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox
) -> None:
    await onboard(person)
    await begin(person, "10")
    await person.send("A few hours")
    reply = await person.send("I'm ready to go on")
    assert "What happened?" in texts(reply)
    assert await scheduler.tick(now=START + timedelta(hours=3, seconds=1)) == 1
    assert outbox.sent == []
    assert [job.state for job in await check_backs(repository)] == ["skipped"]


async def test_more_time_replaces_the_check_back_and_going_on_cancels_it(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person)
    await begin(person, "7")
    await person.send("20 minutes")
    clock.now = START + timedelta(minutes=5)
    reply = await person.send("I need more time")
    assert "How long would you like this time?" in texts(reply)
    assert labels(reply) == COOL_LABELS
    reply = await person.send("Tomorrow")
    assert "check back the next day, at about this time" in texts(reply)
    assert await due_check_backs(repository) == [("cooling", clock.now + timedelta(days=1))]
    assert await scheduler.tick(now=START + timedelta(minutes=21)) == 0
    assert outbox.sent == [], "the 20-minute check-back was replaced"

    await person.send("I need more time")
    reply = await person.send("I'd rather go on now")
    assert "let's go on" in texts(reply)
    assert await due_check_backs(repository) == [], "going on now plans nothing"


async def test_a_check_back_survives_a_restart(
    content: Content, database_url: str, cipher: MultiFernet, clock: Clock
) -> None:
    first = await migrated(database_url, cipher)
    try:
        chat = ConsoleChat(engine_for(content, first, clock), user_id=6262, out=io.StringIO())
        await onboard(chat)
        await begin(chat, "9")
        await chat.send("20 minutes")
    finally:
        await first.close()  # the process stops

    outbox = Outbox()
    second = await migrated(database_url, cipher)  # and starts again
    try:
        restarted = engine_for(content, second, clock)
        scheduler = Scheduler(restarted, outbox)
        due = START + timedelta(minutes=20)
        assert await scheduler.tick(now=due - timedelta(seconds=30)) == 0
        assert await scheduler.tick(now=due + timedelta(seconds=30)) == 1
        assert await scheduler.tick(now=due + timedelta(seconds=60)) == 0
        [(chat_id, checked)] = outbox.sent
        assert chat_id == 6262 and "Checking back, as you asked." in texts(checked)
        chat = ConsoleChat(restarted, user_id=6262, out=io.StringIO())
        reply = await press(chat, checked, "I'm ready to go on")
        assert "What happened?" in texts(reply)
    finally:
        await second.close()


async def test_discreet_check_backs_say_nothing_personal(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person)
    await person.send("/settings")
    await person.send("Discreet reminders")
    await person.send("Yes, keep reminders discreet")
    assert (await stored_user(repository, person.user_id)).discreet is True
    await begin(person, "9")
    await person.send("20 minutes")
    clock.now = START + timedelta(minutes=20)
    await scheduler.tick(now=clock.now)
    await press(person, outbox.sent[-1][1], "I'm ready to go on")
    await reflect_and_plan(person, follow_up="In 2 days")
    await scheduler.tick(now=clock.now + timedelta(days=2))
    [(_, cooling), (_, follow_up)] = outbox.sent
    assert texts(cooling).startswith("Checking in, as you asked.")
    assert texts(follow_up).startswith("Checking in, as you asked.")
    assert labels(cooling) == WAITING_LABELS and labels(follow_up) == ASK_LABELS
    for reply in (cooling, follow_up):
        seen = texts(reply).lower()
        for word in ("repair", "apolog", "sorry", "fight", "relationship", "rupture", "hurt"):
            assert word not in seen, f"{word!r} in a discreet check-back"
        for answer in ANSWERS.values():
            assert answer.lower()[:20] not in seen
    reply = await press(person, follow_up, "Yes")
    assert "How did it go?" in texts(reply), "after the tap, the conversation goes on"


async def test_skipping_everything_still_gives_an_apology_to_start_from(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person, focus="Work")
    reply = await begin(person, "skip")
    assert "What happened?" in texts(reply)
    for _ in range(3):
        reply = await person.send("skip")
    apology = await person.send("Skip")
    assert "You skipped the earlier questions" in texts(apology)
    assert "I can see that what I did affected you" in texts(apology), "work wording"
    assert "I own my part in it" in texts(apology)
    own = "I'm sorry I cut you off in the meeting. Your question was fair."
    reply = await person.send("Write my own version")
    assert "in the words you'd actually use" in texts(reply)
    reply = await person.send(own)
    assert "short follow-up chat" in texts(reply), "a work reconnection idea"
    await person.send("skip")
    summary = await person.send("No follow-up, thanks")
    assert own in texts(summary)
    assert "You chose no follow-up" in texts(summary)
    assert "I own my part in it" not in texts(summary), "their own version replaces the draft"
    assert await due_check_backs(repository) == []
    assert await kept(repository, person.user_id, "repair") == [("apology_own", own)]


async def test_nothing_is_kept_without_consent_but_the_follow_up_still_quotes(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox
) -> None:
    await onboard(person, keep="No, don't keep them")
    await begin(person, "2")
    summary = await reflect_and_plan(person, follow_up="In a week")
    assert "in a week" in texts(summary)
    assert "holds on to them for the check-in" in texts(summary)
    assert await kept(repository, person.user_id, "repair") == []
    await scheduler.tick(now=START + timedelta(days=7))
    [(_, follow_up)] = outbox.sent
    assert "A week ago, you worked on a repair" in texts(follow_up)
    assert ANSWERS["what_happened"] in texts(follow_up)


async def test_not_yet_reminds_again_and_deciding_not_to_is_respected(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox,
    clock: Clock
) -> None:
    await onboard(person, focus="Healing from the past")
    await begin(person, "4")
    await reflect_and_plan(person, follow_up="In 2 days")
    clock.now = START + timedelta(days=2)
    await scheduler.tick(now=clock.now)
    reply = await press(person, outbox.sent[-1][1], "Not yet")
    assert "choosing timing thoughtfully for difficult conversations" in texts(reply)
    assert labels(reply) == ["Remind me in a few days", "No more reminders"]
    reply = await person.send("Remind me")
    assert "check in again in 3 days" in texts(reply)
    again = clock.now + timedelta(days=3)
    assert await due_check_backs(repository) == [("repair_followup", again)]

    await scheduler.tick(now=again)
    second = outbox.sent[-1][1]
    assert "Checking in again, as you asked" in texts(second)
    assert ANSWERS["what_happened"] in texts(second), "the new run still carries the answers"
    reply = await person.send("I decided not to")
    assert "a choice you're allowed to make" in texts(reply)
    assert "If stepping back is what keeps you feeling safe" in texts(reply), "healing focus"
    assert labels(reply) == ["Skip"]
    reply = await person.send(LEARNED)
    assert "It's kept in /journal." in texts(reply)
    assert "what creates lasting safety isn't perfection" in texts(reply)
    assert await kept(repository, person.user_id, "repair_followup") == [("learned", LEARNED)]
    assert await due_check_backs(repository) == []


async def test_no_more_reminders_plans_nothing(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox
) -> None:
    await onboard(person)
    await begin(person, "1")
    await reflect_and_plan(person, follow_up="In 2 days")
    await scheduler.tick(now=START + timedelta(days=2))
    await person.send("Not yet")
    reply = await person.send("No more reminders")
    assert "no more reminders about this one" in texts(reply)
    assert await due_check_backs(repository) == []


async def test_a_follow_up_during_another_flow_keeps_both(
    person: ConsoleChat, repository: Repository, scheduler: Scheduler, outbox: Outbox
) -> None:
    await onboard(person)
    await begin(person, "5")
    await reflect_and_plan(person, follow_up="In 2 days")
    await person.send("/aware")
    await person.send("Let's begin")  # in the middle of self-awareness
    await scheduler.tick(now=START + timedelta(days=2))
    [(_, follow_up)] = outbox.sent
    reply = await press(person, follow_up, "Yes")
    assert "How did it go?" in texts(reply)
    user = await stored_user(repository, person.user_id)
    assert user.active_flow == "repair_followup"
    reply = await person.send("/aware")
    assert labels(reply) == ["Yes, switch", "No, stay here"], "self-awareness is still waiting"


async def test_examples_follow_the_focus(repository: Repository, timed_engine: Engine) -> None:
    seen = {}
    for user_id, focus in ((6301, "Child or parent"), (6302, "Work"), (6303, "Friend")):
        chat = ConsoleChat(timed_engine, user_id=user_id, out=io.StringIO())
        await onboard(chat, focus=focus)
        reply = await begin(chat, "2")
        their_side = await chat.send("skip")
        your_part = await chat.send("skip")
        seen[focus] = texts(reply) + texts(their_side) + texts(your_part)
    assert "lift to a party" in seen["Child or parent"]
    assert "my mum commented on my job" in seen["Child or parent"]
    assert "team meeting" in seen["Work"]
    assert "embarrassed in front of the team" in seen["Work"]
    assert "missed her birthday dinner" in seen["Friend"]
    assert "team meeting" not in seen["Friend"] and "lift to a party" not in seen["Work"]


async def test_not_now_and_resuming_after_cancel(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person)
    await person.send("/repair")
    reply = await person.send("Not now")
    assert "send /repair" in texts(reply)
    assert (await stored_user(repository, person.user_id)).active_flow is None

    await begin(person, "3")
    await person.send(ANSWERS["what_happened"])
    reply = await person.send("/cancel")
    assert "Repair after a rupture" in texts(reply) and "/repair" in texts(reply)
    reply = await person.send("/repair")
    assert "where you left off" in texts(reply)
    assert "How might it have felt for them" in texts(reply)
    await person.send(ANSWERS["their_side"])
    assert await kept(repository, person.user_id, "repair") == [
        ("what_happened", ANSWERS["what_happened"]), ("their_side", ANSWERS["their_side"])]


# ---- the real bot process against the fake Telegram Bot API ---------------------------------

TOKEN = "987654:E2E-secret-token-value"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as server:
        yield server
    assert server.internal_errors == [], "\n".join(server.internal_errors)


@pytest.mark.e2e
async def test_repair_and_its_follow_up_through_telegram(
    fake: FakeTelegram, database_url: str, tmp_path: Path
) -> None:
    from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
    from tests.bot_process import BotProcess
    from tests.test_e2e_telegram import onboard as onboard_on_telegram
    from tests.test_e2e_telegram import visible

    process = BotProcess(fake, database_url, tmp_path, HAVEN_SCHEDULER_POLL_SECONDS="0.5")
    await process.start()
    try:
        user = fake.user(user_id=5601, first_name="Aoife")
        await onboard_on_telegram(user)
        await user.send("/repair")
        assert "how ruptures are handled" in visible(await user.replies())
        await user.press("Begin")
        assert "from 1 to 10" in visible(await user.replies())
        assert user.last_keyboard() == [SCALE[:5], SCALE[5:], ["Skip"]]  # at most 8 a row
        await user.press("3")
        assert "missed her birthday dinner" in visible(await user.replies())
        for name in ("what_happened", "their_side", "your_part", "what_will_change"):
            await user.send(ANSWERS[name])
            replies = await user.replies()
        apology = visible(replies)
        for answer in ANSWERS.values():
            assert answer in apology
        await user.press("Go on")
        await user.replies()
        await user.send(RITUAL)
        await user.replies()
        await user.press("In 2 days")
        summary = visible(await user.replies())
        assert "check in with you in 2 days" in summary
        assert RITUAL in summary and ANSWERS["what_will_change"] in summary

        # Two days pass: bring the planned row forward, and the running scheduler sends it.
        keys = read_or_create_key_file(key_file(tmp_path))
        repository = await migrated(database_url, cipher_from(keys))
        try:
            await repository.run(lambda unit: unit.session.execute(
                update(ScheduledJob).where(ScheduledJob.target == "repair_followup")
                .values(due_at=datetime.now(UTC) - timedelta(seconds=1))))
        finally:
            await repository.close()
        def follow_ups() -> list:
            return [m for m in user.chat if m.text and "Did the conversation happen?" in m.text]

        follow_up = None
        for _ in range(60):
            if follow_ups():
                follow_up = follow_ups()[0]
                break
            await asyncio.sleep(0.25)
        assert follow_up is not None, "the follow-up arrived"
        assert follow_up.labels == [[label] for label in ASK_LABELS]
        earlier = visible(await user.replies())
        assert ANSWERS["what_happened"] in earlier
        await user.press("Yes")
        assert "How did it go?" in visible(await user.replies())
        await user.send(HOW_IT_WENT)
        await user.replies()
        await user.send(LEARNED)
        done = visible(await user.replies())
        assert LEARNED in done and ANSWERS["what_will_change"] in done
        await asyncio.sleep(1)
        assert len(follow_ups()) == 1, "sent once"
        assert user.unanswered_callbacks() == []
    finally:
        await process.stop()
    assert TOKEN not in process.log()
    refused = [error for error in fake.errors
               if error[2].startswith(("Bad Request", "Unauthorized", "Not Found"))]
    assert refused == [], f"Telegram would have refused these calls: {refused}"
