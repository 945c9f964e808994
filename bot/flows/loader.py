"""Load `dialogs/*.yaml` into `Flow` objects and refuse any flow that could strand a user.

Every problem is reported with the file and the step it is in, all at once, so a
content change fails loudly at start-up (and in the tests) rather than mid-conversation.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from bot.answers import normalise
from bot.flows.spec import PROFILE_FIELDS, CheckBack, Choice, Expects, Flow, Route, Step
from bot.yaml_files import read_yaml

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,19}$")
DICT_METHODS = frozenset(name for name in dir(dict) if not name.startswith("_"))
STEP_KEYS = {
    "template", "expects", "choices", "scale", "answer", "label", "keep", "profile",
    "skippable", "next", "end", "after", "routes", "action", "check_back",
}
CHECK_BACK_KEYS = {"wait_at", "template", "start"}
DELAY = re.compile(r"^([mhd])(\d{1,3})$")
FLOW_KEYS = {"name", "command", "title", "description", "in_menu", "order", "start", "steps"}
AFTER_VALUES = {"menu"}


class FlowError(Exception):
    """A flow file that cannot be used; the message lists every problem found."""


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, source: str, step: str | None, message: str) -> None:
        where = f"{source}, step '{step}'" if step else source
        self.lines.append(f"{where}: {message}")


def delay_of(answer: object) -> tuple[str, int] | None:
    """A check-back delay chosen as an answer: "m20" -> ("m", 20); None for anything else."""
    match = DELAY.match(answer) if isinstance(answer, str) else None
    return (match[1], int(match[2])) if match and int(match[2]) > 0 else None


def load_flows(
    dialogs_dir: Path,
    template_exists: Callable[[str], bool],
    render_check: Callable[[Flow], Iterable[tuple[str, str]]] | None = None,
    actions: Iterable[str] = (),
) -> dict[str, Flow]:
    """Load and validate every flow in `dialogs_dir`, keyed by flow name.

    `template_exists` says whether a template path exists for the default locale;
    `render_check` renders a flow's templates with sample context and yields
    (step, error) pairs for those that fail.
    """
    problems = _Problems()
    flows: dict[str, Flow] = {}
    files = sorted(dialogs_dir.glob("*.yaml"))
    if not files:
        raise FlowError(f"{dialogs_dir}: no flow files (*.yaml) found")
    for path in files:
        flow = _load_file(path, problems)
        if flow is None:
            continue
        _check_flow(flow, template_exists, problems, set(actions))
        if flow.name in flows:
            problems.add(flow.source, None, f"another file already defines flow '{flow.name}'")
        flows[flow.name] = flow
    commands: dict[str, str] = {}
    for flow in flows.values():
        if flow.command and flow.command in commands:
            problems.add(flow.source, None,
                         f"command /{flow.command} is also used by {commands[flow.command]}")
        if flow.command:
            commands[flow.command] = flow.source
        for spec in flow.steps.values():
            start = spec.check_back.start if spec.check_back else None
            if start is not None and start not in flows:
                problems.add(flow.source, spec.name, f"check_back starts an unknown flow '{start}'")
    if not problems.lines and render_check is not None:
        for flow in flows.values():
            for step, error in render_check(flow):
                problems.add(flow.source, step, f"template does not render: {error}")
    if problems.lines:
        raise FlowError("\n".join(problems.lines))
    return dict(sorted(flows.items(), key=lambda item: (item[1].order, item[0])))


def _load_file(path: Path, problems: _Problems) -> Flow | None:
    source = f"dialogs/{path.name}"
    try:
        data = read_yaml(path)
    except yaml.YAMLError as error:
        problems.add(source, None, f"is not valid YAML: {error}")
        return None
    if not isinstance(data, dict):
        problems.add(source, None, "should be a mapping with name, start and steps")
        return None
    for key in sorted(set(data) - FLOW_KEYS):
        problems.add(source, None, f"unknown key '{key}'")
    name = data.get("name")
    if name != path.stem:
        problems.add(source, None, f"name should be '{path.stem}' (the file name), not {name!r}")
        return None
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        problems.add(source, None, "has no steps")
        return None
    steps: dict[str, Step] = {}
    for step_name, raw in raw_steps.items():
        step = _load_step(source, str(name), str(step_name), raw, problems)
        if step is not None:
            steps[step.name] = step
    start = data.get("start")
    if start not in raw_steps:
        problems.add(source, None, f"start names an unknown step {start!r}")
        return None
    command = data.get("command")
    if command is not None and not (isinstance(command, str) and NAME_PATTERN.match(command)):
        problems.add(source, None, f"command {command!r} should be lowercase letters and digits")
        command = None
    return Flow(
        name=name, source=source, start=str(start), steps=steps, command=command,
        title=str(data.get("title") or name), description=str(data.get("description") or ""),
        in_menu=bool(data.get("in_menu", True)), order=int(data.get("order", 100)),
    )


def _load_step(source: str, flow: str, name: str, raw: Any, problems: _Problems) -> Step | None:
    if not NAME_PATTERN.match(name):
        problems.add(source, name, "step names are lowercase letters, digits and _ (at most 20)")
        return None
    if not isinstance(raw, dict):
        problems.add(source, name, "should be a mapping")
        return None
    for key in sorted(set(raw) - STEP_KEYS):
        problems.add(source, name, f"unknown key '{key}'")
    end = bool(raw.get("end", False))
    expects_raw = raw.get("expects", "nothing" if end else None)
    try:
        expects = Expects(str(expects_raw))
    except ValueError:
        known = ", ".join(e.value for e in Expects if e is not Expects.NOTHING)
        problems.add(source, name, f"expects {expects_raw!r} is not one of: {known}")
        return None
    choices = _load_choices(source, name, raw.get("choices") or [], problems)
    scale = raw.get("scale") or {}
    low, high = int(scale.get("min", 1)), int(scale.get("max", 5))
    if not low < high <= low + 10:
        problems.add(source, name, "scale needs min < max, with at most 11 points")
    profile = raw.get("profile")
    if profile is not None and profile not in PROFILE_FIELDS:
        problems.add(source, name, f"profile {profile!r} is not one of {sorted(PROFILE_FIELDS)}")
    after = raw.get("after")
    if after is not None and after not in AFTER_VALUES:
        problems.add(source, name, f"after {after!r} is not one of {sorted(AFTER_VALUES)}")
    return Step(
        routes=_load_routes(source, name, raw.get("routes") or [], problems),
        action=str(raw["action"]) if raw.get("action") is not None else None,
        check_back=_load_check_back(source, name, raw.get("check_back"), problems),
        name=name,
        template=str(raw.get("template") or f"{flow}/{name}.j2"),
        expects=expects,
        choices=choices,
        scale=(low, high),
        scale_labels={int(k): str(v) for k, v in (scale.get("labels") or {}).items()},
        answer=raw.get("answer"),
        label=str(raw.get("label") or ""),
        keep=bool(raw.get("keep", False)),
        profile=profile,
        skippable=bool(raw.get("skippable", False)),
        next=raw.get("next"),
        end=end,
        after=after,
    )


def _load_choices(source: str, step: str, raw: Any, problems: _Problems) -> tuple[Choice, ...]:
    if not isinstance(raw, list):
        problems.add(source, step, "choices should be a list")
        return ()
    choices: list[Choice] = []
    for item in raw:
        if not isinstance(item, dict) or "value" not in item or "label" not in item:
            problems.add(source, step, f"each choice needs a value and a label: {item!r}")
            continue
        value = str(item["value"])
        if not re.match(r"^[A-Za-z0-9_]{1,20}$", value):
            problems.add(source, step, f"choice value {value!r} should be letters, digits, _")
        if any(existing.value == value for existing in choices):
            problems.add(source, step, f"choice value {value!r} appears twice")
        also = item.get("also") or []
        if not isinstance(also, list) or not all(isinstance(word, str) for word in also):
            problems.add(source, step, f"also, on choice {value!r}, should be a list of words")
            also = []
        choices.append(Choice(value=value, label=str(item["label"]), next=item.get("next"),
                              also=tuple(normalise(word) for word in also)))
    return tuple(choices)


def _load_routes(source: str, step: str, raw: Any, problems: _Problems) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        problems.add(source, step, "routes should be a list of {min, max, next}")
        return ()
    routes: list[Route] = []
    for item in raw:
        if not isinstance(item, dict) or "next" not in item or not ({"min", "max"} & set(item)):
            problems.add(source, step, f"each route needs next and min or max: {item!r}")
            continue
        routes.append(Route(low=int(item.get("min", -1000)), high=int(item.get("max", 1000)),
                            next=str(item["next"])))
    return tuple(routes)


def _load_check_back(source: str, step: str, raw: Any, problems: _Problems) -> CheckBack | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - CHECK_BACK_KEYS:
        problems.add(source, step, "check_back takes wait_at and template, or start")
        return None
    check_back = CheckBack(wait_at=raw.get("wait_at"), template=raw.get("template"),
                           start=raw.get("start"))
    if bool(check_back.wait_at) == bool(check_back.start) or \
            bool(check_back.wait_at) != bool(check_back.template):
        problems.add(source, step, "check_back needs either wait_at with a template, or start")
    return check_back


def _check_flow(flow: Flow, template_exists: Callable[[str], bool], problems: _Problems,
                actions: set[str]) -> None:
    for step in flow.steps.values():
        if not template_exists(step.template):
            problems.add(flow.source, step.name, f"no template (looked for {step.template})")
        if step.action is not None and step.action not in actions:
            problems.add(flow.source, step.name, f"action '{step.action}' is not one of "
                                                 f"{sorted(actions)}")
        _check_check_back(flow, step, template_exists, problems)
        for target in step.targets():
            if target not in flow.steps:
                problems.add(flow.source, step.name, f"leads to an unknown step '{target}'")
        _check_shape(flow, step, problems)
    for orphan in sorted(set(flow.steps) - _reachable(flow)):
        problems.add(flow.source, orphan, f"cannot be reached from the start step '{flow.start}'")


def _check_check_back(flow: Flow, step: Step, template_exists: Callable[[str], bool],
                      problems: _Problems) -> None:
    check_back = step.check_back
    if check_back is None:
        return
    if step.expects is not Expects.CHOICE or not any(delay_of(c.value) for c in step.choices):
        problems.add(flow.source, step.name, "check_back is for a choice step whose values are "
                                             "delays such as m20, h1 or d3")
    if check_back.wait_at and check_back.wait_at not in flow.steps:
        problems.add(flow.source, step.name, f"check_back waits at an unknown step "
                                             f"'{check_back.wait_at}'")
    if check_back.template and not template_exists(check_back.template):
        problems.add(flow.source, step.name, f"no template (looked for {check_back.template})")


def _check_shape(flow: Flow, step: Step, problems: _Problems) -> None:
    """An end step asks nothing; every other step must lead somewhere for every answer."""
    if step.end:
        if step.next or step.choices or step.expects is not Expects.NOTHING:
            problems.add(flow.source, step.name, "an end step cannot expect input or lead on")
        return
    if step.expects is Expects.NOTHING:
        problems.add(flow.source, step.name, "is a dead end: it expects nothing and is not an end")
        return
    if step.expects is Expects.CHOICE and not step.choices:
        problems.add(flow.source, step.name, "expects a choice but lists no choices")
    for choice in step.choices:
        if not (choice.next or step.next):
            problems.add(flow.source, step.name,
                         f"is a dead end: choice '{choice.value}' leads nowhere (add next)")
    needs_next = step.expects is not Expects.CHOICE or step.skippable
    if needs_next and not step.next:
        problems.add(flow.source, step.name, "is a dead end: it has no next step")
    if step.after:
        problems.add(flow.source, step.name, "after is only for end steps")
    if step.keep and not step.answer:
        problems.add(flow.source, step.name, "keep needs an answer name to keep it under")
    if step.answer in DICT_METHODS:
        # Templates read `answers.name` by key first (bot.rendering), so such an answer
        # would hide the method from every template of the flow (`answers.get(...)`).
        problems.add(flow.source, step.name,
                     f"answer name '{step.answer}' is the name of a dict method; choose another")
    if step.keep and step.expects not in (Expects.TEXT, Expects.CHOICE):
        problems.add(flow.source, step.name, "keep is for free-text answers and choices")
    if step.keep and not step.label:
        problems.add(flow.source, step.name, "keep needs a label, to name the answer in /journal")
    if step.routes and step.expects is not Expects.SCALE:
        problems.add(flow.source, step.name, "routes are for scale steps")


def _reachable(flow: Flow) -> set[str]:
    seen = {flow.start}
    queue = deque([flow.start])
    while queue:
        step = flow.steps.get(queue.popleft())
        if step is None:
            continue
        for target in step.targets():
            if target not in seen and target in flow.steps:
                seen.add(target)
                queue.append(target)
    return seen
