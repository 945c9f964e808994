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
from functools import lru_cache, reduce
from operator import itemgetter, or_
from pathlib import Path
from typing import Any

import ahocorasick

from bot.yaml_files import read_yaml

DEFAULT_PHRASES = Path(__file__).resolve().parent / "phrases.yaml"
# Written by `python -m bot.crisis.anchors` from the phrases (see bot/crisis/anchors.py).
DEFAULT_ANCHORS = Path(__file__).resolve().parent / "anchors.json"
# Bumped when the way anchors are worked out changes, so that older files are not trusted.
ANCHOR_FORMAT = 2
# Keys of the whole-message patterns that are gated by anchors like the rules (see `screens`).
REASSURANCE = "@reassurance"
IDIOMS = "@idioms"


def signal_key(category: str, cue_id: str) -> str:
    """The key of one weak signal among the gated patterns."""
    return f"@signals.{category}.{cue_id}"


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
# What is neither a letter, a digit nor a full stop becomes a space. Spaces are left alone
# (runs of them are never read, only where words start and end).
_NON_WORD = re.compile(r"[^\w. ]+|_")
# A letter the same letter follows: deleting each leaves one of every run, with an empty
# replacement, which re.sub does without calling back into Python for every match.
_REPEATED = re.compile(r"([^\W\d_])(?=\1)")
_STAR_IN_WORD = re.compile(r"(?<=[^\W\d_])\*+(?=[^\W\d_])")
# Two one-letter words with only spaces and full stops between: where a spelled-out word may
# start. A text without this is left as it is by Normaliser._join_spelled_out.
_LETTER_PAIR = re.compile(r"(?<![^\W_])[^\W\d_][ .]+[^\W\d_](?![^\W_])")


def collapse(text: str) -> str:
    """Collapse every run of a repeated letter to one letter ("kiiill" -> "kil")."""
    return _REPEATED.sub("", text)


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


def _apostrophe_letters(pattern: str) -> str:
    """The literal letters around the apostrophe of a contraction rule ("n't\\b" -> "n't").

    Read from the pattern outside any group, so every text the rule matches holds them.
    """
    top_level = re.sub(r"\((?:[^()\\]|\\.)*\)", "(", pattern.replace("\\b", ""))
    found = re.search(r"[a-z]*'[a-z]*(?![?*+{])", top_level)
    if found is None or "|" in top_level:
        raise ValueError(f"a rule under `apostrophes` needs an apostrophe outside any group, "
                         f"not made optional, and no alternation outside a group: {pattern}")
    return found.group()


