"""Speed of the crisis detector against a trivial baseline, per message.

Run: .venv/bin/python bench/crisis_detector.py [--repeat N]

Inputs: every message of tests/data/crisis_corpus.yaml, and one 10,000-character message
(ordinary relationship talk with one crisis sentence at the very end). Baseline: the same
inputs through `str.casefold()` and one `in` check. Prints mean and p99 per message for both,
side by side, and the ratio detector / baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.crisis.detector import default_detector  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "crisis_corpus.yaml"
FILLER = (
    "We had another long talk last night about chores and money, and I tried to stay calm "
    "and say how I feel without blaming him. "
)


def corpus_messages() -> list[str]:
    """Every message in the corpus, labelled or not."""
    data: Any = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return out


def long_message(size: int = 10_000) -> str:
    """`size` characters of filler ending with one crisis sentence."""
    tail = " Honestly I just want to sleep and never wake up."
    body = (FILLER * (size // len(FILLER) + 1))[: size - len(tail)]
    return body + tail


def baseline(text: str) -> bool:
    """The cheapest possible check: case-fold and look for one word."""
    return "suicide" in text.casefold()


def timings(check: Callable[[str], object], messages: Iterable[str], repeat: int) -> list[int]:
    """Nanoseconds per call, for every message, `repeat` times over."""
    samples: list[int] = []
    for _ in range(repeat):
        for message in messages:
            start = perf_counter_ns()
            check(message)
            samples.append(perf_counter_ns() - start)
    return samples


def p99(samples: list[int]) -> float:
    """The 99th percentile."""
    return statistics.quantiles(samples, n=100)[98]


def report(name: str, messages: list[str], repeat: int) -> None:
    """One table row per statistic: detector, baseline, ratio."""
    detector = default_detector()
    timings(detector.detect, messages, 1)  # warm up
    ours = timings(detector.detect, messages, repeat)
    base = timings(baseline, messages, repeat)
    print(f"\n{name}: {len(messages)} message(s) x {repeat}")
    print(f"  {'':6} {'detector':>12} {'baseline':>12} {'ratio':>8}")
    for label, stat in (("mean", statistics.fmean), ("p99", p99)):
        mine, theirs = stat(ours) / 1000, stat(base) / 1000
        print(f"  {label:6} {mine:10.1f}us {theirs:10.2f}us {mine / theirs:7.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="passes over the inputs")
    args = parser.parse_args()
    start = perf_counter_ns()
    default_detector()
    print(f"compile (once per process): {(perf_counter_ns() - start) / 1e6:.0f} ms")
    report("corpus", corpus_messages(), args.repeat)
    report("10,000-character message", [long_message()], max(args.repeat * 5, 100))


if __name__ == "__main__":
    main()
