"""Anchors: for each crisis pattern, strings that any text it matches must contain.

Every message goes through more than a hundred rules (and the reassurance, idiom and weak
signal patterns). Most messages contain none of the words a rule is built on, so the
detector first looks for the anchors of all patterns at once (Aho-Corasick) and runs only
the patterns whose anchors it found. A pattern's anchors are *clauses*: sets of strings,
each of them *required* (every string the pattern can match contains one string of each
set), so skipping a pattern with a clause not found never changes the result.

The clauses are worked out here from the regex syntax tree (`re._parser`, the standard
library's own parser) and written to `anchors.json`, with a digest of the patterns as they
are compiled (phrases.yaml with its macros expanded): the detector uses them only while that
digest matches, and runs every pattern otherwise. Run `python -m bot.crisis.anchors` (or
`make crisis-anchors`) after editing the phrases.

Which required sets a pattern gets (each word of a sequence gives one) changes only speed:
up to `MAX_CLAUSES` of them, chosen so that together they let through the fewest sample
texts of ordinary relationship talk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

from bot.crisis.detector import (
    ANCHOR_FORMAT,
    DEFAULT_ANCHORS,
    DEFAULT_PHRASES,
    Normaliser,
    RuleSet,
    gated_sources,
    rule_sources,
    screens,
    sources_digest,
)
from bot.yaml_files import read_yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FILES = (ROOT / "tests" / "data" / "draft_sentences.yaml",
                ROOT / "tests" / "data" / "crisis_corpus.yaml")
MAX_CLAUSES = 4

Anchors = frozenset[str]


class AnchorFinder:
    """Works out required anchor sets per pattern, preferring sets rare in `sample`."""

    def __init__(self, sample: Sequence[str]) -> None:
        self._sample = sample
        self._seen_in: dict[str, int] = {}  # literal -> bit mask of the sample texts with it

    def clauses(self, source: str, most: int = MAX_CLAUSES) -> list[Anchors] | None:
        """Up to `most` required sets of `source`, rarest together first; None if none."""
        parsed = sre_parser.parse(source)
        if parsed.state.flags & re.IGNORECASE:
            return None  # anchors are matched as they are written
        return self._rarest(self._sequence(parsed), most) or None

    def _rarest(self, required: list[Anchors], most: int = MAX_CLAUSES) -> list[Anchors]:
        """Up to `most` of `required`, each the one letting through the fewest sample texts
        that those before it let through."""
        candidates = list(dict.fromkeys(required))
        chosen: list[Anchors] = []
        passing = (1 << len(self._sample)) - 1
        while candidates and len(chosen) < most:
            best = min(candidates, key=lambda anchors: self._cost(anchors, passing))
            candidates.remove(best)
            chosen.append(best)
            passing &= self._set_mask(best)
        return chosen

    def _sequence(self, items: Iterable[tuple[Any, Any]]) -> list[Anchors]:
        """A sequence needs every item: each item's required sets are the sequence's."""
        required: list[Anchors] = []
        run: list[str] = []
        for op, arg in items:
            if op is sre.LITERAL:
                run.append(chr(arg))
                continue
            if run:
                required.append(frozenset({"".join(run)}))
                run = []
            required += self._item(op, arg)
        if run:
            required.append(frozenset({"".join(run)}))
        # A space or a full stop alone says nothing: every sentence has them.
        return [anchors for anchors in required if all(s.strip(" .") for s in anchors)]

    def _item(self, op: Any, arg: Any) -> list[Anchors]:
        if op is sre.BRANCH:
            # Any branch may match, so each must have required sets; one of each branch
            # together make one required set of the whole. The n-th set takes each branch's
            # n-th rarest (or its last, for a branch with fewer).
            ranked: list[list[Anchors]] = []
            for branch in arg[1]:
                found = self._rarest(self._sequence(branch))
                if not found:
                    return []
                ranked.append(found)
            return [frozenset().union(*(own[min(n, len(own) - 1)] for own in ranked))
                    for n in range(max(map(len, ranked)))]
        if op is sre.SUBPATTERN:
            _, added_flags, _, items = arg
            return [] if added_flags & re.IGNORECASE else self._sequence(items)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            least, _, item = arg
            return self._sequence(item) if least >= 1 else []
        # Character classes, lookarounds, boundaries, atomic groups, possessive repeats:
        # nothing is asked of the matched text (atomic groups could be, but none is used).
        return []

    def _cost(self, anchors: Anchors, passing: int = -1) -> tuple[int, int, int]:
        """Sample texts (of those `passing`) the set would let through, then shorter
        strings, then more of them."""
        return ((self._set_mask(anchors) & passing).bit_count(), -min(map(len, anchors)),
                len(anchors))

    def _set_mask(self, anchors: Anchors) -> int:
        mask = 0
        for anchor in anchors:
            mask |= self._mask(anchor)
        return mask

    def _mask(self, literal: str) -> int:
        found = self._seen_in.get(literal)
        if found is None:
            found = sum(1 << i for i, text in enumerate(self._sample) if literal in text)
            self._seen_in[literal] = found
        return found


def texts_in(node: Any) -> list[str]:
    """Every string in a YAML document, however deep."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        return [text for item in node for text in texts_in(item)]
    return []


def sample_texts(normalise: Any) -> list[str]:
    texts: list[str] = []
    for path in SAMPLE_FILES:
        if not path.exists():  # outside a checkout: anchors are then chosen by length alone
            continue
        data = read_yaml(path)
        if path.name == "crisis_corpus.yaml":
            data = data["negative"]  # ordinary talk, some of it close to crisis language
        texts += texts_in(data)
    return [normalise(text) for text in texts]


def build(phrases_path: Path = DEFAULT_PHRASES) -> dict[str, Any]:
    """The anchors file's content for `phrases_path`."""
    data = read_yaml(phrases_path)
    finder = AnchorFinder(sample_texts(Normaliser(data["normalise"])))
    rules = RuleSet(data)
    gated = gated_sources(rule_sources(data, rules), screens(data, rules))
    anchors: dict[str, list[list[str]] | None] = {}
    for key, source in gated.items():
        found = finder.clauses(source)
        anchors[key] = [sorted(clause) for clause in found] if found is not None else None
    return {"format": ANCHOR_FORMAT, "sha256": sources_digest(gated), "anchors": anchors}


def write(path: Path = DEFAULT_ANCHORS, phrases_path: Path = DEFAULT_PHRASES) -> None:
    path.write_text(json.dumps(build(phrases_path), indent=1, sort_keys=True) + "\n",
                    encoding="utf-8")


if __name__ == "__main__":
    write()
    print(f"wrote {DEFAULT_ANCHORS}")
