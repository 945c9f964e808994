"""Small pieces with sharp edges: splitting long messages, reading typed answers, callback data."""

from __future__ import annotations

import html
import re

import pytest

from bot import callbacks
from bot.adapters.splitting import fits, split_html, visible_length
from bot.answers import match_label, parse_country, parse_scale
from bot.crisis_lines import lines_for
from tests.fake_telegram.html_check import parse_html


def test_short_messages_are_left_alone() -> None:
    assert split_html("<b>Hi</b> there") == ["<b>Hi</b> there"]


def test_long_messages_split_into_valid_html_within_the_limit() -> None:
    quote = "<blockquote>" + ("It was hard &amp; I said so. " * 300) + "</blockquote>"
    text = f"<b>Your words</b>\n\n{quote}\n\n{quote}\n\nThe end."
    parts = split_html(text)
    assert len(parts) > 1
    for part in parts:
        assert visible_length(part) <= 4096
        parse_html(part)  # raises if Telegram would refuse it
    words_before = html.unescape(re.sub(r"<[^>]+>", " ", text)).split()
    words_after = html.unescape(re.sub(r"<[^>]+>", " ", " ".join(parts))).split()
    assert words_after == words_before, "nothing is lost or reordered"
    assert parts[-1].endswith("The end.")


def test_an_enormous_word_is_cut_without_breaking_entities() -> None:
    text = "a&amp;" * 2000
    parts = split_html(text)
    assert all(visible_length(part) <= 4096 for part in parts)
    for part in parts:
        parse_html(part)


def test_length_is_counted_as_telegram_counts_it() -> None:
    assert visible_length("<b>é</b>&amp;") == 2
    assert visible_length("🙂") == 2  # UTF-16 code units


@pytest.mark.parametrize(("text", "expected"), [
    ("a" * 4096, True), ("a" * 4097, False),  # past the quick bound: counted
    ("🙂" * 2048, True), ("🙂" * 2049, False),  # two units each
    ("<b>" + "a" * 4096 + "</b>", True), ("&amp;" * 4096, True), ("&amp;" * 4097, False),
    ("é" * 2048, True),  # within the quick bound
])
def test_a_text_fits_in_one_message_as_telegram_counts_it(text: str, expected: bool) -> None:
    assert fits(text) is expected
    assert fits(text) == (visible_length(text) <= 4096)


@pytest.mark.parametrize(("typed", "expected"), [
    ("2", 1), ("yes, keep", 0), ("YES KEEP THEM", 0), ("no", 1), ("No, don’t keep them", 1),
    ("7", None), ("maybe", None), ("", None),
])
def test_typed_labels(typed: str, expected: int | None) -> None:
    assert match_label(typed, ["Yes, keep them", "No, don't keep them"]) == expected


@pytest.mark.parametrize(("typed", "expected"), [
    ("Germany", "DE"), ("the UK", "GB"), ("england", "GB"), ("New Zealand", "NZ"),
    ("usa", "US"), ("Brazil", "BR"), ("  france ", "FR"), ("Narnia", None), ("", None),
])
def test_typed_countries(typed: str, expected: str | None) -> None:
    assert parse_country(typed) == expected


def test_scale_answers() -> None:
    assert parse_scale("4", 1, 5) == 4
    assert parse_scale(" 3/5 ", 1, 5) == 3
    assert parse_scale("9", 1, 5) is None
    assert parse_scale("four", 1, 5) is None


def test_callback_data_round_trips_and_refuses_strangers() -> None:
    data = callbacks.step(123456789012, "stress_pattern_abc", "a" * 20)
    assert len(data.encode()) <= 64
    assert callbacks.parse(data) == callbacks.StepPress(123456789012, "stress_pattern_abc",
                                                        "a" * 20)
    assert callbacks.parse("f:self_awareness") == callbacks.FlowPress("self_awareness")
    for forged in ("", "s:1:x", "s:a:b:c", "f:../../etc", "j:-1", "s:1:Step:x", "w:yes!"):
        assert callbacks.parse(forged) is None


def test_crisis_lines_never_default_to_another_country() -> None:
    assert lines_for("GB").emergency == "999"
    unknown = lines_for("FR")
    assert unknown.fallback
    assert "911" not in unknown.emergency
    assert any("findahelpline.com" in line["contact"] for line in unknown.lines)
    assert lines_for(None).fallback


def test_every_country_has_a_line_open_at_any_hour_for_each_need_it_covers() -> None:
    """A child at risk in Germany at night must not be shown only a line that is closed."""
    import yaml

    from bot.crisis_lines import TABLE

    table = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    for country, entry in table["entries"].items():
        topics = {topic for line in entry["lines"] for topic in line["topics"]}
        for topic in topics:
            first = lines_for(country, topic).lines[0]
            assert first["for_this"], (country, topic)
            assert first["hours"] == "24/7", (country, topic, first["name"])


def test_a_reply_goes_out_as_few_telegram_messages_as_fit() -> None:
    from bot.adapters.telegram import coalesce
    from bot.messages import Button, Document, Message

    keys = ((Button("Go", "f:x"),),)
    replies = coalesce([Message("one"), Message("two"), Message("three", keys),
                        Message("four"), Message("five")])
    assert [(m.text, bool(m.buttons)) for m in replies] == [
        ("one\n\ntwo\n\nthree", True), ("four\n\nfive", False)]
    long = "x" * 3000
    assert [m.text for m in coalesce([Message(long), Message(long)])] == [long, long]
    document = Document("a.json", b"{}", "application/json")
    with_file = coalesce([Message("before"), Message("here", documents=(document,))])
    assert [(m.text, m.documents) for m in with_file] == [("before", ()), ("here", (document,))]


def test_templates_read_the_person_as_the_view_names_them() -> None:
    """The view read as a template renders has exactly UserView's names and values."""
    from dataclasses import fields

    from bot.storage.models import User
    from bot.views import LiveUserView, UserView

    user = User(chat_id=1, first_name="Ana", language="en", focus=None, country="GB",
                keep_reflections=True, daily_time="08:30", weekly_day=None, discreet=None)
    view = LiveUserView(user)
    expected = {"first_name": "Ana", "focus": "none", "country": "GB",
                "country_name": "United Kingdom", "keep_reflections": True, "language": "en",
                "daily_time": "08:30", "weekly_day": None, "discreet": False, "timezone": ""}
    for name, value in expected.items():
        assert getattr(view, name) == value, name
    # Every name a template may use is there (the samples that check templates at start-up
    # are UserViews, so a name missing here would pass them and fail in a real turn).
    missing = [field.name for field in fields(UserView) if not hasattr(view, field.name)]
    assert missing == []
    user.focus = "partner"
    assert view.focus == "partner", "read when asked, so a change made earlier in the turn shows"
    with pytest.raises(AttributeError):
        _ = view.chat_id  # the row's other columns stay out of reach of templates


def test_templates_read_dict_entries_by_name_and_still_reach_dict_methods() -> None:
    from pathlib import Path

    from bot.i18n import Translations
    from bot.rendering import Renderer

    renderer = Renderer(Path(__file__).resolve().parent.parent / "prompts",
                        Translations("en", ["en"]))
    template = renderer.env.from_string(
        "{{ entry.title }} {{ entry['title'] }} {{ entry.items() | list | length }} "
        "{{ entry.missing is defined }}")
    assert template.render(entry={"title": "Repair", "n": 2}) == "Repair Repair 2 False"
