"""The crisis rules' anchors: worked out soundly, kept up to date, and never changing a result.

A rule runs only if the message holds one of its anchors (bot/crisis/anchors.py). These tests
check that the anchors file matches the phrases, that skipping rules this way finds exactly
what running every rule finds, and that it skips most rules for ordinary messages.
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
    CrisisDetector,
    CrisisMatch,
    default_detector,
)

DATA = Path(__file__).resolve().parent / "data"


# Every message of the crisis corpora and blind sets, and the coaching-style sentences.
MESSAGES = [text for path in sorted(DATA.glob("*.yaml"))
            for text in texts_in(yaml.safe_load(path.read_text(encoding="utf-8")))]


def _key(match: CrisisMatch | None) -> tuple[str, str] | None:
    return None if match is None else (match.category.value, match.rule)


@pytest.fixture(scope="module")
def every_rule() -> CrisisDetector:
    """The detector without anchors: every rule runs on every message."""
    return CrisisDetector(anchors_path=Path("/nonexistent/anchors.json"))


def test_the_anchors_file_is_up_to_date() -> None:
    stored = json.loads(DEFAULT_ANCHORS.read_text(encoding="utf-8"))
    assert stored == build(DEFAULT_PHRASES), (
        "bot/crisis/anchors.json is out of date (bot/crisis/phrases.yaml or the sample texts "
        "it is worked out with changed): run `make crisis-anchors`")


def test_every_rule_has_anchors() -> None:
    rules = json.loads(DEFAULT_ANCHORS.read_text(encoding="utf-8"))["rules"]
    assert len(rules) > 100
    assert [rule for rule, anchors in rules.items() if not anchors] == []


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
    rules = json.loads(DEFAULT_ANCHORS.read_text(encoding="utf-8"))["rules"]
    anchors = sorted({anchor.strip() for found in rules.values() for anchor in found})
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
    ordinary = texts_in(yaml.safe_load((DATA / "draft_sentences.yaml").read_text("utf-8")))
    runs = [len(detector.rules.to_run(detector.normalise(text))) for text in ordinary]
    assert sum(runs) / len(runs) < 0.05 * len(detector.rules)


def test_out_of_date_anchors_are_not_used(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    phrases = tmp_path / "phrases.yaml"
    shutil.copy(DEFAULT_PHRASES, phrases)
    shutil.copy(DEFAULT_ANCHORS, tmp_path / "anchors.json")
    assert len(CrisisDetector(phrases).rules.to_run("hello")) == 0  # up to date: used
    original = phrases.read_text(encoding="utf-8")
    phrases.write_text(original + "\n# a comment changes no rule\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert len(CrisisDetector(phrases).rules.to_run("hello")) == 0
    assert "out of date" not in caplog.text
    assert "sewer ?slide" in original
    phrases.write_text(original.replace("sewer ?slide", "sewer ?slide|hello"), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        detector = CrisisDetector(phrases)
    assert "anchors.json is out of date" in caplog.text
    assert len(detector.rules.to_run("hello")) == len(detector.rules)
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
    found = AnchorFinder(sample).required(pattern)
    if not acceptable:
        assert found is None
        return
    assert found is not None and set(found) in acceptable
    for text in ("kill myself", "hurts me", "i want to end it", "dad", "suicidal", "z b",
                 "waiting", "KILL me", "so so sad", "20 pills"):
        if re.fullmatch(pattern, text):
            assert any(anchor in text for anchor in found), (pattern, text)
