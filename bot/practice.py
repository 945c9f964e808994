"""Daily practice: a short prompt at the person's own local time, and what they do with it.

The scheduler finds due rows and asks `prepare_job` for the message to send; a turn uses
`DailyPractice` for /checkin, /pause, /resume, the buttons under a prompt and a typed
answer to it. Times are kept in UTC, computed from the person's zone (bot.schedule_times).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot import callbacks
from bot.daily import DailyPrompt, PromptLibrary
from bot.i18n import N_
from bot.messages import Button
from bot.schedule_times import due_on, in_quiet_hours, local_day, next_daily_due
from bot.storage.models import User, as_utc
from bot.storage.repository import UnitOfWork

if TYPE_CHECKING:
    from bot.turn import Turn

DAILY = "daily"
SNOOZE = "snooze"
WEEKLY = "weekly"
WEEKLY_AT = "18:00"  # the weekly reflection's time for someone without a daily prompt
SNOOZE_FOR = timedelta(hours=1)
ANSWER_LABEL = N_("Answer")
SKIP_TODAY_LABEL = N_("Skip today")
SNOOZE_LABEL = N_("Ask me in an hour")
PAUSE_LABEL = N_("Pause prompts")
SHOW_LABEL = N_("Show it")
# Where the weekly reflection's question for the week ahead comes from.
WEEK_AHEAD_THEMES = ("trustworthiness", "appreciation", "communication")
DAILY_TITLE = N_("Daily practice")


def clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def plan_next_daily(unit: UnitOfWork, user: User, after: datetime) -> datetime | None:
    """Schedule the person's next daily prompt after `after`; returns when, or None if off.

    A local day that already had its prompt (say, through /checkin) is not given another.
    """
    unit.cancel_jobs(user, DAILY)
    if not (user.daily_enabled and user.daily_time and user.timezone) or user.paused:
        return None
    due, day = next_daily_due(after, clock(user.daily_time), user.timezone)
    if unit.job_done_on(user, DAILY, day):
        due, day = next_daily_due(due, clock(user.daily_time), user.timezone)
    unit.plan_job(user, DAILY, due, local_date=day)
    return due


def plan_next_weekly(unit: UnitOfWork, user: User, after: datetime) -> datetime | None:
    """Schedule the weekly reflection on the person's chosen weekday; returns when, or None."""
    unit.cancel_jobs(user, WEEKLY)
    if user.weekly_day is None or not user.timezone or user.paused:
        return None
    at = clock(user.daily_time or WEEKLY_AT)
    today = local_day(after, user.timezone)
    for offset in range(15):
        day = today + timedelta(days=offset)
        if day.weekday() != user.weekly_day or unit.job_done_on(user, WEEKLY, day):
            continue
        due = due_on(day, at, user.timezone)
        if due > after:
            unit.plan_job(user, WEEKLY, due, local_date=day)
            return due
    return None


def plan_all(unit: UnitOfWork, user: User, after: datetime) -> None:
    plan_next_daily(unit, user, after)
    plan_next_weekly(unit, user, after)


def quiet_until(user: User, now: datetime) -> datetime | None:
    """When the person's quiet hours end, if `now` falls inside them; else None."""
    if not (user.quiet_start and user.quiet_end and user.timezone):
        return None
    start, end = clock(user.quiet_start), clock(user.quiet_end)
    if not in_quiet_hours(now, user.timezone, start, end):
        return None
    return next_daily_due(now, end, user.timezone)[0]


def prompt_buttons(translate: Callable[[str], str]) -> tuple[tuple[Button, ...], ...]:
    return ((Button(translate(ANSWER_LABEL), callbacks.daily("answer")),
             Button(translate(SKIP_TODAY_LABEL), callbacks.daily("skip"))),
            (Button(translate(SNOOZE_LABEL), callbacks.daily("snooze")),
             Button(translate(PAUSE_LABEL), callbacks.daily("pause"))))


