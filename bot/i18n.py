"""Interface strings through gettext, one catalog per locale under `bot/locale/`.

Catalogs are kept as `.po` text in the repository and compiled in memory at
start-up, so there is no build step and no binary file to forget.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Iterable
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"


def N_(message: str) -> str:
    """Mark a string for extraction; it is translated later, where the locale is known."""
    return message


class Translations:
    """Every available catalog, with English (the msgids themselves) as the fallback."""

    def __init__(self, default_locale: str = "en", extra_locales: Iterable[str] = (),
                 locale_dir: Path = LOCALE_DIR) -> None:
        self.default_locale = default_locale
        self._catalogs: dict[str, gettext.NullTranslations] = {}
        self._untranslated = gettext.NullTranslations()  # the msgids as they are
        if locale_dir.is_dir():
            for po_path in sorted(locale_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
                locale = po_path.parent.parent.name
                self._catalogs[locale] = _compile(po_path)
        self.locales = sorted({default_locale, *self._catalogs, *extra_locales})

    def for_locale(self, locale: str) -> gettext.NullTranslations:
        return self._catalogs.get(locale) or self._untranslated

    def gettext(self, locale: str, message: str) -> str:
        return self.for_locale(locale).gettext(message)

    def pick(self, language_code: str | None) -> str:
        """The best available locale for Telegram's `language_code` (e.g. 'pt-br' -> 'pt')."""
        if language_code:
            code = language_code.replace("-", "_").lower()
            for candidate in (code, code.split("_")[0]):
                for locale in self.locales:
                    if locale.lower() == candidate:
                        return locale
        return self.default_locale


def locale_display_name(locale: str) -> str:
    """A language's own name for itself, e.g. 'Deutsch' for 'de'."""
    try:
        name = Locale.parse(locale).get_display_name(locale)
    except (UnknownLocaleError, ValueError):
        return locale
    return (name or locale)[:1].upper() + (name or locale)[1:]


def _compile(po_path: Path) -> gettext.NullTranslations:
    with po_path.open("rb") as handle:
        catalog = read_po(handle)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)
