"""Render prompts: one Jinja2 environment, strict about unknown names, HTML-escaped output.

Templates live in `prompts/<locale>/`; a locale missing a file falls back to the
default locale's. A line holding only `---` splits one template into several chat
messages.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import (
    BytecodeCache,
    Environment,
    FileSystemBytecodeCache,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
)
from jinja2.bccache import Bucket

from bot.i18n import Translations

log = logging.getLogger(__name__)

MESSAGE_SPLIT = re.compile(r"^\s*---\s*$", re.MULTILINE)
_current_locale: contextvars.ContextVar[str] = contextvars.ContextVar("locale", default="en")


def excerpt(text: Any, limit: int = 500) -> str:
    """The start of a long answer, cut at a word boundary, with an ellipsis."""
    value = str(text).strip()
    if len(value) <= limit:
        return value
    cut = value[:limit].rsplit(None, 1)[0] if " " in value[:limit] else value[:limit]
    return cut.rstrip(",.;:-") + "…"


class _Environment(Environment):
    """Jinja's environment, reading `entry.name` from a dict by key first.

    Jinja tries the attribute first and falls back to the key, so on the dicts turns hand
    to templates every `entry.name` raised and caught an AttributeError: most of the cost
    of a template such as the menu's. A dict's own methods (`entry.items()`) still work,
    unless the dict has a key of that name: the flow loader refuses answers named after
    one (`answers` is the dict templates are given whose keys come from content).
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


class _DiskCache(FileSystemBytecodeCache):
    """Jinja's cache of compiled templates on disk, keyed by each source's checksum, in a
    directory of this user's under the system's temporary directory. Compiling every
    template again was a third of a second of each start. A cache that cannot be written
    (a full or read-only disk) is only a slower start."""

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            log.debug("a compiled template could not be cached on disk", exc_info=True)


def _disk_cache() -> BytecodeCache | None:
    try:
        return _DiskCache()
    except (OSError, RuntimeError):  # no safe directory of our own could be made
        log.debug("compiled templates are not cached on disk", exc_info=True)
        return None


class Renderer:
    def __init__(self, prompts_dir: Path, translations: Translations) -> None:
        self.prompts_dir = prompts_dir
        self.translations = translations
        self.default_locale = translations.default_locale
        self.env = _Environment(
            loader=FileSystemLoader(str(prompts_dir)),
            # Chat messages are Telegram HTML; exports (*.md.j2) are Markdown and not escaped.
            autoescape=lambda name: not (name or "").endswith(".md.j2"),
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            cache_size=-1,  # compile each template once, keep it for the life of the process
            auto_reload=False,
            bytecode_cache=_disk_cache(),
        )
        self.env.install_gettext_callables(  # type: ignore[attr-defined]
            gettext=self._gettext, ngettext=self._ngettext, newstyle=True
        )
        self.env.globals["excerpt"] = excerpt
        self._templates: dict[tuple[str, str], Template] = {}

    @property
    def cache_directory(self) -> str | None:
        """Where compiled templates are kept on disk (None: they are not)."""
        cache = self.env.bytecode_cache
        return cache.directory if isinstance(cache, FileSystemBytecodeCache) else None

    @property
    def locales(self) -> list[str]:
        """Every locale with templates or a catalog (the default locale among them)."""
        return self.translations.locales

    def template_exists(self, name: str, locale: str | None = None) -> bool:
        return (self.prompts_dir / (locale or self.default_locale) / name).is_file()

    def render(self, name: str, locale: str, context: Mapping[str, Any]) -> list[str]:
        """Render template `name` for `locale`; returns the chat messages it makes."""
        parts = [part.strip()
                 for part in MESSAGE_SPLIT.split(self.render_plain(name, locale, context))]
        return [part for part in parts if part]

    def template(self, name: str, locale: str) -> Template:
        """The locale's template, else the default locale's; looked up once per pair."""
        template = self._templates.get((locale, name))
        if template is None:
            candidates = [f"{locale}/{name}", f"{self.default_locale}/{name}"]
            try:
                template = self.env.select_template(candidates)
            except TemplateNotFound as error:
                raise TemplateNotFound(f"{name} (for locale {locale})") from error
            # Jinja keeps a template's globals as a ChainMap over the environment's, and
            # copies them into every render's context key by key; the globals are all set
            # by now, so one plain dict copies in a single step (about a tenth of a render).
            template.globals = dict(template.globals)
            self._templates[(locale, name)] = template
        return template

    def render_plain(self, name: str, locale: str, context: Mapping[str, Any]) -> str:
        """Render a template that is not a chat message (e.g. a Markdown export) as one text."""
        template = self.template(name, locale)
        token = _current_locale.set(locale)
        try:
            return template.render(**context)
        finally:
            _current_locale.reset(token)

    def gettext(self, locale: str, message: str) -> str:
        return self.translations.gettext(locale, message)

    # Jinja's new-style gettext wraps these: it escapes and fills in %(name)s itself.
    def _gettext(self, message: str) -> str:
        return self.translations.gettext(_current_locale.get(), message)

    def _ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.for_locale(_current_locale.get()).ngettext(singular, plural, n)
