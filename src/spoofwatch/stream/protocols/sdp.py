"""SDP (RFC 4566) offers from a SIPREC client and the recorder's answers (RFC 3264). No I/O.

Hand-written rather than a library: the one maintained PyPI parser (``sdp-transform``)
returns untyped dictionaries of whatever its regular expressions matched, so every field
would need the checks below anyway; a recorder reads only a handful of lines (``c=``,
``m=``, ``a=rtpmap``, ``a=label``, the direction attributes) and writes a short answer.
A malformed offer raises ``SipError`` 400; one with no usable audio stream 488.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from spoofwatch.stream.protocols.sip import SipError

MAX_MEDIA: Final = 16  # m-lines per offer: a recording of a conference has one per party
DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True)
class Codec:
    """What the recorder decodes: name as in ``a=rtpmap``, RTP clock and audio rate."""

    name: str
    clock_rate: int
    sample_rate: int


# Static payload types (RFC 3551 6); G.722 runs at 16 kHz behind an 8000 RTP clock.
PCMU: Final = Codec("PCMU", 8000, 8000)
PCMA: Final = Codec("PCMA", 8000, 8000)
G722: Final = Codec("G722", 8000, 16000)
STATIC_CODECS: Final = {0: PCMU, 8: PCMA, 9: G722}
TELEPHONE_EVENT: Final = "telephone-event"


@dataclass
class MediaOffer:
    index: int
    media: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    direction: str | None = None
    label: str | None = None
    connection: str | None = None

    def codec_of(self, payload_type: int) -> Codec | None:
        mapped = self.rtpmap.get(payload_type)
        if mapped is None:
            return STATIC_CODECS.get(payload_type) if payload_type < 96 else None
        name, clock = mapped
        for codec in (PCMU, PCMA, G722):
            if codec.name.lower() == name.lower() and codec.clock_rate == clock:
                return codec
        return None

    def telephone_event(self) -> int | None:
        for pt, (name, _clock) in self.rtpmap.items():
            if name.lower() == TELEPHONE_EVENT and str(pt) in self.formats:
                return pt
        return None


@dataclass
class SessionOffer:
    origin: str
    connection: str | None
    direction: str
    media: list[MediaOffer]

    def media_direction(self, media: MediaOffer) -> str:
        return media.direction or self.direction

    def media_address(self, media: MediaOffer) -> str | None:
        return media.connection or self.connection


_LINE = re.compile(r"^([a-z])=(.*)$")


def parse_offer(body: bytes) -> SessionOffer:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError(400, "SDP: expected UTF-8 text, found undecodable bytes") from None
    lines = [line for line in re.split(r"\r?\n", text) if line]
    if not lines or lines[0].strip() != "v=0":
        raise SipError(400, "SDP: expected 'v=0' as the first line")
    origin = ""
    connection: str | None = None
    direction = "sendrecv"
    media: list[MediaOffer] = []
    for number, line in enumerate(lines, 1):
        match = _LINE.match(line.strip())
        if match is None:
            raise SipError(400, f"SDP line {number}: expected 'x=value', found {line[:40]!r}")
        kind, value = match.groups()
        current = media[-1] if media else None
        if kind == "o":
            origin = value
        elif kind == "c":
            address = _connection(value, number)
            if current is None:
                connection = address
            else:
                current.connection = address
        elif kind == "m":
            if len(media) >= MAX_MEDIA:
                raise SipError(400, f"SDP: expected at most {MAX_MEDIA} media lines, found more")
            media.append(_media(value, len(media), number))
        elif kind == "a":
            name, _, arg = value.partition(":")
            if name in DIRECTIONS:
                if current is None:
                    direction = name
                else:
                    current.direction = name
            elif current is not None and name == "rtpmap":
                _rtpmap(current, arg, number)
            elif current is not None and name == "label":
                current.label = arg.strip()[:64] or None
    if not media:
        raise SipError(488, "SDP: expected at least one m= line, found none")
    return SessionOffer(origin, connection, direction, media)


def _connection(value: str, number: int) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SipError(400, f"SDP line {number}: expected 'c=IN IP4|IP6 ADDRESS', found {value[:60]!r}")
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SipError(400, f"SDP line {number}: expected an IP address, found {address[:60]!r}") from None
    return address


def _media(value: str, index: int, number: int) -> MediaOffer:
    parts = value.split()
    if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
        raise SipError(400, f"SDP line {number}: expected 'm=MEDIA PORT PROTO FMT...', found {value[:60]!r}")
    port = int(parts[1].split("/")[0])
    if port > 65535:
        raise SipError(400, f"SDP line {number}: expected a port 0..65535, found {port}")
    return MediaOffer(index, parts[0], port, parts[2], parts[3:])


def _rtpmap(media: MediaOffer, arg: str, number: int) -> None:
    match = re.match(r"^(\d{1,3})\s+([^/\s]+)/(\d{1,6})", arg.strip())
    if match is None:
        raise SipError(400, f"SDP line {number}: expected 'a=rtpmap:PT NAME/RATE', found {arg[:60]!r}")
    pt, name, clock = int(match.group(1)), match.group(2), int(match.group(3))
    if pt > 127:
        raise SipError(400, f"SDP line {number}: expected an RTP payload type 0..127, found {pt}")
    media.rtpmap[pt] = (name, clock)


def answer_direction(offered: str) -> str:
    """A recorder only receives: sendonly/sendrecv are answered recvonly, the rest inactive."""
    return "recvonly" if offered in ("sendonly", "sendrecv") else "inactive"


@dataclass(frozen=True)
class MediaAnswer:
    """The answer to one m-line: ``port`` 0 rejects it."""

    offer: MediaOffer
    port: int
    payload_type: int | None = None
    codec: Codec | None = None
    direction: str = "recvonly"


def choose_codec(media: MediaOffer, sample_rate: int | None = None) -> tuple[int, Codec] | None:
    """The first offered format we decode (at ``sample_rate`` if given), in the offer's order."""
    for fmt in media.formats:
        if not fmt.isdigit() or int(fmt) > 127:
            continue
        codec = media.codec_of(int(fmt))
        if codec is not None and (sample_rate is None or codec.sample_rate == sample_rate):
            return int(fmt), codec
    return None


def build_answer(answers: list[MediaAnswer], *, address: str, session_id: int, version: int) -> bytes:
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=spoofwatch {session_id} {version} IN {family} {address}",
        "s=spoofwatch recording",
        f"c=IN {family} {address}",
        "t=0 0",
    ]
    for answer in answers:
        offer = answer.offer
        if answer.port == 0 or answer.payload_type is None or answer.codec is None:
            lines.append(f"m={offer.media} 0 {offer.proto} {' '.join(offer.formats)}")
            continue
        formats = [str(answer.payload_type)]
        event = offer.telephone_event()
        if event is not None:
            formats.append(str(event))
        lines.append(f"m=audio {answer.port} {offer.proto} {' '.join(formats)}")
        codec = answer.codec
        lines.append(f"a=rtpmap:{answer.payload_type} {codec.name}/{codec.clock_rate}")
        if event is not None:
            lines.append(f"a=rtpmap:{event} {TELEPHONE_EVENT}/{offer.rtpmap[event][1]}")
        if offer.label is not None:
            lines.append(f"a=label:{offer.label}")
        lines.append(f"a={answer.direction}")
    return ("\r\n".join(lines) + "\r\n").encode()
