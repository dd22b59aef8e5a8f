"""The SIPREC server over real sockets: a recorded call with loss and reordering, hostile
SIP beside it (malformed, oversized, wrong content types, unknown methods, a flood, a
forged BYE), the allow-list, digest authentication, the session and stream limits,
hold/resume, the RTP timeout, G.722, and SIP over TCP and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from fakes import FakeScorer, noise
from selfsigned import make_self_signed
from siprec_kit import drain, siprec_recorder
from spoofwatch.audio.pcm import mulaw_encode
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.events import ErrorEvent, GapEvent, ScoreEvent, StreamEvent
from spoofwatch.stream.net.siprec_server import SiprecServer
from spoofwatch.stream.protocols import sip
from spoofwatch.stream.protocols.rtp import build_rtp
from spoofwatch.stream.protocols.sdp import parse_offer
from spoofwatch.stream.protocols.sip_auth import DigestAuthenticator
from streamkit import run
from waits import scaled

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
BOUNDARY = "xyz"
METADATA = """<?xml version="1.0"?><recording xmlns="urn:ietf:params:xml:ns:recording:1">
<participant participant_id="P1"><nameID aor="sip:alice@example.com"><name>Alice</name></nameID></participant>
<participant participant_id="P2"><nameID aor="sip:bob@example.com"><name>Bob</name></nameID></participant>
<stream stream_id="S1"><label>1</label></stream><stream stream_id="S2"><label>2</label></stream>
<participantstreamassoc participant_id="P1"><send>S1</send></participantstreamassoc>
<participantstreamassoc participant_id="P2"><send>S2</send></participantstreamassoc>
</recording>"""


def sdp(labels: tuple[str, ...] = ("1", "2"), direction: str = "sendonly", formats: str = "0 101") -> str:
    lines = ["v=0", "o=src 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for index, label in enumerate(labels):
        lines += [f"m=audio {4000 + 2 * index} RTP/AVP {formats}", "a=rtpmap:101 telephone-event/8000"]
        lines += [f"a=label:{label}", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


def message(
    method: str,
    call_id: str,
    *,
    cseq: int = 1,
    to_tag: str | None = None,
    body: str = "",
    content_type: str | None = None,
    extra: str = "",
    transport: str = "UDP",
) -> bytes:
    to = "<sip:srs@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:srs@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch=z9hG4bK{call_id}{cseq}{method};rport\r\n"
        f"From: <sip:src@127.0.0.1>;tag=src-{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\nContact: <sip:src@127.0.0.1:5999>;+sip.src\r\nMax-Forwards: 70\r\n"
        + (f"Content-Type: {content_type}\r\n" if content_type else "")
        + extra
        + f"Content-Length: {len(body.encode())}\r\n\r\n"
    )
    return head.encode() + body.encode()


def siprec_body(offer: str, metadata: str = METADATA) -> tuple[str, str]:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n{offer}"
        f"--{BOUNDARY}\r\nContent-Type: application/rs-metadata+xml\r\n\r\n{metadata}\r\n--{BOUNDARY}--\r\n"
    )
    return body, f"multipart/mixed;boundary={BOUNDARY}"


class SipPeer(asyncio.DatagramProtocol):
    """A UDP SIP client at ``host``: send requests, await what comes back."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait(data)

    async def ask(self, data: bytes, port: int, final: bool = True) -> Any:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))
        while True:
            reply = sip.parse_message(await asyncio.wait_for(self.inbox.get(), scaled(15.0)))
            if not final or isinstance(reply, sip.SipRequest) or reply.code >= 200:
                return reply


@contextlib.asynccontextmanager
async def peer(host: str = "127.0.0.1") -> AsyncIterator[SipPeer]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        SipPeer, local_addr=(host, 0)
    )
    try:
        yield protocol
    finally:
        transport.close()


def recorder(engine: EngineConfig | None = None, **options: Any) -> Any:
    options.setdefault("rtp_ports", (32000, 32767))  # below the ephemeral ports
    options.setdefault("max_packets_per_s", 2000.0)
    return siprec_recorder(FakeScorer(16000, 1.0), CFG, engine, **options)


