"""Alarm evidence: window scores on alarm events, the per-stream audio ring, the evidence
folder (ids, retention), the recorder on a real pipeline, and the HTTP handlers
(``/v1/streams``, ``/v1/evidence``) on a bare aiohttp application."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.errors import ConfigError, ProtocolError
from spoofwatch.events import AlarmEvent, EvidenceEvent, ScoreEvent, WindowScore, parse_event, to_json
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.engine.snapshot import StreamTracker
from spoofwatch.stream.evidence.recorder import EvidenceRecorder
from spoofwatch.stream.evidence.ring import AudioRing
from spoofwatch.stream.evidence.store import (
    ID_PATTERN,
    BadEvidenceId,
    EvidenceNotFound,
    EvidenceStore,
    check_id,
    new_id,
)
from spoofwatch.stream.net.evidence_http import evidence_routes, streams_routes

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=4, max_wait_ms=5)
SR = 16000


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ alarm evidence scores


def test_an_alarm_carries_the_window_scores_that_raised_it_and_survives_the_wire() -> None:
    async def body() -> list[Any]:
        pipeline = Pipeline(FakeScorer(), CFG, ENGINE)
        sub = pipeline.hub.subscribe()
        worker = asyncio.create_task(pipeline.run())
        handle = pipeline.open_stream("call", source="test", sample_rate=SR)
        audio = np.concatenate([noise(3.0), tone(4.0), noise(4.0)])
        for start in range(0, len(audio), 1600):
            await handle.feed_wait(audio[start : start + 1600])
        await handle.close()
        worker.cancel()
        events = []
        while not sub.queue.empty():
            events.append(sub.queue.get_nowait())
        return events

    events = asyncio.run(body())
    scores = {(e.t_start, e.t_end): e.score for e in events if isinstance(e, ScoreEvent) and e.speech}
    alarms = [e for e in events if isinstance(e, AlarmEvent)]
    assert [a.state for a in alarms] == ["on", "off"]
    for alarm in alarms:
        assert len(alarm.evidence_scores) == CFG.smoothing_n
        assert alarm.evidence_scores[-1].t_end == alarm.t
        for window in alarm.evidence_scores:
            assert scores[(window.t_start, window.t_end)] == window.score
    on = alarms[0]
    assert all(w.score < 0 for w in on.evidence_scores)  # spoof-leaning LLRs raised it
    wire = json.loads(to_json(on))
    assert wire["evidence_scores"][0].keys() == {"t_start", "t_end", "score"}
    back = parse_event(to_json(on))
    assert isinstance(back, AlarmEvent) and isinstance(back.evidence_scores[0], WindowScore)
    assert to_json(back) == to_json(on)


def test_malformed_evidence_scores_are_a_protocol_error() -> None:
    good = to_json(AlarmEvent("s", "on", 1.0, 0.9, (WindowScore(0.0, 1.0, -2.0),)))
    assert isinstance(parse_event(good), AlarmEvent)
    for bad in ('"evidence_scores":5', '"evidence_scores":[{"t_start":0}]'):
        text = good.replace(good[good.index('"evidence_scores"') : -1], bad)
        with pytest.raises(ProtocolError, match="malformed alarm event"):
            parse_event(text)
    assert parse_event('{"type":"alarm","v":1,"stream":"s","state":"on","t":1,"p_spoof":0.9}') == AlarmEvent(
        "s", "on", 1, 0.9
    )


# ------------------------------------------------------------------ ring and store


def test_the_ring_keeps_the_latest_audio_in_order_on_the_streams_clock() -> None:
    ring = AudioRing(10, 1.0)  # 10 samples
    ramp = (np.arange(25, dtype=np.float32) - 12) / 32.0
    expected = (ramp * 32767).astype(np.int16)
    ring.append(ramp[:4], 0.4)
    assert ring.latest().tolist() == expected[:4].tolist()
    ring.append(ramp[4:17], 1.7)
    ring.append(ramp[17:25], 2.5)
    assert ring.latest().tolist() == expected[15:25].tolist()
    pcm, start, end = ring.clip(1.8, 2.2)
    assert pcm.tolist() == expected[18:22].tolist() and (start, end) == pytest.approx((1.8, 2.2))
    pcm, start, end = ring.clip(0.0, 9.0)  # only what is still held
    assert len(pcm) == 10 and (start, end) == pytest.approx((1.5, 2.5))
    ring.append(np.linspace(-1, 1, 30, dtype=np.float32), 5.5)  # more than it holds at once
    assert ring.latest()[-1] == 32767 and ring.filled == 10


def test_ids_are_checked_before_any_path_is_built(tmp_path: Path) -> None:
    made = new_id("call/1:agent ../x")
    assert ID_PATTERN.fullmatch(made) and "/" not in made
    for bad in ("../../etc/passwd", "", "20260101T120000Z-x-0a1b2", "x" * 300, "20260101T120000Z-a/b-0a1b2c"):
        with pytest.raises(BadEvidenceId, match="expected an evidence id like"):
            check_id(bad)
    store = EvidenceStore(tmp_path / "ev", retention_days=1)
    assert (tmp_path / "ev").stat().st_mode & 0o777 == 0o700
    with pytest.raises(EvidenceNotFound):
        store.path(new_id("nobody"), "wav")
    (tmp_path / "ev" / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        EvidenceStore(tmp_path / "ev" / "file" / "sub", retention_days=1)
    with pytest.raises(ConfigError, match="days > 0"):
        EvidenceStore(tmp_path, retention_days=0)


def test_retention_prunes_only_old_evidence_files(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, retention_days=2)
    old, fresh = new_id("old"), new_id("fresh")
    for evidence_id in (old, fresh):
        store.write(evidence_id, np.zeros(160, np.int16), SR, {"stream": evidence_id.split("-")[1]})
    foreign = tmp_path / "notes.json"
    foreign.write_text("{}")
    three_days_ago = time.time() - 3 * 86400
    for path in (tmp_path / f"{old}.wav", tmp_path / f"{old}.json", foreign):
        os.utime(path, (three_days_ago, three_days_ago))
    assert store.prune() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{fresh}.wav", f"{fresh}.json", "notes.json"]
    )
    assert (tmp_path / f"{fresh}.wav").stat().st_mode & 0o777 == 0o600
    assert [e["id"] for e in store.entries()] == [fresh]


def test_evidence_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="evidence_seconds"):
        ServerConfig(evidence_seconds=1.0)
    with pytest.raises(ConfigError, match="evidence_days"):
        ServerConfig(evidence_days=0.0)


# ------------------------------------------------------------------ recorder + HTTP


def two_party_call() -> dict[str, np.ndarray]:
    return {
        "call-9:caller": np.concatenate([noise(6.0, seed=1), tone(8.0)]),  # turns synthetic at 6 s
        "call-9:agent": noise(14.0, seed=2),
    }


async def serve_routes(routes: list[web.RouteDef]) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.add_routes(routes)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def test_an_alarm_saves_the_audio_around_it_per_party_and_serves_it(tmp_path: Path) -> None:
    async def body() -> dict[str, Any]:
        pipeline = Pipeline(FakeScorer(), CFG, ENGINE)
        store = EvidenceStore(tmp_path, retention_days=30)
        recorder = EvidenceRecorder(pipeline.hub, store, SR, seconds=8.0, after_s=2.0)
        pipeline.audio_taps.append(recorder.on_audio)
        tracker = StreamTracker(pipeline.hub, recent=5)
        sub = pipeline.hub.subscribe(predicate=lambda e: isinstance(e, EvidenceEvent))
        tasks = [asyncio.create_task(t) for t in (pipeline.run(), recorder.run(), tracker.run())]
        client = await serve_routes(streams_routes(tracker) + evidence_routes(store))
        out: dict[str, Any] = {}
        try:
            calls = two_party_call()
            handles = {name: pipeline.open_stream(name, source="test", sample_rate=SR) for name in calls}
            for start in range(0, 14 * SR, 1600):
                for name, audio in calls.items():
                    await handles[name].feed_wait(audio[start : start + 1600])
            await until(lambda: not sub.queue.empty())
            live = await client.get("/v1/streams")
            out["live"] = await live.json()
            for handle in handles.values():
                await handle.close()
            out["evidence"] = await asyncio.wait_for(sub.get(), 5)
            listed = await client.get("/v1/evidence")
            out["listed"] = await listed.json()
            evidence_id = out["evidence"].id
            wav = await client.get(f"/v1/evidence/{evidence_id}.wav")
            out["wav"] = (wav.status, wav.headers["Content-Type"], await wav.read())
            doc = await client.get(f"/v1/evidence/{evidence_id}.json")
            out["json"] = await doc.json()
            out["errors"] = {}
            for path in (
                "/v1/evidence/..%2F..%2Fetc%2Fpasswd.wav",
                "/v1/evidence/x.wav",
                f"/v1/evidence/{evidence_id}.mp3",
                f"/v1/evidence/{evidence_id}",
                f"/v1/evidence/{new_id('nobody')}.json",
                "/v1/evidence?limit=0",
            ):
                response = await client.get(path)
                out["errors"][path] = (response.status, (await response.json())["error"])
            await asyncio.sleep(0.05)
            assert sub.queue.empty(), "only the synthetic party raised an alarm"
            out["after"] = tracker.snapshot()
        finally:
            await client.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return out

    out = asyncio.run(body())
    event = out["evidence"]
    assert event.stream == "call-9:caller" and ID_PATTERN.fullmatch(event.id)
    # the clip: 8 s ending 2 s after the alarm, cut from exactly the audio that was sent
    assert event.t_end == pytest.approx(event.alarm_t + 2.0, abs=1e-3)
    assert event.t_end - event.t_start == pytest.approx(8.0, abs=1e-3)
    status, content_type, wav_bytes = out["wav"]
    assert (status, content_type) == (200, "audio/wav")
    (tmp_path / "got.wav").write_bytes(wav_bytes)
    clip, rate = sf.read(tmp_path / "got.wav", dtype="int16")
    assert rate == SR and len(clip) == 8 * SR
    sent = (two_party_call()["call-9:caller"] * 32767).astype(np.int16)
    first = round(event.t_start * SR)
    assert np.array_equal(clip, sent[first : first + 8 * SR])
    doc = out["json"]
    assert doc["stream"] == "call-9:caller" and doc["sample_rate"] == SR
    assert doc["alarm"]["state"] == "on" and len(doc["alarm"]["evidence_scores"]) == 2
    assert max(s["t_end"] for s in doc["scores"]) >= event.t_end  # scored up to the clip's end
    assert doc["scores"] and all(event.t_start - 1 <= s["t_start"] <= event.t_end for s in doc["scores"])
    assert [a["state"] for a in doc["alarms"]][:1] == ["on"]
    assert [e["id"] for e in out["listed"]["evidence"]] == [event.id]
    # mid-call snapshot: both parties, recent scores bounded, the caller's alarm on
    live = {s["stream"]: s for s in out["live"]["streams"]}
    assert set(live) == {"call-9:caller", "call-9:agent"}
    assert live["call-9:caller"]["alarm"] == "on" and live["call-9:agent"]["alarm"] == "off"
    assert len(live["call-9:agent"]["scores"]) == 5 and live["call-9:agent"]["source"] == "test"
    assert out["after"]["streams"] == []
    errors = out["errors"]
    assert all(status == 400 for status, _ in list(errors.values())[:4]), errors
    assert "expected an evidence id like" in errors["/v1/evidence/x.wav"][1]
    assert "expected /v1/evidence/ID.wav or ID.json" in errors[f"/v1/evidence/{event.id}.mp3"][1]
    assert [s for s, _ in list(errors.values())[4:]] == [404, 400]


def test_evidence_routes_say_when_recording_is_off() -> None:
    async def body() -> tuple[int, str]:
        client = await serve_routes(evidence_routes(None))
        try:
            response = await client.get("/v1/evidence")
            return response.status, (await response.json())["error"]
        finally:
            await client.close()

    status, message = asyncio.run(body())
    assert status == 404 and "--evidence-dir" in message


def test_serve_wires_the_recorder_and_the_http_handlers_from_the_settings(tmp_path: Path) -> None:
    from spoofwatch.cli import _server_settings, build_parser
    from spoofwatch.stream.app import build_tasks, evidence_http

    args = build_parser().parse_args(
        ["serve", "--evidence-dir", str(tmp_path / "ev"), "--evidence-days", "7", "--evidence-seconds", "12"]
    )
    settings = _server_settings(args)
    assert (settings.server.evidence_days, settings.server.evidence_seconds) == (7.0, 12.0)

    async def body() -> tuple[list[str], int, list[str]]:
        pipeline = Pipeline(FakeScorer(), CFG, ENGINE)
        tasks = build_tasks(pipeline, settings, websocket=False)
        routes = evidence_http(pipeline, settings, tasks)
        return sorted(tasks), len(pipeline.audio_taps), sorted(r.path for r in routes)  # type: ignore[attr-defined]

    names, taps, paths = asyncio.run(body())
    assert names == ["evidence", "streams-snapshot"] and taps == 1
    assert paths == ["/v1/evidence", "/v1/evidence/{name}", "/v1/streams"]
    assert (tmp_path / "ev").is_dir()


def test_the_recorder_holds_bounded_history_and_a_failing_tap_never_fails_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> tuple[int, int]:
        pipeline = Pipeline(FakeScorer(), CFG, ENGINE)
        recorder = EvidenceRecorder(pipeline.hub, EvidenceStore(tmp_path, 1), SR, seconds=5.0)
        pipeline.audio_taps.append(recorder.on_audio)
        tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(recorder.run())]
        # trusted: a minute fed at once would trip engine.max_speed, which is not the point here
        handle = pipeline.open_stream("long", source="test", sample_rate=SR, trusted=True)
        audio = noise(60.0)
        for start in range(0, len(audio), 1600):
            await handle.feed_wait(audio[start : start + 1600])
        await until(lambda: recorder._streams["long"].scored_t >= 59.0)
        held = len(recorder._streams["long"].timeline), recorder._streams["long"].ring.filled
        monkeypatch.setattr(AudioRing, "append", lambda *a: 1 / 0)
        await handle.feed_wait(noise(1.0))  # the tap fails; the stream goes on
        await handle.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return held

    timeline, samples = asyncio.run(body())
    assert samples == 15 * SR  # evidence_seconds + SLACK_S, never the whole minute
    assert 15 / CFG.hop_s <= timeline <= 15 / CFG.hop_s + 4  # scores of those 15 s only
    assert "evidence: recording long failed" in caplog.text


def test_the_real_server_mounts_the_handlers_behind_its_token(tmp_path: Path) -> None:
    import aiohttp

    from spoofwatch.config import Settings
    from spoofwatch.stream.app import evidence_http
    from spoofwatch.stream.net.server import SpoofwatchServer

    token = "ev-t0ken"
    settings = Settings(server=ServerConfig(port=0, token=token, evidence_dir=str(tmp_path)))

    async def body() -> dict[str, Any]:
        pipeline = Pipeline(FakeScorer(), CFG, ENGINE)
        tasks: dict[str, Any] = {}
        routes = evidence_http(pipeline, settings, tasks)
        running = [asyncio.create_task(factory()) for factory in tasks.values()]
        server = SpoofwatchServer(pipeline, settings.server, extra_routes=routes)
        await server.start()
        pipeline.open_stream("live-1", source="test", sample_rate=SR)
        base = f"http://127.0.0.1:{server.port}"
        auth = {"Authorization": f"Bearer {token}"}
        out: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as http:
                for name, path, headers in [
                    ("anonymous", "/v1/streams", {}),
                    ("anonymous_wav", f"/v1/evidence/{new_id('x')}.wav", {}),
                    ("streams", "/v1/streams", auth),
                    ("listing", "/v1/evidence", auth),
                    ("traversal", "/v1/evidence/..%2F..%2Fetc%2Fpasswd.wav", auth),
                    ("missing", f"/v1/evidence/{new_id('x')}.wav", auth),
                ]:
                    async with http.get(base + path, headers=headers) as response:
                        out[name] = (response.status, await response.text())
        finally:
            await server.stop()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        return out

    out = asyncio.run(body())
    assert out["anonymous"][0] == 401 and out["anonymous_wav"][0] == 401
    status, text = out["streams"]
    assert status == 200 and [s["stream"] for s in json.loads(text)["streams"]] == ["live-1"]
    assert out["listing"] == (200, '{"evidence": []}')
    assert out["traversal"][0] == 400 and "expected an evidence id like" in out["traversal"][1]
    assert out["missing"][0] == 404
