"""The WebSocket server on a real loopback port with real ``websockets`` clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import pytest
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import streamkit
from fakes import FakeScorer, noise, tone
from spoofwatch.audio.pcm import mulaw_encode
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.events import AlarmEvent, ErrorEvent, Event, ScoreEvent, StatusEvent, StreamEvent
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.server import SpoofwatchServer, run_server
from spoofwatch.stream.protocols.ws_ingest import IngestLimits
from streamkit import events_until_end, recv_event, send_audio, start_message

T = TypeVar("T")
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)
TOKEN = "s3cret-token"


def run(body: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await body

    return asyncio.run(bounded(), debug=True)


def serving(
    engine: EngineConfig = ENGINE, token: str | None = None, limits: IngestLimits | None = None
) -> contextlib.AbstractAsyncContextManager[tuple[SpoofwatchServer, Pipeline]]:
    return streamkit.serving(replace(streamkit.LOCAL, token=token), engine, stream_config=CFG, limits=limits)


async def ingest(port: int, stream: str, audio: NDArray[np.float32]) -> list[Event]:
    async with connect(f"ws://127.0.0.1:{port}/v1/ingest") as ws:
        await ws.send(start_message(stream))
        await send_audio(ws, audio)
        await ws.send('{"type":"stop"}')
        return await events_until_end(ws, stream)


async def expect_refusal(ws: ClientConnection) -> tuple[ErrorEvent, int, str]:
    """The error event a refused client gets, then the close code and reason."""
    error = await recv_event(ws)
    assert isinstance(error, ErrorEvent)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code, closed.value.rcvd.reason


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}, body


async def until_no_streams(pipeline: Pipeline) -> None:
    """The server closes a stream after the client's close handshake has completed."""
    async with asyncio.timeout(5):
        while pipeline.streams:
            await asyncio.sleep(0.01)


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def test_ingest_returns_scores_and_an_alarm_after_the_switch_to_tone() -> None:
    async def body() -> list[Event]:
        async with serving() as (server, pipeline):
            events = await ingest(server.port, "call-1", np.concatenate([noise(4.0), tone(4.0)]))
            assert not pipeline.streams
            return events

    events = run(body())
    assert events[0] == StreamEvent("call-1", "start", 16000, "ws_ingest")
    scores = of_type(events, ScoreEvent)
    assert [s.seq for s in scores] == list(range(15))  # (8 s - 1 s) / 0.5 s + 1
    assert all(s.p_spoof < 0.5 for s in scores if s.t_end <= 4.0)
    alarms = of_type(events, AlarmEvent)
    assert alarms and alarms[0].state == "on" and 4.0 < alarms[0].t <= 6.0
    assert all(getattr(e, "stream", "call-1") == "call-1" for e in events)
    assert not of_type(events, ErrorEvent)


def test_scores_subscribers_get_all_streams_or_only_the_one_they_filter() -> None:
    async def body() -> None:
        async with serving() as (server, _):
            url = f"ws://127.0.0.1:{server.port}/v1/scores"
            async with connect(url) as everything, connect(url + "?stream=s1") as only_s1:
                # each subscriber is greeted with a status snapshot once it is subscribed
                assert isinstance(await recv_event(everything), StatusEvent)
                assert isinstance(await recv_event(only_s1), StatusEvent)
                s1, s2 = await asyncio.gather(
                    ingest(server.port, "s1", noise(3.0, seed=1)),
                    ingest(server.port, "s2", noise(3.0, seed=2)),
                )
                seen_all: list[Event] = []
                while not {"s1", "s2"} <= {
                    e.stream for e in of_type(seen_all, StreamEvent) if e.state == "end"
                }:
                    seen_all.append(await recv_event(everything))
                seen_s1 = await events_until_end(only_s1, "s1")
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):
                        seen_s1.append(await recv_event(only_s1))
        assert of_type(seen_s1, ScoreEvent) == of_type(s1, ScoreEvent)
        assert {getattr(e, "stream", None) for e in seen_s1} == {"s1"}
        for stream, own in (("s1", s1), ("s2", s2)):
            relayed = [e for e in of_type(seen_all, ScoreEvent) if e.stream == stream]
            assert relayed == of_type(own, ScoreEvent)
        assert len(of_type(s1, ScoreEvent)) == 5

    run(body())


