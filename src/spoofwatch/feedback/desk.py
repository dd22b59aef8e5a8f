"""Where analyst feedback arrives (REST, MQTT, dashboard) and is recorded.

A feedback message is a JSON object (docs/protocol.md, "Feedback")::

    {"stream": "call-1", "label": "confirmed_synthetic",
     "t_start": 12.0, "t_end": 30.0,        # optional: stream clock, seconds
     "alarm_t": 14.5,                       # optional instead: the t of an alarm "on" event
     "note": "caller admitted a TTS app", "analyst": "ana"}

Without a range or alarm it marks every kept window of the stream. The desk picks the
stream's kept windows (``capture.FeatureRing``), stores them with the verdict
(``store.FeedbackStore``, in a worker thread) and publishes a ``feedback`` event.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spoofwatch.errors import ProtocolError
from spoofwatch.events import FeedbackEvent
from spoofwatch.feedback.capture import FeatureRing, KeptStream, KeptWindow
from spoofwatch.learning.feedback_store import LABELS as FEEDBACK_LABELS
from spoofwatch.learning.feedback_store import FeedbackRecord, FeedbackStore
from spoofwatch.model.card_label import CardLabel
from spoofwatch.stream.engine.batcher import WindowJob
from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle

logger = logging.getLogger(__name__)

LABELS = FEEDBACK_LABELS  # confirmed_synthetic, false_alarm, missed_synthetic
VIAS = ("rest", "mqtt", "dashboard")
MAX_NOTE_CHARS = 4000
_FIELDS = {"stream", "label", "t_start", "t_end", "alarm_t", "note", "analyst", "via"}


class FeedbackError(ProtocolError):
    """Feedback that cannot be recorded; ``status`` is the HTTP status that says so."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FeedbackRequest:
    stream: str
    label: str
    t_start: float | None = None
    t_end: float | None = None
    alarm_t: float | None = None
    note: str = ""
    analyst: str | None = None
    via: str | None = None  # the dashboard says so; otherwise the path it came by


