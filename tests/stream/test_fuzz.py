"""Hostile input, fuzzed with hypothesis: every parser and decoder that sees untrusted bytes
either returns a well-formed value or raises one of spoofwatch's own errors.

Bounded for CI: ``SPOOFWATCH_FUZZ_EXAMPLES`` examples per target (default 200); raise it
for a longer hunt, e.g. ``SPOOFWATCH_FUZZ_EXAMPLES=20000 pytest tests/stream/test_fuzz.py``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoofwatch.audio.files import load_audio
from spoofwatch.audio.pcm import (
    SUPPORTED_ENCODINGS,
    alaw_decode,
    alaw_encode,
    decode_pcm,
    mulaw_decode,
    mulaw_encode,
)
from spoofwatch.config import ServerConfig, load_settings
from spoofwatch.errors import (
    AudioError,
    ConfigError,
    LimitExceededError,
    ProtocolError,
)
from spoofwatch.events import parse_event
from spoofwatch.stream.core.gaps import GAP_CAUSES
from spoofwatch.stream.net.auth import basic_auth_password
from spoofwatch.stream.net.redact import redact_text
from spoofwatch.stream.protocols.audiohook import AudioHookOpen, AudioHookSession, AudioHookTimelineGap
from spoofwatch.stream.protocols.audiosocket import (
    HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    SLIN_RATES,
    AudioSocketCall,
    AudioSocketFrame,
    AudioSocketReader,
    encode_frame,
)
from spoofwatch.stream.protocols.jambonz import JambonzStream
from spoofwatch.stream.protocols.twilio import TwilioMediaStream
from spoofwatch.stream.protocols.ws_ingest import (
    IngestLimits,
    IngestProtocol,
    StartMessage,
    decode_frame,
    parse_control,
)
from spoofwatch.stream.sinks.mqtt import parse_broker_url
from spoofwatch.stream.sources.spec import parse_source_spec

EXAMPLES = int(os.environ.get("SPOOFWATCH_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
WIRE_ERRORS = (ProtocolError, LimitExceededError, AudioError)

# --- strategies ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
# Shallow on purpose: deep random JSON costs generation time and finds nothing the
# parsers' type checks do not see one level down.
json_values = (
    json_scalars
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)
)


def with_keys(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects that carry some of ``keys`` (with plausible or random values) and random extras."""
    optional = {k: v | json_values for k, v in keys.items()}
    return st.fixed_dictionaries({}, optional=optional).flatmap(
        lambda base: st.dictionaries(st.text(max_size=6), json_scalars, max_size=2).map(
            lambda extra: {**extra, **base}
        )
    )


