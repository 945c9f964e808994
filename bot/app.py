"""Putting Haven together: flows, templates, storage and the engine, from the settings."""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from pathlib import Path

from bot.actions import ACTIONS
from bot.content_check import checked_before, fingerprint, remember_checked
from bot.crisis.detector import default_detector
from bot.daily import PromptLibrary
from bot.drawing import ProcessDrawer
from bot.engine import Engine, EngineConfig
from bot.flood import FloodGuard
from bot.flows.loader import FlowError, load_flows
from bot.flows.machine import FlowMachine, build_machines
from bot.flows.samples import render_errors, system_render_errors
from bot.flows.spec import Flow
from bot.i18n import LOCALE_DIR, Translations
from bot.rendering import Renderer
from bot.settings import Settings
from bot.storage.crypto import cipher_from
from bot.storage.repository import Repository, open_repository


@dataclass
class Content:
    flows: dict[str, Flow]
    machines: dict[str, FlowMachine]
    renderer: Renderer
    daily: PromptLibrary


def load_content(
    dialogs_dir: Path, prompts_dir: Path, default_locale: str = "en",
    locale_dir: Path = LOCALE_DIR,
) -> Content:
    """Load and validate every flow and render every template once (raises FlowError)."""
    prompt_locales = [path.name for path in prompts_dir.iterdir() if path.is_dir()]
    translations = Translations(default_locale, prompt_locales, locale_dir)
    renderer = Renderer(prompts_dir, translations)
    # The render check is skipped when this very content and code passed it before.
    cache = renderer.cache_directory
    content_print = (fingerprint([dialogs_dir, prompts_dir, locale_dir], default_locale)
                     if cache else "")
    checked = checked_before(cache, content_print)
    flows = load_flows(
        dialogs_dir,
        template_exists=renderer.template_exists,
        render_check=None if checked else (
            lambda flow: render_errors(renderer, flow, default_locale)),
        actions=ACTIONS,
    )
    if not checked:
        broken = [f"prompts/{default_locale}/{template}: does not render: {error}"
                  for template, error in system_render_errors(renderer, default_locale)]
        broken += crisis_rule_errors()
        if broken:
            raise FlowError("\n".join(broken))
        remember_checked(cache, content_print)
    daily = PromptLibrary.load(prompts_dir / default_locale / "daily" / "prompts.yaml")
    return Content(flows=flows, machines=build_machines(flows), renderer=renderer, daily=daily)


def crisis_rule_errors() -> list[str]:
    """Every crisis rule compiled now, or why one cannot be. Rules are otherwise compiled
    the first time a message may match them, and one that cannot be would fail the crisis
    check of that message; the phrases are part of what the check's fingerprint covers,
    so every changed version of them is compiled whole once, at start-up."""
    try:
        default_detector().rules.compiled()
    except (re.error, ValueError) as error:
        return [f"bot/crisis/phrases.yaml: a crisis rule does not compile: {error}"]
    return []


async def open_settings_repository(settings: Settings) -> Repository:
    """The configured database, its schema brought up to date."""
    repository = open_repository(settings.effective_database_url,
                                 cipher_from(settings.encryption_keys()))
    await repository.migrate()
    return repository


async def build_engine(settings: Settings) -> Engine:
    content = load_content(settings.haven_dialogs_dir, settings.haven_prompts_dir,
                           settings.haven_default_locale)
    repository = await open_settings_repository(settings)
    return Engine(content.flows, content.machines, content.renderer, repository,
                  EngineConfig(max_answer_chars=settings.haven_max_answer_chars),
                  flood=FloodGuard(settings.haven_flood_burst,
                                   settings.haven_flood_period_seconds),
                  daily=content.daily, drawer=ProcessDrawer())


# The cycle collector's thresholds once the bot runs (Python's own: 700, 10, 10). A turn
# makes and drops a few hundred objects, nearly none of them in cycles, so at 700 the
# youngest generation was searched every two or three turns, and the oldest (10-12 ms a
# time) several times a minute under load: about 4% of a PostgreSQL turn's CPU, for
# garbage that reference counting had already freed. At 20,000 a search takes about 5 ms.
COLLECTION_THRESHOLDS = (20_000, 20, 20)


def built() -> None:
    """Start-up is over: what it built stays for good, so the collector need not look at it
    again (gc.freeze), and collection starts (see bot.__main__), less often than Python's
    default (COLLECTION_THRESHOLDS)."""
    gc.freeze()
    gc.set_threshold(*COLLECTION_THRESHOLDS)
    gc.enable()
