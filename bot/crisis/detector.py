"""Crisis detector: decides whether a message needs crisis resources before anything else.

Deterministic, offline, pure `re`. The phrases live in `phrases.yaml` (with the policy on what
is and is not caught); this module only normalises text and compiles/runs those rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import ahocorasick
import yaml

DEFAULT_PHRASES = Path(__file__).resolve().parent / "phrases.yaml"
# Written by `python -m bot.crisis.anchors` from the phrases (see bot/crisis/anchors.py).
DEFAULT_ANCHORS = Path(__file__).resolve().parent / "anchors.json"
# Bumped when the way anchors are worked out changes, so that older files are not trusted.
ANCHOR_FORMAT = 1

log = logging.getLogger(__name__)


class Category(StrEnum):
    SELF_HARM = "self_harm"  # suicide and self-harm
    HARM_TO_OTHERS = "harm_to_others"
    ABUSE = "abuse"  # abuse and violence from a partner (or ex, or family member living with them)
    CHILD_AT_RISK = "child_at_risk"


PRIORITY: tuple[Category, ...] = (
    Category.SELF_HARM,
    Category.CHILD_AT_RISK,
    Category.HARM_TO_OTHERS,
    Category.ABUSE,
)


@dataclass(frozen=True)
class CrisisMatch:
    category: Category
    rule: str  # id of the rule that matched (never the user's text)


# --- normalisation -----------------------------------------------------------------------

_QUOTES = str.maketrans({c: "'" for c in "\u2019\u2018\u00b4`\u02bc\u2032\u201b\uff07"})
_BREAKS = re.compile(r"[.!?;:,\u2026\n\r]+|\s[-\u2013\u2014]+\s")
_NON_WORD = re.compile(r"[^\w.]+|_")
_REPEATS = re.compile(r"([^\W\d_])\1+")
_TOKENS = re.compile(r"[^\W_]+|\.")
_STAR_IN_WORD = re.compile(r"(?<=[^\W\d_])\*+(?=[^\W\d_])")


def collapse(text: str) -> str:
    """Collapse every run of a repeated letter to one letter ("kiiill" -> "kil")."""
    return _REPEATS.sub(r"\1", text)


def _strip_accents(text: str) -> str:
    """Drop combining marks ("fiancé" -> "fiance"); NFKC again afterwards."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", kept)


def _one_typo_variants(word: str) -> set[str]:
    """Every string one deletion, swap, substitution or inner insertion away from `word`."""
    letters = string.ascii_lowercase
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    subs = {a + c + b[1:] for a, b in splits if b for c in letters}
    inserts = {a + c + b for a, b in splits if a and b for c in letters}
    return {collapse(v) for v in deletes | swaps | subs | inserts} - {word}


