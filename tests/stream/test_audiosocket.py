"""Asterisk AudioSocket: the frame codec and call state machine, and the TCP server over
loopback with a client that frames audio as Asterisk's app_audiosocket does."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest
from numpy.typing import NDArray

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.errors import AudioError, ProtocolError
from spoofwatch.events import AlarmEvent, ErrorEvent, Event, ScoreEvent, StreamEvent
from spoofwatch.stream.engine.hub import Subscription
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.audiosocket_server import AudioSocketServer, run_audiosocket_server
from spoofwatch.stream.protocols.audiosocket import (
    KIND_ERROR,
    KIND_HANGUP,
    AudioSocketAudio,
    AudioSocketCall,
    AudioSocketError,
    AudioSocketFrame,
    AudioSocketHangup,
    AudioSocketId,
    AudioSocketIgnored,
    AudioSocketReader,
    audio_frame,
    encode_frame,
    error_frame,
    hangup_frame,
    uuid_frame,
)

T = TypeVar("T")
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)


def run(body: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await body

    return asyncio.run(bounded(), debug=True)


@contextlib.asynccontextmanager
async def serving(
    engine: EngineConfig = ENGINE, idle_timeout_s: float = 10.0
) -> AsyncIterator[tuple[AudioSocketServer, Pipeline, Subscription]]:
    pipeline = Pipeline(FakeScorer(sample_rate=8000, window_s=1.0), CFG, engine)
    watcher = pipeline.hub.subscribe(name="test", maxsize=10000)
    worker = asyncio.create_task(pipeline.run(), name="worker")
    server = AudioSocketServer(pipeline, "127.0.0.1", 0, idle_timeout_s=idle_timeout_s)
    await server.start()
    try:
        yield server, pipeline, watcher
    finally:
        await server.stop()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def slin(audio: NDArray[np.float32]) -> bytes:
    return np.clip(np.rint(audio * 32768), -32768, 32767).astype("<i2").tobytes()


async def asterisk_call(
    port: int, call_id: str, audio: NDArray[np.float32], *, rate: int = 8000, hangup: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, send the UUID, 20 ms audio frames and (optionally) the hangup."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(uuid_frame(call_id))
    step = rate // 50
    for start in range(0, len(audio), step):
        writer.write(audio_frame(slin(audio[start : start + step]), rate))
        await writer.drain()
    if hangup:
        writer.write(hangup_frame())
        await writer.drain()
    return reader, writer


async def frames_until_eof(reader: asyncio.StreamReader) -> list[AudioSocketFrame]:
    return AudioSocketReader().feed(await reader.read())


async def events_until_ended(watcher: Subscription, stream: str) -> list[Event]:
    events: list[Event] = []
    while not any(isinstance(e, StreamEvent) and e.stream == stream and e.state == "end" for e in events):
        events.append(await watcher.get())
    return events


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


# --- codec and state machine -----------------------------------------------------------


def test_frames_survive_any_tcp_segmentation() -> None:
    call_id = str(uuid.uuid4())
    stream = (
        uuid_frame(call_id) + audio_frame(slin(noise(0.02, 8000))) + encode_frame(0x03, b"7") + hangup_frame()
    )
    whole = AudioSocketReader().feed(stream)
    assert [f.kind for f in whole] == [0x01, 0x10, 0x03, 0x00]
    assert whole[0].payload == uuid.UUID(call_id).bytes and len(whole[1].payload) == 320
    reader, bytewise = AudioSocketReader(), []
    for index in range(len(stream)):
        bytewise += reader.feed(stream[index : index + 1])
    assert bytewise == whole and reader.pending_bytes == 0
    cut = AudioSocketReader()
    assert cut.feed(stream[:10]) == [] and cut.pending_bytes == 10
    assert encode_frame(0x10, b"\x01\x02") == b"\x10\x00\x02\x01\x02"  # big-endian length


def test_call_state_machine() -> None:
    call, call_id = AudioSocketCall(), uuid.uuid4()
    with pytest.raises(ProtocolError, match="expected the UUID frame first, found 4 bytes of audio"):
        call.receive(AudioSocketFrame(0x10, b"\x00" * 4))
    with pytest.raises(ProtocolError, match="expected a 16-byte payload, found 3 bytes"):
        call.receive(AudioSocketFrame(0x01, b"abc"))
    assert call.receive(AudioSocketFrame(0x01, call_id.bytes)) == AudioSocketId(str(call_id))
    with pytest.raises(ProtocolError, match="expected one per connection"):
        call.receive(AudioSocketFrame(0x01, call_id.bytes))
    audio = call.receive(AudioSocketFrame(0x12, struct.pack("<2h", 16384, -16384)))
    assert isinstance(audio, AudioSocketAudio) and audio.sample_rate == 16000
    np.testing.assert_array_equal(audio.samples, [0.5, -0.5])
    with pytest.raises(
        AudioError, match="expected 16000 Hz as in the call's first audio frame, found a 8000 Hz"
    ):
        call.receive(AudioSocketFrame(0x10, b"\x00\x00"))
    with pytest.raises(AudioError, match="multiple of 2, found 3"):
        call.receive(AudioSocketFrame(0x12, b"\x00" * 3))
    assert (
        call.receive(AudioSocketFrame(0x42, b"??")) == AudioSocketIgnored(0x42) and call.ignored_frames == 1
    )
    assert call.receive(AudioSocketFrame(KIND_HANGUP, b"")) == AudioSocketHangup() and call.hung_up


def test_error_frames_describe_asterisk_codes_or_carry_text() -> None:
    assert AudioSocketError(b"\x01").description == "hangup of calling party (0x01)"
    assert AudioSocketError(b"\x06").description == "frame forwarding error, memory (allocation) error (0x06)"
    assert AudioSocketError(b"full").description == "full"
    assert AudioSocketError(b"").description == "no error code"
    [frame] = AudioSocketReader().feed(error_frame("server full"))
    assert frame == AudioSocketFrame(KIND_ERROR, b"server full")
    with pytest.raises(ProtocolError, match="expected a sample rate in"):
        audio_frame(b"", 11025)


# --- over loopback ---------------------------------------------------------------------


def test_a_call_is_scored_under_its_uuid_and_ends_cleanly_on_hangup() -> None:
    call_id = str(uuid.uuid4())
    audio = np.concatenate([noise(2.0, 8000, seed=1), tone(2.0, 8000)])

    async def body() -> tuple[list[Event], bytes]:
        async with serving() as (server, pipeline, watcher):
            reader, writer = await asterisk_call(server.port, call_id, audio)
            events = await events_until_ended(watcher, call_id)
            rest = await reader.read()  # the server closes the socket after a hangup
            writer.close()
            assert not pipeline.streams
            return events, rest

    events, rest = run(body())
    assert rest == b""
    assert [e for e in of_type(events, StreamEvent) if e.state == "start"] == [
        StreamEvent(call_id, "start", 8000, "audiosocket")
    ]
    on = [a for a in of_type(events, AlarmEvent) if a.state == "on"]
    assert len(on) == 1 and 2.0 < on[0].t <= 3.5
    assert [round(s.t_end, 3) for s in of_type(events, ScoreEvent)][-1] == 4.0
    assert not of_type(events, ErrorEvent)


def test_slin16_malformed_frames_and_asterisk_errors() -> None:
    wideband, broken = str(uuid.uuid4()), str(uuid.uuid4())

    async def body() -> tuple[list[Event], list[Event], list[AudioSocketFrame]]:
        async with serving() as (server, _, watcher):
            _, writer = await asterisk_call(
                server.port, wideband, noise(1.0, 16000), rate=16000, hangup=False
            )
            writer.write(encode_frame(0x12, b"\x00" * 5))  # odd length: reported, then the call goes on
            writer.write(audio_frame(slin(noise(0.5, 16000, seed=3)), 16000))
            writer.write(encode_frame(KIND_ERROR, b"\x01"))  # Asterisk: the caller hung up
            await writer.drain()
            wide_events = await events_until_ended(watcher, wideband)
            writer.close()

            _, cut = await asterisk_call(server.port, broken, noise(1.0, 8000), hangup=False)
            cut.write(b"\x10\x01\x40" + b"\x00" * 10)  # a frame announcing 320 bytes, cut off
            await cut.drain()
            cut.close()
            cut_events = await events_until_ended(watcher, broken)

            early_reader, early = await asyncio.open_connection("127.0.0.1", server.port)
            early.write(audio_frame(slin(noise(0.02, 8000))))  # audio before the UUID
            await early.drain()
            refusal = await frames_until_eof(early_reader)
            early.close()
            return wide_events, cut_events, refusal

    wide_events, cut_events, refusal = run(body())
    assert next(e for e in of_type(wide_events, StreamEvent) if e.state == "start").sample_rate == 16000
    errors = [(e.code, e.message) for e in of_type(wide_events, ErrorEvent)]
    assert errors[0][0] == "audio_error" and "multiple of 2, found 5" in errors[0][1]
    assert errors[1:] == [
        ("protocol_error", "Asterisk reported an error: hangup of calling party (0x01)"),
        ("stream_closed", "Asterisk reported an error: hangup of calling party (0x01)"),
    ]
    assert [round(s.t_end, 3) for s in of_type(wide_events, ScoreEvent)][-1] == 1.5
    closed = [e.message for e in of_type(cut_events, ErrorEvent)]
    assert closed == ["AudioSocket connection closed mid-frame (13 bytes pending)"]
    assert [f.kind for f in refusal] == [KIND_ERROR, KIND_HANGUP]
    assert b"expected the UUID frame first" in refusal[0].payload


def test_admission_refusal_is_an_error_frame_and_a_hangup() -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    async def body() -> tuple[list[AudioSocketFrame], list[Event]]:
        async with serving(EngineConfig(max_streams=1, max_batch=8, max_wait_ms=5)) as (
            server,
            pipeline,
            watcher,
        ):
            _, live = await asterisk_call(server.port, first, noise(0.5, 8000), hangup=False)
            while first not in pipeline.streams:
                await asyncio.sleep(0.01)
            reader, writer = await asterisk_call(server.port, second, noise(0.5, 8000), hangup=False)
            frames = await frames_until_eof(reader)
            writer.close()
            live.write(hangup_frame())
            await live.drain()
            events = await events_until_ended(watcher, first)
            live.close()
            return frames, events

    frames, events = run(body())
    assert [f.kind for f in frames] == [KIND_ERROR, KIND_HANGUP]
    assert b"limit of 1 concurrent streams (1 live, this call needs 1)" in frames[0].payload
    refused = [e for e in of_type(events, ErrorEvent) if e.stream == second]
    assert refused and refused[0].code == "limit_exceeded"
    assert not [e for e in of_type(events, StreamEvent) if e.stream == second]


def test_idle_calls_time_out_and_shutdown_ends_live_calls() -> None:
    idle, live = str(uuid.uuid4()), str(uuid.uuid4())

    async def body() -> tuple[list[AudioSocketFrame], list[Event], list[Event]]:
        async with serving(idle_timeout_s=0.3) as (server, _, watcher):
            reader, writer = await asterisk_call(server.port, idle, noise(0.5, 8000), hangup=False)
            frames = await frames_until_eof(reader)  # nothing more is sent
            writer.close()
            idle_events = await events_until_ended(watcher, idle)
        pipeline = Pipeline(FakeScorer(sample_rate=8000, window_s=1.0), CFG, ENGINE)
        watcher = pipeline.hub.subscribe(name="test", maxsize=10000)
        worker = asyncio.create_task(pipeline.run())
        ready = asyncio.Event()
        probe = AudioSocketServer(pipeline, "127.0.0.1", 0)
        await probe.start()
        port = probe.port
        await probe.stop()
        serving_task = asyncio.create_task(
            run_audiosocket_server(pipeline, ServerConfig(host="127.0.0.1", audiosocket_port=port), ready)
        )
        await ready.wait()
        _, writer = await asterisk_call(port, live, noise(1.0, 8000), hangup=False)
        while live not in pipeline.streams:
            await asyncio.sleep(0.01)
        serving_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving_task
        live_events = await events_until_ended(watcher, live)
        writer.close()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        return frames, idle_events, live_events

    frames, idle_events, live_events = run(body())
    assert [f.kind for f in frames] == [
        KIND_ERROR,
        KIND_HANGUP,
    ] and b"no AudioSocket data for 0.3 s" in frames[0].payload
    assert [(e.code, e.message) for e in of_type(idle_events, ErrorEvent)] == [
        ("protocol_error", "no AudioSocket data for 0.3 s"),
        ("stream_closed", "no AudioSocket data for 0.3 s"),
    ]
    assert [e.message for e in of_type(live_events, ErrorEvent)] == ["server shutting down"]
    assert of_type(live_events, ScoreEvent)  # the live call's audio was flushed and scored