def as_wire(obj: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    """JSON text, the same as bytes, or garbage."""
    return st.one_of(
        obj.map(json.dumps),
        obj.map(lambda o: json.dumps(o).encode()),
        st.text(max_size=200),
        st.binary(max_size=200),
    )


def messages(
    kinds: st.SearchStrategy[Any], fields: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[str | bytes]:
    return as_wire(with_keys({**fields, "type": kinds, "event": kinds}))


# --- decoders -----------------------------------------------------------------------------


@FUZZ
@given(
    data=st.binary(max_size=4096),
    encoding=st.sampled_from([*SUPPORTED_ENCODINGS, "pcm_s24le", "", "MULAW"]),
    channels=st.integers(min_value=-2, max_value=12),
)
def test_decode_pcm_returns_bounded_frames_or_audio_error(data: bytes, encoding: str, channels: int) -> None:
    try:
        frames = decode_pcm(data, encoding, channels)
    except AudioError:
        return
    assert frames.dtype == np.float32 and frames.ndim == 2 and frames.shape[1] == channels
    assert np.isfinite(frames).all() and np.abs(frames).max(initial=0.0) <= 1.0


@FUZZ
@given(codes=st.binary(max_size=2048))
def test_g711_decoders_map_any_byte_into_range(codes: bytes) -> None:
    for decode, encode in ((mulaw_decode, mulaw_encode), (alaw_decode, alaw_encode)):
        samples = decode(codes)
        assert samples.shape == (len(codes),) and np.abs(samples).max(initial=0.0) <= 1.0
        again = decode(encode(samples))  # decoded values are fixed points of the codec
        assert np.array_equal(again, samples)


@FUZZ
@given(samples=st.lists(st.floats(width=32), max_size=256))
def test_g711_encoders_refuse_non_finite_input(samples: list[float]) -> None:
    x = np.asarray(samples, dtype=np.float32)
    for encode in (mulaw_encode, alaw_encode):
        try:
            codes = encode(x)
        except AudioError:
            assert not np.isfinite(x).all()
            continue
        assert codes.dtype == np.uint8 and codes.shape == x.shape


# --- /v1/ingest ---------------------------------------------------------------------------

start_fields = {
    "stream": st.text(min_size=0, max_size=250),
    "encoding": st.sampled_from([*SUPPORTED_ENCODINGS, "mp3"]),
    "sample_rate": st.integers(min_value=-10, max_value=200_000),
    "channels": st.integers(min_value=-1, max_value=4),
}
ingest_messages = messages(st.sampled_from(["start", "stop", "pause"]), start_fields)


@FUZZ
@given(message=ingest_messages)
def test_parse_control_only_raises_protocol_or_limit_errors(message: str | bytes) -> None:
    try:
        parsed = parse_control(message, IngestLimits(max_text_bytes=512))
    except (ProtocolError, LimitExceededError):
        return
    if isinstance(parsed, StartMessage):
        assert 8000 <= parsed.sample_rate <= 48000 and 1 <= parsed.channels <= 2 and parsed.stream


@FUZZ
@given(
    data=st.binary(max_size=3000),
    encoding=st.sampled_from(SUPPORTED_ENCODINGS),
    channels=st.sampled_from([1, 2]),
)
def test_decode_frame_only_raises_audio_or_limit_errors(data: bytes, encoding: str, channels: int) -> None:
    start = StartMessage("s", encoding, 16000, channels)
    try:
        mono = decode_frame(data, start, IngestLimits(max_frame_bytes=2048))
    except (AudioError, LimitExceededError):
        return
    assert mono.ndim == 1 and np.isfinite(mono).all()


@FUZZ
@given(sequence=st.lists(st.one_of(ingest_messages, st.binary(max_size=600)), max_size=12))
def test_ingest_protocol_survives_any_message_sequence(sequence: list[str | bytes]) -> None:
    protocol = IngestProtocol(IngestLimits(max_frame_bytes=512))
    for message in sequence:
        try:
            if isinstance(message, bytes) and not message.startswith((b"{", b"[")):
                protocol.receive_binary(message)
            else:
                protocol.receive_text(message)
        except WIRE_ERRORS:
            pass


# --- Twilio ----------------------------------------------------------------------------

twilio_start_body = with_keys(
    {
        "streamSid": st.text(max_size=20),
        "callSid": st.text(max_size=10),
        "tracks": st.lists(st.sampled_from(["inbound", "outbound", "both"]), max_size=3),
        "customParameters": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "mediaFormat": with_keys(
            {
                "encoding": st.sampled_from(["audio/x-mulaw", "audio/l16"]),
                "sampleRate": st.sampled_from([8000, 16000]),
                "channels": st.integers(0, 3),
            }
        ),
    }
)
base64_payloads = st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=50)
twilio_messages = as_wire(
    with_keys(
        {
            "event": st.sampled_from(["connected", "start", "media", "stop", "mark", "dtmf", "weird"]),
            "streamSid": st.sampled_from(["MZ1", "MZ2"]),
            "start": twilio_start_body,
            "media": with_keys(
                {
                    "track": st.sampled_from(["inbound", "outbound", "x"]),
                    "chunk": st.text(max_size=4),
                    "timestamp": st.text(max_size=4),
                    "payload": base64_payloads,
                }
            ),
        }
    )
)


@FUZZ
@given(sequence=st.lists(twilio_messages, max_size=10))
def test_twilio_parser_only_raises_wire_errors(sequence: list[str | bytes]) -> None:
    parser = TwilioMediaStream(max_payload_bytes=200)
    for message in sequence:
        with contextlib.suppress(WIRE_ERRORS):
            parser.receive(message)


# --- AudioHook --------------------------------------------------------------------------

SESSION = str(uuid.uuid4())
durations = st.builds(
    lambda s: f"PT{s}S", st.floats(0, 20, allow_nan=False).map(lambda x: round(x, 3))
) | st.text(max_size=8)
audiohook_media = with_keys(
    {
        "type": st.just("audio"),
        "format": st.sampled_from(["PCMU", "L16", "opus"]),
        "channels": st.lists(st.sampled_from(["external", "internal", "x"]), max_size=3),
        "rate": st.sampled_from([8000, 16000]),
    }
)
audiohook_params = with_keys(
    {
        "conversationId": st.sampled_from([str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000"]),
        "media": st.lists(audiohook_media, max_size=3),
        "reason": st.sampled_from(["end", "error", "later"]),
        "start": durations,
        "discarded": durations,
        "rtt": durations,
        "code": st.integers(-5, 600),
        "message": st.text(max_size=10),
    }
)


@st.composite
def audiohook_exchange(draw: st.DrawFn) -> list[str | bytes]:
    """Messages whose envelope is mostly right (so the body parsers get exercised)."""
    kinds = st.sampled_from(
        ["open", "ping", "close", "discarded", "paused", "resumed", "update", "error", "x"]
    )
    out: list[str | bytes] = []
    for seq in range(1, draw(st.integers(1, 8)) + 1):
        if draw(st.booleans()):
            out.append(draw(st.binary(max_size=500)))
            continue
        body = {
            "version": draw(st.sampled_from(["2", "2", "1"])),
            "id": draw(st.sampled_from([SESSION, SESSION, "not-a-uuid"])),
            "type": draw(kinds),
            "seq": draw(st.sampled_from([seq, seq, seq + 1, -1])),
            "serverseq": draw(st.sampled_from([0, 0, 1, 99])),
            "position": draw(durations),
            "parameters": draw(audiohook_params),
        }
        out.append(json.dumps(body) if draw(st.booleans()) else draw(as_wire(st.just(body))))
    return out


@FUZZ
@given(exchange=audiohook_exchange())
def test_audiohook_session_only_raises_wire_errors(exchange: list[str | bytes]) -> None:
    session = AudioHookSession()
    for message in exchange:
        try:
            items = (
                session.receive_binary(message)
                if isinstance(message, bytes)
                else session.receive_text(message)
            )
        except WIRE_ERRORS:
            continue
        for item in items:
            if isinstance(item, AudioHookOpen) and not item.probe:
                session.opened_message()  # the server's reply moves the session to active
            samples = getattr(item, "samples", None)
            if samples is not None:
                assert np.isfinite(samples).all()
            if isinstance(item, AudioHookTimelineGap):  # gaps are reported, never filled
                assert item.seconds > 0 and np.isfinite(item.seconds) and item.cause in GAP_CAUSES


# --- jambonz ------------------------------------------------------------------------------

jambonz_meta = with_keys(
    {
        "callSid": st.text(max_size=220),
        "sampleRate": st.sampled_from([8000, 16000, "8k", "16000", "11k", 0]),
        "mixType": st.sampled_from(["mono", "mixed", "stereo", "quad"]),
    }
)


@FUZZ
@given(
    first=as_wire(jambonz_meta),
    frames=st.lists(st.binary(max_size=700) | as_wire(json_values), max_size=6),
    query=st.dictionaries(
        st.sampled_from(["sampleRate", "mixType", "stream"]), st.text(max_size=6), max_size=3
    ),
)
def test_jambonz_parser_only_raises_wire_errors(
    first: str | bytes, frames: list[str | bytes], query: dict[str, str]
) -> None:
    parser = JambonzStream(query, fallback_id="fallback")
    for message in [first, *frames]:
        try:
            if isinstance(message, bytes) and parser.start is not None and not message.startswith(b"{"):
                parts = parser.receive_binary(message)
                assert len({len(p.samples) for p in parts}) <= 1
            else:
                parser.receive_text(message)
        except WIRE_ERRORS:
            pass


# --- AudioSocket ----------------------------------------------------------------------

audiosocket_frames = st.one_of(
    st.builds(lambda b: encode_frame(0x01, b), st.binary(min_size=0, max_size=20)),
    st.builds(lambda k, b: encode_frame(k, b), st.sampled_from(sorted(SLIN_RATES)), st.binary(max_size=400)),
    st.builds(lambda k, b: encode_frame(k, b), st.integers(0, 255), st.binary(max_size=40)),
    st.binary(max_size=60),  # raw garbage, headers cut anywhere
)


@FUZZ
@given(
    frames=st.lists(audiosocket_frames, max_size=12),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_audiosocket_reader_and_call_only_raise_wire_errors(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    reader, call = AudioSocketReader(), AudioSocketCall()
    offset, i = 0, 0
    parsed: list[AudioSocketFrame] = []
    while offset < len(stream):  # the TCP stream arrives in arbitrary pieces
        piece = stream[offset : offset + cuts[i % len(cuts)]]
        offset, i = offset + len(piece), i + 1
        parsed += reader.feed(piece)
        assert reader.pending_bytes < HEADER_BYTES + MAX_PAYLOAD_BYTES
    for frame in parsed:
        with contextlib.suppress(ProtocolError, AudioError):
            call.receive(frame)
    rebuilt = b"".join(struct.pack(">BH", f.kind, len(f.payload)) + f.payload for f in parsed)
    assert stream.startswith(rebuilt)  # frames come out in order, nothing invented


# --- audio files --------------------------------------------------------------------------


def _real_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(1600) * 0.1).astype(np.float32)
    files = {}
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "FLOAT")):
        buffer = io.BytesIO()
        sf.write(buffer, audio, 8000, format=fmt, subtype=subtype)
        files[f"{fmt}-{subtype}"] = buffer.getvalue()
    return files


REAL_FILES = _real_files()


@st.composite
def mutated_audio_files(draw: st.DrawFn) -> bytes:
    data = bytearray(REAL_FILES[draw(st.sampled_from(sorted(REAL_FILES)))])
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, min(len(data) - 1, 120)))  # mostly the header
        data[where] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.fixture(name="scratch", scope="module")
