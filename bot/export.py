"""Everything Haven keeps about a person, as JSON (for machines) and Markdown (for people)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.messages import Document
from bot.rendering import Renderer
from bot.storage.models import (
    CrisisEvent,
    FlowRun,
    Reflection,
    SafetyCheck,
    ScheduledJob,
    User,
    utcnow,
)


def _when(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def export_data(user: User, runs: list[FlowRun], reflections: list[Reflection],
                flow_titles: dict[str, str], labels: dict[tuple[str, str], str],
                crisis_events: list[CrisisEvent], safety_checks: Sequence[SafetyCheck] = (),
                check_backs: Sequence[ScheduledJob] = ()) -> dict[str, Any]:
    """`labels` names each kept answer, by (flow, answer name)."""
    return {
        "exported_at": _when(utcnow()),
        "profile": {
            "telegram_user_id": user.chat_id,
            "first_name": user.first_name,
            "language": user.language,
            "focus_relationship": user.focus,
            "country": user.country,
            "time_zone": user.timezone,
            "keep_reflections": user.keep_reflections,
            "joined": _when(user.created_at),
        },
        "flows": [
            {"flow": run.flow, "title": flow_titles.get(run.flow, run.flow),
             "status": "in progress" if run.status == "open" else "completed",
             "step": run.step if run.status == "open" else None,
             "answers_so_far": dict(run.answers) if run.status == "open" else {},
             "started": _when(run.started_at), "completed": _when(run.completed_at)}
            for run in runs
        ],
        "reflections": [
            {"date": _when(row.created_at), "flow": row.flow,
             "flow_title": flow_titles.get(row.flow, row.flow),
             "question": labels.get((row.flow, row.question), row.question),
             "text": row.text}
            for row in reflections
        ],
        "safety_checks": [
            {"date": _when(check.created_at), "relationship": check.relationship,
             "element_scores": dict(check.scores.get("elements", {})),
             "threats": dict(check.scores.get("threats", {}))}
            for check in safety_checks
        ],
        "check_ins_planned": [
            {"due": _when(job.due_at), "flow": flow_titles.get(
                job.target or "", job.target or ""), "carries_answers": bool(job.answers)}
            for job in check_backs
        ],
        # Only the kind and the time: the words that raised them were never kept.
        "crisis_moments": [{"date": _when(event.at), "kind": event.category}
                           for event in crisis_events],
    }


def export_documents(data: dict[str, Any], renderer: Renderer, locale: str) -> tuple[Document, ...]:
    day = str(data["exported_at"])[:10]
    as_json = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
    markdown = renderer.render_plain("export/journal.md.j2", locale, {"data": data})
    return (
        Document(f"haven-export-{day}.json", as_json, "application/json"),
        Document(f"haven-journal-{day}.md", markdown.encode("utf-8"), "text/markdown"),
    )
