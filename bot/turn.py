"""One turn: what a single update does, inside one database transaction.

The engine (bot.engine) finds the person's lock and the transaction; a `Turn` reads
the person's state, answers commands, button presses and typed text, moves through
the flow's machine, renders what to send, and leaves the changes to be committed.
"""


from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from babel.dates import format_date, get_day_names

from bot import callbacks
from bot.actions import ACTIONS, ActionCall
from bot.answers import (
    NO_WORDS,
    SKIP_WORDS,
    YES_WORDS,
    match_label,
    normalise,
    parse_country,
    parse_language,
    parse_scale,
)
from bot.charts import CalendarRequest, TrendRequest, calendar_text, draw_calendar, draw_trend
from bot.checkbacks import check_back_due
from bot.crisis.detector import Category, CrisisMatch
from bot.crisis_lines import lines_for
from bot.export import export_data, export_documents
from bot.flows.machine import ANSWER, SKIP, pick, route
from bot.flows.spec import FOCUS_VALUES, Expects, Flow, Step
from bot.i18n import N_, locale_display_name
from bot.messages import Button, Incoming, InputKind, Message, PendingImage, Reply
from bot.practice import (
    DAILY_TITLE,
    DailyPractice,
    plan_all,
)
from bot.safety_check import ELEMENTS as SAFETY_ELEMENTS
from bot.schedule_times import (
    describe,
    local_day,
    parse_clock,
    zones_for,
    zones_from_local_time,
)
from bot.storage.models import FlowRun, ScheduledJob, User, as_utc, utcnow
from bot.storage.repository import HIDE_WINDOW, UnitOfWork, answers_copy
from bot.views import LiveUserView, resources_view

if TYPE_CHECKING:
    from bot.engine import Engine

log = logging.getLogger(__name__)

ONBOARDING = "onboarding"
SKIP_LABEL = N_("Skip")
SWITCH_LABEL = N_("Yes, switch")
STAY_LABEL = N_("No, stay here")
ERASE_LABEL = N_("Yes, delete everything")
KEEP_LABEL = N_("No, keep it")
ERASE_WINDOW = timedelta(minutes=10)
MENUS_KEPT = 1024  # rendered menus kept (see Turn._menu): each about 2 KB of text, so 3 MB at most
SAFE_TO_READ_LABEL = N_("Yes, I can read it")
NOT_NOW_LABEL = N_("Not right now")
CONTINUE_LABEL = N_("I'm safe, continue")
ALL_LABEL = N_("Everything")
# Daily prompts by theme, as the journal's filter buttons name them.
THEME_TITLES = {"self_awareness": N_("Prompts: self-awareness"),
                "communication": N_("Prompts: communication"),
                "boundaries": N_("Prompts: boundaries"), "repair": N_("Prompts: repair"),
                "trustworthiness": N_("Prompts: trustworthiness"),
                "appreciation": N_("Prompts: appreciation"), "healing": N_("Prompts: healing")}
OLDER_LABEL = N_("Older")
NEWER_LABEL = N_("Newer")
JOURNAL_PAGE_SIZE = 5
TREND_POINTS = 8  # the safety checks a trend shows, newest last
SAFETY_TITLE = N_("Safety check")



