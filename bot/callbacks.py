"""Callback data for buttons: short, versioned by the run it belongs to, and parsed strictly.

Telegram allows 1-64 bytes. Anything that does not parse, or that does not match
where the person is now, is treated as a stale or forged button by the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_BYTES = 64
SKIP_VALUE = "~skip"

_STEP = re.compile(r"^s:(\d{1,12}):([a-z][a-z0-9_]{0,19}):(~skip|[A-Za-z0-9_]{1,20})$")
_FLOW = re.compile(r"^f:([a-z][a-z0-9_]{0,19})$")
_SWITCH = re.compile(r"^w:(yes|no)$")
_JOURNAL = re.compile(r"^j:(\d{1,6})(?::([ft]_[a-z_]{1,20}))?$")
_ERASE = re.compile(r"^x:(yes|no)$")
_CRISIS = re.compile(r"^c:(read|later|ok)$")
_DAILY = re.compile(r"^d:(answer|skip|snooze|pause|show|week)$")


@dataclass(frozen=True)
class StepPress:
    run_id: int
    step: str
    value: str


@dataclass(frozen=True)
class FlowPress:
    flow: str


@dataclass(frozen=True)
class SwitchPress:
    confirm: bool


@dataclass(frozen=True)
class JournalPress:
    page: int
    only: str | None = None  # "f_<flow>" or "t_<theme>"


@dataclass(frozen=True)
class ErasePress:
    confirm: bool


@dataclass(frozen=True)
class CrisisPress:
    choice: str  # "read": safe to read the resources; "later": not now; "ok": safe, continue


@dataclass(frozen=True)
class DailyPress:
    choice: str  # under a daily prompt: "answer", "skip", "snooze" or "pause"


Press = (StepPress | FlowPress | SwitchPress | JournalPress | ErasePress | CrisisPress
         | DailyPress)


def step(run_id: int, step_name: str, value: str) -> str:
    return _checked(f"s:{run_id}:{step_name}:{value}")


def flow(name: str) -> str:
    return _checked(f"f:{name}")


def switch(confirm: bool) -> str:
    return "w:yes" if confirm else "w:no"


def daily(choice: str) -> str:
    return _checked(f"d:{choice}")


def crisis(choice: str) -> str:
    return _checked(f"c:{choice}")


def erase(confirm: bool) -> str:
    return "x:yes" if confirm else "x:no"


def journal(page: int, only: str | None = None) -> str:
    return _checked(f"j:{page}:{only}" if only else f"j:{page}")


def parse(data: str) -> Press | None:
    """The press `data` describes, or None for anything Haven did not make."""
    if (match := _STEP.match(data)) is not None:
        return StepPress(int(match[1]), match[2], match[3])
    if (match := _FLOW.match(data)) is not None:
        return FlowPress(match[1])
    if (match := _SWITCH.match(data)) is not None:
        return SwitchPress(match[1] == "yes")
    if (match := _JOURNAL.match(data)) is not None:
        return JournalPress(int(match[1]), match[2])
    if (match := _ERASE.match(data)) is not None:
        return ErasePress(match[1] == "yes")
    if (match := _CRISIS.match(data)) is not None:
        return CrisisPress(match[1])
    if (match := _DAILY.match(data)) is not None:
        return DailyPress(match[1])
    return None


def _checked(data: str) -> str:
    if len(data.encode()) > MAX_BYTES:
        raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
    return data
