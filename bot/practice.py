"""Daily practice: a short prompt at the person's own local time, and what they do with it.

The scheduler claims due rows in batches: `DailyBatch` readies the batch's daily prompts
together and `plan_next_dailies` marks them and plans the next ones (see the note below);
other rows go one at a time through `Engine.prepare_job`. A turn uses `DailyPractice` for
/checkin, /pause, /resume, the buttons under a prompt and a typed answer to it. Times are
kept in UTC, computed from the person's zone (bot.schedule_times).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

from jinja2 import meta

from bot import callbacks
from bot.daily import NO_REPEAT_DAYS, DailyPrompt, PromptLibrary
from bot.i18n import N_
from bot.messages import Button, Message, Reply
from bot.rendering import Renderer
from bot.schedule_times import due_on, in_quiet_hours, local_day, next_daily_due
from bot.storage.models import User, as_utc
from bot.storage.repository import DueRow, FinishRow, UnitOfWork
from bot.views import PLACEHOLDER, LiveUserView

if TYPE_CHECKING:
    from bot.turn import Turn

DAILY = "daily"
SNOOZE = "snooze"
WEEKLY = "weekly"
WEEKLY_AT = "18:00"  # the weekly reflection's time for someone without a daily prompt
SNOOZE_FOR = timedelta(hours=1)
RECENT_WINDOW = timedelta(days=45)  # the prompts a choice looks back over
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
    if not in_quiet_hours_now(user.quiet_start, user.quiet_end, user.timezone, now):
        return None
    assert user.quiet_end is not None and user.timezone is not None
    return next_daily_due(now, clock(user.quiet_end), user.timezone)[0]


def prompt_buttons(translate: Callable[[str], str],
                   discreet: bool = False) -> tuple[tuple[Button, ...], ...]:
    """The buttons under a prompt; in discreet mode "Show it" stands in for answer and skip."""
    first = ((Button(translate(SHOW_LABEL), callbacks.daily("show")),) if discreet
             else (Button(translate(ANSWER_LABEL), callbacks.daily("answer")),
                   Button(translate(SKIP_TODAY_LABEL), callbacks.daily("skip"))))
    return (first, (Button(translate(SNOOZE_LABEL), callbacks.daily("snooze")),
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
        since = self.now - RECENT_WINDOW
        recent = [(pid, local_day(as_utc(sent), user.timezone or "UTC"))
                  for pid, sent in self.turn.unit.sent_prompts(user, since)]
        open_flows = [flow for flow, _ in self.turn.unit.open_steps(user)]
        return self.library.choose(user.id, day, user.focus, recent, open_flows)

    def show(self, prompt: DailyPrompt, intro: bool = False, discreet: bool = False) -> None:
        """The prompt with its buttons; in discreet mode, only a neutral nudge to open it."""
        self.user.open_prompt = prompt.id
        buttons = prompt_buttons(self.turn.t, discreet)
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


# ---- the daily fan-out, a batch at a time ---------------------------------------------------
#
# At the busiest minute thousands of people are due at once. The scheduler claims them in
# batches; `DailyBatch.prepare` readies every daily prompt of a batch in the claim's unit of
# work with a few set-based queries (who, what they were sent lately, which flows they have
# open), and `plan_next_dailies` marks a batch's sends and plans the next day's rows in one
# unit of work after them. The rules are those of `prepare_job`, `DailyPractice.choose`,
# `DailyPractice.show` and `plan_next_daily`; anything out of the ordinary (a prompt missed by
# more than the grace window, quiet hours) is left to the per-job path, which handles it.


class DuePrompt(NamedTuple):
    """A daily prompt ready to send: its row, the person, and the message (shared by everyone
    who gets the same prompt; `reply()` makes it a reply to send)."""

    job_id: int
    user_id: int
    chat_id: int
    messages: tuple[Message, ...]

    def reply(self) -> Reply:
        return Reply(list(self.messages))


class Delivery(NamedTuple):
    """What became of a prompt sent from a batch: delivered (or unreachable) at `at`."""

    job_id: int
    delivered: bool
    at: datetime


@dataclass
class ClaimedBatch:
    """One claim: how many rows it took, the daily prompts ready to send, and the other rows
    (weekly, snooze, check-backs, and daily ones needing more), for the per-job path."""

    claimed: int = 0
    prompts: list[DuePrompt] = field(default_factory=list)
    others: list[int] = field(default_factory=list)


class NextDue:
    """`next_daily_due` for many people: thousands share a handful of zones and times, so each
    (zone, time) is worked out once and reused for every `after` it holds for."""

    def __init__(self) -> None:
        # (zone, HH:MM) -> (the day before's due time, due time, local date)
        self._known: dict[tuple[str, str], tuple[datetime, datetime, date]] = {}

    def after(self, moment: datetime, at: str, zone: str) -> tuple[datetime, date]:
        """The first due time strictly after `moment` (aware), and its local date."""
        known = self._known.get((zone, at))
        # Due times only grow from one local day to the next, so the answer for any moment
        # from the day before's due time up to (not including) this one's is this one.
        if known is not None and known[0] <= moment < known[1]:
            return known[1], known[2]
        due, day = next_daily_due(moment, clock(at), zone)
        self._known[(zone, at)] = (due_on(day - timedelta(days=1), clock(at), zone), due, day)
        return due, day


def in_quiet_hours_now(quiet_start: str | None, quiet_end: str | None, zone: str | None,
                       now: datetime) -> bool:
    """Whether `now` falls in a person's quiet hours (as `quiet_until` decides it)."""
    if not (quiet_start and quiet_end and zone):
        return False
    return in_quiet_hours(now, zone, clock(quiet_start), clock(quiet_end))


