"""Every template and interface string renders in every locale; a missing file falls back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.adapters.console import ConsoleChat
from bot.app import Content, load_content
from bot.flows.samples import render_errors, system_render_errors
from bot.settings import PROJECT_ROOT
from bot.storage.repository import Repository
from tests.helpers import Reader, labels, make_engine, texts

FRENCH_PO = '''
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"

msgid "Skip"
msgstr "Passer"

msgid "Sounds good"
msgstr "D'accord"
'''


def test_every_template_renders_in_every_locale(content: Content) -> None:
    renderer = content.renderer
    assert "en" in renderer.locales
    for locale in renderer.locales:
        for flow in content.flows.values():
            assert list(render_errors(renderer, flow, locale)) == [], (locale, flow.name)
        assert list(system_render_errors(renderer, locale)) == [], locale


@pytest.fixture
def with_second_locale(tmp_path: Path) -> Content:
    """A partial French translation: one template and two interface strings."""
    prompts = tmp_path / "prompts"
    shutil.copytree(PROJECT_ROOT / "prompts", prompts)
    (prompts / "fr" / "onboarding").mkdir(parents=True)
    (prompts / "fr" / "onboarding" / "welcome.j2").write_text("Bonjour, je suis Haven.")
    catalog = tmp_path / "locale" / "fr" / "LC_MESSAGES"
    catalog.mkdir(parents=True)
    (catalog / "messages.po").write_text(FRENCH_PO, encoding="utf-8")
    return load_content(PROJECT_ROOT / "dialogs", prompts, locale_dir=tmp_path / "locale")


async def test_a_partial_translation_falls_back_to_english(
    with_second_locale: Content, repository: Repository
) -> None:
    content = with_second_locale
    assert content.renderer.locales == ["en", "fr"]
    for flow in content.flows.values():
        assert list(render_errors(content.renderer, flow, "fr")) == []
    engine = make_engine(content, repository)
    chat = ConsoleChat(engine, user_id=77, first_name="Camille", language_code="fr-FR")
    reply = await chat.send("/start")
    assert texts(reply) == "Bonjour, je suis Haven."
    assert labels(reply) == ["D'accord", "Tell me more"]
    reply = await chat.send("D'accord")  # typing a translated label works too
    assert "keep your reflections" in texts(reply), "untranslated templates fall back"
    user = await Reader(repository).find_user(77)
    assert user is not None and user.language == "fr"


def test_unknown_language_codes_fall_back_to_english(content: Content) -> None:
    translations = content.renderer.translations
    assert translations.pick("pt-br") == "en"
    assert translations.pick(None) == "en"
    assert translations.pick("EN-gb") == "en"


def test_the_checked_in_catalog_is_current(tmp_path: Path) -> None:
    """`make extract-messages` was run after the last change to an interface string."""
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg",
         "-k", "N_", "--sort-output", "--no-location", "--omit-header", "-o", str(fresh), "."],
        cwd=PROJECT_ROOT, check=True, capture_output=True,
    )
    checked_in = (PROJECT_ROOT / "bot" / "locale" / "messages.pot").read_text()
    assert fresh.read_text() == checked_in, "run `make extract-messages` and commit the result"
