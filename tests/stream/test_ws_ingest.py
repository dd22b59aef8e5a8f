from __future__ import annotations

import json

import numpy as np
import pytest

from spoofwatch.audio.pcm import mulaw_encode
from spoofwatch.errors import AudioError, LimitExceededError, ProtocolError
from spoofwatch.stream.protocols.ws_ingest import (
    IngestLimits,
    IngestProtocol,
    StartMessage,
    StopMessage,
    decode_frame,
    parse_control,
)


def start_text(**overrides: object) -> str:
    body: dict[str, object] = {
        "type": "start",
        "stream": "call-1",
        "encoding": "pcm_s16le",
        "sample_rate": 16000,
        "channels": 1,
    }
    body.update(overrides)
    return json.dumps(body)


def test_parses_start_and_stop() -> None:
    expected = StartMessage("call-1", "pcm_s16le", 16000, 2)
    assert parse_control(start_text(channels=2, extra="ignored")) == expected
    assert parse_control('{"type":"stop"}') == StopMessage()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "expected a JSON object, found invalid JSON"),
        ("[1, 2]", "expected a JSON object, found list"),
        ('{"type":"pause"}', "expected type 'start', 'stop' or 'gap', found 'pause'"),
        ('{"stream":"x"}', "expected type 'start', 'stop' or 'gap', found None"),
        (start_text(encoding="mp3"), "expected 'encoding' to be one of pcm_s16le, .*found 'mp3'"),
        (start_text(sample_rate=4000), r"expected 'sample_rate' in 8000..48000 Hz, found 4000"),
        (start_text(sample_rate=96000), r"found 96000"),
        (start_text(sample_rate="16000"), "expected integer 'sample_rate', found '16000'"),
        (start_text(sample_rate=True), "expected integer 'sample_rate', found True"),
        (start_text(channels=3), r"expected 'channels' in 1..2, found 3"),
        (start_text(stream=""), "expected 'stream' to be a string of 1..200 characters, found 0"),
        (start_text(stream=7), "found 7"),
        (start_text(stream="x" * 201), "found 201 characters"),
    ],
)
def test_rejects_malformed_control_messages(text: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_control(text)


def test_text_size_limit() -> None:
    with pytest.raises(LimitExceededError, match="expected at most 100 bytes, found 1"):
        parse_control(start_text(stream="x" * 100), IngestLimits(max_text_bytes=100))


def test_decodes_each_encoding_to_mono_float32() -> None:
    stereo = np.array([[0.5, -0.5], [0.25, 0.25], [-1.0, 0.0]], dtype=np.float32)
    s16 = (stereo * 32768).clip(-32768, 32767).astype("<i2").tobytes()
    out = decode_frame(s16, StartMessage("s", "pcm_s16le", 16000, 2))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, stereo.mean(axis=1), atol=1e-4)
    f32 = stereo[:, 0].astype("<f4").tobytes()
    np.testing.assert_array_equal(decode_frame(f32, StartMessage("s", "pcm_f32le", 8000, 1)), stereo[:, 0])
    codes = mulaw_encode(stereo[:, 0]).tobytes()
    mulaw = decode_frame(codes, StartMessage("s", "mulaw", 8000, 1))
    np.testing.assert_allclose(mulaw, stereo[:, 0], atol=0.02)


def test_frame_errors_name_expected_and_found() -> None:
    start = StartMessage("s", "pcm_s16le", 16000, 1)
    with pytest.raises(AudioError, match="multiple of 2, found 3"):
        decode_frame(b"\x00\x01\x02", start)
    with pytest.raises(LimitExceededError, match="expected at most 64 bytes, found 66"):
        decode_frame(b"\x00" * 66, start, IngestLimits(max_frame_bytes=64))
    nan = np.array([np.nan], dtype="<f4").tobytes()
    with pytest.raises(AudioError, match="finite"):
        decode_frame(nan, StartMessage("s", "pcm_f32le", 16000, 1))


def test_protocol_state_machine() -> None:
    proto = IngestProtocol()
    with pytest.raises(ProtocolError, match="before audio, found a binary frame of 4 bytes"):
        proto.receive_binary(b"\x00" * 4)
    with pytest.raises(ProtocolError, match="expected a start message before stop"):
        proto.receive_text('{"type":"stop"}')
    assert isinstance(proto.receive_text(start_text()), StartMessage)
    assert proto.streaming
    assert len(proto.receive_binary(b"\x00" * 8)) == 4
    with pytest.raises(ProtocolError, match="while stream 'call-1' is live, found a start for 'call-2'"):
        proto.receive_text(start_text(stream="call-2"))
    assert proto.receive_text('{"type":"stop"}') == StopMessage()
    assert not proto.streaming
    # a second stream on the same connection
    second = proto.receive_text(start_text(stream="call-2", encoding="mulaw", sample_rate=8000))
    assert second == StartMessage("call-2", "mulaw", 8000, 1)
    assert len(proto.receive_binary(b"\xff" * 3)) == 3
    proto.reset()
    assert not proto.streaming
