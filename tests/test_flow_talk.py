"""/talk, intentional communication: the "I"-statement builder and the draft checker,
walked through the console adapter (SQLite and PostgreSQL) and once through Telegram."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.draft_checker import PATTERNS, default_checker
from bot.engine import Engine
from bot.messages import Reply
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.models import FlowRun, Reflection, User
from bot.storage.repository import Repository
from bot.talk import draft_check_samples
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram
from tests.helpers import Reader, labels, migrated, texts
from tests.test_e2e_telegram import bot, fake, visible  # noqa: F401 - fixtures used below
from tests.test_e2e_telegram import onboard as onboard_on_telegram

INTRO = ["Build what I want to say", "Check a message I've written", "Not now"]
TIMING = ["Now is a good time", "Not now: later is better", "I'm not sure", "Skip"]
AFTER_BUILD = ["Check it with the draft checker", "Done"]
AFTER_CHECK = ["Rewrite and check again", "Done"]
BUILDER = {
    "behaviour": "You looked at your phone & kept scrolling while I told you about my day",
    "feeling": "I feel lonely <and> a bit unimportant.",
    "need": "to feel that you're with me when we talk",
    "request": "Would you put your phone down when I'm telling you something?",
}
COMPOSED = ("When you looked at your phone & kept scrolling while I told you about my day, "
            "I feel lonely <and> a bit unimportant because I need to feel that you're with me "
            "when we talk. Would you put your phone down when I'm telling you something?")
LABELS = {
    "behaviour": "What happened, specifically",
    "feeling": "How it felt",
    "need": "What you need",
    "request": "What you'd like to ask for",
}
CLEAN_DRAFT = ("When the plans for Saturday changed and I heard it from Sam, I felt left out. "
               "Could you tell me yourself next time?")
FLAWED = ("You always forget my birthday. You're so selfish. Grow up. It's not my fault. "
          "Whatever.")
# What each pattern is called, and a few words of why, as the person reads them.
NAMED = {
    "always_never": ("“Always” and “never”", "defend their record instead of hearing you"),
    "character_attack": ("A judgement of who they are",
                         "describes who they are rather than what they did"),
    "you_accusation": ("An accusing “you”", "Speaking from “I” describes your side instead"),
    "contempt": ("Words that can sound like contempt", "Mockery, sarcasm or disgust"),
    "defensiveness": ("A defensive turn", "may leave the other person feeling unheard"),
    "stonewalling": ("Shutting the conversation down",
                     "say when you'll come back to it"),
}
TRICKY = "Honestly, you leave <dishes> & mugs out all the time."
NO_FINDINGS = "I didn't find any of the patterns the checker looks for"
ONLY_WORDS = "looks only at the words, not at the whole situation"


async def onboard(chat: ConsoleChat, focus: str = "Partner",
                  keep: str = "Yes, keep them") -> None:
    await chat.send("/start")
    await chat.send("Sounds good")
    await chat.send(keep)
    reply = await chat.send(focus)
    assert "United Kingdom" in labels(reply)
    await chat.send("Skip")
    reply = await chat.send("Not for now")
    assert "all set" in texts(reply)


async def talk_rows(repository: Repository, chat_id: int) -> tuple[User, list[Reflection],
                                                                  list[FlowRun]]:
    unit = Reader(repository)
    user = await unit.find_user(chat_id)
    assert user is not None
    kept = await unit.query(
        select(Reflection).where(Reflection.user_id == user.id).order_by(Reflection.id))
    runs = await unit.query(
        select(FlowRun).where(FlowRun.user_id == user.id, FlowRun.flow == "talk"))
    return user, kept, runs


def html_of(reply: Reply) -> str:
    return "\n\n".join(message.text for message in reply.messages)


def assert_gentle(reply: Reply) -> None:
    seen = texts(reply)
    assert "!" not in seen, seen
    assert " should " not in f" {seen.lower()} ", seen


async def build(chat: ConsoleChat, answers: dict[str, str | None],
                timing: str = "Now is a good time") -> Reply:
    """/talk, the builder, each part (None skips it), then the timing; returns the composed
    message's reply."""
    reply = await chat.send("/talk")
    assert labels(reply) == INTRO
    reply = await chat.send("1")  # press "Build what I want to say"
    assert "could have filmed" in texts(reply)
    for name in ("behaviour", "feeling", "need", "request"):
        assert labels(reply) == ["Skip"], name
        reply = await chat.send(answers.get(name) or "skip")
    assert "Is now a good time for this conversation?" in texts(reply)
    assert labels(reply) == TIMING
    return await chat.send(timing)


