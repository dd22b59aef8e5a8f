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
    type: Literal["score"] = field(default="score", init=False)


@dataclass(frozen=True)
class AlarmEvent:
    stream: str
    state: Literal["on", "off"]
    t: float
    p_spoof: float
    type: Literal["alarm"] = field(default="alarm", init=False)


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
    type: Literal["status"] = field(default="status", init=False)


@dataclass(frozen=True)
class DriftEvent:
    """The node's recent windows moved away from (``on``) or back to (``off``) the
    detector card's reference distribution: ``statistic`` (Jensen-Shannon divergence in
    bits, the largest of the per-feature ones) against ``threshold``, over the last
    ``window_s`` seconds holding ``windows`` windows."""

    node: str
    state: Literal["on", "off"]
    statistic: float
    threshold: float
    windows: int
    window_s: float
    score_divergence: float
    level_divergence: float
    speech_divergence: float
    type: Literal["drift"] = field(default="drift", init=False)


Event = StreamEvent | ScoreEvent | AlarmEvent | GapEvent | ErrorEvent | StatusEvent | DriftEvent
_CLASSES: dict[str, type[Any]] = {
    "stream": StreamEvent,
    "score": ScoreEvent,
    "alarm": AlarmEvent,
    "gap": GapEvent,
    "error": ErrorEvent,
    "status": StatusEvent,
    "drift": DriftEvent,
}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def event_to_dict(event: Event) -> dict[str, Any]:
    """Field order: ``type``, ``v``, then the event's fields; floats rounded for the wire."""
    body = asdict(event)
    body.pop("type")
    for key, value in body.items():
        if isinstance(value, float):
            rounded = _finite(value)
            body[key] = None if rounded is None else round(rounded, 6)
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
