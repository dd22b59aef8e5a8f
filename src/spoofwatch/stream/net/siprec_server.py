"""The SIPREC Session Recording Server (``spoofwatch serve --siprec-port P``, RFC 7866).

A session border controller (the recording client) sends an INVITE whose body holds an
SDP offer with one ``a=sendonly`` audio stream per party and, usually, the recording
metadata (RFC 7865) that says who each stream is. The server admits one pipeline stream
per accepted m-line, ``<call-id>:<party>`` (the party's address of record from the
metadata, else the stream's SDP label), all together through the shared call admission,
answers ``200 OK`` with ``a=recvonly`` on even ports of ``rtp_ports``, and feeds each
stream from its own RTP port (``rtp_receiver``). A re-INVITE holds (``a=inactive``),
resumes, adds or removes streams; BYE ends the session; so does ``siprec_rtp_timeout_s``
without RTP, with a BYE to the client.

SIP arrives on UDP and TCP at ``siprec_port`` and over TLS at ``siprec_tls_port``. What is
refused, and how: a source outside ``siprec_allow`` 403; missing or wrong digest
credentials 401 (403 after a wrong answer); more than ``siprec_max_sessions`` 503 with
Retry-After; a full pipeline 486; malformed 400; too large 413/513; a body that is not
SDP / rs-metadata 415; an unsupported ``Require`` 420; a known method this server does not
act on 405, an unknown one 501. A source sending SIP faster than ``SIP_MESSAGES_PER_S``
has its excess dropped (an answer would only amplify a flood). None of it touches the
other sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sipmessage import Response

from spoofwatch.config import ServerConfig
from spoofwatch.errors import ConfigError, LimitExceededError, SpoofwatchError
from spoofwatch.stream.engine.pipeline import MAX_STREAM_ID_LENGTH, Pipeline, StreamHandle
from spoofwatch.stream.net.admission import Admission, StreamRequest
from spoofwatch.stream.net.connection import close_stream
from spoofwatch.stream.net.limits import TokenBucket
from spoofwatch.stream.net.rtp_receiver import RtpReceiver
from spoofwatch.stream.net.tls import server_ssl_context
from spoofwatch.stream.protocols import sip
from spoofwatch.stream.protocols.rtp import g722_available
from spoofwatch.stream.protocols.sdp import (
    G722,
    Codec,
    MediaAnswer,
    MediaOffer,
    SessionOffer,
    answer_direction,
    build_answer,
    choose_codec,
    parse_offer,
)
from spoofwatch.stream.protocols.sip_auth import DigestAuthenticator, parse_users
from spoofwatch.stream.protocols.siprec import (
    RecordingMetadata,
    SiprecBody,
    parse_metadata,
    participant_metadata,
    split_body,
)

logger = logging.getLogger(__name__)

SIP_MESSAGES_PER_S: Final = 50.0  # per source address; a recording client sends a few per call
SIP_MESSAGE_BURST: Final = 100
MAX_TRACKED_SOURCES: Final = 10_000
MAX_TCP_CONNECTIONS: Final = 256
TCP_IDLE_TIMEOUT_S: Final = 300.0
T1_S: Final = 0.5  # RFC 3261 timer T1: 2xx retransmissions start here and double
ACK_TIMEOUT_S: Final = 32.0  # 64 * T1: no ACK for our 200 OK by then ends the session
TIMEOUT_CHECK_S: Final = 1.0
ALLOW: Final = ", ".join(sip.HANDLED_METHODS)
ACCEPT: Final = "application/sdp, application/rs-metadata+xml, multipart/mixed"
MAX_PARTY_CHARS: Final = 64
RETRY_AFTER_S: Final = 5
PORT_0_ATTEMPTS: Final = 20

Send = Callable[[bytes], None]


def parse_port_range(text: str) -> tuple[int, int]:
    low_text, sep, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text)
    except ValueError:
        low = high = -1
    if not sep or not 1024 <= low < high <= 65535:
        raise ConfigError(
            f"server.rtp_ports: expected LOW-HIGH within 1024..65535 (LOW < HIGH), found {text!r}"
        )
    return low, high


def parse_allow(entries: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"server.siprec_allow: expected IP addresses or networks (10.0.0.0/8), found {entry!r}"
            ) from None
    return networks


@dataclass
class RecordedStream:
    """One accepted m-line of a session."""

    index: int
    stream_id: str
    receiver: RtpReceiver
    sample_rate: int


@dataclass
class SiprecSession:
    call_id: str
    from_tag: str | None
    to_tag: str
    peer: tuple[str, int]
    transport: str
    send: Send
    invite: sip.SipRequest
    local_address: str
    metadata: RecordingMetadata = field(default_factory=RecordingMetadata)
    streams: dict[int, RecordedStream] = field(default_factory=dict)
    sdp_version: int = 0
    session_id: int = field(default_factory=lambda: secrets.randbelow(1 << 31))
    acked: bool = False
    established_at: float = field(default_factory=time.monotonic)
    retransmit: asyncio.Task[None] | None = None
    ended: bool = False

    def last_rtp(self) -> float:
        return max((s.receiver.last_packet for s in self.streams.values()), default=self.established_at)

    def on_hold(self) -> bool:
        return bool(self.streams) and all(s.receiver.paused_since is not None for s in self.streams.values())


@dataclass
class PendingInvite:
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    final: bytes | None = None


class SiprecServer:
    """SIP listeners (UDP, TCP, TLS) and the recording sessions they set up."""

    def __init__(
        self,
        pipeline: Pipeline,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_port: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        rtp_ports: tuple[int, int] = (20000, 20999),
        allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
        authenticator: DigestAuthenticator | None = None,
        max_sessions: int = 32,
        rtp_timeout_s: float = 20.0,
        max_packets_per_s: float = 200.0,
    ) -> None:
        if tls_port is not None and ssl_context is None:
            raise ConfigError("server.siprec_tls_port: expected server.tls_cert as well, found none")
        self.pipeline = pipeline
        self.host = host
        self.requested_port = port
        self.requested_tls_port = tls_port
        self.ssl_context = ssl_context
        self.rtp_low, self.rtp_high = rtp_ports
        self.allow = allow or []
        self.authenticator = authenticator
        self.max_sessions = max_sessions
        self.rtp_timeout_s = rtp_timeout_s
        self.max_packets_per_s = max_packets_per_s
        self.sessions: dict[str, SiprecSession] = {}
        self.pending: dict[tuple[str, int], PendingInvite] = {}  # (call-id, CSeq number)
        self.refused: dict[int, int] = {}  # responses sent, by status
        self.dropped_messages = 0
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tls: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._rtp_next = self.rtp_low + (self.rtp_low % 2)
        self.g722 = g722_available()

    # -- listeners ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._udp is None:
            raise RuntimeError("SiprecServer.port: expected a started server, found none")
        port: int = self._udp.get_extra_info("sockname")[1]
        return port

    @property
    def tls_port(self) -> int | None:
        if self._tls is None:
            return None
        port: int = self._tls.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # TCP on the same port number as UDP (RFC 3261 18: both on 5060). With port 0 the
        # number the OS gives UDP may be taken for TCP: then try another.
        for attempt in range(PORT_0_ATTEMPTS):
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _SipUdp(self), local_addr=(self.host, self.requested_port)
            )
            try:
                self._tcp = await asyncio.start_server(self._handle_tcp, self.host, self.port)
                break
            except OSError:
                self._udp.close()
                self._udp = None
                if self.requested_port != 0 or attempt == PORT_0_ATTEMPTS - 1:
                    raise
        if self.requested_tls_port is not None:
            self._tls = await asyncio.start_server(
                self._handle_tcp, self.host, self.requested_tls_port, ssl=self.ssl_context
            )
        self._watchdog = asyncio.create_task(self._watch_timeouts(), name="siprec-timeouts")
        logger.info(
            "SIPREC server on sip:%s:%d (UDP, TCP)%s, RTP ports %d-%d",
            self.host,
            self.port,
            f" and sips:{self.host}:{self.tls_port} (TLS)" if self._tls else "",
            self.rtp_low,
            self.rtp_high,
        )

    async def stop(self) -> None:
        """End every session (streams flush), close the listeners."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(
                self._end_session(s, "server shutting down", send_bye=True)
                for s in list(self.sessions.values())
            )
        )
        for server in (self._tcp, self._tls):
            if server is not None:
                server.close()
        for writer in list(self._tcp_writers):
            writer.close()
        for server in (self._tcp, self._tls):
            if server is not None:
                await server.wait_closed()
        if self._udp is not None:
            self._udp.close()
        self._udp = self._tcp = self._tls = None
        logger.info("SIPREC server stopped")

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer.get_extra_info("peername"))
        transport = "TLS" if writer.get_extra_info("sslcontext") is not None else "TCP"
        if len(self._tcp_writers) >= MAX_TCP_CONNECTIONS:
            logger.warning(
                "SIPREC: refusing a %s connection from %s: %d open", transport, peer[0], MAX_TCP_CONNECTIONS
            )
            writer.close()
            return
        self._tcp_writers.add(writer)
        framer = sip.SipStreamFramer()

        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT_S):
                    data = await reader.read(65536)
                if not data:
                    return
                try:
                    messages = framer.feed(data)
                except sip.SipError as exc:
                    reply = sip.error_response(framer.buffered(), exc.status, str(exc))
                    self._count(exc.status)
                    if reply is not None:
                        send(reply)
                        await writer.drain()
                    logger.warning("SIPREC: closing %s connection from %s: %s", transport, peer[0], exc)
                    return
                for message in messages:
                    await self.on_message(message, peer, transport, send)
                await writer.drain()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            return
        finally:
            self._tcp_writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    def _udp_send(self, peer: tuple[str, int]) -> Send:
        def send(data: bytes) -> None:
            if self._udp is not None and not self._udp.is_closing():
                self._udp.sendto(data, peer)

        return send

    # -- messages ----------------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        if not self.allow:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.allow)

    def _within_rate(self, host: str) -> bool:
        bucket = self._sources.get(host)
        now = time.monotonic()
        if bucket is None:
            bucket = self._sources[host] = TokenBucket(SIP_MESSAGES_PER_S, SIP_MESSAGE_BURST, now)
            while len(self._sources) > MAX_TRACKED_SOURCES:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(host)
        return bucket.take(now)

    def _count(self, status: int) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1

    async def on_message(self, data: bytes, peer: tuple[str, int], transport: str, send: Send) -> None:
        """One SIP message from ``peer``; every answer goes through ``send``."""
        if not self._within_rate(peer[0]):
            self.dropped_messages += 1
            if self.dropped_messages in (1, 100, 10_000):
                logger.warning(
                    "SIPREC: dropping SIP from %s beyond %g messages/s", peer[0], SIP_MESSAGES_PER_S
                )
            return
        try:
            parsed = sip.parse_message(data)
        except sip.SipError as exc:
            logger.warning("SIPREC: refusing a message from %s: %s", peer[0], exc)
            self._count(exc.status)
            reply = sip.error_response(data, exc.status, str(exc))
            if reply is not None:
                send(reply)
            return
        if isinstance(parsed, Response):
            return  # answers to our BYEs: nothing to do
        request = parsed
        if not self._allowed(peer[0]):
            logger.warning("SIPREC: refusing %s from %s: not in server.siprec_allow", request.method, peer[0])
            self._reply(request, send, 403)
            return
        try:
            await self._dispatch(request, peer, transport, send)
        except sip.SipError as exc:
            logger.warning(
                "SIPREC: refusing %s %s from %s: %s", request.method, request.call_id, peer[0], exc
            )
            self._reply(
                request, send, exc.status, warning=str(exc), accept=exc.status == 415, headers=exc.headers
            )

    def _reply(
        self,
        request: sip.SipRequest,
        send: Send,
        status: int,
        *,
        warning: str | None = None,
        accept: bool = False,
        to_tag: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes | None:
        if request.method == "ACK":
            return None  # an ACK is never answered
        extra = dict(headers or {})
        if warning:
            extra["Warning"] = '399 spoofwatch "{}"'.format(warning.replace('"', "'")[:200])
        if accept:
            extra["Accept"] = ACCEPT
        if status in (405, 501):
            extra["Allow"] = ALLOW
        if status >= 300:
            self._count(status)
        data = sip.response(
            request, status, to_tag=to_tag or (sip.new_tag() if status >= 300 else None), headers=extra
        )
        send(data)
        return data

    async def _dispatch(
        self, request: sip.SipRequest, peer: tuple[str, int], transport: str, send: Send
    ) -> None:
        method = request.method
        if method == "INVITE":
            if request.to_tag is not None:
                await self._reinvite(request, peer, send)
            else:
                await self._invite(request, peer, transport, send)
        elif method == "ACK":
            self._ack(request)
        elif method == "BYE":
            await self._bye(request, peer, send)
        elif method == "CANCEL":
            self._cancel(request, send)
        elif method == "OPTIONS":
            self._reply(
                request,
                send,
                200,
                to_tag=sip.new_tag(),
                headers={"Allow": ALLOW, "Accept": ACCEPT, "Supported": "siprec"},
            )
        elif method in sip.KNOWN_METHODS:
            raise sip.SipError(405, f"SIP method {method}: expected one of {list(sip.HANDLED_METHODS)}")
        else:
            raise sip.SipError(
                501, f"SIP method {method[:32]}: not implemented; expected one of {list(sip.HANDLED_METHODS)}"
            )

    # -- INVITE ------------------------------------------------------------------------

    async def _invite(
        self, request: sip.SipRequest, peer: tuple[str, int], transport: str, send: Send
    ) -> None:
        key = (request.call_id, request.cseq.sequence)
        pending = self.pending.get(key)
        if pending is not None:  # a retransmission
            if pending.final is not None:
                send(pending.final)
            else:
                self._reply(request, send, 100)
            return
        if request.call_id in self.sessions:
            raise sip.SipError(400, f"INVITE for Call-ID {request.call_id}: already a recording session")
        if self.authenticator is not None:
            self._authenticate(request)
        in_progress = sum(1 for p in self.pending.values() if p.final is None)
        if len(self.sessions) + in_progress >= self.max_sessions:
            raise _unavailable(f"SIPREC: expected at most {self.max_sessions} concurrent sessions, all taken")
        self._check_require(request)
        offer, metadata = self._read_body(request, required=True)
        assert offer is not None
        pending = self.pending[key] = PendingInvite()
        session: SiprecSession | None = None
        try:
            self._reply(request, send, 100)
            to_tag = sip.new_tag()
            local = self._local_address(transport)
            session = SiprecSession(
                request.call_id, request.from_tag, to_tag, peer, transport, send, request, local
            )
            session.metadata = metadata or RecordingMetadata()
            answers = await self._open_streams(session, offer, list(offer.media), peer[0], pending.cancelled)
            if pending.cancelled.is_set():
                raise sip.SipError(487, "INVITE cancelled by the client")
            self.sessions[session.call_id] = session
            pending.final = self._answer(session, request, answers)
            logger.info(
                "SIPREC session %s from %s (%s): %d stream(s) %s",
                session.call_id,
                peer[0],
                transport,
                len(session.streams),
                [s.stream_id for s in session.streams.values()],
            )
            if transport == "UDP":
                session.retransmit = asyncio.create_task(
                    self._retransmit(session, pending.final), name=f"siprec-2xx {session.call_id}"
                )
        except BaseException as exc:
            if session is not None and session.call_id not in self.sessions:
                await self._close_streams(session, "call refused")  # what was opened before the refusal
            if not isinstance(exc, sip.SipError):
                raise
            pending.final = self._reply(
                request, send, exc.status, warning=str(exc), to_tag=sip.new_tag(), headers=exc.headers
            )
            logger.warning("SIPREC: refusing INVITE %s from %s: %s", request.call_id, peer[0], exc)
        finally:
            self._forget_pending(key)

    def _forget_pending(self, key: tuple[str, int]) -> None:
        """Keep the final answer a while for retransmissions, then forget the transaction."""

        def forget() -> None:
            self.pending.pop(key, None)

        asyncio.get_running_loop().call_later(ACK_TIMEOUT_S, forget)

    def _authenticate(self, request: sip.SipRequest) -> None:
        assert self.authenticator is not None
        headers = request.message.headers
        header = headers.get("Authorization") or headers.get("Proxy-Authorization")
        verdict = self.authenticator.verify(header, request.method)
        if verdict == "ok":
            return
        if verdict == "bad":
            raise sip.SipError(403, "SIP digest credentials: expected a known user with the right password")
        raise sip.SipError(
            401,
            "SIP digest authentication: expected credentials for realm " + self.authenticator.realm,
            {"WWW-Authenticate": self.authenticator.challenge(stale=verdict == "stale")},
        )

    @staticmethod
    def _check_require(request: sip.SipRequest) -> None:
        unsupported = [o for o in request.message.require if o.lower() != "siprec"]
        if unsupported:
            raise sip.SipError(
                420,
                f"SIP Require: expected only 'siprec', found {unsupported}",
                {"Unsupported": ", ".join(unsupported)},
            )

    def _read_body(
        self, request: sip.SipRequest, *, required: bool
    ) -> tuple[SessionOffer | None, RecordingMetadata | None]:
        body: SiprecBody = split_body(request.message.headers.get("Content-Type"), request.body)
        if body.sdp is None:
            if required:
                raise sip.SipError(488, "SIPREC INVITE: expected an SDP offer (application/sdp), found none")
            return None, parse_metadata(body.metadata) if body.metadata else None
        return parse_offer(body.sdp), parse_metadata(body.metadata) if body.metadata else None

    def _stream_name(
        self, session: SiprecSession, media: MediaOffer, taken: set[str]
    ) -> tuple[str, dict[str, str]]:
        participant = session.metadata.participant_for_label(media.label) if media.label else None
        info = participant_metadata(participant, media.label, session.call_id)
        aor = info.get("aor")
        party = aor.split(":", 1)[1] if aor and aor.startswith(("sip:", "sips:", "tel:")) else aor
        party = party or media.label or f"stream{media.index}"
        party = party[:MAX_PARTY_CHARS]
        name = f"{session.call_id}:{party}"
        if name in taken:
            name = f"{name}#{media.index}"
        return name[:MAX_STREAM_ID_LENGTH], info

    async def _open_streams(
        self,
        session: SiprecSession,
        offer: SessionOffer,
        media: list[MediaOffer],
        peer_host: str,
        cancelled: asyncio.Event | None = None,
    ) -> list[MediaAnswer]:
        """Admit a stream per usable m-line in ``media``; the answers to every one of them."""
        answers: dict[int, MediaAnswer] = {}
        chosen: list[tuple[MediaOffer, int, Codec, str, dict[str, str]]] = []
        taken = {s.stream_id for s in session.streams.values()}
        for item in media:
            choice = self._codec_for(item)
            direction = offer.media_direction(item)
            if item.media != "audio" or item.port == 0 or choice is None or "RTP/" not in item.proto:
                answers[item.index] = MediaAnswer(item, 0)
                continue
            name, info = self._stream_name(session, item, taken)
            taken.add(name)
            chosen.append((item, choice[0], choice[1], name, info))
            answers[item.index] = MediaAnswer(item, -1, choice[0], choice[1], answer_direction(direction))
        if not chosen and not session.streams:
            raise sip.SipError(
                488,
                "SDP offer: expected an RTP audio stream in PCMU, PCMA" + (" or G722" if self.g722 else ""),
            )
        requests = [
            StreamRequest(name, "siprec", codec.sample_rate, info) for _, _, codec, name, info in chosen
        ]
        try:
            handles = await self._admit(requests, cancelled) if requests else []
        except sip.SipError:
            raise
        except LimitExceededError as exc:
            raise sip.SipError(486, str(exc)) from None
        except SpoofwatchError as exc:
            raise sip.SipError(400, str(exc)) from None
        try:
            for (item, pt, codec, name, _info), handle in zip(chosen, handles, strict=True):
                hosts = {peer_host}
                address = offer.media_address(item)
                if address is not None:
                    hosts.add(address)
                receiver = RtpReceiver(handle, codec, pt, hosts, self.max_packets_per_s)
                await self._bind_rtp(receiver)
                session.streams[item.index] = RecordedStream(item.index, name, receiver, handle.input_rate)
                answers[item.index] = MediaAnswer(
                    item, receiver.port, pt, codec, answers[item.index].direction
                )
                if answers[item.index].direction == "inactive":
                    receiver.hold()
        except BaseException:
            opened = {s.stream_id for s in session.streams.values()}
            await asyncio.gather(
                *(close_stream(h, "call refused") for h in handles if h.stream_id not in opened)
            )
            raise
        return [answers[i] for i in sorted(answers)]

    async def _admit(
        self, requests: list[StreamRequest], cancelled: asyncio.Event | None
    ) -> list[StreamHandle]:
        """Admission (which may queue, ``[engine] admission``), cut short by a CANCEL."""
        admitting = asyncio.ensure_future(Admission.of(self.pipeline).open(requests))
        if cancelled is None:
            return await admitting
        waiting = asyncio.ensure_future(cancelled.wait())
        try:
            await asyncio.wait({admitting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            if not admitting.done():
                admitting.cancel()
            await asyncio.gather(admitting, waiting, return_exceptions=True)
        if admitting.cancelled():
            raise sip.SipError(487, "INVITE cancelled by the client while waiting for admission")
        return admitting.result()

    def _codec_for(self, media: MediaOffer, sample_rate: int | None = None) -> tuple[int, Codec] | None:
        """The first offered codec we decode; G.722 only when its decoder is installed."""
        formats = media.formats
        if not self.g722:
            formats = [f for f in formats if not (f.isdigit() and media.codec_of(int(f)) == G722)]
        return choose_codec(dataclasses.replace(media, formats=formats), sample_rate)

    async def _bind_rtp(self, receiver: RtpReceiver) -> None:
        loop = asyncio.get_running_loop()
        span = (self.rtp_high - self.rtp_low) // 2 + 1
        for _ in range(span):
            port = self._rtp_next
            self._rtp_next += 2
            if self._rtp_next > self.rtp_high:
                self._rtp_next = self.rtp_low + (self.rtp_low % 2)
            try:
                await loop.create_datagram_endpoint(lambda: receiver, local_addr=(self.host, port))
                return
            except OSError:
                continue
        raise _unavailable(f"RTP: expected a free even port in {self.rtp_low}-{self.rtp_high}, found none")

    def _answer(self, session: SiprecSession, request: sip.SipRequest, answers: list[MediaAnswer]) -> bytes:
        session.sdp_version += 1
        body = build_answer(
            answers, address=session.local_address, session_id=session.session_id, version=session.sdp_version
        )
        scheme = "sips" if session.transport == "TLS" else "sip"
        contact = f"<{scheme}:srs@{_uri_host(session.local_address)}:{self._listen_port(session.transport)}"
        contact += ";transport=tcp>" if session.transport == "TCP" else ">"
        data = sip.response(
            request,
            200,
            to_tag=session.to_tag,
            headers={"Contact": contact, "Allow": ALLOW, "Supported": "siprec"},
            body=body,
            content_type="application/sdp",
        )
        session.send(data)
        return data

    def _listen_port(self, transport: str) -> int:
        return (self.tls_port or self.port) if transport == "TLS" else self.port

    def _local_address(self, transport: str) -> str:
        if self.host not in ("0.0.0.0", "::", ""):
            return self.host
        return "127.0.0.1"  # the wildcard is no address to give a client: see docs (bind a real one)

    async def _retransmit(self, session: SiprecSession, data: bytes) -> None:
        """RFC 3261 13.3.1.4: resend the 2xx until the ACK, at T1, 2 T1, ... up to T2 = 4 s."""
        interval = T1_S
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while not session.acked and not session.ended and time.monotonic() < deadline:
            await asyncio.sleep(interval)
            if session.acked or session.ended:
                return
            session.send(data)
            interval = min(interval * 2, 4.0)

    def _ack(self, request: sip.SipRequest) -> None:
        session = self.sessions.get(request.call_id)
        if session is not None and request.to_tag == session.to_tag:
            session.acked = True

    # -- re-INVITE, BYE, CANCEL --------------------------------------------------------

    def _dialog(self, request: sip.SipRequest, peer: tuple[str, int]) -> SiprecSession:
        session = self.sessions.get(request.call_id)
        if session is None or request.to_tag != session.to_tag:
            raise sip.SipError(
                481, f"{request.method}: expected a live recording session, found none for this dialog"
            )
        if peer[0] != session.peer[0]:
            raise sip.SipError(403, f"{request.method}: expected it from the session's client address")
        return session

    async def _reinvite(self, request: sip.SipRequest, peer: tuple[str, int], send: Send) -> None:
        session = self._dialog(request, peer)
        session.invite = request
        offer, metadata = self._read_body(request, required=False)
        if metadata is not None:
            session.metadata = session.metadata.merge(metadata)
        if offer is None:  # a metadata update alone, or a session refresh
            self._answer(session, request, [])
            return
        answers: dict[int, MediaAnswer] = {}
        added: list[MediaOffer] = []
        for item in offer.media:
            stream = session.streams.get(item.index)
            if stream is None:
                added.append(item)
                continue
            codec = self._codec_for(item, stream.sample_rate) if item.port else None
            if codec is None:  # removed, or no codec at the stream's rate: the stream ends
                del session.streams[item.index]
                await stream.receiver.close(None)
                answers[item.index] = MediaAnswer(item, 0)
                continue
            receiver = stream.receiver
            receiver.jitter.set_codec(codec[1], codec[0])
            address = offer.media_address(item)
            if address is not None:
                receiver.allowed_hosts.add(address)
            direction = answer_direction(offer.media_direction(item))
            if direction == "inactive" or address in ("0.0.0.0", "::"):
                receiver.hold()
                direction = "inactive"
            else:
                receiver.resume()
            answers[item.index] = MediaAnswer(item, receiver.port, codec[0], codec[1], direction)
        if added:
            for answer in await self._open_streams(session, offer, added, peer[0]):
                answers[answer.offer.index] = answer
        self._answer(session, request, [answers[i] for i in sorted(answers)])
        logger.info(
            "SIPREC session %s updated: %s",
            session.call_id,
            {
                s.stream_id: "held" if s.receiver.paused_since is not None else "live"
                for s in session.streams.values()
            },
        )

    async def _bye(self, request: sip.SipRequest, peer: tuple[str, int], send: Send) -> None:
        session = self._dialog(request, peer)
        self._reply(request, send, 200, to_tag=session.to_tag)
        await self._end_session(session, None)

    def _cancel(self, request: sip.SipRequest, send: Send) -> None:
        pending = self.pending.get((request.call_id, request.cseq.sequence))
        if pending is None:
            raise sip.SipError(481, "CANCEL: expected a pending INVITE, found none")
        self._reply(request, send, 200, to_tag=sip.new_tag())
        if pending.final is None:
            pending.cancelled.set()

    async def _end_session(
        self, session: SiprecSession, reason: str | None, *, send_bye: bool = False
    ) -> None:
        if session.ended:
            return
        session.ended = True
        self.sessions.pop(session.call_id, None)
        if session.retransmit is not None:
            session.retransmit.cancel()
        if send_bye:
            with contextlib.suppress(OSError, RuntimeError):
                session.send(self._bye_request(session))
        await self._close_streams(session, reason)
        logger.info("SIPREC session %s ended%s", session.call_id, f": {reason}" if reason else "")

    async def _close_streams(self, session: SiprecSession, reason: str | None) -> None:
        streams = list(session.streams.values())
        session.streams.clear()
        await asyncio.gather(*(s.receiver.close(reason) for s in streams))

    def _bye_request(self, session: SiprecSession) -> bytes:
        invite = session.invite.message
        target = sip.contact_uri(session.invite) or str(invite.from_address.uri)
        local = session.local_address
        branch = "z9hG4bK" + secrets.token_hex(8)
        port = self._listen_port(session.transport)
        to_value = invite.headers.get("To") or ""
        if ";tag=" not in to_value:
            to_value += f";tag={session.to_tag}"
        lines = [
            f"BYE {target} SIP/2.0",
            f"Via: SIP/2.0/{session.transport} {_uri_host(local)}:{port};branch={branch};rport",
            f"From: {to_value}",
            f"To: {invite.headers.get('From')}",
            f"Call-ID: {session.call_id}",
            f"CSeq: {secrets.randbelow(1 << 16) + 1} BYE",
            "Max-Forwards: 70",
            f"Server: {sip.SERVER_NAME}",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _watch_timeouts(self) -> None:
        while True:
            await asyncio.sleep(TIMEOUT_CHECK_S)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.on_hold():
                    continue
                if now - session.last_rtp() > self.rtp_timeout_s:
                    reason = f"no RTP for {self.rtp_timeout_s:g} s (server.siprec_rtp_timeout_s)"
                elif not session.acked and now - session.established_at > ACK_TIMEOUT_S:
                    reason = f"no ACK for the 200 OK within {ACK_TIMEOUT_S:g} s"
                else:
                    continue
                logger.warning("SIPREC session %s: %s; ending it", session.call_id, reason)
                task = asyncio.create_task(self._end_session(session, reason, send_bye=True))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)


def _unavailable(message: str) -> sip.SipError:
    return sip.SipError(503, message, {"Retry-After": str(RETRY_AFTER_S)})


class _SipUdp(asyncio.DatagramProtocol):
    def __init__(self, server: SiprecServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        peer = (str(addr[0]), int(addr[1]))
        if data.strip(b"\r\n") == b"":
            return  # a CRLF keep-alive
        task = asyncio.create_task(self.server.on_message(data, peer, "UDP", self.server._udp_send(peer)))
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)

    def error_received(self, exc: Exception) -> None:
        logger.debug("SIPREC UDP socket: %s", exc)


def _peer(peername: object) -> tuple[str, int]:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0]), int(peername[1])
    return str(peername), 0


def _uri_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def server_from_config(pipeline: Pipeline, config: ServerConfig) -> SiprecServer:
    """A server as ``config`` says; ConfigError for a bad range, allow-list or users."""
    if config.siprec_port is None:
        raise ConfigError("server.siprec_port: expected a port number, found None")
    users = parse_users(config.siprec_users)
    ssl_context = None
    if config.siprec_tls_port is not None:
        if config.tls_cert is None:
            raise ConfigError(
                "server.siprec_tls_port: expected server.tls_cert (and tls_key) for SIP over TLS"
            )
        ssl_context = server_ssl_context(config.tls_cert, config.tls_key)
    return SiprecServer(
        pipeline,
        config.host,
        config.siprec_port,
        tls_port=config.siprec_tls_port,
        ssl_context=ssl_context,
        rtp_ports=parse_port_range(config.rtp_ports),
        allow=parse_allow(config.siprec_allow),
        authenticator=DigestAuthenticator(users, config.siprec_realm) if users else None,
        max_sessions=config.siprec_max_sessions,
        rtp_timeout_s=config.siprec_rtp_timeout_s,
        max_packets_per_s=config.siprec_max_packets_per_s,
    )


async def run_siprec_server(
    pipeline: Pipeline, config: ServerConfig, ready: asyncio.Event | None = None
) -> None:
    """Serve SIPREC as ``config`` says until cancelled."""
    server = server_from_config(pipeline, config)
    await server.start()
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.stop()
