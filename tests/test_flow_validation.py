"""The flow loader: every real flow is valid, and each kind of mistake is refused by name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from transitions import MachineError

from bot.app import Content, load_content
from bot.flows.loader import FlowError
from bot.flows.machine import ANSWER, SKIP, pick
from bot.settings import PROJECT_ROOT

GOOD = """
name: demo
command: demo
title: Demo
start: ask
steps:
  ask:
    expects: choice
    choices:
      - {value: go, label: Go, next: write}
      - {value: stop, label: Stop, next: bye}
  write:
    expects: text
    answer: note
    skippable: true
    next: bye
  bye:
    end: true
"""


def make_flow(tmp_path: Path, yaml_text: str, templates: dict[str, str] | None = None) -> Path:
    dialogs = tmp_path / "dialogs"
    prompts = tmp_path / "prompts" / "en" / "demo"
    dialogs.mkdir()
    prompts.mkdir(parents=True)
    (dialogs / "demo.yaml").write_text(textwrap.dedent(yaml_text))
    for step, body in (templates or {"ask": "Go?", "write": "Write.", "bye": "Bye."}).items():
        (prompts / f"{step}.j2").write_text(body)
    for shared in ("system", "daily"):
        (prompts.parent / shared).symlink_to(PROJECT_ROOT / "prompts" / "en" / shared)
    return tmp_path


def load(root: Path) -> Content:
    return load_content(root / "dialogs", root / "prompts")


def test_every_shipped_flow_is_valid(content: Content) -> None:
    assert {"onboarding", "self_awareness", "settings"} <= set(content.flows)
    for flow in content.flows.values():
        assert flow.start in flow.steps
        assert any(step.end for step in flow.steps.values()), f"{flow.name} never ends"


def test_the_self_awareness_flow_has_the_articles_five_reflections(content: Content) -> None:
    flow = content.flows["self_awareness"]
    kept = [step.answer for step in flow.steps.values() if step.keep]
    assert kept == ["triggers", "past", "boundaries", "stress", "impact"]
    assert all(flow.steps[name].skippable for name in kept)


def test_a_good_flow_loads_and_its_machine_moves(tmp_path: Path) -> None:
    content = load(make_flow(tmp_path, GOOD))
    machine = content.machines["demo"]
    assert machine.advance("ask", pick("go")) == "write"
    assert machine.advance("ask", pick("stop")) == "bye"
    assert machine.advance("write", ANSWER) == "bye"
    assert machine.advance("write", SKIP) == "bye"


def test_a_machine_answers_the_same_the_second_time_and_still_refuses_a_missing_edge(
    tmp_path: Path,
) -> None:
    machine = load(make_flow(tmp_path, GOOD)).machines["demo"]
    for _ in range(2):  # the second time from what was remembered
        assert machine.advance("ask", pick("go")) == "write"
        assert machine.advance("ask", pick("stop")) == "bye"
        assert machine.advance("write", ANSWER) == "bye"
        for step, event in [("ask", ANSWER), ("bye", SKIP), ("write", "no_such_event")]:
            with pytest.raises(MachineError):
                machine.advance(step, event)


@pytest.mark.parametrize(
    ("change", "templates", "expected"),
    [
        (("next: bye\n  bye:", "next: nowhere\n  bye:"), None,
         "step 'write': leads to an unknown step 'nowhere'"),
        (("  bye:\n    end: true", "  bye:\n    end: true\n  lost:\n    end: true"),
         {"ask": "Go?", "write": "Write.", "bye": "Bye.", "lost": "Lost."},
         "step 'lost': cannot be reached"),
        (("    skippable: true\n    next: bye\n", "    skippable: true\n"), None,
         "step 'write': is a dead end"),
        (("expects: text", "expects: poem"), None, "step 'write': expects 'poem' is not one of"),
        (("answer: note", "answer: note\n    profile: shoe_size"), None,
         "step 'write': profile 'shoe_size'"),
        (None, {"ask": "Go?", "bye": "Bye."}, "step 'write': no template"),
        (None, {"ask": "Go?", "write": "{{ nonsense.field }}", "bye": "Bye."},
         "step 'write': template does not render"),
        (None, {"ask": "Go?", "write": "{% if %}", "bye": "Bye."},
         "step 'write': template does not render"),
        (None, {"ask": "Go?", "write": "{% if true %}One.{% endif %}\n---\nTwo.", "bye": "Bye."},
         "step 'write': template does not render: renders to an empty message, or a ---"),
        (("name: demo", "name: other"), None, "name should be 'demo'"),
        (("answer: note", "answer: items"), None,
         "step 'write': answer name 'items' is the name of a dict method"),
        (("  bye:\n    end: true", "  bye:\n    end: true\n    next: ask"), None,
         "step 'bye': an end step cannot"),
    ],
)
def test_mistakes_are_refused_with_file_and_step(
    tmp_path: Path, change: tuple[str, str] | None, templates: dict[str, str] | None,
    expected: str
) -> None:
    text = GOOD if change is None else GOOD.replace(*change)
    assert change is None or text != GOOD, "the test's replacement did not apply"
    with pytest.raises(FlowError) as raised:
        load(make_flow(tmp_path, text, templates))
    assert "dialogs/demo.yaml" in str(raised.value)
    assert expected in str(raised.value)


def test_the_check_command_reports_valid_flows(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.__main__ import main

    assert main(["check"]) == 0
    assert "all valid" in capsys.readouterr().out


def test_shipped_templates_are_real_files() -> None:
    assert (PROJECT_ROOT / "prompts" / "en" / "system" / "help.j2").is_file()
