"""Reading Haven's YAML files (flows, prompts, crisis phrases, rules) as plain data.

PyYAML's parser written in C (libyaml, in PyYAML's wheels) reads them about ten times
faster than its pure-Python one, which took a tenth of a second of each start. Both give
the same data, and the same `yaml.YAMLError` for a broken file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """What `yaml.safe_load(text)` gives, parsed in C where PyYAML has it."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader, C or Python


def read_yaml(path: Path) -> Any:
    return load_yaml(path.read_text(encoding="utf-8"))
