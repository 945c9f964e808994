"""The database tables: people, where they are in each flow, and what they chose to keep.

Everything a person writes (and the name Telegram gives) is encrypted at rest.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.storage.crypto import EncryptedJSON, EncryptedText


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their zone; everything stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, unique=True, nullable=False)
    first_name: Mapped[str] = mapped_column(EncryptedText, default="", nullable=False)
    language: Mapped[str] = mapped_column(String(16), default="en", nullable=False)
    focus: Mapped[str | None] = mapped_column(String(16))
    country: Mapped[str | None] = mapped_column(String(2))
    timezone: Mapped[str | None] = mapped_column(String(64))
    # None until the person has answered the consent question at onboarding.
    keep_reflections: Mapped[bool | None] = mapped_column(Boolean)
    onboarded: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # The flow the person is in now, and one they asked to switch to (awaiting a yes/no).
    active_flow: Mapped[str | None] = mapped_column(String(32))
    pending_flow: Mapped[str | None] = mapped_column(String(32))
    # Telegram's ids of this person's last few updates, to recognise a second delivery.
    recent_updates: Mapped[list[int]] = mapped_column(JSON, default=list, nullable=False)
    # The daily prompt: on or off, the local time (HH:MM) in `timezone`, and a pause.
    daily_enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    daily_time: Mapped[str | None] = mapped_column(String(5))
    paused: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # No prompts between these local times (HH:MM; may cross midnight).
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    # The weekday (0 = Monday) of the weekly reflection, or None for none.
    weekly_day: Mapped[int | None] = mapped_column(Integer)
    # Reminders that say nothing personal until opened.
    discreet: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # The prompt sent most recently, which a typed reply outside any flow answers.
    open_prompt: Mapped[str | None] = mapped_column(String(32))
    # Set when Telegram says the person blocked Haven: nothing is sent until they return.
    blocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Which crisis buttons were just shown ("safe_to_read" or "continue"), so typing works too.
    crisis_prompt: Mapped[str | None] = mapped_column(String(16))
    # When /delete asked "are you sure?": a yes counts only for a few minutes after.
    confirm_delete_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class FlowRun(Base):
    """One pass through a flow: open while the person is in it (or paused it), done at the end."""

    __tablename__ = "flow_runs"
    __table_args__ = (Index("ix_flow_runs_user_flow_status", "user_id", "flow", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    flow: Mapped[str] = mapped_column(String(32), nullable=False)
    step: Mapped[str] = mapped_column(String(32), nullable=False)
    answers: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, default=dict, nullable=False)
    status: Mapped[str] = mapped_column(String(8), default="open", nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Optimistic locking: a write based on a stale read fails instead of overwriting.
    __mapper_args__ = {"version_id_col": version}


class Reflection(Base):
    """An answer the person chose to keep, with the question it answered."""

    __tablename__ = "reflections"
    __table_args__ = (Index("ix_reflections_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    flow: Mapped[str] = mapped_column(String(32), nullable=False)
    step: Mapped[str] = mapped_column(String(32), nullable=False)
    question: Mapped[str] = mapped_column(String(64), nullable=False)
    text: Mapped[str] = mapped_column(EncryptedText, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChatMessage(Base):
    """The id of a message in the person's chat (never its text), so /hide can delete it."""

    __tablename__ = "chat_messages"
    __table_args__ = (Index("ix_chat_messages_user_at", "user_id", "at"),
                      Index("ix_chat_messages_at", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    message_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CrisisEvent(Base):
    """That crisis language was detected: only the kind and the time, never the words."""

    __tablename__ = "crisis_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
                                         index=True)
    category: Mapped[str] = mapped_column(String(20), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScheduledJob(Base):
    """Something to send at a time: a daily prompt, or a snoozed one.

    A worker claims due rows (PostgreSQL: FOR UPDATE SKIP LOCKED), sends, and marks them
    sent; a claim older than the lease is taken to have died with its worker and is
    claimed again. At most one daily prompt per person per local day (the unique key).
    """

    __tablename__ = "scheduled_jobs"
    __table_args__ = (
        Index("ix_scheduled_jobs_due", "state", "due_at"),
        # One person's rows (/checkin, choosing a prompt, /pause): without it SQLite would
        # read every due or sent row through the index above.
        Index("ix_scheduled_jobs_user_state", "user_id", "state"),
        Index("uq_scheduled_jobs_daily", "user_id", "kind", "local_date", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # daily snooze weekly checkback
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    local_date: Mapped[date | None] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(8), default="due", nullable=False)  # due/sent/skipped
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    prompt_id: Mapped[str | None] = mapped_column(String(32))
    # A flow's check-back: the run it belongs to, and the step it waits at or the flow it starts.
    run_id: Mapped[int | None] = mapped_column(ForeignKey("flow_runs.id", ondelete="CASCADE"))
    target: Mapped[str | None] = mapped_column(String(32))
    # For a check-back that starts a flow: the answers it carries (encrypted, like the run's).
    answers: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON)


class SafetyCheck(Base):
    """One safety check's result: a score per element and a rating per threat, with its date.

    The scores are the person's own view of a relationship, so they are encrypted like text.
    """

    __tablename__ = "safety_checks"
    __table_args__ = (Index("ix_safety_checks_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    relationship: Mapped[str] = mapped_column(String(16), nullable=False)
    scores: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Worker(Base):
    """A running Haven process that sends to Telegram, seen lately. Telegram's limits are per
    bot, so the processes sharing one bot split them by how many of these are alive."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