class Normaliser:
    """Turns a message into the canonical text the rules are written against."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        leet: dict[str, str] = spec["leet"]
        self._leet = leet
        chars = re.escape("".join(leet))
        self._leet_re = re.compile(rf"(?<=[^\W\d_])[{chars}](?=[^\W\d_])")
        self._apostrophes = [(re.compile(p), r) for p, r in spec["apostrophes"]]
        self._tokens = {collapse(k): collapse(v) for k, v in spec["tokens"].items()}
        self._fuzzy = self._fuzzy_table(spec["fuzzy"], spec["fuzzy_except"])
        self._common = frozenset(spec["single_letter_words"])
        # Symbols that stand for a word ("🔪 him" -> "knife him"); empty map: nothing to do.
        self._symbols: dict[str, str] = dict(spec.get("symbols") or {})
        keys = sorted(self._symbols, key=len, reverse=True)
        self._symbols_re = re.compile("|".join(map(re.escape, keys))) if keys else None

    def _fuzzy_table(self, words: Iterable[str], excluded: Iterable[str]) -> dict[str, str]:
        """Map each one-typo variant of a keyword to the keyword (never a real word)."""
        keywords = {collapse(w) for w in words}
        blocked = {collapse(w) for w in excluded} | keywords | set(self._tokens)
        table: dict[str, str] = {}
        for word in sorted(keywords):
            for variant in _one_typo_variants(word):
                if variant not in blocked and not variant.startswith(word):
                    table.setdefault(variant, word)
        return table

    def __call__(self, text: str) -> str:
        # Quotes first: NFKC turns the acute accent into a space and a combining mark.
        text = _strip_accents(unicodedata.normalize("NFKC", text.translate(_QUOTES)).casefold())
        if self._symbols_re is not None and not text.isascii():
            text = self._symbols_re.sub(lambda m: f" {self._symbols[m.group()]} ", text)
        text = self._leet_re.sub(lambda m: self._leet[m.group()], text)
        text = _STAR_IN_WORD.sub("", text)
        for pattern, replacement in self._apostrophes:
            text = pattern.sub(replacement, text)
        text = _BREAKS.sub(".", text.replace("'", ""))
        text = collapse(_NON_WORD.sub(" ", text))
        return self._assemble(self._join_spelled_out(_TOKENS.findall(text)))

    def _join_spelled_out(self, tokens: list[str]) -> list[str]:
        """Join runs of three or more single letters ("k m s", "k.i.l.l") into one word."""
        out: list[str] = []
        run: list[str] = []
        padded = [*tokens, "", ""]
        for i, token in enumerate(padded[:-1]):
            if len(token) == 1 and token.isalpha():
                run.append(token)
                continue
            if token == "." and run and len(padded[i + 1]) == 1 and padded[i + 1].isalpha():
                continue
            if len(run) >= 3 and not set(run) <= self._common:
                out.append(collapse("".join(run)))
            else:
                out.extend(run)
            run = []
            if token:
                out.append(token)
        return out

    def _assemble(self, tokens: list[str]) -> str:
        """Map shorthand and typos, glue sentence breaks to the previous word."""
        words: list[str] = []
        for token in tokens:
            if token == ".":
                if words and not words[-1].endswith("."):
                    words[-1] += "."
                continue
            token = self._tokens.get(token, token)
            words.append(self._fuzzy.get(token, token) if len(token) >= 5 else token)
        return " ".join(words)


# --- rule compilation --------------------------------------------------------------------

_MACRO = re.compile(r"<(\w+)>")
_REGEX_REPEATS = re.compile(r"(?<!\\)([a-z])\1+")
_MAX_DEPTH = 8


class RuleSet:
    """Expands `<macros>` and compiles one alternation per category, group name -> rule id."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._macros: dict[str, str] = dict(data["fragments"])
        for name, items in data["words"].items():
            self._macros[name] = "(?:" + "|".join(items) + r")\b"

    def expand(self, pattern: str, replace: Mapping[str, str] | None = None) -> str:
        """Expand macros (optionally renamed), make spaces span a sentence break, collapse."""
        for _ in range(_MAX_DEPTH):
            expanded = _MACRO.sub(lambda m: self._macro(m.group(1), replace), pattern)
            if expanded == pattern:
                break
            pattern = expanded
        else:
            raise ValueError(f"macros nest too deeply in {pattern!r}")
        return _REGEX_REPEATS.sub(r"\1", pattern.replace(" ", r"\.? "))

    def _macro(self, name: str, replace: Mapping[str, str] | None) -> str:
        name = (replace or {}).get(name, name)
        if name not in self._macros:
            raise ValueError(f"unknown macro <{name}>")
        return self._macros[name]

    def compile_rules(self, rules: list[tuple[str, str]]) -> tuple[re.Pattern[str], list[str]]:
        """One regex for many (id, expanded pattern) rules; whole words only."""
        body = "|".join(f"(?P<r{i}>{source})" for i, (_, source) in enumerate(rules))
        compiled = re.compile(rf"(?<!\w)(?:{body})(?!\w)")
        if compiled.groups != len(rules):
            bad = [rule_id for rule_id, source in rules if re.compile(source).groups]
            raise ValueError(f"rules with a capturing group (use (?:...)): {bad}")
        return compiled, [rule_id for rule_id, _ in rules]

    def compile_any(self, patterns: Iterable[str]) -> re.Pattern[str]:
        """One regex matching any of `patterns` as whole words."""
        body = "|".join(self.expand(p) for p in patterns)
        return re.compile(rf"(?<!\w)(?:{body})(?!\w)")


