"""What ``GET /v1/streams`` answers: the live streams, their recent scores and alarm state.

A hub subscriber keeps, per live stream, its start (source, sample rate), the latest
``recent`` score events, its alarm state and last alarms, and the ids of its evidence; a
dashboard opened mid-call draws the calls already running from it. Bounded: the hub's
stream limit times ``recent`` scores.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from spoofwatch.events import (
    SCHEMA_VERSION,
    AlarmEvent,
    Event,
    EvidenceEvent,
    ScoreEvent,
    StreamEvent,
    event_to_dict,
)
from spoofwatch.stream.engine.hub import EventHub

RECENT_SCORES = 60
RECENT_ALARMS = 20


@dataclass
class _Live:
    start: StreamEvent
    since: float  # wall clock (Unix seconds) when we saw it start
    scores: deque[dict[str, Any]]
    alarm: str = "off"
    smoothed: float | None = None
    t: float = 0.0
    alarms: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_ALARMS))
    evidence: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_ALARMS))


class StreamTracker:
    """Subscribe at construction (nothing is missed before ``run()``); ``snapshot()`` any time."""

    def __init__(self, hub: EventHub, *, node: str = "node", recent: int = RECENT_SCORES) -> None:
        self.node = node
        self.recent = recent
        self._hub = hub
        self._live: dict[str, _Live] = {}
        self._sub = hub.subscribe(
            maxsize=4096,
            keep_alarms=True,
            name="snapshot",
            predicate=lambda e: isinstance(e, StreamEvent | ScoreEvent | AlarmEvent | EvidenceEvent),
        )

    def apply(self, event: Event) -> None:
        if isinstance(event, StreamEvent):
            if event.state == "start":
                self._live[event.stream] = _Live(event, time.time(), deque(maxlen=self.recent))
            else:
                self._live.pop(event.stream, None)
            return
        live = self._live.get(getattr(event, "stream", ""))
        if live is None:  # not started while we watched
            return
        if isinstance(event, ScoreEvent):
            entry = event_to_dict(event)
            for key in ("type", "v", "stream", "lag_ms"):
                entry.pop(key)
            live.scores.append(entry)
            live.t, live.smoothed = event.t_end, event.smoothed
        elif isinstance(event, AlarmEvent):
            live.alarm = event.state
            live.alarms.append(event_to_dict(event))
        elif isinstance(event, EvidenceEvent):
            live.evidence.append(event.id)

    def snapshot(self) -> dict[str, Any]:
        while not self._sub.queue.empty():  # what is queued already belongs in the answer
            self.apply(self._sub.queue.get_nowait())
        streams = []
        for name, live in sorted(self._live.items(), key=lambda item: item[1].since):
            streams.append(
                {
                    "stream": name,
                    "source": live.start.source,
                    "sample_rate": live.start.sample_rate,
                    "started": round(live.since, 3),
                    "alarm": live.alarm,
                    "smoothed": None if live.smoothed is None else round(live.smoothed, 6),
                    "t": round(live.t, 6),
                    "scores": list(live.scores),
                    "alarms": list(live.alarms),
                    "evidence": list(live.evidence),
                }
            )
        return {"type": "streams", "v": SCHEMA_VERSION, "node": self.node, "streams": streams}

    async def run(self) -> None:
        try:
            while True:
                self.apply(await self._sub.get())
        finally:
            self._hub.unsubscribe(self._sub)
