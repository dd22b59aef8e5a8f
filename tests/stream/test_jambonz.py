"""jambonz ``listen`` / mod_audio_fork: the pure parser, and ``/jambonz`` over loopback with a
client that connects as jambonz does (subprotocol, one JSON metadata frame, binary L16)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

import streamkit
from fakes import noise, tone
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import AudioError, ProtocolError
from spoofwatch.events import AlarmEvent, ErrorEvent, Event, ScoreEvent, StatusEvent, StreamEvent, parse_event
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.server import SpoofwatchServer
from spoofwatch.stream.protocols.jambonz import JambonzStart, JambonzStream, JambonzText

T = TypeVar("T")
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)
JAMBONZ = [Subprotocol("audio.jambonz.org")]


def run(body: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await body

    return asyncio.run(bounded(), debug=True)


def serving(
    engine: EngineConfig = ENGINE,
) -> contextlib.AbstractAsyncContextManager[tuple[SpoofwatchServer, Pipeline]]:
    return streamkit.serving(streamkit.LOCAL, engine, sample_rate=8000, stream_config=CFG)


def metadata(call_sid: str = "call-1", **extra: object) -> str:
    body: dict[str, object] = {
        "callSid": call_sid,
        "from": "+15551230000",
        "to": "+15559990000",
        "direction": "inbound",
        "sampleRate": 8000,
        "mixType": "stereo",
    }
    body.update(extra)
    return json.dumps(body)


def l16(*channels: NDArray[np.float32]) -> bytes:
    stacked = np.stack(channels, axis=1)
    return np.clip(np.rint(stacked * 32768), -32768, 32767).astype("<i2").tobytes()


async def send_l16(ws: ClientConnection, *channels: NDArray[np.float32], frame: int = 160) -> None:
    for start in range(0, len(channels[0]), frame):
        await ws.send(l16(*(c[start : start + frame] for c in channels)))


async def watch(port: int) -> ClientConnection:
    watcher = await connect(f"ws://127.0.0.1:{port}/v1/scores")
    assert isinstance(parse_event(await watcher.recv()), StatusEvent)
    return watcher


async def events_until_ended(watcher: ClientConnection, streams: set[str]) -> list[Event]:
    events: list[Event] = []
    while not streams <= {e.stream for e in events if isinstance(e, StreamEvent) and e.state == "end"}:
        events.append(parse_event(await watcher.recv()))
    return events


async def refusal(ws: ClientConnection) -> tuple[dict[str, Any], int, str]:
    """mod_audio_fork's error message, then the close code and reason."""
    text = await ws.recv()
    assert isinstance(text, str)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    return json.loads(text), closed.value.rcvd.code, closed.value.rcvd.reason


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


# --- the pure parser -------------------------------------------------------------------


def test_jambonz_metadata_and_stereo_frames() -> None:
    parser = JambonzStream()
    start = parser.receive_text(metadata("CA9", metadata={"queue": "billing"}))
    assert isinstance(start, JambonzStart)
    assert (start.call_id, start.sample_rate, start.mix_type) == ("CA9", 8000, "stereo")
    assert start.stream_ids == ("CA9:caller", "CA9:callee") and start.parties == ("caller", "callee")
    assert start.metadata["metadata"] == {"queue": "billing"}
    caller, callee = parser.receive_binary(
        l16(np.array([0.5, 0.25], np.float32), np.array([-0.5, 0], np.float32))
    )
    assert (caller.stream_id, callee.stream_id) == ("CA9:caller", "CA9:callee")
    np.testing.assert_array_equal(caller.samples, [0.5, 0.25])
    np.testing.assert_array_equal(callee.samples, [-0.5, 0.0])
    with pytest.raises(AudioError, match=r"stereo L16 frame: .*multiple of 4, found 6"):
        parser.receive_binary(b"\x00" * 6)
    assert parser.receive_text('{"event":"dtmf","dtmf":"5"}') == JambonzText({"event": "dtmf", "dtmf": "5"})
    assert parser.receive_text("bye") == JambonzText("bye")