def test_slow_subscriber_is_dropped_while_a_fast_one_gets_everything() -> None:
    async def body() -> None:
        async with serving(EngineConfig(subscriber_queue=4)) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/v1/scores"
            async with connect(url) as fast, connect(url, max_queue=1) as slow:
                for ws in (fast, slow):
                    assert isinstance(await recv_event(ws), StatusEvent)
                padding = "x" * 32768  # large events fill the socket buffers quickly
                published = 0
                while pipeline.hub.subscriber_count == 2 and published < 3000:
                    pipeline.hub.publish(ErrorEvent("bulk", "test", f"{published} {padding}"))
                    published += 1
                    got = await recv_event(fast)
                    assert isinstance(got, ErrorEvent) and got.message.startswith(f"{published - 1} ")
                assert pipeline.hub.subscriber_count == 1, "the slow subscriber was never dropped"
                for extra in range(published, published + 5):  # the fast one is unaffected
                    pipeline.hub.publish(ErrorEvent("bulk", "test", f"{extra} after"))
                    assert (await recv_event(fast)).message == f"{extra} after"  # type: ignore[union-attr]
                slow_received = 0
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await slow.recv()
                        slow_received += 1
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code in (1008, 1013)
                assert closed.value.rcvd.reason == "too slow"
                assert slow_received < published

    run(body())


