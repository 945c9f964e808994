"""The conversation engine: one turn = load state, apply the input, render, save.

It knows nothing of Telegram or terminals: adapters turn what a person did into an
`Incoming`, and send the `Reply` it returns. All state lives in the database; the
only thing kept in memory is a lock per chat, so one person's updates are handled
one at a time, in order.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from bot.checkbacks import CHECKBACK
from bot.crisis.detector import CrisisDetector, CrisisMatch, default_detector
from bot.crisis_lines import lines_for
from bot.daily import PromptLibrary
from bot.drawing import Drawer, ThreadDrawer
from bot.flood import Admission, FloodGuard
from bot.flows.machine import FlowMachine
from bot.flows.spec import Flow
from bot.i18n import N_
from bot.messages import Document, Incoming, InputKind, Message, Reply
from bot.practice import (
    DAILY,
    WEEKLY,
    ClaimedBatch,
    DailyBatch,
    DailyPractice,
    Delivery,
    NextDue,
    plan_all,
    plan_next_dailies,
    plan_next_daily,
    plan_next_weekly,
    quiet_until,
)
from bot.rendering import Renderer
from bot.storage.models import ScheduledJob, User, as_utc, utcnow
from bot.storage.repository import Repository, UnitOfWork
from bot.turn import Turn
from bot.views import PLACEHOLDER, resources_view

log = logging.getLogger(__name__)
# A check-back is sent late rather than never (the person asked for it), but not a week late.
CHECK_BACK_GRACE = timedelta(days=7)


# Turns of unknown fate remembered at once (see Engine._keep_unconfirmed): at a few KB each,
# tens of MB at most.
MAX_UNCONFIRMED = 10_000


@dataclass(frozen=True)
class Unconfirmed:
    """A turn that ran to its end but whose commit got no answer (the database went away
    at that moment): it may be stored or not. Kept until the person's next message."""

    update_id: int
    kind: InputKind
    text: str
    reply: Reply


@dataclass(frozen=True)
class EngineConfig:
    max_answer_chars: int = 2000


