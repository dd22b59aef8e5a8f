"""jambonz ``listen`` and FreeSWITCH ``mod_audio_fork``: metadata parsing and frame
decoding. No I/O.

Protocol (public docs: the jambonz ``listen`` verb, https://docs.jambonz.org/verbs/verbs/listen
and https://docs.jambonz.org/docs/webhooks/listen/; mod_audio_fork's README,
https://github.com/drachtio/drachtio-freeswitch-modules/tree/main/modules/mod_audio_fork):

- The WebSocket is opened with subprotocol ``audio.jambonz.org`` (jambonz) or
  ``audio.drachtio.org`` (mod_audio_fork's default).
- One text frame comes first: JSON metadata. jambonz puts the call's attributes there
  (``callSid``, ``from``, ``to``, ``direction``, ...) plus ``sampleRate`` and ``mixType``
  and the verb's own ``metadata``; mod_audio_fork sends whatever metadata the
  ``uuid_audio_fork <uuid> start <url> <mix-type> <rate> <metadata>`` command was given.
- Then binary frames of 16-bit signed little-endian PCM ("L16") at ``sampleRate``:
  ``mono`` (the caller), ``mixed`` (both parties summed, one channel) or ``stereo``
  (two interleaved channels: the caller first, the callee second).
- Later text frames (DTMF events, mod_audio_fork's final ``stop`` metadata) may arrive;
  they carry no audio and are passed on as ``JambonzText``. Closing the socket ends it.

Settings missing from the metadata (mod_audio_fork metadata is free-form) may come from
the URL query instead: ``/jambonz?sampleRate=16000&mixType=stereo&stream=ID``; the
metadata wins when both give one. ``sampleRate`` may be written ``8k``/``16k`` as in the
mod_audio_fork command. Stream ids: the ``callSid`` (else ``uuid``, else the query's
``stream``, else a generated id) for mono and mixed calls; ``<id>:caller`` and
``<id>:callee`` for stereo. jambonz ``listen`` offers no sequence numbers and runs over
TCP, so there are no gaps to fill.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import decode_pcm
from spoofwatch.errors import AudioError, LimitExceededError, ProtocolError

logger = logging.getLogger(__name__)

JAMBONZ_SUBPROTOCOLS: Final = ("audio.jambonz.org", "audio.drachtio.org")
JAMBONZ_SAMPLE_RATES: Final = (8000, 16000, 24000, 32000, 44100, 48000, 64000)
MIX_TYPES: Final = ("mono", "mixed", "stereo")
STEREO_PARTIES: Final = ("caller", "callee")
ID_KEYS: Final = ("callSid", "call_sid", "uuid")
MAX_TEXT_BYTES: Final = 64 * 1024
MAX_FRAME_BYTES: Final = 256 * 1024  # 1 s of 64 kHz stereo; jambonz sends about 20 ms
MAX_STREAM_ID_LENGTH: Final = 190  # leaves room for ":caller" within the pipeline's 200


@dataclass(frozen=True)
class JambonzStart:
    call_id: str
    sample_rate: int
    mix_type: str
    parties: tuple[str, ...]  # channel order
    stream_ids: tuple[str, ...]  # channel order
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class JambonzText:
    data: object


@dataclass(frozen=True)
class JambonzAudio:
    stream_id: str
    party: str
    samples: NDArray[np.float32]


def parse_sample_rate(value: object, where: str) -> int:
    """``8000``, ``"8000"`` or ``"8k"`` to 8000, if jambonz or mod_audio_fork can send it."""
    rate: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        rate = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.endswith("k") and text[:-1].isdecimal():
            rate = int(text[:-1]) * 1000
        elif text.isdecimal():
            rate = int(text)
    if rate not in JAMBONZ_SAMPLE_RATES:
        raise ProtocolError(
            f"{where}: expected a sample rate in {list(JAMBONZ_SAMPLE_RATES)} Hz, found {value!r}"
        )
    return rate


class JambonzStream:
    """Per-connection state: waiting for the metadata frame, then streaming."""

    def __init__(self, query: Mapping[str, str] | None = None, fallback_id: str = "jambonz") -> None:
        self.query = dict(query or {})
        self.fallback_id = fallback_id
        self.start: JambonzStart | None = None
        self.frames = 0

    def receive_text(self, text: str | bytes) -> JambonzStart | JambonzText:
        if len(text) > MAX_TEXT_BYTES:
            raise LimitExceededError(
                f"jambonz text frame: expected at most {MAX_TEXT_BYTES} bytes, found {len(text)}"
            )
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if self.start is not None:  # free-form text after the start carries nothing we need
                return JambonzText(text if isinstance(text, str) else text.decode(errors="replace"))
            raise ProtocolError(
                f"jambonz metadata: expected a JSON object, found invalid JSON ({exc})"
            ) from None
        if self.start is not None:
            return JambonzText(data)
        if not isinstance(data, dict):
            raise ProtocolError(f"jambonz metadata: expected a JSON object, found {type(data).__name__}")
        self.start = self._parse_start(data)
        return self.start

    def _parse_start(self, data: dict[str, object]) -> JambonzStart:
        rate_value = data.get("sampleRate", self.query.get("sampleRate"))
        if rate_value is None:
            raise ProtocolError(
                "jambonz metadata: expected 'sampleRate' (in the metadata or the URL query), found neither"
            )
        sample_rate = parse_sample_rate(rate_value, "jambonz metadata sampleRate")
        mix_type = data.get("mixType", self.query.get("mixType", "mono"))
        if mix_type not in MIX_TYPES:
            raise ProtocolError(
                f"jambonz metadata mixType: expected one of {list(MIX_TYPES)}, found {mix_type!r}"
            )
        call_id = next((data[k] for k in ID_KEYS if isinstance(data.get(k), str) and data[k]), None)
        call_id = call_id or self.query.get("stream") or self.fallback_id
        if not isinstance(call_id, str) or not 1 <= len(call_id) <= MAX_STREAM_ID_LENGTH:
            raise ProtocolError(
                f"jambonz metadata callSid: expected 1..{MAX_STREAM_ID_LENGTH} characters, found {call_id!r}"
            )
        parties = STEREO_PARTIES if mix_type == "stereo" else (str(mix_type),)
        stream_ids = tuple(f"{call_id}:{p}" for p in parties) if mix_type == "stereo" else (call_id,)
        return JambonzStart(call_id, sample_rate, str(mix_type), parties, stream_ids, data)

    def receive_binary(self, data: bytes) -> list[JambonzAudio]:
        """One L16 frame to mono audio per party, in channel order."""
        if self.start is None:
            raise ProtocolError(
                f"jambonz: expected the JSON metadata text frame first, found a {len(data)}-byte binary frame"
            )
        if len(data) > MAX_FRAME_BYTES:
            raise LimitExceededError(
                f"jambonz audio frame: expected at most {MAX_FRAME_BYTES} bytes, found {len(data)}"
            )
        channels = len(self.start.parties)
        try:
            frames = decode_pcm(bytes(data), "pcm_s16le", channels)
        except AudioError as exc:
            raise AudioError(f"jambonz {self.start.mix_type} L16 frame: {exc}") from None
        self.frames += 1
        return [
            JambonzAudio(stream_id, party, np.ascontiguousarray(frames[:, index]))
            for index, (stream_id, party) in enumerate(
                zip(self.start.stream_ids, self.start.parties, strict=True)
            )
        ]
