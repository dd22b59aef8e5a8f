"""Genesys AudioHook: the pure session, and ``/audiohook`` over loopback with a client that
speaks the protocol as the reference client does (seq/serverseq/position bookkeeping)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import pytest
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import streamkit
from fakes import FillerScorer, noise, tone
from spoofwatch.audio.pcm import mulaw_decode, mulaw_encode
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import LimitExceededError, ProtocolError
from spoofwatch.events import (
    AlarmEvent,
    ErrorEvent,
    Event,
    GapEvent,
    ScoreEvent,
    StatusEvent,
    StreamEvent,
    parse_event,
)
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.server import SpoofwatchServer
from spoofwatch.stream.protocols.audiohook import (
    NULL_UUID,
    AudioHookClose,
    AudioHookGap,
    AudioHookIgnored,
    AudioHookOpen,
    AudioHookPing,
    AudioHookSession,
    AudioHookTimelineGap,
    PartyAudio,
    format_duration,
    parse_duration,
)

T = TypeVar("T")
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)
STEREO_PCMU = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
FRAME = 800  # 100 ms at 8 kHz


def run(body: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await body

    return asyncio.run(bounded(), debug=True)


def serving(
    engine: EngineConfig = ENGINE, token: str | None = None
) -> contextlib.AbstractAsyncContextManager[tuple[SpoofwatchServer, Pipeline]]:
    # The telephone rate: no resampling.
    return streamkit.serving(
        replace(streamkit.LOCAL, token=token), engine, sample_rate=8000, stream_config=CFG
    )


class AudioHookClient:
    """What Genesys Cloud does on its side of an AudioHook session."""

    def __init__(self, ws: ClientConnection, session_id: str | None = None) -> None:
        self.ws = ws
        self.id = session_id or str(uuid.uuid4())
        self.seq = 0
        self.serverseq = 0
        self.position_s = 0.0

    def message(self, kind: str, parameters: dict[str, object]) -> str:
        self.seq += 1
        return json.dumps(
            {
                "version": "2",
                "id": self.id,
                "type": kind,
                "seq": self.seq,
                "serverseq": self.serverseq,
                "position": format_duration(self.position_s),
                "parameters": parameters,
            }
        )

    async def send(self, kind: str, parameters: dict[str, object] | None = None) -> None:
        await self.ws.send(self.message(kind, parameters or {}))

    async def recv(self) -> dict[str, Any]:
        text = await self.ws.recv()
        assert isinstance(text, str)
        message: dict[str, Any] = json.loads(text)
        assert message["version"] == "2" and message["id"] == self.id
        assert message["seq"] == self.serverseq + 1 and message["clientseq"] == self.seq
        self.serverseq = message["seq"]
        return message

    async def open(
        self, media: list[dict[str, object]] | None = None, conversation: str | None = None
    ) -> None:
        await self.send(
            "open",
            {
                "organizationId": str(uuid.uuid4()),
                "conversationId": conversation or str(uuid.uuid4()),
                "participant": {
                    "id": str(uuid.uuid4()),
                    "ani": "+15551230000",
                    "aniName": "Caller",
                    "dnis": "+15559990000",
                },
                "media": media or [STEREO_PCMU],
                "language": "en-US",
            },
        )

    async def stereo_pcmu(self, external: NDArray[np.float32], internal: NDArray[np.float32]) -> None:
        for start in range(0, len(external), FRAME):
            codes = np.stack(
                [
                    mulaw_encode(external[start : start + FRAME]),
                    mulaw_encode(internal[start : start + FRAME]),
                ],
                axis=1,
            )
            await self.ws.send(codes.tobytes())
            self.position_s += codes.shape[0] / 8000

    async def close(self) -> dict[str, Any]:
        await self.send("close", {"reason": "end"})
        return await self.recv()


async def watch(port: int) -> ClientConnection:
    watcher = await connect(f"ws://127.0.0.1:{port}/v1/scores")
    assert isinstance(parse_event(await watcher.recv()), StatusEvent)
    return watcher


async def events_until_ended(watcher: ClientConnection, streams: set[str]) -> list[Event]:
    events: list[Event] = []
    while not streams <= {e.stream for e in events if isinstance(e, StreamEvent) and e.state == "end"}:
        events.append(parse_event(await watcher.recv()))
    return events


async def expect_closed(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


# --- the pure session ------------------------------------------------------------------


def client_text(
    session_id: str, seq: int, kind: str, params: dict[str, object], position: float = 0.0, serverseq: int = 0
) -> str:
    return json.dumps(
        {
            "version": "2",
            "id": session_id,
            "type": kind,
            "seq": seq,
            "serverseq": serverseq,
            "position": format_duration(position),
            "parameters": params,
        }
    )


def opened_session(media: dict[str, object] = STEREO_PCMU) -> tuple[AudioHookSession, str]:
    session, sid = AudioHookSession(), str(uuid.uuid4())
    items = session.receive_text(
        client_text(
            sid,
            1,
            "open",
            {"organizationId": str(uuid.uuid4()), "conversationId": str(uuid.uuid4()), "media": [media]},
        )
    )
    assert len(items) == 1 and isinstance(items[0], AudioHookOpen)
    session.opened_message()
    return session, sid


def test_durations_round_trip() -> None:
    assert parse_duration("PT1.25S", "x") == 1.25 and parse_duration("PT0S", "x") == 0.0
    assert format_duration(2.5) == "PT2.5S" and format_duration(3.0) == "PT3S"
    with pytest.raises(ProtocolError, match=r"expected an ISO 8601 duration like 'PT1\.25S', found '1\.5'"):
        parse_duration("1.5", "position")


def test_open_picks_the_two_party_offer_and_opened_echoes_it() -> None:
    session, sid = AudioHookSession(), str(uuid.uuid4())
    mono = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
    opus = {"type": "audio", "format": "opus", "channels": ["external", "internal"], "rate": 48000}
    [opened] = session.receive_text(
        client_text(
            sid,
            1,
            "open",
            {
                "organizationId": str(uuid.uuid4()),
                "conversationId": str(uuid.uuid4()),
                "media": [opus, mono, STEREO_PCMU],
            },
        )
    )
    assert isinstance(opened, AudioHookOpen) and not opened.probe
    assert opened.media.channels == ("external", "internal")
    assert opened.stream_ids == {"external": f"{sid}:external", "internal": f"{sid}:internal"}
    reply = json.loads(session.opened_message())
    assert reply == {
        "version": "2",
        "type": "opened",
        "seq": 1,
        "clientseq": 1,
        "id": sid,
        "parameters": {"media": [STEREO_PCMU], "startPaused": False},
    }
    assert session.state == "active"


def test_stereo_frames_split_into_parties_in_channel_order() -> None:
    session, sid = opened_session()
    external, internal = tone(0.1, 8000), noise(0.1, 8000)
    codes = np.stack([mulaw_encode(external), mulaw_encode(internal)], axis=1)
    parts = session.receive_binary(codes.tobytes())
    assert [(p.stream_id, p.party) for p in parts] == [
        (f"{sid}:external", "external"),
        (f"{sid}:internal", "internal"),
    ]
    np.testing.assert_array_equal(parts[0].samples, mulaw_decode(mulaw_encode(external)))
    np.testing.assert_array_equal(parts[1].samples, mulaw_decode(mulaw_encode(internal)))
    l16, l16_sid = opened_session(
        {"type": "audio", "format": "L16", "channels": ["internal", "external"], "rate": 8000}
    )
    pcm = np.array([[100, -200], [300, -400]], dtype="<i2")
    first, second = l16.receive_binary(pcm.tobytes())
    assert first.party == "internal" and second.stream_id == f"{l16_sid}:external"
    np.testing.assert_array_equal(first.samples * 32768, [100, 300])
    with pytest.raises(ProtocolError, match="multiple of 4, found 6"):
        l16.receive_binary(b"\x00" * 6)


def test_gaps_are_reported_never_filled() -> None:
    session, sid = opened_session()
    session.receive_binary(bytes(2 * 8000))  # 1 s of stereo audio
    items = session.receive_text(
        client_text(sid, 2, "discarded", {"start": "PT1S", "discarded": "PT0.5S"}, 1.5, 1)
    )
    assert items == [AudioHookTimelineGap(1.0, 0.5, "discarded"), AudioHookGap("discarded", 1.0, 0.5)]
    assert not any(isinstance(i, PartyAudio) for i in items)  # no filler
    # a position 3 s ahead of the 1.5 s accounted for: a gap of 3 s (no cap per message)
    items = session.receive_text(client_text(sid, 3, "ping", {}, 4.5, 1))
    assert items == [AudioHookTimelineGap(1.5, 3.0, "position"), AudioHookPing(None)]
    # a position behind the audio received is counted, never "unfilled"
    assert session.receive_text(client_text(sid, 4, "ping", {}, 2.0, 1)) == [AudioHookPing(None)]
    counters = session.counters
    assert (counters.gaps, counters.gap_samples, counters.position_behind) == (2, 28000, 1)
    assert session.position_samples == 4.5 * 8000


def test_a_pause_with_an_advancing_position_is_one_gap() -> None:
    """Genesys (and the reference client's tone source) keep the position running while
    paused: every ping is ahead of the audio, yet the whole pause is one gap, at resumed."""
    session, sid = opened_session()
    session.receive_binary(bytes(2 * 8000 * 2))  # 2 s
    assert session.receive_text(client_text(sid, 2, "paused", {}, 2.0, 1)) == [AudioHookIgnored("paused")]
    assert session.state == "paused"
    for seq, position in enumerate((5.0, 8.0, 11.0, 14.0), start=3):
        assert session.receive_text(client_text(sid, seq, "ping", {}, position, 1)) == [AudioHookPing(None)]
    items = session.receive_text(
        client_text(sid, 7, "resumed", {"start": "PT2S", "discarded": "PT12S"}, 14.0, 1)
    )
    assert items == [AudioHookTimelineGap(2.0, 12.0, "paused"), AudioHookGap("resumed", 2.0, 12.0)]
    assert session.state == "active" and session.counters.gaps == 1
    session.receive_binary(bytes(2 * 8000))  # 1 s
    session.receive_text(client_text(sid, 8, "paused", {}, 15.0, 1))
    items = session.receive_text(client_text(sid, 9, "close", {"reason": "end"}, 20.0, 1))
    assert items == [AudioHookTimelineGap(15.0, 5.0, "paused"), AudioHookClose("end")]


def test_envelope_errors_name_what_was_expected() -> None:
    session, sid = opened_session()
    cases = [
        ("not json", "expected JSON"),
        (client_text(sid, 3, "ping", {}), "seq: expected 2, found 3"),
        (client_text(sid, 2, "ping", {}, serverseq=5), "serverseq: expected at most 1"),
        (client_text(str(uuid.uuid4()), 2, "ping", {}), f"expected session {sid}"),
        (client_text(sid, 2, "dance", {}), "expected type in"),
        (client_text(sid, 2, "close", {"reason": "bored"}), "expected one of ['end', 'error'"),
        (json.dumps({"version": "1", "id": sid, "type": "ping", "seq": 2}), "expected version '2'"),
    ]
    for text, expected in cases:
        with pytest.raises(ProtocolError, match=expected.replace("[", r"\[")):
            session.receive_text(text)
    fresh = AudioHookSession()
    with pytest.raises(ProtocolError, match="expected an open message first"):
        fresh.receive_text(client_text(sid, 1, "ping", {}))
    with pytest.raises(ProtocolError, match="expected audio only after opened"):
        AudioHookSession().receive_binary(b"\xff" * 2)
    with pytest.raises(LimitExceededError, match="expected at most 65535 bytes"):
        fresh.receive_text("x" * 70000)


def test_wrong_codec_and_probe_and_close() -> None:
    session, sid = AudioHookSession(), str(uuid.uuid4())
    opus = {"type": "audio", "format": "opus", "channels": ["external"], "rate": 8000}
    with pytest.raises(ProtocolError, match=r"format PCMU or L16, rate 8000.*found.*'opus'"):
        session.receive_text(
            client_text(sid, 1, "open", {"conversationId": str(uuid.uuid4()), "media": [opus]})
        )
    probe, probe_id = AudioHookSession(), str(uuid.uuid4())
    [opened] = probe.receive_text(
        client_text(probe_id, 1, "open", {"conversationId": NULL_UUID, "media": [STEREO_PCMU]})
    )
    assert isinstance(opened, AudioHookOpen) and opened.probe
    probe.opened_message()
    assert probe.receive_binary(b"\xff" * 160) == []  # a probe opens no stream
    assert probe.receive_text(client_text(probe_id, 2, "close", {"reason": "end"})) == [AudioHookClose("end")]
    assert json.loads(probe.closed_message())["type"] == "closed"
    disconnect = json.loads(session.disconnect_message("error", "why"))
    assert disconnect["parameters"] == {"reason": "error", "info": "why"} and session.state == "disconnecting"
    assert session.receive_binary(b"\xff\xff") == []  # audio in flight after our disconnect is dropped


# --- over loopback ---------------------------------------------------------------------


def test_two_parties_on_one_call_are_scored_as_two_streams() -> None:
    external = np.concatenate([noise(2.0, 8000, seed=1), tone(3.0, 8000)])  # the customer turns synthetic
    internal = noise(5.0, 8000, seed=2)

    async def body() -> tuple[str, list[Event], dict[str, Any]]:
        async with serving() as (server, pipeline):
            watcher = await watch(server.port)
            async with connect(f"ws://127.0.0.1:{server.port}/audiohook") as ws:
                client = AudioHookClient(ws)
                await client.open()
                opened = await client.recv()
                await client.send("ping", {"rtt": "PT0.01S"})
                assert (await client.recv())["type"] == "pong"
                await client.stereo_pcmu(external, internal)
                closed = await client.close()
                ids = {f"{client.id}:external", f"{client.id}:internal"}
                events = await events_until_ended(watcher, ids)
            await watcher.close()
            assert not pipeline.streams
            return client.id, events, {"opened": opened, "closed": closed}

    sid, events, replies = run(body())
    assert replies["opened"]["type"] == "opened" and replies["opened"]["parameters"]["media"] == [STEREO_PCMU]
    assert replies["closed"]["type"] == "closed"
    ext, agent = f"{sid}:external", f"{sid}:internal"
    starts = {e.stream: e for e in of_type(events, StreamEvent) if e.state == "start"}
    assert starts == {
        ext: StreamEvent(ext, "start", 8000, "audiohook"),
        agent: StreamEvent(agent, "start", 8000, "audiohook"),
    }
    alarms = of_type(events, AlarmEvent)
    assert [a.stream for a in alarms if a.state == "on"] == [ext]
    assert 2.0 < alarms[0].t <= 4.0
    for stream in (ext, agent):
        assert [round(s.t_end, 3) for s in of_type(events, ScoreEvent) if s.stream == stream][-1] == 5.0
    assert not of_type(events, ErrorEvent)
    loads = [s.streams for s in of_type(events, StatusEvent)]
    assert loads[:2] == [1, 2] and max(loads) == 2  # the load rises as each party's stream opens


def test_wrong_codec_is_refused_with_disconnect_then_closed() -> None:
    async def body() -> tuple[dict[str, Any], dict[str, Any], tuple[int, str]]:
        async with serving() as (server, pipeline):
            async with connect(f"ws://127.0.0.1:{server.port}/audiohook") as ws:
                client = AudioHookClient(ws)
                await client.open(
                    [{"type": "audio", "format": "opus", "channels": ["external"], "rate": 48000}]
                )
                disconnect = await client.recv()
                await client.send("close", {"reason": "disconnect"})
                closed = await client.recv()
                code = await expect_closed(ws)
            assert not pipeline.streams
            return disconnect, closed, code

    disconnect, closed, (code, _) = run(body())
    assert disconnect["type"] == "disconnect" and disconnect["parameters"]["reason"] == "error"
    assert (
        "format PCMU or L16" in disconnect["parameters"]["info"]
        and "opus" in disconnect["parameters"]["info"]
    )
    assert closed["type"] == "closed" and code == 1008


def test_malformed_frame_disconnects_and_ends_the_streams_with_the_reason() -> None:
    async def body() -> tuple[dict[str, Any], list[Event]]:
        async with serving() as (server, _):
            watcher = await watch(server.port)
            async with connect(f"ws://127.0.0.1:{server.port}/audiohook") as ws:
                client = AudioHookClient(ws)
                await client.open()
                await client.recv()
                await client.stereo_pcmu(noise(1.0, 8000), noise(1.0, 8000, seed=3))
                await ws.send(b"\x7f" * 3)  # half a stereo sample
                disconnect = await client.recv()
                await client.send("close", {"reason": "disconnect"})
                assert (await client.recv())["type"] == "closed"
                events = await events_until_ended(watcher, {f"{client.id}:external", f"{client.id}:internal"})
            await watcher.close()
            return disconnect, events

    disconnect, events = run(body())
    assert disconnect["parameters"]["reason"] == "error"
    assert "expected a byte length that is a multiple of 2, found 3" in disconnect["parameters"]["info"]
    errors = of_type(events, ErrorEvent)
    assert {e.code for e in errors} == {"protocol_error", "stream_closed"}
    assert all("multiple of 2" in e.message for e in errors)
    assert len([e for e in errors if e.code == "stream_closed"]) == 2


def test_abrupt_disconnect_ends_both_streams() -> None:
    async def body() -> list[Event]:
        async with serving() as (server, pipeline):
            watcher = await watch(server.port)
            ws = await connect(f"ws://127.0.0.1:{server.port}/audiohook")
            client = AudioHookClient(ws)
            await client.open()
            await client.recv()
            await client.stereo_pcmu(noise(1.5, 8000), noise(1.5, 8000, seed=4))
            ws.transport.abort()
            events = await events_until_ended(watcher, {f"{client.id}:external", f"{client.id}:internal"})
            await watcher.close()
            assert not pipeline.streams
            return events

    events = run(body())
    closed = [e for e in of_type(events, ErrorEvent) if e.code == "stream_closed"]
    assert len(closed) == 2 and all(e.message == "client disconnected before stop" for e in closed)
    assert len(of_type(events, ScoreEvent)) >= 2


def test_admission_refuses_a_call_beyond_the_limit_then_queues_when_configured() -> None:
    async def refused() -> tuple[dict[str, Any], tuple[int, str]]:
        async with serving(EngineConfig(max_streams=3, max_batch=8, max_wait_ms=5)) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/audiohook"
            async with connect(url) as first, connect(url) as second:
                one, two = AudioHookClient(first), AudioHookClient(second)
                await one.open()
                assert (await one.recv())["type"] == "opened"
                await two.open()
                disconnect = await two.recv()
                await two.send("close", {"reason": "disconnect"})
                assert (await two.recv())["type"] == "closed"
                close = await expect_closed(second)
                assert len(pipeline.streams) == 2
                assert (await one.close())["type"] == "closed"
            return disconnect, close

    disconnect, (code, reason) = run(refused())
    assert disconnect["parameters"]["reason"] == "error"
    assert "limit of 3 concurrent streams (2 live, this call needs 2)" in disconnect["parameters"]["info"]
    assert code == 1013 and "limit of 3" in reason

    async def queued() -> float:
        engine = EngineConfig(
            max_streams=2, max_batch=8, max_wait_ms=5, admission="queue", queue_timeout_s=3.0
        )
        async with serving(engine) as (server, _):
            url = f"ws://127.0.0.1:{server.port}/audiohook"
            async with connect(url) as first, connect(url) as second:
                one, two = AudioHookClient(first), AudioHookClient(second)
                await one.open()
                assert (await one.recv())["type"] == "opened"
                await two.open()
                with pytest.raises(TimeoutError):  # waits in the queue while the first call is up
                    async with asyncio.timeout(0.3):
                        await two.recv()
                loop = asyncio.get_running_loop()
                ended = loop.time()
                assert (await one.close())["type"] == "closed"
                assert (await two.recv())["type"] == "opened"
                return loop.time() - ended

    assert run(queued()) < 1.0


def test_token_is_checked_in_the_protocol_and_accepted_as_x_api_key() -> None:
    async def body() -> tuple[dict[str, Any], tuple[int, str], str]:
        async with serving(token="k3y") as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/audiohook"
            async with connect(url, additional_headers={"X-API-KEY": "wrong"}) as ws:
                client = AudioHookClient(ws)
                await client.open()
                disconnect = await client.recv()
                await client.send("close", {"reason": "disconnect"})
                await client.recv()
                close = await expect_closed(ws)
            assert not pipeline.streams
            async with connect(url, additional_headers={"X-API-KEY": "k3y"}) as ws:
                client = AudioHookClient(ws)
                await client.open(conversation=NULL_UUID)  # a connection probe
                opened = (await client.recv())["type"]
                assert not pipeline.streams
                assert (await client.close())["type"] == "closed"
            return disconnect, close, opened

    disconnect, (code, _), opened = run(body())
    assert (
        disconnect["parameters"]["reason"] == "unauthorized"
        and "X-API-KEY" in disconnect["parameters"]["info"]
    )
    assert code == 1008 and opened == "opened"


# --- gaps over loopback ------------------------------------------------------------------


def filler_inside(score: ScoreEvent, holes: list[tuple[float, float]], window_s: float) -> float:
    """Seconds of the holes inside a scored window's audio: its overlap with them less what
    was spliced out of its span (a window spans more than its length only by splices)."""
    overlap = sum(max(0.0, min(score.t_end, b) - max(score.t_start, a)) for a, b in holes)
    return round(max(0.0, overlap - (score.t_end - score.t_start - window_s)), 6)


def gap_serving() -> contextlib.AbstractAsyncContextManager[tuple[SpoofwatchServer, Pipeline]]:
    """A scorer that calls any window with digital silence spoof, as the real one does."""
    return streamkit.serving(
        streamkit.LOCAL, ENGINE, stream_config=CFG, scorer=FillerScorer(sample_rate=8000, window_s=1.0)
    )


async def call_with_gaps(port: int, external: NDArray[np.float32]) -> tuple[str, list[Event]]:
    """3 s of audio, a 1 s ``discarded``, 2 s, a 12 s pause (a ping a second, the position
    running on), the rest; the agent's channel is noise throughout."""
    watcher = await watch(port)
    async with connect(f"ws://127.0.0.1:{port}/audiohook") as ws:
        client = AudioHookClient(ws)
        await client.open()
        await client.recv()
        agent = noise(len(external) / 8000, 8000, seed=9)
        await client.stereo_pcmu(external[:24000], agent[:24000])
        await client.send("discarded", {"start": format_duration(client.position_s), "discarded": "PT1S"})
        client.position_s += 1.0
        await client.stereo_pcmu(external[24000:40000], agent[24000:40000])
        await client.send("paused")
        pause_start = client.position_s
        for _ in range(12):
            client.position_s += 1.0
            await client.send("ping", {})
            assert (await client.recv())["type"] == "pong"
        await client.send(
            "resumed", {"start": format_duration(pause_start), "discarded": format_duration(12.0)}
        )
        await client.stereo_pcmu(external[40000:], agent[40000:])
        assert (await client.close())["type"] == "closed"
        events = await events_until_ended(watcher, {f"{client.id}:external", f"{client.id}:internal"})
    await watcher.close()
    return client.id, events


def test_discarded_and_paused_audio_raise_no_alarm_and_score_nothing_over_the_gaps() -> None:
    """Bona fide (to the fake) noise with a 1 s discard and a 12 s Genesys pause: today's
    zero filling scored the filler spoof and alarmed; now no window spans a gap."""

    async def body() -> tuple[str, list[Event]]:
        async with gap_serving() as (server, _):
            return await call_with_gaps(server.port, noise(8.0, 8000, seed=1))

    sid, events = run(body())
    ext = f"{sid}:external"
    assert not of_type(events, AlarmEvent)
    gaps = [e for e in of_type(events, GapEvent) if e.stream == ext]
    assert gaps == [GapEvent(ext, 3.0, 4.0, "discarded"), GapEvent(ext, 6.0, 18.0, "paused")]
    scores = [e for e in of_type(events, ScoreEvent) if e.stream == ext]
    # The 1 s discard is spliced (windows of received audio only, spanning it on the
    # clock); the pause restarts windowing: no window spans it.
    assert scores and all(filler_inside(e, [(3.0, 4.0), (6.0, 18.0)], 1.0) == 0.0 for e in scores)
    assert any(e.t_start < 3.0 and e.t_end > 4.0 for e in scores)
    assert all(e.t_end <= 6.0 or e.t_start >= 18.0 for e in scores)
    assert scores[-1].t_end == 21.0  # the call's clock: 8 s of audio and 13 s of gaps
    assert not of_type(events, ErrorEvent)


def test_a_synthetic_party_with_the_same_gaps_still_alarms() -> None:
    async def body() -> tuple[str, list[Event]]:
        async with gap_serving() as (server, _):
            return await call_with_gaps(server.port, tone(8.0, 8000))

    sid, events = run(body())
    alarms = of_type(events, AlarmEvent)
    assert [a.stream for a in alarms if a.state == "on"] == [f"{sid}:external"]
    assert alarms[0].t <= 3.0  # before the first gap
    assert [a.state for a in alarms if a.stream == f"{sid}:external"][:1] == ["on"]
