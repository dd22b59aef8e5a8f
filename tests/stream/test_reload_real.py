"""Hot reload with the real detector behind the real server: a call streams over the
WebSocket ingest while the server swaps to another card (the packaged one with another
calibration); no window is lost or re-ordered and later events name the new card."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

import streamkit
from fakes import EXAMPLE_SPEECH
from spoofwatch.audio.files import load_audio
from spoofwatch.config import Settings, StreamConfig
from spoofwatch.events import Event, ScoreEvent, StatusEvent
from spoofwatch.feedback.capture import FeatureRing, KeptWindow
from spoofwatch.feedback.desk import FeedbackDesk, parse_feedback
from spoofwatch.learning.feedback_store import FeedbackStore, read_feedback
from spoofwatch.model.artifact import CARD_FILE, detector_dir
from spoofwatch.model.identity import card_identity
from spoofwatch.stream.engine.reload import CardReloader, detector_loader

pytestmark = [pytest.mark.real_weights, pytest.mark.slow]


def recalibrated_copy(target: Path) -> Path:
    shutil.copytree(detector_dir("default"), target)
    card = json.loads((target / CARD_FILE).read_text())
    card["name"] = "default-recalibrated"
    card["calibration"]["offset"] += 1.0
    (target / CARD_FILE).write_text(json.dumps(card, indent=2))
    return target


def test_reload_mid_call_on_the_real_server_with_the_real_detector(tmp_path: Path) -> None:
    new_dir = recalibrated_copy(tmp_path / "next-card")
    settings = Settings()
    load = detector_loader(settings)
    scorer, old_card = load(None)
    new_card = card_identity(new_dir)
    assert new_card.sha256 != old_card.sha256
    speech = load_audio(EXAMPLE_SPEECH, 16000).samples

    windows_out: list[int] = []
    kept: list[KeptWindow] = []

    async def body() -> list[Event]:
        async with streamkit.serving(streamkit.LOCAL, stream_config=StreamConfig(), scorer=scorer) as (
            server,
            pipeline,
        ):
            pipeline.use_scorer(scorer, old_card)
            desk = FeedbackDesk(pipeline, FeatureRing(), FeedbackStore(tmp_path / "fb"))
            pipeline.on_stream_end.append(lambda h: windows_out.append(h.session.counters.windows_out))
            reloader = CardReloader(pipeline, load)
            async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws:
                await ws.send(streamkit.start_message("call"))
                half = len(speech) // 2
                await streamkit.send_audio(ws, speech[:half])
                await streamkit.until(lambda: pipeline.batcher.counters.scored >= 2, 120, "old-card scores")
                await reloader.reload(str(new_dir), why="test")
                await streamkit.send_audio(ws, speech[half:])
                await ws.send('{"type":"stop"}')
                events = await streamkit.events_until_end(ws, "call")
            await desk.record(parse_feedback({"stream": "call", "label": "false_alarm"}), "rest")
            stream = desk.ring.get("call")
            assert stream is not None
            kept.extend(stream.windows)
            return events

    events = asyncio.run(asyncio.wait_for(body(), 300))
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert windows_out == [len(scores)] and len(scores) >= 6  # every window cut was scored
    assert [s.seq for s in scores] == list(range(len(scores)))
    assert [s.t_start for s in scores] == sorted({s.t_start for s in scores})
    cards = [s.detector_sha for s in scores]
    switch = cards.index(new_card.short)
    assert switch >= 2 and cards == [old_card.short] * switch + [new_card.short] * (len(cards) - switch)
    assert {s.detector for s in scores[switch:]} == {"default-recalibrated"}
    # Feedback keeps the features the head read: from those kept in memory the head gives
    # each window's score back exactly; the store (learning.feedback_store) keeps float16.
    new_scorer, _ = load(str(new_dir))
    by_sha = {old_card.sha256: scorer, new_card.sha256: new_scorer}
    assert [w.seq for w in kept] == [s.seq for s in scores]
    for window in kept:
        assert window.features.shape == (scorer.head.n_features_in_,)
        assert window.card is not None
        again = by_sha[window.card.sha256].score_features(window.features[None, :])[0]
        assert again == pytest.approx(window.score, abs=1e-4)
    records = read_feedback(tmp_path / "fb")
    assert [r.detector_sha256 for r in records] == [old_card.sha256, new_card.sha256]  # one per card
    assert [w["seq"] for r in records for w in r.metadata["windows"]] == [s.seq for s in scores]
    statuses = [e for e in events if isinstance(e, StatusEvent)]
    assert not statuses or statuses[-1].detector_sha in (old_card.short, new_card.short)
