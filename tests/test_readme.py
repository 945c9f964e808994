"""The README is the front door: its settings table names every setting Haven reads."""

from __future__ import annotations

import re

from bot.settings import PROJECT_ROOT, Settings


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    # The first cell of each row names one or more settings.
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "".join(first_cells)))
    settings = {name.upper() for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from the README's table"
    assert documented - settings == set(), "the README's table names settings that do not exist"


def test_the_deployment_files_it_names_exist() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    for path in re.findall(r"`((?:deploy|tests|bench)/[\w./]+\.(?:conf|py))`", readme):
        assert (PROJECT_ROOT / path).exists(), path
