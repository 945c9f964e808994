"""Anchors: for each crisis rule, words one of which any text it matches must contain.

Every message goes through more than a hundred rules. Most messages contain none of the
words a rule is built on, so the detector first looks for the anchors of all rules at once
(Aho-Corasick) and runs only the rules whose anchors it found. An anchor set is *required*:
every string a rule can match contains at least one of its anchors, so skipping a rule whose
anchors are absent never changes the result.

The sets are worked out here from the regex syntax tree (`re._parser`, the standard
library's own parser) and written to `anchors.json`, with a digest of the rules as they are
compiled (phrases.yaml with its macros expanded): the detector uses them only while that
digest matches, and runs every rule otherwise. Run
`python -m bot.crisis.anchors` (or `make crisis-anchors`) after editing the phrases.

Which required set a rule gets (there may be several: each word of a sequence is one)
changes only speed: the rarest in sample texts of ordinary relationship talk is chosen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

import yaml

from bot.crisis.detector import (
    ANCHOR_FORMAT,
    DEFAULT_ANCHORS,
    DEFAULT_PHRASES,
    Normaliser,
    RuleSet,
    rule_sources,
    sources_digest,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FILES = (ROOT / "tests" / "data" / "draft_sentences.yaml",
                ROOT / "tests" / "data" / "crisis_corpus.yaml")

Anchors = frozenset[str]


class AnchorFinder:
    """Works out a required anchor set per rule, preferring sets rare in `sample`."""

    def __init__(self, sample: Sequence[str]) -> None:
        self._sample = sample
        self._seen_in: dict[str, int] = {}  # literal -> bit mask of the sample texts with it

    def required(self, source: str) -> Anchors | None:
        """Strings one of which every match of `source` contains; None if there are none."""
        parsed = sre_parser.parse(source)
        if parsed.state.flags & re.IGNORECASE:
            return None  # anchors are matched as they are written
        return self._sequence(parsed)

    def _sequence(self, items: Iterable[tuple[Any, Any]]) -> Anchors | None:
        """A sequence needs every item: any one item's required set will do."""
        choices: list[Anchors] = []
        run: list[str] = []
        for op, arg in items:
            if op is sre.LITERAL:
                run.append(chr(arg))
                continue
            if run:
                choices.append(frozenset({"".join(run)}))
                run = []
            found = self._item(op, arg)
            if found is not None:
                choices.append(found)
        if run:
            choices.append(frozenset({"".join(run)}))
        # A space or a full stop alone says nothing: every sentence has them.
        useful = [choice for choice in choices if all(s.strip(" .") for s in choice)]
        return min(useful, key=self._cost) if useful else None

    def _item(self, op: Any, arg: Any) -> Anchors | None:
        if op is sre.BRANCH:  # any branch may match: each must have anchors
            union: set[str] = set()
            for branch in arg[1]:
                found = self._sequence(branch)
                if found is None:
                    return None
                union |= found
            return frozenset(union)
        if op is sre.SUBPATTERN:
            _, added_flags, _, items = arg
            return None if added_flags & re.IGNORECASE else self._sequence(items)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            least, _, item = arg
            return self._sequence(item) if least >= 1 else None
        # Character classes, lookarounds, boundaries, atomic groups, possessive repeats:
        # nothing is asked of the matched text (atomic groups could be, but none is used).
        return None

    def _cost(self, anchors: Anchors) -> tuple[int, int, int]:
        """Sample texts the set would let through, then shorter strings, then more of them."""
        mask = 0
        for anchor in anchors:
            mask |= self._mask(anchor)
        return (mask.bit_count(), -min(map(len, anchors)), len(anchors))

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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if path.name == "crisis_corpus.yaml":
            data = data["negative"]  # ordinary talk, some of it close to crisis language
        texts += texts_in(data)
    return [normalise(text) for text in texts]


def build(phrases_path: Path = DEFAULT_PHRASES) -> dict[str, Any]:
    """The anchors file's content for `phrases_path`."""
    data = yaml.safe_load(phrases_path.read_text(encoding="utf-8"))
    finder = AnchorFinder(sample_texts(Normaliser(data["normalise"])))
    sources = rule_sources(data, RuleSet(data))
    rules: dict[str, list[str] | None] = {}
    for _, rule_id, source in sources:
        found = finder.required(source)
        rules[rule_id] = sorted(found) if found is not None else None
    return {"format": ANCHOR_FORMAT, "rules_sha256": sources_digest(sources), "rules": rules}


def write(path: Path = DEFAULT_ANCHORS, phrases_path: Path = DEFAULT_PHRASES) -> None:
    path.write_text(json.dumps(build(phrases_path), indent=1, sort_keys=True) + "\n",
                    encoding="utf-8")


if __name__ == "__main__":
    write()
    print(f"wrote {DEFAULT_ANCHORS}")
