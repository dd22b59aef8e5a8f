"""Hot reload: a pipeline with live streams swaps cards mid-stream without losing or
re-ordering a window; later events name the new card; a bad card leaves the old one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import streamkit
from fakes import FakeScorer, noise, tone
from spoofwatch.config import Settings
from spoofwatch.errors import ModelError
from spoofwatch.events import ErrorEvent, Event, ScoreEvent, StatusEvent
from spoofwatch.model.identity import CardIdentity, card_identity
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.engine.reload import CardReloader, ReloadError, watch_detector
from spoofwatch.stream.learning import install_sighup, learning_parts, remove_sighup
from spoofwatch.stream.net.reload_routes import reload_routes
from waits import scaled

OLD = CardIdentity(name="old-card", sha256="a" * 64, version="1")
NEW = CardIdentity(name="new-card", sha256="b" * 64, version="2")


class OffsetScorer(FakeScorer):
    """FakeScorer shifted by ``offset``: a card whose scores differ visibly."""

    def __init__(self, offset: float = 0.0, window_s: float = 1.0, delay_s: float = 0.002) -> None:
        super().__init__(window_s=window_s, delay_s=delay_s)
        self.offset = offset

    def score_windows(self, windows: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        return super().score_windows(windows) + self.offset


def new_card_loader(scorer: WindowScorer, card: CardIdentity = NEW) -> object:
    def load(directory: str | None) -> tuple[WindowScorer, CardIdentity]:
        return scorer, card

    return load


def check_stream(events: list[Event], stream: str, expected_windows: int) -> list[ScoreEvent]:
    """Every window scored once, in order; the card switches once, old to new."""
    scores = [e for e in events if isinstance(e, ScoreEvent) and e.stream == stream]
    assert [s.seq for s in scores] == list(range(expected_windows))
    starts = [s.t_start for s in scores]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    names = [s.detector for s in scores]
    switch = names.index(NEW.name)
    assert 0 < switch < len(names), f"the reload should land mid-stream, cards: {names}"
    assert names == [OLD.name] * switch + [NEW.name] * (len(names) - switch)
    assert {s.detector_sha for s in scores[switch:]} == {NEW.short}
    return scores


async def live_streams_with_reload(
    reload_with: object, chunks: int = 12
) -> tuple[list[Event], Pipeline, int]:
    pipeline = Pipeline(OffsetScorer(), streamkit.CFG, streamkit.ENGINE, card=OLD)
    sub = pipeline.hub.subscribe(None, maxsize=100_000)
    worker = asyncio.create_task(pipeline.run())
    reloader = CardReloader(pipeline, reload_with)  # type: ignore[arg-type]
    handles = [pipeline.open_stream(f"call-{i}", source="test", sample_rate=16000) for i in range(3)]
    audio = [tone(chunks * 0.5) if i % 2 else noise(chunks * 0.5, seed=i) for i in range(3)]
    try:
        for n in range(chunks):
            for handle, signal_ in zip(handles, audio, strict=True):
                handle.feed(signal_[n * 8000 : (n + 1) * 8000])
            if n == chunks // 2:
                await reloader.reload(why="test")
            await asyncio.sleep(0.01)
        for handle in handles:
            await handle.close()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events, pipeline, handles[0].session.counters.windows_out


def test_reload_mid_stream_loses_and_reorders_no_window_and_names_the_new_card() -> None:
    new = OffsetScorer(offset=0.25)
    events, pipeline, windows = streamkit.run(live_streams_with_reload(new_card_loader(new)))
    assert windows > 10
    for i in range(3):
        check_stream(events, f"call-{i}", windows)
    assert pipeline.batcher.counters.dropped == 0
    assert pipeline.card == NEW and pipeline.scorer is new
    assert new.calls, "the new card scored windows"
    statuses = [e for e in events if isinstance(e, StatusEvent)]
    assert statuses[-1].detector == NEW.name and statuses[-1].detector_sha == NEW.short


def failing_loader(directory: str | None) -> tuple[WindowScorer, CardIdentity]:
    raise ModelError(f"{directory}: missing head.safetensors")


@pytest.mark.parametrize(
    ("loader", "reason"),
    [
        (failing_loader, "missing head.safetensors"),
        (new_card_loader(OffsetScorer(window_s=2.0)), "window of 16000 samples, found 32000"),
    ],
)
def test_a_card_that_fails_or_does_not_fit_leaves_the_old_one_serving(loader: object, reason: str) -> None:
    async def body() -> None:
        old = OffsetScorer()
        pipeline = Pipeline(old, streamkit.CFG, streamkit.ENGINE, card=OLD)
        sub = pipeline.hub.subscribe(None)
        worker = asyncio.create_task(pipeline.run())
        reloader = CardReloader(pipeline, loader, "cards/next")  # type: ignore[arg-type]
        handle = pipeline.open_stream("call", source="test", sample_rate=16000)
        try:
            with pytest.raises(ReloadError, match=reason):
                await reloader.reload()
            handle.feed(noise(3.0))
            await handle.close()
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        assert pipeline.card == OLD and pipeline.scorer is old and reloader.failures == 1
        events = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
        errors = [e for e in events if isinstance(e, ErrorEvent)]
        assert [e.code for e in errors] == ["reload_failed"]
        assert reason in errors[0].message and "still serving old-card" in errors[0].message
        scores = [e for e in events if isinstance(e, ScoreEvent)]
        assert scores and {s.detector for s in scores} == {OLD.name}

    streamkit.run(body(), timeout_s=120)


def write_card(directory: Path, offset: float) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "model_card.json").write_text(json.dumps({"name": "watched", "offset": offset}))
    (directory / "head.safetensors").write_bytes(b"head")


def card_dir_loader(directory: str | None) -> tuple[WindowScorer, CardIdentity]:
    assert directory is not None
    card = json.loads((Path(directory) / "model_card.json").read_text())
    return OffsetScorer(offset=card["offset"]), card_identity(directory)


def test_watching_the_detector_directory_reloads_a_changed_card_once(tmp_path: Path) -> None:
    card_dir = tmp_path / "card"
    write_card(card_dir, 0.0)
    first = card_identity(card_dir)

    async def body() -> None:
        pipeline = Pipeline(OffsetScorer(), streamkit.CFG, streamkit.ENGINE, card=first)
        reloader = CardReloader(pipeline, card_dir_loader, str(card_dir))
        watcher = asyncio.create_task(watch_detector(reloader, card_dir, interval_s=0.02))
        try:
            await asyncio.sleep(0.1)
            assert reloader.reloads == 0  # nothing changed
            write_card(card_dir, 0.5)
            await streamkit.until(lambda: reloader.reloads == 1, what="the reload")
            await asyncio.sleep(0.1)
            assert reloader.reloads == 1  # not again while the files stay the same
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert pipeline.card == card_identity(card_dir) != first
        assert isinstance(pipeline.scorer, OffsetScorer) and pipeline.scorer.offset == 0.5

    streamkit.run(body(), timeout_s=120)


def test_sighup_reloads_the_current_card() -> None:
    async def body() -> None:
        pipeline = Pipeline(OffsetScorer(), streamkit.CFG, streamkit.ENGINE, card=OLD)
        parts = learning_parts(pipeline, Settings(), new_card_loader(OffsetScorer(offset=1.0)))  # type: ignore[arg-type]
        assert install_sighup(parts)
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            await streamkit.until(lambda: pipeline.card == NEW, what="the SIGHUP reload")
        finally:
            remove_sighup()
        assert parts.reloader is not None and parts.reloader.reloads == 1

    streamkit.run(body(), timeout_s=120)


def test_reload_endpoint_swaps_refuses_bad_bodies_and_reports_failures(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_card(good, 0.75)

    async def body() -> None:
        pipeline = Pipeline(OffsetScorer(), streamkit.CFG, streamkit.ENGINE, card=OLD)
        app = web.Application()
        app.add_routes(reload_routes(CardReloader(pipeline, card_dir_loader)))
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/v1/admin/reload", data=b"[1]")
            assert response.status == 400
            assert "expected an empty body or" in (await response.json())["error"]
            response = await client.post("/v1/admin/reload", json={"detector": str(bad)})
            assert response.status == 409
            assert "still serving old-card" in (await response.json())["error"]
            assert pipeline.card == OLD
            response = await client.post("/v1/admin/reload", json={"detector": str(good)})
            assert response.status == 200
            answer = await response.json()
            assert answer["detector"] == card_identity(good).to_dict()
            assert answer["previous"]["name"] == OLD.name
            # An empty body reloads the card that serves now.
            response = await client.post("/v1/admin/reload")
            assert response.status == 200
        assert pipeline.card == card_identity(good)

    streamkit.run(body(), timeout_s=120)


def test_serve_watches_the_card_directory_and_announces_the_new_card(tmp_path: Path) -> None:
    from dataclasses import replace

    from spoofwatch.config import ServerConfig
    from spoofwatch.stream.app import serve

    card_dir, events_file = tmp_path / "card", tmp_path / "events.jsonl"
    write_card(card_dir, 0.0)
    server = ServerConfig(
        port=0,
        detector=str(card_dir),
        watch_detector=True,
        watch_detector_interval_s=0.02,
        feedback_dir=str(tmp_path / "fb"),
        jsonl=str(events_file),
    )
    settings = replace(Settings(), server=server, stream=streamkit.CFG)

    def statuses() -> list[dict[str, object]]:
        lines = events_file.read_text().splitlines() if events_file.exists() else []
        return [e for e in map(json.loads, lines) if e["type"] == "status"]

    async def body() -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        scorer, first = card_dir_loader(str(card_dir))
        task = asyncio.create_task(
            serve(settings, scorer, ready=ready, stop=stop, card=first, loader=card_dir_loader)
        )
        try:
            await asyncio.wait_for(ready.wait(), scaled(60))
            await asyncio.sleep(0.1)
            write_card(card_dir, 0.5)
            new = card_identity(card_dir)
            await streamkit.until(
                lambda: any(s["detector_sha"] == new.short for s in statuses()),
                10,
                "a status naming the new card",
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, scaled(30))
        assert (tmp_path / "fb" / "feedback.sqlite3").is_file()  # the feedback store was opened at start-up

    streamkit.run(body(), timeout_s=120)


def test_real_server_reloads_over_http_mid_call_and_takes_feedback_with_the_token(tmp_path: Path) -> None:
    import aiohttp
    from websockets.asyncio.client import connect

    from fakes import FeatureFakeScorer
    from spoofwatch.config import ServerConfig
    from spoofwatch.feedback.capture import FeatureRing
    from spoofwatch.feedback.desk import FeedbackDesk
    from spoofwatch.feedback.routes import feedback_routes
    from spoofwatch.learning.feedback_store import FeedbackStore, read_feedback
    from spoofwatch.stream.net.server import SpoofwatchServer

    token = "reload-s3cret"
    windows_out: list[int] = []
    new = FeatureFakeScorer(delay_s=0.002)

    async def body() -> list[Event]:
        old = FeatureFakeScorer(delay_s=0.002)
        pipeline = Pipeline(old, streamkit.CFG, streamkit.ENGINE, card=OLD)
        desk = FeedbackDesk(pipeline, FeatureRing(), FeedbackStore(tmp_path / "fb"))
        pipeline.on_stream_end.append(lambda h: windows_out.append(h.session.counters.windows_out))
        reloader = CardReloader(pipeline, new_card_loader(new))  # type: ignore[arg-type]
        routes = feedback_routes(desk) + reload_routes(reloader)
        server = SpoofwatchServer(pipeline, ServerConfig(port=0, token=token), extra_routes=routes)
        worker = asyncio.create_task(pipeline.run())
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        auth = {"Authorization": f"Bearer {token}"}
        try:
            async with (
                aiohttp.ClientSession() as http,
                connect(f"ws://127.0.0.1:{server.port}/v1/ingest?token={token}") as ws,
            ):
                await ws.send(streamkit.start_message("call"))
                audio = np.concatenate([noise(3.0), tone(3.0)])
                await streamkit.send_audio(ws, audio[: len(audio) // 2])
                await streamkit.until(lambda: pipeline.batcher.counters.scored >= 2, what="old-card scores")
                async with http.post(f"{base}/v1/admin/reload") as refused:
                    assert refused.status == 401  # no token
                async with http.post(f"{base}/v1/admin/reload", headers=auth) as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["detector"]["name"] == NEW.name
                await streamkit.send_audio(ws, audio[len(audio) // 2 :])
                await ws.send('{"type":"stop"}')
                events = await streamkit.events_until_end(ws, "call")
                message = {"stream": "call", "label": "missed_synthetic", "t_start": 3.0}
                async with http.post(f"{base}/v1/feedback", json=message) as refused:
                    assert refused.status == 401
                async with http.post(f"{base}/v1/feedback", json=message, headers=auth) as response:
                    assert response.status == 201, await response.text()
        finally:
            await server.stop()
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        records = read_feedback(tmp_path / "fb")
        assert records and {r.label for r in records} == {"missed_synthetic"}
        assert records[-1].detector_sha256 == NEW.sha256  # the later windows: the new card's
        return events

    events = streamkit.run(body(), timeout_s=60)
    assert len(windows_out) == 1
    check_stream(events, "call", windows_out[0])  # every window cut was scored, in order
    assert new.calls