def scratch_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-audio")


@settings(FUZZ, max_examples=max(20, EXAMPLES // 2))
@given(data=mutated_audio_files() | st.binary(max_size=2000))
def test_audio_loader_only_raises_audio_error(scratch: Path, data: bytes) -> None:
    path = scratch / "input.audio"
    path.write_bytes(data)
    try:
        clip = load_audio(path, 16000, max_duration_s=60.0)
    except AudioError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    assert clip.samples.ndim == 1 and np.isfinite(clip.samples).all() and clip.duration_s <= 60.5


# --- configuration and client-side parsers ---------------------------------------------


@FUZZ
@given(
    text=as_wire(
        with_keys({"type": st.sampled_from(["score", "alarm", "stream", "error", "status"]), "v": st.just(1)})
    )
)
def test_parse_event_only_raises_protocol_error(text: str | bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_event(text)


@FUZZ
@given(
    url=st.text(max_size=60)
    | st.builds(lambda h, p: f"mqtt://{h}:{p}", st.text(max_size=15), st.text(max_size=6))
)
def test_broker_urls_parse_or_raise_config_error(url: str) -> None:
    try:
        address = parse_broker_url(url)
    except ConfigError:
        return
    assert 0 < address.port < 65536 and address.host


@FUZZ
@given(spec=st.text(max_size=40))
def test_source_specs_parse_or_raise_config_error(spec: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_source_spec(spec)


@FUZZ
@given(
    env=st.dictionaries(
        st.sampled_from(
            [
                f"SPOOFWATCH_{k}"
                for k in (
                    "SERVER_PORT",
                    "SERVER_MAX_MESSAGES_PER_S",
                    "ENGINE_MAX_STREAM_S",
                    "STREAM_WINDOW_S",
                    "SERVER_TLS_KEY",
                    "ENGINE_MAX_BATCH",
                    "SERVER_SOURCES",
                    "SERVER_BOGUS",
                    "BOGUS_X",
                    "SERVER_MAX_MESSAGE_BURST",
                )
            ]
        ),
        st.text(max_size=12),
        max_size=4,
    )
)
def test_settings_from_hostile_environment_raise_config_error_only(env: dict[str, str]) -> None:
    try:
        settings = load_settings(env=env)
    except ConfigError:
        return
    assert isinstance(settings.server, ServerConfig)


@FUZZ
@given(header=st.text(max_size=60) | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()))
def test_basic_auth_and_redaction_never_raise(header: str) -> None:
    password = basic_auth_password(header)
    assert password is None or isinstance(password, str)
    assert "secret-xyz" not in redact_text(f"< Authorization: Basic {header} secret-xyz", ["secret-xyz"])