class Normaliser:
    """Turns a message into the canonical text the rules are written against."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        leet: dict[str, str] = spec["leet"]
        self._leet = leet
        chars = re.escape("".join(leet))
        self._leet_re = re.compile(rf"(?<=[^\W\d_])[{chars}](?=[^\W\d_])")
        self._any_leet = re.compile(f"[{chars}]")  # none in the text: nothing to replace
        # Each rule with the letters around its apostrophe ("n't"), which every text it
        # matches holds: a rule whose letters are not in the text is not run.
        self._apostrophes = [(_apostrophe_letters(p), re.compile(p), r)
                             for p, r in spec["apostrophes"]]
        self._tokens = {collapse(k): collapse(v) for k, v in spec["tokens"].items()}
        self._fuzzy = self._fuzzy_table(spec["fuzzy"], spec["fuzzy_except"])
        # A word as _assemble writes it: its shorthand spelled out, then a typo (in a word of
        # five letters or more) corrected; words in neither table stay as they are.
        self._words = {word: self._fuzzy.get(word, word) for word in self._fuzzy if len(word) >= 5}
        for word, replacement in self._tokens.items():
            self._words[word] = (self._fuzzy.get(replacement, replacement)
                                 if len(replacement) >= 5 else replacement)
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
        if self._any_leet.search(text):
            text = self._leet_re.sub(lambda m: self._leet[m.group()], text)
        if "*" in text:
            text = _STAR_IN_WORD.sub("", text)
        if "'" in text:
            for letters, pattern, replacement in self._apostrophes:
                if letters in text:
                    text = pattern.sub(replacement, text)
        text = _BREAKS.sub(".", text.replace("'", ""))
        text = collapse(_NON_WORD.sub(" ", text))
        # Words and full stops: all the text holds now, besides spaces.
        tokens = text.replace(".", " . ").split()
        if _LETTER_PAIR.search(text):
            tokens = self._join_spelled_out(tokens)
        return self._assemble(tokens)

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
            words.append(self._words.get(token, token))
        return " ".join(words)


# --- rule compilation --------------------------------------------------------------------

_MACRO = re.compile(r"<(\w+)>")
_REGEX_REPEATS = re.compile(r"(?<!\\)([a-z])\1+")
_MAX_DEPTH = 8


_PLAIN_WORD = re.compile(r"[a-z0-9 ]+")
# The macros a branch starts with, and the space after them: "<actor><g3> ".
_LEADING_MACROS = re.compile(r"(?:<\w+>)+ ")


def word_tree(words: Iterable[str]) -> str:
    """One regex for many plain words, shared beginnings written once: `he|her|here` becomes
    `he(?:r(?:e)?)?`. It matches exactly the same words (each with its repeated letters
    collapsed, as `RuleSet.expand` does).

    Python's re tries the branches of an alternation one after the other at every place in
    the text, so a list of fifty words costs fifty tests at each word; in a tree, a place
    where no listed word starts costs one.
    """
    root: dict[str, dict[str, Any]] = {}
    for word in words:
        node = root
        for char in collapse(word):
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def written(node: dict[str, Any]) -> str:
        branches = [char + written(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        optional = "?" if "" in node else ""
        return f"(?:{'|'.join(branches)}){optional}"

    return written(root)


def grouped_branches(branches: list[str]) -> str:
    """The alternation of `branches`, those that start with the same macros written once:
    `<actor><g3> a|<actor><g3> b` becomes `<actor><g3> (?:a|b)`.

    The same texts match, from the same place: only the work of finding that out shrinks,
    since the shared part is tried once at each word instead of once per branch.
    """
    groups: dict[str, list[str]] = {}
    for branch in branches:
        leading = _LEADING_MACROS.match(branch)
        key = leading.group() if leading else ""
        groups.setdefault(key, []).append(branch[len(key):])
    parts: list[str] = []
    for key, rests in groups.items():
        if not key or len(rests) == 1:
            parts.extend(key + rest for rest in rests)
        else:
            parts.append(f"{key}(?:{'|'.join(rests)})")
    return "|".join(parts)


class RuleSet:
    """Expands `<macros>` and compiles one alternation per category, group name -> rule id.

    `for_speed`: the word lists are written as trees (`word_tree`). The expanded rules
    match what they match otherwise, but anchors and digests are always worked out from
    the plain form, which is the one written in the phrases.
    """

    def __init__(self, data: Mapping[str, Any], *, for_speed: bool = False) -> None:
        self._macros: dict[str, str] = dict(data["fragments"])
        for name, items in data["words"].items():
            if for_speed:
                plain = [item for item in items if _PLAIN_WORD.fullmatch(item)]
                others = [item for item in items if not _PLAIN_WORD.fullmatch(item)]
                items = [word_tree(plain), *others] if plain else others
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

    def rules_source(self, rules: list[tuple[str, str]]) -> str:
        """One regex for many (id, expanded pattern) rules, whole words only: the group
        `r<n>` is the n-th rule."""
        bad = [rule_id for rule_id, source in rules if re.compile(source).groups]
        if bad:
            raise ValueError(f"rules with a capturing group (use (?:...)): {bad}")
        body = "|".join(f"(?P<r{i}>{source})" for i, (_, source) in enumerate(rules))
        return rf"(?<!\w)(?:{body})(?!\w)"

    def any_source(self, patterns: Iterable[str]) -> str:
        """One regex matching any of `patterns` as whole words."""
        body = "|".join(self.expand(p) for p in patterns)
        return rf"(?<!\w)(?:{body})(?!\w)"

    def compile_any(self, patterns: Iterable[str]) -> re.Pattern[str]:
        return re.compile(self.any_source(patterns))


def rule_sources(data: Mapping[str, Any], rules: RuleSet,
                 *, grouped: bool = False) -> list[tuple[Category, str, str]]:
    """(category, rule id, expanded regex) for every rule in order, `derive`d rules last.

    `grouped`: branches that start with the same macros are written once
    (`grouped_branches`), for speed; otherwise each rule is as the phrases write it.
    """
    def joined(branches: list[str]) -> str:
        return grouped_branches(branches) if grouped else "|".join(branches)

    sources: list[tuple[Category, str, str]] = []
    for name, entries in data["rules"].items():
        for entry in entries:
            source = rules.expand(joined(split_alternatives(entry["pattern"])))
            sources.append((Category(name), entry["id"], source))
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
                source = rules.expand(joined(branches), replace)
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


def screens(data: Mapping[str, Any], rules: RuleSet) -> dict[str, str]:
    """The other patterns every message may go through, by key, as compiled: the
    reassurance and the idioms taken out first, and each weak signal (see `_score`)."""
    found = {REASSURANCE: rules.any_source(data["reassurance"]),
             IDIOMS: rules.any_source(data.get("idioms") or ["(?!)"])}
    for name, spec in (data.get("signals") or {}).items():
        for cue in spec["cues"]:
            found[signal_key(Category(name).value, cue["id"])] = rules.expand(cue["pattern"])
    return found


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

# A pattern's anchors: sets of strings, and any text it matches holds a string of each.
Clauses = list[list[str]]


class AnchorGate:
    """Which of many patterns may match a text, by their anchors (bot/crisis/anchors.py).

    Each pattern has clauses: sets of strings, and every text it matches holds a string of
    each set. One Aho-Corasick pass finds the strings of all patterns at once; a pattern is
    open if every one of its clauses was found. Patterns without anchors are always open.

    Every clause is a bit of one integer (a pattern's clauses side by side, its rarest
    first), and each string stands for the bits of the clauses it is in, so that what a
    text holds is the OR of a few integers, whatever the number of patterns.
    """

    def __init__(self, clauses: list[Clauses | None]) -> None:
        self._always = frozenset(i for i, own in enumerate(clauses) if not own)
        self._pattern_at: dict[int, int] = {}  # bit of a pattern's first clause -> pattern
        self._clauses: list[int] = []  # per pattern: the bits of all its clauses
        self._firsts = 0
        bits_of: dict[str, int] = {}
        bit = 0
        for index, own in enumerate(clauses):
            own = own or []
            self._clauses.append(((1 << len(own)) - 1) << bit)
            if own:
                self._pattern_at[bit] = index
                self._firsts |= 1 << bit
            for clause in own:
                for anchor in clause:
                    bits_of[anchor] = bits_of.get(anchor, 0) | (1 << bit)
                bit += 1
        # Anchors of one character are looked up with `in`: in ordinary text they are found
        # at almost every word, and each find costs the automaton a step in Python.
        self._characters = [(anchor, bits) for anchor, bits in bits_of.items()
                            if len(anchor) == 1]
        self._automaton: Any = None
        if len(bits_of) > len(self._characters):
            self._automaton = ahocorasick.Automaton()
            for anchor, bits in bits_of.items():
                if len(anchor) > 1:
                    self._automaton.add_word(anchor, bits)
            self._automaton.make_automaton()

    def open_for(self, text: str) -> frozenset[int]:
        """The patterns (by position) that may match `text`."""
        found = 0
        if self._automaton is not None:
            # The OR of the bits of every anchor found, without a loop in Python.
            found = reduce(or_, map(itemgetter(1), self._automaton.iter(text)), 0)
        for character, bits in self._characters:
            if character in text:
                found |= bits
        opened = []
        candidates = found & self._firsts
        while candidates:
            lowest = candidates & -candidates
            candidates ^= lowest
            index = self._pattern_at[lowest.bit_length() - 1]
            every = self._clauses[index]
            if found & every == every:
                opened.append(index)
        return self._always.union(opened)


class Rules:
    """Every rule compiled alone, on first use; `first_matches` runs those that may match.

    Compiling them all was a third of a second of each start, and the anchor gate lets
    only a few rules run on most messages: a rule is compiled the first time a message
    may match it (about 2 ms, once per process). `compiled()` compiles them all (the
    tests, and the anchors' tool).
    """

    def __init__(self, sources: list[tuple[Category, str, str]]) -> None:
        self._rules: list[tuple[Category, str, str]] = [
            (category, rule_id, rf"(?<!\w)(?:{source})(?!\w)")
            for category, rule_id, source in sources]
        self._compiled: dict[int, re.Pattern[str]] = {}

    def __len__(self) -> int:
        return len(self._rules)

    def _pattern(self, index: int) -> re.Pattern[str]:
        pattern = self._compiled.get(index)
        if pattern is None:
            _category, rule_id, source = self._rules[index]
            pattern = re.compile(source)
            if pattern.groups:
                raise ValueError(f"a rule with a capturing group (use (?:...)): {rule_id}")
            self._compiled[index] = pattern
        return pattern

    def compiled(self) -> list[tuple[Category, str, re.Pattern[str]]]:
        """Every rule, compiled, in order."""
        return [(category, rule_id, self._pattern(index))
                for index, (category, rule_id, _source) in enumerate(self._rules)]

    def first_matches(self, text: str, to_run: Iterable[int]) -> dict[Category, str]:
        """Per category with a match: the id of the rule one alternation of the category's
        rules would pick (the match furthest left, the first rule in order at that place).
        Only the rules in `to_run` (by position; larger numbers are ignored) are run: the
        others cannot match."""
        found: dict[Category, str] = {}
        start: dict[Category, int] = {}
        for index in sorted(to_run):
            if index >= len(self._rules):
                break
            category, rule_id, _source = self._rules[index]
            match = self._pattern(index).search(text)
            if match is not None and match.start() < start.get(category, len(text) + 1):
                start[category] = match.start()
                found[category] = rule_id
        return found


def gated_sources(sources: list[tuple[Category, str, str]],
                  screened: Mapping[str, str]) -> dict[str, str]:
    """Every pattern gated by anchors, by key: the rules by id, in order, then the screens."""
    return {**{rule_id: source for _, rule_id, source in sources}, **screened}


def sources_digest(gated: Mapping[str, str]) -> str:
    """A digest of the patterns as compiled: anchors are trusted only for these very ones."""
    text = "\n".join(f"{key}\t{source}" for key, source in gated.items())
    return hashlib.sha256(text.encode()).hexdigest()


def load_anchors(path: Path, gated: Mapping[str, str]) -> dict[str, Clauses | None] | None:
    """The anchors in `path` if they were worked out from these very patterns, else None."""
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != ANCHOR_FORMAT or data.get("sha256") != sources_digest(gated):
        log.warning("%s is out of date: every crisis rule runs on every message until it is "
                    "written again (python -m bot.crisis.anchors)", path.name)
        return None
    anchors: dict[str, Clauses | None] = data["anchors"]
    return anchors


# --- the detector ------------------------------------------------------------------------


class CrisisDetector:
    """Finds crisis language; `detect` returns the most urgent category, or None."""

    def __init__(self, phrases_path: Path = DEFAULT_PHRASES,
                 anchors_path: Path | None = None) -> None:
        """`anchors_path`: by default `anchors.json` beside the phrases."""
        if anchors_path is None:
            anchors_path = phrases_path.with_name(DEFAULT_ANCHORS.name)
        data: dict[str, Any] = read_yaml(phrases_path)
        rules = RuleSet(data)
        self._normalise = Normaliser(data["normalise"])
        self._markers = {k: rules.compile_any(v) for k, v in data["markers"].items()}
        self._escalations = [
            (Category(e["from"]), Category(e["to"]), e["when"]) for e in data["escalate"]
        ]
        sources = rule_sources(data, rules)
        # What runs is the same rules written for speed; what they match is unchanged
        # (tests/test_crisis_rules_for_speed.py compares the two forms on every test message).
        self.rules = Rules(rule_sources(data, RuleSet(data, for_speed=True), grouped=True))
        screened = screens(data, rules)
        gated = gated_sources(sources, screened)
        found_anchors = load_anchors(anchors_path, gated)
        if found_anchors is None:
            # Phrases edited since the anchors were written (and the tests run): every rule
            # is compiled now, so that one that cannot be fails at start-up, not at the
            # first message that may match it.
            self.rules.compiled()
        anchors = found_anchors or {}
        self.gate = AnchorGate([anchors.get(key) for key in gated])
        # The screens' positions in the gate come after the rules'.
        position = {key: index for index, key in enumerate(gated)}
        self._reassurance = (position[REASSURANCE], re.compile(screened[REASSURANCE]))
        self._idioms = (position[IDIOMS], re.compile(screened[IDIOMS]))
        self._signals = []
        for name, spec in (data.get("signals") or {}).items():
            category, cues = Category(name), spec["cues"]
            keys = [signal_key(category.value, cue["id"]) for cue in cues]
            weights = [int(cue.get("weight", 1)) for cue in cues]
            self._signals.append((
                category, int(spec["threshold"]),
                re.compile(rules.rules_source([(cue["id"], screened[key])
                                               for cue, key in zip(cues, keys, strict=True)])),
                [cue["id"] for cue in cues], weights,
                {position[key]: weight for key, weight in zip(keys, weights, strict=True)}))

    def normalise(self, text: str) -> str:
        """The canonical text the rules see (reassurance and idioms not yet removed)."""
        return self._normalise(text)

    def detect(self, text: str) -> CrisisMatch | None:
        """The most urgent match in `text`, or None."""
        if not text or text.isspace():
            return None
        canonical = self._normalise(text)
        may_match = self.gate.open_for(canonical)
        for position, pattern in (self._reassurance, self._idioms):
            if position in may_match:
                removed = pattern.sub(".", canonical)
                if removed != canonical:  # what may match is worked out again
                    canonical = removed
                    may_match = self.gate.open_for(canonical)
        found: dict[Category, str | None] = dict.fromkeys(PRIORITY)
        found.update(self.rules.first_matches(canonical, may_match))
        for category, threshold, pattern, ids, weights, weight_at in self._signals:
            # The weak signals are counted only if those that may be there could be enough.
            if not found[category] and sum(map(weight_at.__getitem__,
                                               weight_at.keys() & may_match)) >= threshold:
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
