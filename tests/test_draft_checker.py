"""The draft checker (bot/draft_checker.py) against labelled drafts.

Precision and recall are counted over (sentence, pattern) pairs: a pattern found in a draft
that is not labelled there is a false positive, a labelled one not found is a false negative.
Run with `pytest -s` to see the tables.

Four sets:
- tests/data/draft_sentences.yaml: our own, written alongside the rules, including the probes
  written to test each structural generalisation and, in the second round, batches of new
  wordings and clean look-alikes written before each rule change (optimistic figures).
- tests/data/draft_blind.yaml: written by someone who never saw the rules. It is NO LONGER
  held out: it was measured once before any tuning (precision 0.899, recall 0.731), its even
  half was tuned on (odd half then 0.867 / 0.756), and now the whole set is used for
  development, so its figures are optimistic too.
- tests/data/draft_blind2.yaml: written by someone who had not seen the rules. It was
  measured ONCE before any tuning on it (precision 0.934, recall 0.705; per pattern in
  BLIND2_MEASURED), and is NO LONGER held out: the second round of rules was developed on
  it, so its figures are optimistic now (0.980 / 1.000 when written) and its floors are
  development floors (0.95 / 0.97).
- tests/data/draft_blind3.yaml: the held-out set, written by someone who has not seen the
  rules, while the second round was being written. It was opened and measured ONCE, after
  the rules were frozen, and not tuned on: precision 0.908, recall 0.676 (micro; per
  pattern in BLIND3_MEASURED). That is the honest estimate for unseen drafts: precision
  held above 0.9, recall did not reach the 0.8 target (contempt 0.49 is the weakest).
  Its floors are those figures minus 0.03, so the test guards against regressions; do
  not tune the rules on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.draft_checker import PATTERNS, DraftChecker, Finding, default_checker

DATA = Path(__file__).resolve().parent / "data"
OWN_SET = DATA / "draft_sentences.yaml"
BLIND_SET = DATA / "draft_blind.yaml"
BLIND2_SET = DATA / "draft_blind2.yaml"
BLIND3_SET = DATA / "draft_blind3.yaml"

# draft_blind2.yaml, measured once with the final rules, before anything was tuned on it:
# pattern: (tp, fp, fn).
BLIND2_MEASURED = {
    "always_never": (24, 0, 3),
    "character_attack": (19, 0, 12),
    "you_accusation": (43, 4, 8),
    "contempt": (22, 1, 16),
    "defensiveness": (14, 2, 12),
    "stonewalling": (19, 3, 8),
}
BLIND2_PRECISION = 0.934  # 141 / 151
BLIND2_RECALL = 0.705  # 141 / 200

# draft_blind3.yaml, measured once with the frozen second-round rules, never tuned on.
BLIND3_MEASURED = {
    "always_never": (17, 1, 8),
    "character_attack": (21, 0, 4),
    "you_accusation": (30, 2, 14),
    "contempt": (18, 5, 19),
    "defensiveness": (18, 2, 5),
    "stonewalling": (15, 2, 7),
}
BLIND3_PRECISION = 0.908  # 119 / 131
BLIND3_RECALL = 0.676  # 119 / 176

TRICKY_CLEAN = (
    "I never thought of it that way",
    "I always love our walks",
    "I always feel better after we talk",
    "never mind",
    "Never mind, I found it",
    "as always, thank you",
    "You always make me laugh",
    "Whatever you decide is fine with me",
    "whatever you pick is fine",
    "I'm done with the dishes",
    "I'm done with work, want to call?",
    "can we pick this up at 8 tonight?",
    "It's nobody's fault, these things happen",
    "Yes, but only if you're free",
    "You're so thoughtful",
    "I was stupid to forget my keys",
    "I feel hurt when plans change at the last minute",
    "Could you let me know if you'll be late?",
    "You looked tired yesterday, are you ok?",
    "Do you want to talk tonight?",
    "Thank you",
)


def load(path: Path) -> list[dict[str, Any]]:
    """A labelled set: a list of {text, patterns}."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(entries, list)
    for entry in entries:
        assert set(entry["patterns"]) <= set(PATTERNS), entry
    return entries


