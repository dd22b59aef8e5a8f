"""The JSON event schema (version 1) shared by WebSocket, MQTT and JSONL sinks.

Pure data: frozen dataclasses, ``to_json`` and a strict ``parse_event`` for clients.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from spoofwatch.errors import ProtocolError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StreamEvent:
    stream: str
    state: Literal["start", "end"]
    sample_rate: int
    source: str
    type: Literal["stream"] = field(default="stream", init=False)
    # What the source knows about the stream's party (SIPREC: names and numbers from the
    # recording metadata); only on start events, and left out of the JSON when None.
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class ScoreEvent:
    stream: str
    seq: int
    t_start: float
    t_end: float
    score: float
    p_spoof: float
    smoothed: float
    speech: bool
    lag_ms: float
    # The card that scored it (additive): name and the first 12 hex digits of its sha256.
    detector: str | None = None
    detector_sha: str | None = None
    type: Literal["score"] = field(default="score", init=False)


@dataclass(frozen=True)
class WindowScore:
    """One window's score (LLR) on the stream's clock, as evidence for an alarm."""

    t_start: float
    t_end: float
    score: float


@dataclass(frozen=True)
class AlarmEvent:
    """``evidence_scores``: the speech windows whose smoothed score made the transition
    (the smoother's last ``smoothing_n``), oldest first; empty when a stream's end turns
    the alarm off."""

    stream: str
    state: Literal["on", "off"]
    t: float
    p_spoof: float
    evidence_scores: tuple[WindowScore, ...] = ()
    # The card that scored it (additive): name and the first 12 hex digits of its sha256.
    detector: str | None = None
    detector_sha: str | None = None
    type: Literal["alarm"] = field(default="alarm", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.evidence_scores, list | tuple):
            raise TypeError(f"evidence_scores: expected a list, found {self.evidence_scores!r}")
        scores = tuple(s if isinstance(s, WindowScore) else WindowScore(**s) for s in self.evidence_scores)
        object.__setattr__(self, "evidence_scores", scores)


@dataclass(frozen=True)
class EvidenceEvent:
    """The audio and score timeline around an alarm were saved as ``id``
    (``GET /v1/evidence/{id}.wav`` and ``.json``); ``t_start``..``t_end`` is the clip on
    the stream's clock, ``alarm_t`` the alarm it belongs to."""

    stream: str
    id: str
    alarm_t: float
    t_start: float
    t_end: float
    type: Literal["evidence"] = field(default="evidence", init=False)


@dataclass(frozen=True)
class GapEvent:
    """Stream time ``t_start``..``t_end`` held no audio (``cause``: ``discarded``, ``paused``,
    ``position``, ``silence``, ``overrun``, ``loss``, ...): no window is scored over it and
    the smoother and the alarm keep their state across it."""

    stream: str
    t_start: float
    t_end: float
    cause: str
    type: Literal["gap"] = field(default="gap", init=False)


@dataclass(frozen=True)
class ErrorEvent:
    stream: str | None
    code: str
    message: str
    type: Literal["error"] = field(default="error", init=False)


@dataclass(frozen=True)
class StatusEvent:
    """Server load: live streams against the admission limit, and drop counters."""

    node: str
    streams: int
    max_streams: int
    queued_windows: int
    dropped_windows: int
    # The card serving now (additive).
    detector: str | None = None
    detector_sha: str | None = None
    type: Literal["status"] = field(default="status", init=False)


@dataclass(frozen=True)
class DriftEvent:
    """The node's recent windows moved away from (``on``) or back to (``off``) the
    detector card's reference distribution: ``statistic`` (Jensen-Shannon divergence in
    bits, the largest of the per-feature ones) against ``threshold``, over the last
    ``window_s`` seconds holding ``windows`` windows. A hot reload starts the monitor
    over: ``off`` with a ``reason`` if it was on or paused, or ``paused`` (alarms off until
    the node restarts) with the ``reason``."""

    node: str
    state: Literal["on", "off", "paused"]
    statistic: float
    threshold: float
    windows: int
    window_s: float
    score_divergence: float
    level_divergence: float
    speech_divergence: float
    reason: str = ""
    type: Literal["drift"] = field(default="drift", init=False)


@dataclass(frozen=True)
class ScorerEvent:
    """A remote scorer (the inference pool) became unreachable or answers again:
    ``pool`` ``ok`` | ``unreachable``; ``scoring`` ``pool`` | ``local`` (the fallback) |
    ``none`` (new calls are refused); ``message``: the last error, or empty."""

    node: str
    pool: str
    scoring: str
    message: str
    type: Literal["scorer"] = field(default="scorer", init=False)


@dataclass(frozen=True)
class FeedbackEvent:
    """An analyst's verdict on a stream was recorded (docs/protocol.md, "Feedback"):
    ``label`` one of ``confirmed_synthetic``, ``false_alarm``, ``missed_synthetic``;
    ``windows`` the kept windows it marked over ``t_start``..``t_end`` (stream clock);
    ``id`` the row in the node's feedback store; ``via`` ``rest``, ``mqtt`` or ``dashboard``."""

    stream: str
    label: str
    t_start: float | None
    t_end: float | None
    windows: int
    id: int
    via: str
    note: str = ""
    detector: str | None = None
    detector_sha: str | None = None
    type: Literal["feedback"] = field(default="feedback", init=False)


Event = (
    StreamEvent
    | ScoreEvent
    | AlarmEvent
    | GapEvent
    | ErrorEvent
    | StatusEvent
    | EvidenceEvent
    | ScorerEvent
    | FeedbackEvent
    | DriftEvent
)
_CLASSES: dict[str, type[Any]] = {
    "stream": StreamEvent,
    "score": ScoreEvent,
    "alarm": AlarmEvent,
    "gap": GapEvent,
    "error": ErrorEvent,
    "status": StatusEvent,
    "evidence": EvidenceEvent,
    "scorer": ScorerEvent,
    "feedback": FeedbackEvent,
    "drift": DriftEvent,
}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _wire(value: Any) -> Any:
    if isinstance(value, float):
        rounded = _finite(value)
        return None if rounded is None else round(rounded, 6)
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    return value


def event_to_dict(event: Event) -> dict[str, Any]:
    """Field order: ``type``, ``v``, then the event's fields; floats rounded for the wire."""
    body = asdict(event)
    body.pop("type")
    if body.get("metadata", 0) is None:
        del body["metadata"]
    for key, value in body.items():
        body[key] = _wire(value)
    return {"type": event.type, "v": SCHEMA_VERSION, **body}


def to_json(event: Event) -> str:
    return json.dumps(event_to_dict(event), separators=(",", ":"), allow_nan=False)


def parse_event(text: str | bytes) -> Event:
    """Parse one event message; ProtocolError names what was expected."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"expected a JSON event object, found invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, found {type(data).__name__}")
    kind = data.pop("type", None)
    version = data.pop("v", None)
    if not isinstance(kind, str) or kind not in _CLASSES:
        raise ProtocolError(f"expected type to be one of {sorted(_CLASSES)}, found {kind!r}")
    if version != SCHEMA_VERSION:
        raise ProtocolError(f"expected schema version {SCHEMA_VERSION}, found {version!r}")
    try:
        event: Event = _CLASSES[kind](**data)
    except TypeError as exc:
        raise ProtocolError(f"malformed {kind} event: {exc}") from None
    return event