async def open_call(
    client: SipPeer, server: SiprecServer, call_id: str, offer: str | None = None
) -> tuple[str, list[int]]:
    body, kind = siprec_body(offer or sdp())
    reply = await client.ask(message("INVITE", call_id, body=body, content_type=kind), server.port)
    assert reply.code == 200, reply.headers.get("Warning")
    to_tag = reply.headers["To"].split("tag=")[1]
    client.transport.sendto(message("ACK", call_id, to_tag=to_tag), ("127.0.0.1", server.port))  # type: ignore[union-attr]
    return to_tag, [m.port for m in parse_offer(reply.body).media]


async def send_audio(
    port: int,
    audio: NDArray[np.float32],
    *,
    skip: set[int] = frozenset(),
    swap: set[int] = frozenset(),
    start_seq: int = 0,
) -> None:
    """PCMU RTP, 20 ms packets, 4x real time; ``skip`` packet numbers are lost, ``swap``
    ones sent after their successor."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
    )
    packets = [
        build_rtp(
            0, start_seq + i, (start_seq + i) * 160, 7, mulaw_encode(audio[i * 160 : (i + 1) * 160]).tobytes()
        )
        for i in range(len(audio) // 160)
    ]
    order = list(range(len(packets)))
    for i in swap:
        order[i], order[i + 1] = order[i + 1], order[i]
    for i in order:
        if i not in skip:
            transport.sendto(packets[i])
        await asyncio.sleep(0.005)
    transport.close()


async def until_idle(server: SiprecServer) -> None:
    async with asyncio.timeout(scaled(20)):
        while server.sessions or server.pipeline.streams:
            await asyncio.sleep(0.02)


def test_hostile_sip_beside_a_call_is_refused_and_the_call_is_recorded_whole() -> None:
    async def body() -> None:
        async with (
            recorder() as (server, sub),
            peer() as client,
            peer("127.0.0.2") as hostile,
            peer("127.0.0.3") as flood,
        ):
            to_tag, ports = await open_call(client, server, "call-1")
            audio = noise(3.0, 8000, seed=1)
            recording = asyncio.gather(
                send_audio(ports[0], audio, skip=set(range(40, 46)), swap={60, 90}),
                send_audio(ports[1], audio),
            )
            refusals = {
                b"\x16\x03\x01garbage": None,
                message("INVITE", "h1", body="x" * 40_000, content_type="application/sdp"): 413,
                message("INVITE", "h2", body="hello", content_type="text/plain"): 415,
                message("FOO", "h3"): 501,
                message("REGISTER", "h4"): 405,
                message(
                    "INVITE", "h5", body=sdp(), content_type="application/sdp", extra="Require: 100rel\r\n"
                ): 420,
                message("INVITE", "h6", body=sdp(formats="96"), content_type="application/sdp"): 488,
                message("BYE", "call-1", cseq=9, to_tag=to_tag): 403,  # the live call, from elsewhere
                message("BYE", "call-1", cseq=9, to_tag="guessed"): 481,
                message("INVITE", "h7").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"): 400,
            }
            for data, status in refusals.items():
                if status is None:
                    hostile.transport.sendto(data, ("127.0.0.1", server.port))  # type: ignore[union-attr]
                    continue
                reply = await hostile.ask(data, server.port)
                assert reply.code == status, (status, reply.headers.get("Warning"))
                assert status not in (413, 415) or reply.headers.get("Warning") or reply.headers.get("Accept")
            sent = 0
            while server.dropped_messages == 0 and sent < 3000:  # far beyond 50/s, however loaded
                for _ in range(20):
                    flood.transport.sendto(message("OPTIONS", f"f{sent}"), ("127.0.0.1", server.port))  # type: ignore[union-attr]
                    sent += 1
                await asyncio.sleep(0.02)
            await recording
            await asyncio.sleep(0.2)
            assert server.dropped_messages > 0 and flood.inbox.qsize() < sent
            assert hostile.inbox.empty()  # garbage got no answer
            reply = await client.ask(message("BYE", "call-1", cseq=2, to_tag=to_tag), server.port)
            assert reply.code == 200
            await until_idle(server)
            events = drain(sub)
        calls = {e.stream for e in events if isinstance(e, StreamEvent) and e.state == "start"}
        assert calls == {"call-1:alice@example.com", "call-1:bob@example.com"}
        assert not [e for e in events if isinstance(e, ErrorEvent) and e.stream in calls]
        for stream in calls:
            last = max(e.t_end for e in events if isinstance(e, ScoreEvent) and e.stream == stream)
            assert last >= 2.5  # windows of 1 s every 0.5 s over 3 s of audio
        gaps = [e for e in events if isinstance(e, GapEvent)]
        assert [(g.stream, g.cause) for g in gaps] == [("call-1:alice@example.com", "loss")]
        assert gaps[0].t_end - gaps[0].t_start == pytest.approx(0.12, abs=0.001)  # 6 packets
        assert server.refused[501] == 1 and server.refused[405] == 1 and server.refused[415] == 1

    run(body(), 60)


def digest(challenge: str, password: str, uri: str = "sip:srs@127.0.0.1") -> str:
    nonce = challenge.split('nonce="')[1].split('"')[0]
    realm = challenge.split('realm="')[1].split('"')[0]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1, ha2 = md5(f"src:{realm}:{password}"), md5(f"INVITE:{uri}")
    return (
        f'Authorization: Digest username="src", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{md5(f"{ha1}:{nonce}:{ha2}")}", algorithm=MD5\r\n'
    )


def test_allow_list_digest_authentication_and_the_session_limit() -> None:
    async def body() -> None:
        auth = DigestAuthenticator({"src": "s3cret"}, "spoofwatch")
        allow = [__import__("ipaddress").ip_network("127.0.0.1/32")]
        async with recorder(allow=allow, authenticator=auth, max_sessions=1) as (server, _sub):
            async with peer("127.0.0.2") as outsider:
                assert (await outsider.ask(message("OPTIONS", "o1"), server.port)).code == 403
            async with peer() as client:
                assert (await client.ask(message("OPTIONS", "o2"), server.port)).code == 200
                offer, kind = siprec_body(sdp())
                invite = message("INVITE", "a1", body=offer, content_type=kind)
                challenged = await client.ask(invite, server.port)
                assert challenged.code == 401
                challenge = challenged.headers["WWW-Authenticate"]
                wrong = message(
                    "INVITE", "a1", cseq=2, body=offer, content_type=kind, extra=digest(challenge, "nope")
                )
                assert (await client.ask(wrong, server.port)).code == 403
                right = message(
                    "INVITE", "a1", cseq=3, body=offer, content_type=kind, extra=digest(challenge, "s3cret")
                )
                accepted = await client.ask(right, server.port)
                assert accepted.code == 200
                second = message(
                    "INVITE", "a2", body=offer, content_type=kind, extra=digest(challenge, "s3cret")
                )
                busy = await client.ask(second, server.port)
                assert busy.code == 503 and busy.headers["Retry-After"] == "5"
                to_tag = accepted.headers["To"].split("tag=")[1]
                assert (
                    await client.ask(message("BYE", "a1", cseq=4, to_tag=to_tag), server.port)
                ).code == 200
            await until_idle(server)
        async with recorder(EngineConfig(max_streams=1)) as (server, _sub), peer() as client:
            offer, kind = siprec_body(sdp())
            full = await client.ask(message("INVITE", "f1", body=offer, content_type=kind), server.port)
            assert full.code == 486 and "limit" in full.headers["Warning"]
            assert not server.sessions and not server.pipeline.streams

    run(body(), 30)


def test_hold_resume_and_the_rtp_timeout_end_the_call_with_a_bye() -> None:
    async def body() -> None:
        async with recorder(rtp_timeout_s=2.0) as (server, sub), peer() as client:
            to_tag, ports = await open_call(client, server, "h-1", sdp(("1",)))
            await send_audio(ports[0], noise(1.0, 8000, seed=2))
            held = await client.ask(
                message(
                    "INVITE",
                    "h-1",
                    cseq=2,
                    to_tag=to_tag,
                    body=sdp(("1",), "inactive"),
                    content_type="application/sdp",
                ),
                server.port,
            )
            assert held.code == 200 and "a=inactive" in held.body.decode()
            await asyncio.sleep(2.5)  # longer than the RTP timeout: a held call is not timed out
            assert "h-1" in server.sessions
            resumed = await client.ask(
                message(
                    "INVITE", "h-1", cseq=3, to_tag=to_tag, body=sdp(("1",)), content_type="application/sdp"
                ),
                server.port,
            )
            assert resumed.code == 200 and "a=recvonly" in resumed.body.decode()
            assert [m.port for m in parse_offer(resumed.body).media] == ports  # same port across re-INVITEs
            await send_audio(ports[0], noise(1.0, 8000, seed=3), start_seq=5000)
            bye = await asyncio.wait_for(client.inbox.get(), scaled(15.0))
            request = sip.parse_message(bye)
            assert (
                isinstance(request, sip.SipRequest) and request.method == "BYE" and request.call_id == "h-1"
            )
            await until_idle(server)
            events = drain(sub)
        gaps = [e for e in events if isinstance(e, GapEvent)]
        assert [g.cause for g in gaps] == ["paused"] and gaps[0].t_end - gaps[0].t_start >= 2.4
        errors = [e for e in events if isinstance(e, ErrorEvent)]
        assert len(errors) == 1 and "no RTP for 2 s" in errors[0].message
        assert max(e.t_end for e in events if isinstance(e, ScoreEvent)) > 4.0  # 1 s + the hold + 1 s

    run(body(), 30)


def test_a_senders_comfort_noise_packets_make_a_comfort_noise_gap_not_a_loss() -> None:
    """An SBC with DTX: 1 s of audio, one silence descriptor (PT 13) in the next sequence
    number, nothing for 1 s, then audio again: over real UDP the stream reports one gap of
    cause ``comfort-noise`` (always spliced), no loss, and keeps scoring."""

    async def body() -> None:
        async with recorder() as (server, sub), peer() as client:
            _, ports = await open_call(client, server, "dtx-1", sdp(("1",)))
            audio = noise(2.0, 8000, seed=6)
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=("127.0.0.1", ports[0])
            )
            seq = 0
            for i in range(125):  # 2.5 s of call time, 20 ms packets, the middle second silent
                if i == 25:  # the silence starts: one descriptor, then nothing for 1 s
                    transport.sendto(build_rtp(13, seq, i * 160, 7, b"\x40"))
                    seq += 1
                if 25 <= i < 75:
                    continue
                chunk = audio[(i if i < 25 else i - 50) * 160 :][:160]
                transport.sendto(build_rtp(0, seq, i * 160, 7, mulaw_encode(chunk).tobytes()))
                seq += 1
                await asyncio.sleep(0.005)
            transport.close()
            await asyncio.sleep(0.2)
            await server.stop()
            events = drain(sub)
        gaps = [(g.cause, round(g.t_end - g.t_start, 3)) for g in events if isinstance(g, GapEvent)]
        assert gaps == [("comfort-noise", 1.0)]
        assert [e for e in events if isinstance(e, ScoreEvent) and e.stream == "dtx-1:alice@example.com"]

    run(body(), 30)


def test_g722_streams_run_at_16_khz() -> None:
    from G722 import G722 as Codec722

    async def body() -> None:
        async with recorder() as (server, sub), peer() as client:
            _, ports = await open_call(client, server, "g-1", sdp(("1",), formats="9"))
            pcm = (noise(1.5, 16000, seed=4) * 32767).astype(np.int16)
            encoded = bytes(Codec722(16000, 64000).encode(pcm))
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=("127.0.0.1", ports[0])
            )
            for i in range(0, len(encoded), 160):
                transport.sendto(build_rtp(9, i // 160, i, 5, encoded[i : i + 160]))
                await asyncio.sleep(0.003)
            transport.close()
            await asyncio.sleep(0.2)
            await server.stop()
            events = drain(sub)
        start = next(e for e in events if isinstance(e, StreamEvent) and e.state == "start")
        assert start.sample_rate == 16000 and start.stream == "g-1:alice@example.com"
        assert [e for e in events if isinstance(e, ScoreEvent)]

    run(body(), 30)


def test_sip_over_tcp_and_tls(tmp_path: Path) -> None:
    certs = make_self_signed(tmp_path)

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> Any:
        for i in range(0, len(data), 50):  # segmented
            writer.write(data[i : i + 50])
            await writer.drain()
        framer = sip.SipStreamFramer()
        while True:
            data = await asyncio.wait_for(reader.read(65536), scaled(15.0))
            assert data, "the server closed the connection without an answer"
            messages = framer.feed(data)
            if messages:
                return sip.parse_message(messages[0])

    async def body() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        async with recorder(tls_port=0, ssl_context=context) as (server, sub):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            offer, kind = siprec_body(sdp())
            reply = await exchange(
                reader,
                writer,
                b"\r\n\r\n" + message("INVITE", "t-1", body=offer, content_type=kind, transport="TCP"),
            )
            assert reply.code in (100, 200)
            if reply.code == 100:
                framer = sip.SipStreamFramer()
                reply = sip.parse_message(
                    framer.feed(await asyncio.wait_for(reader.read(65536), scaled(15.0)))[0]
                )
            assert reply.code == 200 and "transport=tcp" in reply.headers["Contact"]
            unframed = message("OPTIONS", "t-3", transport="TCP").replace(b"Content-Length: 0\r\n", b"")
            reply = await exchange(reader, writer, unframed)
            assert reply.code == 400  # no Content-Length on a stream: answered, then closed
            assert await asyncio.wait_for(reader.read(), scaled(15.0)) == b""
            writer.close()
            client_context = ssl.create_default_context(cafile=certs.cert)
            assert server.tls_port is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", server.tls_port, ssl=client_context)
            reply = await exchange(reader, writer, message("OPTIONS", "t-2", transport="TLS"))
            assert reply.code == 200 and "INVITE" in reply.headers["Allow"]
            writer.close()
            await server.stop()
            events = drain(sub)
        assert {e.stream for e in events if isinstance(e, StreamEvent)} == {
            "t-1:alice@example.com",
            "t-1:bob@example.com",
        }

    run(body(), 30)


def test_running_out_of_rtp_ports_refuses_the_call_and_frees_what_it_opened() -> None:
    async def body() -> None:
        async with recorder(rtp_ports=(30000, 30005)) as (server, _sub), peer() as client:
            await open_call(client, server, "p-1")  # two of the three even ports
            offer, kind = siprec_body(sdp())
            reply = await client.ask(message("INVITE", "p-2", body=offer, content_type=kind), server.port)
            assert reply.code == 503 and "free even port" in reply.headers["Warning"]
            await asyncio.sleep(0.1)
            assert set(server.pipeline.streams) == {"p-1:alice@example.com", "p-1:bob@example.com"}
            assert list(server.sessions) == ["p-1"]
            _, ports = await open_call(client, server, "p-3", sdp(("1",)))  # the freed port is usable
            assert ports == [30004]

    run(body(), 30)


def test_cancel_ends_an_invite_queued_for_admission() -> None:
    async def body() -> None:
        engine = EngineConfig(
            max_batch=8, max_wait_ms=5, max_streams=2, admission="queue", queue_timeout_s=20
        )
        async with recorder(engine) as (server, _sub), peer() as client:
            await open_call(client, server, "q-1")  # the pipeline is now full
            offer, kind = siprec_body(sdp())
            trying = await client.ask(
                message("INVITE", "q-2", body=offer, content_type=kind), server.port, final=False
            )
            assert trying.code == 100
            assert (await client.ask(message("CANCEL", "q-2"), server.port)).code == 200
            final = sip.parse_message(await asyncio.wait_for(client.inbox.get(), scaled(15.0)))
            assert not isinstance(final, sip.SipRequest)
            assert final.code == 487 and final.headers["CSeq"] == "1 INVITE", final.headers.get("Warning")
            assert list(server.sessions) == ["q-1"] and len(server.pipeline.streams) == 2
            unknown = await client.ask(message("CANCEL", "q-9"), server.port)
            assert unknown.code == 481

    run(body(), 30)