@dataclass
class Score:
    """True/false positives and false negatives per pattern, plus the misses to show."""

    tp: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATTERNS, 0))
    fp: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATTERNS, 0))
    fn: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATTERNS, 0))
    errors: list[str] = field(default_factory=list)

    @staticmethod
    def ratio(good: int, bad: int) -> float:
        return good / (good + bad) if good + bad else 1.0

    def precision(self, pattern: str | None = None) -> float:
        keys = PATTERNS if pattern is None else (pattern,)
        return self.ratio(sum(self.tp[k] for k in keys), sum(self.fp[k] for k in keys))

    def recall(self, pattern: str | None = None) -> float:
        keys = PATTERNS if pattern is None else (pattern,)
        return self.ratio(sum(self.tp[k] for k in keys), sum(self.fn[k] for k in keys))

    def table(self, title: str) -> str:
        lines = [title, f"{'pattern':<18}{'tp':>5}{'fp':>5}{'fn':>5}{'prec':>8}{'recall':>8}"]
        for p in PATTERNS:
            lines.append(f"{p:<18}{self.tp[p]:>5}{self.fp[p]:>5}{self.fn[p]:>5}"
                         f"{self.precision(p):>8.3f}{self.recall(p):>8.3f}")
        tp, fp, fn = (sum(d.values()) for d in (self.tp, self.fp, self.fn))
        lines.append(f"{'overall (micro)':<18}{tp:>5}{fp:>5}{fn:>5}"
                     f"{self.precision():>8.3f}{self.recall():>8.3f}")
        return "\n".join(lines)


def evaluate(entries: list[dict[str, Any]], checker: DraftChecker | None = None) -> Score:
    """Score the checker on labelled entries."""
    checker = checker or default_checker()
    score = Score()
    for entry in entries:
        found = {f.pattern for f in checker.check(entry["text"])}
        wanted = set(entry["patterns"])
        for p in PATTERNS:
            if p in found and p in wanted:
                score.tp[p] += 1
            elif p in found:
                score.fp[p] += 1
                score.errors.append(f"FP {p:<16} {entry['text']!r}")
            elif p in wanted:
                score.fn[p] += 1
                score.errors.append(f"FN {p:<16} {entry['text']!r}")
    return score


def report(score: Score, title: str) -> None:
    print()
    print(score.table(title))
    for error in score.errors:
        print("  ", error)


# --- own labelled set ------------------------------------------------------------------------


def test_own_set_shape() -> None:
    entries = load(OWN_SET)
    assert len(entries) >= 170
    clean = sum(1 for e in entries if not e["patterns"])
    assert 0.40 <= clean / len(entries) <= 0.50
    for p in PATTERNS:
        assert sum(1 for e in entries if p in e["patterns"]) >= 15, p


def test_own_set_precision_and_recall() -> None:
    score = evaluate(load(OWN_SET))
    report(score, f"Own set ({OWN_SET.name})")
    assert score.precision() >= 0.9
    assert score.recall() >= 0.8
    for p in PATTERNS:
        assert score.recall(p) >= 0.7, p


# --- blind sets -----------------------------------------------------------------------------


def test_blind_set_precision_and_recall() -> None:
    entries = load(BLIND_SET)
    halves = entries[0::2], entries[1::2]
    whole = evaluate(entries)
    report(whole, f"Blind set 1, whole ({len(entries)} drafts; used for development now)")
    for name, half in zip(("even", "odd"), halves, strict=True):
        print()
        print(evaluate(half).table(f"Blind set 1, {name} half ({len(half)})"))
    # No longer held out, so these are development figures (0.983 / 1.000 when written).
    assert whole.precision() >= 0.95
    assert whole.recall() >= 0.97
    # The odd half was the held-out half before (0.867 / 0.756 then; 0.966 / 1.000 now).
    odd = evaluate(halves[1])
    assert odd.precision() >= 0.93
    assert odd.recall() >= 0.97


def measured_score(counts: dict[str, tuple[int, int, int]]) -> Score:
    """A Score rebuilt from recorded (tp, fp, fn) per pattern."""
    measured = Score()
    for pattern, (tp, fp, fn) in counts.items():
        measured.tp[pattern], measured.fp[pattern], measured.fn[pattern] = tp, fp, fn
    return measured


def test_blind2_set() -> None:
    entries = load(BLIND2_SET)
    score = evaluate(entries)
    report(score, f"Blind set 2, whole ({len(entries)} drafts; used for development now)")
    measured = measured_score(BLIND2_MEASURED)
    print()
    print(measured.table("Blind set 2, the one honest measurement (before it was tuned on)"))
    assert round(measured.precision(), 3) == BLIND2_PRECISION
    assert round(measured.recall(), 3) == BLIND2_RECALL
    assert score.precision() >= BLIND2_PRECISION - 0.03
    assert score.recall() >= BLIND2_RECALL - 0.03
    # No longer held out, so these are development floors (0.980 / 1.000 when written).
    assert score.precision() >= 0.95
    assert score.recall() >= 0.97


