"""The pooled features of each stream's recent windows, kept for analyst feedback.

Bounded three ways: ``per_stream`` windows per stream (oldest first out), ``max_bytes``
for all streams together (ended streams go first, oldest ended first; then the oldest
window of the stream holding the most), and ``keep_s``: an ended stream's windows stay
that long for late feedback. Features are kept as the scorer gave them (float32; the store
rounds them to float16 like the training cache, docs/learning.md). A stream id used again
after its stream ended starts afresh. Runs on the event loop; no locks.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from spoofwatch.events import AlarmEvent, Event, ScoreEvent
from spoofwatch.model.card_label import CardLabel

_OVERHEAD_BYTES = 200  # per kept window, beside its features


@dataclass(frozen=True)
class KeptWindow:
    seq: int
    t_start: float
    t_end: float
    score: float
    speech: bool
    card: CardLabel | None  # the card that scored it
    features: NDArray[np.float32]

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes) + _OVERHEAD_BYTES


@dataclass
class KeptStream:
    stream: str
    source: str
    sample_rate: int
    windows: collections.deque[KeptWindow] = field(default_factory=collections.deque)
    alarms: list[list[float | None]] = field(default_factory=list)  # [on t, off t or None]
    ended_at: float | None = None  # monotonic
    duration_s: float | None = None
    nbytes: int = 0


class FeatureRing:
    def __init__(
        self,
        per_stream: int = 120,
        max_bytes: int = 64 << 20,
        keep_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_stream < 1 or max_bytes < 1 or keep_s < 0:
            raise ValueError(
                f"FeatureRing: expected per_stream >= 1, max_bytes >= 1, keep_s >= 0, found "
                f"{per_stream}, {max_bytes}, {keep_s}"
            )
        self.per_stream = per_stream
        self.max_bytes = max_bytes
        self.keep_s = keep_s
        self.clock = clock
        self.streams: dict[str, KeptStream] = {}
        self._ended: collections.OrderedDict[str, None] = collections.OrderedDict()  # oldest first
        self.nbytes = 0
        self.evicted_windows = 0

    def on_scored(
        self,
        stream: str,
        source: str,
        sample_rate: int,
        events: list[Event],
        features: object,
        card: CardLabel | None = None,
    ) -> None:
        """A scored window's events (its score event, any alarm transition), features and card."""
        kept = self._live(stream, source, sample_rate)
        for event in events:
            if isinstance(event, AlarmEvent):
                self._alarm(kept, event)
            elif isinstance(event, ScoreEvent) and isinstance(features, np.ndarray):
                window = KeptWindow(
                    event.seq,
                    event.t_start,
                    event.t_end,
                    event.score,
                    event.speech,
                    card,
                    np.asarray(features, dtype=np.float32),  # a copy already, from the batcher
                )
                kept.windows.append(window)
                kept.nbytes += window.nbytes
                self.nbytes += window.nbytes
                if len(kept.windows) > self.per_stream:
                    self._drop_oldest(kept)
        self._bound()

    def end(self, stream: str, duration_s: float) -> None:
        """The stream ended: an alarm still on closes at its end; its windows start to age."""
        kept = self.streams.get(stream)
        if kept is None or kept.ended_at is not None:
            return
        for span in kept.alarms:
            if span[1] is None:
                span[1] = duration_s
        kept.ended_at = self.clock()
        kept.duration_s = duration_s
        self._ended[stream] = None
        self._bound()

    def get(self, stream: str) -> KeptStream | None:
        self._expire()
        return self.streams.get(stream)

    def _live(self, stream: str, source: str, sample_rate: int) -> KeptStream:
        kept = self.streams.get(stream)
        if kept is not None and kept.ended_at is None:
            return kept
        if kept is not None:  # the id is used again: the ended stream's windows go
            self._forget(stream)
        kept = KeptStream(stream, source, sample_rate)
        self.streams[stream] = kept
        return kept

    @staticmethod
    def _alarm(kept: KeptStream, event: AlarmEvent) -> None:
        if event.state == "on":
            kept.alarms.append([event.t, None])
        elif kept.alarms and kept.alarms[-1][1] is None:
            kept.alarms[-1][1] = event.t

    def _drop_oldest(self, kept: KeptStream) -> None:
        window = kept.windows.popleft()
        kept.nbytes -= window.nbytes
        self.nbytes -= window.nbytes
        self.evicted_windows += 1

    def _forget(self, stream: str) -> None:
        kept = self.streams.pop(stream)
        self.nbytes -= kept.nbytes
        self._ended.pop(stream, None)

    def _expire(self) -> None:
        now = self.clock()
        while self._ended:
            stream = next(iter(self._ended))
            ended_at = self.streams[stream].ended_at
            if ended_at is not None and now - ended_at < self.keep_s:
                break
            self._forget(stream)

    def _bound(self) -> None:
        if self._ended:
            self._expire()
        while self.nbytes > self.max_bytes and self._ended:
            self._forget(next(iter(self._ended)))
        if self.nbytes > self.max_bytes:
            # Over the cap with live streams only: trim the longest ones to the same length.
            by_length = sorted(self.streams.values(), key=lambda k: len(k.windows), reverse=True)
            while self.nbytes > self.max_bytes and by_length[0].windows:
                self._drop_oldest(by_length[0])
                if len(by_length) > 1 and len(by_length[0].windows) < len(by_length[1].windows):
                    by_length.sort(key=lambda k: len(k.windows), reverse=True)
