"""Shared helpers of the hardening tests: a served pipeline on a loopback port and
minimal clients of each protocol (ingest, Twilio, AudioHook, jambonz)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection

from fakes import FakeScorer
from spoofwatch.audio.pcm import mulaw_encode
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.events import Event, StreamEvent, parse_event
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.server import SpoofwatchServer
from spoofwatch.stream.protocols.ws_ingest import IngestLimits
from waits import scaled

T = TypeVar("T")
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)
LOCAL = ServerConfig(host="127.0.0.1", port=0)


def run(body: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(scaled(timeout_s)):
            return await body

    return asyncio.run(bounded(), debug=True)


@contextlib.asynccontextmanager
async def serving(
    config: ServerConfig = LOCAL,
    engine: EngineConfig = ENGINE,
    *,
    sample_rate: int = 16000,
    stream_config: StreamConfig = CFG,
    limits: IngestLimits | None = None,
    scorer: WindowScorer | None = None,
) -> AsyncIterator[tuple[SpoofwatchServer, Pipeline]]:
    """A Pipeline (``scorer``, else FakeScorer at ``sample_rate``) behind a started SpoofwatchServer."""
    scorer = scorer or FakeScorer(sample_rate=sample_rate, window_s=1.0)
    pipeline = Pipeline(scorer, stream_config, engine)
    worker = asyncio.create_task(pipeline.run(), name="worker")
    server = SpoofwatchServer(pipeline, replace(config, port=0), limits=limits)
    await server.start()
    try:
        yield server, pipeline
    finally:
        await server.stop()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def s16(audio: NDArray[np.float32]) -> bytes:
    return np.clip(np.rint(audio * 32768), -32768, 32767).astype("<i2").tobytes()


def start_message(stream: str, **overrides: object) -> str:
    body: dict[str, object] = {
        "type": "start",
        "stream": stream,
        "encoding": "pcm_s16le",
        "sample_rate": 16000,
        "channels": 1,
    }
    body.update(overrides)
    return json.dumps(body)


async def recv_event(ws: ClientConnection) -> Event:
    message = await ws.recv()
    assert isinstance(message, str)
    return parse_event(message)


async def events_until_end(ws: ClientConnection, stream: str) -> list[Event]:
    events: list[Event] = []
    while True:
        event = await recv_event(ws)
        events.append(event)
        if isinstance(event, StreamEvent) and event.stream == stream and event.state == "end":
            return events


async def send_audio(ws: ClientConnection, audio: NDArray[np.float32], chunk: int = 1600) -> None:
    for start in range(0, len(audio), chunk):
        await ws.send(s16(audio[start : start + chunk]))


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


async def until(condition: Any, timeout_s: float = 5.0, what: str = "condition") -> None:
    async with asyncio.timeout(scaled(timeout_s)):
        while not condition():
            await asyncio.sleep(0.01)


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, ssl_context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl_context, server_hostname="127.0.0.1" if ssl_context else None
    )
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    raw = await reader.read()
    writer.close()
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}, body


# --- Twilio ------------------------------------------------------------------------------

TWILIO_CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def twilio_start(sid: str, tracks: list[str] | None = None, params: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "event": "start",
            "streamSid": sid,
            "start": {
                "streamSid": sid,
                "callSid": "CA1",
                "tracks": tracks or ["inbound"],
                "customParameters": params or {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def twilio_media(sid: str, audio: NDArray[np.float32], track: str = "inbound") -> str:
    payload = base64.b64encode(mulaw_encode(audio).tobytes()).decode()
    return json.dumps({"event": "media", "streamSid": sid, "media": {"track": track, "payload": payload}})


# --- AudioHook ---------------------------------------------------------------------------


class AudioHookClient:
    """Genesys' side of an AudioHook session, reduced to what these tests need."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.id = str(uuid.uuid4())
        self.seq = 0
        self.serverseq = 0

    async def send(self, kind: str, parameters: dict[str, object], position_s: float = 0.0) -> None:
        self.seq += 1
        body = {
            "version": "2",
            "id": self.id,
            "type": kind,
            "seq": self.seq,
            "serverseq": self.serverseq,
            "position": f"PT{position_s:.3f}S",
            "parameters": parameters,
        }
        await self.ws.send(json.dumps(body))

    async def recv(self) -> dict[str, Any]:
        text = await self.ws.recv()
        assert isinstance(text, str)
        message: dict[str, Any] = json.loads(text)
        self.serverseq = message["seq"]
        return message

    async def open(self) -> None:
        media = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
        await self.send(
            "open",
            {
                "organizationId": str(uuid.uuid4()),
                "conversationId": str(uuid.uuid4()),
                "participant": {"id": str(uuid.uuid4()), "ani": "+1555", "aniName": "x", "dnis": "+1556"},
                "media": [media],
                "language": "en-US",
            },
        )


def stereo_pcmu(audio: NDArray[np.float32]) -> bytes:
    codes = mulaw_encode(audio)
    return np.stack([codes, codes], axis=1).tobytes()


def jambonz_metadata(call_sid: str, sample_rate: int = 8000, mix_type: str = "mono") -> str:
    return json.dumps({"callSid": call_sid, "sampleRate": sample_rate, "mixType": mix_type, "from": "+1555"})
