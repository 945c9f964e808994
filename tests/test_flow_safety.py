"""The safety check (/safety): scoring, the profile and its picture, what is kept with its date,
the change since last time, the gentle danger note, through the console and through Telegram."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.adapters.console import ConsoleChat
from bot.app import Content
from bot.charts import ProfileRequest, draw_profile, profile_chart
from bot.engine import Engine
from bot.messages import Reply, text
from bot.safety_check import (
    ELEMENTS,
    THREATS,
    changes,
    element_scores,
    flag,
    growth_areas,
    is_danger,
    rating,
    score,
    strengths,
    suggestions,
)
from bot.storage.crypto import cipher_from, key_file, read_or_create_key_file
from bot.storage.models import SafetyCheck
from bot.storage.repository import Repository
from tests.bot_process import BotProcess
from tests.fake_telegram import FakeTelegram
from tests.helpers import Clock, Reader, labels, make_engine, migrated, texts
from tests.test_console_flows import onboard
from tests.test_e2e_telegram import (  # the real bot process and the fake Bot API
    bot,  # noqa: F401
    fake,  # noqa: F401
    visible,
)
from tests.test_e2e_telegram import onboard as onboard_on_telegram

STATEMENTS = ["can_feelings", "can_mistakes", "can_disagree", "can_boundaries",
              "can_vulnerable", "can_matter", "el_reliability", "el_communication",
              "el_boundaries", "el_repair", "el_acceptance", "th_criticism",
              "th_unpredictability", "th_boundaries", "th_invalidation", "th_conditional"]
ELEMENT_NAMES = ["Reliability and consistency", "Respectful communication",
                 "Boundaries and consent", "Repair after ruptures", "Non-judgment and acceptance"]
THREAT_NAMES = ["Criticism and contempt", "Unpredictability and inconsistency",
                "Boundary violations", "Invalidation and gaslighting", "Conditional acceptance"]
# A first check: communication and acceptance strong, repair and boundaries shaky, no threat
# often. Elements: reliability (4+3)/2=3.5, communication (5+4+5)/3=4.7, boundaries (2+3)/2=2.5,
# repair (2+2)/2=2.0, acceptance (4+5)/2=4.5.
FIRST = dict(zip(STATEMENTS, [4, 2, 5, 3, 5, 3, 4, 5, 2, 2, 4, 2, 1, 1, 3, 1], strict=True))
# A later check of the same relationship: repair better, communication lower.
# reliability 3.5, communication (3+4+4)/3=3.7, boundaries 2.5, repair (4+4)/2=4.0, acceptance 4.5
SECOND = dict(zip(STATEMENTS, [4, 4, 4, 3, 5, 3, 4, 3, 2, 4, 4, 2, 1, 1, 2, 1], strict=True))
# Two threats often: the gentle danger note.
DANGER = dict(zip(STATEMENTS, [2, 2, 1, 1, 2, 2, 2, 1, 1, 2, 2, 5, 4, 3, 4, 2], strict=True))
START = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)


# --- scoring -------------------------------------------------------------------------------


def test_an_element_is_the_mean_of_its_own_and_its_you_can_statements() -> None:
    assert element_scores(FIRST) == {"reliability": 3.5, "communication": 4.7,
                                     "boundaries": 2.5, "repair": 2.0, "acceptance": 4.5}
    # Skipped answers are left out; an element with no answers has no score.
    partial = {"el_communication": 2, "can_disagree": 5, "el_repair": 3}
    assert element_scores(partial) == {"communication": 3.5, "repair": 3.0}
    assert element_scores({}) == {}
    assert [e.statements for e in ELEMENTS] == [
        ("el_reliability", "can_matter"), ("el_communication", "can_feelings", "can_disagree"),
        ("el_boundaries", "can_boundaries"), ("el_repair", "can_mistakes"),
        ("el_acceptance", "can_vulnerable")]


def test_ratings_outside_one_to_five_are_not_counted() -> None:
    assert rating({"x": 4}, "x") == 4
    assert rating({"x": "5"}, "x") == 5
    for bad in (0, 6, True, "often", None, 2.5):
        assert rating({"x": bad}, "x") is None
    assert rating({}, "x") is None


def test_threat_flags() -> None:
    assert [flag(value) for value in (1, 2, 3, 4, 5, None)] == \
        [None, None, "sometimes", "often", "often", None]
    profile = score(FIRST)
    assert profile.threats == {"criticism": 2, "unpredictability": 1, "boundaries": 1,
                               "invalidation": 3, "conditional": 1}


def test_strengths_and_growth_areas_are_at_most_two_each() -> None:
    scores = {"reliability": 4.0, "communication": 4.7, "boundaries": 3.0, "repair": 2.0,
              "acceptance": 4.5}
    assert strengths(scores) == ["communication", "acceptance"]
    assert growth_areas(scores) == ["repair", "boundaries"]
    # Thresholds: a strength is 4 or more, a growth area 3 or less; 3.1-3.9 is neither.
    assert strengths({"reliability": 3.9}) == [] and growth_areas({"reliability": 3.1}) == []
    # Ties keep the article's order.
    assert strengths(dict.fromkeys(scores, 5.0)) == ["reliability", "communication"]
    assert growth_areas(dict.fromkeys(scores, 1.0)) == ["reliability", "communication"]


def test_suggestions_follow_growth_areas_and_healing() -> None:
    growth = {"reliability": 2.0, "communication": 2.5, "repair": 4.0}
    assert suggestions("partner", growth, {}) == ["commit", "talk"]
    assert suggestions("work", {"boundaries": 1.0, "acceptance": 3.0}, {}) == \
        ["boundaries", "aware"]
    # A past relationship, or a threat that shows up often, puts /heal first.
    assert suggestions("past", growth, {}) == ["heal", "commit"]
    assert suggestions("friend", {"repair": 2.0}, {"criticism": 4}) == ["heal", "repair"]
    assert suggestions("friend", {"repair": 2.0}, {"criticism": 3}) == ["repair"]
    # No growth area: the flow of the lowest element; nothing rated: self-awareness.
    assert suggestions("partner", {"reliability": 4.5, "repair": 4.0}, {}) == ["repair"]
    assert suggestions("partner", {}, {"criticism": 1}) == ["aware"]


def test_danger_needs_two_threats_often_or_one_grave_one_at_five() -> None:
    assert is_danger({"criticism": 4, "invalidation": 5}) is True
    assert is_danger({"criticism": 5}) is False
    assert is_danger({"criticism": 4, "invalidation": 3}) is False
    assert is_danger({"unpredictability": 5}) is True
    assert is_danger({"boundaries": 5}) is True
    assert is_danger({"boundaries": 4, "unpredictability": 3}) is False
    assert score(DANGER).danger is True and score(FIRST).danger is False


def test_change_since_last_time() -> None:
    found = changes({"reliability": 3.0, "communication": 4.7, "repair": 2.0, "boundaries": "x"},
                    {"reliability": 3.5, "communication": 3.7, "repair": 2.0, "acceptance": 5.0})
    assert found == [("reliability", 3.0, 3.5, "up"), ("communication", 4.7, 3.7, "down"),
                     ("repair", 2.0, 2.0, "same")]


def test_the_profile_picture_and_its_text() -> None:
    elements = [(name, value) for name, value in zip(ELEMENT_NAMES, [4.5, 3.0, None, 1.0, 5.0],
                                                     strict=True)]
    threats = list(zip(THREAT_NAMES, ["often", "sometimes", "rarely", "unrated", "rarely"],
                       strict=True))
    chart = profile_chart(elements, threats, "Safety check, Jun 3, 2026")
    assert chart.png.startswith(b"\x89PNG\r\n\x1a\n")
    for name in ELEMENT_NAMES + THREAT_NAMES:
        assert name in chart.text
    assert "Reliability and consistency: 4.5" in chart.text
    assert "Boundaries and consent: not rated" in chart.text
    assert "Criticism and contempt: often" in chart.text
    assert "Boundary violations: rarely or never" in chart.text
    with pytest.raises(ValueError):
        profile_chart([("Reliability", 6.0)], [], "t")
    with pytest.raises(ValueError):
        profile_chart([], [("Criticism", "always")], "t")
    request = ProfileRequest("Safety check, Jun 3, 2026", tuple(elements), tuple(threats))
    assert draw_profile(request) == chart.png  # what a turn asks the drawer for


# --- through the console -------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def timed_engine(content: Content, repository: Repository, clock: Clock) -> Engine:
    return make_engine(content, repository, clock)


@pytest.fixture
def person(timed_engine: Engine) -> ConsoleChat:
    return ConsoleChat(timed_engine, user_id=5151, out=io.StringIO(), first_name="Sam")


async def begin(chat: ConsoleChat, relationship: str = "Partner") -> Reply:
    reply = await chat.send("/safety")
    assert "16 short statements" in texts(reply)
    assert labels(reply) == ["Begin", "Not now"]
    reply = await chat.send("Begin")
    assert labels(reply) == ["Partner", "Family member", "Friend", "Someone at work",
                             "A past relationship", "Someone else"]
    return await chat.send(relationship)


async def rate_all(chat: ConsoleChat, ratings: dict[str, int]) -> Reply:
    """Press a number for each statement, in order; returns the result."""
    reply = Reply()
    for number, name in enumerate(STATEMENTS, start=1):
        assert labels(reply)[:5] == ["1", "2", "3", "4", "5"] or number == 1
        reply = await chat.send(str(ratings[name]))  # the console presses the numbered button
    return reply


def result_text(reply: Reply) -> str:
    """What a reply says before the menu that follows the result."""
    seen = texts(reply)
    return seen.split("Here's what you can practise", 1)[0]


def documents(reply: Reply) -> list:
    return [d for m in reply.messages for d in m.documents]


async def stored_checks(repository: Repository, chat_id: int) -> list[SafetyCheck]:
    reader = Reader(repository)
    user = await reader.find_user(chat_id)
    assert user is not None
    return await reader.query(select(SafetyCheck).where(SafetyCheck.user_id == user.id)
                              .order_by(SafetyCheck.id))


async def test_two_checks_show_the_change_and_both_are_kept_with_their_dates(
    person: ConsoleChat, repository: Repository, clock: Clock
) -> None:
    await onboard(person)
    reply = await begin(person)
    first_statement = texts(reply)
    assert "1 of 16" in first_statement and "your partner" in first_statement
    assert labels(reply) == ["1", "2", "3", "4", "5", "Skip"]
    result = await rate_all(person, FIRST)
    seen = result_text(result)

    [image] = documents(result)
    assert image.file_name == "safety-check.png" and image.mime_type == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert result.messages[0].documents, "the picture comes first, then the same as text"
    for name in ELEMENT_NAMES + THREAT_NAMES:
        assert name in seen, f"the text profile should name {name}"
    assert "Respectful communication: 4.7" in seen
    assert "Repair after ruptures: 2.0" in seen
    assert "Invalidation and gaslighting: sometimes" in seen
    assert "What feels strong" in seen  # communication 4.7, acceptance 4.5
    assert "foundation for safety" not in seen, "reliability (3.5) is not a strength"
    assert "Where there's room to grow" in seen
    assert "specific apologies rather than generic ones" in seen  # repair's practice
    assert "/repair" in seen and "/boundaries" in seen and "/heal" not in seen
    assert "first check for this relationship" in seen
    assert "not your fault" not in seen
    assert "Jun 3, 2026" in seen

    clock.now = START + timedelta(days=21)
    await begin(person)
    result = await rate_all(person, SECOND)
    seen = result_text(result)
    assert len(documents(result)) == 1
    assert "Since your last check (Jun 3, 2026)" in seen
    assert "Repair after ruptures: 2.0 → 4.0, higher" in seen
    assert "Respectful communication: 4.7 → 3.7, lower" in seen
    assert "Reliability and consistency: 3.5 → 3.5, the same" in seen
    assert "isn't a failure" in seen, "a lower score is framed kindly"
    assert "Jun 24, 2026" in seen

    rows = await stored_checks(repository, person.user_id)
    assert [(row.relationship, row.created_at.replace(tzinfo=UTC)) for row in rows] == \
        [("partner", START), ("partner", START + timedelta(days=21))]
    assert rows[0].scores == {
        "elements": {"reliability": 3.5, "communication": 4.7, "boundaries": 2.5,
                     "repair": 2.0, "acceptance": 4.5},
        "threats": {"criticism": 2, "unpredictability": 1, "boundaries": 1, "invalidation": 3,
                    "conditional": 1}}
    assert rows[1].scores["elements"]["repair"] == 4.0
    user = await Reader(repository).find_user(person.user_id)
    assert user is not None and user.active_flow is None


async def test_progress_shows_the_trend_as_a_chart_and_in_words_and_export_holds_it(
    person: ConsoleChat, clock: Clock
) -> None:
    await onboard(person)
    await begin(person)
    await rate_all(person, FIRST)
    reply = await person.send("/progress")
    assert [d.file_name for d in documents(reply)] == ["practice.png"], "one check: no trend yet"
    assert "one safety check about Partner, on 3 Jun 2026" in texts(reply)

    clock.now = START + timedelta(days=21)
    await begin(person)
    await rate_all(person, SECOND)
    reply = await person.send("/progress")
    pictures = documents(reply)
    assert [d.file_name for d in pictures] == ["practice.png", "safety-trend.png"]
    assert all(d.content.startswith(b"\x89PNG") for d in pictures)
    seen = texts(reply)
    assert "Your safety checks about Partner" in seen
    assert "Your scores from 3 Jun 2026 to 24 Jun 2026" in seen
    assert "Repair after ruptures: 2.0 → 4.0, higher" in seen
    assert "Respectful communication: 4.7 → 3.7, lower" in seen
    # The trend picture comes just before the words that say the same.
    index = next(i for i, m in enumerate(reply.messages) if "Your safety checks" in m.text)
    assert reply.messages[index - 1].documents[0].file_name == "safety-trend.png"

    reply = await person.send("/export")
    exported = next(d for m in reply.messages for d in m.documents
                    if d.file_name.endswith(".json"))
    import json

    checks = json.loads(exported.content)["safety_checks"]
    assert [(c["relationship"], c["element_scores"]["repair"]) for c in checks] == [
        ("partner", 2.0), ("partner", 4.0)]
    markdown = next(d for m in reply.messages for d in m.documents
                    if d.file_name.endswith(".md")).content.decode()
    assert "## Safety checks" in markdown and "about partner" in markdown


async def test_another_relationship_is_compared_only_with_itself(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person)
    await begin(person, "Partner")
    await rate_all(person, FIRST)
    reply = await begin(person, "Someone at work")
    assert "your manager or colleagues" in texts(reply)
    result = await rate_all(person, SECOND)
    assert "first check for this relationship" in result_text(result)
    assert "Since your last check" not in result_text(result)
    rows = await stored_checks(repository, person.user_id)
    assert [row.relationship for row in rows] == ["partner", "work"]


async def test_skipping_everything_shows_and_keeps_nothing(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person)
    await begin(person, "Friend")
    reply = Reply()
    for number, _ in enumerate(STATEMENTS):
        # Typed, or the Skip button (the sixth, under 1-5) pressed.
        reply = await person.send("skip" if number % 2 else "6")
    seen = result_text(reply)
    assert "You skipped every statement" in seen
    assert "nothing was kept" in seen
    assert documents(reply) == []
    assert "Reliability and consistency" not in seen
    assert await stored_checks(repository, person.user_id) == []


async def test_some_skipped_statements_are_left_out(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person)
    await begin(person, "Friend")
    reply = Reply()
    for name in STATEMENTS:
        keep = name in ("el_reliability", "can_matter", "th_criticism")
        reply = await person.send(str(FIRST[name]) if keep else "Skip")
    seen = result_text(reply)
    assert "Reliability and consistency: 3.5" in seen
    assert "Respectful communication: not rated" in seen
    assert "Boundary violations: not rated" in seen
    [row] = await stored_checks(repository, person.user_id)
    assert row.scores == {"elements": {"reliability": 3.5}, "threats": {"criticism": 2}}


async def test_typing_a_number_or_a_label_works_like_pressing(
    person: ConsoleChat, timed_engine: Engine, repository: Repository
) -> None:
    await onboard(person)
    await person.send("/safety")
    await person.send("begin")
    reply = await timed_engine.handle(text(person.user_id, "someone at work"))
    assert "1 of 16" in texts(reply) and "your manager or colleagues" in texts(reply)
    for _ in STATEMENTS[:-1]:
        reply = await timed_engine.handle(text(person.user_id, "4"))  # typed, not pressed
    assert "16 of 16" in texts(reply)
    reply = await timed_engine.handle(text(person.user_id, "six"))
    assert "from 1 to 5" in texts(reply), "a word that is no rating is asked again"
    reply = await timed_engine.handle(text(person.user_id, "4"))
    assert "Reliability and consistency: 4.0" in texts(reply)
    [row] = await stored_checks(repository, person.user_id)
    assert row.relationship == "work"
    assert row.scores["elements"] == dict.fromkeys(
        ("reliability", "communication", "boundaries", "repair", "acceptance"), 4.0)
    assert row.scores["threats"] == dict.fromkeys(
        ("criticism", "unpredictability", "boundaries", "invalidation", "conditional"), 4)


async def test_a_danger_profile_points_gently_to_healing_and_support(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person)  # country: New Zealand
    await begin(person, "Partner")
    result = await rate_all(person, DANGER)
    seen = result_text(result)
    assert "can wear down anyone's sense of safety" in seen
    assert "it is not your fault" in seen
    assert "/heal" in seen
    assert "call 111" in seen, "New Zealand's emergency number"
    assert "Women's Refuge" in seen and "1737" in seen, "New Zealand's own support lines"
    assert seen.index("Women's Refuge") < seen.index("1737"), "domestic-abuse lines first"
    assert "/hide" in seen
    for label in ("abuser", "abusive", "toxic", "narcissist"):
        assert label not in seen.lower(), "the other person is never labelled"
    assert "aren't yours to fix alone" in seen
    assert "you might try" not in seen, "no homework when safety is this shaky"
    assert len(await stored_checks(repository, person.user_id)) == 1


async def test_a_past_relationship_is_asked_about_in_the_past_and_suggests_healing(
    person: ConsoleChat,
) -> None:
    await onboard(person)
    reply = await begin(person, "A past relationship")
    assert "You could tell this person how you really felt" in texts(reply)
    result = await rate_all(person, FIRST)
    seen = result_text(result)
    assert "/heal" in seen and "What felt shakiest" in seen
    assert "early warning signs" in seen


async def test_examples_follow_the_relationship(person: ConsoleChat) -> None:
    await onboard(person)
    await begin(person, "Partner")
    partner = result_text(await rate_all(person, FIRST))
    await begin(person, "Friend")
    friend = result_text(await rate_all(person, FIRST))
    assert "conflicts about vulnerable topics" in partner
    assert "conflicts about vulnerable topics" not in friend
    assert "without score-keeping" in friend
    assert "without score-keeping" not in partner


async def test_for_someone_else_the_examples_follow_the_focus(timed_engine: Engine) -> None:
    friend_focus = ConsoleChat(timed_engine, user_id=6001, out=io.StringIO())
    work_focus = ConsoleChat(timed_engine, user_id=6002, out=io.StringIO())
    await onboard(friend_focus, focus="Friend")
    await onboard(work_focus, focus="Work")
    await begin(friend_focus, "Someone else")
    await begin(work_focus, "Someone else")
    friend = result_text(await rate_all(friend_focus, FIRST))
    work = result_text(await rate_all(work_focus, FIRST))
    assert "with this person" in friend and "with this person" in work
    assert "without score-keeping" in friend and "without score-keeping" not in work
    assert "rather than through gossip" in work and "rather than through gossip" not in friend


async def test_cancel_keeps_the_place_and_the_answers(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person)
    await begin(person, "Friend")
    for name in STATEMENTS[:5]:
        await person.send(str(FIRST[name]))
    reply = await person.send("/cancel")
    assert "/safety" in texts(reply)
    reply = await person.send("/safety")
    assert "6 of 16" in texts(reply)
    for name in STATEMENTS[5:]:
        reply = await person.send(str(FIRST[name]))
    assert "Respectful communication: 4.7" in texts(reply), "answers from before /cancel count"
    [row] = await stored_checks(repository, person.user_id)
    assert row.scores["elements"] == score(FIRST).elements


async def test_not_now_leaves_without_keeping_anything(
    person: ConsoleChat, repository: Repository
) -> None:
    await onboard(person)
    await person.send("/safety")
    reply = await person.send("Not now")
    assert "/safety" in texts(reply)
    assert await stored_checks(repository, person.user_id) == []


def test_the_flow_has_the_articles_statements(content: Content) -> None:
    flow = content.flows["safety"]
    assert (flow.command, flow.order, flow.title) == ("safety", 10, "Safety check")
    asked = [step.answer for step in flow.steps.values() if step.expects.value == "scale"]
    assert asked == STATEMENTS
    assert all(step.skippable for step in flow.steps.values() if step.expects.value == "scale")
    assert [t.name for t in THREATS] == THREAT_NAMES
    assert [e.name for e in ELEMENTS] == ELEMENT_NAMES
    assert flow.steps["result"].action == "safety_result"


# --- through Telegram, with the real bot process -------------------------------------------


@pytest.mark.e2e
async def test_a_safety_check_through_telegram(
    fake: FakeTelegram,  # noqa: F811
    bot: BotProcess,  # noqa: F811
    database_url: str, tmp_path: Path,
) -> None:
    user = fake.user(user_id=5151, first_name="Aoife")
    await onboard_on_telegram(user)  # friend, Ireland
    await user.send("/safety")
    assert "16 short statements" in visible(await user.replies())
    await user.press("Begin")
    await user.replies()
    await user.press("Friend")
    assert "this friend" in visible(await user.replies())
    replies = []
    for name in STATEMENTS:
        assert user.last_keyboard() == [["1", "2", "3", "4", "5"], ["Skip"]]
        await user.press(str(FIRST[name]))
        replies = await user.replies(quiet=0.2)
    photos = [m for m in replies if m.kind == "photo"]
    assert len(photos) == 1 and photos[0].bytes and photos[0].bytes.startswith(b"\x89PNG")
    assert replies[0].kind == "photo", "the picture arrives first, then the same in words"
    seen = visible(replies)
    for name in ELEMENT_NAMES:
        assert name in seen
    assert "upload_photo" in user.chat_actions
    assert user.unanswered_callbacks() == []

    keys = read_or_create_key_file(key_file(tmp_path))
    repository = await migrated(database_url, cipher_from(keys))
    try:
        reader = Reader(repository)
        person = await reader.find_user(5151)
        assert person is not None
        rows = await reader.safety_checks(person, "friend")
    finally:
        await repository.close()
    assert [row.scores["elements"] for row in rows] == [score(FIRST).elements]
