"""Draft checker: finds the patterns that make a message feel unsafe before it is sent.

The article's "Criticism and Contempt" and "Respectful Communication" sections name what
erodes emotional safety: always/never statements, character attacks, accusations instead of
"I" statements, contempt, defensiveness and stonewalling. A person pastes a draft; Haven
points at the exact words and offers a gentler form.

Deterministic, offline and fast on purpose: the same draft always gets the same answer, and
nothing leaves the machine. The rules are data (bot/data/draft_rules.yaml, which also holds
the policy on what is and is not flagged); this module only normalises text and runs them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from bot.yaml_files import read_yaml

PATTERNS = (
    "always_never",
    "character_attack",
    "you_accusation",
    "contempt",
    "defensiveness",
    "stonewalling",
)

DEFAULT_RULES = Path(__file__).resolve().parent / "data" / "draft_rules.yaml"

# Every apostrophe-like character becomes "'", one character for one, so offsets found in the
# normalised text are offsets in the original draft and quotes keep the user's own words.
_APOSTROPHES = str.maketrans({c: "'" for c in "\u2019\u2018\u00b4`\u02bc\u2032\u201b\uff07"})
_DOUBLE_QUOTES = str.maketrans({c: '"' for c in "\u201c\u201d\u201e\u00ab\u00bb"})
_SENTENCE_BREAK = re.compile(r"[.!?\u2026\n]+")
_MACRO = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")
_EDGE = " \t\r\n,;:-"
_REACH = 240  # how far (characters) an exclusion looks around a match


@dataclass(frozen=True)
class Finding:
    """One pattern found in a draft: which, where (the user's exact words), and what instead."""

    pattern: str  # one of PATTERNS
    quote: str  # the exact words found, as they appear in the draft (original case)
    gentler: str  # a gentler form to offer instead


@dataclass(frozen=True)
class Rule:
    """A compiled rule: a regex for one pattern, its suggestion, and its exclusions.

    `unless` is checked against the sentence holding the match, `unless_near` against that
    sentence and its neighbours (e.g. "leave me alone. Can we talk at 8?" is a healthy break).
    """

    pattern: str
    regex: re.Pattern[str]
    gentler: str
    unless: tuple[re.Pattern[str], ...] = ()
    unless_near: tuple[re.Pattern[str], ...] = ()


def normalise(text: str) -> str:
    """Straighten apostrophes and quotes without changing any offset (same length)."""
    return text.translate(_APOSTROPHES).translate(_DOUBLE_QUOTES)


def _expand(source: str, macros: Mapping[str, str]) -> str:
    """Insert macros ({YOU}, {YOURE}, ...) and turn each literal space into `\\s+`.

    A space in a rule means "one or more whitespace", so extra spaces in a draft never hide a
    pattern, and the rules stay readable.
    """
    for _ in range(10):  # macros may use macros; a bounded depth keeps a typo from looping
        expanded = _MACRO.sub(lambda m: macros[m.group(1)], source)
        if expanded == source:
            break
        source = expanded
    return source.replace(" ", r"\s+")


def _compile(
    source: str, macros: Mapping[str, str], *, whole_words: bool = True
) -> re.Pattern[str]:
    """Compile one rule regex, case-insensitive, matching whole words only."""
    body = _expand(source, macros)
    if whole_words:
        # A word must not be cut: no letter right before a match that starts with a letter,
        # none right after a match that ends with one (punctuation-led rules still work).
        body = rf"(?:(?<![\w'])|(?![\w']))(?:{body})(?:(?![\w'])|(?<![\w']))"
    return re.compile(body, re.IGNORECASE)


def load_rules(path: Path = DEFAULT_RULES) -> list[Rule]:
    """Read and compile the rules file; fails loudly on an unknown pattern or a bad regex."""
    data: dict[str, Any] = read_yaml(path)
    macros: dict[str, str] = {str(k): str(v) for k, v in (data.get("macros") or {}).items()}
    rules: list[Rule] = []
    for pattern, entries in (data.get("patterns") or {}).items():
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {pattern!r} in {path}")
        for entry in entries or ():
            gentler = str(entry.get("gentler") or "").strip()
            if not gentler:
                raise ValueError(f"rule without a gentler form in {pattern}: {entry!r}")
            try:
                rules.append(Rule(
                    pattern=pattern,
                    regex=_compile(str(entry["regex"]), macros),
                    gentler=" ".join(gentler.split()),
                    unless=tuple(_compile(str(u), macros, whole_words=False)
                                 for u in entry.get("unless") or ()),
                    unless_near=tuple(_compile(str(u), macros, whole_words=False)
                                      for u in entry.get("unless_near") or ()),
                ))
            except re.error as error:
                raise ValueError(f"bad regex in {pattern}: {entry!r}: {error}") from error
    return rules


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, so exclusions look only at the words around a match."""
    spans: list[tuple[int, int]] = []
    start = 0
    for brk in _SENTENCE_BREAK.finditer(text):
        spans.append((start, brk.end()))
        start = brk.end()
    if start < len(text) or not spans:
        spans.append((start, len(text)))
    return spans


def _sentence_index(spans: list[tuple[int, int]], offset: int) -> int:
    """Index of the sentence holding `offset` (spans are sorted and contiguous)."""
    low, high = 0, len(spans) - 1
    while low < high:
        middle = (low + high) // 2
        if spans[middle][1] <= offset:
            low = middle + 1
        else:
            high = middle
    return low


def _overlapping(regex: re.Pattern[str], text: str) -> list[re.Match[str]]:
    """Every match, including ones that start inside an earlier match.

    One rule is an alternation of many phrasings; a plain finditer would let "oh great,
    another" hide "another brilliant idea". Overlaps are merged again later.
    """
    matches: list[re.Match[str]] = []
    pos = 0
    while (match := regex.search(text, pos)) is not None:
        matches.append(match)
        pos = match.start() + 1
    return matches


def _window(start: int, end: int, offset: int) -> tuple[int, int]:
    """The bounds start..end, cut to a block of about 3 * _REACH characters around `offset`.

    Exclusions only need the nearby words. Blocks are aligned, so nearby matches share one
    window and its cached result: a 10,000-character draft without full stops is not
    rescanned whole for every match.
    """
    if end - start <= 3 * _REACH:
        return start, end
    low = max(start, (offset // _REACH - 1) * _REACH)
    return low, min(end, low + 3 * _REACH)


def _quote_span(match: re.Match[str]) -> tuple[int, int]:
    """The span to quote: the first group named q, q2, ... that took part, else the match."""
    for name in match.re.groupindex:
        if name.startswith("q") and match.start(name) >= 0:
            return match.span(name)
    return match.span()


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without leading/trailing spaces and joining punctuation."""
    while start < end and text[start] in _EDGE:
        start += 1
    while end > start and text[end - 1] in _EDGE:
        end -= 1
    return start, end


def _merged(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Matches of one pattern that overlap (or touch, across spaces and commas) joined into
    one span: one finding, one quote ("whatever you say, genius" is one contempt).

    The gentler form of the longest match wins: it names the wording most precisely.
    """
    merged: list[tuple[int, int, str, int]] = []
    for start, end, gentler in sorted(spans, key=lambda s: (s[0], -s[1], s[2])):
        if merged and (start < merged[-1][1] or not text[merged[-1][1]:start].strip(_EDGE)):
            m_start, m_end, m_gentler, m_len = merged[-1]
            best = (m_gentler, m_len) if m_len >= end - start else (gentler, end - start)
            merged[-1] = (m_start, max(m_end, end), best[0], best[1])
        else:
            merged.append((start, end, gentler, end - start))
    return [(start, end, gentler) for start, end, gentler, _ in merged]


class DraftChecker:
    """Runs the compiled rules over a draft and returns what it finds, in reading order."""

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self._rules = load_rules() if rules is None else rules

    def check(self, text: str) -> list[Finding]:
        """The findings in `text`, in order of appearance; one per pattern per span."""
        if not text or not text.strip():
            return []
        norm = normalise(text)
        spans = _sentences(norm)
        found: dict[str, list[tuple[int, int, str]]] = {p: [] for p in PATTERNS}
        cache: dict[tuple[int, int, int], bool] = {}
        for rule in self._rules:
            for match in _overlapping(rule.regex, norm):
                start, end = _trimmed(norm, *_quote_span(match))
                if start >= end or self._excluded(rule, norm, spans, start, cache):
                    continue
                found[rule.pattern].append((start, end, rule.gentler))
        findings: list[tuple[int, int, int, Finding]] = []
        for order, pattern in enumerate(PATTERNS):
            for start, end, gentler in _merged(norm, found[pattern]):
                findings.append((start, order, end, Finding(pattern, text[start:end], gentler)))
        findings.sort(key=lambda f: (f[0], f[1], f[2]))
        return [f[3] for f in findings]

    @staticmethod
    def _excluded(
        rule: Rule, norm: str, spans: list[tuple[int, int]], offset: int,
        cache: dict[tuple[int, int, int], bool],
    ) -> bool:
        """Whether an exclusion of `rule` matches around `offset`."""
        if not rule.unless and not rule.unless_near:
            return False
        index = _sentence_index(spans, offset)
        sentence = _window(spans[index][0], spans[index][1], offset)
        if any(_searched(u, norm, sentence, cache) for u in rule.unless):
            return True
        low, high = max(0, index - 1), min(len(spans) - 1, index + 1)
        near = _window(spans[low][0], spans[high][1], offset)
        return any(_searched(u, norm, near, cache) for u in rule.unless_near)


def _searched(
    regex: re.Pattern[str], text: str, bounds: tuple[int, int],
    cache: dict[tuple[int, int, int], bool],
) -> bool:
    """Whether `regex` matches text[bounds], remembered for the rest of one check."""
    key = (id(regex), *bounds)
    if key not in cache:
        cache[key] = regex.search(text[bounds[0]:bounds[1]]) is not None
    return cache[key]


@lru_cache(maxsize=1)
def default_checker() -> DraftChecker:
    """The checker built from the bundled rules, compiled once per process."""
    return DraftChecker()