class Engine:
    def __init__(
        self,
        flows: dict[str, Flow],
        machines: dict[str, FlowMachine],
        renderer: Renderer,
        repository: Repository,
        config: EngineConfig | None = None,
        detector: CrisisDetector | None = None,
        flood: FloodGuard | None = None,
        daily: PromptLibrary | None = None,
        clock: Callable[[], datetime] = utcnow,
        drawer: Drawer | None = None,
    ) -> None:
        """`drawer`: where pictures are drawn (bot.drawing); by default in a thread."""
        self.flows = flows
        self.drawer = drawer or ThreadDrawer()
        self.daily = daily
        self.clock = clock
        self.detector = detector or default_detector()
        self.flood = flood or FloodGuard()
        self.machines = machines
        self.renderer = renderer
        self.repository = repository
        self.config = config or EngineConfig()
        self.commands = {flow.command: flow.name for flow in flows.values() if flow.command}
        self.menu_flows = [flow for flow in flows.values() if flow.in_menu]  # in their order
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._unconfirmed: dict[int, Unconfirmed] = {}
        # (locale, each menu flow's state) -> the menu's messages; see Turn._menu.
        self.menus: dict[tuple[str, tuple[tuple[str | None, int], ...]], tuple[Message, ...]] = {}

    async def close(self) -> None:
        """Stop drawing and close the database."""
        self.drawer.close()
        await self.repository.close()

    def command_menu(self) -> list[tuple[str, str]]:
        """(command, description) pairs for the client's command menu."""
        entries = [("start", N_("Begin, or set up again")), ("menu", N_("Everything Haven offers"))]
        for flow in self.menu_flows:
            if flow.command:
                entries.append((flow.command, flow.description or flow.title))
        entries += [
            ("checkin", N_("Today's question, now")),
            ("pause", N_("Pause the daily prompt")),
            ("resume", N_("Start the daily prompt again")),
            ("progress", N_("What you have done so far")),
            ("journal", N_("Your reflections, newest first")),
            ("export", N_("Download everything Haven keeps about you")),
            ("delete", N_("Erase everything Haven keeps about you")),
            ("hide", N_("Clear recent messages from this chat")),
            ("settings", N_("Your focus, country and language")),
            ("cancel", N_("Leave the current flow (progress is kept)")),
            ("help", N_("Crisis lines and how Haven works")),
        ]
        return list(dict(entries).items())  # one entry per command, in this order

    def remember_sent(self, chat_id: int, message_ids: list[int]) -> None:
        """Record the ids of messages just sent to a chat, so /hide can remove them later."""
        self.repository.remember_messages(chat_id, message_ids)

    async def set_blocked(self, chat_id: int, blocked: bool) -> None:
        """Telegram said the person blocked Haven (nothing more is sent) or came back."""
        now = self.clock()

        def mark(unit: UnitOfWork) -> None:
            user = unit.find_user(chat_id)
            if user is None:
                return
            user.blocked_at = now if blocked else None
            if not blocked:
                plan_all(unit, user, now)

        try:
            await self.repository.run(mark)
        except Exception:
            log.exception("could not record that a person blocked or unblocked Haven")

    async def handle(self, incoming: Incoming) -> Reply:
        """Handle one update for one chat; never raises for bad input.

        Crisis language is looked for first, before flood control and before the
        database, so that it is answered even in a burst or while storage is down.
        """
        crisis = None
        if incoming.kind is InputKind.TEXT:
            crisis = self._crisis_check(incoming.text)
        admission = await self.flood.admit(incoming.chat_id)
        if crisis is None and admission is not Admission.ALLOW:
            return self._flood_reply(incoming, admission)
        lock = self._locks.get(incoming.chat_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[incoming.chat_id] = lock
        async with lock:
            ran: list[Turn] = []

            def take_turn(unit: UnitOfWork) -> Turn:
                ran.append(Turn(self, unit, incoming, crisis).run())
                return ran[-1]

            try:
                earlier = self._unconfirmed.pop(incoming.chat_id, None)
                if earlier is not None and (repeat := await self._resent(earlier, incoming)):
                    return repeat
                hiding = incoming.kind is InputKind.COMMAND and incoming.text == "hide"
                if hiding and incoming.message_id is not None:
                    # /hide takes its own message too, and everything noted so far.
                    self.repository.remember_messages(incoming.chat_id, [incoming.message_id])
                    await self.repository.flush_messages()
                turn = await self.repository.run(take_turn, incoming.chat_id)
                for image in reversed(turn.images):
                    try:
                        png = await self.drawer.draw(image)
                    except Exception:  # the turn is kept, and its words say what the picture would
                        log.exception("a picture could not be drawn; sending the words alone")
                        continue
                    turn.reply.messages.insert(image.before, Message("", documents=(
                        Document(image.file_name, png, "image/png"),)))
                if turn.erased:
                    await self.repository.after_erase()
                elif incoming.message_id is not None and not (turn.duplicate or hiding):
                    self.repository.remember_messages(incoming.chat_id, [incoming.message_id])
                return turn.reply
            except Exception:
                # Never log the input itself: it may be someone's most private words.
                log.exception("turn failed", extra={"chat_kind": incoming.kind.value})
                if ran and incoming.update_id is not None:
                    self._keep_unconfirmed(incoming.chat_id, Unconfirmed(
                        incoming.update_id, incoming.kind, incoming.text, ran[-1].reply))
                return self._reply_without_storage(incoming, crisis)

    def _crisis_check(self, text: str) -> CrisisMatch | None:
        """What the crisis check found. Should the check itself fail (a fault in Haven, not
        in the message), the message goes on unchecked, logged, rather than go unanswered."""
        try:
            return self.detector.detect(text)
        except Exception:
            log.exception("the crisis check failed; the message goes on unchecked")
            return None

    def _keep_unconfirmed(self, chat_id: int, turn: Unconfirmed) -> None:
        """Note a turn of unknown fate, the newest per chat, and at most MAX_UNCONFIRMED in
        all: in a long outage the oldest are forgotten (their resent answers are then taken
        as new ones), so that memory stays bounded."""
        self._unconfirmed.pop(chat_id, None)
        self._unconfirmed[chat_id] = turn
        while len(self._unconfirmed) > MAX_UNCONFIRMED:
            del self._unconfirmed[next(iter(self._unconfirmed))]

    async def _resent(self, earlier: Unconfirmed, incoming: Incoming) -> Reply | None:
        """The reply of `earlier` if it was stored after all and `incoming` is the same message
        sent again (as the person was asked to); else None, and `incoming` is a turn of its own.

        Without this, an answer whose commit reached the database just before it went away
        would be taken twice: once as sent, and again, resent, as the next step's answer."""
        if (incoming.kind, incoming.text) != (earlier.kind, earlier.text):
            return None

        def was_stored(unit: UnitOfWork) -> bool:
            user = unit.find_user(incoming.chat_id)
            return user is not None and earlier.update_id in (user.recent_updates or [])

        try:
            stored = await self.repository.run(was_stored)
        except Exception:
            self._keep_unconfirmed(incoming.chat_id, earlier)  # still unknown: ask again later
            raise
        return earlier.reply if stored else None

    async def prepare_job(self, job_id: int, now: datetime,
                          grace: timedelta) -> tuple[int, Reply] | None:
        """The message a due job sends, and to whom; None if it is let go instead."""
        if self.daily is None:
            return None
        library = self.daily

        def prepare(unit: UnitOfWork) -> tuple[int, Reply] | None:
            job = unit.job(job_id)
            user = unit.user_by_id(job.user_id) if job is not None else None
            if job is None or user is None or job.state != "due":
                return None
            if job.kind == CHECKBACK:
                return self._prepare_check_back(unit, job, user, now)
            unwanted = ((job.kind == DAILY and not user.daily_enabled)
                        or (job.kind == WEEKLY and user.weekly_day is None))
            if user.blocked_at or user.paused or unwanted:
                job.state = "skipped"
                return None
            if now - as_utc(job.due_at) > grace:
                log.info("a prompt missed by more than the grace window was let go")
                job.state = "skipped"
                if job.kind == DAILY:
                    plan_next_daily(unit, user, now)
                elif job.kind == WEEKLY:
                    plan_next_weekly(unit, user, now)
                return None
            if (later := quiet_until(user, now)) is not None:
                job.due_at, job.claimed_at = later, None  # after the quiet hours, then
                return None
            turn = self._scheduled_turn(unit, user)
            practice = DailyPractice(turn, library, now)
            if job.kind == WEEKLY:
                practice.weekly(discreet=user.discreet)
            else:
                prompt = library.by_id.get(job.prompt_id or "") or practice.choose()
                practice.show(prompt, discreet=user.discreet)
                job.prompt_id = prompt.id
            return user.chat_id, turn.reply

        return await self.repository.run(prepare)

    def _scheduled_turn(self, unit: UnitOfWork, user: User) -> Turn:
        """A turn that Haven starts itself (nobody wrote): its words go to `user`."""
        turn = Turn(self, unit, Incoming(chat_id=user.chat_id, kind=InputKind.OTHER))
        turn.user, turn.locale = user, user.language
        return turn

    def _prepare_check_back(self, unit: UnitOfWork, job: ScheduledJob, user: User,
                            now: datetime) -> tuple[int, Reply] | None:
        """A check-back the person asked for. A pause stops daily prompts, not this; quiet
        hours hold back one that starts a flow days later, not one they are waiting for now."""
        if user.blocked_at or now - as_utc(job.due_at) > CHECK_BACK_GRACE:
            job.state, job.answers = "skipped", None
            return None
        starts_flow = job.target in self.flows
        if starts_flow and (later := quiet_until(user, now)) is not None:
            job.due_at, job.claimed_at = later, None
            return None
        turn = self._scheduled_turn(unit, user)
        if not turn.check_back(job):
            job.state, job.answers = "skipped", None
            return None
        return user.chat_id, turn.reply

    async def finish_job(self, job_id: int, now: datetime, delivered: bool) -> None:
        """Mark a job sent (or let go, if the person could not be reached); plan the next."""

        def finish(unit: UnitOfWork) -> None:
            job = unit.job(job_id)
            if job is None:
                return
            job.state, job.sent_at = ("sent" if delivered else "skipped"), now
            job.answers = None  # a sent check-back keeps no copy of anyone's words
            user = unit.user_by_id(job.user_id)
            if user is not None and job.kind == DAILY:
                plan_next_daily(unit, user, now)
            elif user is not None and job.kind == WEEKLY:
                plan_next_weekly(unit, user, now)

        await self.repository.run(finish)

    # ---- the daily fan-out, a batch at a time (see bot.practice) ----------------------

    @cached_property
    def _daily_batch(self) -> DailyBatch | None:
        return DailyBatch(self.daily, self.renderer) if self.daily is not None else None

    async def claim_batch(self, now: datetime, lease: timedelta, limit: int,
                          grace: timedelta) -> ClaimedBatch:
        """Claim up to `limit` due rows and ready every daily prompt among them, in one unit
        of work with a few set-based queries. Daily rows of people who paused, blocked Haven
        or turned the prompt off are let go; other kinds of rows, and daily ones missed by
        more than `grace` or held by quiet hours, are returned for `prepare_job`."""
        batch = self._daily_batch

        def claim(unit: UnitOfWork) -> ClaimedBatch:
            rows = unit.due_batch(now, lease, limit, grace)
            if batch is None:
                unit.claim_jobs([row.id for row in rows], now)
                return ClaimedBatch(len(rows), [], [row.id for row in rows])
            ready, skipped, others = batch.split(rows, now)
            unit.claim_jobs(others, now)
            unit.skip_jobs(skipped, now)
            return ClaimedBatch(len(rows), batch.prepare(unit, ready, now), others)

        return await self.repository.run(claim)

    async def finish_batch(self, deliveries: list[Delivery]) -> None:
        """`finish_job` for the daily prompts of a batch, in one unit of work: mark them sent
        (or let go, for people who could not be reached) and plan each person's next one."""
        if not deliveries:
            return
        next_due = NextDue()
        await self.repository.run(lambda unit: plan_next_dailies(unit, deliveries, next_due))

    def _flood_reply(self, incoming: Incoming, admission: Admission) -> Reply:
        if admission is Admission.DROP:
            return Reply()
        return self._render_alone(incoming, "system/slow_down.j2", {})

    def _reply_without_storage(self, incoming: Incoming, crisis: CrisisMatch | None) -> Reply:
        """When the database fails: crisis lines if they are needed, else "please resend"."""
        if crisis is None:
            return self._render_alone(incoming, "system/busy.j2", {})
        found = lines_for(None, crisis.category.value)
        return self._render_alone(incoming, "system/crisis.j2", {
            "category": crisis.category.value, "resources": resources_view(found)})

    def _render_alone(self, incoming: Incoming, template: str, context: dict[str, Any]) -> Reply:
        locale = self.renderer.translations.pick(incoming.language_code)
        texts = self.renderer.render(template, locale, {"user": PLACEHOLDER, **context})
        return Reply([Message(text) for text in texts])