def test_blind3_set_held_out() -> None:
    entries = load(BLIND3_SET)
    score = evaluate(entries)
    report(score, f"Blind set 3, held out ({len(entries)} drafts; measured once, never tuned on)")
    measured = measured_score(BLIND3_MEASURED)
    print()
    print(measured.table("Blind set 3, the one honest measurement"))
    assert round(measured.precision(), 3) == BLIND3_PRECISION
    assert round(measured.recall(), 3) == BLIND3_RECALL
    assert score.precision() >= BLIND3_PRECISION - 0.03
    assert score.recall() >= BLIND3_RECALL - 0.03


# --- unit tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [e["text"] for e in load(OWN_SET)])
def test_quotes_are_exact_substrings_with_gentler_forms(text: str) -> None:
    for finding in default_checker().check(text):
        assert finding.pattern in PATTERNS
        assert finding.quote and finding.quote in text
        assert finding.quote == finding.quote.strip()
        assert finding.gentler.strip()


@pytest.mark.parametrize("text", TRICKY_CLEAN)
def test_tricky_clean_sentences(text: str) -> None:
    assert default_checker().check(text) == []


def test_findings_in_order_of_appearance() -> None:
    text = "Whatever. You never listen. You're so selfish, you idiot."
    findings = default_checker().check(text)
    starts = [text.index(f.quote) for f in findings]
    assert starts == sorted(starts)
    assert {f.pattern for f in findings} == {
        "stonewalling", "always_never", "you_accusation", "character_attack", "contempt"}


def test_one_finding_per_pattern_per_span() -> None:
    findings = default_checker().check("oh great, another brilliant idea")
    assert [f.pattern for f in findings] == ["contempt"]
    assert findings[0].quote == "oh great, another brilliant idea"


@pytest.mark.parametrize(("text", "pattern", "quote"), [
    ("It\u2019s not my fault", "defensiveness", "It\u2019s not my fault"),
    ("You\u2019re so selfish", "character_attack", "You\u2019re so selfish"),
    ("You\u2019re overreacting", "defensiveness", "You\u2019re overreacting"),
    ("I\u2019m done talking", "stonewalling", "I\u2019m done talking"),
    ("you don\u2019t care about me", "you_accusation", "you don\u2019t care about me"),
])
def test_curly_apostrophes(text: str, pattern: str, quote: str) -> None:
    findings = default_checker().check(text)
    assert all(isinstance(f, Finding) for f in findings)
    assert any(f.pattern == pattern and f.quote == quote for f in findings)


@pytest.mark.parametrize("text", [
    "YOU NEVER LISTEN", "you   never    listen", "u never listen", "You never\nlisten"])
def test_case_spaces_and_texting(text: str) -> None:
    found = default_checker().check(text)
    assert {"always_never", "you_accusation"} <= {f.pattern for f in found}
    assert all(f.quote in text for f in found)


@pytest.mark.parametrize(("text", "pattern"), [
    ("ur so lazy", "character_attack"), ("youre so lazy", "character_attack"),
    ("u dont care", "you_accusation"), ("its not my fault", "defensiveness"),
    ("u r a joke", "contempt"),
])
def test_texting_forms(text: str, pattern: str) -> None:
    assert pattern in {f.pattern for f in default_checker().check(text)}


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty(text: str) -> None:
    assert default_checker().check(text) == []


def test_long_input_is_fast() -> None:
    unit = "Honestly, you never listen to me and it hurts. Can we talk at 8? Thanks. "
    text = (unit * (10_000 // len(unit) + 1))[:10_000]
    started = time.perf_counter()
    findings = default_checker().check(text)
    elapsed = time.perf_counter() - started
    assert findings and all(f.quote in text for f in findings)
    assert elapsed < 2.0, elapsed
    noise = ("a" * 9_000) + " you " * 200
    started = time.perf_counter()
    default_checker().check(noise[:10_000])
    assert time.perf_counter() - started < 2.0


def test_deterministic() -> None:
    text = "You never listen. You're so selfish. Whatever. It's not my fault, lol ok sure."
    first = default_checker().check(text)
    assert first == default_checker().check(text)
    assert first == DraftChecker().check(text)
    assert default_checker() is default_checker()
