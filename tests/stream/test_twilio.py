from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from fakes import tone
from spoofwatch.audio.pcm import mulaw_decode, mulaw_encode
from spoofwatch.errors import LimitExceededError, ProtocolError
from spoofwatch.stream.protocols.twilio import (
    TwilioIgnored,
    TwilioMedia,
    TwilioMediaStream,
    TwilioStart,
    TwilioStop,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"


def start_msg(tracks: list[str], media_format: dict[str, object] | None = None) -> str:
    fmt = media_format or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": SID,
            "start": {
                "accountSid": "AC1",
                "streamSid": SID,
                "callSid": "CA1",
                "tracks": tracks,
                "customParameters": {"k": "v"},
                "mediaFormat": fmt,
            },
        }
    )


def media_msg(track: str | None, payload: str, chunk: int = 1, sid: str = SID) -> str:
    media: dict[str, object] = {"chunk": str(chunk), "timestamp": str(20 * chunk), "payload": payload}
    if track is not None:
        media["track"] = track
    return json.dumps({"event": "media", "sequenceNumber": str(chunk + 1), "media": media, "streamSid": sid})


def frame_payload(samples: np.ndarray) -> str:
    return base64.b64encode(mulaw_encode(samples).tobytes()).decode()


def test_single_track_stream_uses_the_stream_sid() -> None:
    parser = TwilioMediaStream()
    connected = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    assert parser.receive(connected) == TwilioIgnored("connected")
    start = parser.receive(start_msg(["inbound"]))
    assert isinstance(start, TwilioStart)
    assert start.stream_ids == {"inbound": SID} and start.call_sid == "CA1"
    assert start.custom_parameters == {"k": "v"}
    audio = tone(0.02, sample_rate=8000)
    media = parser.receive(media_msg("inbound", frame_payload(audio), chunk=3))
    assert isinstance(media, TwilioMedia)
    assert media.stream_id == SID and media.chunk == 3 and media.timestamp_ms == 60
    np.testing.assert_array_equal(media.samples, mulaw_decode(mulaw_encode(audio)))
    assert len(media.samples) == 160
    # the track defaults to the only announced one
    untracked = parser.receive(media_msg(None, frame_payload(audio)))
    assert isinstance(untracked, TwilioMedia) and untracked.stream_id == SID
    mark = json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "x"}})
    assert parser.receive(mark) == TwilioIgnored("mark")
    dtmf = json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "1"}})
    assert parser.receive(dtmf) == TwilioIgnored("dtmf")
    assert parser.receive(json.dumps({"event": "stop", "streamSid": SID, "stop": {}})) == TwilioStop(SID)
    with pytest.raises(ProtocolError, match="expected nothing after stop"):
        parser.receive(media_msg("inbound", frame_payload(audio)))


def test_both_tracks_get_suffixed_stream_ids() -> None:
    parser = TwilioMediaStream()
    start = parser.receive(start_msg(["inbound", "outbound"]))
    assert isinstance(start, TwilioStart)
    assert start.stream_ids == {"inbound": f"{SID}:inbound", "outbound": f"{SID}:outbound"}
    payload = frame_payload(tone(0.02, sample_rate=8000))
    ids = [parser.receive(media_msg(t, payload)).stream_id for t in ("outbound", "inbound")]  # type: ignore[union-attr]
    assert ids == [f"{SID}:outbound", f"{SID}:inbound"]
    with pytest.raises(ProtocolError, match="expected one of the started tracks"):
        parser.receive(media_msg(None, payload))


@pytest.mark.parametrize(
    ("messages", "error", "match"),
    [
        (["{bad"], ProtocolError, "expected JSON"),
        (['{"no":"event"}'], ProtocolError, "expected a string 'event', found None"),
        ([media_msg("inbound", "AAAA")], ProtocolError, "expected a start message first"),
        (
            [start_msg(["inbound"], {"encoding": "audio/x-l16", "sampleRate": 16000})],
            ProtocolError,
            "expected audio/x-mulaw at 8000 Hz, 1 channel, found 'audio/x-l16' at 16000 Hz",
        ),
        ([start_msg(["both"])], ProtocolError, "expected a list drawn from"),
        ([start_msg(["inbound"]), start_msg(["inbound"])], ProtocolError, "found a second"),
        (
            [start_msg(["inbound"]), media_msg("outbound", "AAAA")],
            ProtocolError,
            r"expected one of the started tracks \['inbound'\], found 'outbound'",
        ),
        (
            [start_msg(["inbound"]), media_msg("inbound", "AAAA", sid="MZother")],
            ProtocolError,
            f"expected streamSid '{SID}', found 'MZother'",
        ),
        ([start_msg(["inbound"]), media_msg("inbound", "not base64!")], ProtocolError, "expected base64"),
        (
            [start_msg(["inbound"]), media_msg("inbound", "A" * 40000)],
            LimitExceededError,
            "expected at most 16000 bytes of audio",
        ),
    ],
)
def test_malformed_messages_are_refused(messages: list[str], error: type[Exception], match: str) -> None:
    parser = TwilioMediaStream()
    for message in messages[:-1]:
        parser.receive(message)
    with pytest.raises(error, match=match):
        parser.receive(messages[-1])