def _seconds(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise FeedbackError(f"{key}: expected seconds on the stream's clock (a number >= 0), found {value!r}")
    return float(value)


def _text(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise FeedbackError(f"{key}: expected a string of at most {limit} characters, found {value!r:.80}")
    return value


def parse_feedback(data: Any) -> FeedbackRequest:
    """A feedback message, checked; FeedbackError says what was expected."""
    if not isinstance(data, dict):
        raise FeedbackError(f"expected a JSON object with stream and label, found {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise FeedbackError(f"unknown field(s) {unknown}; expected some of {sorted(_FIELDS)}")
    stream = data.get("stream")
    if not isinstance(stream, str) or not stream or len(stream) > 200:
        raise FeedbackError(f"stream: expected the id of a stream (1..200 characters), found {stream!r}")
    label = data.get("label")
    if label not in LABELS:
        raise FeedbackError(f"label: expected one of {list(LABELS)}, found {label!r}")
    t_start, t_end, alarm_t = _seconds(data, "t_start"), _seconds(data, "t_end"), _seconds(data, "alarm_t")
    if alarm_t is not None and (t_start is not None or t_end is not None):
        raise FeedbackError("expected either alarm_t or a t_start/t_end range, found both")
    if t_start is not None and t_end is not None and t_end <= t_start:
        raise FeedbackError(f"expected t_end > t_start, found t_start={t_start}, t_end={t_end}")
    via = data.get("via")
    if via is not None and via not in VIAS:
        raise FeedbackError(f"via: expected one of {list(VIAS)}, found {via!r}")
    return FeedbackRequest(
        stream,
        str(label),
        t_start,
        t_end,
        alarm_t,
        _text(data, "note", MAX_NOTE_CHARS) or "",
        _text(data, "analyst", 200),
        via,
    )


def _alarm_span(kept: KeptStream, alarm_t: float) -> tuple[float, float | None]:
    for on, off in kept.alarms:
        if on is not None and abs(on - alarm_t) < 1e-3:
            return on, off
    known = [on for on, _ in kept.alarms]
    raise FeedbackError(
        f"alarm_t: expected the t of an alarm 'on' event of stream {kept.stream!r} "
        f"(known: {known}), found {alarm_t}",
        status=404,
    )


def _selected(kept: KeptStream, start: float | None, end: float | None) -> list[KeptWindow]:
    """The kept windows overlapping [start, end] (open ends: no bound)."""
    return [
        w for w in kept.windows if (start is None or w.t_end > start) and (end is None or w.t_start < end)
    ]


class FeedbackDesk:
    """Records feedback for one pipeline: keeps its streams' features and stores verdicts
    in the feedback store ``spoofwatch retrain`` reads (``learning.feedback_store``)."""

    def __init__(self, pipeline: Pipeline, ring: FeatureRing, store: FeedbackStore) -> None:
        self.pipeline = pipeline
        self.ring = ring
        self.store = store
        pipeline.batcher.keep_features = True
        pipeline.on_scored.append(self._on_scored)
        pipeline.on_stream_end.append(self._on_end)

    def _on_scored(self, job: WindowJob, events: list[Any]) -> None:
        handle: StreamHandle = job.stream
        self.ring.on_scored(
            handle.stream_id, handle.source, handle.input_rate, events, job.features, job.card
        )

    def _on_end(self, handle: StreamHandle) -> None:
        self.ring.end(handle.stream_id, handle.session.duration_s)

    def _feature_space(self, card: CardLabel | None) -> str | None:
        """The feature space of the serving card (what a head fitted on these rows fits)."""
        scorer_card = getattr(self.pipeline.scorer, "card", None)
        if card is not self.pipeline.card or not isinstance(scorer_card, dict):
            return None
        from spoofwatch.model.identity import feature_space  # torch: only once feedback comes

        return feature_space(scorer_card)

    def _records(
        self, request: FeedbackRequest, via: str, kept: KeptStream, windows: list[KeptWindow]
    ) -> list[FeedbackRecord]:
        """One record per card that scored the windows (two only across a hot reload)."""
        groups: dict[int, list[KeptWindow]] = {}
        for window in windows:
            groups.setdefault(id(window.card), []).append(window)
        records = []
        for group in groups.values():
            card = group[0].card or self.pipeline.card
            metadata = {
                "node": self.pipeline.node,
                "source": kept.source,
                "sample_rate": kept.sample_rate,
                "live": kept.ended_at is None,
                "via": via,
                "analyst": request.analyst,
                "alarm_t": request.alarm_t,
                "detector_version": card.version,
                "windows": [
                    {
                        "seq": w.seq,
                        "t_start": w.t_start,
                        "t_end": w.t_end,
                        "score": w.score,
                        "speech": w.speech,
                    }
                    for w in group
                ],
            }
            records.append(
                FeedbackRecord(
                    stream_id=kept.stream,
                    label=request.label,
                    features=np.stack([w.features for w in group]),
                    detector_name=card.name,
                    detector_sha256=card.sha256,
                    t_start=group[0].t_start,
                    t_end=group[-1].t_end,
                    note=request.note,
                    metadata=metadata,
                    feature_space=self._feature_space(group[0].card),
                )
            )
        return records

    def _add(self, records: list[FeedbackRecord]) -> list[int]:
        return [self.store.add(record) for record in records]

    async def record(self, request: FeedbackRequest, via: str) -> FeedbackEvent:
        """Store the verdict and publish its event; FeedbackError (404) when the stream has
        no kept windows in the range."""
        kept = self.ring.get(request.stream)
        if kept is None or not kept.windows:
            raise FeedbackError(
                f"stream {request.stream!r}: no recent windows kept (a stream's windows are kept "
                f"{self.ring.keep_s:g} s after it ends); expected a live or recently ended stream",
                status=404,
            )
        start, end = request.t_start, request.t_end
        if request.alarm_t is not None:
            start, end = _alarm_span(kept, request.alarm_t)
        windows = _selected(kept, start, end)
        if not windows:
            first, last = kept.windows[0].t_start, kept.windows[-1].t_end
            raise FeedbackError(
                f"stream {request.stream!r}: no kept window overlaps {start}..{end} s; expected a range "
                f"within the kept {first:g}..{last:g} s",
                status=404,
            )
        via = request.via or via
        ids = await asyncio.to_thread(self._add, self._records(request, via, kept, windows))
        card = self.pipeline.card
        event = FeedbackEvent(
            stream=kept.stream,
            label=request.label,
            t_start=windows[0].t_start,
            t_end=windows[-1].t_end,
            windows=len(windows),
            id=ids[0],
            via=via,
            note=request.note,
            detector=card.name,
            detector_sha=card.short,
        )
        self.pipeline.hub.publish(event)
        logger.info(
            "feedback %d on stream %s: %s, %d windows (%s)",
            ids[0],
            kept.stream,
            request.label,
            len(windows),
            via,
        )
        return event