def twilio_start(sid: str, tracks: list[str], params: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": sid,
            "start": {
                "streamSid": sid,
                "accountSid": "AC1",
                "callSid": "CA1",
                "tracks": tracks,
                "customParameters": params or {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


TWILIO_CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def test_twilio_both_tracks_become_two_scored_streams() -> None:
    sid = "MZ0123456789abcdef0123456789abcdef"
    inbound, outbound = noise(2.0, sample_rate=8000, seed=3), tone(2.0, sample_rate=8000)

    def media(track: str, audio: NDArray[np.float32], chunk: int) -> str:
        frame = audio[(chunk - 1) * 160 : chunk * 160]
        payload = base64.b64encode(mulaw_encode(frame).tobytes()).decode()
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(chunk + 2),
                "streamSid": sid,
                "media": {
                    "track": track,
                    "chunk": str(chunk),
                    "timestamp": str(20 * chunk),
                    "payload": payload,
                },
            }
        )

    async def body() -> list[Event]:
        async with serving() as (server, pipeline):
            async with connect(f"ws://127.0.0.1:{server.port}/v1/scores") as watcher:
                assert isinstance(await recv_event(watcher), StatusEvent)
                async with connect(f"ws://127.0.0.1:{server.port}/twilio") as twilio:
                    await twilio.send(TWILIO_CONNECTED)
                    await twilio.send(twilio_start(sid, ["inbound", "outbound"]))
                    for chunk in range(1, 101):  # 100 x 20 ms per track, interleaved
                        await twilio.send(media("inbound", inbound, chunk))
                        await twilio.send(media("outbound", outbound, chunk))
                    await twilio.send(
                        json.dumps(
                            {
                                "event": "stop",
                                "sequenceNumber": "203",
                                "streamSid": sid,
                                "stop": {"accountSid": "AC1", "callSid": "CA1"},
                            }
                        )
                    )
                    events: list[Event] = []
                    while len([e for e in of_type(events, StreamEvent) if e.state == "end"]) < 2:
                        events.append(await recv_event(watcher))
                    with pytest.raises(TimeoutError):  # nothing is sent back to Twilio
                        async with asyncio.timeout(0.2):
                            await twilio.recv()
            assert not pipeline.streams
            return events

    events = run(body())
    ids = (f"{sid}:inbound", f"{sid}:outbound")
    starts = [e for e in of_type(events, StreamEvent) if e.state == "start"]
    assert sorted(starts, key=lambda e: e.stream) == [StreamEvent(i, "start", 8000, "twilio") for i in ids]
    for stream_id in ids:
        scores = [e for e in of_type(events, ScoreEvent) if e.stream == stream_id]
        assert [round(s.t_end, 3) for s in scores] == [1.0, 1.5, 2.0]
    assert not of_type(events, ErrorEvent)


def test_token_is_required_on_every_path() -> None:
    async def body() -> None:
        async with serving(token=TOKEN) as (server, pipeline):
            base = f"ws://127.0.0.1:{server.port}"
            for url, headers in [
                (f"{base}/v1/scores", None),
                (f"{base}/v1/scores", {"Authorization": "Bearer wrong"}),
                (f"{base}/v1/scores?token=wrong", None),
                (f"{base}/v1/ingest", {"Authorization": f"Basic {TOKEN}"}),
            ]:
                async with connect(url, additional_headers=headers) as ws:
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, url
                    assert "unauthorized" in closed.value.rcvd.reason
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with connect(f"{base}/v1/scores", additional_headers=bearer) as ws:
                assert isinstance(await recv_event(ws), StatusEvent)
            async with connect(f"{base}/v1/scores?token={TOKEN}") as ws:
                assert isinstance(await recv_event(ws), StatusEvent)
            async with connect(f"{base}/v1/ingest?token={TOKEN}") as ws:
                await ws.send(start_message("authed"))
                assert await recv_event(ws) == StreamEvent("authed", "start", 16000, "ws_ingest")

            # Twilio cannot send a header or query token: it comes as a <Parameter> in start
            async with connect(f"{base}/twilio") as twilio:
                await twilio.send(TWILIO_CONNECTED)
                await twilio.send(twilio_start("MZwrong", ["inbound"], {"token": "wrong"}))
                with pytest.raises(ConnectionClosed) as closed:
                    await twilio.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            async with connect(f"{base}/twilio") as twilio:
                await twilio.send('{"event":"media","streamSid":"MZx","media":{"payload":""}}')
                with pytest.raises(ConnectionClosed) as closed:
                    await twilio.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert not pipeline.streams
            async with connect(f"{base}/twilio") as twilio:
                await twilio.send(TWILIO_CONNECTED)
                await twilio.send(twilio_start("MZright", ["inbound"], {"token": TOKEN}))
                await twilio.send('{"event":"media","streamSid":"MZright","media":{"payload":"//8="}}')
                async with asyncio.timeout(5):
                    while "MZright" not in pipeline.streams:
                        await asyncio.sleep(0.01)

            status, headers_out, _ = await http_get(server.port, "/healthz")
            assert status == 401 and headers_out["www-authenticate"].startswith("Bearer")
            assert (await http_get(server.port, "/healthz?token=wrong"))[0] == 401
            status, headers_out, payload = await http_get(server.port, f"/healthz?token={TOKEN}")
            assert status == 200 and headers_out["content-type"] == "application/json"
            assert json.loads(payload)["status"] == "ok"
            status, _, _ = await http_get(server.port, "/", {"Authorization": f"Bearer {TOKEN}"})
            assert status == 200

    run(body())


def test_http_routes_without_token() -> None:
    async def body() -> None:
        async with serving() as (server, _):
            async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws:
                await ws.send(start_message("live-1"))
                await recv_event(ws)
                status, headers, payload = await http_get(server.port, "/healthz")
                health = json.loads(payload)
                assert status == 200 and headers["content-type"] == "application/json"
                assert health["status"] == "ok" and health["streams"] == 1 and health["max_streams"] == 64
            status, headers, payload = await http_get(server.port, "/")
            assert status == 200 and headers["content-type"].startswith("text/html")
            assert b"spoofwatch" in payload
            status, _, payload = await http_get(server.port, "/nope")
            assert status == 404 and b"/nope" in payload

    run(body())


def test_malformed_input_gets_clear_errors_and_leaves_other_streams_alone() -> None:
    limits = IngestLimits(max_frame_bytes=65536)

    async def body() -> tuple[list[Event], list[Event]]:
        async with serving(limits=limits) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/v1/ingest"
            async with connect(url) as good:
                await good.send(start_message("good"))
                good_events = [await recv_event(good)]
                good_audio = noise(4.0, seed=5)
                await send_audio(good, good_audio[:32000])

                refusals = []
                for first in [
                    "not json",
                    start_message("bad", encoding="mp3"),
                    start_message("bad", sample_rate=4000),
                    start_message("good"),  # duplicate of a live stream
                ]:
                    async with connect(url) as bad:
                        await bad.send(first)
                        refusals.append(await expect_refusal(bad))
                async with connect(url) as bad:
                    await bad.send(b"\x00\x00")
                    refusals.append(await expect_refusal(bad))
                codes = [(e.code, code) for e, code, _ in refusals]
                assert codes == [("protocol_error", 1008)] * 5
                messages = [e.message for e, _, _ in refusals]
                assert "expected a JSON object" in messages[0]
                assert "expected 'encoding' to be one of" in messages[1] and "found 'mp3'" in messages[1]
                assert "8000..48000 Hz, found 4000" in messages[2]
                assert "already live" in messages[3]
                assert "expected a start message before audio" in messages[4]
                assert "found 'mp3'" in refusals[1][2]  # the close reason says why too

                async with connect(url) as odd:
                    await odd.send(start_message("odd"))
                    await odd.send(b"\x00\x01\x02")
                    await odd.send('{"type":"pause"}')
                    await odd.send(b"\x00" * (limits.max_frame_bytes + 2))
                    await odd.send(start_message("second"))
                    await send_audio(odd, noise(2.0, seed=6))  # the stream still works
                    await odd.send('{"type":"stop"}')
                    odd_events = await events_until_end(odd, "odd")

                await send_audio(good, good_audio[32000:])
                await good.send('{"type":"stop"}')
                good_events += await events_until_end(good, "good")
            assert not pipeline.streams
            return good_events, odd_events

    good_events, odd_events = run(body())
    errors = of_type(odd_events, ErrorEvent)
    assert [(e.stream, e.code) for e in errors] == [
        ("odd", "audio_error"),
        ("odd", "protocol_error"),
        ("odd", "limit_exceeded"),
        ("odd", "protocol_error"),
    ]
    assert "multiple of 2, found 3" in errors[0].message
    assert "expected type 'start', 'stop' or 'gap', found 'pause'" in errors[1].message
    assert "expected at most 65536 bytes, found 65538" in errors[2].message
    assert "while stream 'odd' is live" in errors[3].message
    assert len(of_type(odd_events, ScoreEvent)) == 3
    assert not of_type(good_events, ErrorEvent)
    assert [s.seq for s in of_type(good_events, ScoreEvent)] == list(range(7))


def test_client_vanishing_mid_stream_frees_the_stream() -> None:
    async def body() -> list[Event]:
        async with serving() as (server, pipeline):
            async with connect(f"ws://127.0.0.1:{server.port}/v1/scores?stream=gone") as watcher:
                assert isinstance(await recv_event(watcher), StatusEvent)
                ws = await connect(f"ws://127.0.0.1:{server.port}/v1/ingest")
                await ws.send(start_message("gone"))
                await send_audio(ws, noise(1.5))
                await recv_event(ws)
                assert "gone" in pipeline.streams
                ws.transport.abort()  # no close frame: the TCP connection just drops
                events = await events_until_end(watcher, "gone")
            assert not pipeline.streams
            return events

    events = run(body())
    errors = of_type(events, ErrorEvent)
    assert [(e.code, e.message) for e in errors] == [("stream_closed", "client disconnected before stop")]
    assert len(of_type(events, ScoreEvent)) >= 1


def test_admission_limit_refuses_with_a_reason_and_frees_on_stop() -> None:
    async def body() -> None:
        async with serving(EngineConfig(max_streams=1, max_batch=8, max_wait_ms=5)) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/v1/ingest"
            async with connect(url) as first:
                await first.send(start_message("a"))
                await recv_event(first)
                async with connect(url) as second:
                    await second.send(start_message("b"))
                    error, code, reason = await expect_refusal(second)
                assert error.code == "limit_exceeded" and error.stream == "b"
                assert "limit of 1 concurrent streams" in error.message
                assert code == 1013 and "limit of 1" in reason
                await first.send('{"type":"stop"}')
                await events_until_end(first, "a")
                # the same connection may start another stream once the first has ended
                await first.send(start_message("c"))
                assert await recv_event(first) == StreamEvent("c", "start", 16000, "ws_ingest")
            await until_no_streams(pipeline)

    run(body())


def test_run_server_serves_until_cancelled_and_closes_live_streams() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def body() -> None:
        pipeline = Pipeline(FakeScorer(window_s=1.0), CFG, ENGINE)
        worker = asyncio.create_task(pipeline.run(), name="worker")
        ready = asyncio.Event()
        serving_task = asyncio.create_task(
            run_server(pipeline, ServerConfig(port=port), ready), name="server"
        )
        await ready.wait()
        async with connect(f"ws://127.0.0.1:{port}/v1/ingest") as ws:
            await ws.send(start_message("live"))
            await recv_event(ws)
            serving_task.cancel()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        with pytest.raises(asyncio.CancelledError):
            await serving_task
        assert not pipeline.streams
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    run(body())
