"""Genesys Cloud AudioHook (protocol version 2): the server side's state machine. No I/O.

Protocol (public docs: https://developer.genesys.cloud/devapps/audiohook/ — "Protocol
specification", "Session walkthrough" — and Genesys' open-source reference server,
https://github.com/purecloudlabs/audiohook-reference-implementation, ``protocol/message.ts``,
``protocol/validators.ts`` and ``server/serversessionimpl.ts``):

- Genesys (the client) opens a WebSocket and sends JSON text messages
  ``{"version":"2","id":SESSION_UUID,"type":T,"seq":N,"serverseq":M,"position":"PT1.5S",
  "parameters":{...}}``: ``open``, ``ping``, ``close``, ``discarded``, ``paused``,
  ``resumed``, ``update``, ``error``. ``seq`` counts up by one from 1; ``serverseq`` echoes
  the last server message seen; ``position`` is the audio timeline as an ISO 8601 duration.
- The server answers with ``opened`` (the chosen media), ``pong``, ``closed``, and may
  send ``disconnect`` (``reason`` ``completed`` | ``unauthorized`` | ``error``, optional
  ``info``) after which the client sends ``close`` and the server ``closed``. Server
  messages carry their own ``seq`` and ``clientseq`` (the last client seq seen).
- ``open.parameters.media`` offers formats: ``{"type":"audio","format":"PCMU"|"L16",
  "channels":["external","internal"],"rate":8000}``. Audio arrives as binary frames after
  ``opened``: interleaved samples in channel order (PCMU one byte per sample; L16 16-bit
  little-endian, as in the reference implementation).
- A "connection probe" is an ``open`` whose ``conversationId`` is the null UUID: answer
  ``opened``, expect ``close``; no audio flows and no stream is opened here.

Mapping to spoofwatch: each channel becomes a stream ``<session id>:external`` (the
customer) or ``<session id>:internal`` (the agent), at 8000 Hz. Audio that never
arrives is a gap (``AudioHookTimelineGap``), never filler: a ``discarded`` message (audio
the client dropped), a pause (``paused`` ... ``resumed``: while paused the client's
``position`` keeps advancing on every ping, and the whole pause is one gap, reported
when it ends), and any other message whose ``position`` runs ahead of the audio
received. The connection hands each gap to the streams (``StreamHandle.gap``), which
score no window over it and keep the call's timeline (docs/protocol.md, "Gaps and
pauses").
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import decode_pcm
from spoofwatch.errors import AudioError, LimitExceededError, ProtocolError

logger = logging.getLogger(__name__)

AUDIOHOOK_VERSION: Final = "2"
AUDIOHOOK_SAMPLE_RATE: Final = 8000
AUDIOHOOK_FORMATS: Final = {"PCMU": "mulaw", "L16": "pcm_s16le"}
AUDIOHOOK_CHANNELS: Final = ("external", "internal")
NULL_UUID: Final = "00000000-0000-0000-0000-000000000000"
MAX_TEXT_BYTES: Final = 65535  # the reference server's limit
MAX_AUDIO_FRAME_BYTES: Final = 64 * 1024  # 2 s of stereo PCMU; Genesys sends far less
# A position ahead of the audio by at most this is rounding (positions have 1 ms steps),
# not lost audio: ignored (the next message's position is compared afresh).
POSITION_SLACK_SAMPLES: Final = 8
DISCONNECT_REASONS: Final = ("completed", "unauthorized", "error")
CLOSE_REASONS: Final = ("end", "error", "disconnect", "reconnect")
CLIENT_TYPES: Final = ("open", "ping", "close", "discarded", "paused", "resumed", "update", "error")

_UUID_RE: Final = re.compile(
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)
_DURATION_RE: Final = re.compile(r"^PT(\d*\.?\d+)S$")

State = Literal["preparing", "opening", "active", "paused", "disconnecting", "closing", "closed"]


@dataclass(frozen=True)
class AudioHookMedia:
    format: str  # "PCMU" | "L16"
    channels: tuple[str, ...]
    rate: int = AUDIOHOOK_SAMPLE_RATE

    def to_json(self) -> dict[str, object]:
        return {"type": "audio", "format": self.format, "channels": list(self.channels), "rate": self.rate}


@dataclass(frozen=True)
class PartyAudio:
    """Mono audio of one party at 8000 Hz."""

    stream_id: str
    party: str
    samples: NDArray[np.float32]


@dataclass(frozen=True)
class AudioHookTimelineGap:
    """``seconds`` of every party's audio from ``start_s`` on the call's timeline never
    arrived; ``cause``: ``discarded``, ``paused`` or ``position`` (a jump ahead)."""

    start_s: float
    seconds: float
    cause: str


@dataclass(frozen=True)
class AudioHookOpen:
    session_id: str
    conversation_id: str
    organization_id: str | None
    media: AudioHookMedia
    stream_ids: dict[str, str]  # channel -> spoofwatch stream id
    probe: bool
    custom_config: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioHookPing:
    rtt_s: float | None


@dataclass(frozen=True)
class AudioHookClose:
    reason: str


@dataclass(frozen=True)
class AudioHookGap:
    """A ``discarded`` or ``resumed`` message: ``discarded_s`` of audio from ``start_s`` are missing."""

    kind: str
    start_s: float
    discarded_s: float


@dataclass(frozen=True)
class AudioHookClientError:
    code: int | None
    message: str


@dataclass(frozen=True)
class AudioHookIgnored:
    type: str


AudioHookMessage = (
    AudioHookOpen | AudioHookPing | AudioHookClose | AudioHookGap | AudioHookClientError | AudioHookIgnored
)
AudioHookItem = AudioHookMessage | PartyAudio | AudioHookTimelineGap


@dataclass
class AudioHookCounters:
    frames: int = 0
    samples: int = 0  # per channel
    gaps: int = 0
    gap_samples: int = 0  # per channel
    position_behind: int = 0  # messages whose position lagged the audio received


def parse_duration(value: object, where: str) -> float:
    """ISO 8601 ``PT<seconds>S`` to seconds."""
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ProtocolError(f"{where}: expected an ISO 8601 duration like 'PT1.25S', found {value!r}")
    return float(match.group(1))


def format_duration(seconds: float) -> str:
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def _seq(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{where}: expected a non-negative integer, found {value!r}")
    return value


def _uuid(value: object, where: str) -> str:
    if not isinstance(value, str) or not _UUID_RE.match(value):
        raise ProtocolError(f"{where}: expected a UUID, found {value!r}")
    return value.lower()


def select_media(offered: object) -> AudioHookMedia:
    """The offer to accept: 8 kHz PCMU or L16, preferring the one with most channels."""
    if not isinstance(offered, list):
        raise ProtocolError(f"AudioHook open.parameters.media: expected a list, found {offered!r}")
    acceptable: list[AudioHookMedia] = []
    for offer in offered:
        if not isinstance(offer, dict):
            continue
        channels = offer.get("channels")
        if (
            offer.get("type") == "audio"
            and offer.get("format") in AUDIOHOOK_FORMATS
            and offer.get("rate") == AUDIOHOOK_SAMPLE_RATE
            and isinstance(channels, list)
            and 1 <= len(channels) <= len(AUDIOHOOK_CHANNELS)
            and len(set(channels)) == len(channels)
            and all(c in AUDIOHOOK_CHANNELS for c in channels)
        ):
            acceptable.append(AudioHookMedia(str(offer["format"]), tuple(str(c) for c in channels)))
    if not acceptable:
        raise ProtocolError(
            f"AudioHook open: expected a media offer of type audio, format PCMU or L16, rate "
            f"{AUDIOHOOK_SAMPLE_RATE}, channels from {list(AUDIOHOOK_CHANNELS)}; found {offered!r}"
        )
    return max(acceptable, key=lambda m: len(m.channels))  # max() keeps the first of equals


class AudioHookSession:
    """One AudioHook WebSocket session, seen from the server.

    ``receive_text`` and ``receive_binary`` validate client messages and return what they
    carry (a message, audio per party, silence standing in for a gap); the ``*_message``
    methods build the server's replies and advance the state. ProtocolError means the
    session must be ended with ``disconnect_message("error", ...)``.
    """

    def __init__(self) -> None:
        self.state: State = "preparing"
        self.session_id: str | None = None
        self.open: AudioHookOpen | None = None
        self.client_seq = 0
        self.server_seq = 0
        self.position_samples = 0  # per channel, audio received plus gaps accounted
        self.counters = AudioHookCounters()

    # --- client -> server -----------------------------------------------------------

    def receive_text(self, text: str | bytes) -> list[AudioHookItem]:
        """One text message: any gap it reveals, then the message itself."""
        if len(text) > MAX_TEXT_BYTES:
            raise LimitExceededError(
                f"AudioHook text message: expected at most {MAX_TEXT_BYTES} bytes, found {len(text)}"
            )
        try:
            data = _object(json.loads(text), "AudioHook message")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"AudioHook message: expected JSON, found invalid JSON ({exc})") from None
        kind = self._check_envelope(data)
        params = _object(data.get("parameters"), f"AudioHook {kind}.parameters")
        position = parse_duration(data.get("position"), f"AudioHook {kind}.position")
        if kind == "open":
            return [self._on_open(params)]
        if self.open is None and kind != "close":  # a close ends even a session refused at open
            raise ProtocolError(f"AudioHook {kind}: expected an open message first")
        items: list[AudioHookItem] = []
        message: AudioHookMessage
        if kind == "ping":
            rtt = params.get("rtt")
            message = AudioHookPing(parse_duration(rtt, "AudioHook ping.rtt") if rtt is not None else None)
        elif kind == "close":
            reason = params.get("reason")
            if reason not in CLOSE_REASONS:
                raise ProtocolError(
                    f"AudioHook close.parameters.reason: expected one of {list(CLOSE_REASONS)}, "
                    f"found {reason!r}"
                )
            if self.state == "paused":  # a call that ends paused: the pause ran to the end
                items += self._gap_to(round(position * AUDIOHOOK_SAMPLE_RATE), "paused")
            self.state = "closing"
            message = AudioHookClose(str(reason))
        elif kind in ("discarded", "resumed"):
            start = parse_duration(params.get("start"), f"AudioHook {kind}.start")
            discarded = parse_duration(params.get("discarded"), f"AudioHook {kind}.discarded")
            message = AudioHookGap(kind, start, discarded)
            cause = "discarded" if kind == "discarded" else "paused"
            if kind == "resumed" and self.state == "paused":
                self.state = "active"
            # A pause ends where the client says; its pings' positions were the pause too.
            end = max(start + discarded, position if kind == "resumed" else 0.0)
            items += self._gap_to(round(end * AUDIOHOOK_SAMPLE_RATE), cause)
        elif kind == "paused":
            if self.state == "active":
                self.state = "paused"
            message = AudioHookIgnored(kind)
        elif kind == "error":
            code = params.get("code")
            message = AudioHookClientError(
                code if isinstance(code, int) and not isinstance(code, bool) else None,
                str(params.get("message", "")),
            )
        else:  # update: language changes do not matter here
            message = AudioHookIgnored(kind)
        if self.state != "paused":  # while paused the position runs on: the pause is one gap
            items += self._gap_to(round(position * AUDIOHOOK_SAMPLE_RATE), "position")
        items.append(message)
        return items

    def receive_binary(self, data: bytes) -> list[PartyAudio]:
        """One audio frame, split per party; empty while not streaming after a disconnect."""
        if self.state in ("disconnecting", "closing", "closed"):
            return []  # in flight before the client saw our disconnect or its own close
        if self.state != "active" or self.open is None:
            raise ProtocolError(
                f"AudioHook audio: expected audio only after opened and while active, "
                f"found a {len(data)}-byte frame in state {self.state}"
            )
        if len(data) > MAX_AUDIO_FRAME_BYTES:
            raise LimitExceededError(
                f"AudioHook audio frame: expected at most {MAX_AUDIO_FRAME_BYTES} bytes, found {len(data)}"
            )
        media = self.open.media
        try:
            frames = decode_pcm(bytes(data), AUDIOHOOK_FORMATS[media.format], len(media.channels))
        except AudioError as exc:
            raise ProtocolError(f"AudioHook audio frame ({media.format}): {exc}") from None
        self.counters.frames += 1
        self.counters.samples += len(frames)
        self.position_samples += len(frames)
        if self.open.probe:
            return []
        return [
            PartyAudio(self.open.stream_ids[channel], channel, np.ascontiguousarray(frames[:, index]))
            for index, channel in enumerate(media.channels)
        ]

    def _check_envelope(self, data: dict[str, object]) -> str:
        if data.get("version") != AUDIOHOOK_VERSION:
            raise ProtocolError(
                f"AudioHook message: expected version {AUDIOHOOK_VERSION!r}, found {data.get('version')!r}"
            )
        kind = data.get("type")
        if kind not in CLIENT_TYPES:
            raise ProtocolError(f"AudioHook message: expected type in {list(CLIENT_TYPES)}, found {kind!r}")
        seq = _seq(data.get("seq"), f"AudioHook {kind}.seq")
        if seq != self.client_seq + 1:
            raise ProtocolError(f"AudioHook {kind}.seq: expected {self.client_seq + 1}, found {seq}")
        server_seq = _seq(data.get("serverseq"), f"AudioHook {kind}.serverseq")
        if server_seq > self.server_seq:
            raise ProtocolError(
                f"AudioHook {kind}.serverseq: expected at most {self.server_seq} (messages sent), "
                f"found {server_seq}"
            )
        session_id = _uuid(data.get("id"), f"AudioHook {kind}.id")
        if self.session_id is not None and session_id != self.session_id:
            raise ProtocolError(
                f"AudioHook {kind}.id: expected session {self.session_id}, found {session_id}"
            )
        self.client_seq = seq
        self.session_id = session_id
        return str(kind)

    def _on_open(self, params: dict[str, object]) -> AudioHookOpen:
        if self.state != "preparing":
            raise ProtocolError(
                f"AudioHook open: expected one open per session, found another in state {self.state}"
            )
        assert self.session_id is not None  # set by the envelope check
        conversation = _uuid(params.get("conversationId"), "AudioHook open.parameters.conversationId")
        organization = params.get("organizationId")
        custom = params.get("customConfig")
        media = select_media(params.get("media"))
        self.open = AudioHookOpen(
            session_id=self.session_id,
            conversation_id=conversation,
            organization_id=organization if isinstance(organization, str) else None,
            media=media,
            stream_ids={c: f"{self.session_id}:{c}" for c in media.channels},
            probe=conversation == NULL_UUID,
            custom_config=custom if isinstance(custom, dict) else {},
        )
        self.state = "opening"
        return self.open

    def _gap_to(self, target_samples: int, cause: str) -> list[AudioHookTimelineGap]:
        """The gap from the audio accounted for up to ``target_samples`` on the timeline."""
        if self.open is None or self.open.probe:
            return []
        missing = target_samples - self.position_samples
        if missing < 0:
            self.counters.position_behind += 1
            return []
        if missing == 0 or (cause == "position" and missing <= POSITION_SLACK_SAMPLES):
            return []
        start = self.position_samples
        self.position_samples = target_samples
        self.counters.gaps += 1
        self.counters.gap_samples += missing
        logger.info(
            "AudioHook session %s: %.3f s of audio missing at %.3f s (%s)",
            self.session_id,
            missing / AUDIOHOOK_SAMPLE_RATE,
            start / AUDIOHOOK_SAMPLE_RATE,
            cause,
        )
        return [AudioHookTimelineGap(start / AUDIOHOOK_SAMPLE_RATE, missing / AUDIOHOOK_SAMPLE_RATE, cause)]

    # --- server -> client -----------------------------------------------------------

    def _message(self, kind: str, parameters: dict[str, object]) -> str:
        self.server_seq += 1
        return json.dumps(
            {
                "version": AUDIOHOOK_VERSION,
                "type": kind,
                "seq": self.server_seq,
                "clientseq": self.client_seq,
                "id": self.session_id or NULL_UUID,
                "parameters": parameters,
            },
            separators=(",", ":"),
        )

    def opened_message(self) -> str:
        if self.state != "opening" or self.open is None:
            raise ProtocolError(f"AudioHook opened: expected state opening, found {self.state}")
        self.state = "active"
        return self._message("opened", {"media": [self.open.media.to_json()], "startPaused": False})

    def pong_message(self) -> str:
        return self._message("pong", {})

    def closed_message(self) -> str:
        self.state = "closed"
        return self._message("closed", {})

    def disconnect_message(self, reason: str, info: str | None = None) -> str:
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"disconnect reason: expected one of {DISCONNECT_REASONS}, found {reason!r}")
        self.state = "disconnecting"
        params: dict[str, object] = {"reason": reason}
        if info:
            params["info"] = info
        return self._message("disconnect", params)
