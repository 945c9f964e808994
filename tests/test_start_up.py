"""What keeps start-up short changes nothing a person sees: YAML read by PyYAML's C parser
gives the same data; crisis rules compiled on first use match as before and still refuse
a capturing group; templates compiled from Jinja's disk cache render the same text, and
a cache that cannot be written only costs time."""

from __future__ import annotations

import gc
import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import FileSystemBytecodeCache

from bot import app, rendering
from bot.crisis.detector import Category, CrisisDetector, Rules
from bot.flows.loader import FlowError
from bot.i18n import Translations
from bot.rendering import Renderer
from bot.yaml_files import load_yaml

ROOT = Path(__file__).resolve().parent.parent
YAML_FILES = sorted(itertools.chain(
    ROOT.glob("dialogs/*.yaml"), ROOT.glob("prompts/**/*.yaml"), ROOT.glob("bot/**/*.yaml"),
    ROOT.glob("tests/data/*.yaml")))


def test_there_are_yaml_files_to_compare() -> None:
    assert len(YAML_FILES) >= 15


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_yaml_read_in_c_is_the_same_data(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert load_yaml(text) == yaml.safe_load(text)


def test_broken_yaml_is_still_a_yaml_error() -> None:
    with pytest.raises(yaml.YAMLError):
        load_yaml("steps:\n  - a\n b: [")
    with pytest.raises(yaml.YAMLError):  # safe: no Python objects
        load_yaml("!!python/object/apply:os.system ['true']")


def test_a_crisis_rule_is_compiled_the_first_time_it_may_match() -> None:
    detector = CrisisDetector()
    rules: Any = detector.rules
    assert rules._compiled == {}
    ordinary = detector.detect("We had a nice walk and talked about the weekend.")
    assert ordinary is None
    few = len(rules._compiled)
    match = detector.detect("I want to end my life tonight")
    assert match is not None and match.category is Category.SELF_HARM
    assert few < len(rules._compiled) < len(rules)
    assert len(rules.compiled()) == len(rules) == len(rules._compiled)


def test_a_rule_with_a_capturing_group_is_refused() -> None:
    rules = Rules([(Category.SELF_HARM, "sh.grouped", r"end (my|this) life")])
    with pytest.raises(ValueError, match="capturing group.*sh.grouped"):
        rules.compiled()


def renderer_caching_in(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Renderer:
    monkeypatch.setattr(rendering, "_disk_cache", lambda: rendering._DiskCache(str(directory)))
    return Renderer(ROOT / "prompts", Translations("en", ["en"]))


def test_templates_compiled_once_are_read_back_from_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = renderer_caching_in(tmp_path, monkeypatch).render("system/deleted.j2", "en", {})
    assert list(tmp_path.iterdir()), "the compiled template was kept on disk"

    def no_compiling(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(rendering._Environment, "compile", no_compiling)
    again = renderer_caching_in(tmp_path, monkeypatch).render("system/deleted.j2", "en", {})
    assert again == first and first


def test_a_cache_that_cannot_be_written_only_costs_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = renderer_caching_in(tmp_path / "a", monkeypatch)
    expected = renderer.render("system/deleted.j2", "en", {})

    def disk_full(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileSystemBytecodeCache, "dump_bytecode", disk_full)
    renderer = renderer_caching_in(tmp_path / "b", monkeypatch)
    assert renderer.render("system/deleted.j2", "en", {}) == expected


def test_no_safe_cache_directory_means_no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsafe(_self: Any, *_args: Any) -> None:
        raise RuntimeError("Cannot determine safe temp directory.")

    monkeypatch.setattr(FileSystemBytecodeCache, "__init__", unsafe)
    renderer = Renderer(ROOT / "prompts", Translations("en", ["en"]))
    assert renderer.env.bytecode_cache is None
    assert renderer.render("system/deleted.j2", "en", {})


def content_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Haven's dialogs and prompts copied under `tmp_path`, with compiled templates (and
    the note of a passed check) kept in a cache directory there too."""
    (tmp_path / "cache").mkdir()
    monkeypatch.setattr(rendering, "_disk_cache",
                        lambda: rendering._DiskCache(str(tmp_path / "cache")))
    shutil.copytree(ROOT / "dialogs", tmp_path / "dialogs")
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    return tmp_path / "dialogs", tmp_path / "prompts"


def counting_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    checked: list[str] = []
    real = app.render_errors

    def render_errors(renderer: Any, flow: Any, locale: str) -> Any:
        checked.append(flow.name)
        return real(renderer, flow, locale)

    monkeypatch.setattr(app, "render_errors", render_errors)
    return checked


def test_unchanged_content_is_not_render_checked_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dialogs, prompts = content_copy(tmp_path, monkeypatch)
    checked = counting_checks(monkeypatch)
    first = app.load_content(dialogs, prompts)
    assert len(checked) == len(first.flows) > 5
    again = app.load_content(dialogs, prompts)
    assert len(checked) == len(first.flows)  # not checked again
    assert again.flows.keys() == first.flows.keys()
    assert again.renderer.render("system/deleted.j2", "en", {}) == \
        first.renderer.render("system/deleted.j2", "en", {})
    help_text = prompts / "en" / "system" / "help.j2"
    help_text.write_text(help_text.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    app.load_content(dialogs, prompts)
    assert len(checked) == 2 * len(first.flows)  # a changed file: checked again


def test_content_that_fails_its_check_is_refused_at_every_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dialogs, prompts = content_copy(tmp_path, monkeypatch)
    menu = prompts / "en" / "system" / "menu.j2"
    menu.write_text("{{ flows | no_such_filter }}", encoding="utf-8")
    for _ in range(2):
        with pytest.raises(FlowError, match="menu.j2"):
            app.load_content(dialogs, prompts)


def test_phrases_edited_since_the_anchors_are_compiled_whole_at_start_up(
        tmp_path: Path) -> None:
    phrases = tmp_path / "phrases.yaml"
    text = (ROOT / "bot" / "crisis" / "phrases.yaml").read_text(encoding="utf-8")
    phrases.write_text(text, encoding="utf-8")  # no anchors.json beside it
    rules: Any = CrisisDetector(phrases).rules
    assert len(rules._compiled) == len(rules)
    broken = text.replace("pattern: 'kms|kmsl|kys myself'", "pattern: 'kms|(kmsl)|kys myself'")
    assert broken != text
    phrases.write_text(broken, encoding="utf-8")
    with pytest.raises(ValueError, match="capturing group.*sh.kms"):
        CrisisDetector(phrases)


def test_a_crisis_rule_that_cannot_compile_stops_the_first_start_of_new_content(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Phrases and anchors rewritten together, so the detector itself compiles nothing
    # at start-up: the content check, new for this code, compiles every rule.
    detector = CrisisDetector()
    detector.rules = Rules([(Category.SELF_HARM, "sh.fine", r"end it all"),
                            (Category.SELF_HARM, "sh.broken", r"end (?:it all")])
    monkeypatch.setattr(app, "default_detector", lambda: detector)
    dialogs, prompts = content_copy(tmp_path, monkeypatch)
    for _ in range(2):  # never noted as checked
        with pytest.raises(FlowError, match="phrases.yaml: a crisis rule does not compile"):
            app.load_content(dialogs, prompts)


def test_unchanged_content_leaves_the_crisis_rules_to_their_first_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dialogs, prompts = content_copy(tmp_path, monkeypatch)
    first = CrisisDetector()
    monkeypatch.setattr(app, "default_detector", lambda: first)
    app.load_content(dialogs, prompts)
    compiled: Any = first.rules
    assert len(compiled._compiled) == len(compiled)  # new content: every rule compiled
    later = CrisisDetector()
    monkeypatch.setattr(app, "default_detector", lambda: later)
    app.load_content(dialogs, prompts)
    lazy: Any = later.rules
    assert lazy._compiled == {}


def test_once_built_start_up_objects_are_frozen_and_collection_runs_less_often() -> None:
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    gc.disable()  # as python -m bot starts
    try:
        app.built()
        assert gc.isenabled()
        assert gc.get_threshold() == app.COLLECTION_THRESHOLDS
        assert app.COLLECTION_THRESHOLDS[0] > 700  # above Python's own
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        (gc.enable if enabled else gc.disable)()