# ---- the builder -------------------------------------------------------------------------


async def test_the_builder_composes_their_words_in_order_and_keeps_them(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    reply = await build(chat, dict(BUILDER))
    assert COMPOSED in texts(reply)
    composed = html_of(reply)
    # Its own message, in <code> so a tap copies it, with the person's words escaped.
    code = [m.text for m in reply.messages if m.text.startswith("<code>")]
    assert code == [
        "<code>When you looked at your phone &amp; kept scrolling while I told you about my "
        "day, I feel lonely &lt;and&gt; a bit unimportant because I need to feel that "
        "you&#39;re with me when we talk. Would you put your phone down when I&#39;m telling "
        "you something?</code>"]
    assert "<and>" not in composed
    assert labels(reply) == AFTER_BUILD
    assert_gentle(reply)

    reply = await chat.send("Done")
    assert "The parts you wrote are kept in /journal." in texts(reply)
    assert "checked" not in texts(reply)
    user, kept, runs = await talk_rows(repository, chat.user_id)
    assert [(row.question, row.text) for row in kept] == [
        (name, BUILDER[name]) for name in ("behaviour", "feeling", "need", "request")]
    assert all(row.flow == "talk" for row in kept)
    assert [(run.status, run.answers) for run in runs] == [("done", {})]
    assert user.active_flow is None

    reply = await chat.send("/journal")
    for label in LABELS.values():
        assert label in texts(reply)
    assert BUILDER["need"] in texts(reply)


@pytest.mark.parametrize(
    ("skipped", "expected"),
    [
        (("feeling",), "When you looked at your phone & kept scrolling while I told you about "
                       "my day, I need to feel that you're with me when we talk. Would you put "
                       "your phone down when I'm telling you something?"),
        (("behaviour", "request"), "I feel lonely <and> a bit unimportant because I need to "
                                   "feel that you're with me when we talk."),
        (("feeling", "need"), "I'd like to talk about something: you looked at your phone & "
                              "kept scrolling while I told you about my day. Would you put "
                              "your phone down when I'm telling you something?"),
        (("behaviour", "feeling", "need"), "Would you put your phone down when I'm telling "
                                           "you something?"),
    ],
)
async def test_skipped_parts_are_left_out_of_the_message_and_not_kept(
    chat: ConsoleChat, repository: Repository, skipped: tuple[str, ...], expected: str
) -> None:
    await onboard(chat)
    answers: dict[str, str | None] = {name: None if name in skipped else text
                                      for name, text in BUILDER.items()}
    reply = await build(chat, answers, timing="Skip")
    code = [m for m in reply.messages if m.text.startswith("<code>")]
    assert len(code) == 1
    assert texts(Reply(messages=code)) == expected
    await chat.send("Done")
    _user, kept, _runs = await talk_rows(repository, chat.user_id)
    assert [row.question for row in kept] == [name for name in BUILDER if name not in skipped]


async def test_skipping_every_part_composes_nothing(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    reply = await build(chat, {}, timing="Skip")
    assert "You skipped every part" in texts(reply)
    assert not any(m.text.startswith("<code>") for m in reply.messages)
    reply = await chat.send("Check it with the draft checker")
    assert "There's no message to check this time." in texts(reply)
    assert labels(reply) == AFTER_CHECK
    reply = await chat.send("Done")
    assert "kept in /journal" not in texts(reply)
    _user, kept, runs = await talk_rows(repository, chat.user_id)
    assert kept == []
    assert [run.status for run in runs] == ["done"]


@pytest.mark.parametrize(
    ("timing", "shown", "not_shown"),
    [
        ("Not now: later is better", "ready for when that moment comes", "Is now a good time"),
        ("I'm not sure", "Is now a good time to talk about something that matters to me?",
         "that moment comes"),
        ("Now is a good time", "put together from your own words", "that moment comes"),
    ],
)
async def test_the_timing_answer_shapes_what_comes_with_the_message(
    chat: ConsoleChat, timing: str, shown: str, not_shown: str
) -> None:
    await onboard(chat)
    reply = await chat.send("/talk")
    await chat.send("Build what I want to say")
    reply = await chat.send(BUILDER["behaviour"])
    for _ in range(3):
        reply = await chat.send("skip")
    assert "choosing timing thoughtfully" in texts(reply)
    assert "cooling-off period" in texts(reply)
    reply = await chat.send(timing)
    assert shown in texts(reply)
    assert not_shown not in texts(reply)
    assert "checking understanding" in texts(reply)


async def test_typing_labels_works_like_pressing(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await chat.send("/talk")
    reply = await chat.send("build")  # the start of "Build what I want to say"
    assert "could have filmed" in texts(reply)
    for name in ("behaviour", "feeling", "need", "request"):
        reply = await chat.send(BUILDER[name])
    reply = await chat.send("not now")  # the start of "Not now: later is better"
    assert "ready for when that moment comes" in texts(reply)
    reply = await chat.send("check it")
    assert labels(reply) == AFTER_CHECK
    reply = await chat.send("rewrite")
    assert "Paste or type the new version" in texts(reply)
    reply = await chat.send(CLEAN_DRAFT)
    assert NO_FINDINGS in texts(reply)
    reply = await chat.send("done")
    assert "The messages you checked aren't kept." in texts(reply)
    _user, _kept, runs = await talk_rows(repository, chat.user_id)
    assert [run.status for run in runs] == ["done"]

    reply = await chat.send("/talk")
    reply = await chat.send("Not now")
    assert "send /talk" in texts(reply)
    _user, _kept, runs = await talk_rows(repository, chat.user_id)
    assert [run.status for run in runs] == ["done", "done"]


async def test_cancel_then_talk_resumes_where_they_left_off(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat)
    await chat.send("/talk")
    await chat.send("Build what I want to say")
    await chat.send(BUILDER["behaviour"])
    reply = await chat.send("/cancel")
    assert "/talk" in texts(reply)
    _user, _kept, runs = await talk_rows(repository, chat.user_id)
    assert [(run.status, run.step) for run in runs] == [("open", "feeling")]

    reply = await chat.send("/talk")
    assert "where you left off" in texts(reply).lower()
    assert "How did you feel?" in texts(reply)
    for name in ("feeling", "need", "request"):
        reply = await chat.send(BUILDER[name])
    reply = await chat.send("Now is a good time")
    assert COMPOSED in texts(reply)


async def test_nothing_is_kept_without_consent(
    chat: ConsoleChat, repository: Repository
) -> None:
    await onboard(chat, keep="No, don't keep them")
    reply = await chat.send("/talk")
    assert "Haven doesn't keep what you write here" in texts(reply)
    reply = await build(chat, dict(BUILDER))
    assert COMPOSED in texts(reply), "the message is still put together from this run"
    reply = await chat.send("Done")
    assert "Haven doesn't keep what you wrote here" in texts(reply)
    _user, kept, runs = await talk_rows(repository, chat.user_id)
    assert kept == []
    assert [(run.status, run.answers) for run in runs] == [("done", {})]


async def test_the_focus_changes_the_examples(engine: Engine) -> None:
    async def walk(user_id: int, focus: str) -> list[str]:
        chat = ConsoleChat(engine, user_id=user_id, out=io.StringIO(), first_name="Jo")
        await onboard(chat, focus=focus)
        intro = texts(await chat.send("/talk"))
        seen = [texts(await chat.send("Build what I want to say"))]
        for _ in range(3):
            seen.append(texts(await chat.send("skip")))
        return [*seen, intro]  # behaviour, feeling, need, request, intro

    partner = await walk(7301, "Partner")
    work = await walk(7302, "Work")
    family = await walk(7303, "Child or parent")
    healing = await walk(7304, "Healing from the past")

    assert "you looked at your phone while I was telling you about my day" in partner[0]
    assert "you moved the deadline in the team chat" in work[0]
    assert "you came home after midnight" in family[0]
    assert "you commented on my weight" in family[0], "a parent's and a grown child's example"
    assert "after I said I didn't want to go to the party" in healing[0]
    assert "team chat" not in partner[0] and "my day" not in work[0]

    assert "lonely, and a bit unimportant" in partner[1]
    assert "unsure where I stand" in work[1] and "unimportant" not in work[1]
    assert "clear expectations, so I can plan my work" in work[2]
    assert "to know you're safe" in family[2]
    assert "saying no is safe between us" in healing[2]
    assert "put your phone away" in partner[3]
    assert "talk to me before a deadline" in work[3] and "phone" not in work[3]

    assert "conflicts about vulnerable topics" in partner[4]
    assert "rather than through gossip or triangulation" in work[4]
    assert "separating behavior from identity" in family[4]
    assert "go at your own pace" in healing[4]
    assert "gossip" not in partner[4] and "vulnerable topics" not in work[4]


# ---- the draft checker -------------------------------------------------------------------


def test_the_action_samples_cover_every_pattern_and_escaping() -> None:
    samples = draft_check_samples()
    assert all(set(sample) == {"findings", "draft_checked"} for sample in samples)
    seen = {finding["pattern"] for sample in samples for finding in sample["findings"]}
    assert seen == set(PATTERNS)
    assert any(not sample["findings"] and sample["draft_checked"] for sample in samples)
    assert any(len(sample["findings"]) == 1 for sample in samples)
    assert any("<" in f["quote"] and "&" in f["quote"]
               for sample in samples for f in sample["findings"])


async def test_the_checker_quotes_names_and_offers_a_gentler_form_then_checks_again(
    chat: ConsoleChat, repository: Repository
) -> None:
    found = default_checker().check(FLAWED)
    assert {finding.pattern for finding in found} == set(PATTERNS), "the draft shows all six"
    await onboard(chat)
    await chat.send("/talk")
    reply = await chat.send("Check a message I've written")
    assert "Paste or type the message you're thinking of sending." in texts(reply)
    assert labels(reply) == ["Skip"]

    reply = await chat.send(FLAWED)
    seen = texts(reply)
    for finding in found:
        name, why = NAMED[finding.pattern]
        assert f'"{finding.quote}"' in seen, finding.quote
        assert name in seen and why in seen, finding.pattern
        assert f"A gentler way: {finding.gentler}" in seen, finding.gentler
    quotes = [seen.index(f'"{finding.quote}"') for finding in found]
    assert quotes == sorted(quotes), "in the order they come in the draft"
    assert seen.count('"You always forget my birthday"') == 1, "one quote, two patterns"
    assert ONLY_WORDS in seen
    assert labels(reply) == AFTER_CHECK
    assert_gentle(reply)

    reply = await chat.send("Rewrite and check again")
    assert "Paste or type the new version" in texts(reply)
    reply = await chat.send(CLEAN_DRAFT)
    assert NO_FINDINGS in texts(reply)
    assert "choosing timing thoughtfully" in texts(reply)
    assert "A gentler way" not in texts(reply)
    assert ONLY_WORDS in texts(reply)
    assert labels(reply) == AFTER_CHECK

    reply = await chat.send("Done")
    assert "The messages you checked aren't kept." in texts(reply)
    assert "/journal" not in texts(reply)
    _user, kept, runs = await talk_rows(repository, chat.user_id)
    assert kept == [], "drafts are never kept as reflections"
    assert [(run.status, run.answers) for run in runs] == [("done", {})]


async def test_the_quoted_draft_is_escaped(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/talk")
    await chat.send("2")  # press "Check a message I've written"
    reply = await chat.send(TRICKY)
    raw = html_of(reply)
    assert '<i>"you leave &lt;dishes&gt; &amp; mugs out all the time"</i>' in raw
    assert "<dishes>" not in raw
    assert '"you leave <dishes> & mugs out all the time"' in texts(reply)


async def test_skipping_a_rewrite_does_not_check_the_old_draft_again(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/talk")
    await chat.send("Check a message I've written")
    reply = await chat.send(FLAWED)
    assert "Grow up" in texts(reply)
    await chat.send("Rewrite and check again")
    reply = await chat.send("skip")
    assert "There's no message to check this time." in texts(reply)
    assert "Grow up" not in texts(reply)
    assert labels(reply) == AFTER_CHECK


async def test_the_built_message_goes_through_the_checker(chat: ConsoleChat) -> None:
    await onboard(chat)
    await build(chat, dict(BUILDER))
    reply = await chat.send("Check it with the draft checker")
    assert NO_FINDINGS in texts(reply)
    assert "listening to understand rather than to counter" in texts(reply)
    assert "choosing timing thoughtfully" not in texts(reply)

    flawed = dict(BUILDER, behaviour="you always ignore me when I talk about work")
    await chat.send("Done")
    await build(chat, flawed)
    reply = await chat.send("Check it with the draft checker")
    assert '"you always ignore me when"' in texts(reply)
    assert "“Always” and “never”" in texts(reply)
    assert labels(reply) == AFTER_CHECK


async def test_cancel_at_the_result_shows_the_same_findings_again(chat: ConsoleChat) -> None:
    await onboard(chat)
    await chat.send("/talk")
    await chat.send("Check a message I've written")
    first = texts(await chat.send(FLAWED))
    await chat.send("/cancel")
    reply = await chat.send("/talk")
    assert "where you left off" in texts(reply).lower()
    again = texts(reply)
    for finding in default_checker().check(FLAWED):
        assert finding.gentler in first and finding.gentler in again
    assert labels(reply) == AFTER_CHECK


# ---- through Telegram -----------------------------------------------------------------------

@pytest.mark.e2e
async def test_talk_through_telegram(
    fake: FakeTelegram, bot: BotProcess, database_url: str, tmp_path: Path  # noqa: F811
) -> None:
    user = fake.user(user_id=5801, first_name="Aoife")
    await onboard_on_telegram(user)
    assert "talk" in {c["command"] for c in fake.commands}

    await user.send("/talk")
    assert "Where would you like to start?" in visible(await user.replies())
    assert user.last_keyboard() == [[label] for label in INTRO]
    await user.press("Build what I want to say")
    assert "cancelled our plans an hour before" in visible(await user.replies())
    for name in ("behaviour", "feeling", "need", "request"):
        assert user.last_keyboard() == [["Skip"]]
        await user.send(BUILDER[name])
        replies = await user.replies()
    assert user.last_keyboard() == [[label] for label in TIMING]
    await user.press("Now is a good time")
    replies = await user.replies()
    [message] = [m for m in replies if COMPOSED in (m.text or "")]
    start = (message.text or "").index(COMPOSED)  # ASCII, so UTF-16 offsets are the same
    code = {"type": "code", "offset": start, "length": len(COMPOSED)}
    assert code in message.raw.get("entities", []), "the message alone is tapped to copy"
    assert user.last_keyboard() == [[label] for label in AFTER_BUILD]

    await user.press("Check it with the draft checker")
    assert NO_FINDINGS in visible(await user.replies())
    await user.press("Rewrite and check again")
    await user.replies()
    await user.send(TRICKY)
    result = visible(await user.replies())
    assert '"you leave <dishes> & mugs out all the time"' in result
    assert "“Always” and “never”" in result and "An accusing “you”" in result
    assert user.last_keyboard() == [[label] for label in AFTER_CHECK]
    await user.press("Done")
    assert "The messages you checked aren't kept." in visible(await user.replies())
    assert user.unanswered_callbacks() == []
    pressed = [m for m in user.chat if m.edited]
    assert pressed and all(not m.buttons for m in pressed), "a pressed keyboard is taken away"

    keys = read_or_create_key_file(key_file(tmp_path))
    repository = await migrated(database_url, cipher_from(keys))
    try:
        _user, kept, runs = await talk_rows(repository, 5801)
    finally:
        await repository.close()
    assert [(row.question, row.text) for row in kept] == [
        (name, BUILDER[name]) for name in ("behaviour", "feeling", "need", "request")]
    assert [(run.status, run.answers) for run in runs] == [("done", {})]
    log = bot.log()
    assert BUILDER["behaviour"] not in log and "dishes" not in log, "no words in the logs"
