"""The table of crisis lines by country (bot/data/crisis_lines.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

TABLE = Path(__file__).resolve().parent / "data" / "crisis_lines.yaml"


@dataclass(frozen=True)
class CrisisLines:
    country: str | None
    emergency: str
    lines: tuple[dict[str, str], ...]
    fallback: bool


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    return data


def lines_for(country: str | None) -> CrisisLines:
    """The lines for `country`, or the international fallback (never another country's numbers)."""
    table = _table()
    entry = table["entries"].get((country or "").upper())
    if entry is None:
        fallback = table["fallback"]
        return CrisisLines(None, fallback["emergency"], tuple(fallback["lines"]), True)
    return CrisisLines(country, entry["emergency"], tuple(entry["lines"]), False)
