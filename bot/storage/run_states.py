"""Where a person stands in each flow: the runs open, and how often each flow was completed.

The menu reads this, often in a turn that has changed a run (a step taken, a flow ended)
and goes on to change more (the end of onboarding cancels scheduled jobs). Written before
the read, as any read of the table would have them, the run's changes were one write and
the later changes another: two round trips on PostgreSQL where one does. So when the only
changes the session holds for the table are runs it loaded and changed (a step or a
status), the read goes first and those changes are laid over what it found; they are
written with the turn's other writes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import (
    String,
    Table,
    bindparam,
    func,
    inspect,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from bot.storage.direct import QUEUED, DriverStatement
from bot.storage.models import FlowRun

OPEN = "open"
DONE = "done"
ASIDE = "aside"  # an open run replaced by a newer run of the same flow

_RUNS: Table = FlowRun.__table__  # type: ignore[assignment]

# (flow, step, 0, run id) for each open run, and (flow, NULL, times completed, newest
# completed run's id) for each flow completed; by that id.
_FLOW_STATES = DriverStatement(union_all(
    select(_RUNS.c.flow, _RUNS.c.step, literal_column("0").label("completed"),
           _RUNS.c.id.label("position"))
    .where(_RUNS.c.user_id == bindparam("user_id"), _RUNS.c.status == OPEN),
    select(_RUNS.c.flow, sql_cast(null(), String), func.count(), func.max(_RUNS.c.id))
    .where(_RUNS.c.user_id == bindparam("user_id"), _RUNS.c.status == DONE)
    .group_by(_RUNS.c.flow),
).order_by(literal_column("position")))

FlowStates = tuple[list[tuple[str, str]], dict[str, int]]


class _RunChange(NamedTuple):
    id: int
    flow: str
    status_before: str  # as stored
    status: str  # as it is to be stored
    step: str


def flow_states(session: Session, user_id: int) -> FlowStates:
    """The open runs' (flow, step), oldest first, and each completed flow's count, in the
    order of their latest completion: as stored once the session's changes are written."""
    changes = _changed_runs(session, user_id)
    values = {"user_id": user_id}
    if changes is None:
        rows = _FLOW_STATES.rows(session, values)  # the session's changes written first
    else:
        rows = _laid_over(_FLOW_STATES.rows(session, values, written=False), changes)
    open_steps: list[tuple[str, str]] = []
    completed: dict[str, int] = {}
    for flow, step, count, _position in rows:
        if step is None:
            completed[flow] = count
        else:
            open_steps.append((flow, step))
    return open_steps, completed


def _changed_runs(session: Session, user_id: int) -> list[_RunChange] | None:
    """The person's runs the session has changed but not written, if those are the only
    changes it holds for the table; otherwise None, and the read must follow the writes.
    Anything but a change of status or step (a new or deleted row, a row queued, a run's
    flow or owner changed, a completion taken back) is left to the writes."""
    if session.new or session.deleted:
        return None
    queued: list[Any] = session.info.get(QUEUED) or []
    if any(write.part.table is _RUNS for write in queued):
        return None
    changes = []
    for obj in session.dirty:
        if not isinstance(obj, FlowRun):
            continue
        committed = inspect(obj).committed_state
        if committed.keys() & {"id", "user_id", "flow"}:
            return None
        if obj.user_id != user_id:
            continue
        status_before = committed.get("status", obj.status)
        if status_before == DONE and obj.status != DONE:
            return None  # a completion taken back: Haven never does that
        changes.append(_RunChange(obj.id, obj.flow, status_before, obj.status, obj.step))
    return changes


def _laid_over(rows: Any, changes: list[_RunChange]) -> list[tuple[Any, ...]]:
    """What `_FLOW_STATES` would find once `changes` are written, from what it found before."""
    if not changes:
        return list(rows)
    open_runs: dict[int, tuple[str, str]] = {}
    completed: dict[str, list[int]] = {}  # flow: [count, newest id]
    for flow, step, count, position in rows:
        if step is None:
            completed[flow] = [count, position]
        else:
            open_runs[position] = (flow, step)
    for change in changes:
        if change.status_before == OPEN:
            open_runs.pop(change.id, None)
        if change.status == OPEN:
            open_runs[change.id] = (change.flow, change.step)
        elif change.status == DONE and change.status_before != DONE:
            count, newest = completed.get(change.flow, [0, change.id])
            completed[change.flow] = [count + 1, max(newest, change.id)]
    laid: list[tuple[str, str | None, int, int]] = [
        (flow, step, 0, position) for position, (flow, step) in open_runs.items()]
    laid += [(flow, None, count, newest) for flow, (count, newest) in completed.items()]
    return sorted(laid, key=lambda row: row[3])
