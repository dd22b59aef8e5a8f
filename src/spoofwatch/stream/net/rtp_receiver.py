"""One recorded RTP stream: a UDP port, its jitter buffer and the pipeline stream it feeds.

Packets are accepted only from the recording client's addresses (its signalling address
and the SDP's ``c=``), at most ``max_packets_per_s`` (a token bucket; the rest are
dropped and counted: UDP cannot be refused), each at most ``rtp.MAX_PACKET_BYTES``. Audio
goes to the stream in order; lost packets become gaps (``StreamHandle.gap``, cause
``loss``), a sender's comfort-noise packets one of cause ``comfort-noise`` and a hold one
of cause ``paused``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final, cast

from spoofwatch.errors import AudioError, ProtocolError, SpoofwatchError
from spoofwatch.stream.engine.pipeline import StreamHandle
from spoofwatch.stream.net.connection import close_stream, publish_error
from spoofwatch.stream.net.limits import TokenBucket
from spoofwatch.stream.protocols.rtp import Audio, JitterBuffer, Lost, Released, parse_rtp
from spoofwatch.stream.protocols.sdp import Codec

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS: Final = 8  # error events per stream; later bad packets are only counted


class RtpReceiver(asyncio.DatagramProtocol):
    def __init__(
        self,
        handle: StreamHandle,
        codec: Codec,
        payload_type: int,
        allowed_hosts: set[str],
        max_packets_per_s: float,
    ) -> None:
        self.handle = handle
        self.jitter = JitterBuffer(codec, payload_type)
        self.allowed_hosts = allowed_hosts
        self.bucket = TokenBucket(max_packets_per_s, max(2 * max_packets_per_s, 10), time.monotonic())
        self.transport: asyncio.DatagramTransport | None = None
        self.last_packet = time.monotonic()
        self.paused_since: float | None = None
        self.foreign = 0  # packets from other addresses
        self.flooded = 0  # packets beyond the rate
        self.malformed = 0
        self.errors = 0
        self.closed = False

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.closed:
            return
        if str(addr[0]) not in self.allowed_hosts:
            self.foreign += 1
            return
        now = time.monotonic()
        if not self.bucket.take(now):
            self.flooded += 1
            if self.flooded in (1, 1000):
                logger.warning("RTP for %s: dropping packets beyond the rate limit", self.handle.stream_id)
            return
        self.last_packet = now
        if self.paused_since is not None:
            return  # on hold: a client that keeps sending is not recorded
        try:
            self._deliver(self.jitter.push(parse_rtp(data)))
        except (AudioError, ProtocolError) as exc:
            self.malformed += 1
            self._report(exc)

    def _deliver(self, released: list[Released]) -> None:
        for item in released:
            if self.handle.closed:
                return
            if isinstance(item, Audio):
                self.handle.feed(item.samples)
            elif isinstance(item, Lost):
                self.handle.gap(item.seconds, item.cause)

    def _report(self, exc: SpoofwatchError) -> None:
        self.errors += 1
        if self.errors <= MAX_REPORTED_ERRORS:
            logger.warning("RTP for %s: %s", self.handle.stream_id, exc)
            publish_error(self.handle.pipeline, self.handle.stream_id, exc)

    def hold(self) -> None:
        if self.paused_since is None:
            self._deliver_safely(self.jitter.reset())
            self.paused_since = time.monotonic()

    def resume(self) -> None:
        if self.paused_since is not None:
            paused_s = time.monotonic() - self.paused_since
            self.paused_since = None
            self.last_packet = time.monotonic()
            if not self.handle.closed and paused_s > 0:
                self.handle.gap(paused_s, "paused")

    def _deliver_safely(self, released: list[Released]) -> None:
        try:
            self._deliver(released)
        except SpoofwatchError as exc:
            self._report(exc)

    def error_received(self, exc: Exception) -> None:  # ICMP errors from the client: ignored
        logger.debug("RTP socket for %s: %s", self.handle.stream_id, exc)

    async def close(self, reason: str | None, code: str = "stream_closed") -> None:
        if self.closed:
            return
        self.closed = True
        self._deliver_safely(self.jitter.drain())
        if self.transport is not None:
            self.transport.close()
        counters = self.jitter.counters
        if counters.lost or counters.late or self.flooded or self.foreign or self.malformed:
            logger.info(
                "RTP for %s: %d packets, %d lost, %d late, %d duplicate, %d restarts, "
                "%d over the rate, %d from other addresses, %d malformed",
                self.handle.stream_id,
                counters.received,
                counters.lost,
                counters.late,
                counters.duplicate,
                counters.restarts,
                self.flooded,
                self.foreign,
                self.malformed,
            )
        await close_stream(self.handle, reason, code)
