"""The crisis detector against its labelled corpus, plus focused behaviour tests."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.crisis import Category, CrisisDetector, CrisisMatch, default_detector
from bot.crisis.detector import _apostrophe_letters

CORPUS_PATH = Path(__file__).resolve().parent / "data" / "crisis_corpus.yaml"
BLIND_PATH = Path(__file__).resolve().parent / "data" / "crisis_blind.yaml"
# Second blind set, written before reading the rules; its `test` half was measured once.
BLIND2_PATH = Path(__file__).resolve().parent / "data" / "crisis_blind2.yaml"
# Third blind set (short, slang, emoji, second person, buried in coaching answers); same protocol.
BLIND3_PATH = Path(__file__).resolve().parent / "data" / "crisis_blind3.yaml"
MAX_FALSE_POSITIVE_RATE = 0.05


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def _corpus() -> dict[str, Any]:
    return _load(CORPUS_PATH)


def _positives(section: dict[str, Any]) -> list[tuple[str, Category]]:
    """(message, expected category) for every labelled positive in `section`."""
    out: list[tuple[str, Category]] = []
    for category in Category:
        entries = section.get(category.value, [])
        if isinstance(entries, dict):  # self_harm is split into direct / indirect
            entries = [m for group in entries.values() for m in group]
        out.extend((message, category) for message in entries)
    return out


CORPUS = _corpus()
POSITIVES = _positives(CORPUS)
NEGATIVES: list[str] = CORPUS["negative"]
BLIND = _load(BLIND_PATH)
BLIND2 = _load(BLIND2_PATH)
BLIND3 = _load(BLIND3_PATH)
BLIND_SETS = {"blind": BLIND, "blind2": BLIND2, "blind3": BLIND3}
BLIND_POSITIVES = {half: _positives(BLIND[half]) for half in ("train", "test")}
BLIND2_POSITIVES = {half: _positives(BLIND2[half]) for half in ("train", "test")}
BLIND3_POSITIVES = {half: _positives(BLIND3[half]) for half in ("train", "test")}
# Every labelled positive that must be caught: corpus, former held-out set, every blind half.
ALL_POSITIVES = (
    POSITIVES
    + _positives(CORPUS.get("held_out") or {})
    + BLIND_POSITIVES["train"]
    + BLIND_POSITIVES["test"]
    + BLIND2_POSITIVES["train"]
    + BLIND2_POSITIVES["test"]
    + BLIND3_POSITIVES["train"]
    + BLIND3_POSITIVES["test"]
)
ALL_NEGATIVES: list[str] = (
    NEGATIVES
    + list((CORPUS.get("held_out") or {}).get("negative", []))
    + BLIND["train"]["negative"]
    + BLIND["test"]["negative"]
    + BLIND2["train"]["negative"]
    + BLIND2["test"]["negative"]
    + BLIND3["train"]["negative"]
    + BLIND3["test"]["negative"]
)


@pytest.fixture(scope="module")
def detector() -> CrisisDetector:
    return default_detector()


def _category(detector: CrisisDetector, text: str) -> Category | None:
    match = detector.detect(text)
    return match.category if match else None


# --- corpus ------------------------------------------------------------------------------


def test_corpus_has_the_required_size() -> None:
    counts = {c: sum(1 for _, cat in POSITIVES if cat is c) for c in Category}
    assert counts[Category.SELF_HARM] >= 60
    assert len(CORPUS["self_harm"]["indirect"]) >= 30
    assert counts[Category.HARM_TO_OTHERS] >= 25
    assert counts[Category.ABUSE] >= 45
    assert counts[Category.CHILD_AT_RISK] >= 25
    assert len(NEGATIVES) >= 85
    assert len(POSITIVES) + len(NEGATIVES) >= 240


def test_every_positive_is_caught_with_the_right_category(detector: CrisisDetector) -> None:
    misses = []
    for message, expected in POSITIVES:
        got = _category(detector, message)
        if got is not expected:
            misses.append(f"  [{expected.value}] got {got and got.value}: {message!r}")
    assert not misses, f"{len(misses)} of {len(POSITIVES)} positives missed:\n" + "\n".join(
        misses
    )


@pytest.mark.parametrize("name", ["blind", "blind2"])
def test_blind_set_has_the_required_size(name: str) -> None:
    data = BLIND_SETS[name]
    for half in ("train", "test"):
        positives = _positives(data[half])
        counts = {c: sum(1 for _, cat in positives if cat is c) for c in Category}
        assert counts[Category.SELF_HARM] >= 20
        assert counts[Category.HARM_TO_OTHERS] >= 10
        assert counts[Category.ABUSE] >= 17
        assert counts[Category.CHILD_AT_RISK] >= 10
        assert len(data[half]["negative"]) >= 22


@pytest.mark.parametrize("name", ["blind", "blind2", "blind3"])
@pytest.mark.parametrize("half", ["train", "test"])
def test_every_blind_positive_is_caught_with_the_right_category(
    detector: CrisisDetector, name: str, half: str
) -> None:
    positives = _positives(BLIND_SETS[name][half])
    misses = []
    for message, expected in positives:
        got = _category(detector, message)
        if got is not expected:
            misses.append(f"  [{expected.value}] got {got and got.value}: {message!r}")
    assert not misses, f"{len(misses)} of {len(positives)} {name} {half} positives missed:\n" + (
        "\n".join(misses)
    )


def test_every_held_out_positive_is_caught_with_the_right_category(
    detector: CrisisDetector,
) -> None:
    positives = _positives(CORPUS.get("held_out") or {})
    misses = [f"  [{c.value}]: {m!r}" for m, c in positives if _category(detector, m) is not c]
    assert not misses, "\n".join(misses)


def test_false_positive_rate_on_negatives(detector: CrisisDetector) -> None:
    """Over every negative: corpus, former held-out, both halves of every blind set."""
    hits = [(m, detector.detect(m)) for m in ALL_NEGATIVES]
    false_alarms = [f"  {match.rule}: {m!r}" for m, match in hits if match]
    rate = len(false_alarms) / len(ALL_NEGATIVES)
    print(f"\nfalse-positive rate: {len(false_alarms)}/{len(ALL_NEGATIVES)} = {rate:.1%}")
    print("\n".join(false_alarms))
    assert rate <= MAX_FALSE_POSITIVE_RATE, "\n".join(false_alarms)


def test_held_out_recall_is_reported(detector: CrisisDetector) -> None:
    """Written after the rules; reported, not tuned on (see the corpus header)."""
    held_out = CORPUS.get("held_out") or {}
    positives = _positives(held_out)
    negatives = held_out.get("negative", [])
    caught = [m for m, c in positives if _category(detector, m) is c]
    alarms = [m for m in negatives if detector.detect(m)]
    print(f"\nheld-out: {len(caught)}/{len(positives)} positives right, "
          f"{len(alarms)}/{len(negatives)} negatives matched")
    for message, category in positives:
        if message not in caught:
            print(f"  missed [{category.value}]: {message!r}")
    for message in alarms:
        print(f"  false alarm: {message!r}")


# --- normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I’m going to kill myself",  # curly apostrophe
        "I don‘t want to be here anymore",
        "I don´t want to be here anymore",  # acute accent as apostrophe
        "I don`t see the point in living",  # backtick
        "kiiiill myselfff",  # repeated letters
        "i want to dieeee sooooo bad",
        "KILL. MY. SELF.",  # spacing and punctuation
        "k i l l myself",
        "kms",
        "k.m.s",
        "ＫＩＬＬ ＭＹＳＥＬＦ",  # full-width (NFKC)
        "k1ll myself",  # look-alike characters
        "s*icide",
        "thinking about suicde",  # misspellings
        "sucide is on my mind",
        "i think about suiside",
        "i feel so sucidal",
        "i want to kil myself",
        "unalive myself",
        "i want to unalive",
        "want to die",
        "wanna die",
        "i just want to end it all",
        "gonna off myself",
        "self harm again",
        "selfharm",
        "self-harm",
        "I've been cutting myself",
        "i might od tonight",
        "thinking about an overdose",
    ],
)
def test_normalisation_variants_are_caught(detector: CrisisDetector, text: str) -> None:
    assert _category(detector, text) is Category.SELF_HARM, detector.normalise(text)


def test_normalised_text_is_canonical(detector: CrisisDetector) -> None:
    assert detector.normalise("I’m sooooo TIRED… can’t go on!!") == "i am so tired. can not go on."
    assert detector.normalise("kill. my. self") == "kil. my. self"
    assert detector.normalise("k m s") == "kms"
    assert detector.normalise("u r a star") == "you are a star"  # common one-letter words


# --- negation and reassurance ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I'm not suicidal",
        "I’m not suicidal, just tired of arguing",
        "I would never hurt myself",
        "I'm not going to hurt him, I just need to vent",
        "he has never hit me",
    ],
)
def test_bare_reassurance_is_not_a_match(detector: CrisisDetector, text: str) -> None:
    assert detector.detect(text) is None


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I'm not suicidal but I keep thinking about ending it", Category.SELF_HARM),
        ("i would never hurt myself but i want to die", Category.SELF_HARM),
        ("he has never hit me before last night", Category.ABUSE),
        ("he's never hit me but he punches walls and I'm scared", Category.ABUSE),
    ],
)
def test_reassurance_does_not_hide_the_rest(
    detector: CrisisDetector, text: str, category: Category
) -> None:
    assert _category(detector, text) is category


# --- priority between categories ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I'm scared I'll hit my kid", Category.CHILD_AT_RISK),  # also harm to others
        ("he said he'd hurt the kids if I leave", Category.CHILD_AT_RISK),  # also abuse
        ("I'm 15 and my boyfriend hits me", Category.CHILD_AT_RISK),  # abuse of a minor
        ("he hits me and I want to die", Category.SELF_HARM),  # abuse and self-harm
        ("my dad hits me and I want to kill myself", Category.SELF_HARM),
        ("he hits me and I'm going to stab him", Category.HARM_TO_OTHERS),
        ("he hits the baby and I want to kill him", Category.CHILD_AT_RISK),
        ("my husband hits me", Category.ABUSE),
    ],
)
def test_most_urgent_category_wins(
    detector: CrisisDetector, text: str, category: Category
) -> None:
    assert _category(detector, text) is category


# --- robustness, interface ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n\t ", "🙂", "...", "?!"])
def test_empty_and_symbol_only_text(detector: CrisisDetector, text: str) -> None:
    assert detector.detect(text) is None


def test_ten_thousand_characters_are_fast_and_still_checked(detector: CrisisDetector) -> None:
    filler = "We talked about chores again and I tried to stay calm with him. " * 160
    worst = "a" * 5_000 + " " + "i i i " * 800 + "he he he " * 300  # backtracking bait
    for text, expected in (
        (filler[:9_950] + " I want to die", Category.SELF_HARM),
        (filler[:10_000], None),
        (worst[:10_000], None),
    ):
        start = time.perf_counter()
        got = _category(detector, text)
        elapsed = time.perf_counter() - start
        assert got is expected
        assert elapsed < 0.5, f"{elapsed:.3f}s for {len(text)} characters"


def test_match_never_carries_the_input_text(detector: CrisisDetector) -> None:
    text = "I want to kill myself"
    match = detector.detect(text)
    assert isinstance(match, CrisisMatch)
    assert [f.name for f in dataclasses.fields(match)] == ["category", "rule"]
    assert text not in repr(match) and "kill myself" not in match.rule
    assert match.rule.startswith("sh.")
    with pytest.raises(dataclasses.FrozenInstanceError):
        match.rule = "x"  # type: ignore[misc]


def test_every_rule_id_is_data_not_text(detector: CrisisDetector) -> None:
    for message, _ in ALL_POSITIVES:
        match = detector.detect(message)
        assert match is not None
        parts = match.rule.replace("+", ".").split(".")
        assert all(part.replace("_", "").isalnum() for part in parts)


def test_default_detector_is_cached() -> None:
    assert default_detector() is default_detector()


def test_category_values() -> None:
    assert [c.value for c in Category] == [
        "self_harm",
        "harm_to_others",
        "abuse",
        "child_at_risk",
    ]


@pytest.mark.parametrize(("pattern", "letters"), [
    (r"\bcan't\b", "can't"),
    (r"n't\b", "n't"),
    (r"\b(he|she|it)'s\b", "'s"),
    (r"a'b?", "a'"),  # an optional letter is not required
])
def test_a_contraction_rule_runs_only_where_its_letters_are(pattern: str, letters: str) -> None:
    assert _apostrophe_letters(pattern) == letters


@pytest.mark.parametrize("pattern", [r"\bcan\b", r"(can't|won't)", r"x|'s"])
def test_a_contraction_rule_must_name_its_apostrophe_outside_groups(pattern: str) -> None:
    with pytest.raises(ValueError, match="apostrophe"):
        _apostrophe_letters(pattern)


def test_several_contractions_in_one_message_are_all_spelled_out() -> None:
    detector = default_detector()
    assert detector.normalise("I'm sure he’s fine, can't you hear? Let's go, you'd say") == \
        "i am sure he is fine. can not you hear. let us go. you would say"
