"""The crisis patterns' anchors: worked out soundly, kept up to date, never changing a result.

A rule (or a reassurance, idiom or weak-signal pattern) runs only if the message holds a
string of each of its anchor clauses (bot/crisis/anchors.py). These tests check that the
anchors file matches the phrases, that skipping patterns this way finds exactly what running
every one finds, and that it skips most rules for ordinary messages.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path

import pytest
import yaml

from bot.crisis.anchors import AnchorFinder, build, texts_in
from bot.crisis.detector import (
    DEFAULT_ANCHORS,
    DEFAULT_PHRASES,
    AnchorGate,
    CrisisDetector,
    CrisisMatch,
    default_detector,
)
from tests.helpers import TEST_DATA, crisis_test_messages

MESSAGES = crisis_test_messages()


def _key(match: CrisisMatch | None) -> tuple[str, str] | None:
    return None if match is None else (match.category.value, match.rule)


def _rules_to_run(detector: CrisisDetector, canonical: str) -> list[int]:
    """The rules (by position) the detector runs on a normalised text."""
    return [index for index in detector.gate.open_for(canonical) if index < len(detector.rules)]


def _stored() -> dict[str, list[list[str]] | None]:
    anchors: dict[str, list[list[str]] | None] = json.loads(
        DEFAULT_ANCHORS.read_text(encoding="utf-8"))["anchors"]
    return anchors


@pytest.fixture(scope="module")
def every_rule() -> CrisisDetector:
    """The detector without anchors: every rule runs on every message."""
    return CrisisDetector(anchors_path=Path("/nonexistent/anchors.json"))


def test_the_anchors_file_is_up_to_date() -> None:
    stored = json.loads(DEFAULT_ANCHORS.read_text(encoding="utf-8"))
    assert stored == build(DEFAULT_PHRASES), (
        "bot/crisis/anchors.json is out of date (bot/crisis/phrases.yaml or the sample texts "
        "it is worked out with changed): run `make crisis-anchors`")


def test_every_rule_and_screen_has_anchors() -> None:
    anchors = _stored()
    assert len([key for key in anchors if not key.startswith("@")]) > 100
    assert {"@reassurance", "@idioms"} <= set(anchors)
    assert any(key.startswith("@signals.self_harm.") for key in anchors)
    assert [key for key, clauses in anchors.items() if not clauses] == []
    # Most rules have more than one clause: a text must hold a string of each.
    assert sum(len(clauses or []) > 1 for clauses in anchors.values()) > 0.8 * len(anchors)


def test_anchors_change_no_result_on_any_labelled_message(every_rule: CrisisDetector) -> None:
    detector = default_detector()
    assert len(MESSAGES) > 3000
    differ = [text for text in MESSAGES
              if _key(detector.detect(text)) != _key(every_rule.detect(text))]
    assert differ == []


def test_anchors_change_no_result_on_shuffled_words(every_rule: CrisisDetector) -> None:
    """Word salad from the corpora, the rules' own words and their anchors: many near
    misses and odd orders, some matches."""
    detector = default_detector()
    anchors = sorted({anchor.strip() for clauses in _stored().values()
                      for clause in clauses or [] for anchor in clause})
    pattern_words = re.findall(r"[a-z]+", DEFAULT_PHRASES.read_text(encoding="utf-8"))
    words = " ".join(MESSAGES).split() + anchors + pattern_words
    rng = random.Random(20261124)
    matched = 0
    for _ in range(6000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 30)))
        expected = _key(every_rule.detect(text))
        assert _key(detector.detect(text)) == expected, text
        matched += expected is not None
    assert matched > 100  # the salad reaches the rules, not only their absence


def test_ordinary_messages_run_few_rules() -> None:
    detector = default_detector()
    ordinary = texts_in(yaml.safe_load((TEST_DATA / "draft_sentences.yaml").read_text("utf-8")))
    runs = [len(_rules_to_run(detector, detector.normalise(text))) for text in ordinary]
    assert sum(runs) / len(runs) < 0.03 * len(detector.rules)


def test_out_of_date_anchors_are_not_used(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    phrases = tmp_path / "phrases.yaml"
    shutil.copy(DEFAULT_PHRASES, phrases)
    shutil.copy(DEFAULT_ANCHORS, tmp_path / "anchors.json")
    assert len(_rules_to_run(CrisisDetector(phrases), "hello")) == 0  # up to date: used
    original = phrases.read_text(encoding="utf-8")
    phrases.write_text(original + "\n# a comment changes no rule\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert len(_rules_to_run(CrisisDetector(phrases), "hello")) == 0
    assert "out of date" not in caplog.text
    assert "sewer ?slide" in original
    phrases.write_text(original.replace("sewer ?slide", "sewer ?slide|hello"), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        detector = CrisisDetector(phrases)
    assert "anchors.json is out of date" in caplog.text
    assert len(_rules_to_run(detector, "hello")) == len(detector.rules)
    assert _key(detector.detect("hello")) == ("self_harm", "sh.suicide"), "the edited rule"
    assert _key(detector.detect("I want to kill myself")) == ("self_harm", "sh.kill_self")


@pytest.mark.parametrize(("pattern", "acceptable"), [
    ("kill myself", [{"kill myself"}]),
    ("(?:hit|hurt|kick)s? me", [{"hit", "hurt", "kick"}]),  # rarer than " me" in the sample
    # (the parser takes the common "end" out of "end|ending")
    ("(?:\\w+ ){0,3}(?:end|ending) it", [{" it"}, {"end"}]),
    ("(?:my )?(?:mum|dad)", [{"mum", "dad"}]),
    ("suicid\\w*|unalive\\w*", [{"suicid", "unalive"}]),
    ("(?:a|\\w+) b", [{" b"}]),  # one branch has no anchor: the next word carries them
    ("(?:x|\\w) ?", []),  # nothing is required
    ("wait(?=ing)", [{"wait"}]),  # what a lookahead asks is not relied on
    ("(?i:kill) me", [{" me"}]),  # a case-blind part is never an anchor
    ("(?i)kill", []),
    ("(?:so )+sad", [{"so "}, {"sad"}]),
    ("[0-9]+ pills", [{" pills"}]),
])
def test_anchor_sets(pattern: str, acceptable: list[set[str]]) -> None:
    """The set found is one of the required sets (the rarest in the sample), or none."""
    sample = ["he says it to me every day", "my mum and dad", "waiting for the bus"]
    clauses = AnchorFinder(sample).clauses(pattern, most=1)
    if not acceptable:
        assert clauses is None
        return
    assert clauses is not None and len(clauses) == 1
    found = clauses[0]
    assert set(found) in acceptable
    for text in ("kill myself", "hurts me", "i want to end it", "dad", "suicidal", "z b",
                 "waiting", "KILL me", "so so sad", "20 pills"):
        if re.fullmatch(pattern, text):
            assert any(anchor in text for anchor in found), (pattern, text)


@pytest.mark.parametrize(("pattern", "clauses"), [
    ("(?:so )+sad", [{"sad"}, {"so "}]),  # each word of a sequence is required
    # one of each branch makes a clause: the rarest first, then the next
    ("(?:punch|kick) me|slaps? (?:him|you)", [{"punch", "kick", "slap"}, {" me", "him", "you"}]),
    ("kill myself", [{"kill myself"}]),
    ("(?:x|\\w) ?", None),
])
def test_clauses(pattern: str, clauses: list[set[str]] | None) -> None:
    sample = ["he says it to me every day", "so so tired", "you can kick it"]
    found = AnchorFinder(sample).clauses(pattern)
    assert (None if found is None else [set(clause) for clause in found]) == clauses


def test_a_pattern_is_open_only_when_every_clause_is_found() -> None:
    gate = AnchorGate([[["kick", "hit"], [" me"]], None, [["sad"]]])
    assert gate.open_for("he hit me") == {0, 1}
    assert gate.open_for("he hit the wall") == {1}  # " me" is missing
    assert gate.open_for("so sad, he kicks me") == {0, 1, 2}
    assert gate.open_for("") == {1}  # a pattern without anchors is always open
    assert AnchorGate([None, None]).open_for("anything") == {0, 1}
