"""Client faults: clients of every protocol vanishing mid-stream, a subscriber that stops
reading, and a stream whose close gives up waiting on a saturated engine."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from fakes import FakeScorer, noise
from spoofwatch.config import EngineConfig
from spoofwatch.events import ErrorEvent, Event, ScoreEvent, StatusEvent, StreamEvent
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.audiosocket_server import AudioSocketServer
from spoofwatch.stream.protocols.audiosocket import audio_frame, hangup_frame, uuid_frame
from streamkit import (
    CFG,
    TWILIO_CONNECTED,
    AudioHookClient,
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


def live_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if not t.done()} - {asyncio.current_task()}  # type: ignore[misc]


def test_clients_of_every_protocol_vanishing_mid_stream_free_everything() -> None:
    call = str(uuid.uuid4())

    async def ingest(port: int) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{port}/v1/ingest")
        await ws.send(start_message("ingest-gone", sample_rate=8000))
        await send_audio(ws, noise(1.2, 8000), chunk=800)
        return ws

    async def twilio(port: int) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{port}/twilio")
        await ws.send(TWILIO_CONNECTED)
        await ws.send(twilio_start("MZgone"))
        for _ in range(60):
            await ws.send(twilio_media("MZgone", noise(0.02, 8000)))
        return ws

    async def audiohook(port: int) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{port}/audiohook")
        client = AudioHookClient(ws)
        await client.open()
        assert (await client.recv())["type"] == "opened"
        for _ in range(12):
            await ws.send(stereo_pcmu(noise(0.1, 8000)))
        return ws

    async def jambonz(port: int) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{port}/jambonz")
        await ws.send(jambonz_metadata("CAgone"))
        for _ in range(12):
            await ws.send(s16(noise(0.1, 8000)))
        return ws

    async def body() -> tuple[list[Event], int]:
        async with serving(sample_rate=8000) as (server, pipeline):
            audiosocket = AudioSocketServer(pipeline, port=0)
            await audiosocket.start()
            sub = pipeline.hub.subscribe(maxsize=10_000)
            subscribers = pipeline.hub.subscriber_count
            before = live_tasks()
            clients = [await f(server.port) for f in (ingest, twilio, audiohook, jambonz)]
            _, writer = await asyncio.open_connection("127.0.0.1", audiosocket.port)
            writer.write(uuid_frame(call) + b"".join(audio_frame(s16(noise(0.1, 8000))) for _ in range(12)))
            await writer.drain()
            ids = {"ingest-gone", "MZgone", "CAgone", call}
            await until(lambda: ids <= set(pipeline.streams), what="every stream live")
            assert len(pipeline.streams) == 6  # AudioHook: one stream per party
            for ws in clients:
                ws.transport.abort()  # no close frame, no FIN handshake: the peer is just gone
            writer.transport.abort()
            await until(lambda: not pipeline.streams, what="every stream closed")
            await until(lambda: server.connections == 0 and audiosocket.connections == 0)
            await until(lambda: live_tasks() <= before, what="the handlers' tasks to finish")
            assert pipeline.hub.subscriber_count == subscribers
            assert pipeline.batcher.queued == 0
            events: list[Event] = []
            while not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            await audiosocket.stop()
            return events, len(live_tasks() - before)

    events, leaked_tasks = run(body())
    assert leaked_tasks == 0
    ended = {e.stream for e in of_type(events, StreamEvent) if e.state == "end"}
    assert len(ended) == 6
    reasons = {(e.code, e.message) for e in of_type(events, ErrorEvent)}
    assert ("stream_closed", "client disconnected before stop") in reasons
    assert {code for code, _ in reasons} == {"stream_closed"}
    assert len(of_type(events, ScoreEvent)) >= 6  # every stream had a window scored


def test_a_stalled_subscriber_is_dropped_while_scoring_and_other_subscribers_keep_up() -> None:
    async def body() -> tuple[list[Event], list[Event], int, int]:
        async with serving(engine=EngineConfig(max_batch=8, max_wait_ms=5, subscriber_queue=8)) as (
            server,
            pipeline,
        ):
            url = f"ws://127.0.0.1:{server.port}/v1/scores"
            async with connect(url) as watcher, connect(url, max_queue=1) as stalled:
                for ws in (watcher, stalled):
                    assert isinstance(await recv_event(ws), StatusEvent)
                name = f"ws-scores {stalled.local_address}"  # as the server names it
                stalled_sub = next(sub for sub in pipeline.hub._subs if sub.name == name)
                seen: list[Event] = []

                async def watch() -> None:
                    while True:
                        seen.append(await recv_event(watcher))

                watching = asyncio.create_task(watch())
                padding = "x" * 32768  # bulky events fill the stalled client's socket buffers fast

                async def flood() -> int:
                    published = 0
                    while not stalled_sub.closed and published < 3000:
                        pipeline.hub.publish(ErrorEvent("bulk", "padding", padding))
                        published += 1
                        # In step with the live watcher (it parses every 32 KB event), ahead of
                        # the stalled one.
                        await until(lambda n=published: sum(isinstance(e, ErrorEvent) for e in seen) >= n)
                    return published

                async def call() -> list[Event]:
                    async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws:
                        await ws.send(start_message("call"))
                        audio = noise(6.0, seed=11)
                        for start in range(0, len(audio), 3200):  # 6 s of audio over ~1.2 s
                            await ws.send(s16(audio[start : start + 3200]))
                            await asyncio.sleep(0.04)
                        await ws.send('{"type":"stop"}')
                        own: list[Event] = []
                        while not (own and isinstance(own[-1], StreamEvent) and own[-1].state == "end"):
                            own.append(await recv_event(ws))
                        return own

                published, own = await asyncio.gather(flood(), call())
                await until(lambda: any(isinstance(e, StreamEvent) and e.state == "end" for e in seen))
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
                stalled.transport.abort()  # it never reads: a polite close would wait it out
                return seen, own, published, pipeline.batcher.counters.dropped

    seen, own, published, dropped_windows = run(body())
    assert published < 3000, "the stalled subscriber was never dropped"
    expected = list(range(11))  # (6 s - 1 s) / 0.5 s + 1 windows
    assert [s.seq for s in of_type(own, ScoreEvent)] == expected
    relayed = [s for s in of_type(seen, ScoreEvent) if s.stream == "call"]
    assert relayed == of_type(own, ScoreEvent)  # the live watcher missed nothing
    assert dropped_windows == 0
    assert max(s.lag_ms for s in relayed) < 1000.0


def test_a_close_that_gives_up_waiting_still_ends_the_stream_and_frees_its_slot() -> None:
    async def body() -> tuple[list[Event], list[Event], int, int]:
        scorer = FakeScorer(delay_s=0.05)
        pipeline = Pipeline(scorer, CFG, EngineConfig(max_batch=1, max_wait_ms=0, max_streams=1))
        worker = asyncio.create_task(pipeline.run())
        sub = pipeline.hub.subscribe(maxsize=1000)
        handle = pipeline.open_stream("slow", source="test", sample_rate=16000)
        handle.feed(noise(6.0))  # 11 windows at 50 ms each
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.12):
                await handle.close("client went away")
        assert not pipeline.streams  # the slot is free at once
        again = pipeline.open_stream("slow", source="test", sample_rate=16000)  # the id too
        at_end: list[Event] = []
        while not sub.queue.empty():
            at_end.append(sub.queue.get_nowait())
        await asyncio.sleep(0.3)  # windows already in the worker's hands finish meanwhile
        later: list[Event] = []
        while not sub.queue.empty():
            later.append(sub.queue.get_nowait())
        await again.close()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        return at_end, later, handle.pending, pipeline.batcher.counters.dropped

    at_end, later, pending, dropped = run(body())
    assert [(e.stream, e.state) for e in of_type(at_end, StreamEvent)] == [
        ("slow", "start"),
        ("slow", "end"),
        ("slow", "start"),  # the id is free again at once
    ]
    errors = [(e.code, e.message) for e in of_type(at_end, ErrorEvent)]
    assert errors == [("stream_closed", "client went away")]
    assert len(of_type(at_end, ScoreEvent)) < 11
    assert of_type(later, ScoreEvent) == [] and of_type(later, ErrorEvent) == []  # nothing after its end
    assert pending == 0 and dropped >= 11 - 1 - len(of_type(at_end, ScoreEvent))


def test_server_shutdown_with_live_clients_ends_every_stream() -> None:
    async def body() -> tuple[list[Event], int]:
        async with serving() as (server, pipeline):
            sub = pipeline.hub.subscribe(maxsize=1000)
            clients = []
            for n in range(3):
                ws = await connect(f"ws://127.0.0.1:{server.port}/v1/ingest")
                await ws.send(start_message(f"live-{n}"))
                await send_audio(ws, noise(1.5, seed=n))
                clients.append(ws)
            await until(lambda: len(pipeline.streams) == 3)
            await server.stop()
            remaining = len(pipeline.streams)
            events: list[Event] = []
            while not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            for ws in clients:
                await ws.close()
            return events, remaining

    events, remaining = run(body())
    assert remaining == 0
    closed = [(e.stream, e.message) for e in of_type(events, ErrorEvent)]
    assert sorted(closed) == [(f"live-{n}", "server shutting down") for n in range(3)]
    ended = {e.stream for e in of_type(events, StreamEvent) if e.state == "end"}
    assert ended == {f"live-{n}" for n in range(3)}


@pytest.mark.parametrize("protocol", ["audiosocket", "jambonz"])
def test_a_call_whose_frames_all_arrive_at_once_is_still_scored(protocol: str) -> None:
    """Start, audio and end in one TCP segment: the call ends before its admission task has
    run, and must still open, score its audio and end (it once vanished without a trace)."""
    call = str(uuid.uuid4())

    async def body() -> list[Event]:
        async with serving(sample_rate=8000) as (server, pipeline):
            sub = pipeline.hub.subscribe(maxsize=1000)
            if protocol == "audiosocket":
                audiosocket = AudioSocketServer(pipeline, port=0)
                await audiosocket.start()
                _, writer = await asyncio.open_connection("127.0.0.1", audiosocket.port)
                frames = b"".join(audio_frame(s16(chunk)) for chunk in np.split(noise(1.2, 8000), 60))
                writer.write(uuid_frame(call) + frames + hangup_frame())
                await writer.drain()
            else:
                ws = await connect(f"ws://127.0.0.1:{server.port}/jambonz")
                await ws.send(jambonz_metadata(call))
                await ws.send(s16(noise(1.2, 8000)))
                await ws.close()
            events: list[Event] = []
            async with asyncio.timeout(5):
                while not (events and isinstance(events[-1], StreamEvent) and events[-1].state == "end"):
                    events.append(await sub.get())
            if protocol == "audiosocket":
                writer.close()
                await audiosocket.stop()
            return events

    events = run(body())
    assert [e.state for e in of_type(events, StreamEvent)] == ["start", "end"]
    assert [round(s.t_end, 2) for s in of_type(events, ScoreEvent)] == [1.0]
    assert not of_type(events, ErrorEvent)