class Turn:
    """The work of one incoming update, inside one database transaction."""

    def __init__(self, engine: Engine, unit: UnitOfWork, incoming: Incoming,
                 crisis: CrisisMatch | None = None) -> None:
        self.engine = engine
        self.unit = unit
        self.incoming = incoming
        self.crisis = crisis
        self.reply = Reply()
        self.user: User
        self.locale = "en"
        self.erased = False
        self.duplicate = False
        self.images: list[PendingImage] = []  # pictures to draw once the turn is done
        self.reschedule = False  # the daily prompt's time or zone changed: plan it again
        self.now = engine.clock()
        self.practice = (DailyPractice(self, engine.daily, self.now)
                         if engine.daily is not None else None)

    # ---- entry -----------------------------------------------------------------

    def run(self) -> Turn:
        """Do the turn's work inside the unit of work's transaction; returns itself."""
        self._run()
        if self.reschedule and not self.erased:
            plan_all(self.unit, self.user, self.now)
        return self

    def _run(self) -> None:
        incoming = self.incoming
        translations = self.engine.renderer.translations
        self.user = self.unit.user_for_chat(
            incoming.chat_id, incoming.first_name, translations.pick(incoming.language_code)
        )
        if incoming.update_id is not None and not self.unit.claim_update(self.user,
                                                                         incoming.update_id):
            log.info("an update delivered twice was handled once")
            self.duplicate = True
            return
        self.locale = self.user.language
        if self.user.blocked_at is not None:
            self.user.blocked_at = None  # they are writing to Haven, so it may write back
            self.reschedule = True
        if self.crisis is not None:
            self._crisis(self.crisis.category)
            return
        if self.user.crisis_prompt is not None and incoming.kind is not InputKind.PRESS \
                and self._typed_crisis_answer(incoming.text):
            return
        pending_erase = self.user.confirm_delete_at is not None
        if pending_erase and incoming.kind is not InputKind.PRESS \
                and self._typed_erase_answer(incoming):
            return
        if incoming.kind is InputKind.COMMAND:
            self._command(incoming.text)
        elif incoming.kind is InputKind.PRESS:
            self._press(incoming.text)
        elif incoming.kind is InputKind.TEXT:
            self._text(incoming.text)
        else:
            self._not_text(incoming.media or "other")

    # ---- commands --------------------------------------------------------------

    def _command(self, name: str) -> None:
        if name == "help":
            self._say("system/help.j2", resources=self._resources(), commands=self._commands())
            return
        if name == "cancel":
            self._cancel()
            return
        if name in ("export", "delete", "hide"):
            {"export": self._export, "delete": self._ask_erase, "hide": self._hide}[name]()
            return
        if not self.user.onboarded:
            if name != "start":
                self._say("system/setup_first.j2")
            self._enter(ONBOARDING, resume_note=name != "start")
            return
        if name == "start":
            self._welcome_back()
        elif name == "menu":
            self._menu()
        elif name == "progress":
            self._progress()
        elif name == "journal":
            self._journal(0)
        elif name in ("checkin", "pause", "resume") and self.practice is not None:
            {"checkin": self.practice.checkin, "pause": self.practice.pause,
             "resume": self.practice.resume}[name]()
        elif name in self.engine.commands:
            self._request_flow(self.engine.commands[name])
        else:
            self._say("system/unknown_command.j2", command=f"/{name}")
            self._repeat_current_step()

    def _welcome_back(self) -> None:
        """/start again: back to where the person was, or the menu."""
        located = self._current()
        if located is None:
            self._menu()
            return
        flow, run, _step = located
        self._say("system/resume.j2", flow_title=self._t(flow.title))
        self._render_step(flow, run)

    def _cancel(self) -> None:
        flow_name = self.user.active_flow
        if flow_name is None:
            self._say("system/nothing_to_cancel.j2")
            return
        flow = self.engine.flows[flow_name]
        self.user.active_flow = None
        self.user.pending_flow = None
        command = "start" if flow_name == ONBOARDING else flow.command
        self._say("system/cancelled.j2", flow_title=self._t(flow.title),
                  command=f"/{command}" if command else None)

    def _request_flow(self, name: str) -> None:
        """Start or resume flow `name`, asking first if it would leave another flow."""
        current = self.user.active_flow
        if current is not None and current != name:
            self.user.pending_flow = name
            buttons = ((Button(self._t(SWITCH_LABEL), callbacks.switch(True)),
                        Button(self._t(STAY_LABEL), callbacks.switch(False))),)
            self._say("system/switch_flow.j2", buttons=buttons,
                      current_title=self._t(self.engine.flows[current].title),
                      new_title=self._t(self.engine.flows[name].title))
            return
        self._enter(name, resume_note=True)

    def _enter(self, name: str, resume_note: bool) -> None:
        """Make `name` the active flow: continue its open run, or start a new one."""
        flow = self.engine.flows[name]
        run = self.unit.open_run(self.user, name)
        self.user.active_flow = name
        self.user.pending_flow = None
        if run is not None:
            if resume_note:
                self._say("system/resume.j2", flow_title=self._t(flow.title))
            self._render_step(flow, run)
            return
        run = self.unit.start_run(self.user, name, flow.start)
        self._render_step(flow, run)

    def _menu(self) -> None:
        steps, counts = self.unit.flow_states(self.user)
        open_steps = dict(steps)  # the newest, if several
        where = tuple((open_steps.get(flow.name), counts.get(flow.name, 0))
                      for flow in self.engine.menu_flows)
        # The menu shows nothing but each flow's state, and most people are in one of a
        # few dozen combinations of states: each is rendered once per language.
        menus = self.engine.menus
        messages = menus.get((self.locale, where))
        if messages is None:
            messages = self._menu_messages(where)
            if len(menus) >= MENUS_KEPT:
                menus.clear()
            menus[(self.locale, where)] = messages
        self.reply.messages.extend(messages)

    def _menu_messages(self, where: tuple[tuple[str | None, int], ...]) -> tuple[Message, ...]:
        """The menu, given (open step or None, times completed) for each flow in it."""
        entries: list[dict[str, Any]] = []
        buttons: list[tuple[Button, ...]] = []
        for flow, (step, completed) in zip(self.engine.menu_flows, where, strict=True):
            number, total = flow.position(step or flow.start)
            entries.append({
                "name": flow.name, "title": self._t(flow.title),
                "description": self._t(flow.description),
                "command": f"/{flow.command}" if flow.command else None,
                "status": "active" if step else ("done" if completed else "new"),
                "step_number": number, "step_count": total,
                "times_completed": completed,
            })
            buttons.append((Button(self._t(flow.title), callbacks.flow(flow.name)),))
        # Without the person in the context: the menu cannot depend on who asks for it.
        texts = self.engine.renderer.render("system/menu.j2", self.locale, {"flows": entries})
        return _messages(texts, tuple(buttons))

    def _progress(self) -> None:
        open_steps, counts = self.unit.flow_states(self.user)
        completed = [{"title": self._t(self.engine.flows[name].title), "count": count}
                     for name, count in counts.items() if name in self.engine.flows
                     and self.engine.flows[name].in_menu]
        in_progress = []
        for name, step in open_steps:
            flow = self.engine.flows.get(name)
            if flow is not None and flow.in_menu:
                number, total = flow.position(step)
                in_progress.append({"title": self._t(flow.title), "step_number": number,
                                    "step_count": total})
        moments, reflections = self.unit.practice(self.user, self.now - timedelta(days=32))
        calendar = self._practice_calendar(moments)
        self.images.append(PendingImage("practice.png", partial(draw_calendar, calendar),
                                        before=len(self.reply.messages)))
        self._say("system/progress.j2", completed=completed, in_progress=in_progress,
                  reflections=reflections,
                  keep_reflections=bool(self.user.keep_reflections),
                  calendar=calendar_text(calendar.month, calendar.practised_days))
        safety = self._safety_trend()  # its chart, if any, goes just before its words
        if safety is not None:
            self._say("system/progress_trend.j2", safety=safety)
        self._say("system/progress_end.j2")

    def _safety_trend(self) -> dict[str, Any] | None:
        """How the latest relationship's safety checks moved: as text, and as a chart (asked
        for here, drawn after the turn) once there are two checks to compare."""
        checks = self.unit.safety_checks(self.user)
        if not checks:
            return None
        relationship = checks[-1].relationship
        same = [check for check in checks if check.relationship == relationship][-TREND_POINTS:]
        zone = self.user.timezone or "UTC"
        points = tuple(
            (format_date(local_day(as_utc(check.created_at), zone), "d MMM yyyy",
                         locale=self.locale),
             tuple((key, float(score)) for key, score in check.scores.get("elements", {}).items()
                   if isinstance(score, int | float) and 1 <= score <= 5))
            for check in same)
        labels = tuple((element.key, self._t(element.name)) for element in SAFETY_ELEMENTS)
        about = self._relationship_label(relationship)
        request = TrendRequest(points, labels, f"{self._t(SAFETY_TITLE)}: {about}")
        if len(points) >= 2:
            self.images.append(PendingImage("safety-trend.png", partial(draw_trend, request),
                                            before=len(self.reply.messages)))
        return {"count": len(same), "about": about, "since": points[0][0],
                "text": request.text() if len(points) >= 2 else ""}

    def _relationship_label(self, relationship: str) -> str:
        flow = self.engine.flows.get("safety")
        step = flow.steps.get("relationship") if flow else None
        choice = step.choice(relationship) if step else None
        return self._t(choice.label) if choice else relationship

    def _practice_calendar(self, moments: list[datetime]) -> CalendarRequest:
        """Days practised this month, in the person's own time zone, from `moments` (those
        of the last 32 days at least); drawn after the turn."""
        zone = self.user.timezone or "UTC"
        today = local_day(self.now, zone)
        month_start = today.replace(day=1)
        days = {local_day(as_utc(moment), zone) for moment in moments}
        practised = {day.day for day in days if day >= month_start and day <= today}
        return CalendarRequest(today.year, today.month, frozenset(practised), today.day,
                               _month_title(today.year, today.month, self.locale),
                               _day_names(self.locale))

    def _journal(self, page: int, only: str | None = None) -> None:
        flow = only[2:] if only and only.startswith("f_") else None
        theme = only[2:] if only and only.startswith("t_") else None
        total = self.unit.reflection_count(self.user, flow, theme)
        pages = max(1, -(-total // JOURNAL_PAGE_SIZE))
        page = min(page, pages - 1)
        rows = self.unit.reflections_page(self.user, page * JOURNAL_PAGE_SIZE,
                                          JOURNAL_PAGE_SIZE, flow, theme)
        entries = [{"date": format_date(row.created_at, format="medium", locale=self.locale),
                    "flow_title": self._t(self._flow_title(row.flow)),
                    "label": self._t(self._answer_label(row.flow, row.question)),
                    "text": row.text} for row in rows]
        nav = []
        if page > 0:
            nav.append(Button(self._t(NEWER_LABEL), callbacks.journal(page - 1, only)))
        if page + 1 < pages:
            nav.append(Button(self._t(OLDER_LABEL), callbacks.journal(page + 1, only)))
        rows_of_buttons = [tuple(nav)] if nav else []
        rows_of_buttons += _rows(self._journal_filters(only), per_row=2)
        self._say("system/journal.j2", buttons=tuple(rows_of_buttons), entries=entries,
                  page=page + 1, pages=pages, total=total,
                  keep_reflections=bool(self.user.keep_reflections),
                  showing=self._filter_title(only))

    def _journal_filters(self, current: str | None) -> list[Button]:
        """One button per flow and per daily-prompt theme the person has reflections for."""
        kinds = self.unit.reflection_kinds(self.user)
        groups = {("t", theme) if flow == "daily" else ("f", flow) for flow, theme in kinds}
        if len(groups) < 2 and not current:
            return []  # one flow or one theme only: a filter would show the same
        options = [f"f_{flow}" for flow in dict.fromkeys(flow for flow, _ in kinds)]
        options += [f"t_{theme}" for flow, theme in kinds if flow == "daily"]
        buttons = [Button(self._t(ALL_LABEL), callbacks.journal(0))] if current else []
        return buttons + [Button(self._filter_title(option), callbacks.journal(0, option))
                          for option in options if option != current]

    def _filter_title(self, only: str | None) -> str:
        if not only:
            return ""
        if only.startswith("f_"):
            return self._t(self._flow_title(only[2:]))
        return self._t(THEME_TITLES.get(only[2:], only[2:]))

    def _flow_title(self, name: str) -> str:
        flow = self.engine.flows.get(name)
        return flow.title if flow else DAILY_TITLE if name == "daily" else name

    def _answer_label(self, flow_name: str, answer: str) -> str:
        prompt = self.engine.daily.by_id.get(answer) if self.engine.daily else None
        if flow_name == "daily" and prompt is not None:
            return prompt.text
        flow = self.engine.flows.get(flow_name)
        for step in flow.steps.values() if flow else ():
            if step.answer == answer and step.label:
                return step.label
        return answer.replace("_", " ").capitalize()

    # ---- crisis ------------------------------------------------------------------

    def _crisis(self, category: Category) -> None:
        """Resources first; the words that raised it are not kept, and the flow stays put."""
        self.unit.record_crisis(self.user, category.value)
        if category is Category.ABUSE:
            self.user.crisis_prompt = "safe_to_read"
            buttons = ((Button(self._t(SAFE_TO_READ_LABEL), callbacks.crisis("read")),),
                       (Button(self._t(NOT_NOW_LABEL), callbacks.crisis("later")),))
            self._say("system/crisis_safe_to_read.j2", buttons=buttons)
            return
        self._crisis_resources(category.value)

    def _crisis_resources(self, category: str) -> None:
        self.user.crisis_prompt = "continue"
        buttons = ((Button(self._t(CONTINUE_LABEL), callbacks.crisis("ok")),),)
        self._say("system/crisis.j2", buttons=buttons, category=category,
                  resources=self._resources(category))

    def _typed_crisis_answer(self, typed: str) -> bool:
        """A typed reply to the crisis buttons just shown; True if it was one."""
        prompt, self.user.crisis_prompt = self.user.crisis_prompt, None
        if prompt == "safe_to_read":
            picked = match_label(typed, [self._t(SAFE_TO_READ_LABEL), self._t(NOT_NOW_LABEL)])
            choice = {0: "read", 1: "later"}.get(picked) if picked is not None else None
        else:
            picked = match_label(typed, [self._t(CONTINUE_LABEL)])
            choice = "ok" if picked == 0 and not typed.strip().isdigit() or typed == "1" else None
        if choice is None:
            return False
        self._crisis_choice(choice)
        return True

    def _crisis_choice(self, choice: str) -> None:
        self.user.crisis_prompt = None
        if choice == "read":
            self._crisis_resources(Category.ABUSE.value)
        elif choice == "later":
            self._say("system/crisis_later.j2", resources=self._resources(Category.ABUSE.value))
        else:
            self._say("system/crisis_continue.j2")
            if not self._repeat_current_step():
                if self.user.onboarded:
                    self._menu()
                else:
                    self._enter(ONBOARDING, resume_note=False)

    # ---- what people own: export, erase, hide -----------------------------------

    def _export(self) -> None:
        runs = self.unit.all_runs(self.user)
        reflections = self.unit.reflections(self.user)
        titles = {name: self._t(flow.title) for name, flow in self.engine.flows.items()}
        labels = {(name, step.answer): self._t(step.label)
                  for name, flow in self.engine.flows.items()
                  for step in flow.steps.values() if step.answer and step.label}
        data = export_data(self.user, runs, reflections, titles, labels,
                           self.unit.crisis_events(self.user), self.unit.safety_checks(self.user),
                           self.unit.planned_check_backs(self.user))
        documents = export_documents(data, self.engine.renderer, self.locale)
        self._say("system/export.j2", reflections=len(reflections))
        last = self.reply.messages[-1]
        self.reply.messages[-1] = Message(last.text, last.buttons, documents)

    def _ask_erase(self) -> None:
        self.user.confirm_delete_at = utcnow()
        buttons = ((Button(self._t(ERASE_LABEL), callbacks.erase(True)),),
                   (Button(self._t(KEEP_LABEL), callbacks.erase(False)),))
        self._say("system/delete_confirm.j2", buttons=buttons,
                  reflections=self.unit.reflection_count(self.user))

    def _erase_pending(self) -> bool:
        asked = self.user.confirm_delete_at
        if asked is None:
            return False
        return self.now - as_utc(asked) <= ERASE_WINDOW

    def _typed_erase_answer(self, incoming: Incoming) -> bool:
        """A typed reply to "delete everything?"; True if it was one."""
        if incoming.kind is InputKind.TEXT and self._erase_pending():
            picked = match_label(incoming.text, [self._t(ERASE_LABEL), self._t(KEEP_LABEL)])
            if picked is not None:
                self._answer_erase(picked == 0)
                return True
        self.user.confirm_delete_at = None  # anything else means "not now"
        return False

    def _answer_erase(self, confirm: bool) -> None:
        self.user.confirm_delete_at = None
        if not confirm:
            self._say("system/delete_kept.j2")
            self._repeat_current_step()
            return
        self._say("system/deleted.j2")  # rendered while the person's language is still known
        self.unit.erase(self.user)
        self.erased = True
        self.reply.remember_sent = False

    def _hide(self) -> None:
        self.reply.delete_message_ids = self.unit.recent_message_ids(self.user, HIDE_WINDOW)
        self.unit.forget_messages(self.user)
        self.reply.remember_sent = False
        self._say("system/hidden.j2")

    # ---- button presses --------------------------------------------------------

    def _press(self, data: str) -> None:
        press = callbacks.parse(data)
        if isinstance(press, callbacks.FlowPress) and press.flow in self.engine.flows:
            if not self.user.onboarded and press.flow != ONBOARDING:
                self._command("start")
            else:
                self._request_flow(press.flow)
            return
        if isinstance(press, callbacks.DailyPress) and self.practice is not None:
            self.practice.press(press.choice)
            return
        if isinstance(press, callbacks.CrisisPress):
            self._crisis_choice(press.choice)
            return
        if isinstance(press, callbacks.ErasePress) and self._erase_pending():
            self._answer_erase(press.confirm)
            return
        if isinstance(press, callbacks.JournalPress) and self.user.onboarded:
            self._journal(press.page, press.only)
            return
        if isinstance(press, callbacks.SwitchPress) and self.user.pending_flow:
            self._answer_switch(press.confirm)
            return
        if isinstance(press, callbacks.StepPress):
            located = self._current()
            if located is not None:
                flow, run, step = located
                if run.id == press.run_id and step.name == press.step:
                    self._apply_press(flow, run, step, press.value)
                    return
            if self._press_elsewhere(press):
                return
        self.stale_button()

    def _press_elsewhere(self, press: callbacks.StepPress) -> bool:
        """A button of another flow's open run, where that run still is (say, under a
        check-back): the person goes back to that flow, and the one they were in is kept."""
        run = self.unit.run_by_id(press.run_id)
        flow = self.engine.flows.get(run.flow) if run is not None else None
        if run is None or flow is None or run.user_id != self.user.id or run.status != "open" \
                or run.step != press.step or run.step not in flow.steps \
                or not self.user.onboarded or self.unit.open_run(self.user, flow.name) is not run:
            return False
        self.user.active_flow = flow.name
        self.user.pending_flow = None
        self._apply_press(flow, run, flow.steps[run.step], press.value)
        return True

    def _apply_press(self, flow: Flow, run: FlowRun, step: Step, value: str) -> None:
        if value == callbacks.SKIP_VALUE:
            if step.skippable:
                self._advance(flow, run, step, SKIP, None)
                return
        elif step.expects is Expects.CHOICE and step.choice(value) is not None:
            self._advance(flow, run, step, pick(value), value)
            return
        elif step.expects is Expects.SCALE and value.isdigit():
            number = int(value)
            if step.scale[0] <= number <= step.scale[1]:
                self._advance(flow, run, step, self._scale_event(step, number), number)
                return
        elif self._is_offered(step, value):
            self._advance(flow, run, step, ANSWER, value)
            return
        elif (pressed := self._pressed_value(run, step, value)) is not None:
            self._advance(flow, run, step, ANSWER, pressed)
            return
        self.stale_button()

    def _is_offered(self, step: Step, value: str) -> bool:
        """Whether a country or language button with `value` is one this step offers."""
        if step.expects is Expects.COUNTRY:
            return step.choice(value) is not None
        return step.expects is Expects.LANGUAGE and value in self.engine.renderer.locales

    def _pressed_value(self, run: FlowRun, step: Step, value: str) -> str | None:
        """What a time or time-zone button stands for, if this step offers it."""
        if step.expects is Expects.TIME and step.choice(value) is not None:
            when = _clock_value(value)
            return when.strftime("%H:%M") if when else None
        if step.expects is Expects.TIMEZONE and value.startswith("z") and value[1:].isdigit():
            zones = run.answers.get("_zones") or []
            index = int(value[1:])
            return str(zones[index]) if index < len(zones) else None
        return None

    def _answer_switch(self, confirm: bool) -> None:
        target = self.user.pending_flow
        self.user.pending_flow = None
        if target is None:
            return
        if confirm:
            self._enter(target, resume_note=True)
            return
        current = self.user.active_flow
        if current is not None:
            self._say("system/stay.j2", flow_title=self._t(self.engine.flows[current].title))
        self._repeat_current_step()

    def stale_button(self) -> None:
        """A button that no longer fits where the person is: say so, and show where they are."""
        self.reply.notice = self._t(N_("That button is from an earlier message."))
        self._say("system/stale_button.j2")
        if not self._repeat_current_step():
            self._menu()

    # ---- typed text ------------------------------------------------------------

    def _text(self, raw: str) -> None:
        typed = raw.strip()
        if self.user.pending_flow:
            word = normalise(typed)
            picked = match_label(typed, [self._t(SWITCH_LABEL), self._t(STAY_LABEL)])
            if picked is not None or word in YES_WORDS or word in NO_WORDS:
                self._answer_switch(picked == 0 or word in YES_WORDS)
                return
            self.user.pending_flow = None  # they moved on: treat it as an answer to the step
        located = self._current()
        if located is None:
            self._text_outside_flow(typed)
            return
        flow, run, step = located
        if not typed:
            self._say("system/empty.j2", buttons=self._step_buttons(flow, run, step))
            return
        if len(typed) > self.engine.config.max_answer_chars:
            self._say("system/too_long.j2", limit=self.engine.config.max_answer_chars,
                      buttons=self._step_buttons(flow, run, step))
            return
        if step.skippable and normalise(typed) in SKIP_WORDS:
            self._advance(flow, run, step, SKIP, None)
            return
        self._typed_answer(flow, run, step, typed)

    def _typed_answer(self, flow: Flow, run: FlowRun, step: Step, typed: str) -> None:
        def buttons() -> tuple[tuple[Button, ...], ...]:  # asked again: only if not understood
            return self._step_buttons(flow, run, step)

        if step.expects is Expects.TEXT:
            self._advance(flow, run, step, ANSWER, typed)
        elif step.expects is Expects.CHOICE:
            index = match_label(typed, self._labels(step))
            if index is None:
                index = next((n for n, choice in enumerate(step.choices)
                              if choice.typed_as(normalise(typed))), None)
            if index is None:
                self._say("system/expected_choice.j2", buttons=buttons(),
                          labels=self._labels(step))
                return
            self._advance(flow, run, step, pick(step.choices[index].value),
                                step.choices[index].value)
        elif step.expects is Expects.SCALE:
            number = parse_scale(typed, *step.scale)
            if number is None:
                self._say("system/expected_scale.j2", buttons=buttons(),
                          low=step.scale[0], high=step.scale[1])
                return
            self._advance(flow, run, step, self._scale_event(step, number), number)
        elif step.expects is Expects.COUNTRY:
            index = match_label(typed, self._labels(step))
            code = step.choices[index].value if index is not None else parse_country(typed)
            if code is None:
                self._say("system/expected_country.j2", buttons=buttons())
                return
            self._advance(flow, run, step, ANSWER, code)
        elif step.expects is Expects.LANGUAGE:
            locales = self.engine.renderer.locales
            index = match_label(typed, [locale_display_name(code) for code in locales])
            locale = locales[index] if index is not None else parse_language(typed, locales)
            if locale is None:
                self._say("system/expected_choice.j2", buttons=buttons(),
                          labels=[locale_display_name(code) for code in locales])
                return
            self._advance(flow, run, step, ANSWER, locale)
        elif step.expects is Expects.TIME:
            index = match_label(typed, self._labels(step))
            when = parse_clock(typed) if index is None else _clock_value(step.choices[index].value)
            if when is None:
                self._say("system/expected_time.j2", buttons=buttons())
                return
            self._advance(flow, run, step, ANSWER, when.strftime("%H:%M"))
        elif step.expects is Expects.TIMEZONE:
            self._typed_zone(flow, run, step, typed)

    def _typed_zone(self, flow: Flow, run: FlowRun, step: Step, typed: str) -> None:
        """A city, country or the local time now: one match moves on, several are offered."""
        zones = zones_for(typed) or zones_from_local_time(self.now, typed)
        if len(zones) == 1:
            self._advance(flow, run, step, ANSWER, zones[0])
            return
        answers = answers_copy(run.answers)
        answers["_zones"] = zones[:4]
        run.answers = answers
        self._say("system/expected_zone.j2", buttons=self._step_buttons(flow, run, step),
                  zones=[describe(zone, self.now) for zone in zones[:4]])

    def _text_outside_flow(self, typed: str) -> None:
        if not self.user.onboarded:
            self._enter(ONBOARDING, resume_note=False)
            return
        if typed and self.practice is not None and self.practice.answer(typed):
            return
        menu_flows = self.engine.menu_flows
        index = match_label(typed, [self._t(flow.title) for flow in menu_flows]) if typed else None
        if index is not None and not typed.isdigit():
            self._request_flow(menu_flows[index].name)
            return
        self._say("system/outside_flow.j2")
        self._menu()

    def _not_text(self, media: str) -> None:
        located = self._current()
        if located is None:
            self._say("system/not_text.j2", kind=media, expected="none")
            return
        flow, run, step = located
        self._say("system/not_text.j2", kind=media, expected=step.expects.value,
                  buttons=self._step_buttons(flow, run, step))

    # ---- moving through a flow -------------------------------------------------

    def _current(self) -> tuple[Flow, FlowRun, Step] | None:
        name = self.user.active_flow
        flow = self.engine.flows.get(name) if name else None
        if flow is None:
            return None
        run = self.unit.open_run(self.user, flow.name)
        if run is None or run.step not in flow.steps:
            self.user.active_flow = None
            return None
        return flow, run, flow.steps[run.step]

    def _repeat_current_step(self) -> bool:
        located = self._current()
        if located is None:
            return False
        flow, run, _step = located
        self._render_step(flow, run)
        return True

    @staticmethod
    def _scale_event(step: Step, number: int) -> str:
        index = step.route_for(number)
        return ANSWER if index is None else route(index)

    def _advance(self, flow: Flow, run: FlowRun, step: Step, event: str, value: Any) -> None:
        """Record the answer to `step`, move along the flow's machine and show what comes next."""
        if value is not None:
            self._record(run, step, value)
        elif step.answer and step.answer in run.answers:
            # Skipped this time: an answer from an earlier pass (a loop, or answers carried
            # into a follow-up) must not speak for it.
            answers = answers_copy(run.answers)
            del answers[step.answer]
            run.answers = answers
        destination = self.engine.machines[flow.name].advance(step.name, event)
        run.step = destination
        next_step = flow.steps[destination]
        self._render_step(flow, run, entering=True)
        if next_step.end:
            self._finish(flow, run)
            if next_step.after == "menu":
                self._menu()

    def _record(self, run: FlowRun, step: Step, value: Any) -> None:
        if step.profile == "keep_reflections":
            self.user.keep_reflections = value in ("yes", True)
        elif step.profile == "focus":
            self.user.focus = value if value in FOCUS_VALUES else None
        elif step.profile == "country":
            self.user.country = str(value)
        elif step.profile == "language":
            self.user.language = str(value)
            self.locale = self.user.language
        elif step.profile == "daily_enabled":
            self.user.daily_enabled = value in ("yes", True)
            self.reschedule = True
        elif step.profile == "daily_time":
            self.user.daily_time = str(value)
            self.reschedule = True
        elif step.profile == "timezone":
            self.user.timezone = str(value)
            self.reschedule = True
        elif step.profile in ("quiet_start", "quiet_end"):
            if value == "none":  # quiet hours off
                self.user.quiet_start = self.user.quiet_end = None
            else:
                setattr(self.user, step.profile, str(value))
            self.reschedule = True
        elif step.profile == "weekly_day":
            self.user.weekly_day = int(value[1:]) if str(value).startswith("d") else None
            self.reschedule = True
        elif step.profile == "discreet":
            self.user.discreet = value in ("yes", True)
        if step.answer:
            answers = answers_copy(run.answers)
            answers[step.answer] = value
            run.answers = answers
        if step.keep and step.answer and self.user.keep_reflections and isinstance(value, str):
            choice = step.choice(value) if step.expects is Expects.CHOICE else None
            # A choice is kept as the words the person picked, as they read them.
            self.unit.keep_reflection(self.user, run, step.answer,
                                      self._t(choice.label) if choice else value)
        if step.check_back is not None:
            self._plan_check_back(run, step, value)

    def _plan_check_back(self, run: FlowRun, step: Step, value: Any) -> None:
        """The person chose when Haven should come back to them: plan it (or, for "none",
        drop one planned earlier for the same place)."""
        check_back = step.check_back
        assert check_back is not None
        target = check_back.wait_at or check_back.start
        assert target is not None
        due = check_back_due(self.now, value, self.user.timezone, self.user.daily_time)
        if due is None:
            self.unit.cancel_check_back(run, target)
        else:
            self.unit.plan_check_back(self.user, run, due, target,
                                      run.answers if check_back.start else None)

    def check_back(self, job: ScheduledJob) -> bool:
        """Send a due check-back (see bot.flows.spec.CheckBack); False if it no longer fits."""
        source = self.unit.run_by_id(job.run_id) if job.run_id is not None else None
        flow = self.engine.flows.get(source.flow) if source is not None else None
        if source is None or flow is None or job.target is None:
            return False
        templates = [step.check_back.template for step in flow.steps.values()
                     if step.check_back and step.check_back.wait_at == job.target]
        if templates and templates[0]:
            if source.status != "open" or source.step != job.target:
                return False  # they moved on already
            self._say(templates[0], answers=dict(source.answers))
            shown, run = flow, source
        elif job.target in self.engine.flows:
            shown = self.engine.flows[job.target]
            run = self.unit.start_run_with(self.user, shown.name, shown.start, job.answers or {})
        else:
            return False
        self._render_step(shown, run, entering=run is not source)
        if self.user.active_flow is None:
            self.user.active_flow = shown.name  # so a typed answer counts as well
        return True

    def _finish(self, flow: Flow, run: FlowRun) -> None:
        self.unit.finish_run(run)
        self.user.active_flow = None
        if flow.name == ONBOARDING:
            self.user.onboarded = True

    # ---- rendering -------------------------------------------------------------

    def _render_step(self, flow: Flow, run: FlowRun, entering: bool = False) -> None:
        step = flow.steps[run.step]
        extra: dict[str, Any] = {}
        if step.action is not None:
            extra = ACTIONS[step.action].context(ActionCall(self, flow, run, step, entering))
        self._say(step.template, buttons=self._step_buttons(flow, run, step),
                  answers=dict(run.answers), **extra)

    def _step_buttons(self, flow: Flow, run: FlowRun, step: Step) -> tuple[tuple[Button, ...], ...]:
        def button(label: str, value: str) -> Button:
            return Button(label, callbacks.step(run.id, step.name, value))

        rows: list[tuple[Button, ...]] = []
        if step.expects in (Expects.CHOICE, Expects.COUNTRY):
            labelled = [button(self._t(choice.label), choice.value) for choice in step.choices]
            rows += _rows(labelled, per_row=2 if step.expects is Expects.COUNTRY else 1)
        elif step.expects is Expects.SCALE:
            low, high = step.scale
            numbers = [button(str(n), str(n)) for n in range(low, high + 1)]
            # Telegram shows at most eight buttons in a row: a 1-10 scale takes two rows of five.
            rows += _rows(numbers, per_row=len(numbers) if len(numbers) <= 7 else 5)
        elif step.expects is Expects.LANGUAGE:
            locales = self.engine.renderer.locales
            rows += _rows([button(locale_display_name(code), code) for code in locales], 2)
        elif step.expects is Expects.TIME:
            rows += _rows([button(self._t(c.label), c.value) for c in step.choices], 2)
        elif step.expects is Expects.TIMEZONE:
            zones = run.answers.get("_zones") or []
            rows += [(button(zone, f"z{index}"),) for index, zone in enumerate(zones)]
        if step.skippable:
            rows.append((button(self._t(SKIP_LABEL), callbacks.SKIP_VALUE),))
        return tuple(rows)

    def _say(self, template: str, buttons: tuple[tuple[Button, ...], ...] = (),
             **context: Any) -> None:
        context.setdefault("answers", {})
        texts = self.engine.renderer.render(template, self.locale,
                                            {"user": LiveUserView(self.user), **context})
        self.reply.messages.extend(_messages(texts, buttons))

    def _labels(self, step: Step) -> list[str]:
        """The step's choice labels, as the person sees them."""
        return [self._t(choice.label) for choice in step.choices]

    def _t(self, message: str) -> str:
        return self.engine.renderer.gettext(self.locale, message)

    # What bot.practice, working inside a turn, may use.
    say = _say
    t = _t

    def _resources(self, topic: str | None = None) -> dict[str, Any]:
        return resources_view(lines_for(self.user.country, topic))

    def _commands(self) -> list[dict[str, str]]:
        return [{"command": f"/{command}", "description": self._t(description)}
                for command, description in self.engine.command_menu()]


def _messages(texts: list[str], buttons: tuple[tuple[Button, ...], ...]) -> tuple[Message, ...]:
    """A template's chat messages, its buttons under the last of them."""
    return tuple(Message(text, buttons if index == len(texts) - 1 else ())
                 for index, text in enumerate(texts))


@lru_cache(maxsize=256)
def _month_title(year: int, month: int, locale: str) -> str:
    """The month and year ("November 2026") in the person's language; Babel parses the
    locale on every call, so each title is made once."""
    return format_date(date(year, month, 1), "LLLL yyyy", locale=locale)


@lru_cache(maxsize=64)
def _day_names(locale: str) -> tuple[str, ...]:
    """The week's abbreviated day names, Monday first, in the person's language."""
    names = get_day_names("abbreviated", locale=locale)
    return tuple(names[index] for index in range(7))


def _clock_value(value: str) -> time | None:
    """A time button's value, "0830", as a time."""
    return parse_clock(f"{value[:2]}:{value[2:]}") if len(value) == 4 and value.isdigit() else None


def _rows(buttons: list[Button], per_row: int) -> list[tuple[Button, ...]]:
    return [tuple(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row)]
