"""The table of crisis lines by country (bot/data/crisis_lines.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from bot.yaml_files import read_yaml

TABLE = Path(__file__).resolve().parent / "data" / "crisis_lines.yaml"


@dataclass(frozen=True)
class CrisisLines:
    country: str | None
    emergency: str
    lines: tuple[dict[str, Any], ...]
    fallback: bool


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    data: dict[str, Any] = read_yaml(TABLE)
    return data


def lines_for(country: str | None, topic: str | None = None) -> CrisisLines:
    """The lines for `country` (those for `topic` first), or the international fallback.

    Never another country's numbers: a US number is no help in France.
    """
    table = _table()
    entry = table["entries"].get((country or "").upper())
    fallback = entry is None
    if entry is None:
        entry, country = table["fallback"], None
    lines: list[dict[str, Any]] = [
        {key: str(value) for key, value in line.items() if key != "topics"}
             | {"for_this": topic in line.get("topics", [])}
        for line in entry["lines"]
    ]
    if topic is not None:
        lines.sort(key=lambda line: not line["for_this"])
    return CrisisLines(country, entry["emergency"], tuple(lines), fallback)
