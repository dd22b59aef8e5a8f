"""Asterisk AudioSocket: frame codec and per-connection state machine. No I/O.

Protocol (public docs: https://docs.asterisk.org/Configuration/Channel-Drivers/AudioSocket/
and the protocol's home, https://github.com/CyCoreSystems/audiosocket, README "Protocol
definition"): a TCP stream of frames, each a 3-byte header — kind (1 byte) and payload
length (16-bit unsigned, big-endian) — followed by the payload.

- ``0x00`` hangup (no payload; closing the socket is also a hangup)
- ``0x01`` the call's UUID, 16 bytes, sent first by Asterisk
- ``0x03`` one DTMF digit (ASCII)
- ``0x10`` signed linear 16-bit little-endian mono audio at 8 kHz; newer Asterisk versions
  add ``0x11``..``0x18`` for 12, 16, 24, 32, 44.1, 48, 96 and 192 kHz
- ``0xff`` error; the payload is an optional application-specific code. Asterisk's own
  codes are bit flags: 0x01 hangup of the calling party, 0x02 frame forwarding error,
  0x04 memory (allocation) error.

Mapping to spoofwatch: one stream per connection, named by the UUID in its canonical
text form, at the rate of the first audio frame (the stream opens there). AudioSocket
carries one party (what the Asterisk channel hears from the caller), has no sequence
numbers and runs over TCP, so there are no gaps to fill. To refuse a call the server
sends an error frame whose payload is a UTF-8 reason, then a hangup frame, then closes.
AudioSocket has no authentication: listen on a private address only.
"""

from __future__ import annotations

import logging
import struct
import uuid
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import decode_pcm
from spoofwatch.errors import AudioError, ProtocolError

logger = logging.getLogger(__name__)

KIND_HANGUP: Final = 0x00
KIND_UUID: Final = 0x01
KIND_DTMF: Final = 0x03
KIND_ERROR: Final = 0xFF
SLIN_RATES: Final = {
    0x10: 8000,
    0x11: 12000,
    0x12: 16000,
    0x13: 24000,
    0x14: 32000,
    0x15: 44100,
    0x16: 48000,
    0x17: 96000,
    0x18: 192000,
}
SLIN_KINDS: Final = {rate: kind for kind, rate in SLIN_RATES.items()}
HEADER_BYTES: Final = 3
MAX_PAYLOAD_BYTES: Final = 0xFFFF
ASTERISK_ERRORS: Final = {
    0x01: "hangup of calling party",
    0x02: "frame forwarding error",
    0x04: "memory (allocation) error",
}


@dataclass(frozen=True)
class AudioSocketFrame:
    kind: int
    payload: bytes


@dataclass(frozen=True)
class AudioSocketId:
    call_id: str


@dataclass(frozen=True)
class AudioSocketAudio:
    samples: NDArray[np.float32]
    sample_rate: int


@dataclass(frozen=True)
class AudioSocketDtmf:
    digit: str


@dataclass(frozen=True)
class AudioSocketHangup:
    pass


@dataclass(frozen=True)
class AudioSocketError:
    payload: bytes

    @property
    def description(self) -> str:
        """Asterisk's bit-flag codes in words, or the payload as text."""
        known_bits = sum(ASTERISK_ERRORS)
        if len(self.payload) == 1 and self.payload[0] and not self.payload[0] & ~known_bits:
            code = self.payload[0]
            return ", ".join(text for bit, text in ASTERISK_ERRORS.items() if code & bit) + f" (0x{code:02x})"
        if not self.payload:
            return "no error code"
        return self.payload.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class AudioSocketIgnored:
    kind: int


AudioSocketMessage = (
    AudioSocketId
    | AudioSocketAudio
    | AudioSocketDtmf
    | AudioSocketHangup
    | AudioSocketError
    | AudioSocketIgnored
)


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"AudioSocket kind: expected 0..255, found {kind}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(
            f"AudioSocket payload: expected at most {MAX_PAYLOAD_BYTES} bytes, found {len(payload)}"
        )
    return struct.pack(">BH", kind, len(payload)) + payload


