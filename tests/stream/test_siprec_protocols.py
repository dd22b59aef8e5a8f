"""The SIPREC recorder's sans-I/O parsers: SIP messages and framing, SDP offers and
answers, multipart bodies, RFC 7865 metadata, RTP and the jitter buffer, digest
authentication; good input, and hostile input refused with the right SIP status."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoofwatch.audio.pcm import mulaw_encode
from spoofwatch.errors import ProtocolError
from spoofwatch.stream.protocols import sip
from spoofwatch.stream.protocols.rtp import Audio, JitterBuffer, Lost, build_rtp, parse_rtp
from spoofwatch.stream.protocols.sdp import (
    G722,
    PCMA,
    PCMU,
    MediaAnswer,
    build_answer,
    choose_codec,
    parse_offer,
)
from spoofwatch.stream.protocols.sip_auth import DigestAuthenticator
from spoofwatch.stream.protocols.siprec import parse_metadata, participant_metadata, split_body

SDP = (
    b"v=0\r\no=src 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n"
    b"m=audio 4002 RTP/AVP 96 9\r\na=rtpmap:96 opus/48000/2\r\na=label:2\r\na=sendonly\r\n"
    b"m=video 4004 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
)

METADATA = b"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="S1"/>
  <participant participant_id="P1">
    <nameID aor="sip:+15550001@a.example"><name>Alice</name></nameID>
  </participant>
  <participant participant_id="P2"><aor>sip:bob@b.example</aor></participant>
  <stream stream_id="ST1" session_id="S1"><label>1</label></stream>
  <stream stream_id="ST2" session_id="S1"><label>2</label></stream>
  <participantstreamassoc participant_id="P1"><send>ST1</send><recv>ST2</recv></participantstreamassoc>
  <participantstreamassoc participant_id="P2"><send>ST2</send></participantstreamassoc>
</recording>"""


def request(
    method: str = "INVITE", body: bytes = b"", extra: str = "", cseq_method: str | None = None
) -> bytes:
    head = (
        f"{method} sip:srs@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds;rport\r\n"
        "From: <sip:src@10.0.0.5>;tag=1928301774\r\n"
        "To: <sip:srs@127.0.0.1>\r\n"
        "Call-ID: a84b4c76e66710@10.0.0.5\r\n"
        f"CSeq: 314159 {cseq_method or method}\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# ---------------------------------------------------------------- SIP


def test_a_request_parses_with_its_dialog_headers() -> None:
    parsed = sip.parse_message(request(body=SDP, extra="Content-Type: application/sdp\r\n"))
    assert isinstance(parsed, sip.SipRequest)
    assert parsed.method == "INVITE" and parsed.call_id == "a84b4c76e66710@10.0.0.5"
    assert parsed.cseq.sequence == 314159 and parsed.from_tag == "1928301774" and parsed.to_tag is None
    assert parsed.body == SDP
    assert sip.via_address(parsed) == ("10.0.0.5", 5060)


def test_folded_and_compact_headers_are_understood() -> None:
    data = (
        b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa\r\n"
        b"f: <sip:src@10.0.0.5>;tag=1\r\nt: <sip:srs@127.0.0.1>\r\ni: call-1\r\n"
        b"CSeq: 1\r\n OPTIONS\r\nl: 0\r\n\r\n"
    )
    parsed = sip.parse_message(data)
    assert (
        isinstance(parsed, sip.SipRequest) and parsed.call_id == "call-1" and parsed.cseq.method == "OPTIONS"
    )


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        (b"\x00\xffgarbage", 400, "empty line"),
        (b"HELLO\r\n\r\n", 400, "RFC 3261"),
        (request().replace(b"Call-ID: a84b4c76e66710@10.0.0.5\r\n", b""), 400, "Call-ID"),
        (request(cseq_method="BYE"), 400, "CSeq"),
        (request().replace(b"Content-Length: 0", b"Content-Length: 50"), 400, "Content-Length 50"),
        (request(body=b"x" * (sip.MAX_BODY_BYTES + 1)), 413, "at most"),
        (request(body=b"x" * sip.MAX_MESSAGE_BYTES), 513, "at most"),
        (request(extra="X-Long: " + "a" * sip.MAX_HEADER_BYTES + "\r\n"), 513, "headers"),
        (request(extra="".join(f"X-{i}: a\r\n" for i in range(sip.MAX_HEADERS))), 400, "lines"),
        (request("IN VITE"), 400, "RFC 3261|method"),
    ],
)
def test_malformed_and_oversized_messages_get_their_status(data: bytes, status: int, says: str) -> None:
    with pytest.raises(sip.SipError, match=says) as caught:
        sip.parse_message(data)
    assert caught.value.status == status


