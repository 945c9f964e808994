"""Babel extractor for the interface strings in `dialogs/*.yaml` (titles and button labels)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

import yaml

Extracted = tuple[int, str, str, list[str]]


def extract_dialogs(
    fileobj: IO[bytes], keywords: Any, comment_tags: Any, options: Any
) -> Iterator[Extracted]:
    data = yaml.safe_load(fileobj.read().decode("utf-8")) or {}
    for key in ("title", "description"):
        if data.get(key):
            yield 0, "gettext", str(data[key]), []
    for step in (data.get("steps") or {}).values():
        if (step or {}).get("label"):
            yield 0, "gettext", str(step["label"]), []
        for choice in (step or {}).get("choices") or []:
            if isinstance(choice, dict) and choice.get("label"):
                yield 0, "gettext", str(choice["label"]), []
