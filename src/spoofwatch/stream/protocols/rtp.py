"""RTP (RFC 3550) for the SIPREC recorder: header parsing, audio decoding, and a small
jitter buffer that restores order and reports what never arrived. No I/O.

``JitterBuffer`` holds up to ``depth`` packets: a packet is released when it is the next
in sequence, or when the buffer is full (the missing ones are then declared lost). Lost
time is measured by RTP timestamps, so it also covers a sender that stops during silence
(discontinuous transmission). A new SSRC (the sender restarted its stream) or a sequence
jump beyond ``MAX_DROPOUT`` starts the sequence over; late and duplicate packets are
dropped and counted. Telephone events (RFC 4733 DTMF) are dropped. Comfort-noise packets
(RFC 3389, payload type 13) hold their place in the sequence, so a sender's silence
descriptors are neither waited for nor counted as lost, and the silence they describe is
released as a gap of cause ``comfort-noise`` (no noise is generated: nothing is scored).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import alaw_decode, mulaw_decode
from spoofwatch.errors import AudioError, ProtocolError
from spoofwatch.stream.protocols.sdp import G722, PCMA, PCMU, Codec

HEADER_BYTES: Final = 12
MAX_PACKET_BYTES: Final = 2048  # 60 ms of G.711 is 480 bytes; RTP over Ethernet fits 1500
MAX_DROPOUT: Final = 3000  # RFC 3550 A.1: a larger sequence jump is a restart
MAX_GAP_S: Final = 30.0  # a longer timestamp jump is a restart, not lost audio
DEFAULT_DEPTH: Final = 4  # packets: 80 ms at 20 ms packets
COMFORT_NOISE_PT: Final = 13  # RFC 3551's static CN/8000


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """One RTP packet; ProtocolError naming what was wrong (never an IndexError)."""
    if len(data) < HEADER_BYTES:
        raise ProtocolError(f"RTP: expected at least {HEADER_BYTES} bytes, found {len(data)}")
    if len(data) > MAX_PACKET_BYTES:
        raise ProtocolError(f"RTP: expected at most {MAX_PACKET_BYTES} bytes, found {len(data)}")
    first, second, sequence, timestamp, ssrc = struct.unpack_from(">BBHII", data)
    if first >> 6 != 2:
        raise ProtocolError(f"RTP: expected version 2, found {first >> 6}")
    offset = HEADER_BYTES + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            raise ProtocolError("RTP: expected a header extension, found the packet cut short")
        (words,) = struct.unpack_from(">H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or padding > end - offset:
            raise ProtocolError(f"RTP: expected padding within the packet, found {padding} bytes")
        end -= padding
    if offset > end:
        raise ProtocolError(f"RTP: expected a header of {offset} bytes within {len(data)} bytes")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80), data[offset:end])


def build_rtp(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    return (
        struct.pack(
            ">BBHII",
            0x80,
            (0x80 if marker else 0) | payload_type,
            sequence & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc,
        )
        + payload
    )


class Decoder(Protocol):
    def decode(self, payload: bytes) -> NDArray[np.float32]: ...


class G711Decoder:
    def __init__(self, codec: Codec) -> None:
        self.alaw = codec == PCMA

    def decode(self, payload: bytes) -> NDArray[np.float32]:
        return alaw_decode(payload) if self.alaw else mulaw_decode(payload)


class G722Decoder:
    """ITU-T G.722 at 64 kbit/s through ``libg722`` (Sippy Software's bit-exact C codec,
    the PyPI package ``G722``); one instance per sender, the codec is stateful."""

    def __init__(self) -> None:
        from G722 import G722 as Codec722

        self._codec = Codec722(16000, 64000)

    def decode(self, payload: bytes) -> NDArray[np.float32]:
        pcm = np.frombuffer(bytes(self._codec.decode(payload)), dtype=np.int16)
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def g722_available() -> bool:
    try:
        import G722  # noqa: F401
    except ImportError:
        return False
    return True


def decoder_for(codec: Codec) -> Decoder:
    if codec in (PCMU, PCMA):
        return G711Decoder(codec)
    if codec == G722:
        return G722Decoder()
    raise AudioError(f"RTP codec: expected PCMU, PCMA or G722, found {codec.name}")


@dataclass(frozen=True)
class Audio:
    samples: NDArray[np.float32]


@dataclass(frozen=True)
class Lost:
    """Time with no audio: packets that never arrived (``loss``) or a sender's silence
    described by comfort-noise packets (``comfort-noise``)."""

    seconds: float
    cause: str = "loss"


Released = Audio | Lost


@dataclass
class RtpCounters:
    received: int = 0
    late: int = 0
    duplicate: int = 0
    lost: int = 0
    ignored: int = 0  # telephone events and unknown payload types
    comfort_noise: int = 0  # silence descriptors (RFC 3389)
    restarts: int = 0  # new SSRC or sequence jumps
    undecodable: int = 0


class JitterBuffer:
    """One media stream's packets in sequence order, decoded to audio at the codec rate."""

    def __init__(self, codec: Codec, payload_type: int, *, depth: int = DEFAULT_DEPTH) -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.depth = depth
        self.samples_per_tick = codec.sample_rate // codec.clock_rate
        self.counters = RtpCounters()
        self.ssrc: int | None = None
        self._decoder = decoder_for(codec)
        self._held: dict[int, RtpPacket] = {}  # extended sequence -> packet
        self._next: int | None = None  # extended sequence expected next
        self._cycle = 0
        self._last_seq: int | None = None
        self._expected_ts: int | None = None  # RTP timestamp where the last released packet ended
        self._silent = False  # a comfort-noise packet came since the last audio

    def set_codec(self, codec: Codec, payload_type: int) -> None:
        """A renegotiated codec (re-INVITE) of the same audio rate."""
        if codec != self.codec:
            self._decoder = decoder_for(codec)
        self.codec, self.payload_type = codec, payload_type

    def push(self, packet: RtpPacket) -> list[Released]:
        """Take one packet; whatever it lets out, in order."""
        self.counters.received += 1
        if packet.payload_type not in (self.payload_type, COMFORT_NOISE_PT):
            self.counters.ignored += 1  # telephone-event, anything not negotiated
            return []
        released: list[Released] = []
        if self.ssrc is not None and packet.ssrc != self.ssrc:
            released += self.drain()
            self._restart()
        self.ssrc = packet.ssrc
        extended = self._extend(packet.sequence)
        if self._next is not None and abs(extended - self._next) > MAX_DROPOUT:
            released += self.drain()
            self._restart()
            extended = self._extend(packet.sequence)
        if self._next is None:
            self._next = extended
        if extended < self._next:
            self.counters.late += 1
            return released
        if extended in self._held:
            self.counters.duplicate += 1
            return released
        self._held[extended] = packet
        while self._held and (self._next in self._held or len(self._held) > self.depth):
            if self._next not in self._held:
                missing = min(self._held) - self._next
                self.counters.lost += missing
                self._next += missing
            released += self._release(self._held.pop(self._next))
            self._next += 1
        return released

    def drain(self) -> list[Released]:
        """Release everything held (end of call, hold, timeout), gaps included."""
        released: list[Released] = []
        for extended in sorted(self._held):
            if self._next is not None and extended > self._next:
                self.counters.lost += extended - self._next
            released += self._release(self._held[extended])
            self._next = extended + 1
        self._held.clear()
        return released

    def reset(self) -> list[Released]:
        """Drain, then forget the sequence: the next packet starts afresh (after a hold)."""
        released = self.drain()
        self._restart()
        return released

    def _restart(self) -> None:
        self.counters.restarts += 1
        self._next = None
        self._cycle = 0
        self._last_seq = None
        self._expected_ts = None
        self._silent = False

    def _extend(self, sequence: int) -> int:
        if self._last_seq is not None:
            if sequence < 0x1000 and self._last_seq > 0xF000:
                self._cycle += 0x10000
            elif sequence > 0xF000 and self._last_seq < 0x1000:
                return self._cycle - 0x10000 + sequence  # a late packet from before the wrap
        self._last_seq = sequence
        return self._cycle + sequence

    def _release(self, packet: RtpPacket) -> list[Released]:
        released: list[Released] = []
        if packet.payload_type == COMFORT_NOISE_PT:
            self.counters.comfort_noise += 1
            self._silent = True  # the silence ends where the next audio starts
            return released
        cause, self._silent = ("comfort-noise" if self._silent else "loss"), False
        if self._expected_ts is not None:
            ticks = (packet.timestamp - self._expected_ts) & 0xFFFFFFFF
            if ticks >= 0x80000000:
                ticks -= 0x100000000
            seconds = ticks / self.codec.clock_rate
            if 0 < seconds <= MAX_GAP_S:
                released.append(Lost(seconds, cause))
        try:
            samples = self._decoder.decode(packet.payload)
        except (AudioError, ValueError) as exc:
            self.counters.undecodable += 1
            raise AudioError(f"RTP {self.codec.name} payload: expected decodable audio ({exc})") from None
        self._expected_ts = (packet.timestamp + len(samples) // self.samples_per_tick) & 0xFFFFFFFF
        if len(samples):
            released.append(Audio(samples))
        return released
