"""/heal, the healing flow: four stages in any order, every question skippable, real resources.

Console walks run on SQLite and PostgreSQL; one test drives the real bot process through the
fake Telegram Bot API.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.engine import Engine
from bot.messages import Reply
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.models import FlowRun, Reflection, User
from bot.storage.repository import Repository
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram
from tests.helpers import Reader, labels, migrated, texts
from tests.test_e2e_telegram import bot, fake, visible  # noqa: F401 - fixtures used below
from tests.test_e2e_telegram import onboard as onboard_on_telegram

STAGES = ["Recognise the impact", "Rebuild safety within", "Choose relationships wisely",
          "Seek support", "Not now"]
STAGE_END = ["Another stage", "That's enough for today"]
ANSWERS = {
    "pattern": "Being told I was 'too sensitive' & that I remembered things wrong.",
    "adapted": "I check the mood in a room <before> I say anything.",
    "steady": "A slow walk by the river in the evening.",
    "early_sign": "When someone brushes off a no as if it were a maybe.",
}
LABELS = {
    "pattern": "A pattern you recognise",
    "adapted": "How you learned to protect yourself",
    "kindness": "What you'd say to a friend",
    "steady": "What helps you feel steadier",
    "early_sign": "An early sign to notice sooner",
    "trusted": "What shows you someone can be trusted",
}
INTRO = "describes four stages"
NEXT_STAGE = "Which stage would you like to look at next?"


async def onboard(chat: ConsoleChat, focus: str = "Healing from the past",
                  country: str | None = "United Kingdom", keep: str = "Yes, keep them") -> None:
    """Through /start with a focus and a country (None skips the country question)."""
    await chat.send("/start")
    await chat.send("Sounds good")
    await chat.send(keep)
    reply = await chat.send(focus)
    assert "United Kingdom" in labels(reply)
    reply = await chat.send(country if country is not None else "Skip")
    assert "daily prompt" in texts(reply)
    reply = await chat.send("Not for now")
    assert "all set" in texts(reply)


async def stored_user(repository: Repository, chat_id: int) -> User:
    user = await Reader(repository).find_user(chat_id)
    assert user is not None
    return user


async def heal_rows(repository: Repository, chat_id: int) -> tuple[list[Reflection],
                                                                  list[FlowRun]]:
    user = await stored_user(repository, chat_id)
    unit = Reader(repository)
    kept = await unit.query(
        select(Reflection).where(Reflection.user_id == user.id).order_by(Reflection.id))
    runs = await unit.query(
        select(FlowRun).where(FlowRun.user_id == user.id, FlowRun.flow == "heal"))
    return kept, runs


def assert_gentle(reply: Reply) -> None:
    """What every message of this flow keeps to: no exclamation marks, no "should"."""
    seen = texts(reply)
    assert "!" not in seen, seen
    assert " should " not in f" {seen.lower()} ", seen


async def test_all_four_stages_in_one_run_in_any_order(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    reply = await chat.send("/heal")
    intro = texts(reply)
    assert INTRO in intro
    assert "You don't need to tell Haven what happened" in intro
    assert "Every question can be skipped" in intro
    assert "isn't therapy" in intro and "isn't a straight line" in intro
    assert "If you're in danger right now, /help" in intro
    assert labels(reply) == STAGES
    assert_gentle(reply)

    # 1. Seek support: the lines for the person's country, and the stage's own end choice.
    reply = await chat.send("Seek support")
    assert "if and when it feels right" in texts(reply)
    assert "Samaritans: Call 116 123 (24/7)" in texts(reply)
    assert labels(reply) == STAGE_END
    reply = await chat.send("Another stage")
    assert NEXT_STAGE in texts(reply)
    assert INTRO not in texts(reply), "the introduction is not repeated"
    assert labels(reply) == STAGES

    # 2. Choose relationships wisely: one answer, one skip.
    reply = await chat.send("Choose relationships wisely")
    assert "What is one early sign you'd like to notice sooner?" in texts(reply)
    assert "patterns of behaviour than to words alone" in texts(reply)
    assert labels(reply) == ["Skip"]
    reply = await chat.send(ANSWERS["early_sign"])
    assert "Thank you. Noticing that sooner" in texts(reply)
    assert "would show you they can be trusted?" in texts(reply)
    reply = await chat.send("skip")
    assert "discernment practices" in texts(reply)
    assert labels(reply) == STAGE_END
    await chat.send("Another stage")

    # 3. Recognise the impact: the article's five threats, named; both answered.
    reply = await chat.send("Recognise the impact")
    seen = texts(reply)
    for threat in ("Criticism and contempt", "Unpredictability", "Boundary violations",
                   "Invalidation and gaslighting", "Conditional acceptance"):
        assert threat in seen
    assert "You can name it, or just notice it." in seen
    reply = await chat.send(ANSWERS["pattern"])
    assert "Thank you for naming that." in texts(reply)
    assert "honouring these protective responses" in texts(reply)
    reply = await chat.send(ANSWERS["adapted"])
    assert labels(reply) == STAGE_END
    await chat.send("Another stage")

    # 4. Rebuild safety within: the friend question skipped, the second answered.
    reply = await chat.send("Rebuild safety within")
    assert "What would you say to a friend who went through this?" in texts(reply)
    reply = await chat.send("Skip")
    assert "That's fine." in texts(reply)
    assert "Thank you" not in texts(reply)
    await chat.send(ANSWERS["steady"])
    reply = await chat.send("That's enough for today")
    summary = texts(reply)
    assert_gentle(reply)
    for name, answer in ANSWERS.items():
        assert LABELS[name] in summary
        assert answer in summary, f"the summary should quote {answer!r}"
    assert LABELS["kindness"] not in summary and LABELS["trusted"] not in summary
    assert summary.index(LABELS["pattern"]) < summary.index(LABELS["early_sign"])
    assert "/heal" in summary and "kept in /journal" in summary
    assert "&amp; that I remembered" in "".join(m.text for m in reply.messages)
    assert "Here's what you can practise" in summary, "the menu follows"

    kept, runs = await heal_rows(repository, chat.user_id)
    assert [(row.question, row.text) for row in kept] == [
        ("early_sign", ANSWERS["early_sign"]), ("pattern", ANSWERS["pattern"]),
        ("adapted", ANSWERS["adapted"]), ("steady", ANSWERS["steady"])]
    assert {(row.flow, row.step) for row in kept} == {
        ("heal", "choose"), ("heal", "recognise"), ("heal", "adapted"), ("heal", "steady")}
    assert [(run.status, run.answers) for run in runs] == [("done", {})]
    user = await stored_user(repository, chat.user_id)
    assert user.active_flow is None

    journal = texts(await chat.send("/journal"))
    for name in ANSWERS:
        assert LABELS[name] in journal, "kept under the step's label"
    assert "Healing" in journal


async def test_skipping_every_question_in_a_stage_keeps_nothing(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await chat.send("/heal")
    await chat.send("Recognise the impact")
    reply = await chat.send("skip")
    assert "That's fine. Noticing quietly counts too." in texts(reply)
    assert "Thank you for naming that" not in texts(reply)
    reply = await chat.send("Skip")
    assert "Whatever you noticed, or didn't, is enough for today." in texts(reply)
    assert "Thank you" not in texts(reply)
    assert labels(reply) == STAGE_END
    assert_gentle(reply)
    reply = await chat.send("That's enough for today")
    summary = texts(reply)
    assert "You didn't write anything down, and that's completely fine" in summary
    assert "Nothing from today was saved." in summary
    assert not any(label in summary for label in LABELS.values())
    assert_gentle(reply)

    kept, runs = await heal_rows(repository, chat.user_id)
    assert kept == []
    assert [(run.status, run.answers) for run in runs] == [("done", {})]


async def test_not_now_ends_gently_and_stores_nothing(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await chat.send("/heal")
    reply = await chat.send("Not now")
    assert "no need to start before you're ready" in texts(reply)
    assert "/heal" in texts(reply)
    assert labels(reply) == []
    assert_gentle(reply)
    kept, runs = await heal_rows(repository, chat.user_id)
    assert kept == [] and [run.status for run in runs] == ["done"]


async def test_support_stage_shows_the_lines_for_each_country(engine: Engine) -> None:
    async def support_for(user_id: int, country: str | None) -> str:
        chat = ConsoleChat(engine, user_id=user_id, out=io.StringIO(), first_name="Alex")
        await onboard(chat, focus="Work", country=country)
        await chat.send("/heal")
        reply = await chat.send("Seek support")
        assert labels(reply) == STAGE_END
        assert_gentle(reply)
        return texts(reply)

    british = await support_for(7001, "United Kingdom")
    assert "Support lines (United Kingdom)" in british
    assert "Samaritans: Call 116 123 (24/7)" in british
    assert "National Domestic Abuse Helpline (Refuge): 0808 2000 247" in british
    assert "If you're ever in danger, call 999. /help" in british
    assert "findahelpline.com" not in british

    french = await support_for(7002, "France")
    assert "Haven doesn't have support lines for France yet" in french
    assert "findahelpline.com" in french
    assert "/settings" in french
    assert "Samaritans" not in french and "999" not in french
    assert "call your local emergency number" in french

    unknown = await support_for(7003, None)
    assert "doesn't know which country you're in" in unknown
    assert "findahelpline.com" in unknown and "set your country in /settings" in unknown
    assert "Samaritans" not in unknown


async def test_typing_a_stage_or_its_number_works_like_pressing(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/heal")
    reply = await chat.send("somewhere else")
    assert "I'm not sure which option you meant" in texts(reply)
    assert labels(reply) == STAGES, "the stages are offered again"
    reply = await chat.send("choose relationships")  # the start of a label, any case
    assert "early sign" in texts(reply)
    await chat.send("skip")
    reply = await chat.send("skip")
    assert labels(reply) == STAGE_END
    reply = await chat.send("another")
    assert NEXT_STAGE in texts(reply)
    reply = await chat.send("seek support")
    assert "Samaritans" in texts(reply)
    reply = await chat.send("that's enough")
    assert "You can take any stage again, in any order, with /heal." in texts(reply)


async def test_cancel_then_heal_resumes_at_the_same_step(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await chat.send("/heal")
    await chat.send("Recognise the impact")
    await chat.send(ANSWERS["pattern"])
    reply = await chat.send("/cancel")
    assert "You've left Healing" in texts(reply) and "/heal" in texts(reply)
    user = await stored_user(repository, chat.user_id)
    assert user.active_flow is None

    reply = await chat.send("/heal")
    assert "Picking up Healing where you left off." in texts(reply)
    assert "Is there a way you learned to protect yourself" in texts(reply)
    assert INTRO not in texts(reply)
    await chat.send(ANSWERS["adapted"])
    reply = await chat.send("That's enough for today")
    assert ANSWERS["pattern"] in texts(reply), "the answer before /cancel was kept"
    assert ANSWERS["adapted"] in texts(reply)


async def test_the_focus_changes_framing_and_examples(engine: Engine) -> None:
    async def walk(user_id: int, focus: str) -> tuple[str, str, str]:
        chat = ConsoleChat(engine, user_id=user_id, out=io.StringIO(), first_name="Jo")
        await onboard(chat, focus=focus)
        intro = texts(await chat.send("/heal"))
        within = texts(await chat.send("Rebuild safety within"))
        await chat.send("skip")
        await chat.send("skip")
        await chat.send("Another stage")
        choose = texts(await chat.send("Choose relationships wisely"))
        return intro, within, choose

    healing = await walk(7101, "Healing from the past")
    work = await walk(7102, "Work")
    family = await walk(7103, "Child or parent")

    assert "healing from a past relationship" in healing[0]
    assert "still in contact" not in healing[0]
    assert "one at work that you can't easily step away from" in work[0]
    assert "a family relationship you're still part of" in family[0]

    assert "You were doing your best to stay safe." in healing[1]
    assert "Anyone would start doubting themselves" in work[1]
    assert "Anyone would start doubting themselves" not in healing[1]
    assert "even while a difficult relationship is still part of your life" in work[1]
    assert "still part of your life" not in healing[1]

    assert "pushes me to share more than I'm ready to" in healing[2]
    assert "comments about who I am, rather than about the work" in work[2]
    assert "comparisons to someone else" in family[2]
    assert "working relationships you can't simply avoid" in work[2]
    assert "family relationships you can't simply step away from" in family[2]


async def test_without_consent_the_summary_quotes_but_nothing_is_kept(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat, keep="No, don't keep them")
    reply = await chat.send("/heal")
    assert "Haven won't keep what you write" in texts(reply)
    await chat.send("Choose relationships wisely")
    await chat.send(ANSWERS["early_sign"])
    await chat.send("skip")
    reply = await chat.send("That's enough for today")
    assert ANSWERS["early_sign"] in texts(reply)
    assert "Haven doesn't keep these answers" in texts(reply)
    kept, runs = await heal_rows(repository, chat.user_id)
    assert kept == []
    assert [(run.status, run.answers) for run in runs] == [("done", {})]


# ---- through Telegram -----------------------------------------------------------------------

@pytest.mark.e2e
async def test_healing_through_telegram(
    fake: FakeTelegram, bot: BotProcess, database_url: str, tmp_path: Path  # noqa: F811
) -> None:
    user = fake.user(user_id=5701, first_name="Aoife")
    await onboard_on_telegram(user, "Healing from the past")
    assert "heal" in {c["command"] for c in fake.commands}

    await user.send("/heal")
    assert INTRO in visible(await user.replies())
    assert user.last_keyboard() == [[label] for label in STAGES]

    await user.press("Seek support")
    support = visible(await user.replies())
    assert "Samaritans" in support and "Women's Aid" in support
    assert "findahelpline.com" not in support
    assert user.last_keyboard() == [[label] for label in STAGE_END]

    await user.press("Another stage")
    assert NEXT_STAGE in visible(await user.replies())
    await user.press("Recognise the impact")
    assert "Conditional acceptance" in visible(await user.replies())
    assert user.last_keyboard() == [["Skip"]]
    await user.send(ANSWERS["pattern"])
    await user.replies()
    await user.press("Skip")
    await user.replies()
    await user.press("That's enough for today")
    summary = visible(await user.replies())
    assert ANSWERS["pattern"] in summary
    assert LABELS["pattern"] in summary and LABELS["adapted"] not in summary
    assert user.unanswered_callbacks() == []
    pressed = [m for m in user.chat if m.edited]
    assert pressed and all(not m.buttons for m in pressed), "a pressed keyboard is taken away"

    keys = read_or_create_key_file(key_file(tmp_path))
    repository = await migrated(database_url, cipher_from(keys))
    try:
        kept, runs = await heal_rows(repository, 5701)
    finally:
        await repository.close()
    assert [(row.question, row.text) for row in kept] == [("pattern", ANSWERS["pattern"])]
    assert [run.status for run in runs] == ["done"]
    assert ANSWERS["pattern"] not in bot.log(), "what people write never reaches the logs"