def test_responses_copy_the_transaction_headers_and_add_our_tag() -> None:
    parsed = sip.parse_message(request())
    assert isinstance(parsed, sip.SipRequest)
    reply = sip.parse_message(sip.response(parsed, 486, to_tag="abc", headers={"Retry-After": "5"}))
    assert not isinstance(reply, sip.SipRequest)
    assert reply.code == 486 and reply.phrase == "Busy Here"
    assert reply.headers["To"].endswith(";tag=abc") and reply.headers["Retry-After"] == "5"
    assert reply.headers["CSeq"] == "314159 INVITE" and "branch=z9hG4bK776asdhds" in reply.headers["Via"]


def test_a_broken_request_still_gets_an_answer_when_it_can_be_routed() -> None:
    broken = request(cseq_method="BYE")
    answer = sip.error_response(broken, 400, 'bad "CSeq"')
    assert answer is not None and answer.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert b"Warning: 399 spoofwatch \"bad 'CSeq'\"" in answer
    assert sip.error_response(b"\x00\x01 no sip here", 400, "x") is None


@pytest.mark.parametrize("cut", [1, 7, 100, 333])
def test_tcp_framing_survives_any_segmentation_and_skips_keepalives(cut: int) -> None:
    stream = b"\r\n\r\n" + request("OPTIONS") + request(body=SDP, extra="Content-Type: application/sdp\r\n")
    framer = sip.SipStreamFramer()
    messages = []
    for start in range(0, len(stream), cut):
        messages += framer.feed(stream[start : start + cut])
    assert messages == [request("OPTIONS"), request(body=SDP, extra="Content-Type: application/sdp\r\n")]
    assert framer.pending_bytes == 0 and framer.keepalives >= 1


def test_tcp_framing_refuses_what_cannot_be_resynchronised() -> None:
    with pytest.raises(sip.SipError) as caught:
        sip.SipStreamFramer().feed(request().replace(b"Content-Length: 0\r\n", b""))
    assert caught.value.status == 400
    with pytest.raises(sip.SipError) as caught:
        sip.SipStreamFramer().feed(request().replace(b"Content-Length: 0", b"Content-Length: 999999"))
    assert caught.value.status == 513
    with pytest.raises(sip.SipError) as caught:
        sip.SipStreamFramer().feed(b"X" * (sip.MAX_HEADER_BYTES + 1))
    assert caught.value.status == 513


# ---------------------------------------------------------------- SDP


def test_an_offer_is_read_and_answered_recvonly_per_stream() -> None:
    offer = parse_offer(SDP)
    assert [m.label for m in offer.media] == ["1", "2", None]
    first, second, video = offer.media
    assert offer.media_address(first) == "10.0.0.5" and offer.media_direction(first) == "sendonly"
    assert choose_codec(first) == (0, PCMU)
    assert choose_codec(second) == (9, G722)  # opus is skipped: not decoded here
    assert choose_codec(second, 8000) is None  # no 8 kHz codec on that line
    assert choose_codec(video) is None
    answer = build_answer(
        [
            MediaAnswer(first, 20000, 0, PCMU),
            MediaAnswer(second, 20002, 9, G722, "inactive"),
            MediaAnswer(video, 0),
        ],
        address="127.0.0.1",
        session_id=7,
        version=1,
    ).decode()
    assert (
        "m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        in answer
    )
    assert "a=label:1\r\na=recvonly\r\n" in answer
    assert "m=audio 20002 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\na=label:2\r\na=inactive\r\n" in answer
    assert "m=video 0 RTP/AVP 97\r\n" in answer
    assert parse_offer(answer.encode()).media[0].direction == "recvonly"  # it reads back


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"o=x\r\n", 400),
        (b"v=0\r\nm=audio\r\n", 400),
        (b"v=0\r\nc=IN IP4 not-an-address\r\nm=audio 1 RTP/AVP 0\r\n", 400),
        (b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n", 400),
        (b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:300 PCMU/8000\r\n", 400),
        (b"v=0\r\nwhat is this\r\n", 400),
        (b"v=0\r\ns=no media\r\n", 488),
        (b"v=0\r\n" + b"m=audio 1 RTP/AVP 0\r\n" * 17, 400),
        (b"\xff\xfe", 400),
    ],
)
def test_malformed_offers_are_refused(body: bytes, status: int) -> None:
    with pytest.raises(sip.SipError) as caught:
        parse_offer(body)
    assert caught.value.status == status


