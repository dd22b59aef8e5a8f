"""Event fan-out to subscribers with bounded queues.

Publishing never waits. Each subscriber has its own queue; when it is full the
subscriber is marked ``overflowed`` and receives nothing more (drop policy
``DROP_SLOW_SUBSCRIBER``): its owner (a WebSocket handler, say) closes it. A slow
subscriber therefore never stalls scoring or the other subscribers. Subscribers that
must not lose alarms (MQTT) use ``keep_alarms=True``: when full, score events are dropped
and counted, alarms and stream events still queue up to a hard bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from spoofwatch.events import Event, ScoreEvent

logger = logging.getLogger(__name__)

DROP_SLOW_SUBSCRIBER = "drop-slow-subscriber"
DROP_SCORES_KEEP_ALARMS = "drop-scores-keep-alarms"


@dataclass(eq=False)
class Subscription:
    """One consumer's bounded view of the event stream."""

    maxsize: int
    stream: str | None = None
    keep_alarms: bool = False
    name: str = "subscriber"
    queue: asyncio.Queue[Event] = field(init=False)
    overflowed: bool = False
    dropped: int = 0
    closed: bool = False
    predicate: Callable[[Event], bool] | None = None

    def __post_init__(self) -> None:
        # Twice the bound for alarms so they survive a burst of scores being dropped.
        self.queue = asyncio.Queue(maxsize=self.maxsize * 2 if self.keep_alarms else self.maxsize)

    def wants(self, event: Event) -> bool:
        if self.closed or self.overflowed:
            return False
        if self.predicate is not None and not self.predicate(event):
            return False
        if self.stream is None:
            return True
        return getattr(event, "stream", None) == self.stream

    def offer(self, event: Event) -> None:
        if self.keep_alarms:
            if isinstance(event, ScoreEvent) and self.queue.qsize() >= self.maxsize:
                self.dropped += 1
                return
            if self.queue.full():
                self.dropped += 1
                return
            self.queue.put_nowait(event)
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            self.overflowed = True
            logger.warning("dropping slow subscriber %s (queue of %d full)", self.name, self.maxsize)

    async def get(self) -> Event:
        return await self.queue.get()


class EventHub:
    """Publish events to every interested subscription without blocking."""

    def __init__(self, default_maxsize: int = 256) -> None:
        self.default_maxsize = default_maxsize
        self._subs: set[Subscription] = set()
        self.published = 0
        self._listeners: list[Callable[[Event], None]] = []

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` with every event, synchronously and before the subscribers
        (counters, e.g. metrics): it must be quick and must not raise."""
        self._listeners.append(listener)

    def subscribe(
        self,
        stream: str | None = None,
        *,
        maxsize: int | None = None,
        keep_alarms: bool = False,
        name: str = "subscriber",
        predicate: Callable[[Event], bool] | None = None,
    ) -> Subscription:
        sub = Subscription(
            maxsize=maxsize or self.default_maxsize,
            stream=stream,
            keep_alarms=keep_alarms,
            name=name,
            predicate=predicate,
        )
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        self._subs.discard(sub)

    def publish(self, event: Event) -> None:
        self.published += 1
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a broken counter must not stop the events
                logger.exception("event listener %r failed", listener)
        for sub in list(self._subs):
            if sub.wants(event):
                sub.offer(event)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)
