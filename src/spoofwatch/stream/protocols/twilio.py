"""Twilio Media Streams: a parser for the messages Twilio sends over its WebSocket. No I/O.

Protocol (public docs: https://www.twilio.com/docs/voice/media-streams/websocket-messages
and the ``<Stream>`` TwiML noun, https://www.twilio.com/docs/voice/twiml/stream): every
message is a JSON text frame with an ``event`` field.

- ``connected``: ``{"event":"connected","protocol":"Call","version":"1.0.0"}``, first.
- ``start``: once, with ``sequenceNumber``, ``streamSid`` and a ``start`` object holding
  ``streamSid``, ``accountSid``, ``callSid``, ``tracks`` (``["inbound"]``, or
  ``["inbound","outbound"]`` for ``track="both_tracks"``), ``customParameters`` and
  ``mediaFormat`` ``{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}``.
- ``media``: ``streamSid`` and ``media`` with ``track`` (``inbound``/``outbound``),
  ``chunk`` and ``timestamp`` (milliseconds since the stream started; both sent as
  strings) and ``payload``: base64 G.711 mu-law, 8 kHz mono, normally 20 ms per message.
- ``stop``: ``streamSid`` and ``stop`` with ``accountSid``/``callSid``; the end.
- ``mark`` and ``dtmf`` (and events added later): ignored here.

Twilio drops the query string of a ``<Stream url>`` and sends no Authorization header; a
``<Parameter name="token" value="...">`` inside ``<Stream>`` arrives in the start
message's ``customParameters``, which is where the server looks for the token.

Stream ids: the ``streamSid`` when one track is streamed, ``<streamSid>:inbound`` and
``<streamSid>:outbound`` when the start message announces both tracks.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import mulaw_decode
from spoofwatch.errors import LimitExceededError, ProtocolError

logger = logging.getLogger(__name__)

TWILIO_SAMPLE_RATE: Final = 8000
TWILIO_ENCODING: Final = "audio/x-mulaw"
TWILIO_TRACKS: Final = ("inbound", "outbound")
IGNORED_EVENTS: Final = ("connected", "mark", "dtmf")
MAX_TEXT_BYTES: Final = 64 * 1024
MAX_PAYLOAD_BYTES: Final = 16000  # 2 s of 8 kHz mu-law; Twilio sends 160 bytes (20 ms)


@dataclass(frozen=True)
class TwilioStart:
    stream_sid: str
    call_sid: str | None
    tracks: tuple[str, ...]
    stream_ids: dict[str, str]  # track -> spoofwatch stream id
    custom_parameters: dict[str, str]  # from <Parameter> in the TwiML <Stream>


@dataclass(frozen=True)
class TwilioMedia:
    stream_id: str
    track: str
    chunk: int | None
    timestamp_ms: int | None
    samples: NDArray[np.float32]


@dataclass(frozen=True)
class TwilioStop:
    stream_sid: str


@dataclass(frozen=True)
class TwilioIgnored:
    event: str


TwilioMessage = TwilioStart | TwilioMedia | TwilioStop | TwilioIgnored


def stream_id_for(stream_sid: str, track: str, both_tracks: bool) -> str:
    return f"{stream_sid}:{track}" if both_tracks else stream_sid


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def _string(data: dict[str, object], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{where}: expected a non-empty string {key!r}, found {value!r}")
    return value


def _optional_int(value: object) -> int | None:
    """Twilio sends counters as decimal strings; accept ints too, anything else as unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return None


def _check_media_format(start: dict[str, object]) -> None:
    fmt = start.get("mediaFormat")
    if fmt is None:
        return
    fmt = _object(fmt, "start.mediaFormat")
    encoding = fmt.get("encoding", TWILIO_ENCODING)
    rate = fmt.get("sampleRate", TWILIO_SAMPLE_RATE)
    channels = fmt.get("channels", 1)
    if encoding != TWILIO_ENCODING or rate != TWILIO_SAMPLE_RATE or channels != 1:
        raise ProtocolError(
            f"start.mediaFormat: expected {TWILIO_ENCODING} at {TWILIO_SAMPLE_RATE} Hz, 1 channel, "
            f"found {encoding!r} at {rate!r} Hz, {channels!r} channel(s)"
        )