def test_pcma_by_its_rtpmap_name() -> None:
    offer = parse_offer(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5 RTP/AVP 110\r\na=rtpmap:110 pcma/8000\r\n")
    assert choose_codec(offer.media[0]) == (110, PCMA)


# ---------------------------------------------------------------- multipart and metadata


def multipart(*parts: tuple[str, bytes], boundary: str = "b0undary") -> tuple[str, bytes]:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + payload + b"\r\n"
        for kind, payload in parts
    )
    return f"multipart/mixed;boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def test_multipart_sdp_and_metadata_are_split() -> None:
    kind, body = multipart(("application/sdp", SDP), ("application/rs-metadata+xml", METADATA))
    parts = split_body(kind, body)
    assert parts.sdp is not None and parse_offer(parts.sdp).media[0].port == 4000
    assert parts.metadata is not None and parts.metadata.strip() == METADATA.strip()
    assert split_body("application/sdp", SDP).sdp == SDP


@pytest.mark.parametrize(
    ("kind", "body", "status"),
    [
        ("text/plain", b"hello", 415),
        ("application/json", b"{}", 415),
        (*multipart(("application/sdp", SDP), ("text/html", b"<b>")), 415),
        (*multipart(("application/sdp", SDP), ("application/sdp", SDP)), 415),
        ("multipart/mixed", b"--x\r\n", 400),
        (None, b"v=0", 400),
        (*multipart(*[("application/sdp", SDP)] * 9), 400),
    ],
)
def test_wrong_content_types_are_refused(kind: str | None, body: bytes, status: int) -> None:
    with pytest.raises(sip.SipError) as caught:
        split_body(kind, body)
    assert caught.value.status == status


def test_metadata_names_each_streams_party() -> None:
    metadata = parse_metadata(METADATA)
    alice = metadata.participant_for_label("1")
    bob = metadata.participant_for_label("2")
    assert alice is not None and alice.names == ["Alice"] and alice.aors == ["sip:+15550001@a.example"]
    assert bob is not None and bob.aors == ["sip:bob@b.example"]
    assert metadata.participant_for_label("3") is None
    info = participant_metadata(alice, "1", "call-9")
    assert info == {
        "call_id": "call-9",
        "label": "1",
        "participant_id": "P1",
        "name": "Alice",
        "aor": "sip:+15550001@a.example",
        "number": "+15550001",
    }
    assert "number" not in participant_metadata(bob, "2", "call-9")


@pytest.mark.parametrize(
    "body",
    [
        b"<recording><unclosed>",
        b"<other/>",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<recording>&b;</recording>",
        b"not xml at all",
    ],
)
def test_bad_metadata_is_refused(body: bytes) -> None:
    with pytest.raises(sip.SipError) as caught:
        parse_metadata(body)
    assert caught.value.status == 400


# ---------------------------------------------------------------- RTP


def packet(seq: int, ts: int, payload: bytes = b"\xff" * 160, ssrc: int = 1, pt: int = 0) -> bytes:
    return build_rtp(pt, seq, ts, ssrc, payload)