def hangup_frame() -> bytes:
    return encode_frame(KIND_HANGUP)


def error_frame(reason: str) -> bytes:
    """An error frame carrying ``reason`` as UTF-8 (cut to fit one frame)."""
    return encode_frame(KIND_ERROR, reason.encode()[:MAX_PAYLOAD_BYTES])


def uuid_frame(call_id: str | uuid.UUID) -> bytes:
    value = call_id if isinstance(call_id, uuid.UUID) else uuid.UUID(call_id)
    return encode_frame(KIND_UUID, value.bytes)


def audio_frame(pcm_s16le: bytes, sample_rate: int = 8000) -> bytes:
    if sample_rate not in SLIN_KINDS:
        raise ProtocolError(
            f"AudioSocket audio: expected a sample rate in {sorted(SLIN_KINDS)}, found {sample_rate}"
        )
    return encode_frame(SLIN_KINDS[sample_rate], pcm_s16le)


class AudioSocketReader:
    """Cuts a TCP byte stream into frames; holds at most one partial frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes of a frame not yet complete (non-zero at EOF means a cut-off frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[AudioSocketFrame]:
        self._buffer += data
        frames: list[AudioSocketFrame] = []
        offset = 0
        while len(self._buffer) - offset >= HEADER_BYTES:
            kind, length = struct.unpack_from(">BH", self._buffer, offset)
            end = offset + HEADER_BYTES + length
            if end > len(self._buffer):
                break
            frames.append(AudioSocketFrame(kind, bytes(self._buffer[offset + HEADER_BYTES : end])))
            offset = end
        del self._buffer[:offset]
        return frames


class AudioSocketCall:
    """One AudioSocket connection: UUID first, then audio until hangup."""

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.sample_rate: int | None = None
        self.hung_up = False
        self.ignored_frames = 0

    def receive(self, frame: AudioSocketFrame) -> AudioSocketMessage:
        """Interpret one frame; ProtocolError ends the call, AudioError drops one frame."""
        kind, payload = frame.kind, frame.payload
        if kind == KIND_HANGUP:
            self.hung_up = True
            return AudioSocketHangup()
        if kind == KIND_ERROR:
            return AudioSocketError(payload)
        if kind == KIND_UUID:
            return self._on_uuid(payload)
        if kind in SLIN_RATES:
            return self._on_audio(SLIN_RATES[kind], payload)
        if kind == KIND_DTMF:
            return AudioSocketDtmf(payload.decode("ascii", errors="replace"))
        self.ignored_frames += 1
        logger.debug("ignoring AudioSocket frame of kind 0x%02x (%d bytes)", kind, len(payload))
        return AudioSocketIgnored(kind)

    def _on_uuid(self, payload: bytes) -> AudioSocketId:
        if self.call_id is not None:
            raise ProtocolError(
                f"AudioSocket UUID: expected one per connection, found a second after {self.call_id}"
            )
        if len(payload) != 16:
            raise ProtocolError(f"AudioSocket UUID: expected a 16-byte payload, found {len(payload)} bytes")
        self.call_id = str(uuid.UUID(bytes=payload))
        return AudioSocketId(self.call_id)

    def _on_audio(self, rate: int, payload: bytes) -> AudioSocketAudio:
        if self.call_id is None:
            raise ProtocolError(
                f"AudioSocket audio: expected the UUID frame first, found {len(payload)} bytes of audio"
            )
        if self.sample_rate is None:
            self.sample_rate = rate
        elif rate != self.sample_rate:
            raise AudioError(
                f"AudioSocket audio: expected {self.sample_rate} Hz as in the call's first audio frame, "
                f"found a {rate} Hz frame"
            )
        samples = decode_pcm(payload, "pcm_s16le", 1)[:, 0]
        return AudioSocketAudio(np.ascontiguousarray(samples), rate)
