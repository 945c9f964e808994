"""Per-person flood control: a burst gets one gentle warning, not a reply to every message.

A leaky bucket per chat (aiolimiter): a few messages in quick succession are fine;
past that, the first extra message gets a warning and the rest are let go quietly
until the bucket drains. Crisis messages are never held back (the engine checks
for them first). Buckets live in memory: losing them on a restart only forgives.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum

from aiolimiter import AsyncLimiter


class Admission(StrEnum):
    ALLOW = "allow"
    WARN = "warn"  # the first message over the limit: answer it with a warning
    DROP = "drop"  # later ones: no reply at all


class FloodGuard:
    def __init__(self, burst: int = 8, period_seconds: float = 10.0,
                 max_chats: int = 100_000) -> None:
        self.burst = burst
        self.period_seconds = period_seconds
        self.max_chats = max_chats
        self._buckets: OrderedDict[int, tuple[AsyncLimiter, bool]] = OrderedDict()

    async def admit(self, chat_id: int) -> Admission:
        limiter, warned = self._buckets.pop(chat_id, (None, False))
        if limiter is None:
            limiter = AsyncLimiter(self.burst, self.period_seconds)
        if limiter.has_capacity():
            await limiter.acquire()  # immediate: there is capacity
            admission, warned = Admission.ALLOW, False
        elif warned:
            admission = Admission.DROP
        else:
            admission, warned = Admission.WARN, True
        self._buckets[chat_id] = (limiter, warned)  # most recently seen last
        while len(self._buckets) > self.max_chats:
            self._buckets.popitem(last=False)
        return admission