def test_rtp_headers_with_csrcs_extension_and_padding() -> None:
    header = struct.pack(">BBHII", 0x80 | 0x20 | 0x10 | 2, 0x80 | 8, 7, 1234, 99)
    data = header + b"\x00" * 8 + struct.pack(">HH", 0xBEDE, 1) + b"\x00" * 4 + b"abc" + b"\x00\x03"
    parsed = parse_rtp(data[:-2] + b"\x00\x02")
    assert (parsed.payload_type, parsed.sequence, parsed.timestamp, parsed.ssrc, parsed.marker) == (
        8,
        7,
        1234,
        99,
        True,
    )
    assert parsed.payload == b"abc"


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x00",
        b"\x40" + b"\x00" * 20,
        struct.pack(">BBHII", 0x8F, 0, 1, 1, 1),
        struct.pack(">BBHII", 0x90, 0, 1, 1, 1),
        struct.pack(">BBHII", 0xA0, 0, 1, 1, 1) + b"\x00\x00\x09",
        b"\x80" + b"\x00" * 3000,
    ],
)
def test_malformed_rtp_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_rtp(data)


def audio_of(released: list[Audio | Lost]) -> int:
    return sum(len(r.samples) for r in released if isinstance(r, Audio))


def test_jitter_buffer_restores_order_and_reports_loss_as_time() -> None:
    buffer = JitterBuffer(PCMU, 0, depth=3)
    out: list[Audio | Lost] = []
    for seq in (10, 12, 11, 13, 15, 16, 17, 18, 19):  # 11 late but in time, 14 lost
        out += buffer.push(parse_rtp(packet(seq, seq * 160)))
    out += buffer.drain()
    assert [type(r).__name__ for r in out].count("Lost") == 1
    lost = next(r for r in out if isinstance(r, Lost))
    assert lost.seconds == pytest.approx(0.02)
    assert audio_of(out) == 9 * 160
    assert buffer.counters.lost == 1 and buffer.counters.late == 0


def test_jitter_buffer_drops_duplicates_late_packets_and_dtmf() -> None:
    buffer = JitterBuffer(PCMU, 0, depth=2)
    out: list[Audio | Lost] = []
    for seq in (1, 3, 3, 2, 4, 5, 1):  # the second 3 while 3 is held, 1 after its release
        out += buffer.push(parse_rtp(packet(seq, seq * 160)))
    out += buffer.push(parse_rtp(packet(6, 960, b"\x01\x00\x00\xa0", pt=101)))  # a DTMF event
    out += buffer.drain()
    assert audio_of(out) == 5 * 160
    assert (buffer.counters.duplicate, buffer.counters.late, buffer.counters.ignored) == (1, 1, 1)


def test_jitter_buffer_survives_sequence_wrap_and_ssrc_change() -> None:
    buffer = JitterBuffer(PCMU, 0, depth=2)
    out: list[Audio | Lost] = []
    for seq in (65534, 65535, 0, 1):
        out += buffer.push(parse_rtp(packet(seq, 1000 + ((seq + 2) % 65536) * 160)))
    for seq in (500, 501, 502):  # a restarted sender: new SSRC, unrelated numbers
        out += buffer.push(parse_rtp(packet(seq, 77 + seq * 160, ssrc=2)))
    out += buffer.drain()
    assert audio_of(out) == 7 * 160
    assert not [r for r in out if isinstance(r, Lost)]
    assert buffer.counters.restarts == 1 and buffer.counters.lost == 0


def test_silence_suppression_shows_as_lost_time_by_timestamps() -> None:
    buffer = JitterBuffer(PCMU, 0, depth=1)
    out = buffer.push(parse_rtp(packet(1, 0))) + buffer.push(parse_rtp(packet(2, 8000)))  # 1 s later
    out += buffer.drain()
    lost = [r for r in out if isinstance(r, Lost)]
    assert len(lost) == 1 and lost[0].seconds == pytest.approx(1.0 - 0.02)


