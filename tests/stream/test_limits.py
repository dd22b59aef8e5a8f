"""Configurable limits: each one closes the offending stream with a clear ``limit_exceeded``
error event, and the other streams keep going."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fakes import FakeScorer, noise
from spoofwatch.config import EngineConfig, ServerConfig, load_settings
from spoofwatch.errors import ConfigError, LimitExceededError
from spoofwatch.events import ErrorEvent, Event, ScoreEvent, StatusEvent, StreamEvent
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.audiosocket_server import AudioSocketServer
from spoofwatch.stream.net.limits import ConnectionGuard, ConnectionLimits, TokenBucket
from spoofwatch.stream.protocols.audiosocket import AudioSocketReader, audio_frame, uuid_frame
from streamkit import (
    CFG,
    ENGINE,
    LOCAL,
    TWILIO_CONNECTED,
    AudioHookClient,
    events_until_end,
    jambonz_metadata,
    of_type,
    recv_event,
    run,
    s16,
    send_audio,
    serving,
    start_message,
    stereo_pcmu,
    twilio_media,
    twilio_start,
    until,
)

SLOW = replace(LOCAL, max_messages_per_s=20.0, max_message_burst=10)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- pure ----------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.05) is False  # half a token back
    assert bucket.take(0.1) is True
    assert bucket.take(10.0) and bucket.tokens == pytest.approx(4.0)  # refills only up to the burst
    assert bucket.take(5.0) and bucket.tokens == pytest.approx(3.0)  # a clock stepping back adds nothing


def test_connection_guard_counts_messages_and_streams() -> None:
    clock = FakeClock()
    guard = ConnectionGuard(
        ConnectionLimits(max_messages_per_s=2.0, max_message_burst=2, max_streams_per_connection=3), clock
    )
    guard.on_message()
    guard.on_message()
    with pytest.raises(LimitExceededError, match=r"at most 2 messages/s \(bursts of 2\)"):
        guard.on_message()
    clock.now += 0.5
    guard.on_message()
    guard.on_stream_opened(2)
    with pytest.raises(LimitExceededError, match="at most 3, found 2 opened and 2 more requested"):
        guard.on_stream_opened(2)
    guard.on_stream_opened(1)
    unlimited = ConnectionGuard(ConnectionLimits(max_streams_per_connection=0), clock)
    unlimited.on_stream_opened(10_000)
    assert unlimited.streams_opened == 10_000


def test_limits_are_configurable_and_validated() -> None:
    settings = load_settings(
        env={
            "SPOOFWATCH_ENGINE_MAX_STREAM_S": "600",
            "SPOOFWATCH_SERVER_MAX_MESSAGES_PER_S": "50",
            "SPOOFWATCH_SERVER_MAX_MESSAGE_BURST": "100",
            "SPOOFWATCH_SERVER_MAX_MESSAGE_BYTES": "65536",
            "SPOOFWATCH_SERVER_MAX_STREAMS_PER_CONNECTION": "4",
        }
    )
    assert settings.engine.max_stream_s == 600.0
    limits = ConnectionLimits.from_config(settings.server)
    assert limits == ConnectionLimits(65536, 50.0, 100, 4)
    defaults = ServerConfig()
    assert (defaults.max_message_bytes, defaults.max_messages_per_s, defaults.max_message_burst) == (
        1 << 20,
        500.0,
        1000,
    )
    assert EngineConfig().max_stream_s == 4 * 3600.0
    for bad in (
        {"max_messages_per_s": 0.0},
        {"max_message_burst": 0},
        {"max_message_bytes": 10},
        {"max_streams_per_connection": -1},
    ):
        with pytest.raises(ConfigError, match=f"server.{next(iter(bad))}: expected"):
            ServerConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_stream_s"):
        EngineConfig(max_stream_s=float("nan"))
    with pytest.raises(ConfigError, match="max_stream_s"):
        load_settings(env={"SPOOFWATCH_ENGINE_MAX_STREAM_S": "-1"})


# --- over the wire --------------------------------------------------------------------


async def good_stream(port: int, stream: str, seconds: float = 3.0) -> list[Event]:
    """A well-behaved ingest client, paced a little so it overlaps the misbehaving one."""
    async with connect(f"ws://127.0.0.1:{port}/v1/ingest") as ws:
        await ws.send(start_message(stream))
        audio = noise(seconds, seed=7)
        for start in range(0, len(audio), 4000):  # 12 frames of 0.25 s at 20/s
            await ws.send(s16(audio[start : start + 4000]))
            await asyncio.sleep(0.05)
        await ws.send('{"type":"stop"}')
        return await events_until_end(ws, stream)


def test_a_too_fast_ingest_client_is_cut_off_while_another_stream_goes_on() -> None:
    async def flood(port: int) -> tuple[list[Event], int, str]:
        events: list[Event] = []
        async with connect(f"ws://127.0.0.1:{port}/v1/ingest") as ws:
            await ws.send(start_message("flood"))
            events.append(await recv_event(ws))
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(200):
                    await ws.send(s16(noise(0.01)))
                while True:
                    events.append(await recv_event(ws))
        assert closed.value.rcvd is not None
        return events, closed.value.rcvd.code, closed.value.rcvd.reason

    async def body() -> tuple[list[Event], list[Event], tuple[list[Event], int, str]]:
        async with serving(SLOW) as (server, pipeline):
            watcher = pipeline.hub.subscribe("flood")
            good, flooded = await asyncio.gather(good_stream(server.port, "good"), flood(server.port))
            await until(lambda: not pipeline.streams)
            seen: list[Event] = []
            while not watcher.queue.empty():
                seen.append(watcher.queue.get_nowait())
            return good, seen, flooded

    good, hub_events, (flood_events, code, reason) = run(body())
    assert code == 1008 and "message rate" in reason
    sent_back = of_type(flood_events, ErrorEvent)
    assert [e.code for e in sent_back] == ["limit_exceeded"]
    assert "at most 20 messages/s" in sent_back[0].message
    ended = [(e.code, e.stream) for e in of_type(hub_events, ErrorEvent)]
    assert ended == [("limit_exceeded", "flood")]
    assert [e.state for e in of_type(hub_events, StreamEvent)] == ["start", "end"]
    assert not of_type(good, ErrorEvent)
    assert [s.t_end for s in of_type(good, ScoreEvent)] == [1.0, 1.5, 2.0, 2.5, 3.0]


def test_stream_duration_limit_ends_that_stream_only() -> None:
    async def body() -> tuple[list[Event], list[Event], list[Event]]:
        async with serving(engine=replace(ENGINE, max_stream_s=2.0)) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/v1/ingest"
            async with connect(url) as long_ws, connect(url) as short_ws:
                await long_ws.send(start_message("long"))
                await short_ws.send(start_message("short"))
                await send_audio(short_ws, noise(1.5, seed=2))
                await send_audio(long_ws, noise(3.5, seed=1))  # 1.5 s over the limit
                long_events = await events_until_end(long_ws, "long")
                assert "long" not in pipeline.streams
                await send_audio(long_ws, noise(0.5))  # after the end: dropped quietly
                await long_ws.send('{"type":"stop"}')
                await long_ws.send(start_message("long-2"))  # the connection may go on
                await send_audio(long_ws, noise(1.0))
                await long_ws.send('{"type":"stop"}')
                next_events = await events_until_end(long_ws, "long-2")
                await send_audio(short_ws, noise(0.5, seed=3))
                await short_ws.send('{"type":"stop"}')
                short_events = await events_until_end(short_ws, "short")
            return long_events, next_events, short_events

    long_events, next_events, short_events = run(body())
    errors = of_type(long_events, ErrorEvent)
    assert [e.code for e in errors] == ["limit_exceeded"]
    assert "expected at most 2 s of audio per stream" in errors[0].message
    assert [s.t_end for s in of_type(long_events, ScoreEvent)] == [1.0, 1.5, 2.0]  # nothing past 2 s
    assert isinstance(long_events[-1], StreamEvent) and long_events[-1].state == "end"
    assert not of_type(next_events, ErrorEvent) and len(of_type(next_events, ScoreEvent)) == 1
    assert not of_type(short_events, ErrorEvent)
    assert [s.t_end for s in of_type(short_events, ScoreEvent)] == [1.0, 1.5, 2.0]


def test_duration_limit_in_the_pipeline_counts_dropped_audio_and_spares_trusted_sources() -> None:
    async def body() -> tuple[int, int, list[Event]]:
        pipeline = Pipeline(FakeScorer(), CFG, replace(ENGINE, max_stream_s=1.0))
        worker = asyncio.create_task(pipeline.run())
        sub = pipeline.hub.subscribe()
        limited = pipeline.open_stream("net", source="test", sample_rate=8000)  # resampled
        local = pipeline.open_stream("mic", source="test", sample_rate=16000, trusted=True)
        for _ in range(3):
            limited.feed(noise(0.7, 8000))
            local.feed(noise(0.7))
        await until(lambda: "net" not in pipeline.streams)
        await local.close()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        events = []
        while not sub.queue.empty():
            events.append(sub.queue.get_nowait())
        return limited.input_samples, limited.ignored_samples, events

    accepted, ignored, events = run(body())
    assert (accepted, ignored) == (8000, 3 * 5600 - 8000)
    assert [(e.stream, e.code) for e in of_type(events, ErrorEvent)] == [("net", "limit_exceeded")]
    assert [round(s.t_end, 3) for s in of_type(events, ScoreEvent) if s.stream == "mic"] == [1.0, 1.5, 2.0]


def test_streams_per_connection_limit() -> None:
    async def body() -> tuple[list[Event], int]:
        config = replace(LOCAL, max_streams_per_connection=2)
        async with serving(config) as (server, pipeline):
            async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws:
                for stream in ("one", "two"):
                    await ws.send(start_message(stream))
                    await send_audio(ws, noise(1.0))
                    await ws.send('{"type":"stop"}')
                    await events_until_end(ws, stream)
                await ws.send(start_message("three"))
                refusal = [await recv_event(ws)]
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert "three" not in pipeline.streams
            assert closed.value.rcvd is not None
            return refusal, closed.value.rcvd.code

    refusal, code = run(body())
    assert code == 1008
    error = refusal[0]
    assert isinstance(error, ErrorEvent) and error.code == "limit_exceeded"
    assert "streams per connection: expected at most 2" in error.message


def test_a_message_far_over_the_size_limit_ends_the_stream_with_the_reason() -> None:
    config = replace(LOCAL, max_message_bytes=4096)

    async def body() -> tuple[list[Event], int]:
        async with serving(config) as (server, pipeline):
            watcher = pipeline.hub.subscribe("big")
            async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest", max_size=None) as ws:
                await ws.send(start_message("big"))
                await ws.send(b"\x00" * 6000)  # over the frame limit: dropped with an error
                dropped = await recv_event(ws)
                await ws.send(s16(noise(0.1)))
                await ws.send(b"\x00" * 9000)  # over twice the limit: the connection ends
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
            await until(lambda: not pipeline.streams)
            seen: list[Event] = [dropped]
            while not watcher.queue.empty():
                seen.append(watcher.queue.get_nowait())
            assert closed.value.rcvd is not None
            return seen, closed.value.rcvd.code

    seen, code = run(body())
    assert code == 1009
    errors = [(e.code, e.message) for e in of_type(seen, ErrorEvent)]
    assert errors[0][0] == "limit_exceeded" and "expected at most 4096 bytes, found 6000" in errors[0][1]
    assert errors[-1][0] == "limit_exceeded"
    assert "expected at most 8192 bytes per WebSocket message" in errors[-1][1]


def test_twilio_jambonz_and_audiohook_floods_end_their_calls_with_limit_exceeded() -> None:
    async def twilio(port: int) -> int:
        async with connect(f"ws://127.0.0.1:{port}/twilio") as ws:
            await ws.send(TWILIO_CONNECTED)
            await ws.send(twilio_start("MZflood"))
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100):
                    await ws.send(twilio_media("MZflood", noise(0.02, 8000)))
                await ws.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code

    async def jambonz(port: int) -> int:
        async with connect(f"ws://127.0.0.1:{port}/jambonz") as ws:
            await ws.send(jambonz_metadata("CAflood"))
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100):
                    await ws.send(s16(noise(0.02, 8000)))
                await ws.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code

    async def audiohook(port: int) -> tuple[int, str]:
        async with connect(f"ws://127.0.0.1:{port}/audiohook") as ws:
            client = AudioHookClient(ws)
            await client.open()
            assert (await client.recv())["type"] == "opened"
            disconnect = ""
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100):
                    await ws.send(stereo_pcmu(noise(0.02, 8000)))
                while True:
                    disconnect = (await client.recv())["parameters"].get("info", "")
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, disconnect

    async def body() -> tuple[list[int], str, list[Event]]:
        async with serving(SLOW, sample_rate=8000) as (server, pipeline):
            sub = pipeline.hub.subscribe()
            twilio_code, jambonz_code, (audiohook_code, info) = await asyncio.gather(
                twilio(server.port), jambonz(server.port), audiohook(server.port)
            )
            await until(lambda: not pipeline.streams)
            events: list[Event] = []
            while not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            return [twilio_code, jambonz_code, audiohook_code], info, events

    codes, info, events = run(body())
    assert codes == [1008, 1008, 1008]
    assert "message rate" in info  # AudioHook hears why in its own disconnect message first
    audiohook_streams = {e.stream for e in of_type(events, StreamEvent) if e.source == "audiohook"}
    assert len(audiohook_streams) == 2
    for stream in ("MZflood", "CAflood", *audiohook_streams):
        codes = [e.code for e in of_type(events, ErrorEvent) if e.stream == stream]
        assert codes and set(codes) == {"limit_exceeded"}, (stream, codes)
        assert [e.state for e in of_type(events, StreamEvent) if e.stream == stream] == ["start", "end"]
    assert isinstance(events[-1], StatusEvent) and events[-1].streams == 0


def test_audiosocket_flood_is_refused_with_an_error_frame() -> None:
    call = str(uuid.uuid4())
    limits = ConnectionLimits(max_messages_per_s=20.0, max_message_burst=10)

    async def body() -> tuple[list[int], list[Event]]:
        pipeline = Pipeline(FakeScorer(sample_rate=8000), CFG, ENGINE)
        worker = asyncio.create_task(pipeline.run())
        sub = pipeline.hub.subscribe()
        server = AudioSocketServer(pipeline, port=0, limits=limits)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(uuid_frame(call))
        for _ in range(40):
            writer.write(audio_frame(s16(noise(0.02, 8000))))
        await writer.drain()
        frames = AudioSocketReader()
        kinds: list[int] = []
        while data := await reader.read(65536):
            kinds += [f.kind for f in frames.feed(data)]
        writer.close()
        await until(lambda: not pipeline.streams)
        await server.stop()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        events: list[Event] = []
        while not sub.queue.empty():
            events.append(sub.queue.get_nowait())
        return kinds, events

    kinds, events = run(body())
    assert kinds == [0xFF, 0x00]  # error, hangup
    codes = [(e.stream, e.code) for e in of_type(events, ErrorEvent)]
    assert set(codes) == {(call, "limit_exceeded")}


def test_a_subscriber_flooding_the_server_is_closed() -> None:
    async def body() -> tuple[int, int]:
        async with serving(SLOW) as (server, pipeline):
            async with connect(f"ws://127.0.0.1:{server.port}/v1/scores") as ws:
                assert isinstance(await recv_event(ws), StatusEvent)
                with pytest.raises(ConnectionClosed) as closed:
                    for _ in range(100):
                        await ws.send("hello?")
                    while True:
                        await ws.recv()
            await until(lambda: pipeline.hub.subscriber_count == 0)
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, pipeline.hub.subscriber_count

    assert run(body()) == (1008, 0)


def test_audio_arriving_far_faster_than_real_time_ends_that_stream() -> None:
    engine = replace(ENGINE, max_speed=2.0, max_speed_burst_s=3.0)

    async def body() -> tuple[list[Event], list[Event], int]:
        async with serving(engine=engine) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/v1/ingest"
            local = pipeline.open_stream("local-file", source="test", sample_rate=16000, trusted=True)
            local.feed(noise(10.0))  # local sources may replay as fast as they like
            async with connect(url) as fast, connect(url) as paced:
                await fast.send(start_message("fast"))
                await paced.send(start_message("paced"))
                await send_audio(fast, noise(6.0, seed=1))  # 6 s at once: 3 s burst, then 2x
                fast_events = await events_until_end(fast, "fast")
                for start in range(0, 32000, 8000):  # 2 s of audio over ~1.2 s: within 2x
                    await paced.send(s16(noise(2.0, seed=2)[start : start + 8000]))
                    await asyncio.sleep(0.3)
                await paced.send('{"type":"stop"}')
                paced_events = await events_until_end(paced, "paced")
            await local.close()
            return fast_events, paced_events, local.ignored_samples

    fast_events, paced_events, local_ignored = run(body())
    errors = of_type(fast_events, ErrorEvent)
    assert [e.code for e in errors] == ["limit_exceeded"]
    assert "expected audio at most 2x as fast as real time after a 3 s burst" in errors[0].message
    assert 1 <= len(of_type(fast_events, ScoreEvent)) <= 5  # only what came within the burst
    assert not of_type(paced_events, ErrorEvent) and len(of_type(paced_events, ScoreEvent)) == 3
    assert local_ignored == 0