def test_mod_audio_fork_settings_may_come_from_the_query() -> None:
    parser = JambonzStream({"sampleRate": "16k", "mixType": "mono"}, fallback_id="generated")
    start = parser.receive_text('{"uuid": "fs-uuid-1", "agent": "42"}')
    assert isinstance(start, JambonzStart)
    assert (start.stream_ids, start.sample_rate, start.parties) == (("fs-uuid-1",), 16000, ("mono",))
    anonymous = JambonzStream({"sampleRate": "8000", "mixType": "mixed"}, fallback_id="generated")
    start = anonymous.receive_text("{}")
    assert isinstance(start, JambonzStart) and start.stream_ids == ("generated",)
    [mixed] = anonymous.receive_binary(l16(np.array([0.125, -0.125], np.float32)))
    assert mixed.party == "mixed" and len(mixed.samples) == 2


@pytest.mark.parametrize(
    ("query", "text", "expected"),
    [
        ({}, '{"callSid": "x"}', "expected 'sampleRate' (in the metadata or the URL query), found neither"),
        ({}, metadata(sampleRate=11025), "expected a sample rate in [8000, 16000, 24000"),
        ({}, metadata(sampleRate="fast"), "found 'fast'"),
        ({}, metadata(mixType="quad"), "expected one of ['mono', 'mixed', 'stereo'], found 'quad'"),
        ({}, "[1, 2]", "expected a JSON object, found list"),
        ({}, "hello", "expected a JSON object, found invalid JSON"),
        ({}, metadata("x" * 300), "expected 1..190 characters"),
    ],
)
def test_bad_metadata_is_refused_with_the_reason(query: dict[str, str], text: str, expected: str) -> None:
    with pytest.raises(ProtocolError) as error:
        JambonzStream(query).receive_text(text)
    assert expected in str(error.value)


def test_audio_before_metadata_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="expected the JSON metadata text frame first, found a 4-byte"):
        JambonzStream().receive_binary(b"\x00" * 4)


# --- over loopback ---------------------------------------------------------------------


def test_stereo_call_scores_caller_and_callee_separately() -> None:
    caller = np.concatenate([noise(2.0, 8000, seed=1), tone(3.0, 8000)])
    callee = noise(5.0, 8000, seed=2)

    async def body() -> tuple[str | None, list[Event]]:
        async with serving() as (server, pipeline):
            watcher = await watch(server.port)
            async with connect(f"ws://127.0.0.1:{server.port}/jambonz", subprotocols=JAMBONZ) as ws:
                subprotocol = ws.subprotocol
                await ws.send(metadata("CA42"))
                await send_l16(ws, caller, callee)
            events = await events_until_ended(watcher, {"CA42:caller", "CA42:callee"})
            await watcher.close()
            assert not pipeline.streams
            return subprotocol, events

    subprotocol, events = run(body())
    assert subprotocol == "audio.jambonz.org"
    starts = sorted(
        (e.stream, e.sample_rate, e.source) for e in of_type(events, StreamEvent) if e.state == "start"
    )
    assert starts == [("CA42:callee", 8000, "jambonz"), ("CA42:caller", 8000, "jambonz")]
    on = [a for a in of_type(events, AlarmEvent) if a.state == "on"]
    assert [a.stream for a in on] == ["CA42:caller"] and 2.0 < on[0].t <= 4.0
    for stream in ("CA42:caller", "CA42:callee"):
        assert [round(s.t_end, 3) for s in of_type(events, ScoreEvent) if s.stream == stream][-1] == 5.0
    assert not of_type(events, ErrorEvent)  # a normal close ends the call without a reason


def test_mod_audio_fork_mono_16k_with_query_settings_and_a_bad_frame() -> None:
    async def body() -> list[Event]:
        async with serving() as (server, _):
            watcher = await watch(server.port)
            url = f"ws://127.0.0.1:{server.port}/jambonz?sampleRate=16k&mixType=mono"
            async with connect(url, subprotocols=[Subprotocol("audio.drachtio.org")]) as ws:
                assert ws.subprotocol == "audio.drachtio.org"
                await ws.send('{"uuid": "fs-1", "caller": "1000"}')
                await send_l16(ws, noise(1.0, 16000), frame=320)
                await ws.send(b"\x01\x02\x03")  # a broken frame is reported; the call goes on
                await send_l16(ws, noise(1.0, 16000, seed=5), frame=320)
                await ws.send('{"event": "stop"}')
            events = await events_until_ended(watcher, {"fs-1"})
            await watcher.close()
            return events

    events = run(body())
    assert [e for e in of_type(events, StreamEvent) if e.state == "start"] == [
        StreamEvent("fs-1", "start", 16000, "jambonz")
    ]
    errors = of_type(events, ErrorEvent)
    assert [(e.stream, e.code) for e in errors] == [("fs-1", "audio_error")]
    assert "mono L16 frame" in errors[0].message and "found 3" in errors[0].message
    assert [round(s.t_end, 3) for s in of_type(events, ScoreEvent)][-1] == 2.0