class DailyPractice:
    """The daily-practice part of one turn."""

    def __init__(self, turn: Turn, library: PromptLibrary, now: datetime) -> None:
        self.turn = turn
        self.library = library
        self.now = now

    @property
    def user(self) -> User:
        return self.turn.user

    def choose(self) -> DailyPrompt:
        user = self.user
        day = local_day(self.now, user.timezone or "UTC")
        since = self.now - timedelta(days=45)
        recent = [(pid, local_day(as_utc(sent), user.timezone or "UTC"))
                  for pid, sent in self.turn.unit.sent_prompts(user, since)]
        open_flows = [run.flow for run in self.turn.unit.open_runs(user)]
        return self.library.choose(user.id, day, user.focus, recent, open_flows)

    def show(self, prompt: DailyPrompt, intro: bool = False, discreet: bool = False) -> None:
        """The prompt with its buttons; in discreet mode, only a neutral nudge to open it."""
        self.user.open_prompt = prompt.id
        buttons = prompt_buttons(self.turn.t)
        if discreet:
            buttons = ((Button(self.turn.t(SHOW_LABEL), callbacks.daily("show")),), *buttons[1:])
        self.turn.say("daily/prompt.j2", buttons=buttons, prompt=prompt, discreet=discreet,
                      intro=intro)

    def weekly(self, discreet: bool = False) -> None:
        """The week in the person's own words, and one question for the week ahead."""
        if discreet:
            self.turn.say("daily/weekly.j2", discreet=True, quotes=[], question="",
                          buttons=((Button(self.turn.t(SHOW_LABEL), callbacks.daily("week")),),))
            return
        kept = self.turn.unit.reflections_since(self.user, self.now - timedelta(days=7))
        ahead = [prompt for prompt in self.library.prompts
                 if prompt.theme in WEEK_AHEAD_THEMES and prompt.suits(self.user.focus)]
        week = self.now.isocalendar().week
        question = ahead[(self.user.id + week) % len(ahead)].text if ahead else ""
        self.turn.say("daily/weekly.j2", discreet=False, quotes=[r.text for r in kept[:3]],
                      question=question)

    def checkin(self) -> None:
        """Today's prompt now; the one scheduled for today will not come as well."""
        prompt = self.choose()
        self.show(prompt, intro=True)
        today = local_day(self.now, self.user.timezone or "UTC")
        self.turn.unit.record_daily_sent(self.user, today, prompt.id, self.now)
        plan_next_daily(self.turn.unit, self.user, self.now)

    def pause(self) -> None:
        self.user.paused = True
        self.user.open_prompt = None
        for kind in (DAILY, SNOOZE, WEEKLY):
            self.turn.unit.cancel_jobs(self.user, kind)
        self.turn.say("daily/paused.j2")

    def resume(self) -> None:
        self.user.paused = False
        due = plan_next_daily(self.turn.unit, self.user, self.now)
        plan_next_weekly(self.turn.unit, self.user, self.now)
        self.turn.say("daily/resumed.j2", next_due=self._local(due) if due else None)

    def press(self, choice: str) -> None:
        prompt = self.library.by_id.get(self.user.open_prompt or "")
        if choice == "pause":
            self.pause()
        elif choice == "week":
            self.weekly()
        elif prompt is None:
            self.turn.stale_button()
        elif choice == "show":
            self.show(prompt)
        elif choice == "answer":
            self.turn.say("daily/answer_now.j2", prompt=prompt)
        elif choice == "skip":
            self.user.open_prompt = None
            self.turn.say("daily/skipped.j2")
        else:
            self.user.open_prompt = None
            self.turn.unit.plan_job(self.user, SNOOZE, self.now + SNOOZE_FOR, prompt_id=prompt.id)
            self.turn.say("daily/snoozed.j2")

    def answer(self, typed: str) -> bool:
        """A typed reply to the open prompt; True if there was one to answer."""
        prompt = self.library.by_id.get(self.user.open_prompt or "")
        if prompt is None:
            return False
        self.user.open_prompt = None
        if self.user.keep_reflections:
            self.turn.unit.keep_daily_reflection(self.user, prompt.theme, prompt.id, typed)
        self.turn.say("daily/thanks.j2", kept=bool(self.user.keep_reflections))
        return True

    def _local(self, due: datetime) -> str:
        return due.astimezone(ZoneInfo(self.user.timezone or "UTC")).strftime("%H:%M")