def test_comfort_noise_packets_hold_their_place_and_their_silence_is_a_comfort_noise_gap() -> None:
    """A DTX sender: five audio packets, a silence descriptor (RFC 3389, PT 13, one level
    byte) taking the next sequence number, then audio again 1 s later. Nothing is waited
    for or counted lost; the silence is a gap of cause ``comfort-noise``, a real loss
    afterwards one of cause ``loss``."""
    buffer = JitterBuffer(PCMU, 0, depth=3)
    out: list[Audio | Lost] = []
    for seq in range(1, 6):
        out += buffer.push(parse_rtp(packet(seq, seq * 160)))
    out += buffer.push(parse_rtp(packet(6, 6 * 160, b"\x3f", pt=13)))
    resumed = buffer.push(parse_rtp(packet(7, 6 * 160 + 8000)))
    assert [type(r).__name__ for r in resumed][-2:] == ["Lost", "Audio"]  # not held back for depth
    out += resumed
    for seq in (9, 10, 11, 12):  # 8 lost
        out += buffer.push(parse_rtp(packet(seq, 6 * 160 + 8000 + (seq - 7) * 160)))
    out += buffer.drain()
    gaps = [(round(r.seconds, 3), r.cause) for r in out if isinstance(r, Lost)]
    assert gaps == [(1.0, "comfort-noise"), (0.02, "loss")]
    assert audio_of(out) == 10 * 160
    assert (buffer.counters.lost, buffer.counters.comfort_noise, buffer.counters.ignored) == (1, 1, 0)


def test_pcmu_payload_decodes_to_the_audio_sent() -> None:
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype(np.float32)
    buffer = JitterBuffer(PCMU, 0, depth=0)
    out = buffer.push(parse_rtp(packet(1, 0, mulaw_encode(tone).tobytes())))
    assert isinstance(out[0], Audio)
    assert np.max(np.abs(out[0].samples - tone)) < 0.02


def test_g722_decodes_at_16_khz() -> None:
    from G722 import G722 as Codec722

    t = np.arange(3200) / 16000
    tone = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    encoded = bytes(Codec722(16000, 64000).encode(tone))
    buffer = JitterBuffer(G722, 9, depth=0)
    out: list[Audio | Lost] = []
    for index in range(0, len(encoded), 160):
        out += buffer.push(parse_rtp(packet(index // 160, index, encoded[index : index + 160], pt=9)))
    decoded = np.concatenate([r.samples for r in out if isinstance(r, Audio)])
    assert len(decoded) == 3200 and not [r for r in out if isinstance(r, Lost)]
    spectrum = np.abs(np.fft.rfft(decoded[400:]))
    assert abs(np.argmax(spectrum) * 16000 / len(decoded[400:]) - 500) < 10


# ---------------------------------------------------------------- digest


def digest_header(auth: DigestAuthenticator, challenge: str, password: str, user: str = "src") -> str:
    nonce = challenge.split('nonce="')[1].split('"')[0]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    uri = "sip:srs@127.0.0.1"
    ha1, ha2 = md5(f"{user}:{auth.realm}:{password}"), md5(f"INVITE:{uri}")
    answer = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{auth.realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{answer}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"'
    )


def test_digest_accepts_the_right_password_only() -> None:
    now = [1000.0]
    auth = DigestAuthenticator({"src": "s3cret"}, "spoofwatch", clock=lambda: now[0])
    challenge = auth.challenge()
    assert auth.verify(None, "INVITE") == "missing"
    assert auth.verify(digest_header(auth, challenge, "s3cret"), "INVITE") == "ok"
    assert auth.verify(digest_header(auth, challenge, "guess"), "INVITE") == "bad"
    assert auth.verify(digest_header(auth, challenge, "s3cret", user="eve"), "INVITE") == "bad"
    forged = challenge.replace('nonce="', 'nonce="1')
    assert auth.verify(digest_header(auth, forged, "s3cret"), "INVITE") == "bad"
    assert auth.verify("Basic c3JjOnMzY3JldA==", "INVITE") == "bad"
    now[0] += 301
    assert auth.verify(digest_header(auth, challenge, "s3cret"), "INVITE") == "stale"


# ---------------------------------------------------------------- fuzz


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_escape_as_anything_but_a_sip_error(data: bytes) -> None:
    for candidate in (data, request(body=data, extra="Content-Type: application/sdp\r\n"), b"INVITE " + data):
        with (
            pytest.raises(sip.SipError)
            if candidate is data and b"\r\n\r\n" not in data
            else _maybe_sip_error()
        ):
            sip.parse_message(candidate)
    for parse in (parse_offer, parse_metadata):
        with _maybe_sip_error():
            parse(data)
    with _maybe_sip_error():
        split_body("multipart/mixed;boundary=x", data)
    with contextlib.suppress(ProtocolError):
        parse_rtp(data)


class _maybe_sip_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return kind is None or isinstance(value, sip.SipError)