_PROMPT_TEMPLATE = "daily/prompt.j2"
# What `DailyPractice.show` puts in the prompt template's context besides the person.
_PROMPT_CONTEXT = frozenset({"prompt", "discreet", "intro", "answers"})


class DailyBatch:
    """Readies the daily prompts of a claimed batch together (see the note above)."""

    def __init__(self, library: PromptLibrary, renderer: Renderer) -> None:
        self.library = library
        self.renderer = renderer
        self._personal: dict[str, bool] = {}  # per locale: does the template read the person?
        self._messages: dict[tuple[str, str, bool], tuple[Message, ...]] = {}
        self._buttons: dict[tuple[str, bool], tuple[tuple[Button, ...], ...]] = {}

    def split(self, rows: list[DueRow],
              now: datetime) -> tuple[list[DueRow], list[int], list[int]]:
        """Due rows (`UnitOfWork.due_batch`) -> (daily prompts to send now, rows to let go,
        rows for the per-job path), with `prepare_job`'s checks in its order."""
        ready: list[DueRow] = []
        skipped: list[int] = []
        others: list[int] = []
        for row in rows:
            if row.kind != DAILY:
                others.append(row.id)
            elif row.blocked or row.paused or not row.daily_enabled:
                skipped.append(row.id)
            elif not row.in_grace or (row.quiet_start and in_quiet_hours_now(
                    row.quiet_start, row.quiet_end, row.timezone, now)):
                others.append(row.id)  # let go and planned again, or held: the per-job path
            else:
                ready.append(row)
        return ready, skipped, others

    def prepare(self, unit: UnitOfWork, rows: list[DueRow], now: datetime) -> list[DuePrompt]:
        """Choose, record and render the prompt of every row (from `split`), claiming it."""
        library = self.library
        by_id = library.by_id
        to_choose = [row.user_id for row in rows if row.prompt_id not in by_id]
        # Sends from `late` on were within 30 local days of today wherever the person is,
        # those before `early` were not; only those in between need their zone looked at.
        today = now.astimezone(UTC).date()
        late = datetime.combine(today - timedelta(days=NO_REPEAT_DAYS - 3), time(), UTC)
        early = datetime.combine(today - timedelta(days=NO_REPEAT_DAYS + 1), time(), UTC)
        history = unit.sent_prompts_of(to_choose, now - RECENT_WINDOW, early, late, DAILY,
                                       SNOOZE)
        open_flows = unit.open_flows_of(to_choose)
        personal = {language for language in {row.language for row in rows}
                    if self._is_personal(language)}
        users = (unit.users_by_ids([row.user_id for row in rows if row.language in personal])
                 if personal else {})
        days: dict[str, date] = {}
        chosen: list[tuple[int, int, str]] = []
        ready: list[DuePrompt] = []
        for row in rows:
            job_id, user_id, language = row.id, row.user_id, row.language
            prompt = by_id.get(row.prompt_id or "")
            if prompt is None:  # (a row sent again after a crash keeps its prompt)
                zone = row.timezone or "UTC"
                day = days.get(zone)
                if day is None:
                    day = days[zone] = local_day(now, zone)
                sent = history.get(user_id)
                if sent:
                    too_recent = set(sent.late)
                    recent = sent.late + sent.early
                    for prompt_id, at in sent.between:
                        recent.append(prompt_id)
                        if (day - local_day(as_utc(at), zone)).days < NO_REPEAT_DAYS:
                            too_recent.add(prompt_id)
                    prompt = library.choose_from(user_id, day, row.focus, too_recent, recent,
                                                 open_flows.get(user_id, ()))
                else:
                    prompt = library.choose_from(user_id, day, row.focus, frozenset(), (),
                                                 open_flows.get(user_id, ()))
            chosen.append((job_id, user_id, prompt.id))
            discreet = bool(row.discreet)
            if language in personal:
                messages = self._render(language, prompt, discreet, users.get(user_id))
            else:
                messages = self._messages.get((language, prompt.id, discreet)) \
                    or self._impersonal(language, prompt, discreet)
            ready.append(DuePrompt(job_id, user_id, row.chat_id, messages))
        unit.set_prompts(chosen, now)
        return ready

    def _is_personal(self, locale: str) -> bool:
        """Whether the prompt template (for `locale`) reads anything but the prompt and its
        options, such as the person's name: then it is rendered for each person; otherwise
        once per prompt, locale and discretion, since it comes out the same for everyone."""
        found = self._personal.get(locale)
        if found is None:
            env = self.renderer.env
            template = self.renderer.template(_PROMPT_TEMPLATE, locale)
            assert env.loader is not None and template.name is not None
            source = env.loader.get_source(env, template.name)[0]
            parsed = env.parse(source)
            names = meta.find_undeclared_variables(parsed) - set(env.globals)
            found = bool(names - _PROMPT_CONTEXT) or any(meta.find_referenced_templates(parsed))
            self._personal[locale] = found
        return found

    def _impersonal(self, locale: str, prompt: DailyPrompt,
                    discreet: bool) -> tuple[Message, ...]:
        key = (locale, prompt.id, discreet)
        messages = self._messages.get(key)
        if messages is None:
            messages = self._messages[key] = self._render(locale, prompt, discreet, None)
        return messages

    def _render(self, locale: str, prompt: DailyPrompt, discreet: bool,
                user: User | None) -> tuple[Message, ...]:
        """The prompt as `DailyPractice.show` says it (in a scheduled turn: no intro)."""
        buttons = self._buttons.get((locale, discreet))
        if buttons is None:
            buttons = prompt_buttons(partial(self.renderer.gettext, locale), discreet)
            self._buttons[(locale, discreet)] = buttons
        view = LiveUserView(user) if user is not None else PLACEHOLDER
        texts = self.renderer.render(_PROMPT_TEMPLATE, locale, {
            "user": view, "prompt": prompt, "discreet": discreet, "intro": False,
            "answers": {}})
        return tuple(Message(text, buttons if index == len(texts) - 1 else ())
                     for index, text in enumerate(texts))


