"""Remembering that content passed its render check, so that a restart with the very same
content and code does not render every template again.

The check (bot.flows.samples) renders every template with sample values, and compiles
every crisis rule (bot.app), so that broken content is refused at start-up, not in front
of a person. Its outcome depends only on the content's files and Haven's code (the crisis
phrases among it); so a fingerprint of both is written once the check has passed, beside
the compiled templates (bot.rendering's disk cache, a directory of this user's), and a
start that finds it skips the check. Any change to a file, or a directory that cannot be
written, means the check runs as before. It was a seventh of a second of each start.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from collections.abc import Iterable
from pathlib import Path

import babel
import jinja2

log = logging.getLogger(__name__)

CODE_DIR = Path(__file__).resolve().parent  # the package: templates' filters, samples...


def fingerprint(content_dirs: Iterable[Path], default_locale: str) -> str:
    """A digest of every file under `content_dirs` and of Haven's code, names included,
    with the versions of what renders them."""
    versions = f"{platform.python_version()} {jinja2.__version__} {babel.__version__}"
    digest = hashlib.sha256(f"{versions} {default_locale}\n".encode())
    for root in [*content_dirs, CODE_DIR]:
        files = sorted(path for path in root.rglob("*") if path.is_file()
                       and "__pycache__" not in path.parts and path.suffix != ".pyc")
        for path in files:
            digest.update(f"{path.relative_to(root.parent)}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _marker(directory: str | None, print_: str) -> Path | None:
    return Path(directory) / f"haven-content-checked-{print_}" if directory else None


def checked_before(directory: str | None, print_: str) -> bool:
    marker = _marker(directory, print_)
    return marker is not None and marker.is_file()


def remember_checked(directory: str | None, print_: str) -> None:
    marker = _marker(directory, print_)
    if marker is None:
        return
    try:
        marker.touch()
    except OSError:
        log.debug("could not note that the content passed its check", exc_info=True)