def rule_sources(data: Mapping[str, Any], rules: RuleSet) -> list[tuple[Category, str, str]]:
    """(category, rule id, expanded regex) for every rule in order, `derive`d rules last."""
    sources: list[tuple[Category, str, str]] = []
    for name, entries in data["rules"].items():
        for entry in entries:
            sources.append((Category(name), entry["id"], rules.expand(entry["pattern"])))
    for derivation in data.get("derive", []):
        replace = derivation["replace"]
        for entry in data["rules"][derivation["from"]]:
            branches = [
                branch
                for branch in split_alternatives(entry["pattern"])
                if any(f"<{name}>" in branch for name in replace)
            ]
            if branches:
                rule_id = entry["id"] + derivation["suffix"]
                source = rules.expand("|".join(branches), replace)
                sources.append((Category(derivation["to"]), rule_id, source))
    return sources


def split_alternatives(pattern: str) -> list[str]:
    """The top-level `|` branches of a regex (ignoring escaped and bracketed bars)."""
    branches: list[str] = []
    depth, start, escaped, in_class = 0, 0, False, False
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            branches.append(pattern[start:i])
            start = i + 1
    branches.append(pattern[start:])
    return branches


def _compile_signals(
    cues: list[Mapping[str, Any]], rules: RuleSet
) -> tuple[re.Pattern[str], list[str], list[int]]:
    """One regex for a category's weak cues, with each cue's id and weight."""
    pattern, ids = rules.compile_rules([(c["id"], rules.expand(c["pattern"])) for c in cues])
    return pattern, ids, [int(c.get("weight", 1)) for c in cues]


def _score(
    text: str, threshold: int, pattern: re.Pattern[str], ids: list[str], weights: list[int]
) -> str | None:
    """A rule id when the distinct weak cues in `text` weigh `threshold` or more."""
    seen: dict[int, None] = {}
    for match in pattern.finditer(text):
        if match.lastgroup is not None:
            seen[int(match.lastgroup[1:])] = None
    if sum(weights[i] for i in seen) < threshold:
        return None
    top = sorted(seen, key=lambda i: -weights[i])[:2]
    return "+".join(ids[i] for i in top)


# --- running the rules --------------------------------------------------------------------


class GatedRules:
    """Every rule compiled alone, and run only if the text holds one of its anchors.

    `first_matches` gives what one alternation of a category's rules would find: the rule
    matching furthest left, the first in order at that place. A rule whose anchors are not
    in the text cannot match (see bot/crisis/anchors.py), so it is not run. Rules without
    anchors, and every rule when there are none, are always run.
    """

    def __init__(self, sources: list[tuple[Category, str, str]],
                 anchors: Mapping[str, list[str] | None] | None) -> None:
        self._rules: list[tuple[Category, str, re.Pattern[str]]] = []
        for category, rule_id, source in sources:
            pattern = re.compile(rf"(?<!\w)(?:{source})(?!\w)")
            if pattern.groups:
                raise ValueError(f"a rule with a capturing group (use (?:...)): {rule_id}")
            self._rules.append((category, rule_id, pattern))
        self._always: frozenset[int] = frozenset(
            index for index, (_, rule_id, _) in enumerate(self._rules)
            if anchors is None or anchors.get(rule_id) is None)
        by_anchor: dict[str, list[int]] = {}
        for index, (_, rule_id, _) in enumerate(self._rules):
            for anchor in (anchors or {}).get(rule_id) or ():
                by_anchor.setdefault(anchor, []).append(index)
        self._automaton: Any = None
        if by_anchor:
            self._automaton = ahocorasick.Automaton()
            for anchor, indexes in by_anchor.items():
                self._automaton.add_word(anchor, tuple(indexes))
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return len(self._rules)

    def to_run(self, text: str) -> list[int]:
        """The rules (by position) whose anchors are in `text`, and those that have none."""
        candidates = set(self._always)
        if self._automaton is not None:
            for _, indexes in self._automaton.iter(text):
                candidates.update(indexes)
        return sorted(candidates)

    def first_matches(self, text: str) -> dict[Category, str]:
        """Per category with a match: the id of the rule an alternation would pick."""
        found: dict[Category, str] = {}
        start: dict[Category, int] = {}
        for index in self.to_run(text):
            category, rule_id, pattern = self._rules[index]
            match = pattern.search(text)
            if match is not None and match.start() < start.get(category, len(text) + 1):
                start[category] = match.start()
                found[category] = rule_id
        return found


