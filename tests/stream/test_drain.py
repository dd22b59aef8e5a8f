"""Graceful drain (``net.drain``): the state machine, and a served pipeline that refuses
new calls in each protocol's own way while its live calls run to their end or are cut
at the drain timeout."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from fakes import noise
from spoofwatch.errors import ConfigError, LimitExceededError
from spoofwatch.events import ErrorEvent, StreamEvent
from spoofwatch.stream.net.audiosocket_server import AudioSocketServer
from spoofwatch.stream.net.drain import Drain
from spoofwatch.stream.protocols.audiosocket import (
    KIND_ERROR,
    KIND_HANGUP,
    AudioSocketReader,
    audio_frame,
    uuid_frame,
)
from streamkit import (
    TWILIO_CONNECTED,
    AudioHookClient,
    http_get,
    jambonz_metadata,
    recv_event,
    run,
    s16,
    send_audio,
    serving,
    start_message,
    twilio_start,
)


def test_drain_state_machine() -> None:
    drain = Drain(timeout_s=2.5)
    assert (drain.phase, drain.draining, drain.refusal()) == ("serving", False, None)
    drain.check()  # serving: no refusal
    assert drain.begin() is True
    assert drain.phase == "draining" and drain.draining
    assert drain.begin() is False  # a second SIGTERM: the caller stops at once
    with pytest.raises(LimitExceededError, match=r"node is draining .* try another node"):
        drain.check()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="drain_timeout_s: expected a non-negative number"):
            Drain(bad)


def test_draining_node_refuses_new_calls_in_each_protocol_and_lets_live_calls_finish() -> None:
    async def body() -> dict[str, object]:
        async with serving(sample_rate=8000) as (server, pipeline):
            watcher = pipeline.hub.subscribe(name="test", maxsize=10_000)
            audiosocket = AudioSocketServer(pipeline, "127.0.0.1", 0)
            await audiosocket.start()
            drain = Drain(timeout_s=30.0)
            pipeline.drain = drain
            stopped = asyncio.Event()
            draining = asyncio.create_task(drain.run(pipeline, stopped.set))
            url = f"ws://127.0.0.1:{server.port}"
            try:
                live = await connect(f"{url}/v1/ingest")
                await live.send(start_message("live", sample_rate=8000))
                await send_audio(live, noise(1.0, 8000))
                assert (await http_get(server.port, "/healthz"))[0] == 200

                drain.begin()
                status, _, raw = await http_get(server.port, "/healthz")
                health = json.loads(raw)
                # Ingest: an error event, then close 1013 (try again later).
                async with connect(f"{url}/v1/ingest") as refused:
                    await refused.send(start_message("late", sample_rate=8000))
                    error = await recv_event(refused)
                    with pytest.raises(ConnectionClosed):
                        await refused.recv()
                    ingest_close = refused.close_code
                # AudioHook: disconnect with reason error, per the protocol.
                async with connect(f"{url}/audiohook") as ws:
                    hook = AudioHookClient(ws)
                    await hook.open()
                    disconnect = await hook.recv()
                # Twilio and jambonz: close 1013 with the reason.
                async with connect(f"{url}/twilio") as ws:
                    await ws.send(TWILIO_CONNECTED)
                    await ws.send(twilio_start("MZlate"))
                    with pytest.raises(ConnectionClosed):
                        await ws.recv()
                    twilio_close = (ws.close_code, ws.close_reason)
                async with connect(f"{url}/jambonz", subprotocols=[Subprotocol("audio.jambonz.org")]) as ws:
                    await ws.send(jambonz_metadata("CAlate"))
                    await ws.send(s16(noise(0.2, 8000)))
                    jambonz_error = json.loads(await ws.recv())
                    with pytest.raises(ConnectionClosed):
                        await ws.recv()
                    jambonz_close = ws.close_code
                # AudioSocket: an error frame with the reason, then hangup.
                reader, writer = await asyncio.open_connection("127.0.0.1", audiosocket.port)
                writer.write(uuid_frame(str(uuid.uuid4())))
                writer.write(audio_frame(s16(noise(0.2, 8000)), 8000))
                await writer.drain()
                frames = AudioSocketReader().feed(await reader.read())
                writer.close()
                assert not stopped.is_set()  # the live call still holds the node
                await send_audio(live, noise(1.0, 8000, seed=2))
                await live.send(json.dumps({"type": "stop"}))
                async with asyncio.timeout(10):
                    await stopped.wait()
                await live.close()
                events = []
                while not watcher.queue.empty():
                    events.append(watcher.queue.get_nowait())
                return {
                    "health": (status, health["status"]),
                    "error": error,
                    "ingest_close": ingest_close,
                    "disconnect": disconnect,
                    "twilio": twilio_close,
                    "jambonz": (jambonz_error, jambonz_close),
                    "frames": frames,
                    "events": events,
                    "phase": drain.phase,
                }
            finally:
                draining.cancel()
                await audiosocket.stop()

    got = run(body())
    assert got["health"] == (503, "draining")
    error = got["error"]
    assert isinstance(error, ErrorEvent) and error.code == "limit_exceeded"
    assert "node is draining" in error.message
    assert got["ingest_close"] == CloseCode.TRY_AGAIN_LATER
    disconnect = got["disconnect"]
    assert isinstance(disconnect, dict) and disconnect["type"] == "disconnect"
    assert disconnect["parameters"]["reason"] == "error"
    assert "node is draining" in disconnect["parameters"]["info"]
    twilio_code, twilio_reason = got["twilio"]  # type: ignore[misc]
    assert twilio_code == CloseCode.TRY_AGAIN_LATER and "node is draining" in twilio_reason
    jambonz_error, jambonz_code = got["jambonz"]  # type: ignore[misc]
    assert jambonz_code == CloseCode.TRY_AGAIN_LATER
    assert (
        jambonz_error["data"]["code"] == "limit_exceeded" and "draining" in jambonz_error["data"]["message"]
    )
    frames = got["frames"]
    assert isinstance(frames, list) and [f.kind for f in frames] == [KIND_ERROR, KIND_HANGUP]
    assert b"node is draining" in frames[0].payload
    events = got["events"]
    assert isinstance(events, list)
    ends = [e.stream for e in events if isinstance(e, StreamEvent) and e.state == "end"]
    starts = [e.stream for e in events if isinstance(e, StreamEvent) and e.state == "start"]
    assert starts == ends == ["live"]  # nothing else was admitted; the live call ended by its stop
    assert not [e for e in events if isinstance(e, ErrorEvent) and e.stream == "live"]
    assert got["phase"] == "drained"


def test_calls_still_live_at_the_drain_timeout_are_closed_with_the_reason() -> None:
    async def body() -> tuple[list[StreamEvent | ErrorEvent], int]:
        async with serving(sample_rate=8000) as (server, pipeline):
            watcher = pipeline.hub.subscribe(name="test", maxsize=10_000)
            drain = Drain(timeout_s=0.3)
            pipeline.drain = drain
            stopped = asyncio.Event()
            draining = asyncio.create_task(drain.run(pipeline, stopped.set))
            async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as live:
                await live.send(start_message("stuck", sample_rate=8000))
                await send_audio(live, noise(1.0, 8000))
                while "stuck" not in pipeline.streams:
                    await asyncio.sleep(0.01)
                drain.begin()
                async with asyncio.timeout(10):
                    await stopped.wait()
                ends = []
                while not watcher.queue.empty():
                    event = watcher.queue.get_nowait()
                    if isinstance(event, ErrorEvent) or (
                        isinstance(event, StreamEvent) and event.state == "end"
                    ):
                        ends.append(event)
            await draining
            return ends, drain.closed_at_timeout

    ends, cut = run(body())
    assert cut == 1
    error, end = ends
    assert isinstance(error, ErrorEvent) and error.stream == "stuck" and error.code == "drain_timeout"
    assert "node drained" in error.message and "drain timeout (0.3 s)" in error.message
    assert isinstance(end, StreamEvent) and end.stream == "stuck"
