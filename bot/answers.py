"""Understanding typed answers: a button's label or number, a point on a scale, a country."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from babel import Locale

from bot.i18n import locale_display_name

SKIP_WORDS = frozenset({"skip", "pass", "next", "skip this", "skip it"})
YES_WORDS = frozenset({"yes", "y", "yeah", "yep", "ok", "okay", "sure", "switch"})
NO_WORDS = frozenset({"no", "n", "nope", "stay", "not now"})

# Everyday names Babel's territory list does not use.
COUNTRY_ALIASES = {
    "uk": "GB", "england": "GB", "scotland": "GB", "wales": "GB", "northern ireland": "GB",
    "great britain": "GB", "britain": "GB", "usa": "US", "us": "US", "america": "US",
    "united states of america": "US", "the us": "US", "the uk": "GB", "nz": "NZ",
    "aotearoa": "NZ", "deutschland": "DE", "eire": "IE", "éire": "IE", "republic of ireland": "IE",
    "bharat": "IN", "holland": "NL", "czech republic": "CZ", "russia": "RU", "south korea": "KR",
    "korea": "KR", "uae": "AE", "ivory coast": "CI", "turkey": "TR",
}


_PUNCTUATION = re.compile(r"[^\w' ]+")


def normalise(value: str) -> str:
    """Fold case, accents' look-alikes, curly quotes and punctuation, for matching."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    folded = folded.replace("\u2019", "'").replace("\u2018", "'")
    # Only plain spaces are left between words now: split() drops runs and both ends.
    return " ".join(_PUNCTUATION.sub(" ", folded).split())


@lru_cache(maxsize=4096)
def _normalised_label(label: str) -> str:
    """A button's label as `normalise` folds it (the labels are few, and asked for often)."""
    return normalise(label)


def match_label(typed: str, labels: Sequence[str]) -> int | None:
    """The index of the label the person typed, by number ("2") or by (start of) its words."""
    wanted = normalise(typed)
    if not wanted:
        return None
    if wanted.isdigit():
        number = int(wanted)
        return number - 1 if 1 <= number <= len(labels) else None
    folded = [_normalised_label(label) for label in labels]
    for index, label in enumerate(folded):
        if wanted == label:
            return index
    starts = [index for index, label in enumerate(folded) if label.startswith(wanted)]
    return starts[0] if len(starts) == 1 else None


def parse_scale(typed: str, low: int, high: int) -> int | None:
    match = re.fullmatch(r"\s*(\d{1,2})\s*(?:/\s*\d{1,2})?\s*", typed)
    if match is None:
        return None
    value = int(match[1])
    return value if low <= value <= high else None


@lru_cache(maxsize=1)
def _country_index() -> dict[str, str]:
    index: dict[str, str] = {}
    english = Locale("en")
    for code, name in english.territories.items():
        if len(code) == 2 and code.isalpha():
            index[normalise(name)] = code
            index[code.lower()] = code
    for alias, code in COUNTRY_ALIASES.items():
        index[normalise(alias)] = code
    return index


def parse_country(typed: str) -> str | None:
    """An ISO 3166 code for a typed country name ("germany", "UK", "new zealand")."""
    wanted = normalise(typed).removeprefix("the ").strip()
    return _country_index().get(wanted)


@lru_cache(maxsize=1024)
def country_name(code: str | None, locale: str = "en") -> str:
    if not code:
        return ""
    try:
        return Locale.parse(locale).territories.get(code, code)
    except ValueError:
        return code


def parse_language(typed: str, locales: Sequence[str]) -> str | None:
    wanted = normalise(typed)
    for locale in locales:
        names = {normalise(locale), normalise(locale_display_name(locale))}
        names.add(normalise(Locale("en").languages.get(locale.split("_")[0], "")))
        if wanted in names:
            return locale
    return None
