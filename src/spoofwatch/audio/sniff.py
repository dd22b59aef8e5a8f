"""Tell an audio container by its first bytes (the REST endpoint takes bodies without a
trustworthy Content-Type). Pure: no I/O."""

from __future__ import annotations

from typing import Final

ACCEPTED_FORMATS: Final = ("wav", "flac", "ogg", "mp3")

ACCEPTED_DESCRIPTION: Final = "WAV, FLAC, OGG (Opus or Vorbis) or MP3"


def _is_mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, a known version and a layer (I-III)."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0b11
    return version != 0b01 and layer != 0 and bitrate != 0b1111 and rate != 0b11


def sniff_audio_format(head: bytes) -> str | None:
    """``wav``, ``flac``, ``ogg`` or ``mp3`` from a file's first bytes (16 are enough), or
    None when they are none of these."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or _is_mpeg_audio_frame(head):
        return "mp3"
    return None


def describe_head(head: bytes) -> str:
    """What the first bytes look like, for an error message (never the whole body)."""
    if not head:
        return "no data"
    shown = head[:8]
    printable = all(32 <= b < 127 for b in shown)
    return f"data starting {shown.decode('ascii')!r}" if printable else f"data starting 0x{shown.hex()}"
