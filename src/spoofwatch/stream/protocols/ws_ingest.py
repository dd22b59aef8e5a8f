"""The ``/v1/ingest`` WebSocket protocol: message parsing and frame decoding, no I/O.

A client sends one text message ``{"type":"start","stream":ID,"encoding":ENC,
"sample_rate":SR,"channels":1|2}``, then binary frames of interleaved audio in that
encoding, then ``{"type":"stop"}``; after a stop the same connection may start another
stream. Frames carry no timestamps, so a client that knows audio is missing (its own
packet loss, a jitter-buffer under-run, a recording pause) says so between frames with
``{"type":"gap","seconds":S,"cause":C}`` (``cause`` optional, default ``client``; one of
``gaps.GAP_CAUSES``) instead of sending filler: no window is scored over it.
``IngestProtocol`` is the per-connection state machine; the server does the I/O.

Every input is untrusted: text messages and audio frames have size limits, sample rates
and channel counts have ranges, and each error names what was expected and what was found.
Unknown keys in the start message are ignored so clients can attach their own metadata;
a missing ``channels`` means mono. ``alaw`` is accepted besides the contract's three
encodings.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import decode_pcm, to_mono
from spoofwatch.errors import LimitExceededError, ProtocolError
from spoofwatch.stream.core.gaps import check_gap_seconds

logger = logging.getLogger(__name__)

INGEST_ENCODINGS: Final = ("pcm_s16le", "pcm_f32le", "mulaw", "alaw")
MAX_STREAM_ID_LENGTH: Final = 200


@dataclass(frozen=True)
class IngestLimits:
    """Bounds on what one ingest client may send."""

    max_frame_bytes: int = 1 << 20
    max_text_bytes: int = 16 * 1024
    min_sample_rate: int = 8000
    max_sample_rate: int = 48000
    max_channels: int = 2


@dataclass(frozen=True)
class StartMessage:
    stream: str
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class StopMessage:
    pass


@dataclass(frozen=True)
class GapMessage:
    seconds: float
    cause: str = "client"


ControlMessage = StartMessage | StopMessage | GapMessage


def _load_object(text: str | bytes, limits: IngestLimits) -> dict[str, object]:
    if len(text) > limits.max_text_bytes:
        raise LimitExceededError(
            f"text message: expected at most {limits.max_text_bytes} bytes, found {len(text)}"
        )
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"text message: expected a JSON object, found invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"text message: expected a JSON object, found {type(data).__name__}")
    return data


def _int_field(data: dict[str, object], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"start message: expected integer {key!r}, found {value!r}")
    return value


def _parse_start(data: dict[str, object], limits: IngestLimits) -> StartMessage:
    stream = data.get("stream")
    if not isinstance(stream, str) or not 1 <= len(stream) <= MAX_STREAM_ID_LENGTH:
        found = f"{len(stream)} characters" if isinstance(stream, str) else repr(stream)
        raise ProtocolError(
            f"start message: expected 'stream' to be a string of 1..{MAX_STREAM_ID_LENGTH} "
            f"characters, found {found}"
        )
    encoding = data.get("encoding")
    if not isinstance(encoding, str) or encoding not in INGEST_ENCODINGS:
        raise ProtocolError(
            f"start message: expected 'encoding' to be one of {', '.join(INGEST_ENCODINGS)}, "
            f"found {encoding!r}"
        )
    sample_rate = _int_field(data, "sample_rate")
    if not limits.min_sample_rate <= sample_rate <= limits.max_sample_rate:
        raise ProtocolError(
            f"start message: expected 'sample_rate' in {limits.min_sample_rate}.."
            f"{limits.max_sample_rate} Hz, found {sample_rate}"
        )
    channels = _int_field(data, "channels") if "channels" in data else 1
    if not 1 <= channels <= limits.max_channels:
        raise ProtocolError(
            f"start message: expected 'channels' in 1..{limits.max_channels}, found {channels}"
        )
    return StartMessage(stream, encoding, sample_rate, channels)


def parse_control(text: str | bytes, limits: IngestLimits | None = None) -> ControlMessage:
    """Parse one text message: a start or a stop; anything else raises ProtocolError."""
    limits = limits or IngestLimits()
    data = _load_object(text, limits)
    kind = data.get("type")
    if kind == "start":
        return _parse_start(data, limits)
    if kind == "stop":
        return StopMessage()
    if kind == "gap":
        seconds, cause = data.get("seconds"), data.get("cause", "client")
        try:
            return GapMessage(check_gap_seconds(seconds, str(cause)), str(cause))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ProtocolError(f"gap message: {exc}") from None
    raise ProtocolError(f"text message: expected type 'start', 'stop' or 'gap', found {kind!r}")


def decode_frame(data: bytes, start: StartMessage, limits: IngestLimits | None = None) -> NDArray[np.float32]:
    """Decode one binary frame to mono float32 at ``start.sample_rate``.

    Raises LimitExceededError for oversized frames and AudioError for frames that do not
    hold a whole number of sample frames (or hold NaN/inf floats).
    """
    limits = limits or IngestLimits()
    if len(data) > limits.max_frame_bytes:
        raise LimitExceededError(
            f"audio frame: expected at most {limits.max_frame_bytes} bytes, found {len(data)}"
        )
    return to_mono(decode_pcm(bytes(data), start.encoding, start.channels))


class IngestProtocol:
    """Per-connection state: idle until a start, streaming until a stop, then idle again."""

    def __init__(self, limits: IngestLimits | None = None) -> None:
        self.limits = limits or IngestLimits()
        self.current: StartMessage | None = None

    @property
    def streaming(self) -> bool:
        return self.current is not None

    def receive_text(self, text: str | bytes) -> ControlMessage:
        message = parse_control(text, self.limits)
        if isinstance(message, StartMessage):
            if self.current is not None:
                raise ProtocolError(
                    f"expected audio frames or a stop while stream {self.current.stream!r} is live, "
                    f"found a start for {message.stream!r}"
                )
            self.current = message
        elif self.current is None:
            kind = "stop" if isinstance(message, StopMessage) else "gap"
            raise ProtocolError(f"expected a start message before {kind}, found {kind} with no live stream")
        elif isinstance(message, StopMessage):
            self.current = None
        return message

    def receive_binary(self, data: bytes) -> NDArray[np.float32]:
        if self.current is None:
            raise ProtocolError(
                f"expected a start message before audio, found a binary frame of {len(data)} bytes"
            )
        return decode_frame(data, self.current, self.limits)

    def reset(self) -> None:
        """Forget the live stream (after the server refused or closed it)."""
        self.current = None
