"""Save the audio and score timeline around each alarm (``serve --evidence-dir``).

The recorder is an audio tap on the pipeline (each stream's latest audio, at the model
rate, in a ring of ``seconds`` + ``SLACK_S`` per stream: bounded memory) and a hub
subscriber (scores, gaps, alarms, stream ends). When an alarm turns on it waits until
``after_s`` more seconds of that stream have arrived and been scored (or the stream
ends), then writes
``seconds`` of audio ending ``after_s`` after the alarm, with the scores, gaps and alarm
transitions inside that span, and publishes an ``evidence`` event naming the id. Each
party of a call is its own stream, so each gets its own clip. Writing runs in a thread;
old files are pruned after each write and hourly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.events import (
    AlarmEvent,
    EvidenceEvent,
    GapEvent,
    ScoreEvent,
    StreamEvent,
    event_to_dict,
)
from spoofwatch.stream.engine.hub import EventHub
from spoofwatch.stream.evidence.ring import AudioRing
from spoofwatch.stream.evidence.store import EvidenceStore, new_id

logger = logging.getLogger(__name__)

SLACK_S = 10.0  # extra audio held so scoring lag cannot push an alarm's start out of the ring
PRUNE_INTERVAL_S = 3600.0
MAX_TIMELINE = 2000  # score/gap/alarm events kept per stream for the JSON


@dataclass
class _Capture:
    alarm: AlarmEvent
    due_t: float  # write once the stream's clock reaches this


@dataclass
class _Stream:
    ring: AudioRing
    source: str = ""
    timeline: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_TIMELINE))
    pending: list[_Capture] = field(default_factory=list)
    scored_t: float = 0.0  # end of the latest scored window


class EvidenceRecorder:
    """Tap ``pipeline.audio_taps.append(recorder.on_audio)``; ``run()`` until cancelled."""

    def __init__(
        self,
        hub: EventHub,
        store: EvidenceStore,
        sample_rate: int,
        *,
        seconds: float = 20.0,
        after_s: float | None = None,
        node: str = "node",
    ) -> None:
        self.store = store
        self.sample_rate = sample_rate
        self.seconds = seconds
        self.after_s = min(5.0, seconds / 4) if after_s is None else after_s
        self.node = node
        self.written = 0
        self.failed = 0
        self._hub = hub
        self._streams: dict[str, _Stream] = {}
        self._sources: dict[str, str] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._sub = hub.subscribe(
            maxsize=4096,
            keep_alarms=True,
            name="evidence",
            predicate=lambda e: isinstance(e, ScoreEvent | GapEvent | AlarmEvent | StreamEvent),
        )

    def _stream(self, stream_id: str) -> _Stream:
        state = self._streams.get(stream_id)
        if state is None:
            ring = AudioRing(self.sample_rate, self.seconds + SLACK_S)
            state = self._streams[stream_id] = _Stream(ring, self._sources.get(stream_id, ""))
        return state

    def on_audio(self, stream_id: str, samples: NDArray[np.float32], end_t: float) -> None:
        try:
            self._on_audio(stream_id, samples, end_t)
        except Exception:  # the tap runs inside a source's feed: never fail the stream for it
            logger.exception("evidence: recording %s failed; its evidence may be missing", stream_id)
            self._drop(stream_id)

    def _on_audio(self, stream_id: str, samples: NDArray[np.float32], end_t: float) -> None:
        state = self._stream(stream_id)
        if end_t < state.ring.end_t:  # the id was reused by a new stream
            self._drop(stream_id)
            state = self._stream(stream_id)
        state.ring.append(samples, end_t)
        self._write_due(stream_id, state, end_of_stream=False)

    def _write_due(self, stream_id: str, state: _Stream, *, end_of_stream: bool) -> None:
        ring_t = state.ring.end_t
        due = [
            c
            for c in state.pending
            # the audio and its scores up to due_t are in; or the clip's start is about to
            # leave the ring (scoring far behind, or windows skipped over a gap)
            if end_of_stream
            or (ring_t >= c.due_t and (state.scored_t >= c.due_t or ring_t >= c.due_t + SLACK_S - 1.0))
        ]
        if not due:
            return
        state.pending = [c for c in state.pending if c not in due]
        for capture in due:
            self._start_write(stream_id, state, capture)

    def _start_write(self, stream_id: str, state: _Stream, capture: _Capture) -> None:
        t_end = capture.alarm.t + self.after_s
        pcm, start, end = state.ring.clip(t_end - self.seconds, t_end)
        if not len(pcm):
            logger.warning(
                "evidence: no audio of %s held around its alarm at %.1f s", stream_id, capture.alarm.t
            )
            return
        evidence_id = new_id(stream_id)
        timeline = [e for e in state.timeline if _within(e, start, end)]
        document = {
            "type": "evidence",
            "v": 1,
            "id": evidence_id,
            "stream": stream_id,
            "source": state.source,
            "node": self.node,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "sample_rate": self.sample_rate,
            "clip": {"t_start": round(start, 6), "t_end": round(end, 6), "samples": len(pcm)},
            "alarm": event_to_dict(capture.alarm),
            "scores": [e for e in timeline if e["type"] == "score"],
            "gaps": [e for e in timeline if e["type"] == "gap"],
            "alarms": [e for e in timeline if e["type"] == "alarm"],
        }
        event = EvidenceEvent(stream_id, evidence_id, capture.alarm.t, start, end)
        task = asyncio.get_running_loop().create_task(self._write(pcm, document, event), name="evidence")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, pcm: NDArray[np.int16], document: dict[str, Any], event: EvidenceEvent) -> None:
        try:
            await asyncio.to_thread(self.store.write, event.id, pcm, self.sample_rate, document)
        except OSError as exc:
            self.failed += 1
            logger.error("evidence %s: cannot write to %s: %s", event.id, self.store.folder, exc.strerror)
            return
        self.written += 1
        logger.info(
            "evidence %s: %.1f s of %s around its alarm", event.id, event.t_end - event.t_start, event.stream
        )
        self._hub.publish(event)
        await asyncio.to_thread(self.store.prune)

    def _drop(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    def apply(self, event: StreamEvent | ScoreEvent | GapEvent | AlarmEvent) -> None:
        if isinstance(event, StreamEvent):
            if event.state == "start":
                self._sources[event.stream] = event.source
                if event.stream in self._streams:
                    self._streams[event.stream].source = event.source
                return
            state = self._streams.get(event.stream)
            if state is not None:
                self._write_due(event.stream, state, end_of_stream=True)
            self._drop(event.stream)
            self._sources.pop(event.stream, None)
            return
        state = self._stream(event.stream)
        entry = event_to_dict(event)
        state.timeline.append(entry)
        horizon = state.ring.end_t - state.ring.capacity / self.sample_rate  # older is out of the ring
        while state.timeline and _end_of(state.timeline[0]) < horizon:
            state.timeline.popleft()
        if isinstance(event, ScoreEvent):
            entry.pop("lag_ms", None)
            state.scored_t = max(state.scored_t, event.t_end)
            self._write_due(event.stream, state, end_of_stream=False)
        if isinstance(event, AlarmEvent) and event.state == "on":
            state.pending.append(_Capture(event, event.t + self.after_s))
            self._write_due(event.stream, state, end_of_stream=False)

    async def run(self) -> None:
        logger.info(
            "recording evidence to %s: %g s per alarm, kept %g days",
            self.store.folder,
            self.seconds,
            self.store.retention_s / 86400,
        )
        await asyncio.to_thread(self.store.prune)
        next_prune = time.monotonic() + PRUNE_INTERVAL_S
        try:
            while True:
                event = await self._sub.get()
                if isinstance(event, StreamEvent | ScoreEvent | GapEvent | AlarmEvent):
                    self.apply(event)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_INTERVAL_S
                    await asyncio.to_thread(self.store.prune)
        finally:
            self._hub.unsubscribe(self._sub)
            if self._writes:  # clips already cut still reach the disk
                await asyncio.gather(*self._writes, return_exceptions=True)


def _end_of(entry: dict[str, Any]) -> float:
    end = entry.get("t_end", entry.get("t"))
    return float(end) if end is not None else 0.0


def _within(entry: dict[str, Any], start: float, end: float) -> bool:
    if "t_start" in entry:
        t0, t1 = entry["t_start"], entry["t_end"]
        return t0 is not None and t1 is not None and t1 >= start and t0 <= end
    t = entry.get("t")
    return t is not None and start <= t <= end
