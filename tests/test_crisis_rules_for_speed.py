"""The crisis rules as they run (written for speed) find exactly what the phrases say.

The phrases write each rule as the people who maintain them read it: word lists as
alternations, and many branches starting with the same `<actor><g3> `. The detector compiles
them another way (word lists as letter trees, shared beginnings written once), because
Python's re tries every branch at every word. These tests check that the two forms are the
same rules: on every test message, each rule matches in both forms or in neither, and from
the same place.
"""

from __future__ import annotations

import re

import pytest
import yaml

from bot.crisis.detector import (
    DEFAULT_PHRASES,
    RuleSet,
    default_detector,
    grouped_branches,
    rule_sources,
    word_tree,
)
from tests.helpers import crisis_test_messages

MESSAGES = crisis_test_messages()


def _rule(source: str) -> re.Pattern[str]:
    """A rule as `Rules` compiles it: whole words only."""
    return re.compile(rf"(?<!\w)(?:{source})(?!\w)")


def _whole(source: str) -> re.Pattern[str]:
    return re.compile(rf"(?:{source})\Z")


def test_a_word_tree_matches_the_same_words_and_nothing_else() -> None:
    words = ["he", "her", "here", "hers", "husband", "ex", "ex husband", "daddy", "dad", "a"]
    tree = _whole(word_tree(words))
    listed = _whole("|".join(re.sub(r"(\w)\1+", r"\1", word) for word in words))
    # Each word, each of its beginnings, each with a letter more: none is told apart.
    candidates = {word[:cut] + extra for word in words for cut in range(len(word) + 1)
                  for extra in ("", "s", "e", " ")}
    for candidate in candidates | {"dady", "daddy", ""}:
        assert bool(tree.match(candidate)) == bool(listed.match(candidate)), candidate
    assert word_tree(["he", "her", "here"]) == "he(?:r(?:e)?)?"


def test_branches_with_the_same_macros_first_are_written_once() -> None:
    grouped = grouped_branches(["<actor><g3> hits <victim>", "stalks", "<actor><g3> kicks me",
                                "<actor> (?:x)", "<actor><g3>(?! up)"])
    # Order among branches does not change what a rule matches, nor where a match starts.
    assert grouped == ("<actor><g3> (?:hits <victim>|kicks me)|stalks|<actor><g3>(?! up)"
                       "|<actor> (?:x)")


@pytest.fixture(scope="module")
def both_forms() -> list[tuple[str, re.Pattern[str], re.Pattern[str]]]:
    """(rule id, as the phrases write it, as it runs) for every rule, derived ones included."""
    data = yaml.safe_load(DEFAULT_PHRASES.read_text(encoding="utf-8"))
    plain = rule_sources(data, RuleSet(data))
    fast = rule_sources(data, RuleSet(data, for_speed=True), grouped=True)
    assert [rule_id for _, rule_id, _ in plain] == [rule_id for _, rule_id, _ in fast]
    assert [source for _, _, source in plain] != [source for _, _, source in fast]
    return [(rule_id, _rule(slow), _rule(quick))
            for (_, rule_id, slow), (_, _, quick) in zip(plain, fast, strict=True)]


def test_every_rule_matches_the_same_messages_from_the_same_place_in_both_forms(
    both_forms: list[tuple[str, re.Pattern[str], re.Pattern[str]]],
) -> None:
    detector = default_detector()
    matched = 0
    for message in MESSAGES:
        canonical = detector.normalise(message)
        for rule_id, plain, fast in both_forms:
            slow_match, quick_match = plain.search(canonical), fast.search(canonical)
            assert (slow_match is None) == (quick_match is None), (rule_id, message)
            if slow_match is not None and quick_match is not None:
                assert slow_match.start() == quick_match.start(), (rule_id, message)
                matched += 1
    assert matched > 500  # the messages do reach into the rules, not around them


def test_the_detector_runs_the_rules_written_for_speed(
    both_forms: list[tuple[str, re.Pattern[str], re.Pattern[str]]],
) -> None:
    running = [pattern.pattern for _, _, pattern in default_detector().rules.compiled()]
    assert running == [fast.pattern for _, _, fast in both_forms]
