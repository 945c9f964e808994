"""One `transitions` state machine per flow, built once and shared by every user.

A user's position is a plain string in the database. To move it, the engine wraps
that string in a tiny cursor object and fires an event on the flow's shared
machine; nothing is attached to the machine per user, so there is no per-user
memory and no per-message construction cost. Where an event leads from a step is asked of
the machine once, then remembered (a flow has a few dozen such edges).
"""

from __future__ import annotations

from transitions import Machine, MachineError

from bot.flows.spec import Expects, Flow

ANSWER = "answer"
SKIP = "skip"


def pick(value: str) -> str:
    """The event fired when choice `value` is picked."""
    return f"pick_{value}"


def route(index: int) -> str:
    """The event fired when a scale answer falls in the step's route number `index`."""
    return f"route_{index}"


class _Cursor:
    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class FlowMachine:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        transitions: list[dict[str, str]] = []
        for step in flow.steps.values():
            if step.end:
                continue
            if step.expects is Expects.CHOICE:
                for choice in step.choices:
                    dest = choice.next or step.next
                    assert dest is not None  # the loader refuses choices that lead nowhere
                    transitions.append({"trigger": pick(choice.value), "source": step.name,
                                        "dest": dest})
            elif step.next:
                transitions.append({"trigger": ANSWER, "source": step.name, "dest": step.next})
            for index, path in enumerate(step.routes):
                transitions.append({"trigger": route(index), "source": step.name,
                                    "dest": path.next})
            if step.skippable and step.next:
                transitions.append({"trigger": SKIP, "source": step.name, "dest": step.next})
        self._machine = Machine(
            model=None, states=list(flow.steps), transitions=transitions, initial=flow.start,
            auto_transitions=False, send_event=False,
        )
        # (step, event) -> the step it leads to, as the machine answered the first time.
        # The machine has no conditions and no callbacks, so the answer never changes; firing
        # an event through `transitions` costs tens of microseconds each time.
        self._answered: dict[tuple[str, str], str] = {}

    def advance(self, step: str, event: str) -> str:
        """The step that `event` leads to from `step`; raises MachineError if it has no edge."""
        known = self._answered.get((step, event))
        if known is not None:
            return known
        found = self._machine.events.get(event)
        if found is None:
            raise MachineError(f"flow '{self.flow.name}' has no event '{event}'")
        cursor = _Cursor(step)
        found.trigger(cursor)
        self._answered[(step, event)] = cursor.state
        return cursor.state


def build_machines(flows: dict[str, Flow]) -> dict[str, FlowMachine]:
    return {name: FlowMachine(flow) for name, flow in flows.items()}