def sources_digest(sources: list[tuple[Category, str, str]]) -> str:
    """A digest of the rules as compiled: anchors are trusted only for these very rules."""
    text = "\n".join(f"{category.value}\t{rule_id}\t{source}"
                     for category, rule_id, source in sources)
    return hashlib.sha256(text.encode()).hexdigest()


def load_anchors(path: Path,
                 sources: list[tuple[Category, str, str]]) -> dict[str, list[str] | None] | None:
    """The anchors in `path` if they were worked out from these very rules, else None."""
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != ANCHOR_FORMAT or data.get("rules_sha256") != sources_digest(sources):
        log.warning("%s is out of date: every crisis rule runs on every message until it is "
                    "written again (python -m bot.crisis.anchors)", path.name)
        return None
    rules: dict[str, list[str] | None] = data["rules"]
    return rules


# --- the detector ------------------------------------------------------------------------


class CrisisDetector:
    """Finds crisis language; `detect` returns the most urgent category, or None."""

    def __init__(self, phrases_path: Path = DEFAULT_PHRASES,
                 anchors_path: Path | None = None) -> None:
        """`anchors_path`: by default `anchors.json` beside the phrases."""
        if anchors_path is None:
            anchors_path = phrases_path.with_name(DEFAULT_ANCHORS.name)
        data: dict[str, Any] = yaml.safe_load(phrases_path.read_text(encoding="utf-8"))
        rules = RuleSet(data)
        self._normalise = Normaliser(data["normalise"])
        self._reassurance = rules.compile_any(data["reassurance"])
        self._idioms = rules.compile_any(data.get("idioms") or ["(?!)"])
        self._markers = {k: rules.compile_any(v) for k, v in data["markers"].items()}
        self._escalations = [
            (Category(e["from"]), Category(e["to"]), e["when"]) for e in data["escalate"]
        ]
        sources = rule_sources(data, rules)
        self.rules = GatedRules(sources, load_anchors(anchors_path, sources))
        self._signals = [
            (Category(name), int(spec["threshold"]), *_compile_signals(spec["cues"], rules))
            for name, spec in (data.get("signals") or {}).items()
        ]

    def normalise(self, text: str) -> str:
        """The canonical text the rules see (reassurance and idioms not yet removed)."""
        return self._normalise(text)

    def detect(self, text: str) -> CrisisMatch | None:
        """The most urgent match in `text`, or None."""
        if not text or text.isspace():
            return None
        canonical = self._reassurance.sub(".", self._normalise(text))
        canonical = self._idioms.sub(".", canonical)
        found: dict[Category, str | None] = dict.fromkeys(Category)
        found.update(self.rules.first_matches(canonical))
        for category, threshold, pattern, ids, weights in self._signals:
            if not found[category]:
                found[category] = _score(canonical, threshold, pattern, ids, weights)
        for source, target, marker in self._escalations:
            rule = found[source]
            if rule and not found[target] and self._markers[marker].search(canonical):
                found[target] = f"{rule}+{marker}"
        for category in PRIORITY:
            rule = found[category]
            if rule:
                return CrisisMatch(category, rule)
        return None


@lru_cache(maxsize=1)
def default_detector() -> CrisisDetector:
    """The detector built from the bundled phrases, compiled once per process."""
    return CrisisDetector()