def test_wrong_codec_and_abrupt_disconnect() -> None:
    async def body() -> tuple[tuple[dict[str, Any], int, str], list[Event]]:
        async with serving() as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/jambonz"
            async with connect(url, subprotocols=JAMBONZ) as ws:
                await ws.send(metadata(sampleRate=11025))
                refused = await refusal(ws)
            assert not pipeline.streams
            watcher = await watch(server.port)
            ws = await connect(url, subprotocols=JAMBONZ)
            await ws.send(metadata("CA-gone", mixType="mono"))
            await send_l16(ws, noise(1.5, 8000))
            while "CA-gone" not in pipeline.streams:
                await asyncio.sleep(0.01)
            ws.transport.abort()  # the media server vanished: no close frame
            events = await events_until_ended(watcher, {"CA-gone"})
            await watcher.close()
            return refused, events

    (message, code, reason), events = run(body())
    assert message["type"] == "error" and message["data"]["code"] == "protocol_error"
    assert "found 11025" in message["data"]["message"] and code == 1008 and "11025" in reason
    closed = [e for e in of_type(events, ErrorEvent) if e.code == "stream_closed"]
    assert [(e.stream, e.message) for e in closed] == [("CA-gone", "client disconnected before stop")]


def test_admission_refuses_or_queues_without_losing_the_queued_calls_audio() -> None:
    async def refused() -> tuple[dict[str, Any], int, str]:
        async with serving(EngineConfig(max_streams=2, max_batch=8, max_wait_ms=5)) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/jambonz"
            async with (
                connect(url, subprotocols=JAMBONZ) as first,
                connect(url, subprotocols=JAMBONZ) as second,
            ):
                await first.send(metadata("A"))
                await send_l16(first, noise(0.2, 8000), noise(0.2, 8000, seed=1))
                while len(pipeline.streams) < 2:
                    await asyncio.sleep(0.01)
                await second.send(metadata("B", mixType="mono"))
                await send_l16(second, noise(0.2, 8000))
                return await refusal(second)

    message, code, reason = run(refused())
    assert message["data"]["code"] == "limit_exceeded"
    assert "limit of 2 concurrent streams (2 live, this call needs 1)" in message["data"]["message"]
    assert code == 1013 and "limit of 2" in reason

    async def queued() -> list[Event]:
        engine = EngineConfig(
            max_streams=1, max_batch=8, max_wait_ms=5, admission="queue", queue_timeout_s=5.0
        )
        async with serving(engine) as (server, pipeline):
            watcher = await watch(server.port)
            url = f"ws://127.0.0.1:{server.port}/jambonz"
            async with (
                connect(url, subprotocols=JAMBONZ) as first,
                connect(url, subprotocols=JAMBONZ) as second,
            ):
                await first.send(metadata("A", mixType="mono"))
                await send_l16(first, noise(1.0, 8000))
                while "A" not in pipeline.streams:
                    await asyncio.sleep(0.01)
                await second.send(metadata("B", mixType="mono"))
                await send_l16(second, tone(2.0, 8000))  # arrives while B waits for a free slot
                await asyncio.sleep(0.1)
                assert "B" not in pipeline.streams
                await first.close()
                events = await events_until_ended(watcher, {"A"})
                while "B" not in pipeline.streams:
                    await asyncio.sleep(0.01)
            events += await events_until_ended(watcher, {"B"})
            await watcher.close()
            return events

    events = run(queued())
    b_scores = [s for s in of_type(events, ScoreEvent) if s.stream == "B"]
    assert [round(s.t_end, 3) for s in b_scores][-1] == 2.0  # nothing sent while queued was lost
    assert not [e for e in of_type(events, ErrorEvent) if e.stream == "B"]