def _parse_tracks(start: dict[str, object]) -> tuple[str, ...]:
    tracks = start.get("tracks", ["inbound"])
    if (
        not isinstance(tracks, list)
        or not tracks
        or any(t not in TWILIO_TRACKS for t in tracks)
        or len(set(tracks)) != len(tracks)
    ):
        raise ProtocolError(
            f"start.tracks: expected a list drawn from {list(TWILIO_TRACKS)}, found {tracks!r}"
        )
    return tuple(str(t) for t in tracks)


def decode_payload(payload: object, max_bytes: int = MAX_PAYLOAD_BYTES) -> NDArray[np.float32]:
    """Base64 mu-law payload to float32 samples at 8 kHz."""
    if not isinstance(payload, str):
        raise ProtocolError(f"media.payload: expected a base64 string, found {type(payload).__name__}")
    if len(payload) > (max_bytes + 2) // 3 * 4:
        raise LimitExceededError(
            f"media.payload: expected at most {max_bytes} bytes of audio, found about {len(payload) * 3 // 4}"
        )
    try:
        codes = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"media.payload: expected base64, found invalid data ({exc})") from None
    return mulaw_decode(codes)


class TwilioMediaStream:
    """Per-connection state: waiting for start, streaming, stopped."""

    def __init__(self, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.start: TwilioStart | None = None
        self.stopped = False

    def receive(self, text: str | bytes) -> TwilioMessage:
        if len(text) > MAX_TEXT_BYTES:
            raise LimitExceededError(
                f"Twilio message: expected at most {MAX_TEXT_BYTES} bytes, found {len(text)}"
            )
        try:
            data = _object(json.loads(text), "Twilio message")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"Twilio message: expected JSON, found invalid JSON ({exc})") from None
        event = data.get("event")
        if not isinstance(event, str):
            raise ProtocolError(f"Twilio message: expected a string 'event', found {event!r}")
        if event == "start":
            return self._on_start(data)
        if event == "media":
            return self._on_media(data)
        if event == "stop":
            return self._on_stop(data)
        if event not in IGNORED_EVENTS:
            logger.debug("ignoring unknown Twilio event %r", event)
        return TwilioIgnored(event)

    def _live(self, data: dict[str, object], event: str) -> TwilioStart:
        if self.start is None:
            raise ProtocolError(f"Twilio {event}: expected a start message first")
        if self.stopped:
            raise ProtocolError(f"Twilio {event}: expected nothing after stop")
        sid = data.get("streamSid", self.start.stream_sid)
        if sid != self.start.stream_sid:
            raise ProtocolError(
                f"Twilio {event}: expected streamSid {self.start.stream_sid!r}, found {sid!r}"
            )
        return self.start

    def _on_start(self, data: dict[str, object]) -> TwilioStart:
        if self.start is not None:
            raise ProtocolError(
                f"Twilio start: expected one start per connection, found a second "
                f"(stream {self.start.stream_sid!r} is live)"
            )
        start = _object(data.get("start"), "Twilio start.start")
        stream_sid = _string(start, "streamSid", "Twilio start.start")
        _check_media_format(start)
        tracks = _parse_tracks(start)
        call_sid = start.get("callSid")
        params = start.get("customParameters")
        both = len(tracks) > 1
        self.start = TwilioStart(
            stream_sid=stream_sid,
            call_sid=call_sid if isinstance(call_sid, str) else None,
            tracks=tracks,
            stream_ids={t: stream_id_for(stream_sid, t, both) for t in tracks},
            custom_parameters=(
                {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}
            ),
        )
        return self.start

    def _on_media(self, data: dict[str, object]) -> TwilioMedia:
        start = self._live(data, "media")
        media = _object(data.get("media"), "Twilio media.media")
        track = media.get("track", start.tracks[0] if len(start.tracks) == 1 else None)
        if not isinstance(track, str) or track not in start.stream_ids:
            raise ProtocolError(
                f"Twilio media.track: expected one of the started tracks {list(start.tracks)}, "
                f"found {track!r}"
            )
        samples = decode_payload(media.get("payload"), self.max_payload_bytes)
        return TwilioMedia(
            stream_id=start.stream_ids[track],
            track=track,
            chunk=_optional_int(media.get("chunk")),
            timestamp_ms=_optional_int(media.get("timestamp")),
            samples=samples,
        )

    def _on_stop(self, data: dict[str, object]) -> TwilioStop:
        start = self._live(data, "stop")
        self.stopped = True
        return TwilioStop(start.stream_sid)