def plan_next_dailies(unit: UnitOfWork, deliveries: list[Delivery], next_due: NextDue) -> None:
    """`finish_job` for a batch of daily prompts: mark each sent (or let go, if the person
    could not be reached), and plan each person's next daily prompt after it, as
    `plan_next_daily` does, in a few statements for the whole batch."""
    if not deliveries:
        return
    by_job = {delivery.job_id: delivery for delivery in deliveries}
    found = unit.jobs_to_finish(list(by_job))  # a row erased meanwhile is left alone
    unit.mark_jobs([(row.id, "sent" if by_job[row.id].delivered else "skipped",
                     by_job[row.id].at) for row in found])
    latest: dict[int, tuple[FinishRow, datetime]] = {}  # per person, the last send counts
    for row in found:
        if row.kind != DAILY:
            continue
        at = by_job[row.id].at
        if row.user_id not in latest or latest[row.user_id][1] < at:
            latest[row.user_id] = (row, at)
    # Any other due daily row of theirs was planned after this one (planning anew removes
    # the due row first, and this one was due until now), so it is for a later day.
    if latest:
        earliest = min(row.local_date or date.min for row, _ in latest.values())
        unit.cancel_jobs_of(list(latest), DAILY,
                            earliest - timedelta(days=1) if earliest > date.min else earliest)
    planned: list[tuple[int, datetime, date, str, str]] = []
    for user_id, (row, at) in latest.items():
        if not (row.daily_enabled and row.daily_time and row.timezone) or row.paused:
            continue
        due, day = next_due.after(as_utc(at), row.daily_time, row.timezone)
        planned.append((user_id, due, day, row.daily_time, row.timezone))
    if not planned:
        return
    done = unit.days_done([p[0] for p in planned], DAILY, min(p[2] for p in planned))
    rows: list[tuple[int, datetime, date]] = []
    for user_id, due, day, at_time, zone in planned:
        if (user_id, day) in done:  # that local day had its prompt already (/checkin)
            due, day = next_due.after(due, at_time, zone)
        rows.append((user_id, due, day))
    unit.plan_jobs(DAILY, rows)
